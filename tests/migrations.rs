//! Chunk migration: `moveChunk`/`moveRange` while writers and readers run,
//! with every acknowledged write present exactly once afterwards and no
//! read ever seeing a document twice or missing a stable one.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use support::{admin, admin_error, config_docs, TestCluster};

/// `mig.c` sharded on `{k: 1}`, three chunks on shard0000:
/// [MinKey, 1000), [1000, 2000), [2000, MaxKey).
async fn setup(client: &mongodb::Client) {
    admin(
        client,
        doc! {"enableSharding": "mig", "primaryShard": "shard0000"},
    )
    .await;
    admin(client, doc! {"shardCollection": "mig.c", "key": {"k": 1}}).await;
    for at in [1000, 2000] {
        admin(client, doc! {"split": "mig.c", "middle": {"k": at}}).await;
    }
}

async fn on_shard(shard: &shardgate::shard_process::ShardProcess) -> Vec<Document> {
    support::direct_client(shard)
        .await
        .database("mig")
        .collection::<Document>("c")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_under_load_lose_and_duplicate_nothing() {
    let config = shardgate_router::RouterConfig {
        orphan_cleanup_delay_secs: 1,
        balancer: false,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, config, false).await;
    let client = cluster.client().await;
    setup(&client).await;
    let coll = client.database("mig").collection::<Document>("c");
    // Stable documents: never deleted, only incremented.
    let stable: Vec<Document> = (0..3000)
        .map(|i| doc! {"_id": i, "k": i, "n": 0, "pad": "x".repeat(200)})
        .collect();
    coll.insert_many(stable).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let longest_write = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let increments: Arc<Mutex<BTreeMap<i64, i32>>> = Arc::default();
    let inserted: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let deleted: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let mut tasks = Vec::new();
    // Writers: increments on stable documents, inserts of new ones, and
    // deletes of some of those new ones.
    for w in 0..3i64 {
        let (coll, stop, longest_write) = (coll.clone(), stop.clone(), longest_write.clone());
        let (increments, inserted, deleted) =
            (increments.clone(), inserted.clone(), deleted.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = (i * 7 + w * 1013) % 3000;
                let started = std::time::Instant::now();
                if coll
                    .update_one(doc! {"k": id}, doc! {"$inc": {"n": 1}})
                    .await
                    .map(|r| r.modified_count == 1)
                    .unwrap_or(false)
                {
                    *increments.lock().unwrap().entry(id).or_default() += 1;
                }
                longest_write.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let new_id = 10_000 + w * 100_000 + i;
                let k = (i * 37 + w * 500) % 3000;
                if coll
                    .insert_one(doc! {"_id": new_id, "k": k, "n": 0})
                    .await
                    .is_ok()
                {
                    inserted.lock().unwrap().insert(new_id);
                }
                if i % 3 == 0 {
                    let victim = new_id - 1;
                    let vk = ((i - 1) * 37 + w * 500) % 3000;
                    if let Ok(r) = coll.delete_one(doc! {"_id": victim, "k": vk}).await {
                        if r.deleted_count == 1 {
                            deleted.lock().unwrap().insert(victim);
                        }
                    }
                }
            }
        }));
    }
    // Readers: every scan sees each stable document once; counts never
    // fall below the stable set.
    let scans = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..2 {
        let (coll, stop, scans) = (coll.clone(), stop.clone(), scans.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let docs: Vec<Document> = coll
                    .find(doc! {})
                    .projection(doc! {"_id": 1})
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                let mut ids = BTreeSet::new();
                for d in &docs {
                    let id = d.get("_id").cloned().unwrap();
                    assert!(ids.insert(id.to_string()), "a scan saw {id} twice");
                }
                for i in 0..3000 {
                    assert!(
                        ids.contains(&Bson::Int32(i).to_string()),
                        "a scan missed stable document {i}"
                    );
                }
                let n = coll.count_documents(doc! {}).await.unwrap();
                assert!(n >= 3000, "a count missed stable documents: {n}");
                scans.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let moves = [
        doc! {"moveChunk": "mig.c", "find": {"k": 5}, "to": "shard0001"},
        doc! {"moveChunk": "mig.c", "bounds": [{"k": 1000}, {"k": 2000}], "to": "shard0002"},
        doc! {"moveRange": "mig.c", "min": {"k": 2000}, "max": {"k": 2500}, "toShard": "shard0001"},
        doc! {"moveChunk": "mig.c", "find": {"k": 1500}, "to": "shard0000", "_waitForDelete": true},
    ];
    for m in moves {
        let r = admin(&client, m.clone()).await;
        assert!(r.get_i64("millis").is_ok(), "{m}: {r}");
        println!("{m}: {r}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(scans.load(Ordering::Relaxed) > 0);

    // Every acknowledged write is there exactly once.
    let all: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut by_id: BTreeMap<String, Document> = BTreeMap::new();
    for d in all {
        let id = d.get("_id").unwrap().to_string();
        assert!(by_id.insert(id.clone(), d).is_none(), "{id} twice");
    }
    let increments = increments.lock().unwrap().clone();
    for i in 0..3000i64 {
        let d = &by_id[&Bson::Int32(i as i32).to_string()];
        let expected = increments.get(&i).copied().unwrap_or(0);
        assert_eq!(d.get_i32("n").unwrap(), expected, "increments of {i}");
    }
    let inserted = inserted.lock().unwrap().clone();
    let deleted = deleted.lock().unwrap().clone();
    for id in &inserted {
        let present = by_id.contains_key(&Bson::Int64(*id).to_string());
        assert_eq!(present, !deleted.contains(id), "inserted document {id}");
    }
    assert_eq!(by_id.len(), 3000 + inserted.len() - deleted.len());

    // Chunks are where the moves put them, and after range deletion each
    // document is stored on exactly one shard: its owner.
    let chunks = config_docs(&client, "chunks", doc! {}, doc! {"min": 1}).await;
    let owners: Vec<(Bson, String)> = chunks
        .iter()
        .map(|c| {
            (
                c.get_document("min").unwrap().get("k").cloned().unwrap(),
                c.get_str("shard").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        vec![
            (Bson::MinKey, "shard0001".to_owned()),
            (Bson::Int32(1000), "shard0000".to_owned()),
            (Bson::Int32(2000), "shard0001".to_owned()),
            (Bson::Int32(2500), "shard0000".to_owned()),
        ]
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let owner = |k: i64| match k {
        k if k < 1000 => 1,
        k if k < 2000 => 0,
        k if k < 2500 => 1,
        _ => 0,
    };
    let mut stored = 0;
    for (i, shard) in cluster.shards.iter().enumerate() {
        for d in on_shard(shard).await {
            let k = match d.get("k").unwrap() {
                Bson::Int32(k) => *k as i64,
                Bson::Int64(k) => *k,
                other => panic!("{other}"),
            };
            assert_eq!(owner(k), i, "{d} on shard{i}");
            stored += 1;
        }
    }
    assert_eq!(stored, by_id.len(), "no orphan left behind");

    // The changelog tells the story.
    let log = config_docs(
        &client,
        "changelog",
        doc! {"what": "moveChunk.commit"},
        doc! {"time": 1},
    )
    .await;
    assert_eq!(log.len(), 4);
    let details = log[0].get_document("details").unwrap();
    assert!(details.get_i64("cloned").unwrap() > 0, "{details}");
    for entry in &log {
        let d = entry.get_document("details").unwrap();
        let bytes = d.get_i64("clonedBytes").unwrap() as f64;
        let millis = d.get_i64("totalMillis").unwrap().max(1) as f64;
        println!(
            "migration {}: {} documents, {:.2} MB in {} ms = {:.2} MB/s, critical section {} ms",
            d.get_document("min").unwrap(),
            d.get_i64("cloned").unwrap(),
            bytes / 1e6,
            millis,
            bytes / 1e6 / (millis / 1000.0),
            d.get_i64("criticalSectionMillis").unwrap(),
        );
    }
    println!(
        "longest single write seen by a writer: {} ms",
        longest_write.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_chunk_refuses_bad_input() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    setup(&client).await;
    assert_eq!(
        admin_error(
            &client,
            doc! {"moveChunk": "mig.c", "find": {"k": 5}, "to": "nope"}
        )
        .await,
        70
    );
    assert_eq!(
        admin_error(
            &client,
            doc! {"moveChunk": "mig.c", "bounds": [{"k": 0}, {"k": 5}], "to": "shard0001"}
        )
        .await,
        2
    );
    assert_eq!(
        admin_error(
            &client,
            doc! {"moveChunk": "mig.nope", "find": {"k": 5}, "to": "shard0001"}
        )
        .await,
        118
    );
    assert_eq!(
        admin_error(&client, doc! {"moveChunk": "mig.c", "to": "shard0001"}).await,
        2
    );
}

/// A migration runs while 64 clients keep every connection of the router's
/// shard pool busy: the balancer copies over its own pools, so the move
/// completes and every client keeps being served meanwhile (figures
/// printed, never asserted: speed is for benchmarks).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_runs_while_clients_saturate_the_router_pool() {
    let config = shardgate_router::RouterConfig {
        orphan_cleanup_delay_secs: 1,
        balancer: false,
        pool: shardgate_router::PoolConfig {
            max_size: 8,
            ..Default::default()
        },
        ..Default::default()
    };
    let cluster = TestCluster::start_with(2, config, false).await;
    let client = cluster.client().await;
    setup(&client).await;
    let coll = client.database("mig").collection::<Document>("c");
    coll.insert_many((0..3000).map(|i| doc! {"_id": i, "k": i, "pad": "x".repeat(200)}))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let moving = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..64i64 {
        let (coll, stop, moving) = (coll.clone(), stop.clone(), moving.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ops, mut during) = (0u64, 0u64);
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                i = (i * 31 + 7) % 3000;
                let found = coll.find_one(doc! {"k": i}).await.unwrap();
                assert_eq!(found.unwrap().get_i64("k").unwrap_or(i), i);
                ops += 1;
                if moving.load(Ordering::Relaxed) {
                    during += 1;
                }
            }
            (ops, during)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    moving.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    admin(
        &client,
        doc! {"moveChunk": "mig.c", "bounds": [{"k": 1000}, {"k": 2000}], "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    let moved = started.elapsed();
    moving.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut during = Vec::new();
    let mut total = 0;
    for t in tasks {
        let (ops, d) = t.await.unwrap();
        total += ops;
        during.push(d);
    }
    let served = during.iter().filter(|d| **d > 0).count();
    println!(
        "migration of 1000 documents under 64 clients on an 8-connection pool: {} ms; clients served {} reads during it ({:.0}/s), {} reads in all; every client served during it: {}",
        moved.as_millis(),
        during.iter().sum::<u64>(),
        during.iter().sum::<u64>() as f64 / moved.as_secs_f64(),
        total,
        served == 64
    );
    assert_eq!(served, 64, "every client was served while the chunk moved");
    let owners: Vec<String> = config_docs(&client, "chunks", doc! {"ns": "mig.c"}, doc! {"min": 1})
        .await
        .iter()
        .map(|c| c.get_str("shard").unwrap().to_owned())
        .collect();
    assert_eq!(owners, ["shard0000", "shard0001", "shard0000"]);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3000);
}

/// A chunk moved away and back again before its first source's delayed
/// range deletion: the deletion must not remove the documents that shard
/// owns again (it once deleted them all, as a later lock holder's recovery
/// had already finished that migration and the next one reused its record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_moved_back_keeps_its_documents_after_the_delayed_deletion() {
    let config = shardgate_router::RouterConfig {
        balancer: false,
        orphan_cleanup_delay_secs: 2,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, config, false).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "back", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "back.c", "key": {"k": 1}}).await;
    admin(&client, doc! {"split": "back.c", "middle": {"k": 600}}).await;
    admin(&client, doc! {"split": "back.c", "middle": {"k": 800}}).await;
    let coll = client.database("back").collection::<Document>("c");
    coll.insert_many((0..1000).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    for to in [
        "shard0002",
        "shard0000",
        "shard0002",
        "shard0001",
        "shard0002",
    ] {
        admin(
            &client,
            doc! {"moveChunk": "back.c", "find": {"k": 700}, "to": to},
        )
        .await;
    }
    // Past every delayed deletion.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1000);
    let mut in_chunk = Vec::new();
    for s in &cluster.shards {
        let c = support::direct_client(s)
            .await
            .database("back")
            .collection::<Document>("c");
        in_chunk.push(
            c.count_documents(doc! {"k": {"$gte": 600, "$lt": 800}})
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        in_chunk,
        [0, 0, 200],
        "the chunk's documents on its owner only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_migration_keeps_the_grace_period_of_the_last_one() {
    let config = shardgate_router::RouterConfig {
        balancer: false,
        orphan_cleanup_delay_secs: 3,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, config, false).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "grace", "primaryShard": "shard0000"},
    )
    .await;
    admin(
        &client,
        doc! {"shardCollection": "grace.c", "key": {"k": 1}},
    )
    .await;
    admin(&client, doc! {"split": "grace.c", "middle": {"k": 500}}).await;
    let coll = client.database("grace").collection::<Document>("c");
    coll.insert_many((0..1000).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    let on_source = support::direct_client(&cluster.shards[0])
        .await
        .database("grace")
        .collection::<Document>("c");
    let low = doc! {"k": {"$lt": 500}};
    admin(
        &client,
        doc! {"moveChunk": "grace.c", "find": {"k": 0}, "to": "shard0001"},
    )
    .await;
    // The next migration of the collection starts at once (the lock holder
    // recovers what is recorded): the first one's copies stay on its
    // source for their grace period, for cursors opened there before its
    // commit.
    admin(
        &client,
        doc! {"moveChunk": "grace.c", "find": {"k": 700}, "to": "shard0002"},
    )
    .await;
    assert_eq!(on_source.count_documents(low.clone()).await.unwrap(), 500);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1000);
    // And the first chunk moves back before its deletion is due: the
    // copies it finds there are replaced, never counted twice, never lost.
    admin(
        &client,
        doc! {"moveChunk": "grace.c", "find": {"k": 0}, "to": "shard0000"},
    )
    .await;
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1000);
    // Then every source's copies go, and only those.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut per_shard = Vec::new();
        for s in &cluster.shards {
            let c = support::direct_client(s)
                .await
                .database("grace")
                .collection::<Document>("c");
            per_shard.push(c.count_documents(doc! {}).await.unwrap());
        }
        if per_shard == [500, 0, 500] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left on the shards: {per_shard:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1000);
}

/// A shard-key change that moves a document onto a shard still holding
/// an orphaned copy of it (left there by a migration, inside its grace
/// period) succeeds: the stale copy goes, and the document is stored once
/// with its new key. mongos answers DuplicateKey (11000) here; an
/// unsharded server would apply it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_onto_a_shard_holding_an_orphaned_copy_succeeds() {
    let config = shardgate_router::RouterConfig {
        balancer: false,
        orphan_cleanup_delay_secs: 3600,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(2, config, false).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "orph", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "orph.c", "key": {"k": 1}}).await;
    admin(&client, doc! {"split": "orph.c", "middle": {"k": 500}}).await;
    let coll = client.database("orph").collection::<Document>("c");
    coll.insert_many((0..1000).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    // [500, MaxKey) moves; its 500 copies stay on shard0000 for an hour.
    admin(
        &client,
        doc! {"moveChunk": "orph.c", "find": {"k": 700}, "to": "shard0001"},
    )
    .await;
    let shard0 = support::direct_client(&cluster.shards[0])
        .await
        .database("orph")
        .collection::<Document>("c");
    assert_eq!(shard0.count_documents(doc! {}).await.unwrap(), 1000);
    // Document 700 (on shard0001) gets a key shard0000 owns, where its
    // orphaned copy (k: 700) is: a retryable write, then in a transaction.
    let moved = coll
        .update_one(doc! {"_id": 700}, doc! {"$set": {"k": 100}})
        .await
        .unwrap();
    assert_eq!((moved.matched_count, moved.modified_count), (1, 1));
    // In a transaction whose snapshot on shard0000 still shows the copy
    // (the search read there), the first attempt ends with a
    // TransientTransactionError, as a driver's transaction helper expects,
    // and the next commits.
    let mut session = client.start_session().await.unwrap();
    let mut attempts = 0;
    loop {
        attempts += 1;
        session.start_transaction().await.unwrap();
        let replaced = coll
            .replace_one(doc! {"_id": 800}, doc! {"k": 200, "tag": "moved"})
            .session(&mut session)
            .await;
        match replaced {
            Ok(r) => {
                assert_eq!(r.modified_count, 1);
                session.commit_transaction().await.unwrap();
                break;
            }
            Err(e) if e.contains_label("TransientTransactionError") && attempts < 3 => {
                session.abort_transaction().await.ok();
            }
            Err(e) => panic!("attempt {attempts}: {e}"),
        }
    }
    for (id, k) in [(700, 100), (800, 200)] {
        let found: Vec<Document> = coll
            .find(doc! {"_id": id})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].get_i32("k").unwrap(), k);
        // On shard0000 once, with its new key; the stale copy is gone.
        let there: Vec<Document> = shard0
            .find(doc! {"_id": id})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(there.len(), 1);
        assert_eq!(there[0].get_i32("k").unwrap(), k);
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1000);
}
