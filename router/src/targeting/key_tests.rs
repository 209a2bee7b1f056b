//! Table tests of compound, descending, hashed and dotted shard keys, of
//! [`exact_key`], and of the range list's shape.

use std::collections::BTreeSet;

use bson::{doc, Bson, Document};
use shardgate_config_store::chunk_map::ChunkMap;
use shardgate_config_store::shard_key::{hash_value, KeyBytes, ShardKeyPattern};

use super::tests::{check, pattern, set, table};
use super::{exact_key, target, target_shards, KeyRange, Targets};

/// `{a: 1, b: 1}`: [{MinKey, MinKey}, {5, MinKey}) s0, [{5, MinKey}, {5, 10})
/// s1, [{5, 10}, {6, MinKey}) s2, [{6, MinKey}, {MaxKey, MaxKey}) s0.
fn compound() -> (ShardKeyPattern, ChunkMap) {
    let p = pattern(doc! {"a": 1, "b": 1});
    let splits = [
        doc! {"a": 5, "b": Bson::MinKey},
        doc! {"a": 5, "b": 10},
        doc! {"a": 6, "b": Bson::MinKey},
    ];
    let map = table(&p, &splits, &["s0", "s1", "s2", "s0"]);
    (p, map)
}

#[test]
fn compound_prefix_and_full_key() {
    let (p, map) = compound();
    check(
        &p,
        &map,
        &[
            (doc! {"a": 5}, &["s1", "s2"]),
            (doc! {"a": 5, "b": 3}, &["s1"]),
            (doc! {"b": 3, "a": 5}, &["s1"]),
            (doc! {"a": 5, "b": 10}, &["s2"]),
            (doc! {"a": 5, "b": {"$gte": 10}}, &["s2"]),
            (doc! {"a": 5, "b": {"$lt": 10}}, &["s1"]),
            (doc! {"a": 5, "b": {"$in": [1, 20]}}, &["s1", "s2"]),
            (doc! {"a": {"$in": [4, 7]}, "b": 1}, &["s0"]),
            (doc! {"a": {"$gt": 5}}, &["s2", "s0"]),
            (doc! {"a": {"$gt": 4, "$lt": 5}}, &["s0"]),
            (doc! {"a": {"$gte": 5, "$lt": 5.5}, "b": 1}, &["s1", "s2"]),
            (doc! {"b": 3}, &["s0", "s1", "s2"]),
            (doc! {"$or": [{"a": 5, "b": 1}, {"a": 7}]}, &["s1", "s0"]),
            (
                doc! {"$and": [{"$or": [{"a": 5}, {"a": 7}]}, {"b": 20}]},
                &["s2", "s0"],
            ),
        ],
    );
}

#[test]
fn descending_field() {
    // Encoded order: MaxKey, …, 100 | …, 0 | …, MinKey.
    let p = pattern(doc! {"a": -1});
    let map = table(&p, &[doc! {"a": 100}, doc! {"a": 0}], &["s0", "s1", "s2"]);
    check(
        &p,
        &map,
        &[
            (doc! {"a": 50}, &["s1"]),
            (doc! {"a": 100}, &["s1"]),
            (doc! {"a": 0}, &["s2"]),
            (doc! {"a": {"$gt": 100}}, &["s0"]),
            (doc! {"a": {"$gte": 100}}, &["s0", "s1"]),
            (doc! {"a": {"$gt": 0}}, &["s0", "s1"]),
            (doc! {"a": {"$lt": 0}}, &["s2"]),
            (doc! {"a": {"$lte": 0}}, &["s2"]),
            (doc! {"a": {"$lt": 50, "$gt": 10}}, &["s1"]),
            (doc! {"a": {"$in": [150, -3]}}, &["s0", "s2"]),
            (doc! {"a": "str"}, &["s0"]),
        ],
    );
    // Compound with a descending second field.
    let p = pattern(doc! {"a": 1, "b": -1});
    let splits = [doc! {"a": 1, "b": Bson::MaxKey}, doc! {"a": 1, "b": 5}];
    let map = table(&p, &splits, &["s0", "s1", "s2"]);
    check(
        &p,
        &map,
        &[
            (doc! {"a": 1}, &["s1", "s2"]),
            (doc! {"a": 1, "b": {"$gt": 5}}, &["s1"]),
            (doc! {"a": 1, "b": {"$gte": 5}}, &["s1", "s2"]),
            (doc! {"a": 1, "b": {"$lt": 5}}, &["s2"]),
            (doc! {"a": 0}, &["s0"]),
        ],
    );
}

