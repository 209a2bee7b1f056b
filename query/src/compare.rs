//! MongoDB's BSON comparison order.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::number::{as_num, compare_nums};

/// MongoDB's canonical type rank (`canonicalizeBSONType`). Values of
/// different ranks order by rank; `None` is a missing value, ranked with
/// `undefined`.
pub(crate) fn canonical_rank(v: Option<&Bson>) -> i32 {
    v.map_or(0, canonical_type)
}

/// The server's canonical type number (`canonicalizeBSONType`): values with
/// the same number compare by value, different numbers by number. (The
/// shard-key encoding in `config-store` ranks types the same way; a router
/// test checks that the two agree.)
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

/// Compares two BSON values in MongoDB's order: MinKey < undefined < null <
/// numbers < strings/symbols < objects < arrays < binData < ObjectId < bool <
/// date < timestamp < regex < dbPointer < code < code with scope < MaxKey.
///
/// Numbers compare by exact value across int32, int64, double and
/// Decimal128 (NaN equals NaN and sorts below every other number; -0 equals
/// 0). Strings compare by their UTF-8 bytes (no collation). Objects compare
/// element by element: the value's type rank, then the field name, then the
/// value, a prefix sorting first; arrays compare element by element.
/// Nested values are compared without recursion, so any nesting depth is
/// safe.
pub fn compare_bson(a: &Bson, b: &Bson) -> Ordering {
    compare_iterative(a, b)
}

/// Compares two possibly-missing values, missing ranking with `undefined`.
pub(crate) fn compare_opt(a: Option<&Bson>, b: Option<&Bson>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => compare_bson(x, y),
        _ => canonical_rank(a).cmp(&canonical_rank(b)),
    }
}

enum Frame<'a> {
    Doc(bson::document::Iter<'a>, bson::document::Iter<'a>),
    Arr(std::slice::Iter<'a, Bson>, std::slice::Iter<'a, Bson>),
}

enum Step<'a> {
    Done,
    Decided(Ordering),
    Pair(&'a Bson, &'a Bson),
}

impl<'a> Frame<'a> {
    fn next_pair(&mut self) -> Step<'a> {
        match self {
            Frame::Doc(x, y) => match (x.next(), y.next()) {
                (None, None) => Step::Done,
                (None, Some(_)) => Step::Decided(Ordering::Less),
                (Some(_), None) => Step::Decided(Ordering::Greater),
                (Some((ka, va)), Some((kb, vb))) => {
                    let by_type = canonical_rank(Some(va)).cmp(&canonical_rank(Some(vb)));
                    match by_type.then_with(|| ka.as_bytes().cmp(kb.as_bytes())) {
                        Ordering::Equal => Step::Pair(va, vb),
                        o => Step::Decided(o),
                    }
                }
            },
            Frame::Arr(x, y) => match (x.next(), y.next()) {
                (None, None) => Step::Done,
                (None, Some(_)) => Step::Decided(Ordering::Less),
                (Some(_), None) => Step::Decided(Ordering::Greater),
                (Some(va), Some(vb)) => Step::Pair(va, vb),
            },
        }
    }
}

fn compare_iterative<'a>(a: &'a Bson, b: &'a Bson) -> Ordering {
    let mut stack: Vec<Frame<'a>> = Vec::new();
    match compare_step(a, b, &mut stack) {
        Ordering::Equal => drain(&mut stack),
        o => o,
    }
}

fn drain<'a>(stack: &mut Vec<Frame<'a>>) -> Ordering {
    while let Some(top) = stack.last_mut() {
        match top.next_pair() {
            Step::Done => {
                stack.pop();
            }
            Step::Decided(o) => return o,
            Step::Pair(x, y) => match compare_step(x, y, stack) {
                Ordering::Equal => {}
                o => return o,
            },
        }
    }
    Ordering::Equal
}

/// Compares scalars directly; for containers with equal ranks, pushes a frame
/// and returns `Equal` so that the caller walks their contents.
fn compare_step<'a>(a: &'a Bson, b: &'a Bson, stack: &mut Vec<Frame<'a>>) -> Ordering {
    let (ra, rb) = (canonical_rank(Some(a)), canonical_rank(Some(b)));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Bson::Document(x), Bson::Document(y)) => {
            stack.push(Frame::Doc(x.iter(), y.iter()));
            Ordering::Equal
        }
        (Bson::Array(x), Bson::Array(y)) => {
            stack.push(Frame::Arr(x.iter(), y.iter()));
            Ordering::Equal
        }
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => {
            match x.code.as_bytes().cmp(y.code.as_bytes()) {
                Ordering::Equal => {
                    stack.push(Frame::Doc(x.scope.iter(), y.scope.iter()));
                    Ordering::Equal
                }
                o => o,
            }
        }
        _ => compare_scalars(a, b),
    }
}

fn string_bytes(v: &Bson) -> &[u8] {
    match v {
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => s.as_bytes(),
        _ => &[],
    }
}

/// Compares two non-container values of the same canonical rank.
fn compare_scalars(a: &Bson, b: &Bson) -> Ordering {
    if let (Some(x), Some(y)) = (as_num(a), as_num(b)) {
        return compare_nums(&x, &y);
    }
    match (a, b) {
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => x
            .pattern
            .as_str()
            .as_bytes()
            .cmp(y.pattern.as_str().as_bytes())
            .then_with(|| {
                x.options
                    .as_str()
                    .as_bytes()
                    .cmp(y.options.as_str().as_bytes())
            }),
        (Bson::DbPointer(_), Bson::DbPointer(_)) => {
            let (x, y) = (value_bytes(a), value_bytes(b));
            x.len().cmp(&y.len()).then_with(|| x.cmp(&y))
        }
        // Null, undefined, MinKey, MaxKey: equal within their rank.
        _ => string_bytes(a).cmp(string_bytes(b)),
    }
}

/// The raw BSON bytes of a value (used for DBPointer, whose fields the bson
/// crate does not expose).
fn value_bytes(v: &Bson) -> Vec<u8> {
    let mut doc = Document::new();
    doc.insert("", v.clone());
    match doc.to_vec() {
        // 4-byte length, 1-byte type, empty key's NUL, value, final NUL.
        Ok(bytes) if bytes.len() > 7 => bytes[6..bytes.len() - 1].to_vec(),
        _ => Vec::new(),
    }
}
