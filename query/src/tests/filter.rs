//! Filter operators on scalar fields.

use bson::{doc, Bson, DateTime, Document};

use super::{dec, matches, re};

/// Rows of (filter, document, expected match).
fn check(table: Vec<(Document, Document, bool)>) {
    for (filter, doc, want) in table {
        assert_eq!(
            matches(filter.clone(), doc.clone()),
            want,
            "{filter} on {doc}"
        );
    }
}

#[test]
fn implicit_and_explicit_equality() {
    check(vec![
        (doc! {}, doc! {"a": 1}, true),
        (doc! {"a": 1}, doc! {"a": 1}, true),
        (doc! {"a": 1}, doc! {"a": 1.0}, true),
        (doc! {"a": 1}, doc! {"a": dec("1.0")}, true),
        (doc! {"a": 1}, doc! {"a": Bson::Int64(1)}, true),
        (doc! {"a": 1}, doc! {"a": "1"}, false),
        (doc! {"a": 1}, doc! {"b": 1}, false),
        (doc! {"a": {"$eq": 2}}, doc! {"a": 2}, true),
        (doc! {"a": {"$eq": 2}}, doc! {"a": 3}, false),
        (doc! {"a": "x", "b": 2}, doc! {"a": "x", "b": 2}, true),
        (doc! {"a": "x", "b": 2}, doc! {"a": "x", "b": 3}, false),
        (doc! {"a.b": 1}, doc! {"a": {"b": 1}}, true),
        (doc! {"a.b": 1}, doc! {"a": {"c": 1}}, false),
        (doc! {"a": {"b": 1}}, doc! {"a": {"b": 1}}, true),
        (doc! {"a": {"b": 1}}, doc! {"a": {"b": 1, "c": 2}}, false),
        (
            doc! {"a": {"b": 1, "c": 2}},
            doc! {"a": {"c": 2, "b": 1}},
            false,
        ),
        (doc! {"a": {}}, doc! {"a": {}}, true),
        (
            doc! {"a": {"b": 1, "$gt": 0}},
            doc! {"a": {"b": 1, "$gt": 0}},
            true,
        ),
        (
            doc! {"a": {"$eq": {"$gt": 1}}},
            doc! {"a": {"$gt": 1}},
            true,
        ),
        (doc! {"a": {"$eq": {"$gt": 1}}}, doc! {"a": 5}, false),
        (
            doc! {"_id": "balancer"},
            doc! {"_id": "balancer", "mode": "full"},
            true,
        ),
        (doc! {"_id": "balancer"}, doc! {"_id": "autosplit"}, false),
    ]);
}

#[test]
fn null_matches_null_and_missing() {
    check(vec![
        (doc! {"a": Bson::Null}, doc! {"a": Bson::Null}, true),
        (doc! {"a": Bson::Null}, doc! {}, true),
        (doc! {"a": Bson::Null}, doc! {"a": 0}, false),
        (doc! {"a": Bson::Null}, doc! {"a": Bson::Undefined}, false),
        (doc! {"a.b": Bson::Null}, doc! {"a": 5}, true),
        (doc! {"a.b": Bson::Null}, doc! {"a": {"b": 1}}, false),
        (doc! {"a": {"$ne": Bson::Null}}, doc! {}, false),
        (doc! {"a": {"$ne": Bson::Null}}, doc! {"a": 1}, true),
        (doc! {"a": {"$gte": Bson::Null}}, doc! {}, true),
        (
            doc! {"a": {"$lte": Bson::Null}},
            doc! {"a": Bson::Null},
            true,
        ),
        (doc! {"a": {"$gt": Bson::Null}}, doc! {"a": 1}, false),
        (doc! {"a": {"$lt": Bson::Null}}, doc! {}, false),
        (doc! {"a": {"$in": [Bson::Null]}}, doc! {}, true),
        (doc! {"a": {"$nin": [Bson::Null]}}, doc! {}, false),
    ]);
}

