//! `moveCollection` (mongos ≥ 8.0): an unsharded collection moves whole to
//! another shard while a client writes; every write is there afterwards
//! (compared with one unsharded server given the same writes), the
//! documents and indexes live on the new shard only, the collection is
//! tracked as mongos tracks it (`unsplittable`, key `{_id: 1}`) and still
//! shown unsharded; `split`/`moveChunk` leave it alone; mongos's errors.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bson::{doc, Document};
use mongodb::Collection;
use support::{admin, admin_error, all_by_id as all, direct_client, TestCluster};

/// Writes (inserts, updates, deletes) to both until `stop`; returns how
/// many it made.
async fn write_until(
    router: Collection<Document>,
    reference: Collection<Document>,
    stop: Arc<AtomicBool>,
) -> i64 {
    let mut i = 0i64;
    while !stop.load(Ordering::SeqCst) {
        let id = (i * 7919) % 2000;
        for c in [&router, &reference] {
            let done = match i % 3 {
                0 => c
                    .insert_one(doc! {"_id": 10_000 + i, "v": i})
                    .await
                    .map(|_| ()),
                1 => c
                    .update_one(doc! {"_id": id}, doc! {"$inc": {"v": 1}})
                    .await
                    .map(|_| ()),
                _ => c.delete_one(doc! {"_id": id}).await.map(|_| ()),
            };
            done.unwrap_or_else(|e| panic!("write {i}: {e}"));
        }
        i += 1;
    }
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_collection_under_writes_loses_nothing() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "mc", "primaryShard": "shard0000"},
    )
    .await;
    let db = client.database("mc");
    let router = db.collection::<Document>("c");
    let docs: Vec<Document> = (0..2000i64).map(|i| doc! {"_id": i, "v": i % 17}).collect();
    router.insert_many(docs.clone()).await.unwrap();
    db.run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"v": 1}, "name": "v_1"}]})
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference_server = support::start_shards(dir.path(), 1, false).await;
    let reference = direct_client(&reference_server[0])
        .await
        .database("mc")
        .collection::<Document>("c");
    reference.insert_many(docs).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(router.clone(), reference.clone(), stop.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    admin(
        &client,
        doc! {"moveCollection": "mc.c", "toShard": "shard0002"},
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let writes = writer.await.unwrap();
    assert!(writes > 20, "the client wrote during the move ({writes})");

    // Every write, each document once, all of them on shard0002.
    let want = all(&reference).await;
    assert_eq!(all(&router).await, want);
    let on = |i: usize| {
        let s = &cluster.shards[i];
        async move {
            direct_client(s)
                .await
                .database("mc")
                .collection::<Document>("c")
                .count_documents(doc! {})
                .await
                .unwrap()
        }
    };
    assert_eq!(on(2).await, want.len() as u64);
    assert_eq!(on(0).await, 0, "the source's copy is deleted");
    let indexes: Vec<String> = direct_client(&cluster.shards[2])
        .await
        .database("mc")
        .collection::<Document>("c")
        .list_index_names()
        .await
        .unwrap();
    assert!(indexes.contains(&"v_1".to_owned()), "{indexes:?}");

    // Tracked as mongos tracks it, and still unsharded to a user.
    let colls = support::config_docs(&client, "collections", doc! {"_id": "mc.c"}, doc! {}).await;
    assert!(colls[0].get_bool("unsplittable").unwrap());
    assert_eq!(colls[0].get_document("key").unwrap(), &doc! {"_id": 1});
    let stats = db.run_command(doc! {"collStats": "c"}).await.unwrap();
    assert!(!stats.get_bool("sharded").unwrap());
    assert_eq!(
        db.list_collection_names().await.unwrap(),
        vec!["c".to_owned()]
    );
    for cmd in [
        doc! {"split": "mc.c", "middle": {"_id": 500}},
        doc! {"moveChunk": "mc.c", "find": {"_id": 1}, "to": "shard0001"},
    ] {
        assert_eq!(admin_error(&client, cmd.clone()).await, 118, "{cmd}");
    }

    // Moved again, back to the primary; then sharded where it lies.
    admin(
        &client,
        doc! {"moveCollection": "mc.c", "toShard": "shard0000"},
    )
    .await;
    assert_eq!(on(0).await, want.len() as u64);
    assert_eq!(on(2).await, 0);
    assert_eq!(all(&router).await, want);
    admin(&client, doc! {"shardCollection": "mc.c", "key": {"_id": 1}}).await;
    let colls = support::config_docs(&client, "collections", doc! {"_id": "mc.c"}, doc! {}).await;
    assert!(colls[0].get("unsplittable").is_none());
    let stats = db.run_command(doc! {"collStats": "c"}).await.unwrap();
    assert!(stats.get_bool("sharded").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_collection_errors_are_mongos_errors() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "me", "primaryShard": "shard0000"},
    )
    .await;
    let db = client.database("me");
    db.collection::<Document>("u")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    db.collection::<Document>("s")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    admin(&client, doc! {"shardCollection": "me.s", "key": {"_id": 1}}).await;
    for (cmd, code) in [
        (doc! {"moveCollection": "me.s", "toShard": "shard0001"}, 26),
        (
            doc! {"moveCollection": "me.nothing", "toShard": "shard0001"},
            26,
        ),
        (doc! {"moveCollection": "me.u"}, 40414),
        (doc! {"moveCollection": "me.u", "toShard": "nope"}, 70),
    ] {
        assert_eq!(admin_error(&client, cmd.clone()).await, code, "{cmd}");
    }
    // Moving to where it is already changes nothing.
    admin(
        &client,
        doc! {"moveCollection": "me.u", "toShard": "shard0000"},
    )
    .await;
    let u = db.collection::<Document>("u");
    assert_eq!(u.count_documents(doc! {}).await.unwrap(), 1);

    // Dropped after a move: its tracking goes too, and a new collection of
    // the same name is an ordinary one on the primary.
    admin(
        &client,
        doc! {"moveCollection": "me.u", "toShard": "shard0001"},
    )
    .await;
    u.drop().await.unwrap();
    let tracked = support::config_docs(&client, "collections", doc! {"_id": "me.u"}, doc! {}).await;
    assert!(tracked.is_empty(), "{tracked:?}");
    u.insert_one(doc! {"_id": 2}).await.unwrap();
    let on_primary = direct_client(&cluster.shards[0])
        .await
        .database("me")
        .collection::<Document>("u")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(on_primary, 1);
    assert_eq!(all(&u).await, vec![doc! {"_id": 2}]);
}
