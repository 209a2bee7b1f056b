//! Shard-key extraction and chunk lookup: what routing one write costs.

use std::hint::black_box;

use bson::oid::ObjectId;
use bson::{doc, RawDocumentBuf};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardgate_config_store::chunk_map::{ChunkMap, ChunkVersion, RoutingChunk};
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};

/// A typical order document.
fn order() -> RawDocumentBuf {
    let order = doc! {
        "_id": ObjectId::from_bytes([0x65, 0x4f, 0x1a, 0x2b, 0, 1, 2, 3, 4, 5, 6, 7]),
        "customerId": "c0042",
        "orderId": 9_007_199_254_740_993i64,
        "status": "paid",
        "total": 129.95,
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
    };
    RawDocumentBuf::try_from(&order).unwrap()
}

fn encode_key(c: &mut Criterion) {
    let doc = order();
    let mut group = c.benchmark_group("encode_key");
    group.throughput(Throughput::Elements(1));
    for (name, pattern) in [
        (
            "compound_customerId_orderId",
            doc! {"customerId": 1, "orderId": 1},
        ),
        ("hashed_orderId", doc! {"orderId": "hashed"}),
        ("hashed_id_objectid", doc! {"_id": "hashed"}),
        ("double_total", doc! {"total": 1}),
    ] {
        let pattern = ShardKeyPattern::parse(&pattern).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| pattern.extract_key(black_box(&doc)).unwrap())
        });
    }
    group.finish();
}

/// A routing table of `n` chunks over `{x: 1}` split at random int64s.
fn routing_table(pattern: &ShardKeyPattern, n: usize, rng: &mut StdRng) -> ChunkMap {
    let mut splits: Vec<i64> = (1..n).map(|_| rng.random()).collect();
    splits.sort_unstable();
    splits.dedup();
    let mut bounds = vec![pattern.min_bytes()];
    bounds.extend(
        splits
            .iter()
            .map(|x| pattern.encode_bound(&doc! {"x": *x}).unwrap()),
    );
    bounds.push(pattern.max_bytes());
    let epoch = ObjectId::from_bytes([1; 12]);
    let chunks = bounds
        .windows(2)
        .enumerate()
        .map(|(i, pair)| RoutingChunk {
            min: pair[0].clone(),
            max: pair[1].clone(),
            shard: format!("shard{:02}", i % 16),
            version: ChunkVersion {
                epoch,
                major: 1,
                minor: i as u32,
            },
        })
        .collect();
    ChunkMap::for_pattern(pattern, chunks).unwrap()
}

fn chunk_map_lookup(c: &mut Criterion) {
    let pattern = ShardKeyPattern::parse(&doc! {"x": 1}).unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let map = routing_table(&pattern, 100_000, &mut rng);
    let keys: Vec<KeyBytes> = (0..4096)
        .map(|_| {
            pattern
                .encode_bound(&doc! {"x": rng.random::<i64>()})
                .unwrap()
        })
        .collect();
    let docs: Vec<RawDocumentBuf> = (0..4096)
        .map(|_| {
            RawDocumentBuf::try_from(&doc! {"x": rng.random::<i64>(), "v": "payload"}).unwrap()
        })
        .collect();

    let mut group = c.benchmark_group("chunk_map_lookup");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("100k_chunks", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            map.chunk_for(black_box(&keys[i])).version.minor
        })
    });
    let mut j = 0usize;
    group.bench_function("100k_chunks_extract_and_lookup", |b| {
        b.iter(|| {
            j = (j + 1) % docs.len();
            let key = pattern.extract_key(black_box(&docs[j])).unwrap();
            map.chunk_for(&key).version.minor
        })
    });
    group.finish();
}

criterion_group!(benches, encode_key, chunk_map_lookup);
criterion_main!(benches);
