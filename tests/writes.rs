//! Sharded writes: mongos's shard-key rules with their codes, 100,000
//! inserts each on the shard owning its chunk, a retried write applied
//! once, and writes held by a migration's critical section.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::options::InsertManyOptions;
use support::{admin, error_code, TestCluster};

/// Shards `<db>.c` on `{k: 1}`: [MinKey, 0) on shard0000 (the primary),
/// [0, 100) on shard0001, [100, MaxKey) on shard0002.
async fn shard_three_ways(client: &mongodb::Client, db: &str) {
    admin(
        client,
        doc! {"enableSharding": db, "primaryShard": "shard0000"},
    )
    .await;
    admin(client, doc! {"addShardToZone": "shard0001", "zone": "mid"}).await;
    admin(client, doc! {"addShardToZone": "shard0002", "zone": "hi"}).await;
    let ns = format!("{db}.c");
    admin(
        client,
        doc! {"updateZoneKeyRange": &ns, "min": {"k": 0}, "max": {"k": 100}, "zone": "mid"},
    )
    .await;
    admin(
        client,
        doc! {"updateZoneKeyRange": &ns, "min": {"k": 100}, "max": {"k": Bson::MaxKey}, "zone": "hi"},
    )
    .await;
    admin(client, doc! {"shardCollection": &ns, "key": {"k": 1}}).await;
}

/// The documents of `db.c` on one shard, by `_id`.
async fn on_shard(shard: &shardgate::shard_process::ShardProcess, db: &str) -> Vec<Document> {
    support::direct_client(shard)
        .await
        .database(db)
        .collection::<Document>("c")
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_key_rules_answer_with_mongos_codes() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    shard_three_ways(&client, "rules").await;
    let coll = client.database("rules").collection::<Document>("c");
    coll.insert_many((0..6).map(|i| doc! {"_id": i, "k": i * 50 - 100, "v": 0}))
        .await
        .unwrap();
    let before = sorted(&coll).await;

    // (Single-document writes without the shard key run in two phases:
    // tests/writes_without_key.rs.)
    // An upsert needs the full shard key by equality (or an exact _id, as
    // mongos >= 7.0: tests/writes_without_key.rs).
    let e = coll
        .update_one(doc! {"w": 99}, doc! {"$set": {"w": 1}})
        .upsert(true)
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 61, "{e}");
    // Changing shard keys with a multi-document update is refused; moving
    // a document to another shard needs a retryable write or a
    // transaction (IllegalOperation, 20, as mongos answers); the moves
    // themselves: tests/writes_without_key.rs.
    let e = coll
        .update_many(doc! {"v": 0}, doc! {"$inc": {"k": 1}})
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 66, "{e}");
    let plain = client
        .database("rules")
        .run_command(doc! {"update": "c", "updates": [{"q": {"k": 50}, "u": {"$set": {"k": 150}}}]})
        .await
        .unwrap();
    let first = plain.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(first.get_i32("code").unwrap(), 20, "{plain}");
    assert!(
        first
            .get_str("errmsg")
            .unwrap()
            .contains("retryWrites: true"),
        "{plain}"
    );
    assert_eq!(
        sorted(&coll).await,
        before,
        "refused writes changed nothing"
    );

    // What is allowed: by _id (every shard, one match), by key, multi.
    let r = coll
        .update_one(doc! {"_id": 3}, doc! {"$set": {"w": 1}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let r = coll
        .update_one(doc! {"k": 50, "_id": 3}, doc! {"$set": {"k": 50, "w": 2}})
        .await
        .unwrap();
    assert_eq!(
        r.modified_count, 1,
        "setting the key to its own value is allowed"
    );
    let r = coll
        .update_many(doc! {"k": {"$gte": 0}}, doc! {"$inc": {"v": 1}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (4, 4));
    let r = coll
        .update_one(doc! {"k": 500}, doc! {"$set": {"v": 7}})
        .upsert(true)
        .await
        .unwrap();
    assert!(r.upserted_id.is_some());
    let found = coll
        .find_one_and_update(doc! {"k": 150}, doc! {"$set": {"v": 9}})
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.get_i32("v").unwrap(), 9);
    let found = coll
        .find_one_and_delete(doc! {"_id": 0})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.get_i32("k").unwrap(), -100);
    assert_eq!(
        coll.delete_one(doc! {"_id": 1})
            .await
            .unwrap()
            .deleted_count,
        1
    );
    assert_eq!(coll.delete_many(doc! {}).await.unwrap().deleted_count, 5);

    // A document missing the key field routes as null: the MinKey chunk.
    coll.insert_one(doc! {"_id": "nokey"}).await.unwrap();
    let low = on_shard(&cluster.shards[0], "rules").await;
    assert_eq!(low, vec![doc! {"_id": "nokey"}]);
    // An array in the key is refused.
    let e = coll.insert_one(doc! {"k": [1, 2]}).await.unwrap_err();
    assert_eq!(error_code(&e), 61, "{e}");
}

