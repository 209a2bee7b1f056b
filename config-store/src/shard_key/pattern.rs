//! [`ShardKeyPattern`]: parsing a shard key and turning bounds and documents
//! into [`KeyBytes`].

use bson::raw::{RawArray, RawBsonRef, RawDocument};
use bson::{Bson, Document};

use super::encode::{encode_raw, encode_value, MAX_DEPTH, NUMBER_TAG};
use super::hash::hash_raw;
use super::{number, KeyBytes, ShardKeyError};

/// How one shard-key field orders (or hashes) its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `1`: values in BSON order.
    Ascending,
    /// `-1`: values in reverse BSON order (a shardgate extension; `mongos`
    /// only accepts `1` and `"hashed"`).
    Descending,
    /// `"hashed"`: the `NumberLong` [`hash_value`](super::hash_value) of the
    /// value, in ascending order.
    Hashed,
}

/// A parsed shard key such as `{customerId: 1, orderId: 1}` or
/// `{_id: "hashed"}`: field paths (dotted paths reach into sub-documents) in
/// order, each with its [`KeyKind`]. At most one field is hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardKeyPattern {
    pub(super) fields: Vec<(String, KeyKind)>,
}

impl ShardKeyPattern {
    /// Parses a shard key document. Valid: at least one field; every value
    /// `1` or `-1` (int32, int64, double or decimal equal to it) or the
    /// string `"hashed"`, with at most one hashed field; field paths
    /// non-empty, without empty segments (`a..b`, `.a`), segments not starting
    /// with `$`, no NUL bytes. Anything else is a
    /// [`ShardKeyError::InvalidPattern`] naming the offending field.
    pub fn parse(key: &Document) -> Result<Self, ShardKeyError> {
        let invalid = |reason: String| ShardKeyError::InvalidPattern {
            pattern: key.to_string(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("a shard key needs at least one field".to_owned()));
        }
        let mut fields = Vec::with_capacity(key.len());
        let mut hashed: Option<&str> = None;
        for (name, value) in key {
            check_field_name(name).map_err(invalid)?;
            let kind = match value {
                Bson::String(s) if s == "hashed" => {
                    if let Some(previous) = hashed {
                        return Err(invalid(format!(
                            "at most one field can be \"hashed\", but '{previous}' and '{name}' both are"
                        )));
                    }
                    hashed = Some(name);
                    KeyKind::Hashed
                }
                v if is_number(v, 1) => KeyKind::Ascending,
                v if is_number(v, -1) => KeyKind::Descending,
                other => {
                    return Err(invalid(format!(
                    "field '{name}' has value {other}, but each value must be 1, -1 or \"hashed\""
                )))
                }
            };
            fields.push((name.clone(), kind));
        }
        Ok(ShardKeyPattern { fields })
    }

