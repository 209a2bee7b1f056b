//! Table tests: tricky orders, hash vectors, patterns, bounds, extraction.

use std::str::FromStr;

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{
    doc, Binary, Bson, Decimal128, Document, JavaScriptCodeWithScope, RawDocumentBuf, Regex,
    Timestamp,
};

use super::*;

fn enc(value: &Bson) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(value, false, &mut out);
    out
}

pub(crate) fn dec(text: &str) -> Bson {
    Bson::Decimal128(Decimal128::from_str(text).unwrap())
}

fn bin(subtype: u8, bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::from(subtype),
        bytes: bytes.to_vec(),
    })
}

fn regex(pattern: &str, options: &str) -> Bson {
    Bson::RegularExpression(Regex {
        pattern: pattern.try_into().unwrap(),
        options: options.try_into().unwrap(),
    })
}

fn raw(doc: &Document) -> RawDocumentBuf {
    RawDocumentBuf::try_from(doc).unwrap()
}

/// A raw `{x: DBPointer(ns, oid)}` (the bson crate cannot build one).
fn dbpointer_doc(ns: &str, oid: [u8; 12]) -> RawDocumentBuf {
    let mut body = vec![0x0c, b'x', 0];
    body.extend_from_slice(&(ns.len() as i32 + 1).to_le_bytes());
    body.extend_from_slice(ns.as_bytes());
    body.push(0);
    body.extend_from_slice(&oid);
    body.push(0);
    let mut bytes = ((body.len() + 4) as i32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    RawDocumentBuf::from_bytes(bytes).unwrap()
}

/// Each group holds equal values; groups are strictly increasing.
fn assert_chain(groups: &[&[Bson]]) {
    let encoded: Vec<Vec<Vec<u8>>> = groups.iter().map(|g| g.iter().map(enc).collect()).collect();
    for (i, group) in encoded.iter().enumerate() {
        for (j, e) in group.iter().enumerate() {
            assert_eq!(e, &group[0], "{:?} != {:?}", groups[i][j], groups[i][0]);
            assert_eq!(
                reference::compare(&groups[i][j], &groups[i][0]),
                std::cmp::Ordering::Equal
            );
        }
        if i > 0 {
            assert!(
                encoded[i - 1][0] < group[0],
                "{:?} !< {:?}",
                groups[i - 1][0],
                groups[i][0]
            );
            assert!(reference::compare(&groups[i - 1][0], &groups[i][0]).is_lt());
        }
    }
}

#[test]
fn numbers_order_by_value_across_types() {
    let two53 = 1i64 << 53;
    let mut nan_bytes = [0u8; 16];
    nan_bytes[15] = 0xfc;
    let negative_nan = Bson::Decimal128(Decimal128::from_bytes(nan_bytes));
    assert_chain(&[
        &[
            Bson::Double(f64::NAN),
            Bson::Double(-f64::NAN),
            dec("NaN"),
            negative_nan,
        ],
        &[Bson::Double(f64::NEG_INFINITY), dec("-Infinity")],
        &[dec("-1E+6144")],
        &[Bson::Double(-1e308)],
        &[
            Bson::Double(-1.0),
            Bson::Int32(-1),
            Bson::Int64(-1),
            dec("-1.000"),
        ],
        &[Bson::Double(-0.5), dec("-0.50")],
        &[Bson::Double(-5e-324)],
        &[dec("-1E-6176")],
        &[
            Bson::Int32(0),
            Bson::Double(0.0),
            Bson::Double(-0.0),
            Bson::Int64(0),
            dec("0"),
            dec("-0"),
            dec("0E-6176"),
            dec("0E+6111"),
        ],
        &[dec("1E-6176")],
        &[Bson::Double(5e-324)],
        &[dec("0.1")],
        &[Bson::Double(0.1)],
        &[dec("0.1000000000000000055511151231257828")],
        &[Bson::Double(0.5), dec("5E-1")],
        &[
            Bson::Int32(1),
            Bson::Double(1.0),
            Bson::Int64(1),
            dec("1.00"),
            dec("0.001E3"),
        ],
        &[Bson::Double(1.0000000000000002)],
        &[Bson::Int32(2), dec("2")],
        &[Bson::Int32(i32::MAX), Bson::Double(2147483647.0)],
        &[Bson::Int64(two53), Bson::Double(two53 as f64)],
        &[Bson::Int64(two53 + 1), dec("9007199254740993")],
        &[Bson::Int64(two53 + 2), Bson::Double((two53 + 2) as f64)],
        &[Bson::Int64(i64::MAX - 1)],
        &[Bson::Int64(i64::MAX), dec("9223372036854775807")],
        &[
            Bson::Double(9.223372036854776e18),
            dec("9223372036854775808"),
        ],
        &[Bson::Double(1e308)],
        &[dec("9.999999999999999999999999999999999E+6144")],
        &[Bson::Double(f64::INFINITY), dec("Infinity")],
    ]);
}

#[test]
fn types_order_by_canonical_type() {
    let oid = |b: u8| Bson::ObjectId(ObjectId::from_bytes([b; 12]));
    let date = |ms: i64| Bson::DateTime(bson::DateTime::from_millis(ms));
    let ts = |time: u32, increment: u32| Bson::Timestamp(Timestamp { time, increment });
    let code_scope = |code: &str, scope: Document| {
        Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
            code: code.into(),
            scope,
        })
    };
    assert_chain(&[
        &[Bson::MinKey],
        &[Bson::Undefined],
        &[Bson::Null],
        &[Bson::Double(f64::INFINITY)],
        &[Bson::String(String::new()), Bson::Symbol(String::new())],
        &[Bson::String("\0".into())],
        &[Bson::String("\0\0".into())],
        &[Bson::String("\x01".into())],
        &[Bson::String("a".into()), Bson::Symbol("a".into())],
        &[Bson::String("a\0".into())],
        &[Bson::String("a\0b".into())],
        &[Bson::String("a\x01".into())],
        &[Bson::String("ab".into())],
        &[Bson::String("b".into())],
        &[Bson::String("\u{e9}".into())],
        &[Bson::Document(doc! {})],
        &[
            Bson::Document(doc! {"a": 1}),
            Bson::Document(doc! {"a": 1.0}),
        ],
        &[Bson::Document(doc! {"a": 1, "b": 1})],
        &[Bson::Document(doc! {"a": 2})],
        &[Bson::Document(doc! {"b": 0})],
        &[Bson::Document(doc! {"b": 1})],
        &[Bson::Document(doc! {"a": "x"})],
        &[Bson::Document(doc! {"a": {}})],
        &[Bson::Array(vec![])],
        &[Bson::Array(vec![Bson::MinKey])],
        &[
            Bson::Array(vec![Bson::Int32(1)]),
            Bson::Array(vec![Bson::Double(1.0)]),
        ],
        &[Bson::Array(vec![Bson::Int32(1), Bson::Int32(1)])],
        &[Bson::Array(vec![Bson::Int32(2)])],
        &[Bson::Array(vec![Bson::String("a".into())])],
        &[bin(0, &[])],
        &[bin(0x80, &[9])],
        &[bin(0, &[9, 9])],
        &[bin(4, &[0, 0])],
        &[bin(2, &[])],
        &[oid(0)],
        &[oid(0xff)],
        &[Bson::Boolean(false)],
        &[Bson::Boolean(true)],
        &[date(i64::MIN)],
        &[date(-1)],
        &[date(0)],
        &[date(i64::MAX)],
        &[ts(0, 0)],
        &[ts(0, u32::MAX)],
        &[ts(1, 0)],
        &[regex("a", "")],
        &[regex("a", "i")],
        &[regex("ab", "")],
        &[Bson::JavaScriptCode("a".into())],
        &[Bson::JavaScriptCode("b".into())],
        &[code_scope("a", doc! {})],
        &[code_scope("a", doc! {"x": 1})],
        &[code_scope("b", doc! {})],
        &[Bson::MaxKey],
    ]);
}

