//! `movePrimary` while clients write: a database's unsharded collections
//! (with their options and indexes) and views move to another shard (the
//! copy and its change-stream catch-up outside the critical section),
//! every acknowledged write is there exactly once, nothing is left on the
//! old primary, and `removeShard` of the old primary then completes.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use bson::{doc, Document};
use futures::TryStreamExt;
use support::{admin, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_primary_while_writing_then_remove_the_old_primary() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "mp", "primaryShard": "shard0000"},
    )
    .await;
    let db = client.database("mp");
    let docs: Vec<Document> = (0..2_000i64)
        .map(|i| doc! {"_id": i, "x": i % 17})
        .collect();
    db.collection("a").insert_many(docs).await.unwrap();
    db.run_command(doc! {
        "create": "b",
        "validator": {"x": {"$type": "number"}},
    })
    .await
    .unwrap();
    db.run_command(
        doc! {"createIndexes": "b", "indexes": [{"key": {"x": 1}, "name": "x_1", "unique": true}]},
    )
    .await
    .unwrap();
    db.collection("b")
        .insert_one(doc! {"_id": 1, "x": 1})
        .await
        .unwrap();
    db.run_command(doc! {"create": "v", "viewOn": "a", "pipeline": [{"$match": {"x": 3}}]})
        .await
        .unwrap();

    // removeShard of the primary waits for movePrimary.
    let started = admin(&client, doc! {"removeShard": "shard0000"}).await;
    assert_eq!(
        started.get_array("dbsToMove").unwrap(),
        &vec![bson::Bson::String("mp".into())]
    );

    // Writers insert while the primary moves; each counts what was
    // acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicI64::new(0));
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        let coll = db.collection::<Document>("a");
        writers.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let id = 100_000 + w * 1_000_000 + i;
                if coll.insert_one(doc! {"_id": id, "x": 1}).await.is_ok() {
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let moved = admin(&client, doc! {"movePrimary": "mp", "to": "shard0001"}).await;
    assert!(
        moved.get_str("primary").unwrap().starts_with("shard0001:"),
        "{moved}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let written = acknowledged.load(Ordering::SeqCst);
    assert!(written > 0);
    // The copy ran while the writers wrote, caught up by the change stream.
    let logged =
        support::config_docs(&client, "changelog", doc! {"what": "movePrimary"}, doc! {}).await;
    assert_eq!(logged.len(), 1);
    let details = logged[0].get_document("details").unwrap();
    assert!(
        !details.get_bool("copiedInCriticalSection").unwrap(),
        "{details}"
    );
    assert!(details.get_i64("caughtUp").unwrap() > 0, "{details}");
    assert_eq!(details.get_str("to").unwrap(), "shard0001");

    // Every acknowledged document is on the new primary, once.
    let new_primary = support::direct_client(&cluster.shards[1])
        .await
        .database("mp");
    let old_primary = support::direct_client(&cluster.shards[0])
        .await
        .database("mp");
    let on_new = new_primary
        .collection::<Document>("a")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(on_new as i64, 2_000 + written);
    let through_router = db
        .collection::<Document>("a")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(through_router, on_new);
    let left: Vec<String> = old_primary.list_collection_names().await.unwrap();
    assert!(left.is_empty(), "left on the old primary: {left:?}");
    // Options, indexes and the view came along.
    let e = db
        .collection("b")
        .insert_one(doc! {"_id": 2, "x": "not a number"})
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&e), 121, "the validator moved");
    let e = db
        .collection("b")
        .insert_one(doc! {"_id": 3, "x": 1})
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&e), 11000, "the unique index moved");
    let view: Vec<Document> = db
        .collection::<Document>("v")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(view.len(), 2_000 / 17 + 1);

    // The old primary holds nothing now: removeShard completes.
    let done = admin(&client, doc! {"removeShard": "shard0000"}).await;
    assert_eq!(done.get_str("state").unwrap(), "completed", "{done}");
    let e = support::admin_error(&client, doc! {"movePrimary": "mp", "to": "nosuch"}).await;
    assert_eq!(e, 70);
    let e =
        support::admin_error(&client, doc! {"movePrimary": "nosuchdb", "to": "shard0001"}).await;
    assert_eq!(e, 26);
}
