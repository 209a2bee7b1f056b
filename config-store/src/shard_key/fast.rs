//! The fast path: shard-key (and sort-key) values encoded and hashed
//! straight from an element's raw value bytes ([`shardgate_wire::raw`]),
//! without the `bson` crate's parser and without allocating.
//!
//! Only scalars are handled here (numbers, strings, ObjectId, bool, date,
//! timestamp, binary, null, MinKey/MaxKey); for anything else, or bytes that
//! look wrong, the functions return `None`/`false` and the caller takes the
//! full path (`encode::encode_raw`, `hash::hash_raw`), which gives the same
//! bytes or the precise error. `fast_tests` checks both paths agree.

use bson::Decimal128;
use md5::{Digest, Md5};

use super::encode::{invert_from, put_date, put_str, put_timestamp, tag, NUMBER_TAG};
use super::md5_block::{md5_head, ONE_BLOCK};
use super::number;

/// The string inside a BSON string value (`i32` length, bytes, NUL), if it
/// is well-formed UTF-8.
fn string_bytes(value: &[u8]) -> Option<&[u8]> {
    let bytes = value.get(4..value.len().checked_sub(1)?)?;
    let declared = i32::from_le_bytes(value.get(..4)?.try_into().ok()?);
    if usize::try_from(declared).ok()? != bytes.len() + 1 {
        return None;
    }
    if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
        return None;
    }
    Some(bytes)
}

/// A BSON string's value (length, bytes, NUL) encoded as
/// [`encode_raw_value`] encodes a string, without requiring UTF-8: a
/// `mongod`'s collation comparison keys in `$sortKey` are binary strings,
/// compared by their bytes. `false` (nothing appended) when malformed.
pub fn encode_raw_string_bytes(value: &[u8], descending: bool, out: &mut Vec<u8>) -> bool {
    let Some(bytes) = value.get(4..value.len().saturating_sub(1)) else {
        return false;
    };
    let declared = value
        .get(..4)
        .and_then(|l| l.try_into().ok())
        .map(i32::from_le_bytes);
    if declared.and_then(|d| usize::try_from(d).ok()) != Some(bytes.len() + 1) {
        return false;
    }
    let start = out.len();
    out.push(tag(15));
    put_str(bytes, out);
    if descending {
        invert_from(out, start);
    }
    true
}

fn le8(value: &[u8]) -> Option<[u8; 8]> {
    value.get(..8)?.try_into().ok()
}

/// Appends the order-preserving encoding (as `encode::encode_raw`) of a
/// scalar value of BSON type `kind`; `false` (and nothing appended) when
/// the value needs the full path.
pub(crate) fn encode_scalar(kind: u8, value: &[u8], descending: bool, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let done = encode_scalar_asc(kind, value, out).is_some();
    if !done {
        out.truncate(start);
    } else if descending {
        invert_from(out, start);
    }
    done
}

fn encode_scalar_asc(kind: u8, value: &[u8], out: &mut Vec<u8>) -> Option<()> {
    match kind {
        0x10 => {
            let v = i32::from_le_bytes(value.get(..4)?.try_into().ok()?);
            out.push(NUMBER_TAG);
            number::encode_i64(i64::from(v), out);
        }
        0x12 => {
            out.push(NUMBER_TAG);
            number::encode_i64(i64::from_le_bytes(le8(value)?), out);
        }
        0x01 => {
            out.push(NUMBER_TAG);
            number::encode_f64(f64::from_le_bytes(le8(value)?), out);
        }
        0x13 => {
            let bytes: [u8; 16] = value.get(..16)?.try_into().ok()?;
            out.push(NUMBER_TAG);
            number::encode_decimal(&Decimal128::from_bytes(bytes), out);
        }
        0x02 | 0x0E | 0x0D => {
            let bytes = string_bytes(value)?;
            out.push(tag(if kind == 0x0D { 60 } else { 15 }));
            put_str(bytes, out);
        }
        0x07 => {
            out.push(tag(35));
            out.extend_from_slice(value.get(..12)?);
        }
        0x08 => {
            let b = *value.first()?;
            if b > 1 {
                return None;
            }
            out.extend_from_slice(&[tag(40), b]);
        }
        0x09 => {
            out.push(tag(45));
            put_date(i64::from_le_bytes(le8(value)?), out);
        }
        0x11 => {
            let raw = u64::from_le_bytes(le8(value)?);
            out.push(tag(47));
            put_timestamp((raw >> 32) as u32, raw as u32, out);
        }
        0x05 => encode_binary(value, out)?,
        0x0A => out.push(tag(5)),
        0x06 => out.push(tag(0)),
        0xFF => out.push(tag(-1)),
        0x7F => out.push(tag(127)),
        _ => return None,
    }
    Some(())
}

