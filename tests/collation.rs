//! Collations across shards: sorted finds, aggregations, `distinct` and
//! writes without the shard key under a non-simple collation give what one
//! unsharded server holding the same documents gives, while a chunk moves.

mod support;

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::options::{Collation, FindOptions};
use support::{admin, direct_client, TestCluster};

/// Words that differ in case, accents and digits, so every collation
/// option changes their order.
const WORDS: [&str; 16] = [
    "apple", "Apple", "APPLE", "äpple", "banana", "Banana", "cote", "côte", "coté", "côté",
    "item9", "item10", "Item100", "zebra", "Zebra", "éclair",
];

fn docs() -> Vec<Document> {
    (0..600i64)
        .map(|i| {
            let w = WORDS[((i * 7) % WORDS.len() as i64) as usize];
            doc! {"_id": i, "k": (i * 37) % 600, "name": w, "tags": [w, WORDS[(i % 5) as usize]], "v": i % 11}
        })
        .collect()
}

async fn load(db: &mongodb::Database) {
    db.collection::<Document>("c")
        .insert_many(docs())
        .await
        .unwrap();
}

/// `col.c` sharded on `{k: 1}`, its chunks on three shards unevenly.
async fn shard_layout(client: &mongodb::Client) {
    admin(
        client,
        doc! {"enableSharding": "col", "primaryShard": "shard0000"},
    )
    .await;
    admin(client, doc! {"shardCollection": "col.c", "key": {"k": 1}}).await;
    for (middle, to) in [(100, "shard0001"), (250, "shard0002"), (500, "shard0001")] {
        admin(client, doc! {"split": "col.c", "middle": {"k": middle}}).await;
        admin(
            client,
            doc! {"moveChunk": "col.c", "find": {"k": middle}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
}

fn collations() -> Vec<Document> {
    vec![
        doc! {"locale": "en"},
        doc! {"locale": "en", "strength": 1},
        doc! {"locale": "en", "strength": 2},
        doc! {"locale": "en", "caseFirst": "upper"},
        doc! {"locale": "en", "numericOrdering": true},
        doc! {"locale": "en", "strength": 1, "caseLevel": true},
    ]
}

fn collation(spec: &Document) -> Collation {
    bson::deserialize_from_document(spec.clone()).unwrap()
}

async fn find(coll: &mongodb::Collection<Document>, opts: FindOptions) -> Vec<Document> {
    coll.find(doc! {})
        .with_options(opts)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

async fn aggregate(
    coll: &mongodb::Collection<Document>,
    pipeline: Vec<Document>,
    spec: &Document,
) -> Vec<Document> {
    coll.aggregate(pipeline)
        .collation(collation(spec))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// `_id`s in order: what a user compares after a sorted read.
fn ids(docs: &[Document]) -> Vec<i64> {
    docs.iter().map(|d| d.get_i64("_id").unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collated_reads_and_writes_match_an_unsharded_server() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    shard_layout(&client).await;
    let router = client.database("col").collection::<Document>("c");
    load(&client.database("col")).await;
    let dir = tempfile::tempdir().unwrap();
    let reference_server = support::start_shards(dir.path(), 1, false).await;
    let reference_client = direct_client(&reference_server[0]).await;
    let reference = reference_client.database("col").collection::<Document>("c");
    load(&reference_client.database("col")).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let (mut moves, shards) = (0, ["shard0000", "shard0002", "shard0001"]);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let cmd = doc! {"moveChunk": "col.c", "find": {"k": 300}, "to": shards[moves % 3]};
                if client.database("admin").run_command(cmd).await.is_ok() {
                    moves += 1;
                }
            }
            moves
        }
    });

    for spec in collations() {
        let context = format!("collation {spec}");
        // Sorted finds: by the name alone (ties by _id), descending, on an
        // array field, with a limit and small batches (getMores).
        for (sort, limit, batch) in [
            (doc! {"name": 1, "_id": 1}, None, None),
            (doc! {"name": -1, "_id": -1}, Some(40), Some(7)),
            (doc! {"tags": 1, "_id": 1}, None, Some(50)),
            (doc! {"v": 1, "name": -1, "_id": 1}, Some(100), None),
        ] {
            let opts = FindOptions::builder()
                .sort(sort.clone())
                .limit(limit)
                .batch_size(batch)
                .collation(collation(&spec))
                .build();
            let got = find(&router, opts.clone()).await;
            let want = find(&reference, opts).await;
            assert_eq!(want.len(), limit.map_or(600, |l| l as usize), "{context}");
            assert_eq!(ids(&got), ids(&want), "{context} sort {sort}");
        }
        // A filter the collation widens.
        let opts = FindOptions::builder()
            .sort(doc! {"_id": 1})
            .collation(collation(&spec))
            .build();
        let got = router
            .find(doc! {"name": "apple"})
            .with_options(opts.clone())
            .await
            .unwrap();
        let want = reference
            .find(doc! {"name": "apple"})
            .with_options(opts)
            .await
            .unwrap();
        let (got, want): (Vec<Document>, Vec<Document>) = (
            got.try_collect().await.unwrap(),
            want.try_collect().await.unwrap(),
        );
        assert_eq!(ids(&got), ids(&want), "{context} equality");

        // Aggregations whose merge compares strings.
        for pipeline in [
            vec![doc! {"$sort": {"name": 1, "_id": 1}}, doc! {"$limit": 300}],
            vec![
                doc! {"$group": {"_id": "$name", "n": {"$sum": 1}, "ids": {"$addToSet": "$_id"}}},
                doc! {"$project": {"n": 1, "size": {"$size": "$ids"}}},
                doc! {"$sort": {"n": 1}},
            ],
            vec![
                doc! {"$match": {"name": {"$gte": "b"}}},
                doc! {"$sort": {"name": -1, "_id": 1}},
                doc! {"$project": {"_id": 1}},
            ],
        ] {
            let got = aggregate(&router, pipeline.clone(), &spec).await;
            let want = aggregate(&reference, pipeline.clone(), &spec).await;
            if pipeline[0].contains_key("$group") {
                // A group's `_id` is one of its equal names: compare sizes.
                let sizes = |d: &[Document]| {
                    let mut s: Vec<i32> = d.iter().map(|g| g.get_i32("n").unwrap()).collect();
                    s.sort();
                    s
                };
                assert_eq!(sizes(&got), sizes(&want), "{context} {pipeline:?}");
            } else {
                assert_eq!(ids(&got), ids(&want), "{context} {pipeline:?}");
            }
        }

        // distinct: one value per collation-equal group.
        let got = router
            .distinct("name", doc! {})
            .collation(collation(&spec))
            .await
            .unwrap();
        let want = reference
            .distinct("name", doc! {})
            .collation(collation(&spec))
            .await
            .unwrap();
        assert_eq!(
            got.len(),
            want.len(),
            "{context} distinct {got:?} vs {want:?}"
        );
    }

    // Single-document writes without the shard key pick the first document
    // in collated order.
    let strength1 = collation(&doc! {"locale": "en", "strength": 1});
    for (i, sort) in [doc! {"name": 1, "_id": 1}, doc! {"name": -1, "_id": -1}]
        .into_iter()
        .enumerate()
    {
        let update = doc! {"$set": {"picked": i as i32}};
        let filter = doc! {"name": {"$gte": "B"}};
        for coll in [&router, &reference] {
            coll.update_one(filter.clone(), update.clone())
                .sort(sort.clone())
                .collation(strength1.clone())
                .await
                .unwrap();
        }
        let picked = |d: Vec<Document>| ids(&d);
        let got = picked(
            router
                .find(doc! {"picked": i as i32})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap(),
        );
        let want = picked(
            reference
                .find(doc! {"picked": i as i32})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap(),
        );
        assert_eq!(got.len(), 1, "update_one sort {sort}");
        assert_eq!(got, want, "update_one sort {sort}");
    }
    let sort = doc! {"name": -1, "v": 1, "_id": 1};
    let mut found = Vec::new();
    for coll in [&router, &reference] {
        let d = coll
            .find_one_and_update(doc! {"v": {"$lt": 5}}, doc! {"$inc": {"v": 100}})
            .sort(sort.clone())
            .collation(collation(&doc! {"locale": "en", "caseFirst": "upper"}))
            .await
            .unwrap()
            .expect("a match");
        found.push(d);
    }
    assert_eq!(found[0], found[1], "find_one_and_update sort {sort}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let moves = mover.await.unwrap();
    assert!(moves > 0, "the chunk moved while the reads ran");
    let total = router.count_documents(doc! {}).await.unwrap();
    assert_eq!(total, 600);
}

/// A collection created with a default collation: sharding it needs the
/// simple collation named for the key (BadValue otherwise, as on mongos);
/// then commands that name no collation run under the default one across
/// shards, as they do on one mongod. (SecantusDB records a collection's
/// default collation but does not apply it, so the reference is asked with
/// it named; the router names it to its shards itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collections_default_collation_applies_across_shards() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let reference_server = support::start_shards(dir.path(), 1, false).await;
    let reference_client = direct_client(&reference_server[0]).await;
    let default = doc! {"locale": "en", "strength": 2};
    admin(
        &client,
        doc! {"enableSharding": "dc", "primaryShard": "shard0000"},
    )
    .await;
    for c in [&client, &reference_client] {
        c.database("dc")
            .run_command(doc! {"create": "c", "collation": default.clone()})
            .await
            .unwrap();
    }
    let code =
        support::admin_error(&client, doc! {"shardCollection": "dc.c", "key": {"s": 1}}).await;
    assert_eq!(code, 2, "BadValue without the simple collation for the key");
    admin(
        &client,
        doc! {"shardCollection": "dc.c", "key": {"s": 1}, "collation": {"locale": "simple"}},
    )
    .await;
    // Upper-case keys sort before lower-case ones by bytes: "ABC" and "abc"
    // land on different shards.
    for (middle, to) in [("M", "shard0001"), ("a", "shard0002")] {
        admin(&client, doc! {"split": "dc.c", "middle": {"s": middle}}).await;
        admin(
            &client,
            doc! {"moveChunk": "dc.c", "find": {"s": middle}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    let words = [
        "abc", "ABC", "Abc", "abd", "ABD", "b", "B", "zz", "ZZ", "Na",
    ];
    let docs: Vec<Document> = (0..200i64)
        .map(|i| doc! {"_id": i, "s": words[(i % 10) as usize], "v": i % 7})
        .collect();
    let router = client.database("dc").collection::<Document>("c");
    let reference = reference_client.database("dc").collection::<Document>("c");
    for c in [&router, &reference] {
        c.insert_many(docs.clone()).await.unwrap();
    }
    let chunks = support::config_docs(&client, "chunks", doc! {}, doc! {"min": 1}).await;
    let owners: std::collections::BTreeSet<&str> =
        chunks.iter().map(|c| c.get_str("shard").unwrap()).collect();
    assert_eq!(owners.len(), 3, "chunks on all three shards");

    // Equality on the shard key matches every case variant, on every shard.
    let by_id = FindOptions::builder().sort(doc! {"_id": 1}).build();
    let eq = |c: &mongodb::Collection<Document>, opts: FindOptions| {
        let c = c.clone();
        async move {
            ids(&c
                .find(doc! {"s": "abc"})
                .with_options(opts)
                .await
                .unwrap()
                .try_collect::<Vec<_>>()
                .await
                .unwrap())
        }
    };
    let named = |mut o: FindOptions| {
        o.collation = Some(collation(&default));
        o
    };
    let (got, want) = (
        eq(&router, by_id.clone()).await,
        eq(&reference, named(by_id.clone())).await,
    );
    assert_eq!(want.len(), 60);
    assert_eq!(got, want, "equality under the default collation");
    assert_eq!(
        router.count_documents(doc! {"s": "abd"}).await.unwrap(),
        reference
            .count_documents(doc! {"s": "abd"})
            .collation(collation(&default))
            .await
            .unwrap()
    );
    // A sorted read merges in the default collation's order.
    let sorted = FindOptions::builder()
        .sort(doc! {"s": -1, "_id": 1})
        .build();
    let got = find(&router, sorted.clone()).await;
    let want = find(&reference, named(sorted)).await;
    assert_eq!(ids(&got), ids(&want), "sort under the default collation");
    // distinct dedupes under it.
    let got = router.distinct("s", doc! {}).await.unwrap();
    let want = reference
        .distinct("s", doc! {})
        .collation(collation(&default))
        .await
        .unwrap();
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    // A multi-update without a collation matches every variant.
    let got = router
        .update_many(doc! {"s": "ABC"}, doc! {"$inc": {"v": 10}})
        .await
        .unwrap();
    let want = reference
        .update_many(doc! {"s": "ABC"}, doc! {"$inc": {"v": 10}})
        .collation(collation(&default))
        .await
        .unwrap();
    assert_eq!(got.matched_count, 60);
    assert_eq!(got.modified_count, want.modified_count);
    // An explicit simple collation still compares bytes.
    let simple = FindOptions::builder()
        .collation(collation(&doc! {"locale": "simple"}))
        .build();
    let n = router
        .find(doc! {"s": "abc"})
        .with_options(simple)
        .await
        .unwrap();
    assert_eq!(n.try_collect::<Vec<_>>().await.unwrap().len(), 20);
}