    /// The normalized pattern: `1`/`-1` as Int32 and `"hashed"`, e.g.
    /// `{a: 1, b: "hashed"}`.
    pub fn to_document(&self) -> Document {
        self.fields
            .iter()
            .map(|(name, kind)| {
                let value = match kind {
                    KeyKind::Ascending => Bson::Int32(1),
                    KeyKind::Descending => Bson::Int32(-1),
                    KeyKind::Hashed => Bson::String("hashed".to_owned()),
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// The fields in order with their kinds.
    pub fn fields(&self) -> impl Iterator<Item = (&str, KeyKind)> + '_ {
        self.fields
            .iter()
            .map(|(name, kind)| (name.as_str(), *kind))
    }

    /// The hashed field, if the pattern has one.
    pub fn hashed_field(&self) -> Option<&str> {
        self.fields()
            .find(|(_, kind)| *kind == KeyKind::Hashed)
            .map(|(name, _)| name)
    }

    /// The lowest bound: `{a: MinKey, …}`. A descending field takes `MaxKey`
    /// instead, since its order is reversed.
    pub fn global_min(&self) -> Document {
        self.extreme(Bson::MinKey, Bson::MaxKey)
    }

    /// The highest bound: `{a: MaxKey, …}` (`MinKey` for descending fields).
    pub fn global_max(&self) -> Document {
        self.extreme(Bson::MaxKey, Bson::MinKey)
    }

    /// [`KeyBytes`] of [`global_min`](Self::global_min): no key sorts below.
    pub fn min_bytes(&self) -> KeyBytes {
        self.encode_trusted(&self.global_min())
    }

    /// [`KeyBytes`] of [`global_max`](Self::global_max): no key sorts above.
    pub fn max_bytes(&self) -> KeyBytes {
        self.encode_trusted(&self.global_max())
    }

    fn extreme(&self, ascending: Bson, descending: Bson) -> Document {
        self.fields
            .iter()
            .map(|(name, kind)| {
                let value = match kind {
                    KeyKind::Descending => descending.clone(),
                    _ => ascending.clone(),
                };
                (name.clone(), value)
            })
            .collect()
    }

    fn encode_trusted(&self, bound: &Document) -> KeyBytes {
        let mut out = Vec::with_capacity(self.fields.len());
        for ((_, kind), value) in self.fields.iter().zip(bound.values()) {
            encode_value(value, *kind == KeyKind::Descending, &mut out);
        }
        KeyBytes::from(out)
    }

    /// Encodes a chunk or zone bound such as `{a: 5, b: MinKey}`. The bound
    /// must hold exactly the pattern's fields in the pattern's order
    /// ([`ShardKeyError::BoundMismatch`] otherwise). Values may be any BSON
    /// except arrays and regular expressions (not valid shard-key values for
    /// storage in MongoDB) nested at most 200 levels; a hashed field's value
    /// must be a `NumberLong` hash, `MinKey` or `MaxKey`.
    pub fn encode_bound(&self, bound: &Document) -> Result<KeyBytes, ShardKeyError> {
        self.check_bound_fields(bound)?;
        let mut out = Vec::with_capacity(16 * self.fields.len());
        for ((name, kind), value) in self.fields.iter().zip(bound.values()) {
            check_bound_value(name, *kind, value)?;
            encode_value(value, *kind == KeyKind::Descending, &mut out);
        }
        Ok(KeyBytes::from(out))
    }

    fn check_bound_fields(&self, bound: &Document) -> Result<(), ShardKeyError> {
        let same = bound.len() == self.fields.len()
            && self
                .fields
                .iter()
                .zip(bound.keys())
                .all(|((a, _), b)| a == b);
        if same {
            return Ok(());
        }
        let missing: Vec<&str> = self
            .fields()
            .map(|(name, _)| name)
            .filter(|name| !bound.contains_key(name))
            .collect();
        let extra: Vec<&str> = bound
            .keys()
            .map(String::as_str)
            .filter(|key| !self.fields.iter().any(|(name, _)| name == key))
            .collect();
        let reason = match (missing.is_empty(), extra.is_empty()) {
            (false, false) => format!("missing fields {missing:?}, unexpected fields {extra:?}"),
            (false, true) => format!("missing fields {missing:?}"),
            (true, false) => format!("unexpected fields {extra:?}"),
            (true, true) => "fields must appear in the shard key's order".to_owned(),
        };
        Err(ShardKeyError::BoundMismatch {
            bound: bound.to_string(),
            pattern: self.to_document().to_string(),
            reason,
        })
    }

    /// The key of a document whose shard-key field values were read for it
    /// in pattern order, as an aggregation array `["$a", "$b"]` returns them
    /// (a missing value is null). Same rules and result as
    /// [`extract_key`](Self::extract_key) on the document itself.
    pub fn key_from_values(&self, values: &RawArray) -> Result<KeyBytes, ShardKeyError> {
        let mut out = Vec::with_capacity(16 * self.fields.len());
        let mut given = values.into_iter();
        for (name, kind) in &self.fields {
            let value = match given.next() {
                Some(Ok(v)) => v,
                Some(Err(err)) => {
                    return Err(ShardKeyError::InvalidBson {
                        field: name.clone(),
                        reason: err.to_string(),
                    })
                }
                None => RawBsonRef::Null,
            };
            if let RawBsonRef::Array(_) = value {
                return Err(ShardKeyError::ArrayValue {
                    field: name.clone(),
                });
            }
            let result = match kind {
                KeyKind::Hashed => hash_raw(value).map(|hash| {
                    out.push(NUMBER_TAG);
                    number::encode_i64(hash, &mut out);
                }),
                _ => encode_raw(value, *kind == KeyKind::Descending, &mut out),
            };
            result.map_err(|err| ShardKeyError::from_value(name, err))?;
        }
        Ok(KeyBytes::from(out))
    }

    /// The shard-key values of `doc` as a document `{a: …, b: …}` in pattern
    /// order, under the same rules as [`extract_key`](Self::extract_key)
    /// (missing fields are null, a hashed field holds its `NumberLong`
    /// hash). [`encode_bound`](Self::encode_bound) takes it, unless a value
    /// is a regular expression, which documents may hold but bounds may not.
    pub fn key_document(&self, doc: &RawDocument) -> Result<Document, ShardKeyError> {
        let mut key = Document::new();
        let mut scratch = Vec::new();
        for (name, kind) in &self.fields {
            let value = lookup(doc, name)?.unwrap_or(RawBsonRef::Null);
            let bson = match kind {
                KeyKind::Hashed => hash_raw(value).map(Bson::Int64),
                // Encoding first checks the value is well-formed and not too
                // deep for the recursive conversion.
                _ => encode_raw(value, false, &mut scratch).and_then(|()| {
                    Bson::try_from(value)
                        .map_err(|err| super::encode::ValueError::Malformed(err.to_string()))
                }),
            };
            let bson = bson.map_err(|err| ShardKeyError::from_value(name, err))?;
            scratch.clear();
            key.insert(name.clone(), bson);
        }
        Ok(key)
    }

    /// Whether an index with key pattern `index_key` can serve as this shard
    /// key's index: the shard key's fields are a prefix of the index's
    /// fields, in order, with the same direction (`1` / `-1`, any numeric
    /// type); extra trailing index fields are fine. A hashed shard-key field
    /// accepts a `"hashed"` index field or an ascending one: some servers
    /// cannot build hashed indexes, and an ascending index still finds every
    /// document of a hashed range once the router hashes the values.
    /// Index options (partial filters, collation, sparse) are not checked.
    pub fn is_prefix_of_index(&self, index_key: &Document) -> bool {
        index_key.len() >= self.fields.len()
            && self
                .fields
                .iter()
                .zip(index_key)
                .all(|((name, kind), (index_name, value))| {
                    name == index_name
                        && match kind {
                            KeyKind::Ascending => is_number(value, 1),
                            KeyKind::Descending => is_number(value, -1),
                            KeyKind::Hashed => {
                                matches!(value, Bson::String(s) if s == "hashed")
                                    || is_number(value, 1)
                            }
                        }
                })
    }
}

/// Whether `value` is a number (of any type) equal to `target`.
fn is_number(value: &Bson, target: i32) -> bool {
    if !matches!(
        value,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_)
    ) {
        return false;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    encode_value(value, false, &mut a);
    encode_value(&Bson::Int32(target), false, &mut b);
    a == b
}

fn check_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("field names cannot be empty".to_owned());
    }
    if name.contains('\0') {
        return Err(format!("field '{name}' contains a NUL byte"));
    }
    for segment in name.split('.') {
        if segment.is_empty() {
            return Err(format!("field '{name}' contains an empty path segment"));
        }
        if segment.starts_with('$') {
            return Err(format!(
                "field '{name}' has a path segment starting with '$'"
            ));
        }
    }
    Ok(())
}

fn check_bound_value(field: &str, kind: KeyKind, value: &Bson) -> Result<(), ShardKeyError> {
    let invalid = |reason: &str| ShardKeyError::InvalidValue {
        field: field.to_owned(),
        reason: reason.to_owned(),
    };
    match value {
        Bson::Array(_) => return Err(invalid("shard key values cannot be arrays")),
        Bson::RegularExpression(_) => {
            return Err(invalid(
                "regular expressions are not valid shard key values",
            ))
        }
        _ => {}
    }
    if kind == KeyKind::Hashed && !matches!(value, Bson::Int64(_) | Bson::MinKey | Bson::MaxKey) {
        return Err(invalid(
            "a hashed field's bound must be a NumberLong hash, MinKey or MaxKey",
        ));
    }
    if too_deep(value, 0) {
        return Err(ShardKeyError::TooDeep {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// Whether `value`, itself at nesting `depth`, holds documents or arrays
/// more than [`MAX_DEPTH`] levels deep (stops descending at the limit).
fn too_deep(value: &Bson, depth: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Bson>> = match value {
        Bson::Document(doc) => Box::new(doc.values()),
        Bson::Array(items) => Box::new(items.iter()),
        Bson::JavaScriptCodeWithScope(code) => Box::new(code.scope.values()),
        _ => return false,
    };
    depth + 1 > MAX_DEPTH || children.into_iter().any(|child| too_deep(child, depth + 1))
}

/// Follows the dotted `path` in `doc`: `Ok(None)` when a segment is missing
/// or the path runs through a non-document; an error for arrays on the path.
pub(super) fn lookup<'a>(
    doc: &'a RawDocument,
    path: &str,
) -> Result<Option<RawBsonRef<'a>>, ShardKeyError> {
    let mut current = doc;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let found = current
            .get(segment)
            .map_err(|err| ShardKeyError::InvalidBson {
                field: path.to_owned(),
                reason: err.to_string(),
            })?;
        let last = segments.peek().is_none();
        match found {
            None => return Ok(None),
            Some(RawBsonRef::Array(_)) => {
                return Err(ShardKeyError::ArrayValue {
                    field: path.to_owned(),
                })
            }
            Some(value) if last => return Ok(Some(value)),
            Some(RawBsonRef::Document(sub)) => current = sub,
            Some(_) => return Ok(None),
        }
    }
    Ok(None)
}
