//! `$group` and its accumulators.

use bson::{doc, Bson, Document};

use super::dec;
use crate::aggregate;

fn group(docs: Vec<Document>, spec: Document) -> Vec<Document> {
    aggregate(docs, &[doc! {"$group": spec}]).expect("group runs")
}

fn single(docs: Vec<Document>, acc: Document) -> Bson {
    let mut spec = doc! {"_id": Bson::Null};
    spec.insert("v", acc);
    let out = group(docs, spec);
    assert_eq!(out.len(), 1, "{out:?}");
    out[0].get("v").cloned().unwrap_or(Bson::Undefined)
}

fn vals(values: Vec<Bson>) -> Vec<Document> {
    values.into_iter().map(|v| doc! {"x": v}).collect()
}

#[test]
fn group_keys() {
    let docs = vec![
        doc! {"k": 1, "v": 1},
        doc! {"k": 1.0, "v": 2},
        doc! {"k": "1", "v": 3},
        doc! {"v": 4},
        doc! {"k": Bson::Null, "v": 5},
    ];
    let out = group(docs.clone(), doc! {"_id": "$k", "n": {"$sum": 1}});
    assert_eq!(
        out,
        vec![
            doc! {"_id": 1, "n": 2},
            doc! {"_id": "1", "n": 1},
            doc! {"_id": Bson::Null, "n": 2},
        ]
    );
    let out = group(
        docs.clone(),
        doc! {"_id": {"key": "$k"}, "n": {"$count": {}}},
    );
    assert_eq!(out[2], doc! {"_id": {}, "n": 1});
    let out = group(docs, doc! {"_id": "constant", "total": {"$sum": "$v"}});
    assert_eq!(out, vec![doc! {"_id": "constant", "total": 15}]);
    assert!(group(vec![], doc! {"_id": Bson::Null, "n": {"$sum": 1}}).is_empty());
}

#[test]
fn sum_types_and_overflow() {
    let i = |v: i32| Bson::Int32(v);
    let l = |v: i64| Bson::Int64(v);
    let d = Bson::Double;
    assert_eq!(single(vals(vec![i(1), i(2)]), doc! {"$sum": "$x"}), i(3));
    assert_eq!(single(vals(vec![i(1), l(2)]), doc! {"$sum": "$x"}), l(3));
    assert_eq!(
        single(vals(vec![i(1), d(0.5)]), doc! {"$sum": "$x"}),
        d(1.5)
    );
    assert_eq!(
        single(vals(vec![i(i32::MAX), i(1)]), doc! {"$sum": "$x"}),
        l(i64::from(i32::MAX) + 1)
    );
    assert_eq!(
        single(vals(vec![l(i64::MAX), l(1)]), doc! {"$sum": "$x"}),
        d(9_223_372_036_854_775_808.0)
    );
    assert_eq!(
        single(
            vals(vec![i(1), Bson::String("7".into()), Bson::Null]),
            doc! {"$sum": "$x"}
        ),
        i(1)
    );
    assert_eq!(single(vals(vec![Bson::Null]), doc! {"$sum": "$x"}), i(0));
    let tenths = vals(vec![d(0.1); 10]);
    assert_eq!(single(tenths, doc! {"$sum": "$x"}), d(1.0));
    assert_eq!(single(vals(vec![i(5); 3]), doc! {"$sum": 1}), i(3));
    assert_eq!(
        single(vals(vec![i(5); 3]), doc! {"$sum": Bson::Int64(2)}),
        l(6)
    );
    assert_eq!(single(vals(vec![i(5); 2]), doc! {"$sum": 1.5}), d(3.0));
    assert_eq!(single(vals(vec![i(5); 2]), doc! {"$sum": "a"}), i(0));
    assert_eq!(
        single(vals(vec![d(f64::INFINITY), i(1)]), doc! {"$sum": "$x"}),
        d(f64::INFINITY)
    );
    let err = aggregate(
        vals(vec![dec("1")]),
        &[doc! {"$group": {"_id": 1, "s": {"$sum": "$x"}}}],
    );
    assert_eq!(err.expect_err("decimal sum").code().0, 1);
}

