//! Aggregation on collections spread over 3 shards, beyond what the
//! generated comparison covers: merges past the router's memory budget
//! (run on the primary shard through a temporary collection that is gone
//! afterwards, whether the cursor was read to the end or closed early),
//! `explain` of a split pipeline, `$merge` into a sharded collection,
//! `$out` refused into a sharded collection and written to another
//! database's primary, and `$sample`.

mod support;

use bson::{doc, Document};
use futures::{StreamExt, TryStreamExt};
use mongodb::Database;
use shardgate_router::{LimitsConfig, RouterConfig};
use support::{admin, direct_client, error_code, TestCluster};

fn docs() -> Vec<Document> {
    (0..3000i64)
        .map(|i| {
            doc! {
                "_id": i,
                "k": (i * 7) % 3000,
                "g": (["a", "b", "c"][(i % 3) as usize]),
                "v": i % 101,
                "pad": "x".repeat(1000),
            }
        })
        .collect()
}

/// `agg.c` sharded on `k` in 3 chunks on 3 shards, and `agg.t` sharded on
/// `_id` in 2 chunks; the database's primary is shard0000.
async fn layout(client: &mongodb::Client) {
    admin(
        client,
        doc! {"enableSharding": "agg", "primaryShard": "shard0000"},
    )
    .await;
    admin(client, doc! {"shardCollection": "agg.c", "key": {"k": 1}}).await;
    for (middle, to) in [(1000, "shard0001"), (2000, "shard0002")] {
        admin(client, doc! {"split": "agg.c", "middle": {"k": middle}}).await;
        admin(
            client,
            doc! {"moveChunk": "agg.c", "find": {"k": middle}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    admin(client, doc! {"shardCollection": "agg.t", "key": {"_id": 1}}).await;
    admin(client, doc! {"split": "agg.t", "middle": {"_id": 50}}).await;
    admin(
        client,
        doc! {"moveChunk": "agg.t", "find": {"_id": 50}, "to": "shard0002", "_waitForDelete": true},
    )
    .await;
}

async fn all(db: &Database, coll: &str, pipeline: Vec<Document>, batch: u32) -> Vec<Document> {
    db.collection::<Document>(coll)
        .aggregate(pipeline)
        .batch_size(batch)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Collections named `tmp.shardgate.*` left on any shard.
async fn temporary_collections(cluster: &TestCluster) -> Vec<String> {
    let mut left = Vec::new();
    for s in &cluster.shards {
        let names = direct_client(s)
            .await
            .database("agg")
            .list_collection_names()
            .await
            .unwrap();
        left.extend(names.into_iter().filter(|n| n.starts_with("tmp.shardgate")));
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_past_the_budget_run_on_the_primary_and_leave_nothing_behind() {
    let config = RouterConfig {
        balancer: false,
        limits: LimitsConfig {
            max_merge_mb: 1,
            ..Default::default()
        },
        ..RouterConfig::default()
    };
    let cluster = TestCluster::start_with(3, config, false).await;
    let client = cluster.client().await;
    layout(&client).await;
    let router = client.database("agg");
    router
        .collection::<Document>("c")
        .insert_many(docs())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference_server = support::start_shards(dir.path(), 1, false).await;
    let reference = direct_client(&reference_server[0]).await.database("agg");
    reference
        .collection::<Document>("c")
        .insert_many(docs())
        .await
        .unwrap();

    // A database change stream never shows the temporary collections.
    let mut watch = router
        .watch()
        .max_await_time(std::time::Duration::from_millis(200))
        .await
        .unwrap();
    // $stdDevPop has no partial form: every document (3 MB) goes to the
    // merge, past the 1 MB budget.
    let grouped = vec![
        doc! {"$group": {"_id": "$g", "sd": {"$stdDevPop": "$v"}, "n": {"$sum": 1}}},
        doc! {"$sort": {"_id": 1}},
    ];
    // (Summed in another order, the deviation may differ in its last bits.)
    let rounded = |docs: Vec<Document>| -> Vec<String> {
        docs.iter()
            .map(|d| {
                format!(
                    "{} {:.9} {}",
                    d.get_str("_id").unwrap(),
                    d.get_f64("sd").unwrap(),
                    d.get_i32("n").unwrap()
                )
            })
            .collect()
    };
    let got = rounded(all(&router, "c", grouped.clone(), 101).await);
    assert_eq!(got, rounded(all(&reference, "c", grouped, 101).await));
    assert_eq!(got.len(), 3);

    // 3,000 results through getMore from the merging shard's cursor.
    let windowed = vec![
        doc! {"$setWindowFields": {"partitionBy": "$g", "sortBy": {"_id": 1}, "output": {"run": {"$sum": "$v", "window": {"documents": ["unbounded", "current"]}}}}},
        doc! {"$project": {"pad": 0}},
        doc! {"$sort": {"_id": 1}},
    ];
    let got = all(&router, "c", windowed.clone(), 50).await;
    assert_eq!(got.len(), 3000);
    assert_eq!(got, all(&reference, "c", windowed.clone(), 50).await);
    assert!(temporary_collections(&cluster).await.is_empty());

    // A cursor closed after its first batch drops its temporary collection.
    {
        let mut cursor = router
            .collection::<Document>("c")
            .aggregate(windowed)
            .batch_size(10)
            .await
            .unwrap();
        let first = cursor.next().await.unwrap().unwrap();
        assert_eq!(first.get_i64("_id").unwrap(), 0);
        assert_eq!(temporary_collections(&cluster).await.len(), 1);
    }
    let mut left = temporary_collections(&cluster).await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = temporary_collections(&cluster).await;
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    router
        .collection::<Document>("c")
        .insert_one(doc! {"_id": -1, "k": -1})
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(e) = watch.next_if_any().await.unwrap() {
            let coll =
                e.ns.as_ref()
                    .and_then(|ns| ns.coll.clone())
                    .unwrap_or_default();
            let marker = e.document_key.as_ref().and_then(|k| k.get_i64("_id").ok()) == Some(-1);
            seen.push(coll);
            if marker {
                break;
            }
        }
    }
    assert_eq!(
        seen,
        ["c"],
        "only the marker insert, no temporary collection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_merge_out_and_sample() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    layout(&client).await;
    let db = client.database("agg");
    let small: Vec<Document> = docs()
        .into_iter()
        .take(300)
        .map(|mut d| {
            d.remove("pad");
            d
        })
        .collect();
    db.collection::<Document>("c")
        .insert_many(small.clone())
        .await
        .unwrap();

    // explain: the partial group on the shards, the merging group after.
    let explained = db
        .run_command(doc! {"aggregate": "c", "pipeline": [{"$match": {"v": {"$gt": 5}}}, {"$group": {"_id": "$g", "a": {"$avg": "$v"}}}], "explain": true})
        .await
        .unwrap();
    let split = explained.get_document("splitPipeline").unwrap();
    let shards_part = split.get_array("shardsPart").unwrap();
    assert_eq!(shards_part.len(), 2, "{split}");
    let merger = split.get_array("mergerPart").unwrap();
    assert!(
        merger
            .iter()
            .any(|s| s.as_document().unwrap().contains_key("$group")),
        "{split}"
    );
    assert_eq!(explained.get_document("shards").unwrap().len(), 3);

    // $merge from an unsharded collection into a sharded one: each
    // document lands on the shard owning its _id.
    let src = db.collection::<Document>("src");
    src.insert_many((0..100i64).map(|i| doc! {"_id": i, "w": i * 2}))
        .await
        .unwrap();
    let merged = all(
        &db,
        "src",
        vec![doc! {"$merge": {"into": "t", "whenMatched": "replace", "whenNotMatched": "insert"}}],
        101,
    )
    .await;
    assert!(merged.is_empty());
    assert_eq!(
        db.collection::<Document>("t")
            .count_documents(doc! {})
            .await
            .unwrap(),
        100
    );
    let mut per_shard = Vec::new();
    for s in &cluster.shards {
        let c = direct_client(s)
            .await
            .database("agg")
            .collection::<Document>("t");
        per_shard.push(c.count_documents(doc! {}).await.unwrap());
    }
    assert_eq!(per_shard, vec![50, 0, 50]);
    // Merged again with a pipeline update: every document matched.
    all(&db, "src", vec![doc! {"$merge": {"into": "t", "whenMatched": [{"$set": {"w": {"$add": ["$w", "$$new.w"]}}}], "whenNotMatched": "discard"}}], 101).await;
    let t: Vec<Document> = db
        .collection::<Document>("t")
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        t.iter()
            .all(|d| d.get_i64("w").unwrap() == d.get_i64("_id").unwrap() * 4),
        "{:?}",
        t.first()
    );

    // $out into a sharded collection is refused, as mongos refuses it.
    let refused = db
        .collection::<Document>("src")
        .aggregate(vec![doc! {"$out": "t"}])
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(error_code(&refused), 28769);
    // $out of a sharded collection's group to another database.
    admin(
        &client,
        doc! {"enableSharding": "other", "primaryShard": "shard0001"},
    )
    .await;
    all(
        &db,
        "c",
        vec![
            doc! {"$group": {"_id": "$g", "n": {"$sum": 1}}},
            doc! {"$out": {"db": "other", "coll": "counts"}},
        ],
        101,
    )
    .await;
    let counts: Vec<Document> = direct_client(&cluster.shards[1])
        .await
        .database("other")
        .collection::<Document>("counts")
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        counts,
        vec![
            doc! {"_id": "a", "n": 100},
            doc! {"_id": "b", "n": 100},
            doc! {"_id": "c", "n": 100}
        ]
    );

    // $sample: the number asked for, distinct, all real documents.
    let sample = all(&db, "c", vec![doc! {"$sample": {"size": 25}}], 101).await;
    let ids: std::collections::HashSet<i64> =
        sample.iter().map(|d| d.get_i64("_id").unwrap()).collect();
    assert_eq!(ids.len(), 25);
    assert!(sample.iter().all(|d| small.contains(d)));
}

/// What `find`, `count`, `distinct` and `aggregate` answer on `view`.
/// (`reference`: SecantusDB answers `distinct` on a view with no values,
/// so there it runs on the view's collection with the view's filter.)
async fn view_answers(db: &Database, reference: bool) -> Vec<String> {
    let v = db.collection::<Document>("v");
    let found: Vec<Document> = v
        .find(doc! {"g": {"$ne": "c"}})
        .sort(doc! {"k": -1})
        .skip(3)
        .limit(40)
        .projection(doc! {"k": 1, "v": 1})
        .batch_size(7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let count = db
        .run_command(doc! {"count": "v", "query": {"g": "a"}})
        .await
        .unwrap();
    let distinct = match reference {
        false => doc! {"distinct": "v", "key": "g", "query": {"k": {"$lt": 500}}},
        true => doc! {"distinct": "c", "key": "g", "query": {"k": {"$lt": 500}, "v": {"$gt": 20}}},
    };
    let distinct = db.run_command(distinct).await.unwrap();
    let grouped = all(
        db,
        "v",
        vec![
            doc! {"$group": {"_id": "$g", "n": {"$sum": 1}, "top": {"$max": "$k"}}},
            doc! {"$sort": {"_id": 1}},
        ],
        101,
    )
    .await;
    let nested = all(db, "vv", vec![doc! {"$sort": {"_id": 1}}], 5).await;
    vec![
        format!("{found:?}"),
        format!("{:?}", count.get("n")),
        format!("{:?}", distinct.get("values")),
        format!("{grouped:?}"),
        format!("{nested:?}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_a_sharded_collection_read_every_shard() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    layout(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let reference_server = support::start_shards(dir.path(), 1, false).await;
    let reference = direct_client(&reference_server[0]).await.database("agg");
    let router = client.database("agg");
    for db in [&router, &reference] {
        let small: Vec<Document> = docs()
            .into_iter()
            .take(600)
            .map(|mut d| {
                d.remove("pad");
                let k = d.get_i64("k").unwrap();
                d.insert("loc", vec![k as f64, 0.0]);
                d
            })
            .collect();
        db.collection::<Document>("c")
            .insert_many(small)
            .await
            .unwrap();
        db.run_command(
            doc! {"create": "v", "viewOn": "c", "pipeline": [{"$match": {"v": {"$gt": 20}}}]},
        )
        .await
        .unwrap();
        // A view over the view.
        db.run_command(doc! {"create": "vv", "viewOn": "v", "pipeline": [{"$match": {"g": "b"}}, {"$project": {"k": 1}}]}).await.unwrap();
    }
    let (got, want) = (
        view_answers(&router, false).await,
        view_answers(&reference, true).await,
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // The view reads documents of every shard.
    assert!(got[0].len() > 100);
    // $geoNear: every shard's nearest, merged by distance.
    let near = |near: f64, extra: Document| {
        let mut spec = doc! {"near": [near, 0.0], "distanceField": "dist.x", "key": "loc"};
        spec.extend(extra);
        doc! {"$geoNear": spec}
    };
    let pipelines = [
        vec![
            near(-0.5, doc! {"query": {"g": "b"}}),
            doc! {"$limit": 7},
            doc! {"$project": {"k": 1, "dist": 1}},
        ],
        vec![
            near(1500.5, doc! {"maxDistance": 300.0}),
            doc! {"$skip": 3},
            doc! {"$limit": 20},
        ],
        vec![
            near(999.5, doc! {}),
            doc! {"$group": {"_id": "$g", "nearest": {"$first": "$k"}, "n": {"$sum": 1}}},
            doc! {"$sort": {"_id": 1}},
        ],
    ];
    // find with $near: merged on the distance the shards put in
    // `$sortKey` (SecantusDB puts none and orders by insertion, as the
    // unsharded server does); nothing of the merge shows.
    let mut found = Vec::new();
    for db in [&router, &reference] {
        let docs: Vec<Document> = db
            .collection::<Document>("c")
            .find(doc! {"loc": {"$near": [10.5, 0.0]}, "g": "a"})
            .batch_size(7)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        found.push(docs);
    }
    let (got, want) = (&found[0], &found[1]);
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|d| !d.contains_key("$sortKey")));
    for p in pipelines {
        let got = all(&router, "c", p.clone(), 4).await;
        let want = all(&reference, "c", p.clone(), 4).await;
        assert!(!got.is_empty());
        assert_eq!(got, want, "{p:?}");
    }
}
