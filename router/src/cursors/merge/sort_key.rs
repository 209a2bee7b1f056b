//! `$sortKey`s as bytes: the order-preserving encoding of each sort value
//! (`shardgate_config_store::shard_key::encode_sort_value`: the shard-key
//! encoding with a cheaper layout for numbers), every byte
//! inverted for a descending field, concatenated; so two documents compare
//! by `memcmp` of their keys exactly as MongoDB compares their sort values
//! (numbers by value across types, type brackets, strings by bytes under
//! the simple collation). Also the removal of `$sortKey` by slicing bytes.

use std::sync::Arc;

use bson::{Bson, Document, RawDocument, RawDocumentBuf};
use shardgate_config_store::shard_key::{
    encode_raw_sort_value, encode_raw_string_bytes, encode_sort_value,
};
use shardgate_wire::raw::Elements;

use crate::collation::Collator;

/// The field a shard adds when asked for `{$meta: "sortKey"}`.
pub const SORT_KEY_FIELD: &str = "$sortKey";

/// The BSON type byte of an array.
const ARRAY: u8 = 0x04;
/// The BSON type byte of a string.
const STRING: u8 = 0x02;

/// The directions of a sort specification, in field order, and the
/// collation the router applies to string values (when the shards do not).
#[derive(Debug, Clone)]
pub struct SortSpec {
    directions: Arc<[i8]>,
    /// The sorted fields' paths: a document a shard sent without
    /// `$sortKey` (SecantusDB drops it under `returnKey`) is keyed by its
    /// own values there.
    fields: Arc<[String]>,
    collator: Option<Arc<Collator>>,
    /// The documents carry no `$sortKey` (the router asked for none):
    /// keys are read from their own fields.
    own: bool,
}

impl PartialEq for SortSpec {
    fn eq(&self, other: &SortSpec) -> bool {
        let same_collator = match (&self.collator, &other.collator) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.directions == other.directions
            && self.fields == other.fields
            && same_collator
            && self.own == other.own
    }
}

impl Eq for SortSpec {}

impl SortSpec {
    /// Reads `{a: 1, b: -1}`; `None` when a field is not sorted by 1/-1
    /// (for example `{$meta: "textScore"}`), which the router cannot merge.
    pub fn parse(sort: &Document) -> Option<SortSpec> {
        Self::parse_as(sort, false)
    }

    /// As [`SortSpec::parse`], and `{$meta: "textScore"}` as descending:
    /// for merging on the `$sortKey` the shards compute themselves (a
    /// `find`'s), which holds the score.
    pub fn parse_shard_keyed(sort: &Document) -> Option<SortSpec> {
        Self::parse_as(sort, true)
    }

    fn parse_as(sort: &Document, text_score: bool) -> Option<SortSpec> {
        let mut directions = Vec::with_capacity(sort.len());
        for v in sort.values() {
            let d = match v {
                Bson::Int32(n) => *n as i64,
                Bson::Int64(n) => *n,
                Bson::Double(n) => *n as i64,
                Bson::Document(m) if text_score && m.get_str("$meta").ok() == Some("textScore") => {
                    -1
                }
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
            fields: sort.keys().cloned().collect::<Vec<_>>().into(),
            collator: None,
            own: false,
        })
    }

    /// Whether the router can key documents by their own fields, as a
    /// shard's `$sortKey` would (every field a plain path, no collation):
    /// then the shards need not compute `$sortKey` at all.
    pub(crate) fn ownable(&self) -> bool {
        self.collator.is_none()
            && self.fields.iter().all(|f| {
                f.split('.').all(|part| {
                    !part.is_empty()
                        && !part.starts_with('$')
                        && !part.bytes().all(|b| b.is_ascii_digit())
                })
            })
    }

    /// This order over documents that carry no `$sortKey`.
    pub(crate) fn by_own_fields(mut self) -> SortSpec {
        self.own = true;
        self
    }

