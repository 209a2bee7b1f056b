//! MongoDB's hashed-index hash: `BSONElementHasher::hash64` with seed 0
//! (src/mongo/db/hasher.cpp).
//!
//! The hash is MD5 over: the seed as a little-endian `i32`; then, for the
//! element, its canonical type as a little-endian `i32`, its field name with
//! the NUL terminator (only for elements nested in an object or array), and
//! its value: numbers squashed to a little-endian `i64` by
//! `safeNumberLongForHash`, other scalars as their raw BSON value bytes, and
//! objects/arrays (and a code-with-scope's scope) as their elements followed
//! by an end-of-object element (canonical type 0, no name, no value). The
//! result is the first 8 digest bytes read as a little-endian `i64`.

use bson::raw::{RawBsonRef, RawDocument};
use bson::spec::BinarySubtype;
use bson::{Bson, Document};
use md5::{Digest, Md5};

use super::encode::{canonical_type, canonical_type_raw, check_depth, dbpointer_value, ValueError};
use super::number;

/// Canonical type of the end-of-object element.
const EOO_TYPE: i32 = 0;

/// MongoDB's hashed-index hash of `value` (`BSONElementHasher::hash64`,
/// seed 0), the `NumberLong` stored in a hashed index and used as the
/// shard-key value of a hashed field. `1`, `1.0`, `NumberLong(1)` and
/// `1.9` all hash alike: numbers are truncated to 64-bit integers first
/// (Decimal128 rounds half to even), NaN hashes as 0.
pub fn hash_value(value: &Bson) -> i64 {
    let mut hasher = Hasher::new();
    hash_bson(&mut hasher, value, None);
    hasher.finish()
}

/// [`hash_value`] of a raw value, refusing malformed or too-deep input.
pub(crate) fn hash_raw(value: RawBsonRef<'_>) -> Result<i64, ValueError> {
    let mut hasher = Hasher::new();
    hash_raw_element(&mut hasher, value, None, 0)?;
    Ok(hasher.finish())
}

struct Hasher(Md5);

impl Hasher {
    fn new() -> Self {
        let mut md5 = Md5::new();
        md5.update(0i32.to_le_bytes());
        Hasher(md5)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn int(&mut self, value: i32) {
        self.0.update(value.to_le_bytes());
    }

    fn long(&mut self, value: i64) {
        self.0.update(value.to_le_bytes());
    }

    /// A C string: the bytes and a NUL terminator.
    fn cstring(&mut self, value: &str) {
        self.0.update(value.as_bytes());
        self.0.update([0]);
    }

    /// A BSON string value: `i32` length including the NUL, bytes, NUL.
    fn string(&mut self, value: &str) {
        let len = i32::try_from(value.len() + 1).unwrap_or(i32::MAX);
        self.int(len);
        self.cstring(value);
    }

    /// A BinData value: `i32` length, subtype byte, bytes (the old binary
    /// subtype 2 carries an extra inner `i32` length).
    fn binary(&mut self, subtype: BinarySubtype, bytes: &[u8]) {
        let old = matches!(subtype, BinarySubtype::BinaryOld);
        let len = bytes.len() + if old { 4 } else { 0 };
        self.int(i32::try_from(len).unwrap_or(i32::MAX));
        self.0.update([u8::from(subtype)]);
        if old {
            self.int(i32::try_from(bytes.len()).unwrap_or(i32::MAX));
        }
        self.0.update(bytes);
    }

    fn timestamp(&mut self, time: u32, increment: u32) {
        self.0
            .update(((u64::from(time) << 32) | u64::from(increment)).to_le_bytes());
    }

    /// The end-of-object element closing an embedded object or array.
    fn end_of_object(&mut self) {
        self.int(EOO_TYPE);
    }

    fn finish(self) -> i64 {
        let digest = self.0.finalize();
        let mut first = [0u8; 8];
        for (slot, byte) in first.iter_mut().zip(digest.iter()) {
            *slot = *byte;
        }
        i64::from_le_bytes(first)
    }
}

fn hash_bson(h: &mut Hasher, value: &Bson, name: Option<&str>) {
    h.int(canonical_type(value));
    if let Some(name) = name {
        h.cstring(name);
    }
    match value {
        Bson::MinKey | Bson::MaxKey | Bson::Null | Bson::Undefined => {}
        Bson::Int32(v) => h.long(i64::from(*v)),
        Bson::Int64(v) => h.long(*v),
        Bson::Double(v) => h.long(number::f64_to_long_for_hash(*v)),
        Bson::Decimal128(v) => h.long(number::decimal_to_long_for_hash(v)),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => h.string(s),
        Bson::Document(doc) => hash_document(h, doc),
        Bson::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                hash_bson(h, item, Some(&index.to_string()));
            }
            h.end_of_object();
        }
        Bson::Binary(bin) => h.binary(bin.subtype, &bin.bytes),
        Bson::ObjectId(oid) => h.bytes(&oid.bytes()),
        Bson::Boolean(b) => h.bytes(&[u8::from(*b)]),
        Bson::DateTime(dt) => h.long(dt.timestamp_millis()),
        Bson::Timestamp(ts) => h.timestamp(ts.time, ts.increment),
        Bson::RegularExpression(re) => {
            h.cstring(re.pattern.as_str());
            h.cstring(re.options.as_str());
        }
        Bson::DbPointer(p) => {
            let raw = bson::RawBson::from(p.clone());
            h.bytes(&dbpointer_value(raw.as_raw_bson_ref()));
        }
        Bson::JavaScriptCodeWithScope(c) => {
            h.cstring(&c.code);
            hash_document(h, &c.scope);
        }
    }
}

