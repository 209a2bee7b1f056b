//! Frame decode + routing-field extraction, the first thing every request pays.

use bson::doc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardgate_router::CommandInfo;
use shardgate_wire::{check_frame, DocumentSequence, Message, OpMsg};

/// A typical ~200-byte `find` as a driver sends it.
fn find_frame() -> bytes::Bytes {
    let body = doc! {
        "find": "orders",
        "filter": {"customer": "c042", "status": {"$in": ["paid", "shipped"]}},
        "sort": {"total": -1},
        "limit": 20,
        "$db": "shop",
        "lsid": {"id": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![7; 16] }},
    };
    OpMsg::from_body(body.to_vec().unwrap()).encode(1, 0)
}

/// A 100-document `insert` with the documents in a kind 1 sequence.
fn insert_frame() -> bytes::Bytes {
    let docs: Vec<u8> = (0..100)
        .flat_map(|i| doc! {"_id": i, "customer": format!("c{i:03}"), "total": i as f64 * 1.5, "status": "new"}.to_vec().unwrap())
        .collect();
    let body = doc! {"insert": "orders", "ordered": true, "$db": "shop"};
    OpMsg {
        flags: Default::default(),
        body: body.to_vec().unwrap().into(),
        sequences: vec![DocumentSequence {
            identifier: "documents".into(),
            documents: docs.into(),
        }],
    }
    .encode(2, 0)
}

/// What the router does with a frame before it routes it.
fn decode_and_extract(frame: &bytes::Bytes) -> usize {
    let len = check_frame(frame).unwrap().unwrap();
    let decoded = Message::decode(frame.slice(..len)).unwrap();
    let Message::Msg(msg) = decoded.message else {
        unreachable!()
    };
    let info = CommandInfo::parse(&msg).unwrap();
    info.name.len()
        + info.db.len()
        + info.collection.map_or(0, str::len)
        + info.filter.map_or(0, |f| f.as_bytes().len())
        + msg.sequences.len()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_and_extract");
    for (name, frame) in [
        ("find_200B", find_frame()),
        ("insert_100_docs", insert_frame()),
    ] {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &frame, |b, f| {
            b.iter(|| decode_and_extract(std::hint::black_box(f)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
