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
