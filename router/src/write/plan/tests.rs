//! Routing rules and batch splitting over a three-shard table on `{x: 1}`:
//! [MinKey, 0) s0, [0, 100) s1, [100, MaxKey) s2.

use bson::{doc, Bson, Document, RawDocumentBuf};

use super::*;
use crate::targeting::tests::{pattern, table};

fn setup() -> (ShardKeyPattern, ChunkMap) {
    let p = pattern(doc! {"x": 1});
    let map = table(&p, &[doc! {"x": 0}, doc! {"x": 100}], &["s0", "s1", "s2"]);
    (p, map)
}

fn route(kind: WriteKind, stmt: Document) -> Result<Routed, StmtError> {
    let (p, map) = setup();
    route_statement(kind, &p, &map, &RawDocumentBuf::try_from(&stmt).unwrap())
}

fn shards(kind: WriteKind, stmt: Document) -> Vec<String> {
    route(kind, stmt).expect("routes").shards
}

fn code(kind: WriteKind, stmt: Document) -> i32 {
    route(kind, stmt).expect_err("refused").code
}

/// The shards a write without the shard key searches.
fn without_key(kind: WriteKind, stmt: Document) -> Vec<String> {
    let r = route(kind, stmt).expect("routes");
    assert!(r.without_key && r.key.is_none(), "{r:?}");
    r.shards
}

#[test]
fn inserts_go_to_the_owner_and_missing_keys_route_as_null() {
    assert_eq!(shards(WriteKind::Insert, doc! {"x": -5}), ["s0"]);
    assert_eq!(shards(WriteKind::Insert, doc! {"x": 150}), ["s2"]);
    // null sorts below numbers: the MinKey chunk.
    assert_eq!(shards(WriteKind::Insert, doc! {"y": 1}), ["s0"]);
    assert_eq!(code(WriteKind::Insert, doc! {"x": [1, 2]}), 61);
}

#[test]
fn updates_follow_mongos_targeting_rules() {
    let upd = WriteKind::Update;
    assert_eq!(
        shards(upd, doc! {"q": {"x": 50}, "u": {"$set": {"a": 1}}}),
        ["s1"]
    );
    // multi: every shard the filter reaches.
    assert_eq!(
        shards(
            upd,
            doc! {"q": {"x": {"$gte": 50}}, "u": {"$set": {"a": 1}}, "multi": true}
        ),
        ["s1", "s2"]
    );
    // single by _id: broadcast.
    assert_eq!(
        shards(upd, doc! {"q": {"_id": 7}, "u": {"$set": {"a": 1}}}),
        ["s0", "s1", "s2"]
    );
    // single without the key or _id: two phases, on the shards the
    // filter reaches.
    assert_eq!(
        without_key(upd, doc! {"q": {"a": 1}, "u": {"$set": {"b": 1}}}),
        ["s0", "s1", "s2"]
    );
    assert_eq!(
        without_key(upd, doc! {"q": {"x": {"$gt": 1}}, "u": {"$set": {"b": 1}}}),
        ["s1", "s2"]
    );
    // upsert without the full key: refused, unless by an exact _id
    // (found, else inserted where its key belongs, as mongos >= 7.0).
    assert_eq!(
        code(
            upd,
            doc! {"q": {"a": 1}, "u": {"$set": {"b": 1}}, "upsert": true}
        ),
        61
    );
    assert_eq!(
        key_change(doc! {"q": {"_id": 1}, "u": {"$set": {"b": 1}}, "upsert": true}),
        ["s0", "s1", "s2"]
    );
    // A replacement whose filter does not pin the key may change it: it
    // runs as a key change, found wherever the filter reaches.
    assert_eq!(
        key_change(doc! {"q": {"_id": 1}, "u": {"x": 120, "b": 1}}),
        ["s0", "s1", "s2"]
    );
    // a non-simple collation cannot use the key.
    assert_eq!(
        shards(
            upd,
            doc! {"q": {"x": 5}, "u": {"$set": {"b": 1}}, "multi": true, "collation": {"locale": "fr"}}
        ),
        ["s0", "s1", "s2"]
    );
}

/// A single update that may change the key runs on its own, on the
/// shards its filter reaches.
fn key_change(stmt: Document) -> Vec<String> {
    let r = route(WriteKind::Update, stmt).expect("routes");
    assert!(r.key_change && r.key.is_none(), "{r:?}");
    r.shards
}

