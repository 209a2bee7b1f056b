//! `sort_documents`.

use bson::{doc, Bson, Document};

use super::ids;
use crate::sort_documents;

fn sorted(mut docs: Vec<Document>, spec: Document) -> Vec<Bson> {
    sort_documents(&mut docs, &spec).expect("sort");
    ids(&docs)
}

fn b(v: i32) -> Bson {
    Bson::Int32(v)
}

#[test]
fn ascending_descending_and_ties_are_stable() {
    let docs = vec![
        doc! {"_id": 1, "a": 2, "b": "x"},
        doc! {"_id": 2, "a": 1, "b": "y"},
        doc! {"_id": 3, "a": 2, "b": "a"},
        doc! {"_id": 4, "a": 1, "b": "b"},
    ];
    assert_eq!(
        sorted(docs.clone(), doc! {"a": 1}),
        vec![b(2), b(4), b(1), b(3)]
    );
    assert_eq!(
        sorted(docs.clone(), doc! {"a": -1}),
        vec![b(1), b(3), b(2), b(4)]
    );
    assert_eq!(
        sorted(docs.clone(), doc! {"a": 1, "b": -1}),
        vec![b(2), b(4), b(1), b(3)]
    );
    assert_eq!(
        sorted(docs.clone(), doc! {"a": -1, "b": 1}),
        vec![b(3), b(1), b(4), b(2)]
    );
    assert_eq!(
        sorted(docs.clone(), doc! {"a": 1.0}),
        vec![b(2), b(4), b(1), b(3)]
    );
    assert_eq!(sorted(docs, doc! {}), vec![b(1), b(2), b(3), b(4)]);
}

#[test]
fn missing_sorts_as_null_and_types_follow_bson_order() {
    let docs = vec![
        doc! {"_id": 1, "a": "s"},
        doc! {"_id": 2},
        doc! {"_id": 3, "a": 5},
        doc! {"_id": 4, "a": Bson::Null},
        doc! {"_id": 5, "a": {"x": 1}},
        doc! {"_id": 6, "a": Bson::MinKey},
    ];
    assert_eq!(
        sorted(docs.clone(), doc! {"a": 1}),
        vec![b(6), b(2), b(4), b(3), b(1), b(5)]
    );
    assert_eq!(
        sorted(docs, doc! {"a": -1}),
        vec![b(5), b(1), b(3), b(2), b(4), b(6)]
    );
}

#[test]
fn arrays_sort_by_min_ascending_and_max_descending() {
    let docs = vec![
        doc! {"_id": 1, "a": [1, 10]},
        doc! {"_id": 2, "a": 5},
        doc! {"_id": 3, "a": []},
        doc! {"_id": 4, "a": Bson::Null},
        doc! {"_id": 5, "a": [3]},
    ];
    // Ascending keys: 1, 5, undefined, null, 3.
    assert_eq!(
        sorted(docs.clone(), doc! {"a": 1}),
        vec![b(3), b(4), b(1), b(5), b(2)]
    );
    // Descending keys: 10, 5, undefined, null, 3.
    assert_eq!(
        sorted(docs, doc! {"a": -1}),
        vec![b(1), b(2), b(5), b(4), b(3)]
    );
}

#[test]
fn dotted_paths_and_documents() {
    let docs = vec![
        doc! {"_id": 1, "min": {"x": 10}},
        doc! {"_id": 2, "min": {"x": Bson::MinKey}},
        doc! {"_id": 3, "min": {"x": 0}},
        doc! {"_id": 4, "min": {"x": Bson::MaxKey}},
    ];
    assert_eq!(
        sorted(docs.clone(), doc! {"min": 1}),
        vec![b(2), b(3), b(1), b(4)]
    );
    assert_eq!(
        sorted(docs.clone(), doc! {"min.x": -1}),
        vec![b(4), b(1), b(3), b(2)]
    );
    let nested = vec![
        doc! {"_id": 1, "a": [{"b": 4}, {"b": 2}]},
        doc! {"_id": 2, "a": [{"b": 3}]},
        doc! {"_id": 3, "a": [{"b": 5}, {"c": 1}]},
    ];
    // Ascending keys: 2, 3, null (the element without b).
    assert_eq!(
        sorted(nested.clone(), doc! {"a.b": 1}),
        vec![b(3), b(1), b(2)]
    );
    assert_eq!(sorted(nested, doc! {"a.b": -1}), vec![b(3), b(1), b(2)]);
}

#[test]
fn invalid_specs_fail() {
    let mut docs = vec![doc! {"a": [1, 2], "b": [3, 4]}, doc! {"a": 1, "b": 2}];
    let code = |spec: Document, docs: &mut Vec<Document>| {
        sort_documents(docs, &spec).expect_err("must fail").code()
    };
    assert_eq!(code(doc! {"a": 0}, &mut docs), (15975, "Location15975"));
    assert_eq!(code(doc! {"a": 2}, &mut docs), (15975, "Location15975"));
    assert_eq!(code(doc! {"a": "up"}, &mut docs), (15974, "Location15974"));
    assert_eq!(code(doc! {"a": {"$meta": "textScore"}}, &mut docs).0, 1);
    assert_eq!(code(doc! {"a": 1, "b": 1}, &mut docs), (2, "BadValue"));
    assert!(sort_documents(&mut docs, &doc! {"a.x": 1, "a.y": 1}).is_ok());
}

#[test]
fn nested_arrays_at_the_leaf_are_not_flattened() {
    // Keys come from one level of elements: [1, 2] is an array, above 3.
    let docs = vec![doc! {"_id": 1, "a": [[1, 2], 3]}, doc! {"_id": 2, "a": 2}];
    assert_eq!(sorted(docs.clone(), doc! {"a": 1}), vec![b(2), b(1)]);
    assert_eq!(sorted(docs, doc! {"a": -1}), vec![b(1), b(2)]);
}

#[test]
fn numbers_of_all_types_sort_together() {
    let docs = vec![
        doc! {"_id": 1, "n": 2.5},
        doc! {"_id": 2, "n": Bson::Int64(2)},
        doc! {"_id": 3, "n": super::dec("2.25")},
        doc! {"_id": 4, "n": f64::NAN},
        doc! {"_id": 5, "n": 3},
    ];
    assert_eq!(
        sorted(docs, doc! {"n": 1}),
        vec![b(4), b(2), b(3), b(1), b(5)]
    );
}