/// Where `value`'s hash lives.
fn hashed_owner(p: &ShardKeyPattern, map: &ChunkMap, value: Bson) -> String {
    let key = p
        .encode_bound(&doc! {"h": Bson::Int64(hash_value(&value))})
        .unwrap();
    map.chunk_for(&key).shard.clone()
}

#[test]
fn hashed_key() {
    let p = pattern(doc! {"h": "hashed"});
    let third = i64::MAX / 3;
    let map = table(
        &p,
        &[doc! {"h": -third}, doc! {"h": third}],
        &["s0", "s1", "s2"],
    );
    let owners: Vec<(i32, String)> = (0..40)
        .map(|v| (v, hashed_owner(&p, &map, Bson::Int32(v))))
        .collect();
    for (v, owner) in &owners {
        assert_eq!(
            target_shards(&p, &map, &doc! {"h": v}),
            set(&[owner.as_str()])
        );
        // 5, 5.0 and NumberLong(5) hash alike.
        assert_eq!(
            target_shards(&p, &map, &doc! {"h": f64::from(*v)}),
            set(&[owner.as_str()])
        );
    }
    let (a, b) = (
        &owners[0],
        owners.iter().find(|(_, o)| *o != owners[0].1).unwrap(),
    );
    assert_eq!(
        target_shards(&p, &map, &doc! {"h": {"$in": [a.0, b.0]}}),
        set(&[a.1.as_str(), b.1.as_str()])
    );
    assert_eq!(target(&p, &doc! {"h": {"$gt": 5}}), Targets::All);
    assert_eq!(target(&p, &doc! {"h": {"$gt": 5, "$lt": 7}}), Targets::All);
    assert_eq!(
        target_shards(&p, &map, &doc! {"h": {"$gt": 0, "$eq": a.0}}),
        set(&[a.1.as_str()])
    );
    let null_owners: BTreeSet<String> = [Bson::Null, Bson::Undefined]
        .into_iter()
        .map(|v| hashed_owner(&p, &map, v))
        .collect();
    assert_eq!(
        target_shards(&p, &map, &doc! {"h": Bson::Null}),
        null_owners
    );
    // A hashed field after an equality prefix.
    let p = pattern(doc! {"a": 1, "h": "hashed"});
    let key = p.encode_bound(&doc! {"a": 2, "h": hash_value(&Bson::String("k".into()))});
    assert_eq!(
        target(&p, &doc! {"a": 2, "h": "k"}),
        Targets::Ranges(vec![KeyRange {
            min: key.clone().unwrap(),
            max: key.unwrap(),
            max_inclusive: true,
        }])
    );
}

#[test]
fn dotted_fields_and_parent_equality() {
    let p = pattern(doc! {"a.b": 1});
    let map = table(
        &p,
        &[doc! {"a.b": 0}, doc! {"a.b": 100}],
        &["s0", "s1", "s2"],
    );
    let all: &[&str] = &["s0", "s1", "s2"];
    check(
        &p,
        &map,
        &[
            (doc! {"a.b": 50}, &["s1"]),
            (doc! {"a": {"b": 50}}, &["s1"]),
            (doc! {"a": {"c": 1, "b": 150}}, &["s2"]),
            (doc! {"a": {"$eq": {"b": 150}}}, &["s2"]),
            (doc! {"a": {"$in": [{"b": 50}, {"b": 150}]}}, &["s1", "s2"]),
            // Missing a.b and a.b through a non-document are null.
            (doc! {"a": {"c": 150}}, &["s0"]),
            (doc! {"a": 7}, &["s0"]),
            (doc! {"a": Bson::Null}, &["s0"]),
            (doc! {"a": {"b": [1, 2]}}, all),
            (doc! {"a": {"$gt": {"b": 1}}}, all),
            (doc! {"a": {"b": 50}, "a.b": 150}, &[]),
            (doc! {"a.b.c": 5}, all),
            (doc! {"ab": 5}, all),
        ],
    );
}

