//! Sharded reads: a differential test against one unsharded server over
//! generated queries, targeting checked by the shards' own counters, and
//! 100,000 documents paged exactly once with no cursor left behind.

mod support;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::options::FindOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{admin, TestCluster};

/// Documents with a mixed-type shard key `k` (ints, doubles, strings, null,
/// missing) and other fields to filter and sort on.
fn dataset(n: i64) -> Vec<Document> {
    (0..n)
        .map(|i| {
            let mut d = doc! {"_id": i, "g": i % 10, "s": format!("s{:03}", (i * 7) % 100), "v": (i * 37) % 1000};
            match i % 17 {
                0 => {}
                1 => {
                    d.insert("k", Bson::Null);
                }
                2 | 3 => {
                    d.insert("k", format!("key{:04}", i % 500));
                }
                4 => {
                    d.insert("k", (i % 900) as f64 + 0.5);
                }
                _ => {
                    d.insert("k", (i * 13) % 1000);
                }
            }
            d
        })
        .collect()
}

/// Shards `db.c` on `{k: 1}` over three shards: zone ranges at
/// shardCollection time, then splits, so chunks are placed unevenly.
async fn shard_unevenly(client: &mongodb::Client, db: &str) {
    admin(
        client,
        doc! {"enableSharding": db, "primaryShard": "shard0002"},
    )
    .await;
    admin(client, doc! {"addShardToZone": "shard0000", "zone": "low"}).await;
    admin(client, doc! {"addShardToZone": "shard0001", "zone": "mid"}).await;
    let ns = format!("{db}.c");
    admin(
        client,
        doc! {"updateZoneKeyRange": &ns, "min": {"k": 0}, "max": {"k": 200}, "zone": "low"},
    )
    .await;
    admin(
        client,
        doc! {"updateZoneKeyRange": &ns, "min": {"k": 400}, "max": {"k": 700}, "zone": "mid"},
    )
    .await;
    admin(client, doc! {"shardCollection": &ns, "key": {"k": 1}}).await;
    for middle in [
        doc! {"k": 100},
        doc! {"k": 500},
        doc! {"k": "key0250"},
        doc! {"k": 900},
    ] {
        admin(client, doc! {"split": &ns, "middle": middle}).await;
    }
}

fn random_filter(rng: &mut StdRng) -> Document {
    let pick = rng.random_range(0..9);
    let a = rng.random_range(0..1000i64);
    let b = a + rng.random_range(1..400i64);
    match pick {
        0 => doc! {},
        1 => doc! {"k": a},
        2 => doc! {"k": {"$in": [a, b, format!("key{:04}", a % 500), Bson::Null]}},
        3 => doc! {"k": {"$gte": a, "$lt": b}},
        4 => doc! {"k": {"$gt": "key0100"}},
        5 => doc! {"g": a % 10},
        6 => doc! {"$or": [{"k": a}, {"k": {"$gt": b}}]},
        7 => doc! {"$and": [{"k": {"$lte": b}}, {"g": {"$in": [1, 2, 3]}}]},
        _ => doc! {"v": {"$lt": a}, "k": {"$exists": true}},
    }
}

fn random_sort(rng: &mut StdRng) -> Option<Document> {
    let mut sort = match rng.random_range(0..7) {
        0 => return None,
        1 => doc! {"k": 1},
        2 => doc! {"k": -1},
        3 => doc! {"g": 1, "k": -1},
        4 => doc! {"s": -1, "v": 1},
        5 => doc! {"v": 1},
        _ => doc! {"g": -1, "s": 1},
    };
    // A total order, so router and direct agree on ties.
    sort.insert("_id", if rng.random_bool(0.5) { 1 } else { -1 });
    Some(sort)
}