#[test]
fn dbpointers_sort_between_regex_and_code() {
    let pattern = ShardKeyPattern::parse(&doc! {"x": 1}).unwrap();
    let short = pattern.extract_key(&dbpointer_doc("c", [1; 12])).unwrap();
    let longer = pattern
        .extract_key(&dbpointer_doc("db.c", [0; 12]))
        .unwrap();
    let key = |v: Bson| pattern.extract_key(&raw(&doc! {"x": v})).unwrap();
    assert!(key(regex("z", "z")) < short);
    assert!(short < longer, "DBPointers compare by size first");
    assert!(longer < key(Bson::JavaScriptCode(String::new())));
}

#[test]
fn compound_keys_mix_directions() {
    let pattern = ShardKeyPattern::parse(&doc! {"a": 1, "b": -1}).unwrap();
    let key = |a: Bson, b: Bson| pattern.encode_bound(&doc! {"a": a, "b": b}).unwrap();
    let ordered = [
        pattern.min_bytes(),
        key(Bson::MinKey, Bson::MaxKey),
        key(Bson::MinKey, Bson::MinKey),
        key(Bson::Int32(0), Bson::String("z".into())),
        key(Bson::Int32(1), Bson::MaxKey),
        key(Bson::Int32(1), Bson::Int32(5)),
        key(Bson::Int32(1), Bson::Int32(3)),
        key(Bson::Int32(1), Bson::Null),
        key(Bson::Int32(1), Bson::MinKey),
        key(Bson::Int32(2), Bson::Int32(100)),
        key(Bson::MaxKey, Bson::MaxKey),
        key(Bson::MaxKey, Bson::MinKey),
        pattern.max_bytes(),
    ];
    for pair in ordered.windows(2) {
        assert!(pair[0] <= pair[1], "{} > {}", pair[0], pair[1]);
    }
    assert_eq!(
        pattern.global_min(),
        doc! {"a": Bson::MinKey, "b": Bson::MaxKey}
    );
    assert_eq!(
        pattern.global_max(),
        doc! {"a": Bson::MaxKey, "b": Bson::MinKey}
    );
    assert_eq!(
        key(Bson::Int32(1), Bson::Int64(5)),
        key(Bson::Double(1.0), dec("5.0"))
    );
}

