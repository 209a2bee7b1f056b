//! The k-way merge of sorted shard streams. Each document's `$sortKey`
//! is encoded once, as it arrives, into order-preserving bytes
//! (`sort_key`), and cut out of the document by slicing; a binary heap of
//! stream indices then orders the streams' head documents by `memcmp` of
//! those bytes (ties to the lower stream index, which keeps the merge
//! deterministic). Each heap entry carries the first 8 bytes of its head's
//! key as an integer, so most comparisons are one integer compare.

use std::cmp::Ordering;
use std::collections::VecDeque;

use bson::RawDocumentBuf;

mod sort_key;

pub(crate) use sort_key::strip_at;
pub use sort_key::{strip_sort_key, Located, SortSpec, SORT_KEY_FIELD};

/// One stream's buffered documents and their sort keys.
#[derive(Default)]
struct Stream {
    /// Documents (sort key stripped) with their key's range in `keys`.
    docs: VecDeque<(RawDocumentBuf, usize, usize)>,
    /// The sort keys of `docs`, back to back; cleared when `docs` empties.
    keys: Vec<u8>,
    /// No more documents will come.
    exhausted: bool,
}

impl Stream {
    fn front_key(&self) -> &[u8] {
        match self.docs.front() {
            Some((_, start, end)) => self.keys.get(*start..*end).unwrap_or_default(),
            None => &[],
        }
    }

    /// The heap entry of this stream (`index`): its head key's prefix.
    fn entry(&self, index: usize) -> HeapEntry {
        let key = self.front_key();
        let mut first = [0u8; 8];
        match key.get(..8) {
            Some(head) => first.copy_from_slice(head),
            None => first[..key.len()].copy_from_slice(key),
        }
        HeapEntry {
            prefix: u64::from_be_bytes(first),
            stream: index,
        }
    }
}

/// A stream in the heap: the first 8 bytes of its head's key (zero-padded,
/// big-endian, so integer order is byte order) and the stream's index.
/// Prefixes that differ decide; equal ones fall back to the whole keys.
#[derive(Debug, Clone, Copy)]
struct HeapEntry {
    prefix: u64,
    stream: usize,
}

/// Merges buffered streams. Streams are refilled by the caller: `next`
/// returns `None` as soon as a stream that may have more documents is empty
/// (`needs_refill` names it), so the merge never guesses past a stream.
pub struct KWayMerge {
    spec: Option<SortSpec>,
    streams: Vec<Stream>,
    /// The non-empty streams, a min-heap by (front key, index).
    heap: Vec<HeapEntry>,
    /// How many streams are empty but may have more documents (a sorted
    /// merge waits for them).
    starving: usize,
    next_unsorted: usize,
}

impl KWayMerge {
    /// A merge over `streams` streams; `spec` `None` merges in arrival order.
    pub fn new(streams: usize, spec: Option<SortSpec>) -> KWayMerge {
        KWayMerge {
            spec,
            streams: (0..streams).map(|_| Stream::default()).collect(),
            heap: Vec::with_capacity(streams),
            starving: streams,
            next_unsorted: 0,
        }
    }

    /// Adds documents from stream `i`; `done` marks its last batch. When
    /// sorted, each document's `$sortKey` is encoded and removed here.
    pub fn push(&mut self, i: usize, docs: impl IntoIterator<Item = RawDocumentBuf>, done: bool) {
        let Some(stream) = self.streams.get_mut(i) else {
            return;
        };
        let was_empty = stream.docs.is_empty();
        let was_starving = was_empty && !stream.exhausted;
        let docs = docs.into_iter();
        stream.docs.reserve(docs.size_hint().0);
        match &self.spec {
            Some(spec) => {
                for doc in docs {
                    let start = stream.keys.len();
                    let located = spec.encode(&doc, &mut stream.keys);
                    let doc = sort_key::strip_at(doc, located);
                    stream.docs.push_back((doc, start, stream.keys.len()));
                }
            }
            None => stream.docs.extend(docs.map(|d| (d, 0, 0))),
        }
        stream.exhausted |= done;
        if was_starving && (done || !stream.docs.is_empty()) {
            self.starving -= 1;
        }
        if self.spec.is_some() && was_empty && !self.streams[i].docs.is_empty() {
            self.heap.push(self.streams[i].entry(i));
            self.sift_up(self.heap.len() - 1);
        }
    }

