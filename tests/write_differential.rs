//! Differential test of the write path: generated write batches (inserts
//! with duplicate keys mid-batch, operator/replacement/pipeline updates,
//! upserts, deletes; ordered and unordered) run through the router on a
//! collection sharded over three shards and directly on one unsharded
//! server. Every reply's counts, upserted ids and write error indexes and
//! codes, and the final data, must be identical.
//!
//! The seed is printed; `WRITE_DIFF_SEED=<n>` replays one run.

mod support;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{admin, TestCluster};

/// Every document's shard key is a function of its `_id`, so upserts by
/// `{_id, k}` and duplicate `_id`s always meet on the same shard (mongos
/// does not enforce `_id` uniqueness across shards either).
fn key_of(id: i64) -> Bson {
    match id % 11 {
        0 => Bson::String(format!("s{id:03}")),
        5 => Bson::Null,
        _ => Bson::Int64((id * 37) % 300 - 50),
    }
}

fn document(rng: &mut StdRng, id: i64) -> Document {
    let mut d = doc! {"_id": id, "g": rng.random_range(0..5i32), "v": rng.random_range(0..100i32), "arr": [1, 2, 3]};
    if id % 13 == 0 {
        // Missing key field: routes as null.
    } else {
        d.insert("k", key_of(id));
    }
    if rng.random_bool(0.2) {
        d.insert("s", "text");
    }
    d
}

/// The filter pinning one document by `_id` and key.
fn by_key(id: i64) -> Document {
    if id % 13 == 0 {
        doc! {"_id": id, "k": Bson::Null}
    } else {
        doc! {"_id": id, "k": key_of(id)}
    }
}

fn range(rng: &mut StdRng, width: i64) -> Document {
    let a = rng.random_range(-60..260i64);
    doc! {"k": {"$gte": a, "$lt": a + rng.random_range(1..width)}}
}

fn update_statement(rng: &mut StdRng) -> Document {
    let id = rng.random_range(0..300i64);
    match rng.random_range(0..9) {
        0 => doc! {"q": range(rng, 120), "u": {"$inc": {"v": 1}}, "multi": true},
        1 => {
            doc! {"q": {"g": rng.random_range(0..5i32)}, "u": {"$set": {"w": rng.random_range(0..9i32)}}, "multi": true}
        }
        2 => doc! {"q": {"_id": id}, "u": {"$inc": {"v": 10}}},
        3 => doc! {"q": by_key(id), "u": {"$set": {"w": "one"}}, "hint": {"_id": 1}},
        4 => doc! {"q": by_key(id), "u": {"$set": {"up": true}}, "upsert": true},
        5 => {
            let mut r = doc! {"g": 9, "v": 0, "replaced": true};
            if id % 13 != 0 {
                r.insert("k", key_of(id));
            }
            doc! {"q": by_key(id), "u": r, "upsert": rng.random_bool(0.5)}
        }
        // $inc on a string: an error on documents that have `s`.
        6 => doc! {"q": {"_id": id}, "u": {"$inc": {"s": 1}}},
        7 => doc! {"q": by_key(id), "u": [{"$set": {"w": {"$add": ["$v", 1]}}}]},
        _ => doc! {
            "q": range(rng, 120),
            "u": {"$set": {"arr.$[e]": 0}},
            "arrayFilters": [{"e": {"$gt": 1}}],
            "multi": true,
        },
    }
}

fn delete_statement(rng: &mut StdRng) -> Document {
    let id = rng.random_range(0..300i64);
    match rng.random_range(0..4) {
        0 => doc! {"q": range(rng, 20), "limit": 0},
        1 => doc! {"q": {"_id": id}, "limit": 1},
        2 => doc! {"q": by_key(id), "limit": 1},
        _ => doc! {"q": {"g": rng.random_range(0..5i32), "v": {"$lt": 20}}, "limit": 0},
    }
}

/// One generated write command on collection `c`.
fn batch(rng: &mut StdRng) -> Document {
    let ordered = rng.random_bool(0.5);
    let n = rng.random_range(1..25);
    match rng.random_range(0..10) {
        0..=4 => {
            // Ids from a small space: duplicates with stored documents and
            // within the batch land mid-batch.
            let docs: Vec<Document> = (0..n)
                .map(|_| {
                    let id = rng.random_range(0..300i64);
                    document(rng, id)
                })
                .collect();
            doc! {"insert": "c", "documents": docs, "ordered": ordered}
        }
        5..=7 => {
            let updates: Vec<Document> = (0..n).map(|_| update_statement(rng)).collect();
            doc! {"update": "c", "updates": updates, "ordered": ordered}
        }
        _ => {
            let deletes: Vec<Document> = (0..n.min(6)).map(|_| delete_statement(rng)).collect();
            doc! {"delete": "c", "deletes": deletes, "ordered": ordered}
        }
    }
}

