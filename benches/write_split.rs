//! Splitting a 1,000-document insert over 3 shards into per-shard batches:
//! route every document by its key (extract + chunk lookup), then plan the
//! batches, ordered and unordered, against a routing table of 1,000 chunks
//! round-robin over 3 shards.

use std::hint::black_box;

use bson::oid::ObjectId;
use bson::{doc, RawDocumentBuf};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_config_store::chunk_map::{ChunkMap, ChunkVersion, RoutingChunk};
use shardgate_config_store::shard_key::ShardKeyPattern;
use shardgate_router::write::plan::{plan, route_statement, WriteKind};

const CHUNKS: i64 = 1_000;
const WIDTH: i64 = 1_000;

fn routing_table(pattern: &ShardKeyPattern) -> ChunkMap {
    let mut bounds = vec![pattern.min_bytes()];
    bounds.extend((1..CHUNKS).map(|i| pattern.encode_bound(&doc! {"k": i * WIDTH}).unwrap()));
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

fn split(c: &mut Criterion) {
    let pattern = ShardKeyPattern::parse(&doc! {"k": 1}).unwrap();
    let map = routing_table(&pattern);
    // Keys scattered over every chunk; ~100-byte documents.
    let docs: Vec<RawDocumentBuf> = (0..1_000i64)
        .map(|i| {
            let d = doc! {"_id": ObjectId::new(), "k": (i * 7_919_993) % (CHUNKS * WIDTH), "name": format!("user{i:06}"), "n": i, "tags": ["a", "b"]};
            RawDocumentBuf::try_from(&d).unwrap()
        })
        .collect();
    let mut group = c.benchmark_group("write_split");
    group.throughput(Throughput::Elements(docs.len() as u64));
    for ordered in [false, true] {
        let name = if ordered {
            "insert_1000_ordered"
        } else {
            "insert_1000_unordered"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let routes: Vec<_> = docs
                    .iter()
                    .map(|d| route_statement(WriteKind::Insert, &pattern, &map, d))
                    .collect();
                let sizes: Vec<usize> = docs.iter().map(|d| d.as_bytes().len()).collect();
                black_box(plan(&routes, &sizes, ordered))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, split);
criterion_main!(benches);