async fn sorted(coll: &mongodb::Collection<Document>) -> Vec<Document> {
    coll.find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_inserts_land_on_the_owning_shards() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    shard_three_ways(&client, "bulk").await;
    for (ns, middle) in [("bulk.c", 50), ("bulk.c", 1_000), ("bulk.c", 50_000)] {
        admin(&client, doc! {"split": ns, "middle": {"k": middle}}).await;
    }
    let coll = client.database("bulk").collection::<Document>("c");
    // Keys scattered over every chunk; half the batches ordered, half not.
    let total = 100_000i64;
    for batch in 0..100i64 {
        let docs: Vec<Document> = (0..1000i64)
            .map(|j| {
                let i = batch * 1000 + j;
                doc! {"_id": i, "k": (i * 7919) % 120_000 - 10_000}
            })
            .collect();
        let ordered = batch % 2 == 0;
        let r = coll
            .insert_many(docs)
            .with_options(InsertManyOptions::builder().ordered(ordered).build())
            .await
            .unwrap();
        assert_eq!(r.inserted_ids.len(), 1000);
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), total as u64);

    // Every document is on the shard that owns its chunk, and only there.
    let owner = |k: i64| match k {
        k if k < 0 => 0,
        k if k < 100 => 1,
        _ => 2,
    };
    let mut seen = 0;
    for (i, shard) in cluster.shards.iter().enumerate() {
        let docs: Vec<Document> = support::direct_client(shard)
            .await
            .database("bulk")
            .collection::<Document>("c")
            .find(doc! {})
            .projection(doc! {"k": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for d in &docs {
            let k = d.get_i64("k").unwrap();
            assert_eq!(owner(k), i, "{d} is on shard{i}");
        }
        assert!(!docs.is_empty(), "shard{i} got documents");
        seen += docs.len();
    }
    assert_eq!(seen, total as usize, "no document lost or duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_applied_once() {
    let config = shardgate_router::RouterConfig {
        enable_test_commands: true,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, config, true).await;
    let client = cluster.client().await;
    shard_three_ways(&client, "retry").await;
    let coll = client.database("retry").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "k": 150, "n": 0})
        .await
        .unwrap();

    // The router applies the next write on the shard, then drops the
    // client's connection instead of replying; the driver retries it.
    let arm = || async {
        admin(
            &client,
            doc! {"configureFailPoint": "shardgateCloseConnectionAfterWrite", "mode": {"times": 1}},
        )
        .await
    };
    let fired = || async {
        let r = admin(
            &client,
            doc! {"configureFailPoint": "shardgateCloseConnectionAfterWrite", "mode": "off"},
        )
        .await;
        r.get_i64("count").unwrap() == 0
    };
    arm().await;
    let r = coll
        .update_one(doc! {"k": 150}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1);
    assert!(fired().await, "the connection was cut once");
    let d = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(
        d.get_i32("n").unwrap(),
        1,
        "the increment applied once: {d}"
    );

    arm().await;
    coll.insert_one(doc! {"_id": 2, "k": 5}).await.unwrap();
    assert!(fired().await);
    arm().await;
    let r = coll
        .update_one(doc! {"k": -7}, doc! {"$inc": {"n": 1}})
        .upsert(true)
        .await
        .unwrap();
    assert!(r.upserted_id.is_some());
    assert!(fired().await);
    arm().await;
    let before = coll
        .find_one_and_update(doc! {"k": 150}, doc! {"$inc": {"n": 10}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.get_i32("n").unwrap(), 1);
    assert!(fired().await);

    let all = sorted(&coll).await;
    assert_eq!(all.len(), 3, "one document per write: {all:?}");
    assert_eq!(coll.count_documents(doc! {"k": 5}).await.unwrap(), 1);
    assert_eq!(
        coll.count_documents(doc! {"k": -7, "n": 1}).await.unwrap(),
        1
    );
    assert_eq!(
        coll.count_documents(doc! {"k": 150, "n": 11})
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_out_a_critical_section_then_reach_the_new_owner() {
    use shardgate_config_store::catalog::{new_chunk, ChunkChange, CollectionVersion};
    use shardgate_config_store::model::{MigrationState, MigrationType};
    use shardgate_config_store::shard_key::ShardKeyPattern;
    use shardgate_config_store::{Catalog, ConfigStore, EmbeddedStore};

    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 3, false).await;
    let store: Arc<dyn ConfigStore> =
        Arc::new(EmbeddedStore::open(dir.path().join("config")).unwrap());
    let config = shardgate_router::RouterConfig {
        critical_section_wait_ms: 3_000,
        ..Default::default()
    };
    let router = support::RouterHandle::start_with_store(store.clone(), config).await;
    let client = support::client(&router.uri()).await;
    for s in &shards {
        admin(&client, doc! {"addShard": s.address()}).await;
    }
    shard_three_ways(&client, "crit").await;
    admin(&client, doc! {"split": "crit.c", "middle": {"k": 50}}).await;
    admin(&client, doc! {"split": "crit.c", "middle": {"k": 60}}).await;
    let coll = client.database("crit").collection::<Document>("c");
    coll.insert_many((45..65).map(|k| doc! {"_id": k, "k": k}))
        .await
        .unwrap();

    // A migration of [50, 60) from shard0001 to shard0000 has copied the
    // documents and entered its critical section.
    let catalog = Catalog::new(store);
    let pattern = ShardKeyPattern::parse(&doc! {"k": 1}).unwrap();
    let copies: Vec<Document> = (50..60).map(|k| doc! {"_id": k, "k": k}).collect();
    let dest = support::direct_client(&shards[0]).await;
    dest.database("crit")
        .collection::<Document>("c")
        .insert_many(copies)
        .await
        .unwrap();
    let orphan = shardgate_config_store::model::OrphanRange {
        ns: "crit.c".into(),
        shard: "shard0000".into(),
        min: doc! {"k": 50},
        max: doc! {"k": 60},
    };
    catalog.add_orphan_range(&pattern, &orphan).await.unwrap();
    let mut migration = MigrationType {
        ns: "crit.c".into(),
        min: doc! {"k": 50},
        max: doc! {"k": 60},
        from_shard: "shard0001".into(),
        to_shard: "shard0000".into(),
        state: MigrationState::Critical,
        fencing: 1,
    };
    catalog.put_migration(&pattern, &migration).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Writes outside the range go through; writes inside it wait.
    coll.insert_one(doc! {"_id": 70, "k": 70}).await.unwrap();
    let held = {
        let coll = coll.clone();
        tokio::spawn(async move {
            coll.update_one(doc! {"k": 55}, doc! {"$set": {"moved": true}})
                .await
                .map(|r| r.modified_count)
        })
    };
    let insert = {
        let coll = coll.clone();
        tokio::spawn(async move { coll.insert_one(doc! {"_id": 57.5, "k": 57.5}).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !held.is_finished() && !insert.is_finished(),
        "writes are held"
    );

    // Commit: shard0000 owns [50, 60); the source's copy becomes the orphan.
    let coll_entry = catalog.collection("crit.c").await.unwrap().unwrap();
    let version = catalog.collection_version("crit.c").await.unwrap();
    let (chunk, rev) = catalog
        .chunks("crit.c")
        .await
        .unwrap()
        .into_iter()
        .find(|(c, _)| c.min == doc! {"k": 50})
        .unwrap();
    let moved = new_chunk(
        &coll_entry,
        chunk.min.clone(),
        chunk.max.clone(),
        "shard0000",
        CollectionVersion {
            major: version.0.major + 1,
            minor: 0,
        },
        chunk.on_current_shard_since,
    );
    let change = ChunkChange {
        removed: vec![(chunk, rev)],
        added: vec![moved],
    };
    assert!(catalog
        .apply_chunk_change(&coll_entry, version, &change)
        .await
        .unwrap());
    catalog
        .remove_orphan_range(&pattern, &orphan)
        .await
        .unwrap();
    let source_orphan = shardgate_config_store::model::OrphanRange {
        shard: "shard0001".into(),
        ..orphan.clone()
    };
    catalog
        .add_orphan_range(&pattern, &source_orphan)
        .await
        .unwrap();
    migration.state = MigrationState::Committed;
    catalog.put_migration(&pattern, &migration).await.unwrap();

    assert_eq!(held.await.unwrap().unwrap(), 1);
    insert.await.unwrap().unwrap();
    let on_dest = on_shard(&shards[0], "crit").await;
    let d55 = on_dest
        .iter()
        .find(|d| d.get_i32("k").ok() == Some(55))
        .unwrap();
    assert_eq!(
        d55.get_bool("moved").ok(),
        Some(true),
        "the new owner got the update"
    );
    assert!(
        on_dest.iter().any(|d| d.get_f64("k").ok() == Some(57.5)),
        "and the insert"
    );
    let on_source = on_shard(&shards[1], "crit").await;
    assert!(
        on_source
            .iter()
            .all(|d| d.get("moved").is_none() && d.get_f64("k").is_err()),
        "the old owner got neither"
    );
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 22);

    // Past the bound, a held write fails with StaleConfig: labelled
    // retryable for a retryable write (the driver retried it once), not
    // for a plain command, as mongos labels them.
    migration.min = doc! {"k": 60};
    migration.max = doc! {"k": 100};
    migration.state = MigrationState::Critical;
    catalog.put_migration(&pattern, &migration).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both at once, so both wait out the same bound.
    let (mut plain, mut retryable) = (
        support::RawConn::connect(router.addr).await,
        support::RawConn::connect(router.addr).await,
    );
    let (plain, retryable) = tokio::join!(
        plain.command(doc! {"insert": "c", "documents": [{"_id": 611, "k": 61.6}], "$db": "crit"}),
        retryable.command(doc! {
            "insert": "c", "documents": [{"_id": 610, "k": 61.5}], "$db": "crit",
            "lsid": {"id": bson::Uuid::new()}, "txnNumber": 1i64,
        }),
    );
    for (reply, labelled) in [(plain, false), (retryable, true)] {
        assert_eq!(reply.get_i32("code").ok(), Some(13388), "{reply}");
        let labels = reply.get_array("errorLabels").cloned().unwrap_or_default();
        assert_eq!(
            labels.contains(&Bson::from("RetryableWriteError")),
            labelled,
            "{reply}"
        );
    }
    assert_eq!(
        coll.count_documents(doc! {"k": {"$in": [61.5, 61.6]}})
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_bulk_write_routes_every_operation() {
    use mongodb::error::ErrorKind;
    use mongodb::options::{
        DeleteManyModel, DeleteOneModel, InsertOneModel, ReplaceOneModel, UpdateManyModel,
        UpdateOneModel, WriteModel,
    };
    let config = shardgate_router::RouterConfig {
        enable_test_commands: true,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, config, true).await;
    let client = cluster.client().await;
    shard_three_ways(&client, "bw").await;
    let sharded = client.database("bw").collection::<Document>("c");
    let plain = client.database("bw").collection::<Document>("plain");
    let (s, p) = (sharded.namespace(), plain.namespace());
    let insert = |ns: &mongodb::Namespace, d: Document| -> WriteModel {
        InsertOneModel::builder()
            .namespace(ns.clone())
            .document(d)
            .build()
            .into()
    };
    let models: Vec<WriteModel> = vec![
        insert(&s, doc! {"_id": 1, "k": -5}),
        insert(&s, doc! {"_id": 2, "k": 50}),
        insert(&s, doc! {"_id": 3, "k": 500}),
        insert(&p, doc! {"_id": 1}),
        UpdateOneModel::builder()
            .namespace(s.clone())
            .filter(doc! {"k": 50})
            .update(doc! {"$set": {"v": 1}})
            .build()
            .into(),
        UpdateManyModel::builder()
            .namespace(s.clone())
            .filter(doc! {})
            .update(doc! {"$inc": {"n": 1}})
            .build()
            .into(),
        UpdateOneModel::builder()
            .namespace(s.clone())
            .filter(doc! {"k": 150})
            .update(doc! {"$set": {"v": 2}})
            .upsert(true)
            .build()
            .into(),
        ReplaceOneModel::builder()
            .namespace(s.clone())
            .filter(doc! {"_id": 3})
            .replacement(doc! {"k": 500, "replaced": true})
            .build()
            .into(),
        DeleteOneModel::builder()
            .namespace(s.clone())
            .filter(doc! {"_id": 1})
            .build()
            .into(),
        DeleteManyModel::builder()
            .namespace(p.clone())
            .filter(doc! {})
            .build()
            .into(),
    ];
    let r = client.bulk_write(models).verbose_results().await.unwrap();
    assert_eq!(r.summary.inserted_count, 4);
    assert_eq!(r.summary.matched_count, 5, "1 + 3 + 1 matched");
    assert_eq!(r.summary.modified_count, 5);
    assert_eq!(r.summary.upserted_count, 1);
    assert_eq!(r.summary.deleted_count, 2);
    assert_eq!(r.update_results[&5].matched_count, 3);
    assert!(r.update_results[&6].upserted_id.is_some());
    assert_eq!(r.delete_results[&8].deleted_count, 1);
    assert_eq!(
        on_shard(&cluster.shards[1], "bw").await,
        vec![doc! {"_id": 2, "k": 50, "v": 1, "n": 1}]
    );
    let high = on_shard(&cluster.shards[2], "bw").await;
    assert_eq!(high.len(), 2, "{high:?}");
    assert!(high.contains(&doc! {"_id": 3, "k": 500, "replaced": true}));
    assert_eq!(plain.count_documents(doc! {}).await.unwrap(), 0);

    // Ordered: a duplicate key stops the rest; a shard-key change is refused.
    let models: Vec<WriteModel> = vec![
        insert(&s, doc! {"_id": 10, "k": 10}),
        insert(&s, doc! {"_id": 2, "k": 50}),
        insert(&s, doc! {"_id": 11, "k": 11}),
    ];
    let e = client.bulk_write(models).await.unwrap_err();
    let ErrorKind::BulkWrite(bw) = &*e.kind else {
        panic!("{e}")
    };
    assert_eq!(bw.write_errors.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(bw.write_errors[&1].code, 11000);
    assert_eq!(
        sharded
            .count_documents(doc! {"_id": {"$in": [10, 11]}})
            .await
            .unwrap(),
        1
    );
    let models: Vec<WriteModel> = vec![UpdateOneModel::builder()
        .namespace(s.clone())
        .filter(doc! {"k": 10})
        .update(doc! {"$set": {"k": 900}})
        .build()
        .into()];
    // A retryable shard-key change moves the document to its new owner.
    let r = client.bulk_write(models).await.unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let high = on_shard(&cluster.shards[2], "bw").await;
    assert!(
        high.iter().any(|d| d.get_i32("k").ok() == Some(900)),
        "{high:?}"
    );

    // Retried once after the router cut the connection: applied once.
    admin(
        &client,
        doc! {"configureFailPoint": "shardgateCloseConnectionAfterWrite", "mode": {"times": 1}},
    )
    .await;
    let models: Vec<WriteModel> = vec![
        insert(&s, doc! {"_id": 20, "k": 20}),
        UpdateOneModel::builder()
            .namespace(s.clone())
            .filter(doc! {"k": 20})
            .update(doc! {"$inc": {"n": 1}})
            .build()
            .into(),
    ];
    client.bulk_write(models).await.unwrap();
    let d = sharded.find_one(doc! {"_id": 20}).await.unwrap().unwrap();
    assert_eq!(d, doc! {"_id": 20, "k": 20, "n": 1});

    // More results than the first batch holds: the rest by getMore.
    let mut raw = support::RawConn::connect(cluster.router.addr).await;
    let ops: Vec<Document> = (100..107)
        .map(|i| doc! {"insert": 0, "document": {"_id": i, "k": i}})
        .collect();
    let reply = raw
        .command(doc! {
            "bulkWrite": 1, "ops": ops, "nsInfo": [{"ns": "bw.c"}],
            "cursor": {"batchSize": 3}, "$db": "admin",
        })
        .await;
    assert_eq!(reply.get_i32("nInserted").unwrap(), 7, "{reply}");
    let cursor = reply.get_document("cursor").unwrap();
    let mut idx: Vec<i32> = cursor
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|r| r.as_document().unwrap().get_i32("idx").unwrap())
        .collect();
    assert_eq!(idx, [0, 1, 2]);
    let mut id = cursor.get_i64("id").unwrap();
    while id != 0 {
        let more = raw
            .command(doc! {"getMore": id, "collection": "$cmd.bulkWrite", "batchSize": 3, "$db": "admin"})
            .await;
        let c = more
            .get_document("cursor")
            .unwrap_or_else(|_| panic!("{more}"));
        idx.extend(
            c.get_array("nextBatch")
                .unwrap()
                .iter()
                .map(|r| r.as_document().unwrap().get_i32("idx").unwrap()),
        );
        id = c.get_i64("id").unwrap();
    }
    assert_eq!(idx, (0..7).collect::<Vec<_>>());
    let gone = raw
        .command(doc! {"getMore": 12345i64, "collection": "$cmd.bulkWrite", "$db": "admin"})
        .await;
    assert_eq!(gone.get_i32("code").unwrap(), 43, "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymongo_bulk_writes_on_a_sharded_collection() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    shard_three_ways(&client, "py").await;
    let out = support::pymongo(
        &cluster.router.uri(),
        r#"
import os
from pymongo import MongoClient, InsertOne, UpdateOne, UpdateMany, ReplaceOne, DeleteOne, DeleteMany
from pymongo.errors import BulkWriteError
c = MongoClient(os.environ["URI"])
coll = c.py.c
# Collection-level bulk: insert, update and delete commands.
r = coll.bulk_write([
    InsertOne({"_id": 1, "k": -1}),
    InsertOne({"_id": 2, "k": 20}),
    InsertOne({"_id": 3, "k": 300}),
    UpdateOne({"k": 20}, {"$set": {"a": 1}}),
    UpdateMany({"k": {"$gte": -5}}, {"$inc": {"n": 1}}),
    ReplaceOne({"k": 300, "_id": 3}, {"k": 300, "b": 2}),
    UpdateOne({"k": 150}, {"$set": {"c": 3}}, upsert=True),
    DeleteOne({"_id": 1}),
], ordered=False)
print("collection", r.inserted_count, r.matched_count, r.modified_count, r.upserted_count, r.deleted_count)
try:
    coll.bulk_write([InsertOne({"_id": 9, "k": 9}), InsertOne({"_id": 2, "k": 20}), InsertOne({"_id": 10, "k": 10})])
except BulkWriteError as e:
    print("ordered", e.details["nInserted"], [w["index"] for w in e.details["writeErrors"]], [w["code"] for w in e.details["writeErrors"]])
r = coll.update_one({"a": 1}, {"$set": {"z": 1}})
print("no key", r.matched_count, r.modified_count)
# Client-level bulk: the bulkWrite command.
r = c.bulk_write([
    InsertOne({"_id": 11, "k": 111}, namespace="py.c"),
    InsertOne({"_id": 1}, namespace="py.other"),
    UpdateOne({"k": 111}, {"$set": {"d": 4}}, namespace="py.c"),
    DeleteMany({"k": {"$lt": 0}}, namespace="py.c"),
])
print("client", r.inserted_count, r.matched_count, r.modified_count, r.deleted_count)
print("total", coll.count_documents({}), sorted(d["_id"] for d in coll.find({}, {"_id": 1}) if isinstance(d["_id"], int)))
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "collection 3 5 5 1 1", "{out}");
    assert_eq!(lines[1], "ordered 1 [1] [11000]", "{out}");
    assert_eq!(lines[2], "no key 1 1", "{out}");
    assert_eq!(lines[3], "client 2 1 1 0", "{out}");
    assert_eq!(lines[4], "total 5 [2, 3, 9, 11]", "{out}");
    let mid = on_shard(&cluster.shards[1], "py").await;
    let ids: Vec<i32> = mid.iter().filter_map(|d| d.get_i32("_id").ok()).collect();
    assert_eq!(ids, vec![2, 9], "{mid:?}");
}

/// A document of `size` BSON bytes with shard key `k`.
fn sized(k: i32, size: usize) -> Document {
    let mut d = doc! {"_id": k, "k": k, "pad": ""};
    let pad = size - d.to_vec().unwrap().len();
    d.insert("pad", "x".repeat(pad));
    assert_eq!(d.to_vec().unwrap().len(), size);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_at_and_just_past_16_mib_get_the_servers_answer() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    shard_three_ways(&client, "big").await;
    let coll = client.database("big").collection::<Document>("c");
    let max = 16 * 1024 * 1024;
    // Exactly 16 MiB is a document like any other.
    coll.insert_one(sized(5, max)).await.unwrap();
    // Past it (drivers send up to 16 KiB more, so the server judges): that
    // write alone fails, the others are applied and the connection stays.
    let reply = client
        .database("big")
        .run_command(doc! {
            "insert": "c",
            "documents": [sized(150, 100), sized(151, max + 100), sized(152, 100)],
            "ordered": false,
        })
        .await
        .unwrap();
    let errors = reply.get_array("writeErrors").unwrap();
    let failed: Vec<i32> = errors
        .iter()
        .map(|e| e.as_document().unwrap().get_i32("index").unwrap())
        .collect();
    assert_eq!(failed, [1], "{:?}", errors);
    assert_eq!(reply.get_i32("n").unwrap(), 2);
    // The same through pymongo, whose insert_many sends the documents as an
    // OP_MSG document sequence.
    let out = support::pymongo(
        &cluster.router.uri(),
        r#"
import os, pymongo
from pymongo.errors import BulkWriteError
c = pymongo.MongoClient(os.environ["URI"])
coll = c.big.c
big = {"_id": 161, "k": 161, "pad": "x" * (16 * 1024 * 1024)}
try:
    coll.insert_many([{"_id": 160, "k": 160}, big, {"_id": 162, "k": 162}], ordered=False)
except BulkWriteError as e:
    print("failed", [w["index"] for w in e.details["writeErrors"]])
print("ping", c.admin.command("ping")["ok"])
"#,
    );
    assert_eq!(out.trim(), "failed [1]\nping 1.0", "{out}");
    let mut ids: Vec<i32> = coll
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_i32("_id").unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [5, 150, 152, 160, 162]);
}
