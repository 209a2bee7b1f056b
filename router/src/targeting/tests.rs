//! Table tests of targeting against real routing tables: a single
//! ascending field (helpers shared with `key_tests` and `proptests`).

use std::collections::BTreeSet;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document, Regex};
use shardgate_config_store::chunk_map::{ChunkMap, ChunkVersion, RoutingChunk};
use shardgate_config_store::shard_key::ShardKeyPattern;

use super::{target, target_shards, KeyRange, Targets};

/// A routing table over `pattern`: chunk `i` starts at `splits[i - 1]`
/// (the global minimum for the first) and lives on `shards[i]`.
pub(crate) fn table(pattern: &ShardKeyPattern, splits: &[Document], shards: &[&str]) -> ChunkMap {
    assert_eq!(splits.len() + 1, shards.len());
    let mut bounds = vec![pattern.min_bytes()];
    bounds.extend(splits.iter().map(|b| pattern.encode_bound(b).unwrap()));
    bounds.push(pattern.max_bytes());
    let chunks = bounds
        .windows(2)
        .zip(shards)
        .map(|(pair, shard)| RoutingChunk {
            min: pair[0].clone(),
            max: pair[1].clone(),
            shard: (*shard).to_owned(),
            version: ChunkVersion {
                epoch: ObjectId::from_bytes([3; 12]),
                major: 1,
                minor: 0,
            },
        })
        .collect();
    ChunkMap::for_pattern(pattern, chunks).unwrap()
}

pub(crate) fn pattern(key: Document) -> ShardKeyPattern {
    ShardKeyPattern::parse(&key).unwrap()
}

pub(super) fn set(shards: &[&str]) -> BTreeSet<String> {
    shards.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) fn check(p: &ShardKeyPattern, map: &ChunkMap, cases: &[(Document, &[&str])]) {
    for (filter, expected) in cases {
        assert_eq!(
            target_shards(p, map, filter),
            set(expected),
            "filter {filter}: targets {:?}",
            target(p, filter)
        );
    }
}

/// `{x: 1}`: [MinKey, 0) s0, [0, 100) s1, [100, 200) s2, [200, "m") s0,
/// ["m", MaxKey) s1.
fn single() -> (ShardKeyPattern, ChunkMap) {
    let p = pattern(doc! {"x": 1});
    let splits = [
        doc! {"x": 0},
        doc! {"x": 100},
        doc! {"x": 200},
        doc! {"x": "m"},
    ];
    let map = table(&p, &splits, &["s0", "s1", "s2", "s0", "s1"]);
    (p, map)
}

#[test]
fn single_field_equality_in_and_ranges() {
    let (p, map) = single();
    check(
        &p,
        &map,
        &[
            (doc! {"x": 50}, &["s1"]),
            (doc! {"x": 50.0}, &["s1"]),
            (doc! {"x": {"$eq": 150i64}}, &["s2"]),
            (doc! {"x": {"$in": [50, 150]}}, &["s1", "s2"]),
            (doc! {"x": {"$in": [50, 60]}}, &["s1"]),
            (doc! {"x": {"$gte": 10, "$lt": 20}}, &["s1"]),
            (doc! {"x": {"$gte": 50, "$lte": 150}}, &["s1", "s2"]),
            (doc! {"x": {"$gt": 10, "$lt": 90, "$ne": 60}}, &["s1"]),
            (doc! {"x": {"$gt": 250}}, &["s0"]),
            (doc! {"x": {"$gt": "a"}}, &["s0", "s1"]),
            (doc! {"x": {"$lt": "m"}}, &["s0"]),
            (doc! {"x": {"$gte": "m"}}, &["s1"]),
            (doc! {"x": "zebra", "y": 3}, &["s1"]),
            (doc! {"x": {"$gt": Bson::MinKey}}, &["s0", "s1", "s2"]),
            (doc! {"x": {"$lt": Bson::MinKey}}, &[]),
        ],
    );
}

