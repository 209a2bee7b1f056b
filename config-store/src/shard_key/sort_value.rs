//! Sort values as bytes for the router's merge: the shard-key encoding
//! ([`encode_value`](super::encode_value)), except that a top-level number
//! is laid out so the common ones cost a few instructions.
//!
//! A number `v` becomes the number tag, then the double nearest to `v` as 8
//! order-preserving bytes (NaN lowest, `-0` as `0`), then one byte saying
//! whether `v` is below (0), equal to (1) or above (2) that double, and,
//! when it is not equal, the exact encoding (`number`) of `v`. Rounding to
//! the nearest double never reverses two values, so two numbers whose
//! doubles differ are ordered by those 8 bytes; two that share a double are
//! ordered by their side of it, then exactly. An int32, a double or an
//! int64 within 2^53 is its own double: 10 bytes, no division. Larger
//! int64s and Decimal128s take the exact encoding to decide their side.
//!
//! These keys only compare with each other, never with stored shard keys.
//! Numbers inside arrays and documents keep the exact encoding, which is
//! consistent since every such value of a merge is encoded the same way.

use bson::{Bson, Decimal128};

use super::encode::{invert_from, NUMBER_TAG};
use super::fast::encode_raw_value;
use super::number::{self, DecimalParts};

/// The side byte of a number equal to its double.
const EXACT: u8 = 1;

/// Appends the sort encoding of `value` (inverted when `descending`).
pub fn encode_sort_value(value: &Bson, descending: bool, out: &mut Vec<u8>) {
    let number = match value {
        Bson::Int32(v) => Number::Int(i64::from(*v)),
        Bson::Int64(v) => Number::Int(*v),
        Bson::Double(v) => Number::Double(*v),
        Bson::Decimal128(v) => Number::Decimal(*v),
        other => return super::encode_value(other, descending, out),
    };
    encode_number(number, descending, out);
}

/// As [`encode_sort_value`], for one raw element's type byte and value
/// bytes; `false` (nothing appended) when the bytes are malformed.
pub fn encode_raw_sort_value(kind: u8, value: &[u8], descending: bool, out: &mut Vec<u8>) -> bool {
    let number = match (kind, value.len()) {
        (0x10, 4) => Number::Int(i64::from(i32::from_le_bytes(fixed(value)))),
        (0x12, 8) => Number::Int(i64::from_le_bytes(fixed(value))),
        (0x01, 8) => Number::Double(f64::from_le_bytes(fixed(value))),
        (0x13, 16) => Number::Decimal(Decimal128::from_bytes(fixed(value))),
        _ => return encode_raw_value(kind, value, descending, out),
    };
    encode_number(number, descending, out);
    true
}

/// The first `N` bytes of `value`, which the caller checked holds `N`.
fn fixed<const N: usize>(value: &[u8]) -> [u8; N] {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&value[..N]);
    bytes
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Double(f64),
    Decimal(Decimal128),
}

fn encode_number(number: Number, descending: bool, out: &mut Vec<u8>) {
    let start = out.len();
    let nearest = match number {
        Number::Double(v) => Some(v),
        Number::Int(v) if v.unsigned_abs() <= 1 << 53 => Some(v as f64),
        _ => None,
    };
    match nearest {
        Some(exact) => {
            let mut key = [NUMBER_TAG, 0, 0, 0, 0, 0, 0, 0, 0, EXACT];
            key[1..9].copy_from_slice(&ordered(exact).to_be_bytes());
            if descending {
                key = key.map(|b| !b);
            }
            out.extend_from_slice(&key);
        }
        None => {
            encode_inexact(number, out);
            if descending {
                invert_from(out, start);
            }
        }
    }
}

/// A large int64 or a Decimal128: its nearest double, its side of it and,
/// off it, its exact bytes.
fn encode_inexact(number: Number, out: &mut Vec<u8>) {
    let nearest = match number {
        Number::Int(v) => v as f64,
        Number::Double(v) => v,
        Number::Decimal(d) => decimal_nearest(&d),
    };
    let mut exact = Vec::with_capacity(24);
    match number {
        Number::Int(v) => number::encode_i64(v, &mut exact),
        Number::Double(v) => number::encode_f64(v, &mut exact),
        Number::Decimal(d) => number::encode_decimal(&d, &mut exact),
    }
    let mut of_nearest = Vec::with_capacity(24);
    number::encode_f64(nearest, &mut of_nearest);
    let side = match exact.cmp(&of_nearest) {
        std::cmp::Ordering::Less => 0,
        std::cmp::Ordering::Equal => EXACT,
        std::cmp::Ordering::Greater => 2,
    };
    out.push(NUMBER_TAG);
    out.extend_from_slice(&ordered(nearest).to_be_bytes());
    out.push(side);
    if side != EXACT {
        out.extend_from_slice(&exact);
    }
}