#[test]
fn comparisons_are_type_bracketed() {
    let date = |ms| Bson::DateTime(DateTime::from_millis(ms));
    check(vec![
        (doc! {"a": {"$gt": 5}}, doc! {"a": 6}, true),
        (doc! {"a": {"$gt": 5}}, doc! {"a": 5}, false),
        (doc! {"a": {"$gte": 5}}, doc! {"a": 5.0}, true),
        (doc! {"a": {"$gt": 5}}, doc! {"a": "6"}, false),
        (doc! {"a": {"$gt": 5}}, doc! {"a": Bson::MaxKey}, false),
        (doc! {"a": {"$lt": "b"}}, doc! {"a": "a"}, true),
        (doc! {"a": {"$lt": "b"}}, doc! {"a": 1}, false),
        (doc! {"a": {"$lte": 2.5}}, doc! {"a": Bson::Int64(2)}, true),
        (doc! {"a": {"$gt": 1, "$lt": 3}}, doc! {"a": 2}, true),
        (doc! {"a": {"$gt": 1, "$lt": 3}}, doc! {"a": 3}, false),
        (
            doc! {"ping": {"$gt": date(1000)}},
            doc! {"ping": date(2000)},
            true,
        ),
        (
            doc! {"ping": {"$gt": date(1000)}},
            doc! {"ping": date(1000)},
            false,
        ),
        (
            doc! {"ping": {"$gt": date(1000)}},
            doc! {"ping": 5000},
            false,
        ),
        (doc! {"ping": {"$gt": date(1000)}}, doc! {}, false),
        (doc! {"a": {"$gt": {"x": 1}}}, doc! {"a": {"x": 2}}, true),
        (
            doc! {"a": {"$lt": Bson::MaxKey}},
            doc! {"a": "anything"},
            true,
        ),
        (
            doc! {"a": {"$gt": Bson::MinKey}},
            doc! {"a": Bson::Null},
            true,
        ),
        (doc! {"a": {"$eq": f64::NAN}}, doc! {"a": f64::NAN}, true),
        (doc! {"a": {"$gte": f64::NAN}}, doc! {"a": 1}, false),
        (doc! {"a": {"$lt": 0}}, doc! {"a": f64::NAN}, false),
        (doc! {"a": {"$gt": dec("1.5")}}, doc! {"a": 2}, true),
    ]);
}

#[test]
fn ne_in_nin() {
    check(vec![
        (
            doc! {"dropped": {"$ne": true}},
            doc! {"dropped": false},
            true,
        ),
        (doc! {"dropped": {"$ne": true}}, doc! {}, true),
        (
            doc! {"dropped": {"$ne": true}},
            doc! {"dropped": true},
            false,
        ),
        (doc! {"a": {"$ne": 1}}, doc! {"a": "1"}, true),
        (doc! {"a": {"$in": [1, "x"]}}, doc! {"a": "x"}, true),
        (doc! {"a": {"$in": [1, "x"]}}, doc! {"a": 1.0}, true),
        (doc! {"a": {"$in": [1, "x"]}}, doc! {"a": 2}, false),
        (doc! {"a": {"$in": []}}, doc! {"a": 2}, false),
        (doc! {"a": {"$in": [re("^x", "")]}}, doc! {"a": "xyz"}, true),
        (doc! {"a": {"$nin": [1, 2]}}, doc! {"a": 3}, true),
        (doc! {"a": {"$nin": [1, 2]}}, doc! {}, true),
        (doc! {"a": {"$nin": [1, 2]}}, doc! {"a": 2}, false),
    ]);
}

#[test]
fn exists() {
    check(vec![
        (doc! {"a": {"$exists": true}}, doc! {"a": Bson::Null}, true),
        (doc! {"a": {"$exists": true}}, doc! {}, false),
        (doc! {"a": {"$exists": false}}, doc! {}, true),
        (doc! {"a": {"$exists": 0}}, doc! {"a": 1}, false),
        (doc! {"a": {"$exists": 1}}, doc! {"a": 1}, true),
        (
            doc! {"details.errmsg": {"$exists": false}},
            doc! {"details": {"note": "success"}},
            true,
        ),
        (
            doc! {"details.errmsg": {"$exists": false}},
            doc! {"details": {"errmsg": "x"}},
            false,
        ),
        (
            doc! {"details.errmsg": {"$exists": true}},
            doc! {"details": 5},
            false,
        ),
    ]);
}

#[test]
fn logical_operators() {
    check(vec![
        (
            doc! {"$and": [{"a": 1}, {"b": 2}]},
            doc! {"a": 1, "b": 2},
            true,
        ),
        (
            doc! {"$and": [{"a": 1}, {"b": 2}]},
            doc! {"a": 1, "b": 3},
            false,
        ),
        (
            doc! {"$or": [{"a": 1}, {"b": 2}]},
            doc! {"a": 0, "b": 2},
            true,
        ),
        (
            doc! {"$or": [{"a": 1}, {"b": 2}]},
            doc! {"a": 0, "b": 0},
            false,
        ),
        (
            doc! {"$nor": [{"a": 1}, {"b": 2}]},
            doc! {"a": 0, "b": 0},
            true,
        ),
        (doc! {"$nor": [{"a": 1}, {"b": 2}]}, doc! {"a": 1}, false),
        (doc! {"a": {"$not": {"$gt": 5}}}, doc! {"a": 3}, true),
        (doc! {"a": {"$not": {"$gt": 5}}}, doc! {"a": 7}, false),
        (doc! {"a": {"$not": {"$gt": 5}}}, doc! {}, true),
        (doc! {"a": {"$not": {"$gt": 5}}}, doc! {"a": "x"}, true),
        (
            doc! {"a": {"$not": {"$gt": 1, "$lt": 5}}},
            doc! {"a": 3},
            false,
        ),
        (
            doc! {"a": {"$not": {"$gt": 1, "$lt": 5}}},
            doc! {"a": 6},
            true,
        ),
        (doc! {"a": {"$not": re("^x", "")}}, doc! {"a": "xa"}, false),
        (doc! {"a": {"$not": re("^x", "")}}, doc! {"a": "ya"}, true),
        (doc! {"$comment": "hi", "a": 1}, doc! {"a": 1}, true),
        (doc! {"$alwaysTrue": 1}, doc! {}, true),
        (doc! {"$alwaysFalse": 1}, doc! {}, false),
        (
            doc! {"$or": [{"$and": [{"a": 1}]}, {"$nor": [{"a": {"$exists": true}}]}]},
            doc! {},
            true,
        ),
    ]);
}

