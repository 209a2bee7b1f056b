//! Order-preserving byte encoding of single BSON values.
//!
//! Every value starts with a tag byte derived from the server's canonical
//! type number (`canonicalizeBSONType`), so values of different types sort
//! by type first. Each encoding is prefix-free, which is what lets compound
//! keys be plain concatenations and descending fields be byte inversions.

use bson::raw::{RawArrayBuf, RawBinaryRef, RawBson, RawBsonRef, RawDocument};
use bson::spec::BinarySubtype;
use bson::{Bson, Document};

use super::number;

/// Deepest nesting of documents/arrays accepted inside a value read from the
/// network (MongoDB's default `maxBSONDepth` is 200 for whole documents).
pub(crate) const MAX_DEPTH: usize = 200;

/// Ends the elements of an object or array; below every element tag.
const END: u8 = 0x00;

/// Why a raw value could not be encoded or hashed.
#[derive(Debug)]
pub(crate) enum ValueError {
    /// The bytes are not well-formed BSON.
    Malformed(String),
    /// Documents/arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl From<bson::error::Error> for ValueError {
    fn from(err: bson::error::Error) -> Self {
        ValueError::Malformed(err.to_string())
    }
}

/// The server's canonical type number (`canonicalizeBSONType`); values with
/// the same number compare by value, different numbers compare by number.
pub fn canonical_type(value: &Bson) -> i32 {
    match value {
        Bson::MinKey => -1,
        Bson::Undefined => 0,
        Bson::Null => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 127,
    }
}

/// [`canonical_type`] for a borrowed raw value.
pub(crate) fn canonical_type_raw(value: &RawBsonRef<'_>) -> i32 {
    match value {
        RawBsonRef::MinKey => -1,
        RawBsonRef::Undefined => 0,
        RawBsonRef::Null => 5,
        RawBsonRef::Int32(_)
        | RawBsonRef::Int64(_)
        | RawBsonRef::Double(_)
        | RawBsonRef::Decimal128(_) => 10,
        RawBsonRef::String(_) | RawBsonRef::Symbol(_) => 15,
        RawBsonRef::Document(_) => 20,
        RawBsonRef::Array(_) => 25,
        RawBsonRef::Binary(_) => 30,
        RawBsonRef::ObjectId(_) => 35,
        RawBsonRef::Boolean(_) => 40,
        RawBsonRef::DateTime(_) => 45,
        RawBsonRef::Timestamp(_) => 47,
        RawBsonRef::RegularExpression(_) => 50,
        RawBsonRef::DbPointer(_) => 55,
        RawBsonRef::JavaScriptCode(_) => 60,
        RawBsonRef::JavaScriptCodeWithScope(_) => 65,
        RawBsonRef::MaxKey => 127,
    }
}

/// The leading byte of a value: canonical type + 2 (MinKey 0x01 … MaxKey
/// 0x81), keeping 0x00 free for [`END`].
pub(super) fn tag(canonical: i32) -> u8 {
    (canonical + 2) as u8
}

/// Tag byte of every number.
pub(crate) const NUMBER_TAG: u8 = 12;
/// Tag byte (and whole encoding) of MinKey.
pub(super) const MIN_KEY_TAG: u8 = 0x01;
/// Tag byte (and whole encoding) of MaxKey.
pub(super) const MAX_KEY_TAG: u8 = 0x81;

/// If `min` is a global minimum key (every field a one-byte MinKey, or an
/// inverted MaxKey for a descending field), the matching global maximum;
/// `None` for any other key.
pub(crate) fn global_max_matching(min: &[u8]) -> Option<Vec<u8>> {
    if min.is_empty() {
        return None;
    }
    min.iter()
        .map(|&byte| match byte {
            MIN_KEY_TAG => Some(MAX_KEY_TAG),
            b if b == !MAX_KEY_TAG => Some(!MIN_KEY_TAG),
            _ => None,
        })
        .collect()
}

