//! Property tests: the encoding's byte order equals the reference BSON
//! comparison (`reference.rs`) for random values of mixed types, the raw
//! (document) path agrees with the `Bson` path, and compound keys with mixed
//! directions order like their tuples.

use std::cmp::Ordering;
use std::str::FromStr;

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{
    doc, Binary, Bson, Decimal128, Document, JavaScriptCodeWithScope, RawDocumentBuf, Regex,
    Timestamp,
};
use proptest::prelude::*;

use super::reference::compare;
use super::*;

fn enc(value: &Bson) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(value, false, &mut out);
    out
}

fn decimal(text: String) -> Option<Bson> {
    Decimal128::from_str(&text).ok().map(Bson::Decimal128)
}

/// Numbers built so that equal values of different types are common.
fn number() -> impl Strategy<Value = Bson> {
    let special_doubles = prop::sample::select(vec![
        0.0,
        -0.0,
        0.1,
        0.5,
        -0.5,
        1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        9_007_199_254_740_992.0,
        9_223_372_036_854_775_808.0,
        -9_223_372_036_854_775_808.0,
        1e308,
        -1e-308,
    ]);
    let special_longs = prop::sample::select(vec![
        i64::MIN,
        i64::MAX,
        i64::MIN + 1,
        i64::MAX - 1,
        1 << 53,
        (1 << 53) + 1,
        -(1 << 53) - 1,
        0,
        1,
        -1,
    ]);
    let special_decimals = prop::sample::select(vec![
        "NaN",
        "Infinity",
        "-Infinity",
        "-0",
        "0E-6176",
        "0E+6111",
        "1.00",
        "0.1",
        "-0.5",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "1E-6176",
        "9.999999999999999999999999999999999E+6144",
        "123.45E-3",
        "0.1000000000000000055511151231257827",
    ]);
    prop_oneof![
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        prop::num::f64::ANY.prop_map(Bson::Double),
        special_doubles.prop_map(Bson::Double),
        special_longs.prop_map(Bson::Int64),
        any::<i64>().prop_map(|v| Bson::Double(v as f64)),
        special_decimals.prop_filter_map("parses", |s| decimal(s.to_owned())),
        any::<[u8; 16]>().prop_map(|b| Bson::Decimal128(Decimal128::from_bytes(b))),
        (any::<u128>(), -6176i32..=6111).prop_filter_map("parses", |(c, e)| decimal(format!(
            "{}E{e}",
            c % 10u128.pow(34)
        ))),
        any::<i64>().prop_filter_map("parses", |v| decimal(v.to_string())),
        // k / 2^j in every numeric type: many exact ties across types.
        (-20i32..20, 0u32..4, 0u8..4).prop_filter_map("representable", |(k, j, repr)| {
            let exact_int = j == 0 || k % (1 << j) == 0;
            match repr {
                0 if exact_int => Some(Bson::Int32(k >> j)),
                1 if exact_int => Some(Bson::Int64(i64::from(k >> j))),
                2 => Some(Bson::Double(f64::from(k) / f64::from(1u32 << j))),
                3 => decimal(format!("{}E-{j}", i64::from(k) * 5i64.pow(j))),
                _ => None,
            }
        }),
    ]
}

fn small_string() -> impl Strategy<Value = String> {
    "[ab\u{0}\u{1}\u{e9}]{0,4}"
}

fn cstring() -> impl Strategy<Value = String> {
    "[ab]{0,3}"
}

fn scalar() -> impl Strategy<Value = Bson> {
    prop_oneof![
        4 => number(),
        2 => small_string().prop_map(Bson::String),
        1 => small_string().prop_map(Bson::Symbol),
        1 => small_string().prop_map(Bson::JavaScriptCode),
        1 => prop::sample::select(vec![Bson::MinKey, Bson::MaxKey, Bson::Null, Bson::Undefined]),
        1 => (prop::sample::select(vec![0u8, 2, 4, 5, 0x80]), prop::collection::vec(0u8..3, 0..4))
            .prop_map(|(s, bytes)| Bson::Binary(Binary { subtype: BinarySubtype::from(s), bytes })),
        1 => prop::array::uniform12(0u8..3).prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        1 => any::<bool>().prop_map(Bson::Boolean),
        1 => prop_oneof![any::<i64>(), -3i64..3].prop_map(|ms| Bson::DateTime(bson::DateTime::from_millis(ms))),
        1 => (0u32..3, prop_oneof![0u32..3, Just(u32::MAX)])
            .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        // Options in sorted order, as the bson crate writes them.
        1 => (cstring(), "a?b?").prop_map(|(p, o)| Bson::RegularExpression(Regex {
            pattern: p.try_into().unwrap(),
            options: o.try_into().unwrap(),
        })),
    ]
}

fn key_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "a", "ab", "b", "a\u{1}"]).prop_map(str::to_owned)
}

/// Scalars, documents, arrays and code-with-scope nested up to 3 levels.
pub(super) fn value() -> impl Strategy<Value = Bson> {
    scalar().prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec((key_name(), inner.clone()), 0..3)
                .prop_map(|fields| Bson::Document(fields.into_iter().collect())),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Bson::Array),
            (
                small_string(),
                prop::collection::vec((key_name(), inner), 0..2)
            )
                .prop_map(|(code, f)| {
                    Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                        code,
                        scope: f.into_iter().collect(),
                    })
                }),
        ]
    })
}

/// Values a bound may hold (no top-level arrays or regexes).
fn bound_value() -> impl Strategy<Value = Bson> {
    value().prop_filter("bound value", |v| {
        !matches!(v, Bson::Array(_) | Bson::RegularExpression(_))
    })
}