async fn run_find(
    client: &mongodb::Client,
    db: &str,
    filter: &Document,
    opts: FindOptions,
) -> Result<Vec<Document>, String> {
    client
        .database(db)
        .collection::<Document>("c")
        .find(filter.clone())
        .with_options(opts)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_match_an_unsharded_server() {
    let cluster = TestCluster::start(3).await;
    let router = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let direct_server = support::start_shards(dir.path(), 1, false).await;
    let direct = support::direct_client(&direct_server[0]).await;
    shard_unevenly(&router, "diff").await;
    let docs = dataset(3000);
    router
        .database("diff")
        .collection::<Document>("c")
        .insert_many(docs.clone())
        .await
        .unwrap();
    direct
        .database("diff")
        .collection::<Document>("c")
        .insert_many(docs)
        .await
        .unwrap();
    let chunks =
        support::config_docs(&router, "chunks", doc! {"ns": "diff.c"}, doc! {"min": 1}).await;
    let owners: std::collections::BTreeSet<&str> =
        chunks.iter().map(|c| c.get_str("shard").unwrap()).collect();
    assert_eq!(owners.len(), 3, "chunks on all three shards");

    let seed: u64 = std::env::var("SHARDGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122);
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..220 {
        let filter = random_filter(&mut rng);
        let sort = random_sort(&mut rng);
        let mut opts = FindOptions::builder().build();
        if let Some(s) = &sort {
            opts.sort = Some(s.clone());
            if rng.random_bool(0.5) {
                opts.skip = Some(rng.random_range(0..50));
            }
            if rng.random_bool(0.6) {
                opts.limit = Some(rng.random_range(1..300));
            }
        }
        if rng.random_bool(0.5) {
            opts.batch_size = Some(rng.random_range(1..150));
        }
        opts.projection = match rng.random_range(0..3) {
            0 => None,
            1 => Some(doc! {"k": 1, "g": 1}),
            _ => Some(doc! {"s": 0}),
        };
        let context =
            format!("seed {seed} case {case}: filter {filter} sort {sort:?} opts {opts:?}");
        let mut got = run_find(&router, "diff", &filter, opts.clone())
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let mut want = run_find(&direct, "diff", &filter, opts)
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        if sort.is_none() {
            let by_id = |d: &Document| d.get_i64("_id").unwrap_or(-1);
            got.sort_by_key(by_id);
            want.sort_by_key(by_id);
        }
        assert_eq!(got.len(), want.len(), "{context}");
        assert_eq!(got, want, "{context}");
    }

    // count / distinct / aggregate.
    for case in 0..60 {
        let filter = random_filter(&mut rng);
        let context = format!("seed {seed} agg case {case}: filter {filter}");
        let (rc, dc) = (
            router.database("diff").collection::<Document>("c"),
            direct.database("diff").collection::<Document>("c"),
        );
        match case % 3 {
            0 => {
                let skip = rng.random_range(0..20u64);
                let a = rc.count_documents(filter.clone()).skip(skip).await.unwrap();
                let b = dc.count_documents(filter.clone()).skip(skip).await.unwrap();
                assert_eq!(a, b, "{context}");
                let a = router
                    .database("diff")
                    .run_command(doc! {"count": "c", "query": filter.clone()})
                    .await
                    .unwrap();
                let b = direct
                    .database("diff")
                    .run_command(doc! {"count": "c", "query": filter.clone()})
                    .await
                    .unwrap();
                assert_eq!(
                    a.get_i32("n").unwrap(),
                    b.get_i32("n").unwrap(),
                    "{context}"
                );
            }
            1 => {
                let field = ["g", "s", "k"][rng.random_range(0..3)];
                let mut a = rc.distinct(field, filter.clone()).await.unwrap();
                let mut b = dc.distinct(field, filter.clone()).await.unwrap();
                let key = |v: &Bson| format!("{v:?}");
                a.sort_by_key(key);
                b.sort_by_key(key);
                assert_eq!(a, b, "{context} distinct {field}");
            }
            _ => {
                let pipeline = vec![
                    doc! {"$match": filter.clone()},
                    doc! {"$group": {"_id": "$g", "n": {"$sum": 1}, "total": {"$sum": "$v"}, "lo": {"$min": "$v"}, "hi": {"$max": "$s"}, "avg": {"$avg": "$v"}}},
                    doc! {"$sort": {"_id": 1}},
                ];
                let a: Vec<Document> = rc
                    .aggregate(pipeline.clone())
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                let b: Vec<Document> = dc
                    .aggregate(pipeline)
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(a, b, "{context}");
                let est_a = rc.estimated_document_count().await.unwrap();
                assert_eq!(est_a, 3000);
            }
        }
    }
}

async fn query_counter(shard: &shardgate::shard_process::ShardProcess) -> i64 {
    let s = support::direct_client(shard)
        .await
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    let q = s.get_document("opcounters").unwrap().get("query").unwrap();
    q.as_i64().or(q.as_i32().map(i64::from)).unwrap()
}

async fn open_cursors(shard: &shardgate::shard_process::ShardProcess) -> i64 {
    let s = support::direct_client(shard)
        .await
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    let t = s
        .get_document("metrics")
        .unwrap()
        .get_document("cursor")
        .unwrap()
        .get_document("open")
        .unwrap()
        .get("total")
        .unwrap()
        .clone();
    t.as_i64().or(t.as_i32().map(i64::from)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_queries_reach_only_owning_shards_and_cursors_page_exactly_once() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "big", "primaryShard": "shard0000"},
    )
    .await;
    for (shard, zone) in [("shard0000", "a"), ("shard0001", "b"), ("shard0002", "c")] {
        admin(&client, doc! {"addShardToZone": shard, "zone": zone}).await;
    }
    for (min, max, zone) in [
        (Bson::Int64(0), Bson::Int64(33_000), "a"),
        (Bson::Int64(33_000), Bson::Int64(66_000), "b"),
        (Bson::Int64(66_000), Bson::MaxKey, "c"),
    ] {
        admin(&client, doc! {"updateZoneKeyRange": "big.c", "min": {"k": min}, "max": {"k": max}, "zone": zone}).await;
    }
    admin(&client, doc! {"shardCollection": "big.c", "key": {"k": 1}}).await;
    let coll = client.database("big").collection::<Document>("c");
    for start in (0..100_000i64).step_by(10_000) {
        let batch: Vec<Document> = (start..start + 10_000)
            .map(|i| doc! {"_id": i, "k": i, "pad": "x"})
            .collect();
        coll.insert_many(batch).await.unwrap();
    }
    for (i, shard) in cluster.shards.iter().enumerate() {
        let n = support::direct_client(shard)
            .await
            .database("big")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(
            n,
            [33_000, 33_000, 34_000][i],
            "documents live on their chunk's shard"
        );
    }

    // A shard-key equality reaches exactly one shard; a range only its owners.
    let before: Vec<i64> =
        futures::future::join_all(cluster.shards.iter().map(query_counter)).await;
    let one = coll.find_one(doc! {"k": 50_000i64}).await.unwrap().unwrap();
    assert_eq!(one.get_i64("_id").unwrap(), 50_000);
    let mid: Vec<i64> = futures::future::join_all(cluster.shards.iter().map(query_counter)).await;
    let delta: Vec<i64> = mid.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        vec![0, 1, 0],
        "only shard0001 saw the targeted query"
    );
    let ranged: Vec<Document> = coll
        .find(doc! {"k": {"$gte": 10_000i64, "$lt": 40_000i64}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ranged.len(), 30_000);
    let after: Vec<i64> = futures::future::join_all(cluster.shards.iter().map(query_counter)).await;
    let delta: Vec<i64> = after.iter().zip(&mid).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        vec![1, 1, 0],
        "the range reached its two owning shards only"
    );

    // 100,000 documents paged with batchSize 101: each exactly once.
    let all: Vec<Document> = coll
        .find(doc! {})
        .batch_size(101)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 100_000);
    let ids: std::collections::HashSet<i64> =
        all.iter().map(|d| d.get_i64("_id").unwrap()).collect();
    assert_eq!(ids.len(), 100_000, "no document twice");

    // A sorted scatter cursor left open, then killCursors: nothing remains open.
    let db = client.database("big");
    let first = db
        .run_command(doc! {"find": "c", "sort": {"k": -1}, "batchSize": 101})
        .await
        .unwrap();
    let cursor = first.get_document("cursor").unwrap();
    let batch = cursor.get_array("firstBatch").unwrap();
    assert_eq!(batch.len(), 101);
    assert_eq!(
        batch[0].as_document().unwrap().get_i64("k").unwrap(),
        99_999,
        "merged in order"
    );
    assert!(
        batch[0].as_document().unwrap().get("$sortKey").is_none(),
        "$sortKey stripped"
    );
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);
    let open: i64 = futures::future::join_all(cluster.shards.iter().map(open_cursors))
        .await
        .iter()
        .sum();
    assert!(open >= 3, "the merge holds a cursor on each shard ({open})");
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "batchSize": 50})
        .await
        .unwrap();
    let next = more
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap();
    assert_eq!(next[0].as_document().unwrap().get_i64("k").unwrap(), 99_898);
    let killed = db
        .run_command(doc! {"killCursors": "c", "cursors": [id]})
        .await
        .unwrap();
    assert_eq!(
        killed.get_array("cursorsKilled").unwrap(),
        &vec![Bson::Int64(id)]
    );
    let open: i64 = futures::future::join_all(cluster.shards.iter().map(open_cursors))
        .await
        .iter()
        .sum();
    assert_eq!(open, 0, "no cursor remains open on any shard");
    let status = client
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    assert_eq!(
        status
            .get_document("metrics")
            .unwrap()
            .get_document("cursor")
            .unwrap()
            .get_document("open")
            .unwrap()
            .get_i64("total")
            .unwrap(),
        0
    );
    let gone = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&gone), 43);
    // A sort no server reads gets mongod's error for it.
    for (sort, code) in [(doc! {"k": 2}, 15975), (doc! {"k": "up"}, 15974)] {
        let err = db
            .run_command(doc! {"find": "c", "sort": sort})
            .await
            .unwrap_err();
        assert_eq!(support::error_code(&err), code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_fails_the_query_unless_partial_results_are_allowed() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "part", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"addShardToZone": "shard0002", "zone": "far"}).await;
    admin(&client, doc! {"updateZoneKeyRange": "part.c", "min": {"k": 50}, "max": {"k": Bson::MaxKey}, "zone": "far"}).await;
    admin(&client, doc! {"shardCollection": "part.c", "key": {"k": 1}}).await;
    let coll = client.database("part").collection::<Document>("c");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    cluster.shards[2].kill();

    let err = match coll.find(doc! {}).await {
        Err(e) => e,
        Ok(cursor) => cursor.try_collect::<Vec<_>>().await.unwrap_err(),
    };
    assert_eq!(support::error_code(&err), 6, "HostUnreachable: {err}");
    let partial: Vec<Document> = coll
        .find(doc! {})
        .allow_partial_results(true)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(partial.len(), 50, "the live shard's documents");
    // A query that targets only the live shard is unaffected.
    assert_eq!(
        coll.count_documents(doc! {"k": {"$lt": 50}}).await.unwrap(),
        50
    );
}

