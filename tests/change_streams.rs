//! Change streams through the router: `watch()` on a sharded collection,
//! a database and the cluster sees every acknowledged write exactly once,
//! in cluster-time order, while chunks move; resumes miss and repeat
//! nothing; migrations' copies and range deletions never show.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document, Timestamp};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use support::{admin, TestCluster};

type Stream = ChangeStream<ChangeStreamEvent<Document>>;

/// What a user compares: namespace, operation and `_id` of each event.
type Seen = (String, String, i64);

/// `db.c` sharded on `{k: 1}` with chunks [MinKey, 1000) on shard0000,
/// [1000, 2000) on shard0001 and [2000, MaxKey) on shard0002 (all on
/// shard0000 when `spread` is false).
async fn sharded(client: &mongodb::Client, db: &str, spread: bool) {
    admin(
        client,
        doc! {"enableSharding": db, "primaryShard": "shard0000"},
    )
    .await;
    let ns = format!("{db}.c");
    admin(client, doc! {"shardCollection": &ns, "key": {"k": 1}}).await;
    for at in [1000, 2000] {
        admin(client, doc! {"split": &ns, "middle": {"k": at}}).await;
    }
    if spread {
        move_chunk(client, &ns, 1500, "shard0001").await;
        move_chunk(client, &ns, 2500, "shard0002").await;
    }
}

async fn move_chunk(client: &mongodb::Client, ns: &str, k: i64, to: &str) {
    admin(
        client,
        doc! {"moveChunk": ns, "find": {"k": k}, "to": to, "_waitForDelete": true},
    )
    .await;
}

fn op_name(op: &OperationType) -> String {
    match op {
        OperationType::Insert => "insert",
        OperationType::Update => "update",
        OperationType::Replace => "replace",
        OperationType::Delete => "delete",
        OperationType::Drop => "drop",
        OperationType::Invalidate => "invalidate",
        _ => "other",
    }
    .to_owned()
}

fn seen(e: &ChangeStreamEvent<Document>) -> Seen {
    let ns =
        e.ns.as_ref()
            .map(|n| format!("{}.{}", n.db, n.coll.clone().unwrap_or_default()))
            .unwrap_or_default();
    let id = e
        .document_key
        .as_ref()
        .and_then(|k| k.get("_id"))
        .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
        .unwrap_or(-1);
    (ns, op_name(&e.operation_type), id)
}

/// Reads events until `n` arrived (then one more round, which must bring
/// nothing) or `within` passed.
async fn read(stream: &mut Stream, n: usize, within: Duration) -> Vec<ChangeStreamEvent<Document>> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(e) = stream.next_if_any().await.expect("change stream getMore") {
            out.push(e);
        }
    }
    for _ in 0..2 {
        while let Some(e) = stream.next_if_any().await.expect("change stream getMore") {
            out.push(e);
        }
    }
    out
}

/// Asserts the events are in cluster-time order.
fn assert_time_order(events: &[ChangeStreamEvent<Document>]) {
    let times: Vec<Timestamp> = events.iter().filter_map(|e| e.cluster_time).collect();
    assert_eq!(times.len(), events.len(), "every event has a clusterTime");
    for w in times.windows(2) {
        assert!(w[0] <= w[1], "events out of cluster-time order: {w:?}");
    }
}

/// Asserts `events` are exactly `writes` (each once, and per document in
/// the order acknowledged).
fn assert_same(events: &[ChangeStreamEvent<Document>], writes: &[Seen]) {
    let got: Vec<Seen> = events.iter().map(seen).collect();
    let count = |v: &[Seen]| {
        let mut m: BTreeMap<Seen, usize> = BTreeMap::new();
        for s in v {
            *m.entry(s.clone()).or_default() += 1;
        }
        m
    };
    let (g, w) = (count(&got), count(writes));
    let extra: Vec<_> = g.iter().filter(|(k, n)| w.get(*k) != Some(n)).collect();
    let missing: Vec<_> = w.iter().filter(|(k, n)| g.get(*k) != Some(n)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "events differ from acknowledged writes: got {extra:?}, expected {missing:?}"
    );
    let per_doc = |v: &[Seen]| {
        let mut m: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
        for (ns, op, id) in v {
            m.entry((ns.clone(), *id)).or_default().push(op.clone());
        }
        m
    };
    assert_eq!(per_doc(&got), per_doc(writes), "per-document order");
}

