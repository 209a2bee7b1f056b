//! `compare_bson`: MongoDB's type order and value comparisons.

use std::cmp::Ordering::{self, Equal, Greater, Less};

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{bson, doc, Binary, Bson, DateTime, JavaScriptCodeWithScope, Timestamp};

use super::{dec, re};
use crate::compare_bson;

fn bin(subtype: u8, bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::from(subtype),
        bytes: bytes.to_vec(),
    })
}

#[test]
fn type_order_is_mongodb_order() {
    let ordered = vec![
        Bson::MinKey,
        Bson::Undefined,
        Bson::Null,
        Bson::Double(f64::NAN),
        Bson::Int32(-5),
        Bson::String(String::new()),
        bson!({}),
        bson!([]),
        bin(0, &[]),
        Bson::ObjectId(ObjectId::from_bytes([0; 12])),
        Bson::Boolean(false),
        Bson::DateTime(DateTime::from_millis(i64::MIN)),
        Bson::Timestamp(Timestamp {
            time: 0,
            increment: 0,
        }),
        re("", ""),
        Bson::JavaScriptCode(String::new()),
        Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
            code: String::new(),
            scope: doc! {},
        }),
        Bson::MaxKey,
    ];
    for (i, a) in ordered.iter().enumerate() {
        for (j, b) in ordered.iter().enumerate() {
            assert_eq!(compare_bson(a, b), i.cmp(&j), "{a:?} vs {b:?}");
        }
    }
}

fn check(table: &[(Bson, Bson, Ordering)]) {
    for (a, b, want) in table {
        assert_eq!(compare_bson(a, b), *want, "{a:?} vs {b:?}");
        assert_eq!(compare_bson(b, a), want.reverse(), "{b:?} vs {a:?}");
    }
}

#[test]
fn numbers_compare_by_value_across_types() {
    let two53 = 1i64 << 53;
    check(&[
        (Bson::Int32(1), Bson::Int64(1), Equal),
        (Bson::Int32(1), Bson::Double(1.0), Equal),
        (Bson::Int64(1), dec("1.000"), Equal),
        (Bson::Double(1.0), dec("1"), Equal),
        (Bson::Double(-0.0), Bson::Int32(0), Equal),
        (dec("-0"), Bson::Double(0.0), Equal),
        (Bson::Int32(2), Bson::Double(2.5), Less),
        (Bson::Int64(-3), Bson::Double(-2.5), Less),
        (
            Bson::Int64(two53 + 1),
            Bson::Double(9_007_199_254_740_992.0),
            Greater,
        ),
        (
            Bson::Int64(i64::MAX),
            Bson::Double(9_223_372_036_854_775_808.0),
            Less,
        ),
        (
            Bson::Int64(i64::MIN),
            Bson::Double(-9_223_372_036_854_775_808.0),
            Equal,
        ),
        (
            Bson::Int64(i64::MIN),
            Bson::Double(f64::NEG_INFINITY),
            Greater,
        ),
        (Bson::Double(f64::NAN), Bson::Double(f64::NAN), Equal),
        (Bson::Double(f64::NAN), Bson::Int32(i32::MIN), Less),
        (
            Bson::Double(f64::NAN),
            Bson::Double(f64::NEG_INFINITY),
            Less,
        ),
        (dec("NaN"), Bson::Double(f64::NAN), Equal),
        (dec("NaN"), dec("-Infinity"), Less),
        (dec("-Infinity"), Bson::Double(f64::NEG_INFINITY), Equal),
        (dec("Infinity"), Bson::Double(f64::MAX), Greater),
        (dec("1E+400"), Bson::Double(f64::MAX), Greater),
        (dec("1E-400"), Bson::Double(0.0), Greater),
        (dec("1E-400"), Bson::Double(5e-324), Less),
        (dec("0.1"), Bson::Double(0.1), Less),
        (
            dec("0.1000000000000000055511151231257827"),
            Bson::Double(0.1),
            Less,
        ),
        (
            dec("0.1000000000000000055511151231257828"),
            Bson::Double(0.1),
            Greater,
        ),
        (dec("0.5"), Bson::Double(0.5), Equal),
        (dec("-0.5"), Bson::Double(-0.25), Less),
        (
            dec("12345678901234567890123456789012E10"),
            dec("1.2345678901234567890123456789012E41"),
            Equal,
        ),
        (
            dec("1.5"),
            dec("1.49999999999999999999999999999999"),
            Greater,
        ),
        (dec("-7"), Bson::Int64(-7), Equal),
        (dec("9223372036854775808"), Bson::Int64(i64::MAX), Greater),
    ]);
}