#[test]
fn shard_key_changes_run_alone_or_are_refused() {
    let upd = WriteKind::Update;
    for u in [
        Bson::Document(doc! {"$set": {"x": 6}}),
        Bson::Document(doc! {"$inc": {"x": 1}}),
        Bson::Document(doc! {"$unset": {"x": ""}}),
        Bson::Document(doc! {"$rename": {"a": "x"}}),
        Bson::Document(doc! {"y": 1}),
        Bson::Document(doc! {"x": 6}),
        Bson::Array(vec![Bson::Document(doc! {"$set": {"x": 9}})]),
    ] {
        assert_eq!(key_change(doc! {"q": {"x": 5}, "u": u}), ["s1"]);
    }
    assert_eq!(
        key_change(doc! {"q": {"a": 1}, "u": {"$set": {"x": 1}}}),
        ["s0", "s1", "s2"]
    );
    // Refused: many documents, or an upsert.
    assert_eq!(
        code(
            upd,
            doc! {"q": {"a": 1}, "u": {"$set": {"x": 1}}, "multi": true}
        ),
        66
    );
    assert_eq!(
        code(
            upd,
            doc! {"q": {"x": 5}, "u": {"$set": {"x": 6}}, "upsert": true}
        ),
        66
    );
    // Setting the value the filter pins is no change.
    assert_eq!(
        shards(upd, doc! {"q": {"x": 5}, "u": {"$set": {"x": 5, "a": 1}}}),
        ["s1"]
    );
    assert_eq!(
        shards(upd, doc! {"q": {"x": 5}, "u": {"$set": {"x": 5.0}}}),
        ["s1"]
    );
    assert_eq!(
        shards(upd, doc! {"q": {"x": 5}, "u": {"x": 5, "a": 1}}),
        ["s1"]
    );
    assert_eq!(
        shards(upd, doc! {"q": {"x": 5}, "u": [{"$set": {"a": 1}}]}),
        ["s1"]
    );
}

#[test]
fn deletes_need_the_key_or_id_for_limit_one() {
    let del = WriteKind::Delete;
    assert_eq!(shards(del, doc! {"q": {"x": 150}, "limit": 1}), ["s2"]);
    assert_eq!(
        shards(del, doc! {"q": {"_id": 3}, "limit": 1}),
        ["s0", "s1", "s2"]
    );
    assert_eq!(
        shards(del, doc! {"q": {"x": {"$lt": 0}}, "limit": 0}),
        ["s0"]
    );
    assert_eq!(
        without_key(del, doc! {"q": {"a": 1}, "limit": 1}),
        ["s0", "s1", "s2"]
    );
    assert_eq!(
        without_key(del, doc! {"q": {"_id": {"$in": [1, 2]}}, "limit": 1}),
        ["s0", "s1", "s2"]
    );
}

#[test]
fn find_and_modify_needs_the_key() {
    let (p, map) = setup();
    let set = Bson::Document(doc! {"$set": {"a": 1}});
    let r = route_find_and_modify(&p, &map, &doc! {"x": 3}, Some(&set), true, true).unwrap();
    assert_eq!(r.shards, ["s1"]);
    let r = route_find_and_modify(&p, &map, &doc! {"a": 3}, None, false, true).unwrap();
    assert!(r.without_key);
    let e = route_find_and_modify(&p, &map, &doc! {"a": 3}, Some(&set), true, true).unwrap_err();
    assert_eq!(e.code, 61, "an upsert still needs the key");
    let inc = Bson::Document(doc! {"$inc": {"x": 1}});
    let r = route_find_and_modify(&p, &map, &doc! {"x": 3}, Some(&inc), false, true).unwrap();
    assert!(r.key_change);
    let e = route_find_and_modify(&p, &map, &doc! {"x": 3}, Some(&inc), true, true).unwrap_err();
    assert_eq!(e.code, 66, "an upsert that changes the key is refused");
}

fn ok(shards: &[&str]) -> Result<Routed, StmtError> {
    Ok(Routed {
        shards: shards.iter().map(|s| (*s).to_owned()).collect(),
        key: None,
        without_key: false,
        key_change: false,
    })
}

