//! A collection with a hashed shard-key field, a chunk migration held at
//! each of its states: every read and multi-document write through the
//! router answers exactly as one unsharded server holding the same
//! documents does — no document twice, no count inflated by the orphans a
//! shard holds — and every multi-update is applied once per document.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::options::FindOptions;
use mongodb::{Client, Collection};
use shardgate::shard_process::ShardProcess;
use shardgate_config_store::shard_key::ShardKeyPattern;
use support::{admin, config_docs, TestCluster};

const NS: &str = "h.c";
const DOCS: i64 = 4000;

fn document(i: i64) -> Document {
    doc! {
        "_id": i,
        "tenant": format!("t{}", i % 3),
        "g": i % 7,
        "v": i,
        "n": 0,
        "tags": [i % 5, (i + 1) % 5],
        "sub": {"x": i % 4},
    }
}

/// Where the test stands: the router's collection and the reference's.
struct Sides {
    router: Collection<Document>,
    reference: Collection<Document>,
}

async fn all(coll: &Collection<Document>, filter: Document, opts: FindOptions) -> Vec<Document> {
    coll.find(filter)
        .with_options(opts)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

async fn pipeline(coll: &Collection<Document>, stages: Vec<Document>) -> Vec<Document> {
    coll.aggregate(stages)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn by_id(mut docs: Vec<Document>) -> Vec<Document> {
    docs.sort_by_key(|d| d.get_i64("_id").unwrap_or_default());
    docs
}

fn sorted(mut values: Vec<Bson>) -> Vec<String> {
    let mut out: Vec<String> = values.drain(..).map(|v| v.to_string()).collect();
    out.sort();
    out
}

impl Sides {
    /// Every read the issue names, through the router and on the reference.
    async fn reads_agree(&self, at: &str) {
        let (r, x) = (&self.router, &self.reference);
        // An unsorted find: every document once.
        let got = all(r, doc! {}, FindOptions::default()).await;
        let ids: BTreeSet<i64> = got.iter().map(|d| d.get_i64("_id").unwrap()).collect();
        assert_eq!(ids.len(), got.len(), "{at}: a document came back twice");
        assert_eq!(
            by_id(got),
            by_id(all(x, doc! {}, FindOptions::default()).await),
            "{at}: find {{}}"
        );
        // Sorted, with projections that keep and that drop the key.
        let cases: Vec<(Document, FindOptions)> = vec![
            (doc! {}, FindOptions::builder().sort(doc! {"v": -1}).build()),
            (
                doc! {"g": 3},
                FindOptions::builder()
                    .sort(doc! {"v": 1})
                    .projection(doc! {"v": 1, "_id": 0})
                    .build(),
            ),
            (
                doc! {"g": {"$lt": 4}},
                FindOptions::builder()
                    .sort(doc! {"v": 1})
                    .projection(doc! {"_id": 0, "tenant": 0, "tags": 0})
                    .build(),
            ),
            (
                doc! {},
                FindOptions::builder()
                    .sort(doc! {"v": 1})
                    .projection(doc! {"g": 1})
                    .skip(10)
                    .limit(50)
                    .build(),
            ),
            (
                doc! {"sub.x": 2},
                FindOptions::builder()
                    .sort(doc! {"v": -1})
                    .projection(doc! {"sub": 0})
                    .limit(30)
                    .batch_size(7)
                    .build(),
            ),
        ];
        for (filter, opts) in cases {
            let what = format!("{at}: find {filter} {opts:?}");
            assert_eq!(
                all(r, filter.clone(), opts.clone()).await,
                all(x, filter, opts).await,
                "{what}"
            );
        }
        // Unsorted with a projection that omits `_id` and a limit.
        let opts = FindOptions::builder()
            .projection(doc! {"_id": 0, "v": 1})
            .limit(3000)
            .build();
        let got: Vec<i64> = all(r, doc! {}, opts.clone())
            .await
            .iter()
            .map(|d| d.get_i64("v").unwrap())
            .collect();
        let mut want: Vec<i64> = all(x, doc! {}, opts)
            .await
            .iter()
            .map(|d| d.get_i64("v").unwrap())
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort_unstable();
        want.sort_unstable();
        assert_eq!(got.len(), 3000, "{at}: limit 3000 returns 3000");
        assert_eq!(
            got_sorted.iter().collect::<BTreeSet<_>>().len(),
            3000,
            "{at}: no v twice"
        );
        let _ = want;
        // Counts.
        for filter in [doc! {}, doc! {"g": 2}, doc! {"tenant": "t1"}] {
            assert_eq!(
                r.count_documents(filter.clone()).await.unwrap(),
                x.count_documents(filter.clone()).await.unwrap(),
                "{at}: countDocuments {filter}"
            );
            let count = |c: &Collection<Document>, f: Document| {
                let db = c.namespace().db;
                let name = c.name().to_owned();
                let client = c.client().clone();
                async move {
                    client
                        .database(&db)
                        .run_command(doc! {"count": name, "query": f})
                        .await
                        .unwrap()
                        .get("n")
                        .and_then(|n| n.as_i64().or(n.as_i32().map(i64::from)))
                        .unwrap()
                }
            };
            assert_eq!(
                count(r, filter.clone()).await,
                count(x, filter.clone()).await,
                "{at}: count {filter}"
            );
        }
        // distinct.
        for key in ["g", "tags", "sub.x", "_id"] {
            assert_eq!(
                sorted(r.distinct(key, doc! {"v": {"$gte": 100}}).await.unwrap()),
                sorted(x.distinct(key, doc! {"v": {"$gte": 100}}).await.unwrap()),
                "{at}: distinct {key}"
            );
        }
        // Aggregation: the partial $group, per-document stages after the
        // match, an unwind, and a plain stream.
        let pipelines = vec![
            vec![
                doc! {"$group": {"_id": "$g", "n": {"$sum": 1}, "top": {"$max": "$v"}}},
                doc! {"$sort": {"_id": 1}},
            ],
            vec![
                doc! {"$match": {"g": {"$lt": 3}}},
                doc! {"$project": {"g": 1, "w": {"$multiply": ["$v", 2]}}},
                doc! {"$group": {"_id": "$g", "s": {"$sum": "$w"}, "c": {"$count": {}}}},
                doc! {"$sort": {"_id": 1}},
            ],
            vec![
                doc! {"$unwind": "$tags"},
                doc! {"$group": {"_id": "$tags", "n": {"$sum": 1}}},
                doc! {"$sort": {"_id": 1}},
            ],
            vec![doc! {"$count": "total"}],
            vec![
                doc! {"$match": {"g": 5}},
                doc! {"$project": {"_id": 0, "v": 1}},
                doc! {"$sort": {"v": 1}},
            ],
        ];
        for p in pipelines {
            assert_eq!(
                pipeline(r, p.clone()).await,
                pipeline(x, p.clone()).await,
                "{at}: aggregate {p:?}"
            );
        }
    }

    /// Multi-document writes: the same counts on both sides.
    async fn writes_agree(&self, at: &str, round: i64) {
        let (r, x) = (&self.router, &self.reference);
        let filter = doc! {"g": round % 7};
        let update = doc! {"$inc": {"n": 1}};
        let a = r.update_many(filter.clone(), update.clone()).await.unwrap();
        let b = x.update_many(filter.clone(), update).await.unwrap();
        assert_eq!(
            (a.matched_count, a.modified_count),
            (b.matched_count, b.modified_count),
            "{at}: update_many {filter}"
        );
        // One document by `_id` alone (the whole key for `{_id: hashed}`,
        // a broadcast for the compound key).
        let id = 17 + round * 101;
        let a = r
            .find_one_and_update(doc! {"_id": id}, doc! {"$inc": {"n": 10}})
            .await
            .unwrap();
        let b = x
            .find_one_and_update(doc! {"_id": id}, doc! {"$inc": {"n": 10}})
            .await
            .unwrap();
        assert_eq!(a, b, "{at}: findAndModify _id {id}");
        let id = 29 + round * 101;
        let a = r
            .update_one(doc! {"_id": id}, doc! {"$inc": {"n": 100}})
            .await
            .unwrap();
        let b = x
            .update_one(doc! {"_id": id}, doc! {"$inc": {"n": 100}})
            .await
            .unwrap();
        assert_eq!(
            (a.matched_count, a.modified_count),
            (b.matched_count, b.modified_count),
            "{at}: update_one _id {id}"
        );
        let filter = doc! {"g": 6, "v": {"$gte": 200 * round, "$lt": 200 * round + 150}};
        let a = r.delete_many(filter.clone()).await.unwrap();
        let b = x.delete_many(filter.clone()).await.unwrap();
        assert_eq!(
            a.deleted_count, b.deleted_count,
            "{at}: delete_many {filter}"
        );
        assert!(a.deleted_count > 0, "{at}: delete_many deleted nothing");
    }
}

/// Documents that each shard owns, read directly on the shards.
async fn owned_on_shards(
    client: &Client,
    shards: &[ShardProcess],
    pattern: &ShardKeyPattern,
) -> Vec<Document> {
    let chunks = config_docs(client, "chunks", doc! {"ns": NS}, doc! {"min": 1}).await;
    let mut out = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("shard{i:04}");
        let docs: Vec<Document> = all(
            &support::direct_client(shard)
                .await
                .database("h")
                .collection("c"),
            doc! {},
            FindOptions::default(),
        )
        .await;
        for d in docs {
            let raw = bson::RawDocumentBuf::try_from(&d).unwrap();
            let key = pattern.extract_key(&raw).unwrap();
            let owner = chunks.iter().find(|c| {
                let min = pattern
                    .encode_bound(c.get_document("min").unwrap())
                    .unwrap();
                let max = pattern
                    .encode_bound(c.get_document("max").unwrap())
                    .unwrap();
                min <= key && key < max
            });
            if owner.and_then(|c| c.get_str("shard").ok()) == Some(name.as_str()) {
                out.push(d);
            }
        }
    }
    out
}

/// Seconds for 5 full `find`s and 5 `count`s through the router (printed
/// as a ratio, never asserted: speed is for benchmarks).
async fn read_cost(coll: &Collection<Document>) -> (f64, f64) {
    let started = Instant::now();
    for _ in 0..5 {
        all(coll, doc! {}, FindOptions::default()).await;
    }
    let find = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..5 {
        coll.count_documents(doc! {}).await.unwrap();
    }
    (find, started.elapsed().as_secs_f64())
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One scenario: `n` shards, a shard key, the chunk layout made by `layout`
/// (which returns the bounds of the chunk to migrate and its destination).
async fn scenario(n: usize, key: Document, compound: bool) {
    let config = shardgate_router::RouterConfig {
        balancer: false,
        enable_test_commands: true,
        orphan_cleanup_delay_secs: 3600,
        critical_section_wait_ms: 300,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(n, config, false).await;
    let reference_dir = tempfile::tempdir().unwrap();
    let reference_shard = support::start_shards(reference_dir.path(), 1, false)
        .await
        .remove(0);
    let client = cluster.client().await;
    let reference = support::direct_client(&reference_shard).await;
    admin(
        &client,
        doc! {"enableSharding": "h", "primaryShard": "shard0000"},
    )
    .await;
    let pattern = ShardKeyPattern::parse(&key).unwrap();
    if compound {
        admin(&client, doc! {"shardCollection": NS, "key": key.clone()}).await;
        for middle in [
            doc! {"tenant": "t1", "_id": Bson::MinKey},
            doc! {"tenant": "t1", "_id": 0i64},
            doc! {"tenant": "t2", "_id": Bson::MinKey},
        ] {
            admin(&client, doc! {"split": NS, "middle": middle}).await;
        }
        let last = doc! {"tenant": "t2", "_id": Bson::MinKey};
        admin(
            &client,
            doc! {"moveChunk": NS, "find": last, "to": "shard0001", "_waitForDelete": true},
        )
        .await;
        if n > 2 {
            let first = doc! {"tenant": "t0", "_id": Bson::MinKey};
            admin(
                &client,
                doc! {"moveChunk": NS, "bounds": [
                    {"tenant": Bson::MinKey, "_id": Bson::MinKey}, {"tenant": "t1", "_id": Bson::MinKey}
                ], "to": "shard0002", "_waitForDelete": true},
            )
            .await;
            let _ = first;
        }
    } else {
        admin(
            &client,
            doc! {"shardCollection": NS, "key": key.clone(), "numInitialChunks": 4},
        )
        .await;
    }
    let docs: Vec<Document> = (0..DOCS).map(document).collect();
    let sides = Sides {
        router: client.database("h").collection("c"),
        reference: reference.database("h").collection("c"),
    };
    sides.router.insert_many(docs.clone()).await.unwrap();
    sides.reference.insert_many(docs).await.unwrap();
    // The chunk to move: for the compound key half of tenant t1 by hash;
    // else the first chunk of shard0000 with documents.
    let chunks = config_docs(&client, "chunks", doc! {"ns": NS}, doc! {"min": 1}).await;
    let chunk = if compound {
        chunks
            .iter()
            .find(|c| c.get_document("min").unwrap() == &doc! {"tenant": "t1", "_id": Bson::MinKey})
            .unwrap()
            .clone()
    } else {
        // The first chunk of the shard holding the most, so the clone's
        // first batch holds only part of it.
        let on = |s: &str| {
            chunks
                .iter()
                .filter(|c| c.get_str("shard").unwrap() == s)
                .count()
        };
        let source = (0..n)
            .map(|i| format!("shard{i:04}"))
            .max_by_key(|s| on(s))
            .unwrap();
        chunks
            .iter()
            .find(|c| c.get_str("shard").unwrap() == source)
            .unwrap()
            .clone()
    };
    let source = chunk.get_str("shard").unwrap().to_owned();
    let (min, max) = (
        chunk.get_document("min").unwrap().clone(),
        chunk.get_document("max").unwrap().clone(),
    );
    let (lo, hi) = (
        pattern.encode_bound(&min).unwrap(),
        pattern.encode_bound(&max).unwrap(),
    );
    let in_range = (0..DOCS)
        .filter(|i| {
            let raw = bson::RawDocumentBuf::try_from(&document(*i)).unwrap();
            let k = pattern.extract_key(&raw).unwrap();
            lo <= k && k < hi
        })
        .count() as u64;
    assert!(in_range > 500, "the moved chunk holds {in_range} documents");
    let dest_index = if source == "shard0001" { 0 } else { 1 };
    let dest = format!("shard{dest_index:04}");
    let dest = dest.as_str();
    let dest_coll: Collection<Document> = support::direct_client(&cluster.shards[dest_index])
        .await
        .database("h")
        .collection("c");
    let before_on_dest = dest_coll.count_documents(doc! {}).await.unwrap();

    let no_orphans = read_cost(&sides.router).await;
    let pause = |state: &str| {
        doc! {"configureFailPoint": "shardgatePauseMigrationAt", "mode": "alwaysOn", "data": {"state": state}}
    };
    admin(&client, pause("cloningPartial")).await;
    let mover = {
        let client = client.clone();
        let (min, max) = (min.clone(), max.clone());
        let dest = dest.to_owned();
        tokio::spawn(async move {
            client
                .database("admin")
                .run_command(doc! {"moveChunk": NS, "bounds": [min, max], "to": dest})
                .await
        })
    };
    let mut round = 0;
    // Part of the range copied to the destination.
    wait_until("a partial clone", || async {
        dest_coll.count_documents(doc! {}).await.unwrap() > before_on_dest
    })
    .await;
    let copied = dest_coll.count_documents(doc! {}).await.unwrap() - before_on_dest;
    assert!(
        copied < in_range,
        "the clone is partial ({copied} of {in_range})"
    );
    sides.reads_agree("cloning").await;
    sides.writes_agree("cloning", round).await;
    round += 1;
    // The whole range copied, catch-up not yet run.
    admin(&client, pause("catchup")).await;
    // The clone runs on to the catch-up pause: wait until it stops growing.
    let (mut last, mut stable) = (0, 0);
    while stable < 4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = dest_coll.count_documents(doc! {}).await.unwrap();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    assert!(last > before_on_dest + copied, "the clone went on");
    sides.reads_agree("catchup").await;
    sides.writes_agree("catchup", round).await;
    round += 1;
    // The critical section: writes to the range are held (a write there
    // answers StaleConfig after the short wait configured), reads go on.
    admin(&client, pause("critical")).await;
    let in_range_id = (0..DOCS)
        .find(|i| {
            let raw = bson::RawDocumentBuf::try_from(&document(*i)).unwrap();
            let k = pattern.extract_key(&raw).unwrap();
            lo <= k && k < hi
        })
        .unwrap();
    let probe = document(in_range_id);
    let key_filter = if compound {
        doc! {"tenant": probe.get_str("tenant").unwrap(), "_id": in_range_id}
    } else {
        doc! {"_id": in_range_id}
    };
    wait_until("the critical section", || async {
        match sides
            .router
            .update_one(key_filter.clone(), doc! {"$set": {"probe": 0}})
            .await
        {
            Err(e) => support::error_code(&e) == 13388,
            Ok(_) => false,
        }
    })
    .await;
    sides
        .reference
        .update_one(key_filter.clone(), doc! {"$set": {"probe": 0}})
        .await
        .unwrap();
    sides.reads_agree("critical").await;
    // Committed, the range not yet deleted on the source.
    admin(&client, pause("committed")).await;
    wait_until("the commit", || async {
        config_docs(&client, "chunks", doc! {"ns": NS, "min": &min}, doc! {})
            .await
            .first()
            .and_then(|c| c.get_str("shard").ok().map(|s| s == dest))
            .unwrap_or(false)
    })
    .await;
    sides.reads_agree("committed").await;
    sides.writes_agree("committed", round).await;
    admin(
        &client,
        doc! {"configureFailPoint": "shardgatePauseMigrationAt", "mode": "off"},
    )
    .await;
    mover.await.unwrap().expect("moveChunk");
    // Still before range deletion (an hour away): the source holds orphans.
    let with_orphans = read_cost(&sides.router).await;
    println!(
        "read cost with hashed orphans on one shard / without: find {:.2}, count {:.2}",
        with_orphans.0 / no_orphans.0,
        with_orphans.1 / no_orphans.1
    );
    sides.reads_agree("after the move").await;
    sides.writes_agree("after the move", round + 1).await;
    // Every write applied once per document: what the shards own equals
    // the reference, document for document.
    let owned = owned_on_shards(&client, &cluster.shards, &pattern).await;
    assert_eq!(
        by_id(owned),
        by_id(all(&sides.reference, doc! {}, FindOptions::default()).await),
        "the documents the shards own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hashed_id_over_two_shards() {
    scenario(2, doc! {"_id": "hashed"}, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hashed_id_over_three_shards() {
    scenario(3, doc! {"_id": "hashed"}, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compound_key_with_a_hashed_field() {
    scenario(3, doc! {"tenant": 1, "_id": "hashed"}, true).await;
}