/// Appends the order-preserving encoding of one shard-key field value.
///
/// `memcmp` order of the output equals MongoDB's BSON comparison order
/// (`BSONElement::woCompare` without collation), and the encoding is
/// prefix-free, so concatenating fields gives compound-key order. With
/// `descending` every byte is inverted, which reverses the order.
///
/// Recursion follows the nesting of `value`; values decoded from the network
/// should go through [`ShardKeyPattern::encode_bound`](super::ShardKeyPattern::encode_bound),
/// which rejects nesting deeper than 200 levels first.
pub fn encode_value(value: &Bson, descending: bool, out: &mut Vec<u8>) {
    let start = out.len();
    encode_bson(value, out);
    if descending {
        invert_from(out, start);
    }
}

/// Inverts every byte of `out` from `start` on.
pub(crate) fn invert_from(out: &mut [u8], start: usize) {
    for byte in out.iter_mut().skip(start) {
        *byte = !*byte;
    }
}

fn encode_bson(value: &Bson, out: &mut Vec<u8>) {
    out.push(tag(canonical_type(value)));
    encode_bson_body(value, out);
}

fn encode_bson_body(value: &Bson, out: &mut Vec<u8>) {
    match value {
        Bson::MinKey | Bson::MaxKey | Bson::Null | Bson::Undefined => {}
        Bson::Int32(v) => number::encode_i64(i64::from(*v), out),
        Bson::Int64(v) => number::encode_i64(*v, out),
        Bson::Double(v) => number::encode_f64(*v, out),
        Bson::Decimal128(v) => number::encode_decimal(v, out),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => put_str(s.as_bytes(), out),
        Bson::Document(doc) => encode_document_body(doc, out),
        Bson::Array(items) => {
            for item in items {
                encode_bson(item, out);
            }
            out.push(END);
        }
        Bson::Binary(bin) => put_binary(bin.subtype, &bin.bytes, out),
        Bson::ObjectId(oid) => out.extend_from_slice(&oid.bytes()),
        Bson::Boolean(b) => out.push(u8::from(*b)),
        Bson::DateTime(dt) => put_date(dt.timestamp_millis(), out),
        Bson::Timestamp(ts) => put_timestamp(ts.time, ts.increment, out),
        Bson::RegularExpression(re) => {
            put_str(re.pattern.as_str().as_bytes(), out);
            put_str(re.options.as_str().as_bytes(), out);
        }
        Bson::DbPointer(p) => put_dbpointer(
            &dbpointer_value(RawBson::from(p.clone()).as_raw_bson_ref()),
            out,
        ),
        Bson::JavaScriptCodeWithScope(c) => {
            put_str(c.code.as_bytes(), out);
            encode_document_body(&c.scope, out);
        }
    }
}

/// Elements as (type tag, field name, value), then [`END`].
fn encode_document_body(doc: &Document, out: &mut Vec<u8>) {
    for (name, value) in doc {
        out.push(tag(canonical_type(value)));
        put_str(name.as_bytes(), out);
        encode_bson_body(value, out);
    }
    out.push(END);
}

/// Appends the encoding of a raw value; `descending` inverts it.
pub(crate) fn encode_raw(
    value: RawBsonRef<'_>,
    descending: bool,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let start = out.len();
    out.push(tag(canonical_type_raw(&value)));
    encode_raw_body(value, 0, out)?;
    if descending {
        invert_from(out, start);
    }
    Ok(())
}

