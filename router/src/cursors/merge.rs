//! The k-way merge of sorted shard streams: a binary heap of the head
//! document of each stream, ordered by the `$sortKey` the shard attached
//! (an array of the sort values) and the client's sort directions.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use bson::{Bson, Document, RawDocument, RawDocumentBuf};

use shardgate_query::compare_bson;

/// The field a shard adds when asked for `{$meta: "sortKey"}`.
pub const SORT_KEY_FIELD: &str = "$sortKey";

/// The directions of a sort specification, in field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortSpec {
    directions: Arc<[i8]>,
}

impl SortSpec {
    /// Reads `{a: 1, b: -1}`; `None` when a field is not sorted by 1/-1
    /// (for example `{$meta: "textScore"}`), which the router cannot merge.
    pub fn parse(sort: &Document) -> Option<SortSpec> {
        let mut directions = Vec::with_capacity(sort.len());
        for v in sort.values() {
            let d = match v {
                Bson::Int32(n) => *n as i64,
                Bson::Int64(n) => *n,
                Bson::Double(n) => *n as i64,
                _ => return None,
            };
            directions.push(match d {
                1 => 1,
                -1 => -1,
                _ => return None,
            });
        }
        Some(SortSpec {
            directions: directions.into(),
        })
    }

    /// Compares two sort keys.
    pub fn compare(&self, a: &[Bson], b: &[Bson]) -> Ordering {
        for (i, dir) in self.directions.iter().enumerate() {
            let (x, y) = (
                a.get(i).unwrap_or(&Bson::Null),
                b.get(i).unwrap_or(&Bson::Null),
            );
            let ord = compare_bson(x, y);
            let ord = if *dir < 0 { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}

/// The sort key a shard attached to a document (empty when absent).
pub fn sort_key_of(doc: &RawDocument) -> Vec<Bson> {
    match doc.get_array(SORT_KEY_FIELD) {
        Ok(arr) => arr
            .into_iter()
            .filter_map(|v| v.ok().and_then(|v| Bson::try_from(v).ok()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A copy of `doc` without the `$sortKey` field.
pub fn strip_sort_key(doc: &RawDocument) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for elem in doc.iter().flatten() {
        if elem.0.as_str() != SORT_KEY_FIELD {
            out.append(elem.0, elem.1);
        }
    }
    out
}

/// The head of one stream in the heap.
struct Head {
    key: Vec<Bson>,
    stream: usize,
    spec: SortSpec,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    /// Reversed, so the max-heap pops the smallest key; ties go to the
    /// lower stream index, which keeps the merge deterministic.
    fn cmp(&self, other: &Self) -> Ordering {
        self.spec
            .compare(&self.key, &other.key)
            .then(self.stream.cmp(&other.stream))
            .reverse()
    }
}

/// Merges buffered streams. Streams are refilled by the caller: `next`
/// returns `None` as soon as a stream that may have more documents is empty
/// (`needs_refill` names it), so the merge never guesses past a stream.
pub struct KWayMerge {
    spec: Option<SortSpec>,
    buffers: Vec<VecDeque<RawDocumentBuf>>,
    exhausted: Vec<bool>,
    heap: BinaryHeap<Head>,
    in_heap: Vec<bool>,
    next_unsorted: usize,
}

impl KWayMerge {
    /// A merge over `streams` streams; `spec` `None` merges in arrival order.
    pub fn new(streams: usize, spec: Option<SortSpec>) -> KWayMerge {
        KWayMerge {
            spec,
            buffers: (0..streams).map(|_| VecDeque::new()).collect(),
            exhausted: vec![false; streams],
            heap: BinaryHeap::with_capacity(streams),
            in_heap: vec![false; streams],
            next_unsorted: 0,
        }
    }

    /// Adds documents from stream `i`; `done` marks its last batch.
    pub fn push(&mut self, i: usize, docs: impl IntoIterator<Item = RawDocumentBuf>, done: bool) {
        if let Some(buf) = self.buffers.get_mut(i) {
            buf.extend(docs);
        }
        if done {
            if let Some(e) = self.exhausted.get_mut(i) {
                *e = true;
            }
        }
        self.enter_heap(i);
    }

    fn enter_heap(&mut self, i: usize) {
        let Some(spec) = &self.spec else { return };
        if self.in_heap.get(i).copied().unwrap_or(true) {
            return;
        }
        if let Some(front) = self.buffers[i].front() {
            self.heap.push(Head {
                key: sort_key_of(front),
                stream: i,
                spec: spec.clone(),
            });
            self.in_heap[i] = true;
        }
    }

    /// The streams that must be refilled before the merge can go on.
    pub fn needs_refill(&self) -> Vec<usize> {
        let empty_open = |i: &usize| self.buffers[*i].is_empty() && !self.exhausted[*i];
        match self.spec {
            Some(_) => (0..self.buffers.len()).filter(empty_open).collect(),
            None if self.buffers.iter().all(VecDeque::is_empty) => {
                (0..self.buffers.len()).filter(empty_open).collect()
            }
            None => Vec::new(),
        }
    }

    /// Whether every stream is exhausted and drained.
    pub fn is_done(&self) -> bool {
        self.exhausted.iter().all(|e| *e) && self.buffers.iter().all(VecDeque::is_empty)
    }

    /// The next document in merge order, or `None` when a refill (or the
    /// end) comes first.
    pub fn pop_next(&mut self) -> Option<RawDocumentBuf> {
        if !self.needs_refill().is_empty() {
            return None;
        }
        match self.spec {
            Some(_) => {
                let head = self.heap.pop()?;
                let i = head.stream;
                self.in_heap[i] = false;
                let doc = self.buffers[i].pop_front();
                self.enter_heap(i);
                doc
            }
            None => {
                let n = self.buffers.len();
                for step in 0..n {
                    let i = (self.next_unsorted + step) % n;
                    if let Some(doc) = self.buffers[i].pop_front() {
                        self.next_unsorted = i;
                        return Some(doc);
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    fn stream(keys: &[i32]) -> Vec<RawDocumentBuf> {
        keys.iter()
            .map(|k| rawdoc! {"v": *k, "$sortKey": [*k]})
            .collect()
    }

    fn drain(m: &mut KWayMerge) -> Vec<i32> {
        let mut out = Vec::new();
        while let Some(d) = m.pop_next() {
            out.push(d.get_i32("v").unwrap());
        }
        out
    }

    #[test]
    fn merges_sorted_streams_ascending_and_descending() {
        let spec = SortSpec::parse(&doc! {"v": 1}).unwrap();
        let mut m = KWayMerge::new(3, Some(spec));
        m.push(0, stream(&[1, 4, 7]), true);
        m.push(1, stream(&[2, 5, 8]), true);
        m.push(2, stream(&[0, 3, 9]), true);
        assert_eq!(drain(&mut m), vec![0, 1, 2, 3, 4, 5, 7, 8, 9]);
        assert!(m.is_done());

        let spec = SortSpec::parse(&doc! {"v": -1}).unwrap();
        let mut m = KWayMerge::new(2, Some(spec));
        m.push(0, stream(&[9, 3]), true);
        m.push(1, stream(&[8, 4]), true);
        assert_eq!(drain(&mut m), vec![9, 8, 4, 3]);
    }

    #[test]
    fn waits_for_a_refill_before_passing_an_open_stream() {
        let spec = SortSpec::parse(&doc! {"v": 1}).unwrap();
        let mut m = KWayMerge::new(2, Some(spec));
        m.push(0, stream(&[1, 2]), false);
        m.push(1, stream(&[5]), true);
        assert_eq!(drain(&mut m), vec![1, 2]);
        assert_eq!(m.needs_refill(), vec![0]);
        m.push(0, stream(&[3, 6]), true);
        assert_eq!(drain(&mut m), vec![3, 5, 6]);
        assert!(m.is_done());
    }

    #[test]
    fn unsorted_takes_what_is_there() {
        let mut m = KWayMerge::new(2, None);
        m.push(0, stream(&[1]), false);
        m.push(1, stream(&[2, 3]), true);
        let mut got = drain(&mut m);
        assert_eq!(m.needs_refill(), vec![0]);
        m.push(0, stream(&[4]), true);
        got.extend(drain(&mut m));
        got.sort();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    #[test]
    fn compound_mixed_types_and_stripping() {
        let spec = SortSpec::parse(&doc! {"a": 1, "b": -1}).unwrap();
        let a = rawdoc! {"x": 1, "$sortKey": ["s", 1]};
        let b = rawdoc! {"x": 2, "$sortKey": [5, 9]};
        let c = rawdoc! {"x": 3, "$sortKey": [5, 10]};
        let mut m = KWayMerge::new(2, Some(spec));
        m.push(0, vec![c, a], true);
        m.push(1, vec![b], true);
        let order: Vec<i32> = std::iter::from_fn(|| m.pop_next())
            .map(|d| d.get_i32("x").unwrap())
            .collect();
        assert_eq!(order, vec![3, 2, 1], "numbers before strings; b descending");
        let stripped = strip_sort_key(&rawdoc! {"x": 1, "$sortKey": [1]});
        assert_eq!(stripped, rawdoc! {"x": 1});
        assert!(SortSpec::parse(&doc! {"s": {"$meta": "textScore"}}).is_none());
    }

    #[test]
    fn the_query_engine_and_the_shard_key_rank_types_alike() {
        use bson::oid::ObjectId;
        let values = [
            Bson::MinKey,
            Bson::Undefined,
            Bson::Null,
            Bson::Int32(1),
            Bson::Double(1.5),
            Bson::String("s".into()),
            Bson::Symbol("s".into()),
            Bson::Document(doc! {}),
            Bson::Array(vec![]),
            Bson::ObjectId(ObjectId::new()),
            Bson::Boolean(true),
            Bson::DateTime(bson::DateTime::now()),
            Bson::Timestamp(bson::Timestamp {
                time: 1,
                increment: 1,
            }),
            Bson::JavaScriptCode("x".into()),
            Bson::MaxKey,
        ];
        for v in &values {
            assert_eq!(
                shardgate_query::canonical_type(v),
                shardgate_config_store::shard_key::canonical_type(v),
                "{v:?}"
            );
        }
    }
}
