//! Query sampling and `analyzeShardKey`'s read and write distributions
//! through the router, over a collection spread unevenly over 3 shards:
//! `configureQueryAnalyzer` (its replies, its document in
//! `config.queryAnalyzers`, the errors mongos gives), the samples a known
//! workload leaves (`$listSampledQueries`, `$currentOp`'s query analyzer
//! entry), and the distributions `analyzeShardKey` computes from them,
//! checked against what that workload must give: which reads and writes
//! reach one shard, several or all, the writes without the shard key, and
//! the updates that changed the key. Turning sampling off, and dropping or
//! renaming a collection, stops it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use support::{admin, admin_error, config_docs, TestCluster};

/// `qa.c` sharded on `k` (chunks on 3 shards, most on shard0002) with
/// 2,000 documents `{_id, k, x}`, and `qa.u` unsharded with 200.
async fn layout(client: &mongodb::Client) {
    admin(
        client,
        doc! {"enableSharding": "qa", "primaryShard": "shard0000"},
    )
    .await;
    admin(client, doc! {"shardCollection": "qa.c", "key": {"k": 1}}).await;
    for (middle, to) in [(300, "shard0001"), (500, "shard0002")] {
        admin(client, doc! {"split": "qa.c", "middle": {"k": middle}}).await;
        let mv =
            doc! {"moveChunk": "qa.c", "find": {"k": middle}, "to": to, "_waitForDelete": true};
        admin(client, mv).await;
    }
    let db = client.database("qa");
    let docs: Vec<Document> = (0..2000i64)
        .map(|i| doc! {"_id": i, "k": i, "x": i % 20})
        .collect();
    db.collection::<Document>("c")
        .insert_many(docs)
        .await
        .unwrap();
    let docs: Vec<Document> = (0..200i64).map(|i| doc! {"_id": i, "k": i}).collect();
    db.collection::<Document>("u")
        .insert_many(docs)
        .await
        .unwrap();
    db.collection::<Document>("u")
        .create_index(mongodb::IndexModel::builder().keys(doc! {"k": 1}).build())
        .await
        .unwrap();
}

fn configure(ns: &str, mode: &str, rate: Option<f64>) -> Document {
    let mut cmd = doc! {"configureQueryAnalyzer": ns, "mode": mode};
    if let Some(r) = rate {
        cmd.insert("samplesPerSecond", r);
    }
    cmd
}