/// One write of the load: insert a key not present, else update, replace
/// or delete it (by shard key); returns what was acknowledged.
async fn write_one(
    coll: &mongodb::Collection<Document>,
    present: &mut BTreeSet<i64>,
    i: i64,
) -> Seen {
    let ns = coll.namespace().to_string();
    let k = (i * 7919) % 3000;
    if present.insert(k) {
        coll.insert_one(doc! {"_id": k, "k": k, "v": 0})
            .await
            .unwrap();
        return (ns, "insert".into(), k);
    }
    let op = match i % 3 {
        0 => {
            coll.update_one(doc! {"k": k}, doc! {"$inc": {"v": 1}})
                .await
                .unwrap();
            "update"
        }
        1 => {
            coll.replace_one(doc! {"k": k}, doc! {"_id": k, "k": k, "v": -1})
                .await
                .unwrap();
            "replace"
        }
        _ => {
            coll.delete_one(doc! {"k": k}).await.unwrap();
            present.remove(&k);
            "delete"
        }
    };
    (ns, op.into(), k)
}

/// Writes on `coll` until `stop`, returning the acknowledged writes.
fn writer(
    coll: mongodb::Collection<Document>,
    mut present: BTreeSet<i64>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            acked.push(write_one(&coll, &mut present, i).await);
        }
        acked
    })
}