fn encode_raw_body(
    value: RawBsonRef<'_>,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    match value {
        RawBsonRef::MinKey | RawBsonRef::MaxKey | RawBsonRef::Null | RawBsonRef::Undefined => {}
        RawBsonRef::Int32(v) => number::encode_i64(i64::from(v), out),
        RawBsonRef::Int64(v) => number::encode_i64(v, out),
        RawBsonRef::Double(v) => number::encode_f64(v, out),
        RawBsonRef::Decimal128(v) => number::encode_decimal(&v, out),
        RawBsonRef::String(s) | RawBsonRef::Symbol(s) | RawBsonRef::JavaScriptCode(s) => {
            put_str(s.as_bytes(), out)
        }
        RawBsonRef::Document(doc) => encode_raw_document_body(doc, depth + 1, out)?,
        RawBsonRef::Array(items) => {
            check_depth(depth + 1)?;
            for item in items {
                let item = item?;
                out.push(tag(canonical_type_raw(&item)));
                encode_raw_body(item, depth + 1, out)?;
            }
            out.push(END);
        }
        RawBsonRef::Binary(RawBinaryRef { subtype, bytes }) => put_binary(subtype, bytes, out),
        RawBsonRef::ObjectId(oid) => out.extend_from_slice(&oid.bytes()),
        RawBsonRef::Boolean(b) => out.push(u8::from(b)),
        RawBsonRef::DateTime(dt) => put_date(dt.timestamp_millis(), out),
        RawBsonRef::Timestamp(ts) => put_timestamp(ts.time, ts.increment, out),
        RawBsonRef::RegularExpression(re) => {
            put_str(re.pattern.as_str().as_bytes(), out);
            put_str(re.options.as_str().as_bytes(), out);
        }
        RawBsonRef::DbPointer(_) => put_dbpointer(&dbpointer_value(value), out),
        RawBsonRef::JavaScriptCodeWithScope(c) => {
            put_str(c.code.as_bytes(), out);
            encode_raw_document_body(c.scope, depth + 1, out)?;
        }
    }
    Ok(())
}

fn encode_raw_document_body(
    doc: &RawDocument,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    check_depth(depth)?;
    for element in doc {
        let (name, value) = element?;
        out.push(tag(canonical_type_raw(&value)));
        put_str(name.as_str().as_bytes(), out);
        encode_raw_body(value, depth, out)?;
    }
    out.push(END);
    Ok(())
}

pub(crate) fn check_depth(depth: usize) -> Result<(), ValueError> {
    if depth > MAX_DEPTH {
        Err(ValueError::TooDeep)
    } else {
        Ok(())
    }
}

/// Bytes compared as `memcmp`, shorter prefix first: 0x00 is escaped as
/// 0x00 0xFF and the string ends with 0x00 0x00.
pub(super) fn put_str(bytes: &[u8], out: &mut Vec<u8>) {
    if bytes.contains(&0) {
        for &b in bytes {
            out.push(b);
            if b == 0 {
                out.push(0xff);
            }
        }
    } else {
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&[0, 0]);
}

/// BinData compares by length, then subtype, then bytes. For the old binary
/// subtype (2) the server's length and bytes include the inner length.
fn put_binary(subtype: BinarySubtype, bytes: &[u8], out: &mut Vec<u8>) {
    let old = matches!(subtype, BinarySubtype::BinaryOld);
    let len = bytes.len() + if old { 4 } else { 0 };
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out.push(u8::from(subtype));
    if old {
        let inner = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        out.extend_from_slice(&inner.to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

/// Dates compare as signed milliseconds.
pub(super) fn put_date(millis: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&((millis as u64) ^ (1 << 63)).to_be_bytes());
}

/// Timestamps compare as the unsigned 64-bit `(time << 32) | increment`.
pub(super) fn put_timestamp(time: u32, increment: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&increment.to_be_bytes());
}

/// DBPointers compare by value size, then the raw value bytes.
fn put_dbpointer(raw_value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(
        &u32::try_from(raw_value.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(raw_value);
}

/// The raw BSON value bytes of a DBPointer (namespace string, then the
/// ObjectId). The bson crate keeps its fields private, so serialize it.
pub(crate) fn dbpointer_value(value: RawBsonRef<'_>) -> Vec<u8> {
    let mut array = RawArrayBuf::new();
    array.push(value);
    let bytes = array.as_bytes();
    // Document length (4), element type (1), key "0\0" (2) … trailing 0x00.
    bytes
        .get(7..bytes.len().saturating_sub(1))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}