async fn samples(client: &mongodb::Client, ns: &str) -> Vec<Document> {
    client
        .database("admin")
        .aggregate(vec![doc! {"$listSampledQueries": {"namespace": ns}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The workload: 55 reads and 30 writes on `qa.c`, each of a known class
/// under the key `{k: 1}`.
async fn workload(db: &mongodb::Database, c: &mongodb::Collection<Document>) {
    for i in 0..20 {
        c.find_one(doc! {"k": i * 50}).await.unwrap(); // single
    }
    for i in 0..10 {
        let range = doc! {"k": {"$gte": i * 100, "$lt": i * 100 + 30}};
        c.find(range)
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap(); // multi
    }
    for i in 0..10 {
        c.find_one(doc! {"x": i}).await.unwrap(); // scatter
    }
    for i in 0..5 {
        // (the driver's count_documents is an aggregate)
        let count = doc! {"count": "c", "query": {"k": i}};
        db.run_command(count).await.unwrap(); // single
        c.distinct("x", doc! {}).await.unwrap(); // scatter
        let p = vec![
            doc! {"$match": {"k": 1000 + i}},
            doc! {"$project": {"x": 1}},
        ];
        c.aggregate(p)
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap(); // single
    }
    for i in 0..10 {
        let q = doc! {"k": 100 + i};
        c.update_one(q, doc! {"$set": {"x": -1}}).await.unwrap(); // single
    }
    for i in 0..5 {
        // multi, without the key: scatter
        c.update_many(doc! {"x": 10 + i}, doc! {"$inc": {"y": 1}})
            .await
            .unwrap();
        // single-document, without the key, changing it: scatter
        let q = doc! {"_id": 1500 + i};
        c.update_one(q, doc! {"$set": {"k": 5000 + i}})
            .await
            .unwrap();
        c.delete_one(doc! {"k": 1900 + i}).await.unwrap(); // single
        let q = doc! {"k": 1800 + i};
        c.find_one_and_update(q, doc! {"$set": {"z": 1}})
            .await
            .unwrap(); // single
    }
}

fn f(d: &Document, field: &str) -> f64 {
    match d.get(field) {
        Some(Bson::Double(x)) => *x,
        other => panic!("{field}: {other:?} in {d}"),
    }
}

/// `part/total` in percent, as mongod rounds it (up, at 10 decimals).
fn pct(part: i64, total: i64) -> f64 {
    ((part as f64 / total as f64 * 100.0) * 1e10).ceil() / 1e10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_queries_give_the_read_and_write_distributions() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    layout(&client).await;
    let coll = client.database("qa").collection::<Document>("c");

    // Nothing sampled yet: sample sizes of zero, no percentages.
    let reply = admin(
        &client,
        doc! {"analyzeShardKey": "qa.c", "key": {"k": 1}, "keyCharacteristics": false},
    )
    .await;
    assert_eq!(
        reply.get_document("readDistribution").unwrap(),
        &doc! {"sampleSize": {"total": 0i64, "find": 0i64, "aggregate": 0i64, "count": 0i64, "distinct": 0i64}}
    );

    let first = admin(&client, configure("qa.c", "full", Some(50.0))).await;
    assert_eq!(
        first.get_document("newConfiguration").unwrap(),
        &doc! {"mode": "full", "samplesPerSecond": 50.0}
    );
    assert!(!first.contains_key("oldConfiguration"), "{first}");
    let stored = config_docs(&client, "queryAnalyzers", doc! {}, doc! {"_id": 1}).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].get_str("_id").unwrap(), "qa.c");
    assert_eq!(stored[0].get_str("mode").unwrap(), "full");
    assert!(matches!(stored[0].get("collUuid"), Some(Bson::Binary(_))));
    let started = *stored[0].get_datetime("startTime").unwrap();

    // The router's entry in $currentOp, at its share of the rate.
    let ops: Vec<Document> = client
        .database("admin")
        .aggregate(vec![
            doc! {"$currentOp": {"allUsers": true, "localOps": true}},
            doc! {"$match": {"desc": "query analyzer"}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].get_str("ns").unwrap(), "qa.c");
    assert_eq!(f(&ops[0], "samplesPerSecond"), 50.0);

    // A full bucket (burst 100) lets all 85 statements through.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    workload(&client.database("qa"), &coll).await;

    let listed = samples(&client, "qa.c").await;
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for s in &listed {
        *by_name
            .entry(s.get_str("cmdName").unwrap().to_owned())
            .or_default() += 1;
        assert_eq!(s.get_str("ns").unwrap(), "qa.c");
        assert!(
            s.get_datetime("expireAt").unwrap().timestamp_millis()
                > started.timestamp_millis() + 6 * 86_400_000
        );
    }
    let expected: BTreeMap<String, usize> = [
        ("aggregate", 5),
        ("count", 5),
        ("delete", 5),
        ("distinct", 5),
        ("find", 40),
        ("findAndModify", 5),
        ("update", 20),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(by_name, expected);
    let agg = listed
        .iter()
        .find(|s| s.get_str("cmdName").unwrap() == "aggregate")
        .unwrap();
    let filter = agg
        .get_document("cmd")
        .unwrap()
        .get_document("filter")
        .unwrap();
    assert!(filter.get_i32("k").unwrap() >= 1000, "{agg}");
    let upd = listed
        .iter()
        .find(|s| s.get_str("cmdName").unwrap() == "update")
        .unwrap();
    assert_eq!(
        upd.get_document("cmd")
            .unwrap()
            .get_array("updates")
            .unwrap()
            .len(),
        1
    );

    let reply = admin(&client, doc! {"analyzeShardKey": "qa.c", "key": {"k": 1}}).await;
    let reads = reply.get_document("readDistribution").unwrap();
    assert_eq!(
        reads.get_document("sampleSize").unwrap(),
        &doc! {"total": 55i64, "find": 40i64, "aggregate": 5i64, "count": 5i64, "distinct": 5i64}
    );
    assert_eq!(f(reads, "percentageOfSingleShardReads"), pct(30, 55));
    assert_eq!(f(reads, "percentageOfMultiShardReads"), pct(10, 55));
    assert_eq!(f(reads, "percentageOfScatterGatherReads"), pct(15, 55));
    let by_range: Vec<i64> = reads
        .get_array("numReadsByRange")
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(by_range.len(), 100, "2,000 distinct keys give 100 ranges");
    assert!(
        by_range.iter().all(|n| *n >= 15),
        "every range has the 15 scatter reads"
    );
    let sum: i64 = by_range.iter().sum();
    assert!(
        (15 * 100 + 30 + 10..=15 * 100 + 30 + 30).contains(&sum),
        "{sum}"
    );

    let writes = reply.get_document("writeDistribution").unwrap();
    assert_eq!(
        writes.get_document("sampleSize").unwrap(),
        &doc! {"total": 30i64, "update": 20i64, "delete": 5i64, "findAndModify": 5i64}
    );
    assert_eq!(f(writes, "percentageOfSingleShardWrites"), pct(20, 30));
    assert_eq!(f(writes, "percentageOfMultiShardWrites"), 0.0);
    assert_eq!(f(writes, "percentageOfScatterGatherWrites"), pct(10, 30));
    assert_eq!(
        f(writes, "percentageOfSingleWritesWithoutShardKey"),
        pct(5, 30)
    );
    assert_eq!(
        f(writes, "percentageOfMultiWritesWithoutShardKey"),
        pct(5, 30)
    );
    assert_eq!(
        f(writes, "percentageOfShardKeyUpdates"),
        pct(5, 30),
        "the 5 updates of k"
    );
    assert_eq!(writes.get_array("numWritesByRange").unwrap().len(), 100);

    // Under another candidate key the same samples read differently: only
    // the finds by x pin it.
    coll.create_index(mongodb::IndexModel::builder().keys(doc! {"x": 1}).build())
        .await
        .unwrap();
    let reply = admin(
        &client,
        doc! {"analyzeShardKey": "qa.c", "key": {"x": 1}, "keyCharacteristics": false},
    )
    .await;
    let reads = reply.get_document("readDistribution").unwrap();
    assert_eq!(f(reads, "percentageOfSingleShardReads"), pct(10, 55));
    assert_eq!(f(reads, "percentageOfScatterGatherReads"), pct(45, 55));
    let writes = reply.get_document("writeDistribution").unwrap();
    assert_eq!(
        f(writes, "percentageOfShardKeyUpdates"),
        pct(10, 30),
        "x changed 10 times"
    );

    // A new rate keeps the start time and answers the old configuration.
    let again = admin(&client, configure("qa.c", "full", Some(0.5))).await;
    assert_eq!(
        again.get_document("oldConfiguration").unwrap(),
        &doc! {"mode": "full", "samplesPerSecond": 50.0}
    );
    let stored = config_docs(&client, "queryAnalyzers", doc! {}, doc! {}).await;
    assert_eq!(*stored[0].get_datetime("startTime").unwrap(), started);

    // Off: nothing more is sampled.
    let off = admin(&client, configure("qa.c", "off", None)).await;
    assert_eq!(
        off.get_document("newConfiguration").unwrap(),
        &doc! {"mode": "off"}
    );
    assert_eq!(
        off.get_document("oldConfiguration").unwrap(),
        &doc! {"mode": "full", "samplesPerSecond": 0.5}
    );
    let stored = config_docs(&client, "queryAnalyzers", doc! {}, doc! {}).await;
    assert_eq!(stored[0].get_str("mode").unwrap(), "off");
    assert!(stored[0].get_datetime("stopTime").is_ok());
    let off = admin(&client, configure("qa.c", "off", None)).await;
    assert!(!off.contains_key("oldConfiguration"), "already off: {off}");
    let before = samples(&client, "qa.c").await.len();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for i in 0..5 {
        coll.find_one(doc! {"k": i}).await.unwrap();
    }
    assert_eq!(samples(&client, "qa.c").await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsharded_collections_errors_and_dropping() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    layout(&client).await;
    let db = client.database("qa");
    db.run_command(doc! {"create": "v", "viewOn": "u", "pipeline": []})
        .await
        .unwrap();

    for (cmd, code) in [
        (doc! {"configureQueryAnalyzer": "qa.u"}, 40414),
        (configure("qa.u", "sometimes", Some(1.0)), 2),
        (configure("qa.u", "off", Some(1.0)), 72),
        (configure("qa.u", "full", None), 72),
        (configure("qa.u", "full", Some(0.0)), 72),
        (configure("qa.u", "full", Some(51.0)), 72),
        (configure("admin.c", "full", Some(1.0)), 20),
        (configure("qa.system.x", "full", Some(1.0)), 20),
        (configure("qa.missing", "full", Some(1.0)), 26),
        (configure("nodb.c", "full", Some(1.0)), 26),
        (configure("qa.v", "full", Some(1.0)), 166),
    ] {
        assert_eq!(admin_error(&client, cmd.clone()).await, code, "{cmd}");
    }
    let e = db
        .run_command(configure("qa.u", "full", Some(1.0)))
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&e), 13, "admin only");
    let e = db
        .run_command(
            doc! {"aggregate": "u", "pipeline": [{"$listSampledQueries": {}}], "cursor": {}},
        )
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&e), 73);
    let e = client
        .database("admin")
        .aggregate(vec![
            doc! {"$listSampledQueries": {"namespace": "config.x"}},
        ])
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&e), 20);

    // An unsharded collection is sampled too, and analyzed.
    admin(&client, configure("qa.u", "full", Some(10.0))).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let u = db.collection::<Document>("u");
    for i in 0..8 {
        u.find_one(doc! {"k": i}).await.unwrap();
    }
    u.insert_one(doc! {"_id": -1, "k": -1}).await.unwrap(); // never sampled
    let listed = samples(&client, "qa.u").await;
    assert_eq!(listed.len(), 8, "{listed:?}");
    let reply = admin(&client, doc! {"analyzeShardKey": "qa.u", "key": {"k": 1}}).await;
    let reads = reply.get_document("readDistribution").unwrap();
    assert_eq!(f(reads, "percentageOfSingleShardReads"), 100.0);
    assert_eq!(
        reads.get_array("numReadsByRange").unwrap().len(),
        21,
        "201 keys: 21 ranges"
    );

    // Sampling goes on after a resharding (whose collection keeps its UUID
    // here; the analyzer would follow a new one).
    admin(&client, configure("qa.c", "full", Some(10.0))).await;
    admin(&client, doc! {"reshardCollection": "qa.c", "key": {"x": 1}}).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = db.collection::<Document>("c");
    for i in 0..3 {
        c.find_one(doc! {"x": i}).await.unwrap();
    }
    let reply = admin(
        &client,
        doc! {"analyzeShardKey": "qa.c", "key": {"x": 1}, "keyCharacteristics": false},
    )
    .await;
    let reads = reply.get_document("readDistribution").unwrap();
    assert_eq!(
        reads
            .get_document("sampleSize")
            .unwrap()
            .get_i64("total")
            .unwrap(),
        3
    );
    assert_eq!(f(reads, "percentageOfSingleShardReads"), 100.0);

    // A rename forgets the analyzer; so does a drop.
    admin(&client, doc! {"renameCollection": "qa.u", "to": "qa.u2"}).await;
    db.collection::<Document>("c").drop().await.unwrap();
    let stored = config_docs(&client, "queryAnalyzers", doc! {}, doc! {}).await;
    assert!(stored.is_empty(), "{stored:?}");
    // Samples of a dropped collection no longer count for a new one.
    db.collection::<Document>("u2").drop().await.unwrap();
    db.collection::<Document>("u")
        .insert_one(doc! {"k": 1})
        .await
        .unwrap();
    db.collection::<Document>("u")
        .create_index(mongodb::IndexModel::builder().keys(doc! {"k": 1}).build())
        .await
        .unwrap();
    let reply = admin(&client, doc! {"analyzeShardKey": "qa.u", "key": {"k": 1}}).await;
    let total = reply
        .get_document("readDistribution")
        .unwrap()
        .get_document("sampleSize")
        .unwrap()
        .get_i64("total")
        .unwrap();
    assert_eq!(total, 0);
}
