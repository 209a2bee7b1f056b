//! Single-document writes by a field that is not the shard key
//! (`updateOne`, `deleteOne`, `findOneAndUpdate`,
//! `findOneAndDelete`, with and without `sort`), on a collection whose
//! chunks are spread unevenly over 3 shards (one moved while the
//! documents were there), compared with one unsharded server given the
//! same documents and writes: the same replies, the same documents after
//! each step, and each document stored once.

mod support;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Collection;
use support::{admin, direct_client, TestCluster};

async fn all(coll: &Collection<Document>) -> Vec<Document> {
    coll.find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn docs() -> Vec<Document> {
    (0..120i32)
        .map(|i| {
            doc! {
                "_id": i,
                "k": (i * 37) % 300,
                "email": format!("user{}@example.com", i % 40),
                "status": if i % 3 == 0 { "queued" } else { "done" },
                "rank": (i * 7) % 50,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_the_shard_key_match_an_unsharded_server() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "wk", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "wk.c", "key": {"k": 1}}).await;
    let router = client.database("wk").collection::<Document>("c");
    router.insert_many(docs()).await.unwrap();
    for (at, to) in [(60, "shard0001"), (200, "shard0002"), (250, "shard0001")] {
        admin(&client, doc! {"split": "wk.c", "middle": {"k": at}}).await;
        admin(
            &client,
            doc! {"moveChunk": "wk.c", "find": {"k": at}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    // The reference: a fourth server, unsharded, same documents.
    let dir = tempfile::tempdir().unwrap();
    let reference_server = support::start_shards(dir.path(), 1, false).await;
    let reference = direct_client(&reference_server[0])
        .await
        .database("wk")
        .collection::<Document>("c");
    reference.insert_many(docs()).await.unwrap();

    for coll in [&router, &reference] {
        let r = coll
            .update_one(
                doc! {"email": "user7@example.com"},
                doc! {"$set": {"seen": true}},
            )
            .await
            .unwrap();
        assert_eq!((r.matched_count, r.modified_count), (1, 1));
        let r = coll
            .delete_one(doc! {"email": "user3@example.com"})
            .await
            .unwrap();
        assert_eq!(r.deleted_count, 1);
        let r = coll
            .update_one(
                doc! {"email": "nobody@example.com"},
                doc! {"$set": {"x": 1}},
            )
            .await
            .unwrap();
        assert_eq!(r.matched_count, 0);
    }
    // Deterministic picks: by sort.
    let mut values = Vec::new();
    for coll in [&router, &reference] {
        let queued = coll
            .find_one_and_update(
                doc! {"status": "queued"},
                doc! {"$set": {"status": "running"}},
            )
            .sort(doc! {"rank": -1, "_id": 1})
            .return_document(mongodb::options::ReturnDocument::After)
            .await
            .unwrap();
        let deleted = coll
            .find_one_and_delete(doc! {"status": "done"})
            .sort(doc! {"rank": 1, "_id": -1})
            .await
            .unwrap();
        let none = coll
            .find_one_and_update(doc! {"status": "nope"}, doc! {"$set": {"x": 1}})
            .await
            .unwrap();
        values.push((queued, deleted, none));
    }
    assert_eq!(values[0], values[1], "findAndModify values");
    assert!(values[0].0.is_some() && values[0].1.is_some() && values[0].2.is_none());

    // updateOne and deleteOne pick *a* match: compare what the collections
    // hold by what was matched, not which one.
    let router_docs = all(&router).await;
    let reference_docs = all(&reference).await;
    assert_eq!(router_docs.len(), reference_docs.len());
    let seen = |d: &[Document]| d.iter().filter(|d| d.get_bool("seen").is_ok()).count();
    assert_eq!(seen(&router_docs), 1);
    assert_eq!(seen(&reference_docs), 1);
    let emails = |d: &[Document], e: &str| {
        d.iter()
            .filter(|d| d.get_str("email").ok() == Some(e))
            .count()
    };
    assert_eq!(
        emails(&router_docs, "user3@example.com"),
        emails(&reference_docs, "user3@example.com")
    );
    let running = |d: &[Document]| -> Vec<Bson> {
        d.iter()
            .filter(|d| d.get_str("status").ok() == Some("running"))
            .map(|d| d.get("_id").cloned().unwrap())
            .collect()
    };
    assert_eq!(running(&router_docs), running(&reference_docs));

    // Each document is stored once, on the shard that owns it.
    let mut stored = 0;
    for s in &cluster.shards {
        stored += direct_client(s)
            .await
            .database("wk")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
    }
    assert_eq!(stored as usize, router_docs.len());
}

/// Where the document `_id` is stored, by shard index.
async fn stored_on(cluster: &TestCluster, id: i32) -> Vec<usize> {
    let mut on = Vec::new();
    for (i, s) in cluster.shards.iter().enumerate() {
        let n = direct_client(s)
            .await
            .database("wk")
            .collection::<Document>("m")
            .count_documents(doc! {"_id": id})
            .await
            .unwrap();
        if n > 0 {
            on.push(i);
        }
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_key_change_moves_the_document_to_its_new_owner() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "wk", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "wk.m", "key": {"k": 1}}).await;
    for (at, to) in [(100, "shard0001"), (200, "shard0002")] {
        admin(&client, doc! {"split": "wk.m", "middle": {"k": at}}).await;
        admin(
            &client,
            doc! {"moveChunk": "wk.m", "find": {"k": at}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    let coll = client.database("wk").collection::<Document>("m");
    coll.insert_many((0..6).map(|i| doc! {"_id": i, "k": i * 40, "email": format!("u{i}")}))
        .await
        .unwrap();
    assert_eq!(stored_on(&cluster, 1).await, [0], "k 40 on shard0000");

    // A retryable updateOne by a non-key field moves it (shard0000 → 0002).
    let r = coll
        .update_one(doc! {"email": "u1"}, doc! {"$set": {"k": 250}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    assert_eq!(stored_on(&cluster, 1).await, [2]);
    // replaceOne by the key, to shard0001.
    coll.replace_one(
        doc! {"k": 250},
        doc! {"k": 150, "email": "u1", "replaced": true},
    )
    .await
    .unwrap();
    assert_eq!(stored_on(&cluster, 1).await, [1]);
    // findOneAndUpdate returns the new document, moved back.
    let after = coll
        .find_one_and_update(doc! {"email": "u1"}, doc! {"$set": {"k": 10}})
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap();
    assert_eq!(
        after,
        Some(doc! {"_id": 1, "k": 10, "email": "u1", "replaced": true})
    );
    assert_eq!(stored_on(&cluster, 1).await, [0]);
    // A key change that stays on its shard is an update.
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"k": 20}})
        .await
        .unwrap();
    assert_eq!(stored_on(&cluster, 1).await, [0]);
    // A move whose reply is projected by what only `find` projects:
    // `$slice`, positional `.$` (the query's match), `$elemMatch`.
    coll.insert_one(doc! {"_id": 7, "k": 60, "email": "u7", "arr": [1, 5, 9]})
        .await
        .unwrap();
    let after = mongodb::options::ReturnDocument::After;
    let sliced = coll
        .find_one_and_update(doc! {"email": "u7"}, doc! {"$set": {"k": 150}})
        .projection(doc! {"arr": {"$slice": 1}})
        .return_document(after.clone())
        .await
        .unwrap();
    assert_eq!(
        sliced,
        Some(doc! {"_id": 7, "k": 150, "email": "u7", "arr": [1]})
    );
    assert_eq!(stored_on(&cluster, 7).await, [1]);
    let positional = coll
        .find_one_and_update(
            doc! {"email": "u7", "arr": {"$gte": 5}},
            doc! {"$set": {"k": 250}},
        )
        .projection(doc! {"arr.$": 1})
        .return_document(after)
        .await
        .unwrap();
    assert_eq!(positional, Some(doc! {"_id": 7, "arr": [5]}));
    assert_eq!(stored_on(&cluster, 7).await, [2]);
    let matched = coll
        .find_one_and_update(doc! {"email": "u7"}, doc! {"$set": {"k": 40}})
        .projection(doc! {"k": 1, "arr": {"$elemMatch": {"$gt": 6}}})
        .await
        .unwrap();
    assert_eq!(
        matched,
        Some(doc! {"_id": 7, "k": 250, "arr": [9]}),
        "the document before"
    );
    assert_eq!(stored_on(&cluster, 7).await, [0]);
    coll.delete_one(doc! {"_id": 7}).await.unwrap();
    // In the client's own transaction, with another write: both or none.
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    coll.update_one(doc! {"email": "u2"}, doc! {"$set": {"k": 210}})
        .session(&mut s)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 99, "k": 5})
        .session(&mut s)
        .await
        .unwrap();
    assert_eq!(
        stored_on(&cluster, 2).await,
        [0],
        "not moved before the commit"
    );
    s.commit_transaction().await.unwrap();
    assert_eq!(stored_on(&cluster, 2).await, [2]);
    assert_eq!(stored_on(&cluster, 99).await, [0]);
    // Every document once, with its key, through the router.
    let docs = all(&coll).await;
    let keys: Vec<(i32, i32)> = docs
        .iter()
        .map(|d| (d.get_i32("_id").unwrap(), d.get_i32("k").unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            (0, 0),
            (1, 20),
            (2, 210),
            (3, 120),
            (4, 160),
            (5, 200),
            (99, 5)
        ]
    );
}

/// As mongos ≥ 7.0: an upsert whose filter has an exact `_id` but not the
/// shard key updates the matching document wherever it is, or inserts one
/// on the shard its key belongs to (a missing key field routes as null).
/// Without an exact `_id`, it is still refused (ShardKeyNotFound, 61).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_by_id_without_the_shard_key() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "wk", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "wk.m", "key": {"k": 1}}).await;
    for (at, to) in [(100, "shard0001"), (200, "shard0002")] {
        admin(&client, doc! {"split": "wk.m", "middle": {"k": at}}).await;
        admin(
            &client,
            doc! {"moveChunk": "wk.m", "find": {"k": at}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    let coll = client.database("wk").collection::<Document>("m");
    coll.insert_one(doc! {"_id": 1, "k": 150, "n": 0})
        .await
        .unwrap();

    // Matched: updated where it is.
    let r = coll
        .update_one(doc! {"_id": 1}, doc! {"$inc": {"n": 1}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(
        (r.matched_count, r.modified_count, r.upserted_id.clone()),
        (1, 1, None)
    );
    assert_eq!(stored_on(&cluster, 1).await, [1]);

    // Not matched: inserted on the owner of the new document's key.
    let r = coll
        .update_one(doc! {"_id": 2}, doc! {"$set": {"k": 250, "n": 5}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.upserted_id), (0, Some(Bson::Int32(2))));
    assert_eq!(
        stored_on(&cluster, 2).await,
        [2],
        "k 250 belongs to shard0002"
    );
    // With no key at all: the null key's chunk (shard0000).
    let r = coll
        .update_one(doc! {"_id": 3}, doc! {"$set": {"n": 7}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(r.upserted_id, Some(Bson::Int32(3)));
    assert_eq!(stored_on(&cluster, 3).await, [0]);

    // findOneAndUpdate with upsert, returning the new document.
    let got = coll
        .find_one_and_update(doc! {"_id": 4}, doc! {"$set": {"k": 120}})
        .upsert(true)
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap();
    assert_eq!(got, Some(doc! {"_id": 4, "k": 120}));
    assert_eq!(stored_on(&cluster, 4).await, [1]);

    // Without an exact _id: refused as mongos refuses it.
    let e = coll
        .update_one(doc! {"n": 99}, doc! {"$set": {"x": 1}})
        .upsert(true)
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&e), 61);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 4);
}

/// Retried shard-key changes are applied once: the router cuts the
/// connection after each move's reply is ready (its test fail point), the
/// driver retries the write with the same transaction number, and the
/// router replays the recorded reply. Each document ends exactly once, on
/// its new owner, updated once. The same move through mongosh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_key_changes_apply_once_and_mongosh_moves_a_user() {
    let config = shardgate_router::RouterConfig {
        balancer: false,
        enable_test_commands: true,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, config, false).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "wk", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "wk.m", "key": {"k": 1}}).await;
    for (at, to) in [(100, "shard0001"), (200, "shard0002")] {
        admin(&client, doc! {"split": "wk.m", "middle": {"k": at}}).await;
        admin(
            &client,
            doc! {"moveChunk": "wk.m", "find": {"k": at}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    let coll = client.database("wk").collection::<Document>("m");
    coll.insert_many(
        (0..9).map(|i| doc! {"_id": i, "k": i * 10, "email": format!("u{i}"), "n": 0}),
    )
    .await
    .unwrap();
    for i in 0..9 {
        let was = admin(
            &client,
            doc! {"configureFailPoint": "shardgateCloseConnectionAfterWrite", "mode": {"times": 1}},
        )
        .await;
        // The previous write consumed the fail point (its connection was cut).
        assert_eq!(was.get_i64("count").unwrap(), 0, "{was}");
        let to = 110 + 50 * (i % 3); // shard0001 or shard0002
        let r = coll
            .update_one(
                doc! {"email": format!("u{i}")},
                doc! {"$set": {"k": to}, "$inc": {"n": 1}},
            )
            .await
            .unwrap();
        assert_eq!((r.matched_count, r.modified_count), (1, 1));
        let owner = if to < 200 { 1 } else { 2 };
        assert_eq!(stored_on(&cluster, i).await, [owner], "document {i}");
    }
    let off = admin(
        &client,
        doc! {"configureFailPoint": "shardgateCloseConnectionAfterWrite", "mode": "off"},
    )
    .await;
    assert_eq!(off.get_i64("count").unwrap(), 0);
    let docs = all(&coll).await;
    assert_eq!(docs.len(), 9);
    assert!(
        docs.iter().all(|d| d.get_i32("n").unwrap() == 1),
        "each updated once"
    );

    // mongosh: a user moves to the DE shard.
    admin(
        &client,
        doc! {"shardCollection": "wk.users", "key": {"country": 1}},
    )
    .await;
    for (at, to) in [("DE", "shard0001"), ("FR", "shard0002")] {
        admin(
            &client,
            doc! {"split": "wk.users", "middle": {"country": at}},
        )
        .await;
        admin(&client, doc! {"moveChunk": "wk.users", "find": {"country": at}, "to": to, "_waitForDelete": true}).await;
    }
    let users = client.database("wk").collection::<Document>("users");
    users
        .insert_one(doc! {"_id": 1, "email": "x@y", "country": "US"})
        .await
        .unwrap();
    let out = support::mongosh(
        &format!("{}/wk", cluster.router.uri().trim_end_matches('/')),
        r#"const r = db.users.updateOne({email: "x@y"}, {$set: {country: "DE"}}); print(r.matchedCount, r.modifiedCount)"#,
    );
    assert_eq!(out.trim(), "1 1");
    let on = |i: usize| direct_client(&cluster.shards[i]);
    let de = on(1)
        .await
        .database("wk")
        .collection::<Document>("users")
        .find_one(doc! {"_id": 1})
        .await
        .unwrap();
    assert_eq!(de, Some(doc! {"_id": 1, "email": "x@y", "country": "DE"}));
    let us = on(2)
        .await
        .database("wk")
        .collection::<Document>("users")
        .count_documents(doc! {"_id": 1})
        .await
        .unwrap();
    assert_eq!(us, 0);
}
