//! Chunk merges an operator asks for and the balancer's auto-merger:
//! `mergeAllChunksOnShard`, `configureCollectionBalancing` with
//! `defragmentCollection` and `enableAutoMerger`, every document still
//! readable after; `setAllowMigrations`; a jumbo chunk marked by the
//! balancer and cleared by `clearJumboFlag`; `shardCollection`'s `collation` and
//! `presplitHashedZones` checked as mongos checks them.

mod support;

use bson::{doc, Bson, Document};
use shardgate_router::RouterConfig;
use support::{admin, TestCluster};

/// `(min.k, shard)` of each chunk of `ns`, in key order.
async fn layout(client: &mongodb::Client, ns: &str) -> Vec<(Bson, String)> {
    support::config_docs(client, "chunks", doc! {"ns": ns}, doc! {"min": 1})
        .await
        .into_iter()
        .map(|c| {
            (
                c.get_document("min").unwrap().get("k").unwrap().clone(),
                c.get_str("shard").unwrap().to_owned(),
            )
        })
        .collect()
}

async fn shard_and_split(client: &mongodb::Client, ns: &str, at: &[i32]) {
    let (db, coll) = ns.split_once('.').unwrap();
    client
        .database(db)
        .run_command(doc! {"createIndexes": coll, "indexes": [{"key": {"k": 1}, "name": "k_1"}]})
        .await
        .unwrap();
    admin(client, doc! {"shardCollection": ns, "key": {"k": 1}}).await;
    for middle in at {
        admin(client, doc! {"split": ns, "middle": {"k": middle}}).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_on_request_keep_every_document() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "m", "primaryShard": "shard0000"},
    )
    .await;
    let docs: Vec<Document> = (0..60).map(|k| doc! {"_id": k, "k": k}).collect();
    client
        .database("m")
        .collection("c")
        .insert_many(docs.clone())
        .await
        .unwrap();
    shard_and_split(&client, "m.c", &[10, 20, 30, 40, 50]).await;
    admin(
        &client,
        doc! {"moveChunk": "m.c", "find": {"k": 25}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    admin(
        &client,
        doc! {"mergeAllChunksOnShard": "m.c", "shard": "shard0000"},
    )
    .await;
    let (s0, s1) = ("shard0000".to_owned(), "shard0001".to_owned());
    assert_eq!(
        layout(&client, "m.c").await,
        [
            (Bson::MinKey, s0.clone()),
            (Bson::Int32(20), s1.clone()),
            (Bson::Int32(30), s0.clone()),
        ]
    );
    let e = support::admin_error(
        &client,
        doc! {"mergeAllChunksOnShard": "m.c", "shard": "nosuch"},
    )
    .await;
    assert_eq!(e, 70);

    // Defragmentation merges every shard's contiguous chunks.
    client
        .database("m")
        .collection("d")
        .insert_many(docs.clone())
        .await
        .unwrap();
    shard_and_split(&client, "m.d", &[15, 30, 45]).await;
    admin(
        &client,
        doc! {"configureCollectionBalancing": "m.d", "defragmentCollection": true},
    )
    .await;
    assert_eq!(layout(&client, "m.d").await, [(Bson::MinKey, s0.clone())]);
    for coll in ["c", "d"] {
        let n = client
            .database("m")
            .collection::<Document>(coll)
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(n, 60, "m.{coll}");
    }

    // No chunk of a collection moves while migrations are not allowed.
    admin(
        &client,
        doc! {"setAllowMigrations": "m.c", "allowMigrations": false},
    )
    .await;
    let coll = support::config_docs(&client, "collections", doc! {"_id": "m.c"}, doc! {}).await;
    assert!(!coll[0].get_bool("permitMigrations").unwrap());
    let e = support::admin_error(
        &client,
        doc! {"moveChunk": "m.c", "find": {"k": 5}, "to": "shard0001"},
    )
    .await;
    assert_eq!(e, 117);
    admin(
        &client,
        doc! {"setAllowMigrations": "m.c", "allowMigrations": true},
    )
    .await;
    admin(
        &client,
        doc! {"moveChunk": "m.c", "find": {"k": 5}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    assert_eq!(layout(&client, "m.c").await[0], (Bson::MinKey, s1.clone()));

    // shardCollection's options.
    let e = support::admin_error(
        &client,
        doc! {"shardCollection": "m.e", "key": {"k": 1}, "collation": {"locale": "fr"}},
    )
    .await;
    assert_eq!(e, 2);
    admin(
        &client,
        doc! {"shardCollection": "m.e", "key": {"k": 1}, "collation": {"locale": "simple"}},
    )
    .await;
    let e = support::admin_error(
        &client,
        doc! {"shardCollection": "m.f", "key": {"k": "hashed"}, "presplitHashedZones": true},
    )
    .await;
    assert_eq!(e, 72);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_merger_merges_only_collections_that_enable_it() {
    let config = RouterConfig {
        balancer: true,
        balancer_interval_secs: 1,
        ..RouterConfig::default()
    };
    let cluster = TestCluster::start_with(1, config, false).await;
    let client = cluster.client().await;
    admin(&client, doc! {"enableSharding": "a"}).await;
    for coll in ["on", "off"] {
        shard_and_split(&client, &format!("a.{coll}"), &[10, 20, 30]).await;
    }
    admin(
        &client,
        doc! {"configureCollectionBalancing": "a.on", "enableAutoMerger": true},
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while layout(&client, "a.on").await.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "not merged: {:?}",
            layout(&client, "a.on").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Two more rounds ran meanwhile; the other collection keeps its chunks.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(layout(&client, "a.off").await.len(), 4);
    let coll = support::config_docs(&client, "collections", doc! {"_id": "a.on"}, doc! {}).await;
    assert!(coll[0].get_bool("enableAutoMerger").unwrap());

    // A chunk past the chunk size whose documents share one key cannot be
    // split: the balancer marks it jumbo; clearJumboFlag clears it.
    shard_and_split(&client, "a.j", &[]).await;
    admin(
        &client,
        doc! {"configureCollectionBalancing": "a.j", "chunkSize": 1},
    )
    .await;
    let big = "x".repeat(600_000);
    let docs: Vec<Document> = (0..3).map(|i| doc! {"_id": i, "k": 5, "s": &big}).collect();
    client
        .database("a")
        .collection("j")
        .insert_many(docs)
        .await
        .unwrap();
    let jumbo = || async {
        support::config_docs(&client, "chunks", doc! {"ns": "a.j"}, doc! {})
            .await
            .iter()
            .any(|c| c.get_bool("jumbo").unwrap_or(false))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !jumbo().await {
        assert!(std::time::Instant::now() < deadline, "never marked jumbo");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    admin(&client, doc! {"balancerStop": 1}).await;
    admin(&client, doc! {"clearJumboFlag": "a.j", "find": {"k": 5}}).await;
    assert!(!jumbo().await);
}
