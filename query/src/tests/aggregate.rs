//! `aggregate`: stages other than `$group`, and expressions.

use bson::{doc, Bson, Document};

use crate::aggregate;

fn run(docs: Vec<Document>, pipeline: Vec<Document>) -> Vec<Document> {
    aggregate(docs, &pipeline).expect("pipeline runs")
}

fn one(doc: Document, stage: Document) -> Document {
    let mut out = run(vec![doc], vec![stage]);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

#[test]
fn match_sort_skip_limit() {
    let docs: Vec<Document> = (1..=6).map(|i| doc! {"_id": i, "g": i % 2}).collect();
    let out = run(
        docs,
        vec![
            doc! {"$match": {"g": 0}},
            doc! {"$sort": {"_id": -1}},
            doc! {"$skip": 1},
            doc! {"$limit": Bson::Int64(5)},
        ],
    );
    assert_eq!(out, vec![doc! {"_id": 4, "g": 0}, doc! {"_id": 2, "g": 0}]);
}

#[test]
fn project_stage() {
    let doc = doc! {"_id": 1, "a": {"b": 1, "c": 2}, "n": [{"b": 1}, [{"b": 2, "c": 3}], 7]};
    assert_eq!(
        one(doc.clone(), doc! {"$project": {"a.b": 1, "n.b": 1}}),
        doc! {"_id": 1, "a": {"b": 1}, "n": [{"b": 1}, [{"b": 2}]]}
    );
    assert_eq!(
        one(
            doc.clone(),
            doc! {"$project": {"_id": 0, "x": "$a.c", "y": {"z": "$_id"}}}
        ),
        doc! {"x": 2, "y": {"z": 1}}
    );
    assert_eq!(
        one(doc.clone(), doc! {"$project": {"a": 0, "n": 0}}),
        doc! {"_id": 1}
    );
    assert_eq!(
        one(
            doc,
            doc! {"$project": {"s": "$n.b", "lit": "text", "t": true}}
        ),
        doc! {"_id": 1, "s": [1], "lit": "text"}
    );
}

#[test]
fn add_fields_and_set() {
    let doc = doc! {"_id": 1, "a": {"b": 1}, "c": 5};
    assert_eq!(
        one(
            doc.clone(),
            doc! {"$addFields": {"c": 6, "d": "$a.b", "a.e": 0}}
        ),
        doc! {"_id": 1, "a": {"b": 1, "e": 0}, "c": 6, "d": 1}
    );
    assert_eq!(
        one(doc.clone(), doc! {"$set": {"a": {"f": true}, "g": {}}}),
        doc! {"_id": 1, "a": {"b": 1, "f": true}, "c": 5, "g": {}}
    );
    assert_eq!(
        one(doc.clone(), doc! {"$set": {"c": "$$REMOVE", "x": "$nope"}}),
        doc! {"_id": 1, "a": {"b": 1}}
    );
    assert_eq!(
        one(doc! {"a": [1, {"c": 1}]}, doc! {"$addFields": {"a.b": 5}}),
        doc! {"a": [{"b": 5}, {"c": 1, "b": 5}]}
    );
    assert_eq!(
        one(doc! {"a": 1}, doc! {"$addFields": {"a.b": "$a"}}),
        doc! {"a": {"b": 1}}
    );
    assert_eq!(one(doc.clone(), doc! {"$addFields": {}}), doc);
}

#[test]
fn unset_stage() {
    let doc = doc! {"_id": 1, "a": {"b": 1, "c": 2}, "d": 3};
    assert_eq!(
        one(doc.clone(), doc! {"$unset": "d"}),
        doc! {"_id": 1, "a": {"b": 1, "c": 2}}
    );
    assert_eq!(
        one(doc.clone(), doc! {"$unset": ["_id", "a.b"]}),
        doc! {"a": {"c": 2}, "d": 3}
    );
}

#[test]
fn count_stage() {
    let docs: Vec<Document> = (0..3).map(|i| doc! {"_id": i}).collect();
    assert_eq!(run(docs, vec![doc! {"$count": "n"}]), vec![doc! {"n": 3}]);
    assert_eq!(
        run(vec![], vec![doc! {"$count": "n"}]),
        Vec::<Document>::new()
    );
}

#[test]
fn unwind_stage() {
    let docs = vec![
        doc! {"_id": 1, "s": ["a", "b"], "z": 0},
        doc! {"_id": 2, "s": []},
        doc! {"_id": 3, "s": Bson::Null},
        doc! {"_id": 4},
        doc! {"_id": 5, "s": "x"},
    ];
    assert_eq!(
        run(docs.clone(), vec![doc! {"$unwind": "$s"}]),
        vec![
            doc! {"_id": 1, "s": "a", "z": 0},
            doc! {"_id": 1, "s": "b", "z": 0},
            doc! {"_id": 5, "s": "x"},
        ]
    );
    let spec = doc! {"$unwind": {"path": "$s", "preserveNullAndEmptyArrays": true, "includeArrayIndex": "i"}};
    assert_eq!(
        run(docs, vec![spec]),
        vec![
            doc! {"_id": 1, "s": "a", "z": 0, "i": Bson::Int64(0)},
            doc! {"_id": 1, "s": "b", "z": 0, "i": Bson::Int64(1)},
            doc! {"_id": 2, "i": Bson::Null},
            doc! {"_id": 3, "s": Bson::Null, "i": Bson::Null},
            doc! {"_id": 4, "i": Bson::Null},
            doc! {"_id": 5, "s": "x", "i": Bson::Null},
        ]
    );
    assert_eq!(
        run(
            vec![doc! {"a": {"b": [1, 2]}}],
            vec![doc! {"$unwind": "$a.b"}]
        ),
        vec![doc! {"a": {"b": 1}}, doc! {"a": {"b": 2}}]
    );
}

#[test]
fn replace_root() {
    let doc = doc! {"_id": 1, "inner": {"x": 1}};
    assert_eq!(
        one(doc.clone(), doc! {"$replaceRoot": {"newRoot": "$inner"}}),
        doc! {"x": 1}
    );
    assert_eq!(
        one(doc.clone(), doc! {"$replaceWith": {"id": "$_id"}}),
        doc! {"id": 1}
    );
    let err = aggregate(vec![doc], &[doc! {"$replaceWith": "$nope"}]).expect_err("fails");
    assert_eq!(err.code(), (40228, "Location40228"));
}

#[test]
fn expressions() {
    let doc = doc! {"_id": 1, "a": 5, "n": Bson::Null, "arr": [{"v": 1}, {"w": 2}, {"v": 3}]};
    let out = one(
        doc,
        doc! {"$project": {
            "_id": 0,
            "ifnull1": {"$ifNull": ["$n", "$missing", "dflt"]},
            "ifnull2": {"$ifNull": ["$a", "dflt"]},
            "ifnull3": {"$ifNull": ["$n", "$missing"]},
            "cond1": {"$cond": [{"$gt": ["$a", 3]}, "big", "small"]},
            "cond2": {"$cond": {"if": "$n", "then": 1, "else": 2}},
            "eq": {"$eq": ["$a", 5.0]},
            "eqnull": {"$eq": ["$missing", Bson::Null]},
            "cmp": {"$cmp": ["$a", "x"]},
            "and": {"$and": [1, "$a", true]},
            "or": {"$or": [0, "$n"]},
            "not": {"$not": ["$n"]},
            "vs": "$arr.v",
            "list": ["$a", "$missing"],
            "obj": {"k": "$a", "m": "$missing"},
            "root": "$$ROOT.a",
            "lit": {"$literal": "$a"},
        }},
    );
    assert_eq!(
        out,
        doc! {
            "ifnull1": "dflt",
            "ifnull2": 5,
            "cond1": "big",
            "cond2": 2,
            "eq": true,
            "eqnull": false,
            "cmp": -1,
            "and": true,
            "or": false,
            "not": true,
            "vs": [1, 3],
            "list": [5, Bson::Null],
            "obj": {"k": 5},
            "root": 5,
            "lit": "$a",
        }
    );
}
