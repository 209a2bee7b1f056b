//! [`ShardKeyPattern::extract_key`]: the shard key of a stored document,
//! read in one pass over its top-level elements (dotted paths descend only
//! into the sub-documents they name) and encoded straight from the value
//! bytes (`fast`); anything unusual goes the full way (`extract_key_full`).

use bson::raw::{RawBsonRef, RawDocument};
use shardgate_wire::raw::{Element, Elements};

use super::encode::{encode_raw, NUMBER_TAG};
use super::fast::{encode_scalar, hash_scalar};
use super::hash::hash_raw;
use super::pattern::lookup;
use super::{number, KeyBytes, KeyKind, ShardKeyError, ShardKeyPattern};

/// Patterns with more fields than this take the full path.
const MAX_FAST_FIELDS: usize = 8;

impl ShardKeyPattern {
    /// The key of a stored document, as `mongos` routes it: dotted paths are
    /// followed through sub-documents; a missing field (or a path through a
    /// non-document) counts as null; an array anywhere on the path is a
    /// [`ShardKeyError::ArrayValue`]; a hashed field's value (null if
    /// missing) is hashed with [`hash_value`](super::hash_value) first. The
    /// result equals [`encode_bound`](Self::encode_bound) of
    /// [`key_document`](Self::key_document).
    pub fn extract_key(&self, doc: &RawDocument) -> Result<KeyBytes, ShardKeyError> {
        match self.extract_fast(doc.as_bytes()) {
            Some(key) => Ok(key),
            None => self.extract_key_full(doc),
        }
    }

    /// [`extract_key`](Self::extract_key) through the `bson` crate's parser:
    /// the reference the fast path falls back to (and is tested against).
    pub(crate) fn extract_key_full(&self, doc: &RawDocument) -> Result<KeyBytes, ShardKeyError> {
        let mut out = Vec::with_capacity(16 * self.fields.len());
        for (name, kind) in &self.fields {
            let value = lookup(doc, name)?.unwrap_or(RawBsonRef::Null);
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

    /// The key from the raw bytes, or `None` when the full path must decide
    /// (arrays, nested or rare values, malformed bytes, long patterns).
    fn extract_fast(&self, doc: &[u8]) -> Option<KeyBytes> {
        let n = self.fields.len();
        if n > MAX_FAST_FIELDS {
            return None;
        }
        // The top-level name each field's path starts with.
        let mut heads: [&[u8]; MAX_FAST_FIELDS] = [&[]; MAX_FAST_FIELDS];
        for (head, (name, _)) in heads.iter_mut().zip(&self.fields) {
            let name = name.as_bytes();
            *head = name.split(|&b| b == b'.').next().unwrap_or(name);
        }
        let heads = &heads[..n];
        let mut found: [Option<Element<'_>>; MAX_FAST_FIELDS] = [None; MAX_FAST_FIELDS];
        let mut missing = n;
        let mut elements = Elements::new(doc).ok()?;
        while let Some(element) = elements.step().ok()? {
            for (slot, head) in found.iter_mut().zip(heads) {
                if slot.is_none() && *head == element.key {
                    *slot = Some(element);
                    missing -= 1;
                }
            }
            if missing == 0 {
                break;
            }
        }
        SCRATCH.with_borrow_mut(|out| {
            out.clear();
            for ((top, head), (name, kind)) in found.iter().zip(heads).zip(&self.fields) {
                let value = if head.len() == name.len() {
                    top_level(*top)?
                } else {
                    descend(*top, name)?
                };
                let (k, value) = match value {
                    Some(e) => (e.kind, e.value),
                    None => (0x0A, &[][..]),
                };
                if *kind == KeyKind::Hashed {
                    out.push(NUMBER_TAG);
                    number::encode_i64(hash_scalar(k, value)?, out);
                } else if !encode_scalar(k, value, *kind == KeyKind::Descending, out) {
                    return None;
                }
            }
            Some(KeyBytes::from_slice(out))
        })
    }
}

thread_local! {
    /// Where the fast path encodes a key before it is copied out (short
    /// keys live inline in [`KeyBytes`], so extracting one allocates nothing).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The value of an undotted field: its top-level element (`Some(None)`
/// when missing), or `None` for the full path when it is an array.
fn top_level(top: Option<Element<'_>>) -> Option<Option<Element<'_>>> {
    match top {
        Some(e) if e.kind == 0x04 => None,
        other => Some(other),
    }
}

/// Follows the rest of a dotted `path` from its top-level element: the
/// value (`Some(None)` for a missing one), or `None` for the full path
/// (an array on the way, malformed bytes).
fn descend<'a>(top: Option<Element<'a>>, path: &str) -> Option<Option<Element<'a>>> {
    let mut current = top;
    for segment in path.split('.').skip(1) {
        match current {
            None => return Some(None),
            Some(e) if e.kind == 0x03 => {
                current = Elements::new(e.value).ok()?.find(segment.as_bytes()).ok()?;
            }
            Some(e) if e.kind == 0x04 => return None,
            Some(_) => return Some(None),
        }
    }
    top_level(current)
}
