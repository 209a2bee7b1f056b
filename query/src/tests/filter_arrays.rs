//! Filters on arrays and dotted paths through arrays, following MongoDB's
//! `BSONElementIterator` (see `src/mongo/db/matcher/path_test.cpp`).

use bson::{doc, Bson, Document};

use super::matches;
use crate::get_path;

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
fn equality_against_arrays() {
    check(vec![
        (doc! {"a": 2}, doc! {"a": [1, 2, 3]}, true),
        (doc! {"a": 4}, doc! {"a": [1, 2, 3]}, false),
        (doc! {"a": [1, 2]}, doc! {"a": [1, 2]}, true),
        (doc! {"a": [1, 2]}, doc! {"a": [2, 1]}, false),
        (doc! {"a": [1, 2]}, doc! {"a": [[1, 2], 3]}, true),
        (doc! {"a": 1}, doc! {"a": [[1, 2], 3]}, false),
        (doc! {"a": Bson::Null}, doc! {"a": [1, Bson::Null]}, true),
        (doc! {"a": Bson::Null}, doc! {"a": [1, 2]}, false),
        (doc! {"a": Bson::Null}, doc! {"a": []}, false),
        (doc! {"a": []}, doc! {"a": []}, true),
        (doc! {"a": []}, doc! {"a": [[]]}, true),
        (doc! {"a": {"$gt": 2}}, doc! {"a": [1, 3]}, true),
        (doc! {"a": {"$gt": 5}}, doc! {"a": [1, 3]}, false),
        (doc! {"a": {"$ne": 2}}, doc! {"a": [1, 2]}, false),
        (doc! {"a": {"$ne": 2}}, doc! {"a": [1, 3]}, true),
        (doc! {"a": {"$in": [5, 3]}}, doc! {"a": [1, 3]}, true),
        (doc! {"a": {"$nin": [5, 3]}}, doc! {"a": [1, 3]}, false),
        (doc! {"a": {"$gt": [1]}}, doc! {"a": [1, 2]}, true),
    ]);
}

#[test]
fn dotted_paths_through_arrays() {
    let nested1 = doc! {"a": [{"b": 5}, 3, {}, {"b": [9, 11]}, {"b": 7}]};
    check(vec![
        (doc! {"a.b": 5}, nested1.clone(), true),
        (doc! {"a.b": 11}, nested1.clone(), true),
        (doc! {"a.b": [9, 11]}, nested1.clone(), true),
        (doc! {"a.b": 3}, nested1.clone(), false),
        (doc! {"a.b": Bson::Null}, nested1.clone(), true),
        (doc! {"a.b": {"$exists": true}}, nested1, true),
        (doc! {"a.b": 1}, doc! {"a": [{"b": 1}, {"b": 2}]}, true),
        (doc! {"a.b": Bson::Null}, doc! {"a": [4]}, false),
        (doc! {"a.b": Bson::Null}, doc! {"a": []}, false),
        (
            doc! {"a.b": Bson::Null},
            doc! {"a": [{"b": 1}, {"c": 1}]},
            true,
        ),
        (doc! {"a.b": {"$exists": true}}, doc! {"a": [1, 2]}, false),
        (doc! {"a.b": {"$exists": false}}, doc! {"a": [1, 2]}, true),
        (doc! {"a.b": 1}, doc! {"a": [[{"b": 1}]]}, false),
        (doc! {"a.b.c": 1}, doc! {"a": [{"b": [{"c": 1}]}]}, true),
    ]);
}

#[test]
fn numeric_path_components() {
    check(vec![
        (doc! {"a.1": 7}, doc! {"a": [5, 7, 3]}, true),
        (doc! {"a.1": 5}, doc! {"a": [5, 7, 3]}, false),
        (doc! {"a.1": 2}, doc! {"a": [5, [2, 4], 3]}, false),
        (doc! {"a.1": [2, 4]}, doc! {"a": [5, [2, 4], 3]}, true),
        (doc! {"a.1": 4}, doc! {"a": [5, {"1": 4}, 3]}, true),
        (doc! {"a.1.b": 4}, doc! {"a": [5, {"b": 4}, 3]}, true),
        (doc! {"a.1.b": 4}, doc! {"a": [5, [{"b": 4}], 3]}, true),
        (
            doc! {"a.0.b": 3},
            doc! {"a": [{"b": [2, 3]}, {"b": [4, 5]}]},
            true,
        ),
        (
            doc! {"a.0.b": 4},
            doc! {"a": [{"b": [2, 3]}, {"b": [4, 5]}]},
            false,
        ),
        (doc! {"a.0": 1}, doc! {"a": {"0": 1}}, true),
        (doc! {"a.01": 1}, doc! {"a": [5, 1]}, false),
        (doc! {"a.5": Bson::Null}, doc! {"a": [1]}, false),
    ]);
}

#[test]
fn get_path_follows_documents_and_indexes() {
    let doc = doc! {"a": {"b": [10, {"c": "x"}]}, "d": 1};
    assert_eq!(get_path(&doc, "d"), Some(&Bson::Int32(1)));
    assert_eq!(get_path(&doc, "a.b.0"), Some(&Bson::Int32(10)));
    assert_eq!(get_path(&doc, "a.b.1.c"), Some(&Bson::String("x".into())));
    assert_eq!(get_path(&doc, "a.b.2"), None);
    assert_eq!(get_path(&doc, "a.b.c"), None);
    assert_eq!(get_path(&doc, "d.e"), None);
    assert_eq!(get_path(&doc, "missing"), None);
    assert_eq!(get_path(&doc, ""), None);
}