/// 300 documents present before any stream opens (moved by migrations).
async fn base_docs(coll: &mongodb::Collection<Document>) -> BTreeSet<i64> {
    let keys: BTreeSet<i64> = (0..300).map(|i| i * 10).collect();
    let docs: Vec<Document> = keys
        .iter()
        .map(|k| doc! {"_id": k, "k": k, "v": 0})
        .collect();
    coll.insert_many(docs).await.unwrap();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_stream_sees_each_write_once_in_order_while_chunks_move() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    sharded(&client, "cs", true).await;
    let coll = client.database("cs").collection::<Document>("c");
    let present = base_docs(&coll).await;
    let mut stream = coll
        .watch()
        .max_await_time(Duration::from_millis(200))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(coll.clone(), present, stop.clone());
    // Six moves, each chunk to another shard and on, under the load.
    let moves = [
        (500, "shard0001"),
        (1500, "shard0002"),
        (2500, "shard0000"),
        (500, "shard0002"),
        (1500, "shard0000"),
        (2500, "shard0001"),
    ];
    for (k, to) in moves {
        move_chunk(&client, "cs.c", k, to).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = writes.await.unwrap();
    assert!(acked.len() > 100, "the load wrote {} times", acked.len());
    let events = read(&mut stream, acked.len(), Duration::from_secs(30)).await;
    assert_same(&events, &acked);
    assert_time_order(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_stream_misses_and_repeats_nothing() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    sharded(&client, "cr", true).await;
    let coll = client.database("cr").collection::<Document>("c");
    let mut present = BTreeSet::new();
    let watcher = cluster.client().await;
    let mut stream = watcher
        .database("cr")
        .collection::<Document>("c")
        .watch()
        .max_await_time(Duration::from_millis(200))
        .await
        .unwrap();
    let mut acked = Vec::new();
    for i in 1..=60 {
        acked.push(write_one(&coll, &mut present, i).await);
    }
    let mut first = Vec::new();
    while first.len() < 25 {
        if let Some(e) = stream.next_if_any().await.unwrap() {
            first.push(e);
        }
    }
    let token: ResumeToken = first.last().unwrap().id.clone();
    // The client goes away with the stream open.
    drop(stream);
    watcher.shutdown().await;
    // More writes and a migration while nobody watches.
    for i in 61..=120 {
        acked.push(write_one(&coll, &mut present, i).await);
    }
    move_chunk(&client, "cr.c", 500, "shard0002").await;
    for i in 121..=150 {
        acked.push(write_one(&coll, &mut present, i).await);
    }
    let mut resumed = coll
        .watch()
        .resume_after(token)
        .max_await_time(Duration::from_millis(200))
        .await
        .unwrap();
    let rest = read(&mut resumed, acked.len() - 25, Duration::from_secs(30)).await;
    // Together exactly the writes: nothing missed, nothing repeated (the
    // first 25 by cluster time need not be the first 25 acknowledged, as
    // the shards' clocks are their own).
    let all: Vec<_> = first.into_iter().chain(rest).collect();
    assert_same(&all, &acked);
    assert_time_order(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_and_cluster_streams_see_both_collections() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    sharded(&client, "da", true).await;
    admin(
        &client,
        doc! {"enableSharding": "db2", "primaryShard": "shard0001"},
    )
    .await;
    let sharded_coll = client.database("da").collection::<Document>("c");
    let plain = client.database("db2").collection::<Document>("u");
    plain.insert_one(doc! {"_id": -1, "k": -1}).await.unwrap();
    let wait = Duration::from_millis(200);
    let mut db_stream = client
        .database("da")
        .watch()
        .max_await_time(wait)
        .await
        .unwrap();
    let mut db2_stream = client
        .database("db2")
        .watch()
        .max_await_time(wait)
        .await
        .unwrap();
    let mut all_stream = client.watch().max_await_time(wait).await.unwrap();
    let (mut in_a, mut in_b) = (BTreeSet::new(), BTreeSet::new());
    let (mut acked_a, mut acked_b) = (Vec::new(), Vec::new());
    for i in 1..=120 {
        acked_a.push(write_one(&sharded_coll, &mut in_a, i).await);
        if i % 2 == 0 {
            acked_b.push(write_one(&plain, &mut in_b, i).await);
        }
        if i == 60 {
            move_chunk(&client, "da.c", 2500, "shard0001").await;
        }
    }
    let both: Vec<Seen> = acked_a.iter().chain(&acked_b).cloned().collect();
    let a = read(&mut db_stream, acked_a.len(), Duration::from_secs(20)).await;
    let b = read(&mut db2_stream, acked_b.len(), Duration::from_secs(20)).await;
    let all = read(&mut all_stream, both.len(), Duration::from_secs(20)).await;
    assert_same(&a, &acked_a);
    assert_same(&b, &acked_b);
    assert_same(&all, &both);
    for events in [&a, &b, &all] {
        assert_time_order(events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_copies_and_range_deletions_never_show() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    // Every chunk on shard0000: the streams start on it alone.
    sharded(&client, "mt", false).await;
    let coll = client.database("mt").collection::<Document>("c");
    base_docs(&coll).await;
    let wait = Duration::from_millis(200);
    let mut coll_stream = coll.watch().max_await_time(wait).await.unwrap();
    let mut db_stream = client
        .database("mt")
        .watch()
        .max_await_time(wait)
        .await
        .unwrap();
    let mut all_stream = client.watch().max_await_time(wait).await.unwrap();
    // Copies to shards new to the collection, range deletions on the
    // sources, and back.
    move_chunk(&client, "mt.c", 1500, "shard0001").await;
    move_chunk(&client, "mt.c", 2500, "shard0002").await;
    move_chunk(&client, "mt.c", 1500, "shard0002").await;
    // One write on each shard now owning a chunk.
    let mut acked = Vec::new();
    for k in [5, 1505, 2505] {
        coll.insert_one(doc! {"_id": 5000 + k, "k": k})
            .await
            .unwrap();
        acked.push(("mt.c".to_owned(), "insert".to_owned(), 5000 + k));
    }
    for stream in [&mut coll_stream, &mut db_stream, &mut all_stream] {
        let events = read(stream, acked.len(), Duration::from_secs(20)).await;
        assert_same(&events, &acked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_at_operation_time_and_invalidate_on_drop() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    sharded(&client, "st", true).await;
    let coll = client.database("st").collection::<Document>("c");
    let wait = Duration::from_millis(200);
    let mut stream = coll.watch().max_await_time(wait).await.unwrap();
    let (mut present, mut acked) = (BTreeSet::new(), Vec::new());
    for i in 1..=20 {
        acked.push(write_one(&coll, &mut present, i).await);
    }
    // The shards' clocks tick in seconds: the later writes are a second on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 21..=40 {
        acked.push(write_one(&coll, &mut present, i).await);
    }
    let events = read(&mut stream, acked.len(), Duration::from_secs(20)).await;
    assert_same(&events, &acked);
    let later = events[20].cluster_time.unwrap();
    let mut from = coll
        .watch()
        .start_at_operation_time(later)
        .max_await_time(wait)
        .await
        .unwrap();
    let replay = read(&mut from, 20, Duration::from_secs(20)).await;
    assert_same(&replay, &acked[20..]);

    coll.drop().await.unwrap();
    let mut ends = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match stream.next_if_any().await.unwrap() {
            Some(e) => ends.push(op_name(&e.operation_type)),
            None if !stream.is_alive() => break,
            None => {}
        }
    }
    assert_eq!(ends, ["drop", "invalidate"]);
    assert!(!stream.is_alive(), "the cursor closes after the invalidate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_judge_malformed_change_streams() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    sharded(&client, "bad", true).await;
    let db = client.database("bad");
    let not_first =
        doc! {"aggregate": "c", "pipeline": [{"$match": {}}, {"$changeStream": {}}], "cursor": {}};
    let e = db.run_command(not_first).await.unwrap_err();
    assert_eq!(support::error_code(&e), 40602);
    let bad_token = doc! {"aggregate": "c", "pipeline": [{"$changeStream": {"resumeAfter": {"_data": "00"}}}], "cursor": {}};
    let e = db.run_command(bad_token).await.unwrap_err();
    assert_eq!(support::error_code(&e), 260);
    // A cluster-wide stream only on admin, as mongod says.
    let on_db = doc! {"aggregate": 1, "pipeline": [{"$changeStream": {"allChangesForCluster": true}}], "cursor": {}};
    let e = db.run_command(on_db).await.unwrap_err();
    assert_eq!(support::error_code(&e), 73);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn options_and_later_stages_reach_the_shards() {
    use mongodb::options::FullDocumentType;
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    sharded(&client, "po", true).await;
    let coll = client.database("po").collection::<Document>("c");
    let mut stream = coll
        .watch()
        .pipeline([
            doc! {"$match": {"operationType": "update"}},
            doc! {"$project": {"updateDescription": 0}},
        ])
        .full_document(FullDocumentType::UpdateLookup)
        .max_await_time(Duration::from_millis(200))
        .await
        .unwrap();
    let keys = [10i64, 1010, 2010];
    for k in keys {
        coll.insert_one(doc! {"_id": k, "k": k, "v": 0})
            .await
            .unwrap();
    }
    for k in keys {
        coll.update_one(doc! {"k": k}, doc! {"$set": {"v": k}})
            .await
            .unwrap();
    }
    let events = read(&mut stream, 3, Duration::from_secs(20)).await;
    let mut got: Vec<(i64, i64)> = events
        .iter()
        .map(|e| {
            assert_eq!(e.operation_type, OperationType::Update);
            assert!(e.update_description.is_none(), "$project ran");
            let full = e.full_document.as_ref().expect("updateLookup");
            (full.get_i64("k").unwrap(), full.get_i64("v").unwrap())
        })
        .collect();
    got.sort();
    assert_eq!(got, keys.iter().map(|k| (*k, *k)).collect::<Vec<_>>());
    // The read concern reaches the shards too, which refuse 'local'.
    let local = client.database("po").collection_with_options::<Document>(
        "c",
        mongodb::options::CollectionOptions::builder()
            .read_concern(mongodb::options::ReadConcern::local())
            .build(),
    );
    let e = local.watch().await.unwrap_err();
    assert_eq!(support::error_code(&e), 72, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_after_an_invalidate_watches_the_new_collection() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "sa", "primaryShard": "shard0001"},
    )
    .await;
    let coll = client.database("sa").collection::<Document>("u");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let wait = Duration::from_millis(200);
    let mut stream = coll.watch().max_await_time(wait).await.unwrap();
    coll.drop().await.unwrap();
    let events = read(&mut stream, 2, Duration::from_secs(20)).await;
    let ops: Vec<String> = events.iter().map(|e| op_name(&e.operation_type)).collect();
    assert_eq!(ops, ["drop", "invalidate"]);
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let mut after = coll
        .watch()
        .start_after(events[1].id.clone())
        .max_await_time(wait)
        .await
        .unwrap();
    let events = read(&mut after, 1, Duration::from_secs(20)).await;
    assert_eq!(
        events.iter().map(seen).collect::<Vec<_>>(),
        [("sa.u".to_owned(), "insert".to_owned(), 2)]
    );
}

/// With `showExpandedEvents`, `shardCollection`, `refineCollectionShardKey`
/// and `reshardCollection` appear in collection and database streams, as
/// mongos reports them (pymongo reads them); streams without the option
/// never see them, nor the router's traces. `config.collections`' UUID is
/// the collection's own, as change events and `listCollections` give it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expanded_events_report_sharding_ddl() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "ddl", "primaryShard": "shard0001"},
    )
    .await;
    let script = r#"
import os, json
from pymongo import MongoClient
c = MongoClient(os.environ["URI"])
db = c.ddl
db.create_collection("c")
coll_stream = db.c.watch(show_expanded_events=True)
db_stream = db.watch(show_expanded_events=True)
plain = db.watch()
a = c.admin
a.command("shardCollection", "ddl.c", key={"k": 1})
db.c.insert_one({"_id": 1, "k": 5, "g": 1})
db.c.create_index([("k", 1), ("g", 1)])
a.command("refineCollectionShardKey", "ddl.c", key={"k": 1, "g": 1})
a.command("reshardCollection", "ddl.c", key={"g": 1})
db.c.insert_one({"_id": 2, "k": 6, "g": 2})
import time
def take(stream, n):
    out, deadline = [], time.time() + 20
    while len(out) < n and time.time() < deadline:
        e = stream.try_next()
        if e is not None and e["operationType"] not in ("createIndexes", "create"):
            out.append(e)
    return out
uuid = db.command("listCollections", filter={"name": "c"})["cursor"]["firstBatch"][0]["info"]["uuid"]
conf = c.config.collections.find_one({"_id": "ddl.c"})
res = {"uuid_matches": conf["uuid"] == uuid}
for name, s, n in [("coll", coll_stream, 5), ("db", db_stream, 5)]:
    evs = take(s, n)
    res[name] = [(e["operationType"], e["ns"].get("coll"), e.get("operationDescription", {}).get("shardKey"), e.get("collectionUUID") == uuid) for e in evs]
res["plain"] = [(e["operationType"], e["ns"].get("coll")) for e in take(plain, 2)]
print(json.dumps(res, default=str))
"#;
    let out = support::pymongo(&cluster.router.uri(), script);
    let res: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(res["uuid_matches"], true, "{out}");
    let expected = serde_json::json!([
        ["shardCollection", "c", {"k": 1}, true],
        ["insert", "c", null, true],
        ["refineCollectionShardKey", "c", {"k": 1, "g": 1}, true],
        ["reshardCollection", "c", {"g": 1}, true],
        ["insert", "c", null, true]
    ]);
    assert_eq!(res["coll"], expected, "{out}");
    assert_eq!(res["db"], expected, "{out}");
    assert_eq!(
        res["plain"],
        serde_json::json!([["insert", "c"], ["insert", "c"]]),
        "{out}"
    );
}
