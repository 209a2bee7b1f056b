//! The router's own diagnostics, as a user of mongos checks them: its
//! operations in `currentOp` (and `killOp` interrupting one), `dataSize`
//! summed over the shards owning a collection, and a `drop` of a sharded
//! collection fenced against writes routed by the old metadata, and
//! `filemd5` over a GridFS file whose chunks span shards, and the search
//! commands refused as a mongos without a search service refuses them;
//! `fsync` on every shard, `$listLocalSessions` and other `aggregate: 1`
//! pipelines on `admin`.

mod support;

use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use support::{admin, direct_client, error_code, TestCluster};

/// `diag.c` sharded on `{k: 1}`: `[MinKey, 100)` on shard0000 (the
/// primary), `[100, 200)` on shard0001, `[200, MaxKey)` on shard0002.
async fn spread(cluster: &TestCluster) -> mongodb::Client {
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "diag", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "diag.c", "key": {"k": 1}}).await;
    for (middle, to) in [(100, "shard0001"), (200, "shard0002")] {
        admin(&client, doc! {"split": "diag.c", "middle": {"k": middle}}).await;
        admin(
            &client,
            doc! {"moveChunk": "diag.c", "find": {"k": middle}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    client
}

fn docs(n: i64) -> Vec<Document> {
    (0..n)
        .map(|i| doc! {"_id": i, "k": i, "pad": "x".repeat((i % 17) as usize)})
        .collect()
}

fn bytes(docs: &[Document]) -> i64 {
    docs.iter().map(|d| d.to_vec().unwrap().len() as i64).sum()
}

fn number(d: &Document, f: &str) -> i64 {
    match d.get(f) {
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Int64(n)) => *n,
        Some(bson::Bson::Double(x)) => *x as i64,
        other => panic!("{f}: {other:?} in {d}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_size_sums_every_owning_shard() {
    let cluster = TestCluster::start(3).await;
    let client = spread(&cluster).await;
    let db = client.database("diag");
    let all = docs(300);
    db.collection("c").insert_many(all.clone()).await.unwrap();
    let whole = db.run_command(doc! {"dataSize": "diag.c"}).await.unwrap();
    assert_eq!(number(&whole, "numObjects"), 300, "{whole}");
    assert_eq!(number(&whole, "size"), bytes(&all), "{whole}");
    // A key range crossing all three shards: [50, 250).
    let range = db
        .run_command(doc! {"dataSize": "diag.c", "keyPattern": {"k": 1}, "min": {"k": 50}, "max": {"k": 250}})
        .await
        .unwrap();
    assert_eq!(number(&range, "numObjects"), 200, "{range}");
    assert_eq!(number(&range, "size"), bytes(&all[50..250]), "{range}");
    // An unsharded collection: its primary's.
    let few = docs(5);
    db.collection("u").insert_many(few.clone()).await.unwrap();
    let small = db.run_command(doc! {"dataSize": "diag.u"}).await.unwrap();
    assert_eq!(number(&small, "numObjects"), 5);
    assert_eq!(number(&small, "size"), bytes(&few));
    let e = db
        .run_command(doc! {"dataSize": "other.c"})
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 73, "a namespace of another database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_op_lists_router_operations_and_kill_op_interrupts_one() {
    let cluster = TestCluster::start_with(
        1,
        shardgate_router::config::RouterConfig {
            balancer: false,
            ..Default::default()
        },
        true,
    )
    .await;
    let client = cluster.client().await;
    let db = client.database("diag");
    db.collection("u")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    // `currentOp` shows itself, as the router's operation.
    let own = admin(&client, doc! {"currentOp": 1}).await;
    let mine = own
        .get_array("inprog")
        .unwrap()
        .iter()
        .filter_map(|o| o.as_document())
        .find(|o| {
            o.get_document("command")
                .is_ok_and(|c| c.contains_key("currentOp"))
        })
        .unwrap_or_else(|| panic!("the currentOp command itself: {own}"));
    assert!(mine.get_i32("opid").is_ok(), "{mine}");
    assert!(!mine.contains_key("shard"), "{mine}");
    assert!(mine.get_bool("active").unwrap());

    // The shard holds every `count` for 20 s; the router's operation
    // waiting on it is listed, and killOp of its opid interrupts it.
    let shard = direct_client(&cluster.shards[0]).await;
    admin(
        &shard,
        doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": ["count"], "blockConnection": true, "blockTimeMS": 20000},
        },
    )
    .await;
    let counting = tokio::spawn({
        let db = db.clone();
        async move { db.run_command(doc! {"count": "u"}).await }
    });
    let mut opid = None;
    for _ in 0..100 {
        let ops = admin(
            &client,
            doc! {"currentOp": 1, "localOps": true, "command.count": "u"},
        )
        .await;
        opid = ops
            .get_array("inprog")
            .unwrap()
            .iter()
            .filter_map(|o| o.as_document())
            .find_map(|o| o.get_i32("opid").ok());
        if opid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opid = opid.expect("the count is listed as the router's operation");
    // A filter the router's engine cannot run (a look-ahead) is run by a
    // shard over the same operations.
    let ops = admin(
        &client,
        doc! {"currentOp": 1, "localOps": true, "command.count": {"$regex": "^(?=u)"}},
    )
    .await;
    let found: Vec<i32> = ops
        .get_array("inprog")
        .unwrap()
        .iter()
        .filter_map(|o| o.as_document()?.get_i32("opid").ok())
        .collect();
    assert_eq!(found, [opid], "{ops}");
    admin(&client, doc! {"killOp": 1, "op": opid}).await;
    let e = tokio::time::timeout(Duration::from_secs(10), counting)
        .await
        .expect("the killed count answers before the shard releases it")
        .unwrap()
        .unwrap_err();
    assert_eq!(error_code(&e), 11601, "Interrupted");
    admin(
        &shard,
        doc! {"configureFailPoint": "failCommand", "mode": "off"},
    )
    .await;
    // The connection still works.
    let n = db
        .collection::<Document>("u")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_drop_never_land_on_a_shard_that_dropped() {
    let cluster = TestCluster::start(3).await;
    let client = spread(&cluster).await;
    let coll = client.database("diag").collection::<Document>("c");
    coll.insert_many(docs(300)).await.unwrap();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A writer inserting over every chunk's range, before, during and
    // after the drop; it notes which inserts began after the drop answered.
    let writer = tokio::spawn({
        let (coll, dropped) = (coll.clone(), dropped.clone());
        async move {
            let mut after = Vec::new();
            let mut extra = 0;
            for i in 1000i64.. {
                let late = dropped.load(std::sync::atomic::Ordering::SeqCst);
                let d = doc! {"_id": i, "k": i % 300};
                if coll.insert_one(d).await.is_ok() && late {
                    after.push(i);
                }
                if late {
                    extra += 1;
                    if extra == 100 {
                        break;
                    }
                }
            }
            after
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    coll.drop().await.unwrap();
    dropped.store(true, std::sync::atomic::Ordering::SeqCst);
    let after = writer.await.unwrap();
    assert_eq!(after.len(), 100, "every insert after the drop succeeds");
    // No shard but the primary holds a document of the dropped collection.
    for shard in &cluster.shards[1..] {
        let direct = direct_client(shard).await;
        let n = direct
            .database("diag")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(
            n,
            0,
            "{} holds documents of the dropped collection",
            shard.address()
        );
    }
    // Every insert acknowledged after the drop is there, once.
    let ids: Vec<i64> = coll
        .find(doc! {"_id": {"$in": &after}})
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_i64("_id").unwrap())
        .collect();
    assert_eq!(ids.len(), after.len());
    let sharded =
        support::config_docs(&client, "collections", doc! {"_id": "diag.c"}, doc! {}).await;
    assert!(sharded.is_empty(), "the collection is unsharded now");
}

/// GridFS chunks of file `id`: `n` chunks of 100 bytes, `(id, n)` in each.
fn file_chunks(id: i64, n: i64) -> (Vec<Document>, Vec<u8>) {
    let mut all = Vec::new();
    let chunks = (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..100).map(|b| (b + id * 7 + i * 13) as u8).collect();
            all.extend(&data);
            let data = bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: data,
            };
            doc! {"files_id": id, "n": i, "data": data}
        })
        .collect();
    (chunks, all)
}

fn hex_md5(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filemd5_hashes_a_file_whose_chunks_span_shards() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "files", "primaryShard": "shard0000"},
    )
    .await;
    admin(
        &client,
        doc! {"shardCollection": "files.fs.chunks", "key": {"files_id": 1, "n": 1}},
    )
    .await;
    // File 1's chunks from n = 3 on live on shard0001, file 2's on shard0002.
    for (middle, to) in [
        (doc! {"files_id": 1, "n": 3}, "shard0001"),
        (doc! {"files_id": 2, "n": 0}, "shard0002"),
    ] {
        admin(
            &client,
            doc! {"split": "files.fs.chunks", "middle": middle.clone()},
        )
        .await;
        admin(
            &client,
            doc! {"moveChunk": "files.fs.chunks", "find": middle, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    let db = client.database("files");
    let mut expected = Vec::new();
    for (id, n) in [(1, 7), (2, 2)] {
        let (chunks, bytes) = file_chunks(id, n);
        db.collection::<Document>("fs.chunks")
            .insert_many(chunks.clone())
            .await
            .unwrap();
        // The same file in an unsharded collection of another prefix.
        db.collection::<Document>("other.chunks")
            .insert_many(chunks)
            .await
            .unwrap();
        expected.push((id, n, hex_md5(&bytes)));
    }
    for (id, n, md5) in &expected {
        for root in ["fs", "other"] {
            let r = db
                .run_command(doc! {"filemd5": id, "root": root})
                .await
                .unwrap();
            assert_eq!(r.get_i32("numChunks").unwrap() as i64, *n, "{root} {id}");
            assert_eq!(r.get_str("md5").unwrap(), md5, "{root} {id}");
        }
    }
    // A missing chunk is an error, not a wrong hash.
    db.collection::<Document>("fs.chunks")
        .delete_one(doc! {"files_id": 1, "n": 4})
        .await
        .unwrap();
    let err = db
        .run_command(doc! {"filemd5": 1, "root": "fs"})
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), 10040);
    // A file with no chunks: none, and the MD5 of nothing.
    let r = db.run_command(doc! {"filemd5": 9}).await.unwrap();
    assert_eq!(r.get_i32("numChunks").unwrap(), 0);
    assert_eq!(r.get_str("md5").unwrap(), hex_md5(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_needs_a_search_service_as_on_a_community_mongos() {
    let cluster = TestCluster::start(3).await;
    let client = spread(&cluster).await;
    let db = client.database("diag");
    db.collection::<Document>("plain")
        .insert_one(doc! {"a": 1})
        .await
        .unwrap();
    for coll in ["c", "plain"] {
        for cmd in [
            doc! {"createSearchIndexes": coll, "indexes": [{"definition": {"mappings": {"dynamic": true}}}]},
            doc! {"updateSearchIndex": coll, "name": "default", "definition": {}},
            doc! {"dropSearchIndex": coll, "name": "default"},
            doc! {"aggregate": coll, "pipeline": [{"$listSearchIndexes": {}}], "cursor": {}},
            doc! {"aggregate": coll, "pipeline": [{"$search": {"text": {"query": "x", "path": "a"}}}], "cursor": {}},
            doc! {"aggregate": coll, "pipeline": [{"$vectorSearch": {}}], "cursor": {}},
        ] {
            let err = db.run_command(cmd.clone()).await.unwrap_err();
            assert_eq!(error_code(&err), 31082, "{cmd}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_fsync_and_admin_aggregations_answer_as_mongos() {
    let cluster = TestCluster::start(3).await;
    let client = spread(&cluster).await;
    // fsync reaches every shard.
    let r = admin(&client, doc! {"fsync": 1}).await;
    let all = r.get_document("all").unwrap();
    assert_eq!(all.len(), 3, "{r}");
    assert!(r.get("numFiles").is_some(), "{r}");
    // $listLocalSessions lists the sessions used through this router.
    let mut s = client.start_session().await.unwrap();
    let coll = client.database("diag").collection::<Document>("c");
    coll.find_one(doc! {}).session(&mut s).await.unwrap();
    let listed: Vec<Document> = client
        .database("admin")
        .aggregate(vec![
            doc! {"$listLocalSessions": {"allUsers": true}},
            doc! {"$project": {"_id": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<Vec<u8>> = listed
        .iter()
        .filter_map(|d| {
            let id = d.get_document("_id").ok()?.get("id")?;
            match id {
                bson::Bson::Binary(b) => Some(b.bytes.clone()),
                _ => None,
            }
        })
        .collect();
    let mine = s.id().get("id").and_then(|v| match v {
        bson::Bson::Binary(b) => Some(b.bytes.clone()),
        _ => None,
    });
    assert!(ids.contains(&mine.unwrap()), "{listed:?}");
    // Other collectionless stages run on a shard.
    let docs: Vec<Document> = client
        .database("admin")
        .aggregate(vec![
            doc! {"$documents": [{"a": 1}, {"a": 2}]},
            doc! {"$match": {"a": 2}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(docs, vec![doc! {"a": 2}]);
}
