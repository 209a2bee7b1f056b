//! A time-bounded fuzz target over the whole command path: generated
//! command documents (known and unknown names, arguments of random shapes
//! and BSON types), sometimes with bytes of the encoded frame flipped, sent
//! to a router in front of a sharded collection on two shards. Every
//! well-formed frame must get a reply (a panic in the router would drop the
//! connection instead), a malformed one a reply or a close, and the router
//! must keep serving. `FUZZ_SECS` bounds the run (default 15), `FUZZ_SEED`
//! replays one; a failing input is printed for a regression test.

mod support;

use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{admin, RawConn, TestCluster};

const NAMES: [&str; 30] = [
    "find",
    "insert",
    "update",
    "delete",
    "findAndModify",
    "aggregate",
    "count",
    "distinct",
    "getMore",
    "killCursors",
    "bulkWrite",
    "explain",
    "listCollections",
    "listIndexes",
    "createIndexes",
    "drop",
    "create",
    "shardCollection",
    "split",
    "mergeChunks",
    "hello",
    "isMaster",
    "usersInfo",
    "saslStart",
    "saslContinue",
    "listDatabases",
    "serverStatus",
    "getShardVersion",
    "updateZoneKeyRange",
    "frobnicate",
];
const FIELDS: [&str; 28] = [
    "filter",
    "query",
    "q",
    "u",
    "updates",
    "deletes",
    "documents",
    "pipeline",
    "sort",
    "projection",
    "limit",
    "skip",
    "batchSize",
    "ordered",
    "key",
    "middle",
    "bounds",
    "find",
    "cursor",
    "collection",
    "ops",
    "nsInfo",
    "update",
    "remove",
    "upsert",
    "new",
    "min",
    "max",
];
const DBS: [&str; 7] = ["fz", "admin", "config", "local", "other", "a.b", "x$y"];

fn value(rng: &mut StdRng, depth: u32) -> Bson {
    let pick = if depth > 3 {
        rng.random_range(0..8)
    } else {
        rng.random_range(0..12)
    };
    match pick {
        0 => Bson::Int32(rng.random_range(-3..300)),
        1 => Bson::Int64(rng.random()),
        2 => Bson::Double(rng.random_range(-1e3..1e3)),
        3 => Bson::String(["c", "fz.c", "", "$x", "k", "a.b.c"][rng.random_range(0..6)].into()),
        4 => Bson::Null,
        5 => Bson::Boolean(rng.random()),
        6 => [Bson::MinKey, Bson::MaxKey, Bson::Undefined][rng.random_range(0..3)].clone(),
        7 => Bson::Decimal128(bson::Decimal128::from_bytes([rng.random(); 16])),
        8 | 9 => {
            let n = rng.random_range(0..4);
            let mut d = Document::new();
            for _ in 0..n {
                let key = match rng.random_range(0..5) {
                    0 => [
                        "$in", "$gt", "$set", "$inc", "$or", "$and", "$match", "$group", "$sort",
                        "$eq",
                    ][rng.random_range(0..10)]
                    .to_owned(),
                    1 => FIELDS[rng.random_range(0..FIELDS.len())].to_owned(),
                    _ => ["k", "_id", "v", "a.b", "x"][rng.random_range(0..5)].to_owned(),
                };
                d.insert(key, value(rng, depth + 1));
            }
            Bson::Document(d)
        }
        _ => Bson::Array(
            (0..rng.random_range(0..4))
                .map(|_| value(rng, depth + 1))
                .collect(),
        ),
    }
}

fn command(rng: &mut StdRng) -> Document {
    let name = NAMES[rng.random_range(0..NAMES.len())];
    let mut d = Document::new();
    d.insert(
        name,
        if rng.random_bool(0.7) {
            Bson::String("c".into())
        } else {
            value(rng, 1)
        },
    );
    for _ in 0..rng.random_range(0..5) {
        d.insert(FIELDS[rng.random_range(0..FIELDS.len())], value(rng, 1));
    }
    d.insert("$db", DBS[rng.random_range(0..DBS.len())]);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_commands_never_crash_the_router() {
    let secs: u64 = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("fuzz seed {seed} (FUZZ_SEED={seed} replays it), {secs} s");
    // A frame whose length was flipped upward never completes: the router
    // cuts it off after the frame timeout, kept short here.
    let config = shardgate_router::RouterConfig {
        balancer: false,
        limits: shardgate_router::LimitsConfig {
            frame_timeout_secs: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let cluster = TestCluster::start_with(2, config, false).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "fz", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"addShardToZone": "shard0001", "zone": "hi"}).await;
    admin(&client, doc! {"updateZoneKeyRange": "fz.c", "min": {"k": 100}, "max": {"k": Bson::MaxKey}, "zone": "hi"}).await;
    admin(&client, doc! {"shardCollection": "fz.c", "key": {"k": 1}}).await;
    client
        .database("fz")
        .collection::<Document>("c")
        .insert_many((0..200).map(|i| doc! {"_id": i, "k": i, "v": i % 7}))
        .await
        .unwrap();

    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut conn = RawConn::connect(cluster.router.addr).await;
    let (mut sent, mut replied, mut closed) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        let cmd = command(&mut rng);
        let Ok(body) = cmd.to_vec() else { continue };
        let mut frame = shardgate_wire::OpMsg::from_body(body)
            .encode(sent as i32 + 1, 0)
            .to_vec();
        let mutated = rng.random_bool(0.2);
        if mutated {
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..frame.len());
                frame[at] = rng.random();
            }
        }
        sent += 1;
        let started = Instant::now();
        conn.send(&frame).await;
        match tokio::time::timeout(Duration::from_secs(40), conn.read_frame()).await {
            Ok(Some(_)) => {
                replied += 1;
                if started.elapsed() > Duration::from_millis(500) {
                    println!("slow ({:?}): {cmd}", started.elapsed());
                }
            }
            Ok(None) if mutated => closed += 1,
            Ok(None) => panic!("seed {seed}: the router dropped the connection on {cmd}"),
            Err(_) => panic!("seed {seed}: no reply within 40 s to {cmd} (mutated: {mutated})"),
        }
        if mutated {
            // A malformed frame's reply is followed by a close.
            conn = RawConn::connect(cluster.router.addr).await;
        }
    }
    println!("{sent} commands: {replied} replies, {closed} closed connections");
    assert!(sent > 20, "the fuzz ran too few commands: {sent}");
    // The router still serves.
    let mut fresh = RawConn::connect(cluster.router.addr).await;
    let pong = fresh.command(doc! {"ping": 1, "$db": "admin"}).await;
    assert_eq!(pong.get_f64("ok").unwrap(), 1.0);
}