    /// This order with strings compared under `collator` (for shards whose
    /// `$sortKey` holds raw values).
    pub(crate) fn collated(mut self, collator: Option<Arc<Collator>>) -> SortSpec {
        self.collator = collator;
        self
    }

    /// Appends the byte key of `doc`'s `$sortKey` to `out` (a missing value
    /// counts as null) and says where the `$sortKey` element sits in
    /// `doc`'s bytes, so it can be cut out.
    pub fn encode(&self, doc: &RawDocument, out: &mut Vec<u8>) -> Located {
        if self.own && self.collator.is_none() {
            self.encode_own(doc, out);
            return Located::Absent;
        }
        if let Some(collator) = &self.collator {
            let located = locate(doc);
            let values = match located {
                Located::Absent => self.own_values(doc),
                _ => sort_key_of(doc),
            };
            let values: Vec<Bson> = values.iter().map(|v| collator.key(v)).collect();
            self.encode_values(&values, out);
            return located;
        }
        let found =
            match Elements::new(doc.as_bytes()).and_then(|e| e.find(SORT_KEY_FIELD.as_bytes())) {
                Ok(found) => found,
                Err(_) => {
                    self.encode_values(&sort_key_of(doc), out);
                    return Located::Unreadable;
                }
            };
        if found.is_none() {
            self.encode_values(&self.own_values(doc), out);
            return Located::Absent;
        }
        let mut directions = self.directions.iter();
        if let Some(whole) = found.filter(|e| e.kind != ARRAY) {
            // A scalar key compares whole (a `$near` query's distance).
            if let Some(dir) = directions.clone().next() {
                if encode_raw_sort_value(whole.kind, whole.value, *dir < 0, out) {
                    directions.next();
                }
            }
        }
        if let Some(array) = found.filter(|e| e.kind == ARRAY) {
            let mut items = Elements::new(array.value).ok();
            while let Some(Ok(Some((kind, value)))) = items.as_mut().map(Elements::next_value) {
                let Some(dir) = directions.clone().next() else {
                    break;
                };
                // A malformed value is left out, as the parser's key did; a
                // string that is not UTF-8 is a mongod's collation key.
                let desc = *dir < 0;
                if encode_raw_sort_value(kind, value, desc, out)
                    || (kind == STRING && encode_raw_string_bytes(value, desc, out))
                {
                    directions.next();
                }
            }
        }
        for dir in directions {
            encode_sort_value(&Bson::Null, *dir < 0, out);
        }
        match found {
            Some(e) => Located::At(e.start, e.end),
            None => Located::Absent,
        }
    }

    /// The byte key of a document without `$sortKey`, read from its own
    /// fields: straight from the bytes where every path holds a scalar,
    /// else by the query engine's `sort_key` (arrays).
    fn encode_own(&self, doc: &RawDocument, out: &mut Vec<u8>) {
        let start = out.len();
        for (path, dir) in self.fields.iter().zip(self.directions.iter()) {
            let desc = *dir < 0;
            let done = match raw_leaf(doc.as_bytes(), path) {
                Leaf::Missing => {
                    encode_sort_value(&Bson::Null, desc, out);
                    true
                }
                Leaf::Scalar(kind, value) => encode_raw_sort_value(kind, value, desc, out),
                Leaf::Complex => false,
            };
            if !done {
                out.truncate(start);
                self.encode_values(&self.own_values(doc), out);
                return;
            }
        }
    }

