//! The balancer: a collection loaded onto one shard is split and spread
//! until the data per shard is within the threshold (3 × chunk size); zone
//! ranges pull their chunks (split at the boundaries) to the zone's shards;
//! `removeShard` drains a shard and then removes it. Every document stays
//! present exactly once.

mod support;

use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use support::{admin, config_docs, TestCluster};

fn config() -> shardgate_router::RouterConfig {
    shardgate_router::RouterConfig {
        balancer: true,
        balancer_interval_secs: 1,
        orphan_cleanup_delay_secs: 0,
        ..Default::default()
    }
}

/// `n` documents of about 1 KB with keys 0..n.
fn documents(n: i32) -> Vec<Document> {
    (0..n)
        .map(|i| doc! {"_id": i, "k": i, "pad": "x".repeat(1000)})
        .collect()
}

/// Bytes of `db.c` on each shard, read directly.
async fn data_per_shard(cluster: &TestCluster, db: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for s in &cluster.shards {
        let stats = support::direct_client(s)
            .await
            .database(db)
            .run_command(doc! {"collStats": "c"})
            .await
            .map(|d| match d.get("size") {
                Some(Bson::Int32(v)) => *v as i64,
                Some(Bson::Int64(v)) => *v,
                Some(Bson::Double(v)) => *v as i64,
                _ => 0,
            })
            .unwrap_or(0);
        out.push(stats);
    }
    out
}

/// Every `_id` in 0..n once through the router, and each document stored on
/// exactly one shard.
async fn all_present_once(cluster: &TestCluster, client: &mongodb::Client, db: &str, n: i32) {
    let ids: Vec<Document> = client
        .database(db)
        .collection::<Document>("c")
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<i32> = ids.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    assert_eq!(
        ids,
        (0..n).collect::<Vec<_>>(),
        "every document once through the router"
    );
    let mut stored = 0;
    for s in &cluster.shards {
        stored += support::direct_client(s)
            .await
            .database(db)
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
    }
    assert_eq!(
        stored, n as u64,
        "each document stored on exactly one shard"
    );
}

