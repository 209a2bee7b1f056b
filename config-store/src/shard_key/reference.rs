//! Test oracle: a direct implementation of MongoDB's BSON comparison
//! (`BSONElement::woCompare` / `compareElementValues`), written without the
//! encoder. Integers and doubles use the server's own algorithms
//! (`compareDoubles`, `compareLongToDouble`); anything involving a
//! Decimal128 compares exact decimal expansions obtained by string
//! formatting (`{:.800e}` for doubles, the bson crate's `Display` for
//! decimals) rather than by bit decoding.

use std::cmp::Ordering;

use bson::spec::BinarySubtype;
use bson::{Bson, Document};

/// `canonicalizeBSONType`, restated.
pub(crate) fn canonical(value: &Bson) -> i32 {
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

/// MongoDB's order of two values (no collation).
pub(crate) fn compare(a: &Bson, b: &Bson) -> Ordering {
    let by_type = canonical(a).cmp(&canonical(b));
    if by_type != Ordering::Equal {
        return by_type;
    }
    match (a, b) {
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::Document(x), Bson::Document(y)) => compare_documents(x, y),
        (Bson::Array(x), Bson::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = compare(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Binary(x), Bson::Binary(y)) => {
            binary_view(x.subtype, &x.bytes).cmp(&binary_view(y.subtype, &y.bytes))
        }
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => {
            (x.pattern.as_str().as_bytes(), x.options.as_str().as_bytes())
                .cmp(&(y.pattern.as_str().as_bytes(), y.options.as_str().as_bytes()))
        }
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => x
            .code
            .as_bytes()
            .cmp(y.code.as_bytes())
            .then_with(|| compare_documents(&x.scope, &y.scope)),
        _ if canonical(a) == 10 => compare_numbers(a, b),
        _ => Ordering::Equal,
    }
}

/// `BSONObj::woCompare` with field names: per element the type, then the
/// name (strcmp), then the value; a prefix sorts first.
pub(crate) fn compare_documents(a: &Document, b: &Document) -> Ordering {
    let mut left = a.iter();
    let mut right = b.iter();
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let c = canonical(va)
                    .cmp(&canonical(vb))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| compare(va, vb));
                if c != Ordering::Equal {
                    return c;
                }
            }
        }
    }
}

/// (length, subtype, bytes) as the server compares BinData.
fn binary_view(subtype: BinarySubtype, bytes: &[u8]) -> (usize, u8, Vec<u8>) {
    let mut payload = Vec::new();
    let mut len = bytes.len();
    if matches!(subtype, BinarySubtype::BinaryOld) {
        len += 4;
        payload.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
    }
    payload.extend_from_slice(bytes);
    (len, u8::from(subtype), payload)
}

fn compare_numbers(a: &Bson, b: &Bson) -> Ordering {
    match (a, b) {
        (Bson::Double(x), Bson::Double(y)) => compare_doubles(*x, *y),
        (Bson::Double(x), _) if as_long(b).is_some() => {
            compare_long_to_double(as_long(b).unwrap_or(0), *x).reverse()
        }
        (_, Bson::Double(y)) if as_long(a).is_some() => {
            compare_long_to_double(as_long(a).unwrap_or(0), *y)
        }
        _ => match (as_long(a), as_long(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => exact(a).cmp(&exact(b)),
        },
    }
}

fn as_long(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        _ => None,
    }
}

/// The server's `compareDoubles`: NaN equals NaN and sorts first.
fn compare_doubles(x: f64, y: f64) -> Ordering {
    match x.partial_cmp(&y) {
        Some(c) => c,
        None => x.is_nan().cmp(&y.is_nan()).reverse(),
    }
}

/// The server's `compareLongToDouble`.
fn compare_long_to_double(l: i64, d: f64) -> Ordering {
    if d.is_nan() {
        return Ordering::Greater;
    }
    const END_OF_PRECISE: i64 = 1 << 53;
    if (-END_OF_PRECISE..=END_OF_PRECISE).contains(&l) {
        return compare_doubles(l as f64, d);
    }
    const BOUND: f64 = 9_223_372_036_854_775_808.0;
    if d >= BOUND {
        return Ordering::Less;
    }
    if d < -BOUND {
        return Ordering::Greater;
    }
    l.cmp(&(d as i64))
}

/// An exact number: class rank, then for finite non-zero values the
/// decimal point position and significant digits (sign applied by `cmp`).
#[derive(Debug, PartialEq, Eq)]
enum Exact {
    NaN,
    NegInfinity,
    Negative(i64, Vec<u8>),
    Zero,
    Positive(i64, Vec<u8>),
    PosInfinity,
}

impl Ord for Exact {
    fn cmp(&self, other: &Self) -> Ordering {
        fn rank(e: &Exact) -> u8 {
            match e {
                Exact::NaN => 0,
                Exact::NegInfinity => 1,
                Exact::Negative(..) => 2,
                Exact::Zero => 3,
                Exact::Positive(..) => 4,
                Exact::PosInfinity => 5,
            }
        }
        match (self, other) {
            (Exact::Positive(e1, d1), Exact::Positive(e2, d2)) => (e1, d1).cmp(&(e2, d2)),
            (Exact::Negative(e1, d1), Exact::Negative(e2, d2)) => (e2, d2).cmp(&(e1, d1)),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for Exact {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// For a finite non-zero number: (negative, decimal point position,
/// significant digits), meaning `±0.d1d2… × 10^point`.
pub(crate) fn exact_parts(value: &Bson) -> Option<(bool, i64, Vec<u8>)> {
    match exact(value) {
        Exact::Negative(point, digits) => Some((true, point, digits)),
        Exact::Positive(point, digits) => Some((false, point, digits)),
        _ => None,
    }
}

fn exact(value: &Bson) -> Exact {
    let text = match value {
        Bson::Int32(v) => v.to_string(),
        Bson::Int64(v) => v.to_string(),
        Bson::Double(v) if v.is_nan() => return Exact::NaN,
        Bson::Double(v) if v.is_infinite() => {
            return if *v > 0.0 {
                Exact::PosInfinity
            } else {
                Exact::NegInfinity
            }
        }
        Bson::Double(v) => format!("{v:.800e}"),
        Bson::Decimal128(v) => v.to_string(),
        _ => return Exact::NaN,
    };
    parse_exact(&text)
}

/// Parses `[-]digits[.digits][E[+-]exp]`, `NaN`, `[-]Infinity`.
fn parse_exact(text: &str) -> Exact {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    match body {
        "NaN" => return Exact::NaN,
        "Infinity" => {
            return if negative {
                Exact::NegInfinity
            } else {
                Exact::PosInfinity
            }
        }
        _ => {}
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (
            &body[..at],
            body[at + 1..]
                .trim_start_matches('+')
                .parse::<i64>()
                .unwrap(),
        ),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|c| c - b'0')
        .collect();
    let leading = all.iter().take_while(|&&d| d == 0).count();
    let digits = &all[leading..];
    let point = digits.len() as i64 + exponent - frac_part.len() as i64;
    let trailing = digits.iter().rev().take_while(|&&d| d == 0).count();
    let digits = digits[..digits.len() - trailing].to_vec();
    if digits.is_empty() {
        Exact::Zero
    } else if negative {
        Exact::Negative(point, digits)
    } else {
        Exact::Positive(point, digits)
    }
}