    /// The sort values of a document without `$sortKey`, read from its own
    /// fields as MongoDB sorts them (an array by its least element
    /// ascending, its greatest descending; an empty one below null).
    fn own_values(&self, doc: &RawDocument) -> Vec<Bson> {
        let Ok(doc) = Document::try_from(doc) else {
            return Vec::new();
        };
        let sort: Document = self
            .fields
            .iter()
            .zip(self.directions.iter())
            .map(|(f, d)| (f.clone(), Bson::Int32(i32::from(*d))))
            .collect();
        match shardgate_query::sort_key(&doc, &sort) {
            Ok(values) => values,
            // Parallel arrays, which a mongod refuses to sort by: a shard
            // that sorted them anyway did so field by field.
            Err(_) => sort
                .iter()
                .map(|(f, d)| {
                    let one = Document::from_iter([(f.clone(), d.clone())]);
                    shardgate_query::sort_key(&doc, &one)
                        .ok()
                        .and_then(|mut v| v.pop())
                        .unwrap_or(Bson::Null)
                })
                .collect(),
        }
    }

    /// The byte key of sort values already decoded (missing ones null).
    pub fn encode_values(&self, values: &[Bson], out: &mut Vec<u8>) {
        for (i, dir) in self.directions.iter().enumerate() {
            encode_sort_value(values.get(i).unwrap_or(&Bson::Null), *dir < 0, out);
        }
    }
}

/// What a dotted path reaches in a document's bytes.
enum Leaf<'a> {
    /// Nothing: the path is missing (sorts as null).
    Missing,
    /// A value that is not an array, with its type byte.
    Scalar(u8, &'a [u8]),
    /// An array on the way or at the end (or bytes the walk cannot read).
    Complex,
}

/// The value at `path` in `doc`'s bytes, without decoding the document.
fn raw_leaf<'a>(doc: &'a [u8], path: &str) -> Leaf<'a> {
    const DOCUMENT: u8 = 0x03;
    let mut at = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let found = match Elements::new(at).and_then(|e| e.find(part.as_bytes())) {
            Ok(Some(e)) => e,
            Ok(None) => return Leaf::Missing,
            Err(_) => return Leaf::Complex,
        };
        match (found.kind, parts.peek().is_some()) {
            (ARRAY, _) => return Leaf::Complex,
            (DOCUMENT, true) => at = found.value,
            (_, true) => return Leaf::Missing,
            (kind, false) => return Leaf::Scalar(kind, found.value),
        }
    }
    Leaf::Missing
}