    /// The streams that must be refilled before the merge can go on.
    pub fn needs_refill(&self) -> Vec<usize> {
        let empty_open = |i: &usize| {
            let s = &self.streams[*i];
            s.docs.is_empty() && !s.exhausted
        };
        let n = self.streams.len();
        match self.spec {
            Some(_) => (0..n).filter(empty_open).collect(),
            None if self.streams.iter().all(|s| s.docs.is_empty()) => {
                (0..n).filter(empty_open).collect()
            }
            None => Vec::new(),
        }
    }

    fn any_needs_refill(&self) -> bool {
        debug_assert_eq!(
            self.starving,
            self.streams
                .iter()
                .filter(|s| s.docs.is_empty() && !s.exhausted)
                .count()
        );
        match self.spec {
            Some(_) => self.starving > 0,
            None => !self.needs_refill().is_empty(),
        }
    }

    /// Whether every stream is exhausted and drained.
    pub fn is_done(&self) -> bool {
        self.streams
            .iter()
            .all(|s| s.exhausted && s.docs.is_empty())
    }

    /// The next document in merge order (without its `$sortKey` when
    /// sorted), or `None` when a refill (or the end) comes first.
    pub fn pop_next(&mut self) -> Option<RawDocumentBuf> {
        if self.any_needs_refill() {
            return None;
        }
        if self.spec.is_none() {
            return self.pop_unsorted();
        }
        let i = self.heap.first()?.stream;
        let stream = &mut self.streams[i];
        let (doc, _, _) = stream.docs.pop_front()?;
        if stream.docs.is_empty() {
            stream.keys.clear();
            self.starving += usize::from(!stream.exhausted);
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
        } else {
            self.heap[0] = stream.entry(i);
        }
        self.sift_down(0);
        Some(doc)
    }

    fn pop_unsorted(&mut self) -> Option<RawDocumentBuf> {
        let n = self.streams.len();
        for step in 0..n {
            let i = (self.next_unsorted + step) % n;
            let stream = &mut self.streams[i];
            if let Some((doc, _, _)) = stream.docs.pop_front() {
                self.starving += usize::from(stream.docs.is_empty() && !stream.exhausted);
                self.next_unsorted = i;
                return Some(doc);
            }
        }
        None
    }

    /// Whether entry `a`'s head comes before entry `b`'s.
    fn before(&self, a: HeapEntry, b: HeapEntry) -> bool {
        let ord = a.prefix.cmp(&b.prefix).then_with(|| {
            let (ka, kb) = (&self.streams[a.stream], &self.streams[b.stream]);
            ka.front_key().cmp(kb.front_key())
        });
        match ord {
            Ordering::Equal => a.stream < b.stream,
            ord => ord == Ordering::Less,
        }
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if !self.before(self.heap[at], self.heap[parent]) {
                break;
            }
            self.heap.swap(at, parent);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut best = at;
            if l < n && self.before(self.heap[l], self.heap[best]) {
                best = l;
            }
            if r < n && self.before(self.heap[r], self.heap[best]) {
                best = r;
            }
            if best == at {
                return;
            }
            self.heap.swap(at, best);
            at = best;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc, Bson};

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
    fn a_scalar_sort_key_compares_whole() {
        // A `$near` query's shards send the distance itself.
        let distances = |keys: &[(i32, f64)]| -> Vec<RawDocumentBuf> {
            keys.iter()
                .map(|(v, d)| rawdoc! {"v": *v, "$sortKey": *d})
                .collect()
        };
        let spec = SortSpec::parse(&doc! {"distance": 1}).unwrap();
        let mut m = KWayMerge::new(2, Some(spec));
        m.push(0, distances(&[(1, 0.5), (3, 2.25)]), true);
        m.push(1, distances(&[(2, 1.0), (4, 10.0)]), true);
        assert_eq!(drain(&mut m), vec![1, 2, 3, 4]);
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
        let stripped = strip_sort_key(rawdoc! {"x": 1, "$sortKey": [1]});
        assert_eq!(stripped, rawdoc! {"x": 1});
        assert!(SortSpec::parse(&doc! {"s": {"$meta": "textScore"}}).is_none());
    }