fn hash_document(h: &mut Hasher, doc: &Document) {
    for (name, value) in doc {
        hash_bson(h, value, Some(name));
    }
    h.end_of_object();
}

fn hash_raw_element(
    h: &mut Hasher,
    value: RawBsonRef<'_>,
    name: Option<&str>,
    depth: usize,
) -> Result<(), ValueError> {
    h.int(canonical_type_raw(&value));
    if let Some(name) = name {
        h.cstring(name);
    }
    match value {
        RawBsonRef::MinKey | RawBsonRef::MaxKey | RawBsonRef::Null | RawBsonRef::Undefined => {}
        RawBsonRef::Int32(v) => h.long(i64::from(v)),
        RawBsonRef::Int64(v) => h.long(v),
        RawBsonRef::Double(v) => h.long(number::f64_to_long_for_hash(v)),
        RawBsonRef::Decimal128(v) => h.long(number::decimal_to_long_for_hash(&v)),
        RawBsonRef::String(s) | RawBsonRef::Symbol(s) | RawBsonRef::JavaScriptCode(s) => {
            h.string(s)
        }
        RawBsonRef::Document(doc) => hash_raw_document(h, doc, depth + 1)?,
        RawBsonRef::Array(items) => {
            check_depth(depth + 1)?;
            for element in items.iter_elements() {
                let element = element?;
                let item = element.value()?;
                hash_raw_element(h, item, Some(element.key().as_str()), depth + 1)?;
            }
            h.end_of_object();
        }
        RawBsonRef::Binary(bin) => h.binary(bin.subtype, bin.bytes),
        RawBsonRef::ObjectId(oid) => h.bytes(&oid.bytes()),
        RawBsonRef::Boolean(b) => h.bytes(&[u8::from(b)]),
        RawBsonRef::DateTime(dt) => h.long(dt.timestamp_millis()),
        RawBsonRef::Timestamp(ts) => h.timestamp(ts.time, ts.increment),
        RawBsonRef::RegularExpression(re) => {
            h.cstring(re.pattern.as_str());
            h.cstring(re.options.as_str());
        }
        RawBsonRef::DbPointer(_) => h.bytes(&dbpointer_value(value)),
        RawBsonRef::JavaScriptCodeWithScope(c) => {
            h.cstring(c.code);
            hash_raw_document(h, c.scope, depth + 1)?;
        }
    }
    Ok(())
}

fn hash_raw_document(h: &mut Hasher, doc: &RawDocument, depth: usize) -> Result<(), ValueError> {
    check_depth(depth)?;
    for element in doc {
        let (name, value) = element?;
        hash_raw_element(h, value, Some(name.as_str()), depth)?;
    }
    h.end_of_object();
    Ok(())
}