/// BinData other than the old subtype 2: length (big-endian), subtype,
/// bytes, as `encode::put_binary` lays them out.
fn encode_binary(value: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let len = usize::try_from(i32::from_le_bytes(value.get(..4)?.try_into().ok()?)).ok()?;
    let subtype = *value.get(4)?;
    let bytes = value.get(5..5 + len)?;
    if subtype == 2 || 5 + len != value.len() {
        return None;
    }
    out.push(tag(30));
    out.extend_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
    out.push(subtype);
    out.extend_from_slice(bytes);
    Some(())
}

/// Longest hashed input assembled on the stack (one MD5 block); a longer
/// string's bytes are fed to MD5 where they lie.
const HASH_BUF: usize = 64;
const _: () = assert!(ONE_BLOCK < HASH_BUF);

/// MongoDB's hashed-index hash (as `hash::hash_raw`) of a top-level scalar
/// of BSON type `kind`, over one stack buffer (or the buffer's head and the
/// value's own bytes); `None` when the value needs the full path.
pub(crate) fn hash_scalar(kind: u8, value: &[u8]) -> Option<i64> {
    let mut buf = [0u8; HASH_BUF];
    // The seed (0) is buf[0..4]; then the canonical type and the value.
    let (canonical, payload): (i32, &[u8]) = match kind {
        0x10 => {
            let v = i32::from_le_bytes(value.get(..4)?.try_into().ok()?);
            buf[8..16].copy_from_slice(&i64::from(v).to_le_bytes());
            (10, &[])
        }
        0x12 => (10, value.get(..8)?),
        0x01 => {
            let v = number::f64_to_long_for_hash(f64::from_le_bytes(le8(value)?));
            buf[8..16].copy_from_slice(&v.to_le_bytes());
            (10, &[])
        }
        0x13 => {
            let d = Decimal128::from_bytes(value.get(..16)?.try_into().ok()?);
            let v = number::decimal_to_long_for_hash(&d);
            buf[8..16].copy_from_slice(&v.to_le_bytes());
            (10, &[])
        }
        0x02 | 0x0E | 0x0D => {
            string_bytes(value)?;
            (if kind == 0x0D { 60 } else { 15 }, value)
        }
        0x07 => (35, value.get(..12)?),
        0x08 if value.first().is_some_and(|b| *b <= 1) => (40, value.get(..1)?),
        0x09 => (45, value.get(..8)?),
        0x0A => (5, &[]),
        0x06 => (0, &[]),
        0xFF => (-1, &[]),
        0x7F => (127, &[]),
        _ => return None,
    };
    buf[4..8].copy_from_slice(&canonical.to_le_bytes());
    let numeric = canonical == 10 && payload.is_empty();
    let end = 8 + payload.len();
    if numeric {
        return Some(i64::from_le_bytes(md5_head(buf, 16)));
    }
    if end <= ONE_BLOCK {
        buf[8..end].copy_from_slice(payload);
        return Some(i64::from_le_bytes(md5_head(buf, end)));
    }
    let mut md5 = Md5::new();
    md5.update(&buf[..8]);
    md5.update(payload);
    let first: [u8; 8] = md5.finalize().get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(first))
}

/// Appends the order-preserving encoding of one raw element value (BSON
/// type `kind`, value bytes as in the document), every byte inverted when
/// `descending`: the bytes [`encode_value`](super::encode_value) gives the
/// same value, so `memcmp` order is MongoDB's comparison order. `false`
/// (nothing appended) when the bytes are malformed.
pub fn encode_raw_value(kind: u8, value: &[u8], descending: bool, out: &mut Vec<u8>) -> bool {
    if encode_scalar(kind, value, descending, out) {
        return true;
    }
    // Rare types: parse the value as the only element of a document.
    let Ok(len) = i32::try_from(value.len() + 7) else {
        return false;
    };
    let mut doc = Vec::with_capacity(value.len() + 7);
    doc.extend_from_slice(&len.to_le_bytes());
    doc.extend_from_slice(&[kind, 0]);
    doc.extend_from_slice(value);
    doc.push(0);
    let Ok(raw) = bson::RawDocument::from_bytes(&doc) else {
        return false;
    };
    let Ok(Some(v)) = raw.get("") else {
        return false;
    };
    let start = out.len();
    if super::encode::encode_raw(v, descending, out).is_err() {
        out.truncate(start);
        return false;
    }
    true
}