#[test]
fn strings_compare_by_bytes() {
    check(&[
        (bson!("B"), bson!("a"), Less),
        (bson!("a"), bson!("ab"), Less),
        (bson!("é"), bson!("z"), Greater),
        (Bson::Symbol("a".into()), bson!("a"), Equal),
        (Bson::Symbol("b".into()), bson!("a"), Greater),
    ]);
}

#[test]
fn documents_compare_type_then_name_then_value() {
    check(&[
        (bson!({"a": 1}), bson!({"a": 2}), Less),
        (bson!({"a": 1}), bson!({"b": 0}), Less),
        (bson!({"b": 1}), bson!({"a": "x"}), Less),
        (bson!({"a": 1}), bson!({"a": 1, "b": 0}), Less),
        (bson!({}), bson!({"a": Bson::MinKey}), Less),
        (bson!({"a": 1, "b": 2}), bson!({"b": 2, "a": 1}), Less),
        (bson!({"a": {"x": 1}}), bson!({"a": {"x": 1.0}}), Equal),
        (bson!({"a": [1, 2]}), bson!({"a": [1, 3]}), Less),
    ]);
}

#[test]
fn arrays_compare_element_by_element() {
    check(&[
        (bson!([1, 2]), bson!([1, 3]), Less),
        (bson!([1]), bson!([1, 0]), Less),
        (bson!([]), bson!([Bson::MinKey]), Less),
        (bson!([2]), bson!([1, 5]), Greater),
        (bson!([1, "a"]), bson!([1, 2]), Greater),
        (bson!([[1]]), bson!([{}]), Greater),
    ]);
}

#[test]
fn other_types() {
    let oid = |b: u8| Bson::ObjectId(ObjectId::from_bytes([b; 12]));
    check(&[
        (bin(0, &[0xff]), bin(0, &[0, 0]), Less),
        (bin(0, &[9, 9]), bin(4, &[0, 0]), Less),
        (bin(4, &[1, 2]), bin(4, &[1, 3]), Less),
        (oid(1), oid(2), Less),
        (Bson::Boolean(false), Bson::Boolean(true), Less),
        (
            Bson::DateTime(DateTime::from_millis(-1)),
            Bson::DateTime(DateTime::from_millis(0)),
            Less,
        ),
        (
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 5,
            }),
            Bson::Timestamp(Timestamp {
                time: 2,
                increment: 0,
            }),
            Less,
        ),
        (re("a", "i"), re("a", "m"), Less),
        (re("a", "m"), re("b", ""), Less),
        (
            Bson::JavaScriptCode("a".into()),
            Bson::JavaScriptCode("b".into()),
            Less,
        ),
        (Bson::Null, Bson::Null, Equal),
        (Bson::MaxKey, Bson::MaxKey, Equal),
    ]);
}

#[test]
fn deep_nesting_is_compared_without_recursion() {
    // Building and dropping deep values recurses (in the bson crate), so do
    // that on a big stack and compare on a small one.
    let big = std::thread::Builder::new().stack_size(256 << 20);
    let handle = big.spawn(|| {
        let (mut a, mut b) = (Bson::Int32(1), Bson::Int32(2));
        for _ in 0..5000 {
            a = Bson::Document(doc! {"x": a});
            b = Bson::Array(vec![b]);
        }
        let c = Bson::Array(vec![Bson::Array(vec![Bson::Int32(1)])]);
        std::thread::scope(|scope| {
            let small = std::thread::Builder::new().stack_size(64 << 10);
            let cmp = small
                .spawn_scoped(scope, || {
                    (
                        compare_bson(&a, &a),
                        compare_bson(&b, &b),
                        compare_bson(&a, &b),
                        compare_bson(&c, &b),
                    )
                })
                .expect("spawn");
            cmp.join().expect("no overflow")
        })
    });
    let got = handle.expect("spawn").join().expect("no overflow");
    assert_eq!(got, (Equal, Equal, Less, Less));
}
