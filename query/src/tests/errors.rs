//! Error codes for invalid or unsupported filters and pipelines.

use bson::{doc, Bson, Document};

use super::{filter_error, re};
use crate::{aggregate, find, QueryError};

fn pipeline_error(stage: Document) -> (i32, &'static str) {
    aggregate(vec![doc! {"a": 1}], &[stage])
        .expect_err("must fail")
        .code()
}

#[test]
fn filter_errors() {
    let bad = (2, "BadValue");
    assert_eq!(filter_error(doc! {"$foo": 1}), bad);
    assert_eq!(filter_error(doc! {"a": {"$foo": 1}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$gt": 1, "b": 2}}), bad);
    assert_eq!(filter_error(doc! {"$and": []}), bad);
    assert_eq!(filter_error(doc! {"$or": {"a": 1}}), bad);
    assert_eq!(filter_error(doc! {"$nor": [1]}), bad);
    assert_eq!(filter_error(doc! {"a": {"$in": 1}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$in": [{"$gt": 1}]}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$not": {}}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$not": 5}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$size": -1}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$size": 1.5}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$size": "1"}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$type": "nope"}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$type": 99}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$mod": [0, 1]}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$mod": [1]}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$options": "i"}}), bad);
    assert_eq!(filter_error(doc! {"a": {"$ne": re("x", "")}}), bad);
    assert_eq!(filter_error(doc! {"a": Bson::Undefined}), bad);
    assert_eq!(filter_error(doc! {"a": {"$elemMatch": 1}}), bad);
    assert_eq!(filter_error(doc! {"$alwaysTrue": 0}), (9, "FailedToParse"));
    assert_eq!(
        filter_error(doc! {"a": {"$regex": "x", "$options": "z"}}),
        (51108, "Location51108")
    );
}

#[test]
fn unsupported_filter_features_are_not_implemented() {
    let not_implemented = (1, "InternalError");
    assert_eq!(
        filter_error(doc! {"$expr": {"$eq": ["$a", 1]}}),
        not_implemented
    );
    assert_eq!(filter_error(doc! {"$where": "true"}), not_implemented);
    assert_eq!(
        filter_error(doc! {"$text": {"$search": "x"}}),
        not_implemented
    );
    assert_eq!(
        filter_error(doc! {"a": {"$geoWithin": {}}}),
        not_implemented
    );
    assert_eq!(
        filter_error(doc! {"a": {"$bitsAllSet": 1}}),
        not_implemented
    );
    assert_eq!(filter_error(doc! {"a": re("(a)\\1", "")}), not_implemented);
}

#[test]
fn deep_nesting_is_rejected() {
    let mut filter = doc! {"a": 1};
    for _ in 0..150 {
        filter = doc! {"$and": [filter]};
    }
    assert_eq!(filter_error(filter), (2, "BadValue"));
    let mut expr = Bson::String("$a".into());
    for _ in 0..150 {
        expr = Bson::Document(doc! {"$not": [expr]});
    }
    let err = pipeline_error(doc! {"$project": {"x": expr}});
    assert_eq!(err, (2, "BadValue"));
    let mut elem = doc! {"$gt": 1};
    for _ in 0..150 {
        elem = doc! {"$elemMatch": elem};
    }
    assert_eq!(filter_error(doc! {"a": elem}), (2, "BadValue"));
}

#[test]
fn pipeline_errors() {
    assert_eq!(
        pipeline_error(doc! {"$bogus": {}}),
        (40324, "Location40324")
    );
    assert_eq!(
        pipeline_error(doc! {"$match": {}, "$limit": 1}),
        (40323, "Location40323")
    );
    assert_eq!(pipeline_error(doc! {}), (40323, "Location40323"));
    assert_eq!(pipeline_error(doc! {"$lookup": {}}), (1, "InternalError"));
    assert_eq!(pipeline_error(doc! {"$facet": {}}), (1, "InternalError"));
    assert_eq!(pipeline_error(doc! {"$match": 1}), (15959, "Location15959"));
    assert_eq!(
        pipeline_error(doc! {"$project": {}}),
        (51272, "Location51272")
    );
    assert_eq!(
        pipeline_error(doc! {"$project": 1}),
        (15969, "Location15969")
    );
    assert_eq!(
        pipeline_error(doc! {"$addFields": 1}),
        (40272, "Location40272")
    );
    assert_eq!(pipeline_error(doc! {"$sort": {}}), (15976, "Location15976"));
    assert_eq!(pipeline_error(doc! {"$sort": 1}), (15973, "Location15973"));
    assert_eq!(
        pipeline_error(doc! {"$sort": {"a": 0}}),
        (15975, "Location15975")
    );
    assert_eq!(pipeline_error(doc! {"$limit": 0}), (15958, "Location15958"));
    assert_eq!(pipeline_error(doc! {"$limit": -1}).0, 5107201);
    assert_eq!(pipeline_error(doc! {"$skip": -1}).0, 5107200);
    assert_eq!(pipeline_error(doc! {"$skip": 1.5}).0, 5107200);
    assert_eq!(
        pipeline_error(doc! {"$count": ""}),
        (40157, "Location40157")
    );
    assert_eq!(
        pipeline_error(doc! {"$count": "$n"}),
        (40158, "Location40158")
    );
    assert_eq!(
        pipeline_error(doc! {"$count": "a.b"}),
        (40160, "Location40160")
    );
    assert_eq!(pipeline_error(doc! {"$count": 1}), (40156, "Location40156"));
    assert_eq!(
        pipeline_error(doc! {"$unwind": "a"}),
        (28818, "Location28818")
    );
    assert_eq!(
        pipeline_error(doc! {"$unwind": {"path": "$a", "x": 1}}),
        (28811, "Location28811")
    );
    assert_eq!(
        pipeline_error(doc! {"$unwind": {}}),
        (28812, "Location28812")
    );
    assert_eq!(
        pipeline_error(doc! {"$unset": []}),
        (31119, "Location31119")
    );
    assert_eq!(
        pipeline_error(doc! {"$unset": [1]}),
        (31120, "Location31120")
    );
    assert_eq!(
        pipeline_error(doc! {"$replaceRoot": {}}),
        (40231, "Location40231")
    );
}

#[test]
fn expression_errors() {
    assert_eq!(
        pipeline_error(doc! {"$project": {"a": {"$ifNull": ["$a"]}}}).0,
        1257300
    );
    assert_eq!(
        pipeline_error(doc! {"$project": {"a": {"$cond": [1, 2]}}}),
        (16020, "Location16020")
    );
    assert_eq!(
        pipeline_error(doc! {"$project": {"a": "$$nope"}}),
        (17276, "Location17276")
    );
    assert_eq!(
        pipeline_error(doc! {"$project": {"a": "$"}}),
        (16872, "Location16872")
    );
    assert_eq!(
        pipeline_error(doc! {"$project": {"a": {"$eq": 1, "$ne": 2}}}),
        (16410, "Location16410")
    );
    assert_eq!(
        pipeline_error(doc! {"$group": {"_id": {"$eq": [1, 1], "$ne": [1, 2]}}}),
        (15983, "Location15983")
    );
    assert_eq!(
        pipeline_error(doc! {"$group": {"_id": {"a": 1, "$ne": [1, 2]}}}),
        (16410, "Location16410")
    );
    assert_eq!(
        pipeline_error(doc! {"$project": {"a.$": 1}}),
        (31324, "Location31324")
    );
    assert_eq!(pipeline_error(doc! {"$project": {"a": "$$NOW"}}).0, 1);
}

#[test]
fn parse_errors_come_before_running() {
    // The bad second stage is reported even though the input is empty.
    let err = aggregate(vec![], &[doc! {"$match": {}}, doc! {"$bogus": 1}]).expect_err("fails");
    assert_eq!(err.code(), (40324, "Location40324"));
    assert_eq!(
        err.to_string(),
        "Unrecognized pipeline stage name: '$bogus'"
    );
    let err = find(vec![], &doc! {"$foo": 1}, None, None, 0, 0).expect_err("fails");
    assert!(
        matches!(err, QueryError::BadValue(ref m) if m.starts_with("unknown top level operator: $foo"))
    );
}