async fn set_chunk_size_mb(client: &mongodb::Client, mb: i32) {
    client
        .database("config")
        .collection::<Document>("settings")
        .update_one(doc! {"_id": "chunksize"}, doc! {"$set": {"value": mb}})
        .upsert(true)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_on_one_shard_is_split_and_spread_within_the_threshold() {
    let cluster = TestCluster::start_with(3, config(), false).await;
    let client = cluster.client().await;
    admin(&client, doc! {"balancerStop": 1}).await;
    set_chunk_size_mb(&client, 1).await;
    admin(
        &client,
        doc! {"enableSharding": "bal", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "bal.c", "key": {"k": 1}}).await;
    let n = 9000;
    client
        .database("bal")
        .collection::<Document>("c")
        .insert_many(documents(n))
        .await
        .unwrap();
    let before = data_per_shard(&cluster, "bal").await;
    assert!(
        before[0] > 8_000_000 && before[1] == 0 && before[2] == 0,
        "{before:?}"
    );

    admin(&client, doc! {"balancerStart": 1}).await;
    let threshold = 3 * 1024 * 1024;
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut spread;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        spread = data_per_shard(&cluster, "bal").await;
        let (max, min) = (*spread.iter().max().unwrap(), *spread.iter().min().unwrap());
        if max - min <= threshold && min > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not balanced in time: {spread:?}"
        );
    }
    admin(&client, doc! {"balancerStop": 1}).await;
    // Let a running migration finish.
    while admin(&client, doc! {"balancerStatus": 1})
        .await
        .get_bool("inBalancerRound")
        .ok()
        == Some(true)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chunks = config_docs(&client, "chunks", doc! {"ns": "bal.c"}, doc! {"min": 1}).await;
    assert!(
        chunks.len() >= 16,
        "auto-split into about 1 MB / 2 pieces: {}",
        chunks.len()
    );
    println!(
        "balanced: {spread:?} bytes per shard, {} chunks",
        chunks.len()
    );
    all_present_once(&cluster, &client, "bal", n).await;
    let status = admin(&client, doc! {"balancerStatus": 1}).await;
    assert!(status.get_i64("numBalancerRounds").unwrap() > 0, "{status}");
    let moves = config_docs(
        &client,
        "changelog",
        doc! {"what": "moveChunk.commit"},
        doc! {},
    )
    .await;
    assert!(moves.len() >= 2, "{moves:?}");
    let splits = config_docs(&client, "changelog", doc! {"what": "split"}, doc! {}).await;
    assert!(splits.len() >= 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_ranges_pull_their_chunks_split_at_the_boundaries() {
    let cluster = TestCluster::start_with(3, config(), false).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "zn", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "zn.c", "key": {"k": 1}}).await;
    let n = 2000;
    client
        .database("zn")
        .collection::<Document>("c")
        .insert_many(documents(n))
        .await
        .unwrap();
    admin(&client, doc! {"addShardToZone": "shard0001", "zone": "A"}).await;
    admin(&client, doc! {"addShardToZone": "shard0002", "zone": "B"}).await;
    admin(
        &client,
        doc! {"addTagRange": "zn.c", "min": {"k": 500}, "max": {"k": 1000}, "tag": "A"},
    )
    .await;
    admin(
        &client,
        doc! {"addTagRange": "zn.c", "min": {"k": 1500}, "max": {"k": 1800}, "tag": "B"},
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let chunks = config_docs(&client, "chunks", doc! {"ns": "zn.c"}, doc! {"min": 1}).await;
        let placed: Vec<(Bson, Bson, String)> = chunks
            .iter()
            .map(|c| {
                (
                    c.get_document("min").unwrap().get("k").cloned().unwrap(),
                    c.get_document("max").unwrap().get("k").cloned().unwrap(),
                    c.get_str("shard").unwrap().to_owned(),
                )
            })
            .collect();
        let expected = vec![
            (Bson::MinKey, Bson::Int32(500), "shard0000".to_owned()),
            (Bson::Int32(500), Bson::Int32(1000), "shard0001".to_owned()),
            (Bson::Int32(1000), Bson::Int32(1500), "shard0000".to_owned()),
            (Bson::Int32(1500), Bson::Int32(1800), "shard0002".to_owned()),
            (Bson::Int32(1800), Bson::MaxKey, "shard0000".to_owned()),
        ];
        if placed == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zones not applied in time: {placed:?}"
        );
    }
    all_present_once(&cluster, &client, "zn", n).await;
    let on_a = support::direct_client(&cluster.shards[1])
        .await
        .database("zn")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(on_a, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_shard_drains_the_shard_then_removes_it() {
    let cluster = TestCluster::start_with(3, config(), false).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "dr", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"addShardToZone": "shard0001", "zone": "mid"}).await;
    admin(
        &client,
        doc! {"updateZoneKeyRange": "dr.c", "min": {"k": 300}, "max": {"k": 600}, "zone": "mid"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "dr.c", "key": {"k": 1}}).await;
    let n = 1000;
    client
        .database("dr")
        .collection::<Document>("c")
        .insert_many(documents(n))
        .await
        .unwrap();
    // The zone must go first: a zone whose last shard leaves would strand it.
    admin(&client, doc! {"updateZoneKeyRange": "dr.c", "min": {"k": 300}, "max": {"k": 600}, "zone": Bson::Null}).await;
    admin(
        &client,
        doc! {"removeShardFromZone": "shard0001", "zone": "mid"},
    )
    .await;
    let r = admin(&client, doc! {"removeShard": "shard0001"}).await;
    assert_eq!(r.get_str("state").unwrap(), "started", "{r}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = admin(&client, doc! {"removeShard": "shard0001"}).await;
        if r.get_str("state").ok() == Some("completed") {
            break;
        }
        assert!(Instant::now() < deadline, "not drained in time: {r}");
    }
    let shards = admin(&client, doc! {"listShards": 1}).await;
    let ids: Vec<&str> = shards
        .get_array("shards")
        .unwrap()
        .iter()
        .filter_map(|s| s.as_document()?.get_str("_id").ok())
        .collect();
    assert_eq!(ids, vec!["shard0000", "shard0002"]);
    let left = support::direct_client(&cluster.shards[1])
        .await
        .database("dr")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(left, 0, "the removed shard holds nothing");
    let ids: Vec<Document> = client
        .database("dr")
        .collection::<Document>("c")
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids.len(), n as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_of_one_key_value_is_marked_jumbo_and_shown_by_sh_status() {
    let cluster = TestCluster::start_with(2, config(), false).await;
    let client = cluster.client().await;
    set_chunk_size_mb(&client, 1).await;
    admin(
        &client,
        doc! {"enableSharding": "jb", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "jb.c", "key": {"k": 1}}).await;
    admin(&client, doc! {"split": "jb.c", "middle": {"k": 10}}).await;
    // [10, MaxKey): 2 MB, every document with k = 10.
    let docs: Vec<Document> = (0..2000)
        .map(|i| doc! {"_id": i, "k": 10, "pad": "x".repeat(1000)})
        .collect();
    client
        .database("jb")
        .collection::<Document>("c")
        .insert_many(docs)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let jumbo = config_docs(
            &client,
            "chunks",
            doc! {"ns": "jb.c", "jumbo": true},
            doc! {},
        )
        .await;
        if !jumbo.is_empty() {
            assert_eq!(jumbo[0].get_document("min").unwrap(), &doc! {"k": 10});
            break;
        }
        assert!(Instant::now() < deadline, "no chunk was marked jumbo");
    }
    let out = support::mongosh(&cluster.router.uri(), "sh.status()");
    assert!(
        out.contains("jumbo"),
        "sh.status() shows the jumbo chunk: {out}"
    );
    // The jumbo chunk is not moved for balance (2 MB vs 0 is within 3 MB
    // anyway; the balancer must not have split it either).
    let chunks = config_docs(&client, "chunks", doc! {"ns": "jb.c"}, doc! {"min": 1}).await;
    assert_eq!(chunks.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragmentation_moves_small_chunks_to_neighbours_and_merges_them() {
    let cluster = TestCluster::start_with(3, config(), false).await;
    let client = cluster.client().await;
    set_chunk_size_mb(&client, 1).await;
    admin(
        &client,
        doc! {"enableSharding": "df", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "df.c", "key": {"k": 1}}).await;
    let n = 300;
    client
        .database("df")
        .collection::<Document>("c")
        .insert_many(documents(n))
        .await
        .unwrap();
    // Six chunks of about 50 KB, on alternating shards: nothing to
    // balance (far under 3 × 1 MB), all fragments.
    let shards = ["shard0000", "shard0001", "shard0002"];
    for (i, at) in [50, 100, 150, 200, 250].into_iter().enumerate() {
        admin(&client, doc! {"split": "df.c", "middle": {"k": at}}).await;
        let to = shards[(i + 1) % 3];
        if to != "shard0000" {
            admin(
                &client,
                doc! {"moveChunk": "df.c", "find": {"k": at}, "to": to, "_waitForDelete": true},
            )
            .await;
        }
    }
    let chunks = config_docs(&client, "chunks", doc! {"ns": "df.c"}, doc! {"min": 1}).await;
    assert_eq!(chunks.len(), 6);
    admin(
        &client,
        doc! {"configureCollectionBalancing": "df.c", "defragmentCollection": true},
    )
    .await;
    let status = admin(&client, doc! {"balancerCollectionStatus": "df.c"}).await;
    assert_eq!(
        status.get_str("firstComplianceViolation").unwrap(),
        "defragmentingChunks",
        "{status}"
    );
    // Each small chunk moves to its neighbour's shard and merges with it,
    // until one chunk of 300 KB is left (within the 1 MB chunk size).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let chunks = config_docs(&client, "chunks", doc! {"ns": "df.c"}, doc! {"min": 1}).await;
        let coll = config_docs(&client, "collections", doc! {"_id": "df.c"}, doc! {}).await;
        if chunks.len() == 1 && !coll[0].contains_key("defragmentCollection") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "defragmentation did not finish: {} chunks, {}",
            chunks.len(),
            coll[0]
        );
    }
    let status = admin(&client, doc! {"balancerCollectionStatus": "df.c"}).await;
    assert!(status.get_bool("balancerCompliant").unwrap(), "{status}");
    all_present_once(&cluster, &client, "df", n).await;
}