/// The sort key a shard attached to a document (empty when absent).
fn sort_key_of(doc: &RawDocument) -> Vec<Bson> {
    match doc.get_array(SORT_KEY_FIELD) {
        Ok(arr) => arr
            .into_iter()
            .filter_map(|v| v.ok().and_then(|v| Bson::try_from(v).ok()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Where a document's `$sortKey` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// The element spans these bytes of the document.
    At(usize, usize),
    /// The document has none.
    Absent,
    /// The fast walk could not read the document; strip by rebuilding.
    Unreadable,
}

/// `doc` without its `$sortKey` field, cut out of the bytes in place (no
/// copy of the other fields when it is the last one, as shards put it).
pub fn strip_sort_key(doc: RawDocumentBuf) -> RawDocumentBuf {
    let located = locate(&doc);
    strip_at(doc, located)
}

/// Where `doc`'s `$sortKey` is.
fn locate(doc: &RawDocument) -> Located {
    match Elements::new(doc.as_bytes()).and_then(|e| e.find(SORT_KEY_FIELD.as_bytes())) {
        Ok(Some(e)) => Located::At(e.start, e.end),
        Ok(None) => Located::Absent,
        Err(_) => Located::Unreadable,
    }
}

/// `doc` without the `$sortKey` [`SortSpec::encode`] located.
pub(crate) fn strip_at(doc: RawDocumentBuf, located: Located) -> RawDocumentBuf {
    match located {
        Located::At(start, end) if start >= 4 && start < end && end < doc.as_bytes().len() => {
            let mut bytes = doc.into_bytes();
            bytes.drain(start..end);
            let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
            bytes[..4].copy_from_slice(&len.to_le_bytes());
            // Length and terminator are right by construction.
            RawDocumentBuf::from_bytes(bytes).unwrap_or_default()
        }
        Located::At(..) | Located::Unreadable => rebuild_without(&doc),
        Located::Absent => doc,
    }
}

/// A copy of `doc` without the `$sortKey` field, element by element.
fn rebuild_without(doc: &RawDocument) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for elem in doc.iter().flatten() {
        if elem.0.as_str() != SORT_KEY_FIELD {
            out.append(elem.0, elem.1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bson::{doc, Bson, Document, RawDocumentBuf};
    use proptest::prelude::*;

    use super::SortSpec;

    /// Values of a sort field: scalars of several types, arrays (empty
    /// too), documents.
    fn value() -> impl Strategy<Value = Bson> {
        prop_oneof![
            Just(Bson::Null),
            (-3i32..3).prop_map(Bson::Int32),
            (-3i64..3).prop_map(|n| Bson::Double(n as f64 / 2.0)),
            "[a-c]{0,2}".prop_map(Bson::String),
            any::<bool>().prop_map(Bson::Boolean),
            proptest::collection::vec((-3i32..3).prop_map(Bson::Int32), 0..3).prop_map(Bson::Array),
            (-2i32..2).prop_map(|n| Bson::Document(doc! {"k": n})),
        ]
    }

    /// `b`: missing, a document with or without `c`, or an array of them.
    fn parent() -> impl Strategy<Value = Option<Bson>> {
        prop_oneof![
            Just(None),
            proptest::option::of(value()).prop_map(|c| Some(Bson::Document(match c {
                Some(c) => doc! {"c": c},
                None => doc! {"x": 1},
            }))),
            proptest::collection::vec(proptest::option::of(value()), 0..3).prop_map(|cs| {
                Some(Bson::Array(
                    cs.into_iter()
                        .map(|c| Bson::Document(c.map_or_else(|| doc! {}, |c| doc! {"c": c})))
                        .collect(),
                ))
            }),
        ]
    }

    proptest! {
        /// Documents keyed by their own fields (no `$sortKey`) order as the
        /// query engine's `$sort` orders them, arrays and dotted paths
        /// included.
        #[test]
        fn own_keys_sort_like_the_query_engine(
            docs in proptest::collection::vec((proptest::option::of(value()), parent()), 1..12),
            asc in any::<(bool, bool)>(),
        ) {
            let sort = doc! {"a": if asc.0 { 1 } else { -1 }, "b.c": if asc.1 { 1 } else { -1 }};
            let docs: Vec<Document> = docs
                .into_iter()
                .enumerate()
                .map(|(i, (a, b))| {
                    let mut d = doc! {"_id": i as i32};
                    if let Some(a) = a { d.insert("a", a); }
                    if let Some(b) = b { d.insert("b", b); }
                    d
                })
                .collect();
            let mut expected = docs.clone();
            prop_assume!(shardgate_query::sort_documents(&mut expected, &sort).is_ok());
            let spec = SortSpec::parse(&sort).unwrap().by_own_fields();
            let mut keyed: Vec<(Vec<u8>, i32)> = docs
                .iter()
                .map(|d| {
                    let raw = RawDocumentBuf::try_from(d).unwrap();
                    let mut key = Vec::new();
                    spec.encode(&raw, &mut key);
                    (key, d.get_i32("_id").unwrap())
                })
                .collect();
            keyed.sort_by(|x, y| x.0.cmp(&y.0));
            let got: Vec<i32> = keyed.iter().map(|k| k.1).collect();
            let expected: Vec<i32> = expected.iter().map(|d| d.get_i32("_id").unwrap()).collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn only_plain_paths_are_keyed_by_the_router() {
        let ownable = |s: Document| SortSpec::parse(&s).unwrap().ownable();
        assert!(ownable(doc! {"a": 1, "b.c": -1}));
        assert!(!ownable(doc! {"a.0": 1}));
        assert!(!ownable(doc! {"$natural": 1}));
    }
}
