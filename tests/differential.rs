//! The same driver workload through the router (to a SecantusDB shard) and
//! directly to a second SecantusDB gives identical results.

mod support;

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::options::{FindOptions, IndexOptions};
use mongodb::{Client, IndexModel};

/// Everything a user would compare after running the workload.
#[derive(Debug, PartialEq)]
struct Outcome {
    inserted: usize,
    page: Vec<Document>,
    matched: u64,
    modified: u64,
    deleted: u64,
    grouped: Vec<Document>,
    index_name: String,
    indexes: Vec<String>,
    collections: Vec<String>,
    remaining: u64,
    after_drop: Vec<String>,
}

async fn workload(client: &Client) -> Outcome {
    let db = client.database("diff");
    let coll = db.collection::<Document>("items");
    let docs: Vec<Document> = (0..10_000i64)
        .map(|i| {
            doc! {"_id": i, "g": i % 7, "v": (i * 7919) % 10_000, "s": format!("s{}", i % 13), "arr": [i % 3, i % 5]}
        })
        .collect();
    let inserted = coll
        .insert_many(docs)
        .await
        .expect("insert_many")
        .inserted_ids
        .len();
    db.collection::<Document>("other")
        .insert_one(doc! {"x": 1})
        .await
        .expect("insert other");

    let opts = FindOptions::builder()
        .sort(doc! {"v": -1, "_id": 1})
        .skip(50)
        .limit(3000)
        .projection(doc! {"s": 1, "v": 1})
        .batch_size(100)
        .build();
    let page: Vec<Document> = coll
        .find(doc! {"g": {"$in": [1, 3, 4]}})
        .with_options(opts)
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("page through getMore");

    let upd = coll
        .update_many(
            doc! {"g": 2},
            doc! {"$inc": {"v": 1}, "$set": {"touched": true}},
        )
        .await
        .expect("update_many");
    let deleted = coll
        .delete_many(doc! {"g": 5})
        .await
        .expect("delete_many")
        .deleted_count;
    let grouped: Vec<Document> = coll
        .aggregate(vec![
            doc! {"$match": {"g": {"$lt": 4}}},
            doc! {"$group": {"_id": "$g", "n": {"$sum": 1}, "total": {"$sum": "$v"}, "touched": {"$max": "$touched"}}},
            doc! {"$sort": {"_id": 1}},
        ])
        .await
        .expect("aggregate")
        .try_collect()
        .await
        .expect("aggregate cursor");
    let index_name = coll
        .create_index(
            IndexModel::builder()
                .keys(doc! {"v": 1, "s": 1})
                .options(IndexOptions::builder().name("v_s".to_owned()).build())
                .build(),
        )
        .await
        .expect("create_index")
        .index_name;
    let mut indexes = coll.list_index_names().await.expect("list indexes");
    indexes.sort();
    let mut collections = db.list_collection_names().await.expect("list collections");
    collections.sort();
    let remaining = coll.count_documents(doc! {}).await.expect("count");
    coll.drop().await.expect("drop");
    let mut after_drop = db.list_collection_names().await.expect("list after drop");
    after_drop.sort();
    Outcome {
        inserted,
        page,
        matched: upd.matched_count,
        modified: upd.modified_count,
        deleted,
        grouped,
        index_name,
        indexes,
        collections,
        remaining,
        after_drop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_and_direct_shard_agree() {
    let cluster = support::TestCluster::start(1).await;
    let baseline_dir = tempfile::tempdir().unwrap();
    let baseline = support::start_shards(baseline_dir.path(), 1, false).await;

    let through_router = workload(&cluster.client().await).await;
    let direct = workload(&support::direct_client(&baseline[0]).await).await;

    // Sanity: the workload did what it says, so equal outcomes mean something.
    assert_eq!(through_router.inserted, 10_000);
    assert_eq!(through_router.page.len(), 3000);
    assert_eq!(through_router.deleted, 1428);
    assert_eq!(through_router.grouped.len(), 4);
    assert_eq!(through_router.indexes, vec!["_id_", "v_s"]);
    assert_eq!(through_router.collections, vec!["items", "other"]);
    assert_eq!(through_router.after_drop, vec!["other"]);
    assert_eq!(through_router, direct);

    // The data really lives on the shard behind the router.
    let on_shard = support::direct_client(&cluster.shards[0])
        .await
        .database("diff")
        .collection::<Document>("other")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(on_shard, 1);
}