fn batch(shard: &str, indexes: &[usize]) -> Batch {
    Batch {
        shard: shard.to_owned(),
        indexes: indexes.to_vec(),
        bytes: indexes.len() * 10,
    }
}

#[test]
fn ordered_batches_are_runs_and_stop_at_a_routing_error() {
    let routes = vec![
        ok(&["a"]),
        ok(&["a"]),
        ok(&["b"]),
        ok(&["a", "b"]),
        ok(&["a"]),
        Err(StmtError::new(61, "ShardKeyNotFound", "x")),
        ok(&["b"]),
    ];
    let steps = plan(&routes, &[10; 7], true);
    assert_eq!(
        steps,
        vec![
            Step::Send(vec![batch("a", &[0, 1])]),
            Step::Send(vec![batch("b", &[2])]),
            Step::Send(vec![batch("a", &[3]), batch("b", &[3])]),
            Step::Send(vec![batch("a", &[4])]),
            Step::Fail(5),
        ]
    );
}

#[test]
fn unordered_batches_group_by_shard_and_skip_errors() {
    let routes = vec![
        ok(&["a"]),
        ok(&["b"]),
        Err(StmtError::new(61, "ShardKeyNotFound", "x")),
        ok(&["a", "b"]),
        ok(&["a"]),
    ];
    let steps = plan(&routes, &[10; 5], false);
    assert_eq!(
        steps,
        vec![Step::Send(vec![
            batch("a", &[0, 3, 4]),
            batch("b", &[1, 3])
        ])]
    );
}

#[test]
fn batches_stay_within_the_byte_limit() {
    let routes: Vec<_> = (0..5).map(|_| ok(&["a"])).collect();
    let big = MAX_BATCH_BYTES / 2;
    let sizes = [big; 5];
    let ordered = plan(&routes, &sizes, true);
    let counts: Vec<Vec<usize>> = ordered
        .iter()
        .map(|s| match s {
            Step::Send(b) => b.iter().map(|b| b.indexes.len()).collect(),
            Step::Fail(_) | Step::Alone(_) => vec![],
        })
        .collect();
    assert_eq!(counts, vec![vec![2], vec![2], vec![1]]);
    let unordered = plan(&routes, &sizes, false);
    let [Step::Send(batches)] = unordered.as_slice() else {
        panic!("{unordered:?}")
    };
    assert_eq!(batches.len(), 3);
    assert!(batches.iter().all(|b| b.bytes <= MAX_BATCH_BYTES));
}

#[test]
fn writes_without_the_key_run_alone_in_order() {
    let without = |shards: &[&str]| {
        Ok(Routed {
            shards: shards.iter().map(|s| (*s).to_owned()).collect(),
            key: None,
            without_key: true,
            key_change: false,
        })
    };
    let routes = vec![ok(&["a"]), without(&["a", "b"]), ok(&["a"]), ok(&["b"])];
    assert_eq!(
        plan(&routes, &[10; 4], true),
        vec![
            Step::Send(vec![batch("a", &[0])]),
            Step::Alone(1),
            Step::Send(vec![batch("a", &[2])]),
            Step::Send(vec![batch("b", &[3])]),
        ]
    );
    assert_eq!(
        plan(&routes, &[10; 4], false),
        vec![
            Step::Send(vec![batch("a", &[0, 2]), batch("b", &[3])]),
            Step::Alone(1),
        ]
    );
    // The planner marks a single update by another field so.
    let pattern = pattern(doc! {"x": 1});
    let chunks = table(&pattern, &[doc! {"x": 50}], &["a", "b"]);
    let stmt =
        bson::RawDocumentBuf::try_from(&doc! {"q": {"v": 1}, "u": {"$set": {"w": 1}}}).unwrap();
    let routed = route_statement(WriteKind::Update, &pattern, &chunks, &stmt).unwrap();
    assert!(routed.without_key && routed.key.is_none());
    let upsert = bson::RawDocumentBuf::try_from(
        &doc! {"q": {"v": 1}, "u": {"$set": {"w": 1}}, "upsert": true},
    )
    .unwrap();
    let e = route_statement(WriteKind::Update, &pattern, &chunks, &upsert).unwrap_err();
    assert_eq!(e.code, 61);
}