#[test]
fn avg_min_max() {
    let i = Bson::Int32;
    let d = Bson::Double;
    assert_eq!(single(vals(vec![i(1), i(2)]), doc! {"$avg": "$x"}), d(1.5));
    assert_eq!(
        single(
            vals(vec![i(2), Bson::String("x".into())]),
            doc! {"$avg": "$x"}
        ),
        d(2.0)
    );
    assert_eq!(
        single(vals(vec![Bson::Null]), doc! {"$avg": "$x"}),
        Bson::Null
    );
    let mixed = vals(vec![i(3), Bson::Null, Bson::String("a".into()), d(-1.0)]);
    assert_eq!(single(mixed.clone(), doc! {"$min": "$x"}), d(-1.0));
    assert_eq!(single(mixed, doc! {"$max": "$x"}), Bson::String("a".into()));
    assert_eq!(
        single(vals(vec![Bson::Null]), doc! {"$min": "$x"}),
        Bson::Null
    );
    assert_eq!(single(vec![doc! {}], doc! {"$max": "$x"}), Bson::Null);
    assert_eq!(single(vals(vec![i(1), d(1.0)]), doc! {"$max": "$x"}), i(1));
}

#[test]
fn first_last_push_add_to_set() {
    let docs = vec![
        doc! {"x": 1},
        doc! {},
        doc! {"x": 1.0},
        doc! {"x": [2]},
        doc! {"x": 3},
    ];
    assert_eq!(single(docs.clone(), doc! {"$first": "$x"}), Bson::Int32(1));
    assert_eq!(single(docs.clone(), doc! {"$last": "$x"}), Bson::Int32(3));
    assert_eq!(
        single(vec![doc! {}, doc! {"x": 1}], doc! {"$first": "$x"}),
        Bson::Null
    );
    assert_eq!(
        single(vec![doc! {"x": 1}, doc! {}], doc! {"$last": "$x"}),
        Bson::Null
    );
    assert_eq!(
        single(docs.clone(), doc! {"$push": "$x"}),
        Bson::Array(vec![
            Bson::Int32(1),
            Bson::Double(1.0),
            Bson::Array(vec![Bson::Int32(2)]),
            Bson::Int32(3)
        ])
    );
    assert_eq!(
        single(docs, doc! {"$addToSet": "$x"}),
        Bson::Array(vec![
            Bson::Int32(1),
            Bson::Array(vec![Bson::Int32(2)]),
            Bson::Int32(3)
        ])
    );
}

#[test]
fn group_spec_errors() {
    let code = |spec: Document| {
        aggregate(vec![doc! {"a": 1}], &[doc! {"$group": spec}])
            .expect_err("must fail")
            .code()
    };
    assert_eq!(code(doc! {"n": {"$sum": 1}}), (15955, "Location15955"));
    assert_eq!(
        code(doc! {"_id": 1, "n": {"$bogus": 1}}),
        (15952, "Location15952")
    );
    assert_eq!(code(doc! {"_id": 1, "n": 1}), (40234, "Location40234"));
    assert_eq!(
        code(doc! {"_id": 1, "n": {"$sum": 1, "$avg": 1}}),
        (40238, "Location40238")
    );
    assert_eq!(
        code(doc! {"_id": 1, "a.b": {"$sum": 1}}),
        (40235, "Location40235")
    );
    assert_eq!(
        code(doc! {"_id": 1, "n": {"$sum": [1, 2]}}),
        (40237, "Location40237")
    );
    assert_eq!(code(doc! {"_id": 1, "n": {"$stdDevPop": "$a"}}).0, 1);
    assert_eq!(
        code(doc! {"_id": {"$bogus": 1}}),
        (168, "InvalidPipelineOperator")
    );
}