    /// `{x, $sortKey: [<string of key bytes>]}`, the key not UTF-8.
    fn with_binary_key(x: i32, key: &[u8]) -> RawDocumentBuf {
        let mut item = vec![0x02, b'0', 0];
        item.extend_from_slice(&(key.len() as i32 + 1).to_le_bytes());
        item.extend_from_slice(key);
        item.push(0);
        let mut array = ((item.len() + 5) as i32).to_le_bytes().to_vec();
        array.extend_from_slice(&item);
        array.push(0);
        let mut body = vec![0x10, b'x', 0];
        body.extend_from_slice(&x.to_le_bytes());
        body.push(0x04);
        body.extend_from_slice(b"$sortKey\0");
        body.extend_from_slice(&array);
        let mut doc = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        doc.extend_from_slice(&body);
        doc.push(0);
        RawDocumentBuf::from_bytes(doc).unwrap()
    }

    #[test]
    fn a_mongods_binary_collation_keys_merge_by_their_bytes() {
        let spec = SortSpec::parse(&doc! {"name": 1}).unwrap();
        let mut m = KWayMerge::new(2, Some(spec));
        m.push(
            0,
            vec![
                with_binary_key(1, &[0x29, 0xfe, 0x05]),
                with_binary_key(3, &[0x2b, 0x01]),
            ],
            true,
        );
        m.push(1, vec![with_binary_key(2, &[0x29, 0xff, 0x01])], true);
        let order: Vec<i32> = std::iter::from_fn(|| m.pop_next())
            .map(|d| d.get_i32("x").unwrap())
            .collect();
        assert_eq!(order, vec![1, 2, 3]);
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

    #[test]
    fn strips_the_sort_key_wherever_it_is() {
        let spec = SortSpec::parse(&doc! {"v": 1}).unwrap();
        let mut m = KWayMerge::new(1, Some(spec));
        m.push(
            0,
            vec![
                rawdoc! {"$sortKey": [1], "v": 1, "w": "a"},
                rawdoc! {"v": 2, "$sortKey": [2], "w": "b"},
                rawdoc! {"v": 3, "w": "c"},
            ],
            true,
        );
        let got: Vec<RawDocumentBuf> = std::iter::from_fn(|| m.pop_next()).collect();
        assert_eq!(
            got,
            vec![
                rawdoc! {"v": 1, "w": "a"},
                rawdoc! {"v": 2, "w": "b"},
                rawdoc! {"v": 3, "w": "c"}
            ]
        );
        assert_eq!(strip_sort_key(rawdoc! {"x": 1}), rawdoc! {"x": 1});
    }

    /// Scalars of mixed types, with equal values across number types.
    fn sort_value() -> impl proptest::strategy::Strategy<Value = Bson> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Bson::Null),
            Just(Bson::MinKey),
            Just(Bson::MaxKey),
            (-3i32..3).prop_map(Bson::Int32),
            (-3i64..3).prop_map(Bson::Int64),
            prop::sample::select(vec![
                -1.5,
                -0.0,
                0.0,
                0.5,
                1.0,
                2.0,
                f64::NAN,
                f64::INFINITY
            ])
            .prop_map(Bson::Double),
            prop::sample::select(vec!["1", "-0", "2.0", "NaN", "-Infinity", "0.5"])
                .prop_map(|d| Bson::Decimal128(d.parse().unwrap())),
            "[a-c\\x00é]{0,3}".prop_map(Bson::String),
            "[a-c]{0,2}".prop_map(Bson::Symbol),
            any::<bool>().prop_map(Bson::Boolean),
            (-2i64..2).prop_map(|m| Bson::DateTime(bson::DateTime::from_millis(m))),
            (0u32..2, 0u32..2)
                .prop_map(|(time, increment)| Bson::Timestamp(bson::Timestamp { time, increment })),
            any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(bson::oid::ObjectId::from_bytes(b))),
            (0u8..3).prop_map(|n| Bson::Document(doc! {"k": n as i32})),
            (0u8..3).prop_map(|n| Bson::Array(vec![Bson::Int32(n as i32); n as usize])),
            prop::collection::vec(0u8..3, 0..3).prop_map(|bytes| Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes
            })),
        ]
    }

    /// Sort values whose keys share more than the heap's 8-byte prefix.
    fn long_prefix_value() -> impl proptest::strategy::Strategy<Value = Bson> {
        use proptest::prelude::*;
        prop_oneof![
            "a{6,10}[ab]{0,3}".prop_map(Bson::String),
            (0i64..4).prop_map(|n| Bson::Int64(1_000_000_000_000 + n)),
            (0i64..4).prop_map(|n| Bson::Double(1e12 + n as f64 / 8.0)),
        ]
    }

    proptest::proptest! {
        /// Streams each sorted by their byte keys merge into the order of
        /// (key, stream, position): the heap's prefixes never misorder.
        #[test]
        fn merges_like_a_stable_sort_by_key_then_stream(
            streams in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![sort_value(), long_prefix_value()],
                    0..12,
                ),
                1..5,
            ),
            descending in proptest::prelude::any::<bool>(),
        ) {
            let spec = SortSpec::parse(&doc! {"v": if descending { -1 } else { 1 }}).unwrap();
            let key = |v: &Bson| {
                let mut out = Vec::new();
                spec.encode_values(std::slice::from_ref(v), &mut out);
                out
            };
            let mut expected = Vec::new();
            let mut m = KWayMerge::new(streams.len(), Some(spec.clone()));
            for (s, values) in streams.iter().enumerate() {
                let mut values = values.clone();
                values.sort_by_key(|v| key(v));
                let docs: Vec<RawDocumentBuf> = values
                    .iter()
                    .enumerate()
                    .map(|(p, v)| {
                        expected.push((key(v), s, p));
                        let id = format!("{s}/{p}");
                        let d = doc! {"id": id, "$sortKey": [v.clone()]};
                        RawDocumentBuf::try_from(&d).unwrap()
                    })
                    .collect();
                m.push(s, docs, true);
            }
            expected.sort();
            let expected: Vec<String> =
                expected.iter().map(|(_, s, p)| format!("{s}/{p}")).collect();
            let got: Vec<String> = std::iter::from_fn(|| m.pop_next())
                .map(|d| d.get_str("id").unwrap().to_owned())
                .collect();
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert!(m.is_done());
        }

        /// The byte keys order documents as `compare_bson` orders their sort
        /// values under the sort's directions.
        #[test]
        fn byte_keys_order_like_compare_bson(
            a in proptest::collection::vec(sort_value(), 0..3),
            b in proptest::collection::vec(sort_value(), 0..3),
            dirs in proptest::collection::vec(proptest::prelude::any::<bool>(), 1..3),
        ) {
            let sort: bson::Document = dirs
                .iter()
                .enumerate()
                .map(|(i, asc)| (format!("f{i}"), Bson::Int32(if *asc { 1 } else { -1 })))
                .collect();
            let spec = SortSpec::parse(&sort).unwrap();
            let key = |values: &[Bson]| {
                let doc = RawDocumentBuf::try_from(&doc! {"x": 1, "$sortKey": values.to_vec()}).unwrap();
                let mut out = Vec::new();
                spec.encode(&doc, &mut out);
                out
            };
            let mut expected = std::cmp::Ordering::Equal;
            for (i, asc) in dirs.iter().enumerate() {
                let (x, y) = (a.get(i).unwrap_or(&Bson::Null), b.get(i).unwrap_or(&Bson::Null));
                let ord = shardgate_query::compare_bson(x, y);
                let ord = if *asc { ord } else { ord.reverse() };
                if ord != std::cmp::Ordering::Equal {
                    expected = ord;
                    break;
                }
            }
            proptest::prop_assert_eq!(key(&a).cmp(&key(&b)), expected, "{:?} vs {:?}", a, b);
        }
    }
}
