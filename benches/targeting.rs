//! Query targeting: from a filter to the shards a read must reach, against
//! a routing table of 1,000 chunks over 3 shards.

use std::hint::black_box;

use bson::oid::ObjectId;
use bson::{doc, Document};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_config_store::chunk_map::{ChunkMap, ChunkVersion, RoutingChunk};
use shardgate_config_store::shard_key::ShardKeyPattern;
use shardgate_router::targeting::target_shards;

const CHUNKS: i64 = 1_000;
/// Keys per chunk: chunk `i` holds `[i * WIDTH, (i + 1) * WIDTH)`.
const WIDTH: i64 = 1_000;

/// 1,000 chunks split at `split(i)` for `i` in 1..1000, round-robin over
/// three shards.
fn routing_table(pattern: &ShardKeyPattern, split: impl Fn(i64) -> Document) -> ChunkMap {
    let mut bounds = vec![pattern.min_bytes()];
    bounds.extend((1..CHUNKS).map(|i| pattern.encode_bound(&split(i)).unwrap()));
    bounds.push(pattern.max_bytes());
    let epoch = ObjectId::from_bytes([1; 12]);
    let chunks = bounds
        .windows(2)
        .enumerate()
        .map(|(i, pair)| RoutingChunk {
            min: pair[0].clone(),
            max: pair[1].clone(),
            shard: format!("shard{}", i % 3),
            version: ChunkVersion {
                epoch,
                major: 1,
                minor: i as u32,
            },
        })
        .collect();
    ChunkMap::for_pattern(pattern, chunks).unwrap()
}

fn targeting(c: &mut Criterion) {
    let single = ShardKeyPattern::parse(&doc! {"x": 1}).unwrap();
    let single_map = routing_table(&single, |i| doc! {"x": i * WIDTH});
    let compound = ShardKeyPattern::parse(&doc! {"a": 1, "b": 1}).unwrap();
    // Ten chunks per `a` value, split on `b`.
    let compound_map = routing_table(&compound, |i| doc! {"a": i / 10, "b": (i % 10) * WIDTH});
    let in_values: Vec<i64> = (0..10).map(|i| i * 97_003 + 11).collect();
    let cases = [
        ("equality", &single, &single_map, doc! {"x": 123_456i64}),
        ("compound_prefix", &compound, &compound_map, doc! {"a": 42}),
        (
            "in_10",
            &single,
            &single_map,
            doc! {"x": {"$in": in_values}},
        ),
        (
            "range_10_chunks",
            &single,
            &single_map,
            doc! {"x": {"$gte": 500_500i64, "$lt": 510_500i64}},
        ),
    ];
    let mut group = c.benchmark_group("targeting");
    group.throughput(Throughput::Elements(1));
    for (name, pattern, map, filter) in &cases {
        assert!(!target_shards(pattern, map, filter).is_empty());
        group.bench_function(*name, |b| {
            b.iter(|| target_shards(pattern, map, black_box(filter)))
        });
    }
    group.finish();
}

criterion_group!(benches, targeting);
criterion_main!(benches);
