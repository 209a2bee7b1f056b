//! The k-way merge of 8 sorted shard streams (documents/s), as a sorted
//! scatter-gather `find` runs it on the router.

use bson::{rawdoc, RawDocumentBuf};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_router::read::merge::{KWayMerge, SortSpec};

const STREAMS: usize = 8;
const PER_STREAM: usize = 2_000;

/// Eight streams of documents sorted by {total: -1, _id: 1}, interleaved.
fn streams() -> Vec<Vec<RawDocumentBuf>> {
    (0..STREAMS)
        .map(|s| {
            (0..PER_STREAM)
                .map(|i| {
                    let total = ((PER_STREAM - i) * STREAMS + s) as f64 / 4.0;
                    let id = (i * STREAMS + s) as i64;
                    rawdoc! {"_id": id, "customer": "c042", "total": total, "status": "paid", "$sortKey": [total, id]}
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let input = streams();
    let spec = SortSpec::parse(&bson::doc! {"total": -1, "_id": 1}).unwrap();
    let mut group = c.benchmark_group("kway_merge");
    group.throughput(Throughput::Elements((STREAMS * PER_STREAM) as u64));
    group.bench_function("8_streams_sorted_strip_sortkey", |b| {
        b.iter_batched(
            || input.clone(),
            |streams| {
                let mut merge = KWayMerge::new(STREAMS, Some(spec.clone()));
                for (i, s) in streams.into_iter().enumerate() {
                    merge.push(i, s, true);
                }
                let mut n = 0usize;
                while let Some(doc) = merge.pop_next() {
                    // The merge cut `$sortKey` out as each document arrived.
                    n += doc.as_bytes().len();
                }
                n
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