#[test]
fn exact_keys() {
    let (p, _) = compound();
    let key = |d: Document| p.encode_bound(&d).unwrap();
    assert_eq!(
        exact_key(&p, &doc! {"a": 5, "b": 3}),
        Some(key(doc! {"a": 5, "b": 3}))
    );
    assert_eq!(
        exact_key(&p, &doc! {"b": {"$eq": 3}, "$and": [{"a": 5.0}], "c": 1}),
        Some(key(doc! {"a": 5, "b": 3}))
    );
    assert_eq!(
        exact_key(&p, &doc! {"a": Bson::Null, "b": 3}),
        Some(key(doc! {"a": Bson::Null, "b": 3}))
    );
    for filter in [
        doc! {"a": 5},
        doc! {"a": 5, "b": {"$in": [3]}},
        doc! {"a": 5, "b": {"$gte": 3, "$lte": 3}},
        doc! {"a": 5, "$or": [{"b": 3}]},
        doc! {"a": 5, "b": [3]},
        doc! {"a": 5, "b": 3, "$and": [{"b": 4}]},
    ] {
        assert_eq!(exact_key(&p, &filter), None, "{filter}");
    }
    let p = pattern(doc! {"h": "hashed"});
    assert_eq!(
        exact_key(&p, &doc! {"h": "k"}),
        p.encode_bound(&doc! {"h": hash_value(&Bson::String("k".into()))})
            .ok()
    );
    let p = pattern(doc! {"a.b": 1, "c": -1});
    assert_eq!(
        exact_key(&p, &doc! {"a": {"b": 2}, "c": "z"}),
        p.encode_bound(&doc! {"a.b": 2, "c": "z"}).ok()
    );
    let raw = bson::RawDocumentBuf::try_from(&doc! {"a": {"b": 2}, "c": "z"}).unwrap();
    assert_eq!(
        exact_key(&p, &doc! {"a.b": 2, "c": "z"}),
        p.extract_key(&raw).ok()
    );
}

#[test]
fn ranges_are_sorted_and_disjoint() {
    let p = pattern(doc! {"a": 1, "b": 1});
    let filter = doc! {"$or": [
        {"a": {"$in": [3, 1, 2]}, "b": {"$gt": 0}},
        {"a": {"$gte": 2, "$lt": 4}},
        {"a": 9, "b": 1},
    ]};
    let Targets::Ranges(ranges) = target(&p, &filter) else {
        panic!("expected ranges");
    };
    // [1|>0 …], then a in [2, 4) absorbing 2 and 3, then {9, 1}.
    assert_eq!(ranges.len(), 3);
    for pair in ranges.windows(2) {
        assert!(pair[0].max < pair[1].min);
    }
    let inside = |d: Document| {
        let k: KeyBytes = p.encode_bound(&d).unwrap();
        ranges.iter().any(|r| r.contains(&k))
    };
    assert!(inside(doc! {"a": 1, "b": 0.5}));
    assert!(!inside(doc! {"a": 1, "b": 0}));
    assert!(inside(doc! {"a": 3.5, "b": Bson::MinKey}));
    assert!(!inside(doc! {"a": 4, "b": Bson::MinKey}));
    assert!(inside(doc! {"a": 9, "b": 1}));
}

#[test]
fn large_products_fall_back_to_hulls() {
    let p = pattern(doc! {"a": 1, "b": 1});
    let many: Vec<i32> = (0..200).collect();
    let filter = doc! {"a": {"$in": many.clone()}, "b": {"$in": many}};
    let Targets::Ranges(ranges) = target(&p, &filter) else {
        panic!("expected ranges");
    };
    // 40,000 pairs exceed the cap: per a value, b's hull.
    assert_eq!(ranges.len(), 200);
    let k = p.encode_bound(&doc! {"a": 7, "b": 150}).unwrap();
    assert!(ranges.iter().any(|r| r.contains(&k)));
}

#[test]
fn deeply_nested_values_are_not_followed() {
    let p = pattern(doc! {"x": 1});
    let mut deep = Bson::Int32(1);
    for _ in 0..300 {
        deep = Bson::Document(doc! {"d": deep});
    }
    assert_eq!(target(&p, &doc! {"x": deep.clone()}), Targets::All);
    assert_eq!(target(&p, &doc! {"x": {"$in": [1, deep]}}), Targets::All);
    let mut filter = doc! {"x": 1};
    for _ in 0..300 {
        filter = doc! {"$and": [filter]};
    }
    assert_eq!(target(&p, &filter), Targets::All);
}