/// Reads back a finite non-zero number's canonical form from its encoding
/// (layout in `number.rs`): (negative, point, digits).
fn decode_number(encoded: &[u8]) -> (bool, i64, Vec<u8>) {
    assert_eq!(encoded[0], 12, "number tag");
    let negative = encoded[1] == 0x03;
    let body: Vec<u8> = encoded[2..]
        .iter()
        .map(|&b| if negative { !b } else { b })
        .collect();
    let point = i64::from((u16::from_be_bytes([body[0], body[1]]) ^ 0x8000) as i16);
    let mut digits = Vec::new();
    for &pair in body[2..].iter().take_while(|&&b| b != 0) {
        digits.push((pair - 1) / 10);
        digits.push((pair - 1) % 10);
    }
    if digits.last() == Some(&0) {
        digits.pop();
    }
    (negative, point, digits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn numbers_encode_their_exact_decimal_expansion(n in number()) {
        if let Some(expected) = super::reference::exact_parts(&n) {
            prop_assert_eq!(decode_number(&enc(&n)), expected, "{:?}", n);
        }
    }

    #[test]
    fn doubles_encode_their_exact_decimal_expansion(
        bits in any::<u64>().prop_filter("finite", |b| f64::from_bits(*b).is_finite() && f64::from_bits(*b) != 0.0),
    ) {
        let n = Bson::Double(f64::from_bits(bits));
        let expected = super::reference::exact_parts(&n).unwrap();
        prop_assert_eq!(decode_number(&enc(&n)), expected, "{:?}", n);
    }

    #[test]
    fn byte_order_is_bson_order(a in value(), b in value()) {
        let expected = compare(&a, &b);
        prop_assert_eq!(enc(&a).cmp(&enc(&b)), expected, "{:?} vs {:?}", a, b);
        let (mut da, mut db) = (Vec::new(), Vec::new());
        encode_value(&a, true, &mut da);
        encode_value(&b, true, &mut db);
        prop_assert_eq!(da.cmp(&db), expected.reverse());
    }

    #[test]
    fn numbers_order_by_value(a in number(), b in number()) {
        prop_assert_eq!(enc(&a).cmp(&enc(&b)), compare(&a, &b), "{:?} vs {:?}", a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn raw_documents_encode_and_hash_like_values(v in value()) {
        let stored = RawDocumentBuf::try_from(&doc! {"x": v.clone(), "y": 1}).unwrap();
        let plain = ShardKeyPattern::parse(&doc! {"x": 1}).unwrap();
        match plain.extract_key(&stored) {
            Ok(key) => {
                prop_assert_eq!(key.into_vec(), enc(&v));
                let key_doc = plain.key_document(&stored).unwrap();
                prop_assert_eq!(key_doc.get("x").map(enc), Some(enc(&v)));
            }
            Err(err) => {
                prop_assert!(matches!(v, Bson::Array(_)));
                prop_assert_eq!(err.code().0, 61);
            }
        }
        let hashed = ShardKeyPattern::parse(&doc! {"x": "hashed"}).unwrap();
        match hashed.extract_key(&stored) {
            Ok(key) => {
                let expected = hashed.encode_bound(&doc! {"x": hash_value(&v)}).unwrap();
                prop_assert_eq!(key, expected);
            }
            Err(err) => {
                prop_assert!(matches!(v, Bson::Array(_)));
                prop_assert_eq!(err.code().0, 61);
            }
        }
        // Hashing nested values (arrays included) through a raw document.
        let wrapped = Bson::Document(doc! {"x": v.clone()});
        let expected = hashed.encode_bound(&doc! {"x": hash_value(&wrapped)}).unwrap();
        let stored = RawDocumentBuf::try_from(&doc! {"x": wrapped}).unwrap();
        prop_assert_eq!(hashed.extract_key(&stored).unwrap(), expected);
    }

    #[test]
    fn compound_keys_order_like_tuples(
        directions in prop::collection::vec(any::<bool>(), 1..4),
        a in prop::collection::vec(bound_value(), 3),
        b in prop::collection::vec(bound_value(), 3),
    ) {
        let pattern_doc: Document = directions
            .iter()
            .enumerate()
            .map(|(i, &asc)| (format!("f{i}"), Bson::Int32(if asc { 1 } else { -1 })))
            .collect();
        let pattern = ShardKeyPattern::parse(&pattern_doc).unwrap();
        let bound = |values: &[Bson]| -> Document {
            directions.iter().enumerate().map(|(i, _)| (format!("f{i}"), values[i].clone())).collect()
        };
        let expected = directions
            .iter()
            .enumerate()
            .map(|(i, &asc)| {
                let c = compare(&a[i], &b[i]);
                if asc { c } else { c.reverse() }
            })
            .find(|c| *c != Ordering::Equal)
            .unwrap_or(Ordering::Equal);
        let (ka, kb) = (pattern.encode_bound(&bound(&a)).unwrap(), pattern.encode_bound(&bound(&b)).unwrap());
        prop_assert_eq!(ka.cmp(&kb), expected);
        prop_assert!(pattern.min_bytes() <= ka && ka <= pattern.max_bytes());
        prop_assert_eq!(
            super::global_max_matching(pattern.min_bytes().as_slice()).map(KeyBytes::from),
            Some(pattern.max_bytes())
        );
        // The raw path of a stored document agrees with the bound.
        let stored = RawDocumentBuf::try_from(&bound(&a)).unwrap();
        prop_assert_eq!(pattern.extract_key(&stored).unwrap(), ka);
    }
}