#[test]
fn hash_vectors_from_mongodb_hasher_test() {
    // src/mongo/db/hasher_test.cpp (mongodb/mongo); convertShardKeyToHashed(1)
    // in the shell gives the same NumberLong("5902408780260971510").
    let cases: &[(Bson, i64)] = &[
        (Bson::Int32(42), -944302157085130861),
        (Bson::Double(42.123), -944302157085130861),
        (Bson::Int64(42), -944302157085130861),
        (Bson::Int32(0), 4854801880128277513),
        (Bson::Double(0.456), 4854801880128277513),
        (Bson::Double(f64::NAN), 4854801880128277513),
        (Bson::Int32(1), 5902408780260971510),
        (Bson::Double(1.987), 5902408780260971510),
        (Bson::Int64(1), 5902408780260971510),
        (Bson::Int32(-1), 1140205862565771219),
        (Bson::Double(-1.789), 1140205862565771219),
        (Bson::Int32(i32::MIN), 6165898260261354870),
        (Bson::Double(f64::from(i32::MIN)), 6165898260261354870),
        (Bson::Int32(i32::MAX), 1143184177162245883),
        (Bson::Int64(i64::from(i32::MAX)), 1143184177162245883),
        (Bson::Double(f64::MAX), 921523596458303250),
        (Bson::Int64(i64::MAX), 921523596458303250),
        (Bson::Double(-f64::MAX), 4532067210535695462),
        (Bson::Int64(i64::MIN), 4532067210535695462),
        // safeNumberLongForHash keeps the historic 2^63 -> i64::MIN wrap.
        (Bson::Double(2f64.powi(63)), 4532067210535695462),
        (Bson::MinKey, 7961148599568647290),
        (Bson::MaxKey, 5504842513779440750),
        (Bson::Undefined, 40158834000849533),
        (Bson::Null, 2338878944348059895),
        (Bson::String("abc".into()), 8478485326885698097),
        (Bson::Symbol("abc".into()), 8478485326885698097),
        (Bson::String(String::new()), 2049396243249673340),
        (
            Bson::Document(doc! {"a": "abc", "b": 123i64}),
            4771603801758380216,
        ),
        (Bson::Document(doc! {}), 7980500913326740417),
        (
            Bson::Array(vec!["bar".into(), "baz".into(), "qux".into()]),
            -2938911267422831539,
        ),
        (Bson::Array(vec![]), 8849948234993459283),
        (bin(0, &[0, 1, 2, 3, 4, 6]), 7252465090394235301),
        (bin(0x80, &[0, 1, 2, 3, 4, 6]), 5736670452907618262),
        (bin(4, &(0..16).collect::<Vec<u8>>()), 6084661258071355978),
        (
            Bson::ObjectId(ObjectId::parse_str("010203040506070809101112").unwrap()),
            -5588663249627035708,
        ),
        (
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            -4293118519463489418,
        ),
        (Bson::Boolean(true), 6405873908747105701),
        (Bson::Boolean(false), 6289544573401934092),
        (
            Bson::DateTime(bson::DateTime::from_millis(0x5566778811223344)),
            4476222765095560467,
        ),
        (
            Bson::DateTime(bson::DateTime::from_millis(0)),
            -1178696894582842035,
        ),
        (regex("mongodb", ""), -7275792090268217043),
        (regex(".*", "i"), 7095855029187981886),
        (
            Bson::JavaScriptCode("func f() { return 1; }".into()),
            6861638109178014270,
        ),
        (
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: "func f() { return 1; }".into(),
                scope: doc! {"c": true},
            }),
            501342939894575968,
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(hash_value(value), *expected, "hash of {value:?}");
        if matches!(value, Bson::Array(_)) {
            continue; // documents cannot hold array shard-key values
        }
        let hashed = ShardKeyPattern::parse(&doc! {"k": "hashed"}).unwrap();
        let key = hashed
            .key_document(&raw(&doc! {"k": value.clone()}))
            .unwrap();
        assert_eq!(key, doc! {"k": *expected}, "raw hash of {value:?}");
    }
    let hashed = ShardKeyPattern::parse(&doc! {"x": "hashed"}).unwrap();
    for (ns, expected) in [("c", 940175826736461384i64), ("db.c", 2426768198104018194)] {
        let oid = ObjectId::parse_str("010203040506070809101112")
            .unwrap()
            .bytes();
        let key = hashed.key_document(&dbpointer_doc(ns, oid)).unwrap();
        assert_eq!(key, doc! {"x": expected}, "DBRef {ns}");
    }
}