/// What must agree between the two replies.
fn summary(reply: &Document) -> Document {
    let num = |f: &str| match reply.get(f) {
        Some(Bson::Int32(i)) => *i as i64,
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Double(d)) => *d as i64,
        _ => -1,
    };
    let errors: Vec<Bson> = reply
        .get_array("writeErrors")
        .map(|a| {
            a.iter()
                .filter_map(Bson::as_document)
                .map(|e| {
                    Bson::Document(doc! {"index": e.get_i32("index").unwrap_or(-1), "code": e.get_i32("code").unwrap_or(-1)})
                })
                .collect()
        })
        .unwrap_or_default();
    let upserted = reply.get_array("upserted").cloned().unwrap_or_default();
    doc! {
        "ok": reply.get("ok").and_then(Bson::as_f64).unwrap_or(-1.0),
        "n": num("n"),
        "nModified": num("nModified"),
        "upserted": upserted,
        "writeErrors": errors,
    }
}

async fn all(coll: &mongodb::Collection<Document>) -> Vec<Document> {
    coll.find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_write_batches_match_an_unsharded_server() {
    let seed: u64 = std::env::var("WRITE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("write differential seed: {seed} (WRITE_DIFF_SEED={seed} replays it)");
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    // The baseline: one more server, not in the cluster.
    let baseline = support::start_shards(&cluster.dir().join("baseline"), 1, false).await;
    let baseline_shard = &baseline[0];
    admin(
        &client,
        doc! {"enableSharding": "wd", "primaryShard": "shard0000"},
    )
    .await;
    for (shard, zone, min, max) in [
        ("shard0001", "mid", Bson::Int64(0), Bson::Int64(120)),
        ("shard0002", "hi", Bson::Int64(120), Bson::MaxKey),
    ] {
        admin(&client, doc! {"addShardToZone": shard, "zone": zone}).await;
        admin(
            &client,
            doc! {"updateZoneKeyRange": "wd.c", "min": {"k": min}, "max": {"k": max}, "zone": zone},
        )
        .await;
    }
    admin(&client, doc! {"shardCollection": "wd.c", "key": {"k": 1}}).await;
    for middle in [
        Bson::Int64(60),
        Bson::Int64(200),
        Bson::String("s100".into()),
    ] {
        admin(&client, doc! {"split": "wd.c", "middle": {"k": middle}}).await;
    }
    let routed = client.database("wd");
    let direct = support::direct_client(baseline_shard).await.database("wd");
    direct
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"k": 1}, "name": "k_1"}]})
        .await
        .unwrap();

    let mut rng = StdRng::seed_from_u64(seed);
    let batches = 120;
    let mut errors_seen = 0;
    let mut upserts_seen = 0;
    for i in 0..batches {
        let cmd = batch(&mut rng);
        let via_router = routed.run_command(cmd.clone()).await;
        let via_direct = direct.run_command(cmd.clone()).await;
        let (a, b) = match (via_router, via_direct) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => panic!("seed {seed} batch {i}: {cmd}\nrouter: {a:?}\ndirect: {b:?}"),
        };
        let (sa, sb) = (summary(&a), summary(&b));
        assert_eq!(
            sa, sb,
            "seed {seed} batch {i}: replies differ for {cmd}\nrouter: {a}\ndirect: {b}"
        );
        errors_seen += sa.get_array("writeErrors").map(|e| e.len()).unwrap_or(0);
        upserts_seen += sa.get_array("upserted").map(|e| e.len()).unwrap_or(0);
        if i % 20 == 19 {
            let (x, y) = (
                all(&routed.collection("c")).await,
                all(&direct.collection("c")).await,
            );
            assert_eq!(x, y, "seed {seed}: data differs after batch {i}");
        }
    }
    let (x, y) = (
        all(&routed.collection("c")).await,
        all(&direct.collection("c")).await,
    );
    assert_eq!(x, y, "seed {seed}: final data differs");
    println!(
        "{batches} batches: {} documents at the end, {errors_seen} write errors, {upserts_seen} upserts",
        x.len()
    );
    assert!(
        x.len() > 50,
        "seed {seed}: the data set stayed small ({})",
        x.len()
    );
    assert!(
        errors_seen > 10,
        "seed {seed}: few write errors ({errors_seen})"
    );
    assert!(
        upserts_seen > 5,
        "seed {seed}: few upserts ({upserts_seen})"
    );
    // Every shard got a share.
    for shard in &cluster.shards {
        let n = support::direct_client(shard)
            .await
            .database("wd")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert!(n > 0, "seed {seed}: {} holds nothing", shard.address());
    }
}