#[test]
fn type_size_mod_all() {
    check(vec![
        (doc! {"a": {"$type": "string"}}, doc! {"a": "x"}, true),
        (doc! {"a": {"$type": 2}}, doc! {"a": "x"}, true),
        (doc! {"a": {"$type": 2.0}}, doc! {"a": 1}, false),
        (
            doc! {"a": {"$type": "number"}},
            doc! {"a": Bson::Int64(1)},
            true,
        ),
        (doc! {"a": {"$type": "number"}}, doc! {"a": dec("1")}, true),
        (
            doc! {"a": {"$type": ["bool", "null"]}},
            doc! {"a": Bson::Null},
            true,
        ),
        (doc! {"a": {"$type": "null"}}, doc! {}, false),
        (doc! {"a": {"$type": "int"}}, doc! {"a": 1.0}, false),
        (doc! {"a": {"$type": "array"}}, doc! {"a": [1]}, true),
        (doc! {"a": {"$type": "array"}}, doc! {"a": []}, true),
        (doc! {"a": {"$type": "int"}}, doc! {"a": [1]}, true),
        (doc! {"a": {"$size": 2}}, doc! {"a": [1, 2]}, true),
        (doc! {"a": {"$size": 2}}, doc! {"a": [1]}, false),
        (doc! {"a": {"$size": 0}}, doc! {"a": []}, true),
        (doc! {"a": {"$size": 1}}, doc! {"a": [[1, 2]]}, true),
        (doc! {"a": {"$size": 2}}, doc! {"a": [[1, 2]]}, false),
        (doc! {"a": {"$size": 1}}, doc! {"a": "x"}, false),
        (doc! {"a": {"$mod": [4, 1]}}, doc! {"a": 9}, true),
        (doc! {"a": {"$mod": [4, 1]}}, doc! {"a": 9.9}, true),
        (doc! {"a": {"$mod": [4, -1]}}, doc! {"a": -5}, true),
        (doc! {"a": {"$mod": [4, 1]}}, doc! {"a": "9"}, false),
        (doc! {"a": {"$mod": [4, 1]}}, doc! {"a": f64::NAN}, false),
        (doc! {"a": {"$all": [1, 2]}}, doc! {"a": [2, 3, 1]}, true),
        (doc! {"a": {"$all": [1, 2]}}, doc! {"a": [2, 3]}, false),
        (doc! {"a": {"$all": [1]}}, doc! {"a": 1}, true),
        (doc! {"a": {"$all": []}}, doc! {"a": [1]}, false),
    ]);
}

#[test]
fn elem_match() {
    check(vec![
        (
            doc! {"a": {"$elemMatch": {"$gt": 1, "$lt": 3}}},
            doc! {"a": [0, 2]},
            true,
        ),
        (
            doc! {"a": {"$elemMatch": {"$gt": 1, "$lt": 3}}},
            doc! {"a": [0, 5]},
            false,
        ),
        (doc! {"a": {"$gt": 1, "$lt": 3}}, doc! {"a": [0, 5]}, true),
        (doc! {"a": {"$elemMatch": {"$gt": 1}}}, doc! {"a": 5}, false),
        (
            doc! {"a": {"$elemMatch": {"b": 1, "c": 2}}},
            doc! {"a": [{"b": 1}, {"c": 2}]},
            false,
        ),
        (
            doc! {"a": {"$elemMatch": {"b": 1, "c": 2}}},
            doc! {"a": [{"b": 1, "c": 2}]},
            true,
        ),
        (
            doc! {"a.b": 1, "a.c": 2},
            doc! {"a": [{"b": 1}, {"c": 2}]},
            true,
        ),
        (
            doc! {"a": {"$elemMatch": {"$or": [{"b": 1}, {"b": 3}]}}},
            doc! {"a": [{"b": 3}]},
            true,
        ),
        (
            doc! {"a": {"$elemMatch": {"$not": {"$gt": 3}}}},
            doc! {"a": [5, 1]},
            true,
        ),
        (
            doc! {"a": {"$elemMatch": {"$not": {"$gt": 3}}}},
            doc! {"a": [5, 6]},
            false,
        ),
    ]);
}