#[test]
fn hash_squashes_numbers_like_the_server() {
    let h = |v: Bson| hash_value(&v);
    assert_eq!(
        h(Bson::Document(doc! {"x": {"a": 3, "b": [3.1, {"c": 3}]}})),
        h(Bson::Document(doc! {"x": {"a": 3.1, "b": [3, {"c": 3.0}]}}))
    );
    assert_ne!(
        h(Bson::Document(doc! {"a": {"0": 0, "1": 1}})),
        h(Bson::Array(vec![0.into(), 1.into()]))
    );
    // Decimal128 rounds half to even (Decimal128::toLong) and saturates.
    assert_eq!(h(dec("1.5")), h(Bson::Int32(2)));
    assert_eq!(h(dec("2.5")), h(Bson::Int32(2)));
    assert_eq!(h(dec("-2.5")), h(Bson::Int32(-2)));
    assert_eq!(h(dec("2.5000001")), h(Bson::Int32(3)));
    assert_eq!(h(dec("NaN")), h(Bson::Int32(0)));
    assert_eq!(h(dec("1E+100")), h(Bson::Int64(i64::MAX)));
    assert_eq!(h(dec("-Infinity")), h(Bson::Int64(i64::MIN)));
    assert_eq!(h(dec("-9223372036854775808.4")), h(Bson::Int64(i64::MIN)));
    assert_eq!(h(Bson::Double(f64::INFINITY)), h(Bson::Int64(i64::MAX)));
    assert_eq!(h(Bson::Double(-9.3e18)), h(Bson::Int64(i64::MIN)));
}