#[test]
fn single_field_boundaries() {
    let (p, map) = single();
    check(
        &p,
        &map,
        &[
            // {$gte: b} with b a chunk min leaves out the chunk before b.
            (doc! {"x": {"$gte": 100}}, &["s2", "s0"]),
            (doc! {"x": {"$gte": 100, "$lt": 200}}, &["s2"]),
            (doc! {"x": {"$gt": 100, "$lt": 200}}, &["s2"]),
            // {$lt: b} leaves out the chunk starting at b.
            (doc! {"x": {"$lt": 0}}, &["s0"]),
            (doc! {"x": {"$lt": 100}}, &["s0", "s1"]),
            (doc! {"x": {"$gte": 0, "$lt": 100}}, &["s1"]),
            (doc! {"x": {"$lte": 100, "$gt": 99.5}}, &["s1", "s2"]),
            (doc! {"x": 100}, &["s2"]),
            (doc! {"x": 0}, &["s1"]),
        ],
    );
}

#[test]
fn single_field_logic_and_untargetable() {
    let (p, map) = single();
    let all: &[&str] = &["s0", "s1", "s2"];
    check(
        &p,
        &map,
        &[
            (
                doc! {"$and": [{"x": {"$gte": 50}}, {"x": {"$lt": 150}}]},
                &["s1", "s2"],
            ),
            (
                doc! {"$and": [{"x": {"$gte": 150}}, {"x": {"$lt": 50}}]},
                &[],
            ),
            (doc! {"$or": [{"x": 50}, {"x": 150}]}, &["s1", "s2"]),
            (doc! {"$or": [{"x": 50}, {"y": 1}]}, all),
            (
                doc! {"$or": [{"x": 50}, {"$and": [{"x": 150}, {"$or": [{"y": 1}]}]}]},
                &["s1", "s2"],
            ),
            (doc! {"$or": [{"x": 50}, {"$or": [{"x": {"$ne": 3}}]}]}, all),
            (doc! {"x": 50, "$or": [{"x": 150}, {"x": 50.0}]}, &["s1"]),
            (doc! {"y": 5}, all),
            (doc! {}, all),
            (doc! {"x": {"$ne": 5}}, all),
            (doc! {"x": {"$nin": [5]}}, all),
            (doc! {"x": {"$exists": true}}, all),
            (doc! {"x": {"$not": {"$gt": 5}}}, all),
            (doc! {"$nor": [{"x": 5}]}, all),
            (doc! {"x": [50, 150]}, all),
            (doc! {"x": {"$in": [50, [150]]}}, all),
            (
                doc! {"x": Regex {
                    pattern: "^a".to_owned().try_into().unwrap(),
                    options: String::new().try_into().unwrap(),
                }},
                all,
            ),
            (doc! {"x": {"$regex": "^a"}}, all),
            (doc! {"x": {"$frob": 1}}, all),
            (doc! {"$expr": {"$eq": ["$x", 5]}}, all),
            (doc! {"x.y": 5}, all),
        ],
    );
}

#[test]
fn null_and_empty_in() {
    let (p, map) = single();
    check(
        &p,
        &map,
        &[
            (doc! {"x": Bson::Null}, &["s0"]),
            (doc! {"x": {"$in": [Bson::Null, 150]}}, &["s0", "s2"]),
            (doc! {"x": {"$gte": Bson::Null}}, &["s0"]),
            (doc! {"x": {"$in": []}}, &[]),
            (doc! {"x": {"$in": []}, "y": 1}, &[]),
        ],
    );
    assert_eq!(
        target(&p, &doc! {"x": {"$in": []}}),
        Targets::Ranges(vec![])
    );
    let point = |v: Bson| p.encode_bound(&doc! {"x": v}).unwrap();
    assert_eq!(
        target(&p, &doc! {"x": 50}),
        Targets::Ranges(vec![KeyRange {
            min: point(Bson::Int32(50)),
            max: point(Bson::Int32(50)),
            max_inclusive: true,
        }])
    );
    // Null equality: null, and undefined for servers before 8.0.
    assert_eq!(
        target(&p, &doc! {"x": Bson::Null}),
        Targets::Ranges(vec![
            KeyRange {
                min: point(Bson::Undefined),
                max: point(Bson::Undefined),
                max_inclusive: true,
            },
            KeyRange {
                min: point(Bson::Null),
                max: point(Bson::Null),
                max_inclusive: true,
            },
        ])
    );
    assert_eq!(target(&p, &doc! {"y": 1}), Targets::All);
}