/// The double nearest a Decimal128 (correctly rounded, so never out of
/// order), infinite past the doubles' range.
fn decimal_nearest(d: &Decimal128) -> f64 {
    match number::decode_decimal(d) {
        DecimalParts::NaN => f64::NAN,
        DecimalParts::Infinity { negative } => {
            if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        }
        DecimalParts::Finite {
            negative,
            coefficient,
            exponent,
        } => {
            let sign = if negative { "-" } else { "" };
            format!("{sign}{coefficient}e{exponent}")
                .parse()
                .unwrap_or(f64::NAN)
        }
    }
}

/// A double's bits reordered so unsigned order is numeric order: NaN
/// lowest, `-0` equal to `0`.
fn ordered(v: f64) -> u64 {
    if v.is_nan() {
        return 0;
    }
    let bits = if v == 0.0 { 0 } else { v.to_bits() };
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(v: &Bson) -> Vec<u8> {
        let mut out = Vec::new();
        encode_sort_value(v, false, &mut out);
        out
    }

    fn raw_key(v: &Bson) -> Vec<u8> {
        let doc = bson::RawDocumentBuf::try_from(&bson::doc! {"v": v.clone()}).unwrap();
        let bytes = doc.as_bytes();
        let mut out = Vec::new();
        // `{v: …}`: length (4), type byte, "v\0", the value, the final NUL.
        assert!(encode_raw_sort_value(
            bytes[4],
            &bytes[7..bytes.len() - 1],
            false,
            &mut out
        ));
        out
    }

    fn number() -> impl Strategy<Value = Bson> {
        const BIG: i64 = 1 << 53;
        prop_oneof![
            (-5i32..5).prop_map(Bson::Int32),
            (-5i64..5).prop_map(|d| Bson::Int64(BIG + d)),
            (-5i64..5).prop_map(|d| Bson::Int64(-BIG + d)),
            prop::sample::select(vec![i64::MIN, i64::MAX, i64::MAX - 1, 1 << 62])
                .prop_map(Bson::Int64),
            prop::sample::select(vec![
                f64::NAN,
                f64::NEG_INFINITY,
                -0.0,
                0.0,
                0.1,
                1.5,
                9007199254740992.0,
                9007199254740994.0,
                9.223372036854776e18,
                f64::MAX,
                f64::MIN_POSITIVE,
            ])
            .prop_map(Bson::Double),
            prop::sample::select(vec![
                "NaN",
                "-Infinity",
                "Infinity",
                "-0",
                "0.1",
                "0.10000000000000000555",
                "1.50",
                "9007199254740993",
                "9007199254740992.5",
                "1E+400",
                "-1E+400",
                "1E-400",
            ])
            .prop_map(|d| Bson::Decimal128(d.parse().unwrap())),
        ]
    }

    proptest! {
        /// Numbers order as MongoDB compares them, across types, also
        /// where two share their nearest double; raw and parsed agree.
        #[test]
        fn numbers_order_as_mongodb_compares_them(a in number(), b in number()) {
            let expected = shardgate_query_order(&a, &b);
            prop_assert_eq!(key(&a).cmp(&key(&b)), expected, "{:?} vs {:?}", a, b);
            prop_assert_eq!(raw_key(&a), key(&a));
        }
    }

    /// The exact encoding's order, which `proptests` checks against
    /// MongoDB's comparison.
    fn shardgate_query_order(a: &Bson, b: &Bson) -> std::cmp::Ordering {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        crate::shard_key::encode_value(a, false, &mut x);
        crate::shard_key::encode_value(b, false, &mut y);
        x.cmp(&y)
    }

    #[test]
    fn common_numbers_take_ten_bytes_and_sit_beside_other_types() {
        assert_eq!(key(&Bson::Int32(7)), key(&Bson::Double(7.0)));
        assert_eq!(key(&Bson::Int64(7)).len(), 10);
        let mut string = Vec::new();
        encode_sort_value(&Bson::String("a".into()), false, &mut string);
        assert!(key(&Bson::Double(f64::INFINITY)) < string);
        let mut null = Vec::new();
        encode_sort_value(&Bson::Null, false, &mut null);
        assert!(null < key(&Bson::Double(f64::NAN)));
        let mut desc = Vec::new();
        encode_sort_value(&Bson::Int32(1), true, &mut desc);
        let mut desc2 = Vec::new();
        encode_sort_value(&Bson::Int32(2), true, &mut desc2);
        assert!(desc2 < desc);
    }
}