/// `returnKey` with a sort across shards: the keys come back in order
/// (SecantusDB drops `$sortKey` under `returnKey`; the router keys them by
/// their own values), as one server returns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_key_reads_merge_in_order() {
    let cluster = TestCluster::start(3).await;
    let router = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let direct_server = support::start_shards(dir.path(), 1, false).await;
    let direct = support::direct_client(&direct_server[0]).await;
    shard_unevenly(&router, "rk").await;
    let docs: Vec<Document> = (0..600i64)
        .map(|i| doc! {"_id": i, "k": (i * 37) % 1000, "v": i % 7})
        .collect();
    for c in [&router, &direct] {
        let coll = c.database("rk").collection::<Document>("c");
        coll.insert_many(docs.clone()).await.unwrap();
        coll.create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"k": 1, "v": 1})
                .build(),
        )
        .await
        .unwrap();
    }
    for (sort, hint) in [
        (doc! {"k": 1, "v": 1}, doc! {"k": 1, "v": 1}),
        (doc! {"k": -1, "v": -1}, doc! {"k": 1, "v": 1}),
    ] {
        let opts = FindOptions::builder()
            .sort(sort.clone())
            .hint(mongodb::options::Hint::Keys(hint))
            .return_key(true)
            .batch_size(50)
            .build();
        let got = run_find(&router, "rk", &doc! {}, opts.clone())
            .await
            .unwrap();
        let want = run_find(&direct, "rk", &doc! {}, opts).await.unwrap();
        assert_eq!(got.len(), 600);
        assert_eq!(got, want, "sort {sort}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_ranges_are_never_counted_twice() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 2, false).await;
    let store: Arc<dyn shardgate_config_store::ConfigStore> =
        Arc::new(shardgate_config_store::EmbeddedStore::open(dir.path().join("config")).unwrap());
    let router = support::RouterHandle::start_with_store(
        store.clone(),
        shardgate_router::RouterConfig::default(),
    )
    .await;
    let client = support::client(&router.uri()).await;
    for s in &shards {
        admin(&client, doc! {"addShard": s.address()}).await;
    }
    admin(
        &client,
        doc! {"enableSharding": "orph", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"addShardToZone": "shard0001", "zone": "hi"}).await;
    admin(&client, doc! {"updateZoneKeyRange": "orph.c", "min": {"k": 50}, "max": {"k": Bson::MaxKey}, "zone": "hi"}).await;
    admin(&client, doc! {"shardCollection": "orph.c", "key": {"k": 1}}).await;
    let coll = client.database("orph").collection::<Document>("c");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();

    // A migration of [50, 60) to shard0000 has copied the documents but not
    // committed: shard0000 holds them without owning them.
    let copies: Vec<Document> = (50..60).map(|i| doc! {"_id": i, "k": i}).collect();
    support::direct_client(&shards[0])
        .await
        .database("orph")
        .collection::<Document>("c")
        .insert_many(copies)
        .await
        .unwrap();
    let catalog = shardgate_config_store::Catalog::new(store);
    let pattern =
        shardgate_config_store::shard_key::ShardKeyPattern::parse(&doc! {"k": 1}).unwrap();
    let orphan = shardgate_config_store::model::OrphanRange {
        ns: "orph.c".into(),
        shard: "shard0000".into(),
        min: doc! {"k": 50},
        max: doc! {"k": 60},
    };
    catalog.add_orphan_range(&pattern, &orphan).await.unwrap();
    // The router learns of it through its watch.
    let mut counted = 0;
    for _ in 0..50 {
        counted = coll.count_documents(doc! {}).await.unwrap();
        if counted == 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(counted, 100, "each document counted once");
    let all: Vec<Document> = coll
        .find(doc! {})
        .sort(doc! {"k": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ks: Vec<i64> = all.iter().map(|d| d.get_i32("k").unwrap() as i64).collect();
    assert_eq!(
        ks,
        (0..100).collect::<Vec<i64>>(),
        "each document returned once, in order"
    );
    let n = router_count(&client).await;
    assert_eq!(n, 100);
    let distinct = coll
        .distinct("k", doc! {"k": {"$gte": 45, "$lt": 65}})
        .await
        .unwrap();
    assert_eq!(distinct.len(), 20);
}

async fn router_count(client: &mongodb::Client) -> i32 {
    client
        .database("orph")
        .run_command(doc! {"count": "c"})
        .await
        .unwrap()
        .get_i32("n")
        .unwrap()
}
