//! `project` (find projections).

use bson::{doc, Document};

use crate::project;

fn p(doc: Document, spec: Document) -> Document {
    project(&doc, &spec).expect("projection")
}

fn code(spec: Document) -> (i32, &'static str) {
    project(&doc! {"a": 1}, &spec)
        .expect_err("must fail")
        .code()
}

#[test]
fn inclusion_keeps_document_order_and_id() {
    let doc = doc! {"_id": 1, "a": 1, "b": 2, "c": 3};
    assert_eq!(
        p(doc.clone(), doc! {"c": 1, "a": 1}),
        doc! {"_id": 1, "a": 1, "c": 3}
    );
    assert_eq!(p(doc.clone(), doc! {"a": true, "_id": 0}), doc! {"a": 1});
    assert_eq!(p(doc.clone(), doc! {"_id": 1}), doc! {"_id": 1});
    assert_eq!(p(doc.clone(), doc! {"a": 5}), doc! {"_id": 1, "a": 1});
    assert_eq!(p(doc.clone(), doc! {"zz": 1}), doc! {"_id": 1});
    assert_eq!(p(doc.clone(), doc! {}), doc);
    let id_last = doc! {"a": 1, "_id": 7};
    assert_eq!(p(id_last, doc! {"a": 1}), doc! {"a": 1, "_id": 7});
}

#[test]
fn exclusion() {
    let doc = doc! {"_id": 1, "a": 1, "b": 2, "c": 3};
    assert_eq!(
        p(doc.clone(), doc! {"b": 0}),
        doc! {"_id": 1, "a": 1, "c": 3}
    );
    assert_eq!(
        p(doc.clone(), doc! {"_id": 0}),
        doc! {"a": 1, "b": 2, "c": 3}
    );
    assert_eq!(
        p(doc.clone(), doc! {"_id": 0, "a": false}),
        doc! {"b": 2, "c": 3}
    );
    assert_eq!(
        p(doc.clone(), doc! {"_id": 1, "a": 0}),
        doc! {"_id": 1, "b": 2, "c": 3}
    );
    assert_eq!(
        p(doc.clone(), doc! {"a": 0, "_id": 1}),
        doc! {"_id": 1, "b": 2, "c": 3}
    );
}

#[test]
fn dotted_inclusion() {
    let doc = doc! {"_id": 0, "a": {"b": 1, "c": 2}, "d": 4};
    assert_eq!(
        p(doc.clone(), doc! {"a.b": 1}),
        doc! {"_id": 0, "a": {"b": 1}}
    );
    assert_eq!(
        p(doc.clone(), doc! {"a": {"c": 1}}),
        doc! {"_id": 0, "a": {"c": 2}}
    );
    assert_eq!(p(doc.clone(), doc! {"a.x": 1}), doc! {"_id": 0, "a": {}});
    assert_eq!(p(doc! {"a": 5}, doc! {"a.b": 1, "_id": 0}), doc! {});
    let arr = doc! {"a": [{"b": 1, "c": 2}, {"c": 3}, 5, [{"b": 9}]]};
    assert_eq!(p(arr, doc! {"a.b": 1}), doc! {"a": [{"b": 1}, {}]});
}

#[test]
fn dotted_exclusion() {
    let doc = doc! {"_id": 0, "a": {"b": 1, "c": 2}, "d": 4};
    assert_eq!(
        p(doc, doc! {"a.b": 0}),
        doc! {"_id": 0, "a": {"c": 2}, "d": 4}
    );
    let arr = doc! {"a": [{"b": 1, "c": 2}, 5, [{"b": 9}]], "x": 1};
    assert_eq!(
        p(arr, doc! {"a.b": 0}),
        doc! {"a": [{"c": 2}, 5, [{"b": 9}]], "x": 1}
    );
    assert_eq!(p(doc! {"a": 5}, doc! {"a.b": 0}), doc! {"a": 5});
}

#[test]
fn computed_fields_follow_included_fields() {
    let doc = doc! {"_id": 1, "a": 1, "b": {"c": 2}};
    assert_eq!(
        p(doc.clone(), doc! {"x": "$b.c", "a": 1}),
        doc! {"_id": 1, "a": 1, "x": 2}
    );
    assert_eq!(
        p(doc.clone(), doc! {"_id": 0, "lit": {"$literal": 1}}),
        doc! {"lit": 1}
    );
    assert_eq!(p(doc, doc! {"_id": 0, "m": "$missing"}), doc! {});
}

#[test]
fn errors_match_mongodb() {
    assert_eq!(code(doc! {"a": 1, "b": 0}), (31254, "Location31254"));
    assert_eq!(code(doc! {"a": 0, "b": 1}), (31253, "Location31253"));
    assert_eq!(
        code(doc! {"_id": 1, "a": 0, "b": 1}),
        (31253, "Location31253")
    );
    assert_eq!(code(doc! {"a": 1, "a.b": 1}), (31249, "Location31249"));
    assert_eq!(code(doc! {"a.b": 1, "a": 1}), (31250, "Location31250"));
    assert_eq!(code(doc! {"a": {}}), (51270, "Location51270"));
    assert_eq!(code(doc! {"a": 0, "b": "$x"}), (31310, "Location31310"));
    assert_eq!(
        code(doc! {"a": 0, "b": {"$literal": 1}}),
        (31252, "Location31252")
    );
    assert_eq!(code(doc! {"a": {"$bogus": 1}}), (31325, "Location31325"));
    assert_eq!(code(doc! {"a": {"$slice": 1}}).0, 1);
    assert_eq!(code(doc! {"a": {"$elemMatch": {"b": 1}}}).0, 1);
    assert_eq!(code(doc! {"a.$": 1}).0, 1);
    assert_eq!(code(doc! {"a": {"$toUpper": "$a"}}).0, 1);
    assert_eq!(code(doc! {"$a": 1}), (16410, "Location16410"));
    assert_eq!(code(doc! {"a..b": 1}), (15998, "Location15998"));
}

#[test]
fn sub_object_projections() {
    let doc = doc! {"_id": 1, "a": {"b": 1, "c": 2, "d": {"e": 3, "f": 4}}};
    assert_eq!(
        p(doc.clone(), doc! {"a": {"b": 1, "d": {"f": 1}}}),
        doc! {"_id": 1, "a": {"b": 1, "d": {"f": 4}}}
    );
    assert_eq!(
        p(doc.clone(), doc! {"a": {"d": 0}, "_id": 0}),
        doc! {"a": {"b": 1, "c": 2}}
    );
    assert_eq!(
        p(doc, doc! {"a.b": 1, "a.z": "$a.c"}),
        doc! {"_id": 1, "a": {"b": 1, "z": 2}}
    );
}
