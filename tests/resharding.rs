//! `reshardCollection` while clients write: a collection spread over three
//! shards moves to a new shard key; every write a client made during it
//! (inserts, updates of both keys, deletes) is in the result, which equals
//! one unsharded server given the same writes; no document is lost or
//! stored twice; reads by the new key reach one shard; the balancer then
//! deletes what each shard no longer owns.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bson::{doc, Document};
use futures::FutureExt;
use futures::TryStreamExt;
use mongodb::Collection;
use shardgate::shard_process::ShardProcess;
use support::{admin, direct_client, TestCluster};

fn config() -> shardgate_router::RouterConfig {
    shardgate_router::RouterConfig {
        balancer: true,
        balancer_interval_secs: 1,
        orphan_cleanup_delay_secs: 0,
        ..Default::default()
    }
}

/// `db.c` sharded on `{k: 1}` with `db`'s primary `primary`, split at each
/// of `moves`' keys and that chunk moved to its shard.
async fn spread(client: &mongodb::Client, db: &str, primary: &str, moves: &[(i64, &str)]) {
    admin(client, doc! {"enableSharding": db, "primaryShard": primary}).await;
    let ns = format!("{db}.c");
    admin(client, doc! {"shardCollection": &ns, "key": {"k": 1}}).await;
    for (middle, to) in moves {
        admin(client, doc! {"split": &ns, "middle": {"k": middle}}).await;
        let mv = doc! {"moveChunk": &ns, "find": {"k": middle}, "to": *to, "_waitForDelete": true};
        admin(client, mv).await;
    }
}

/// The reference: one unsharded server's `rs.c`; both it and `router` get
/// `docs(3000)`. The server lives as long as the second value.
async fn reference_with_docs(
    router: &Collection<Document>,
) -> (Collection<Document>, (tempfile::TempDir, Vec<ShardProcess>)) {
    let dir = tempfile::tempdir().unwrap();
    let server = support::start_shards(dir.path(), 1, false).await;
    let reference = direct_client(&server[0])
        .await
        .database("rs")
        .collection::<Document>("c");
    router.insert_many(docs(3000)).await.unwrap();
    reference.insert_many(docs(3000)).await.unwrap();
    (reference, (dir, server))
}

/// Runs `op` while a client writes (write numbers from `first`, each also
/// applied to `reference`); returns how many writes it made.
async fn under_writes(
    (router, reference): (&Collection<Document>, &Collection<Document>),
    first: i64,
    op: impl std::future::Future<Output = ()>,
) -> i64 {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (router, reference, stop) = (router.clone(), reference.clone(), stop.clone());
        async move {
            let mut i = first;
            while !stop.load(Ordering::SeqCst) {
                write(&router, &reference, i).await;
                i += 1;
            }
            i - first
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    op.await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap()
}

fn docs(n: i64) -> Vec<Document> {
    (0..n)
        .map(|i| doc! {"_id": i, "k": (i * 37) % 1000, "g": format!("g{:03}", (i * 11) % 500), "v": 0i64})
        .collect()
}

async fn all(coll: &Collection<Document>) -> Vec<Document> {
    coll.find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// One write, retried until it succeeds (a write held through the commit
/// may time out), then applied to the reference.
async fn write(router: &Collection<Document>, reference: &Collection<Document>, i: i64) {
    for attempt in 0..50 {
        let id = (i * 7919) % 3000;
        let done = match i % 5 {
            0 => router
                .insert_one(doc! {"_id": 10_000 + i, "k": i % 1000, "g": format!("g{:03}", i % 500), "v": i})
                .await
                .map(|_| ())
                .or_else(|e| if support::error_code(&e) == 11000 && attempt > 0 { Ok(()) } else { Err(e) }),
            1 => router
                .update_one(doc! {"_id": id}, doc! {"$set": {"v": i}})
                .await
                .map(|_| ()),
            2 => router
                .update_one(doc! {"_id": id}, doc! {"$set": {"g": format!("moved{i:05}")}})
                .await
                .map(|_| ()),
            3 => router
                .update_one(doc! {"_id": id}, doc! {"$set": {"k": (i * 13) % 1000}})
                .await
                .map(|_| ()),
            _ => router.delete_one(doc! {"_id": id}).await.map(|_| ()),
        };
        match done {
            Ok(()) => break,
            Err(e) if attempt < 49 => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("write {i} failed: {e}"),
        }
    }
    let id = (i * 7919) % 3000;
    match i % 5 {
        0 => {
            let d =
                doc! {"_id": 10_000 + i, "k": i % 1000, "g": format!("g{:03}", i % 500), "v": i};
            reference.insert_one(d).await.unwrap();
        }
        1 => {
            reference
                .update_one(doc! {"_id": id}, doc! {"$set": {"v": i}})
                .await
                .unwrap();
        }
        2 => {
            let u = doc! {"$set": {"g": format!("moved{i:05}")}};
            reference.update_one(doc! {"_id": id}, u).await.unwrap();
        }
        3 => {
            let u = doc! {"$set": {"k": (i * 13) % 1000}};
            reference.update_one(doc! {"_id": id}, u).await.unwrap();
        }
        _ => {
            reference.delete_one(doc! {"_id": id}).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_writes_matches_an_unsharded_server() {
    let cluster = TestCluster::start_with(3, config(), false).await;
    let client = cluster.client().await;
    admin(&client, doc! {"balancerStop": 1}).await;
    spread(
        &client,
        "rs",
        "shard0000",
        &[(200, "shard0001"), (450, "shard0002"), (800, "shard0001")],
    )
    .await;
    let router = client.database("rs").collection::<Document>("c");
    let (reference, _reference_server) = reference_with_docs(&router).await;

    // Not a mongos refusal: unknown collection, same key (a no-op), no
    // resharding to abort.
    let code = support::admin_error(
        &client,
        doc! {"reshardCollection": "rs.nope", "key": {"g": 1}},
    )
    .await;
    assert_eq!(code, 118, "NamespaceNotSharded");
    admin(&client, doc! {"reshardCollection": "rs.c", "key": {"k": 1}}).await;
    for cmd in ["abortReshardCollection", "commitReshardCollection"] {
        let code = support::admin_error(&client, doc! {cmd: "rs.c"}).await;
        assert_eq!(code, 339, "{cmd}: NoSuchReshardCollection");
    }

    let writes = reshard_under_writes(&client, (&router, &reference), doc! {"g": 1}, 1).await;
    assert!(
        writes > 20,
        "clients wrote during the resharding ({writes})"
    );
    let colls = support::config_docs(&client, "collections", doc! {"_id": "rs.c"}, doc! {}).await;
    assert_eq!(colls[0].get_document("key").unwrap(), &doc! {"g": 1});
    assert!(colls[0].get("reshardingFields").is_none());
    let chunks = support::config_docs(&client, "chunks", doc! {}, doc! {"min": 1}).await;
    let owners: std::collections::BTreeSet<&str> =
        chunks.iter().map(|c| c.get_str("shard").unwrap()).collect();
    assert_eq!(chunks.len(), 6);
    assert_eq!(owners.len(), 3, "the new chunks span the shards");

    // Every write is there, each document once.
    let got = all(&router).await;
    let want = all(&reference).await;
    if got.len() != want.len() {
        let ids: std::collections::BTreeSet<i64> =
            got.iter().map(|d| d.get_i64("_id").unwrap()).collect();
        for w in want
            .iter()
            .filter(|w| !ids.contains(&w.get_i64("_id").unwrap()))
        {
            let mut on = Vec::new();
            for (i, s) in cluster.shards.iter().enumerate() {
                let c = direct_client(s).await;
                if let Some(d) = c
                    .database("rs")
                    .collection::<Document>("c")
                    .find_one(doc! {"_id": w.get("_id").unwrap().clone()})
                    .await
                    .unwrap()
                {
                    on.push((i, d));
                }
            }
            eprintln!("missing {w} held on {on:?}");
        }
        let orphans = support::config_docs(&client, "chunks", doc! {}, doc! {"min": 1}).await;
        eprintln!("chunks {orphans:?}");
    }
    same(&got, &want);
    assert_eq!(
        router.count_documents(doc! {}).await.unwrap(),
        want.len() as u64
    );
    // An equality on the new key reads one shard, and finds its documents.
    let g = want[17].get_str("g").unwrap().to_owned();
    let by_g: Vec<Document> = router
        .find(doc! {"g": &g})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let want_g: Vec<&Document> = want
        .iter()
        .filter(|d| d.get_str("g").unwrap() == g)
        .collect();
    assert_eq!(by_g.len(), want_g.len());
    // Writes by the new key after the commit.
    for c in [&router, &reference] {
        c.update_many(doc! {"g": &g}, doc! {"$set": {"after": true}})
            .await
            .unwrap();
    }
    let want = all(&reference).await;
    let after = router.count_documents(doc! {"after": true}).await.unwrap();
    assert_eq!(after, want_g.len() as u64);

    // The balancer deletes what each shard no longer owns: then the
    // shards hold exactly the documents, once.
    admin(&client, doc! {"balancerStart": 1}).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut held = 0;
        for s in &cluster.shards {
            let c = direct_client(s).await;
            held += c
                .database("rs")
                .collection::<Document>("c")
                .count_documents(doc! {})
                .await
                .unwrap();
        }
        let orphans = support::config_docs(&client, "rangeDeletions", doc! {}, doc! {}).await;
        if held == want.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shards hold {held} documents, {} expected ({} ranges pending)",
            want.len(),
            orphans.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    same(&all(&router).await, &want);

    // Again, to a hashed key: the documents spread by the hash of `k`.
    let writes = reshard_under_writes(
        &client,
        (&router, &reference),
        doc! {"k": "hashed"},
        100_000,
    )
    .await;
    assert!(
        writes > 20,
        "clients wrote during the second resharding ({writes})"
    );
    let colls = support::config_docs(&client, "collections", doc! {"_id": "rs.c"}, doc! {}).await;
    assert_eq!(colls[0].get_document("key").unwrap(), &doc! {"k": "hashed"});
    let want = all(&reference).await;
    same(&all(&router).await, &want);
    for k in [0i64, 819, 999] {
        let got = router.count_documents(doc! {"k": k}).await.unwrap();
        let expected = reference.count_documents(doc! {"k": k}).await.unwrap();
        assert_eq!(got, expected, "k {k}");
    }

    // And from the hashed key to a compound one.
    let writes = reshard_under_writes(
        &client,
        (&router, &reference),
        doc! {"g": 1, "_id": 1},
        200_000,
    )
    .await;
    assert!(
        writes > 20,
        "clients wrote during the third resharding ({writes})"
    );
    same(&all(&router).await, &all(&reference).await);
}

/// Reshards `rs.c` to `key` (6 chunks) while a client writes (write
/// numbers from `first`); returns how many writes it made.
async fn reshard_under_writes(
    client: &mongodb::Client,
    colls: (&Collection<Document>, &Collection<Document>),
    key: Document,
    first: i64,
) -> i64 {
    let cmd = doc! {"reshardCollection": "rs.c", "key": key, "numInitialChunks": 6};
    under_writes(colls, first, admin(client, cmd).map(|_| ())).await
}

/// The same documents, the first difference shown (not all of them).
fn same(got: &[Document], want: &[Document]) {
    assert_eq!(got.len(), want.len(), "document count");
    if let Some((g, w)) = got.iter().zip(want).find(|(g, w)| g != w) {
        panic!("first difference: got {g}, want {w}");
    }
}

/// `abortReshardCollection` while the copy runs: the resharding answers
/// ReshardCollectionAborted, the key stays, and no copy is left on the
/// shards (each document stored once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_resharding_leaves_the_collection_as_it_was() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    spread(&client, "ab", "shard0000", &[(500, "shard0001")]).await;
    let coll = client.database("ab").collection::<Document>("c");
    let n = 20_000i64;
    let docs: Vec<Document> = (0..n)
        .map(|i| doc! {"_id": i, "k": i % 1000, "g": (i * 7919) % n, "pad": "x".repeat(200)})
        .collect();
    coll.insert_many(docs).await.unwrap();
    let mut aborted = false;
    for _ in 0..3 {
        let resharding = tokio::spawn({
            let client = client.clone();
            async move {
                let cmd = doc! {"reshardCollection": "ab.c", "key": {"g": 1}};
                client.database("admin").run_command(cmd).await
            }
        });
        // Abort once the copy has begun.
        let mut answer = None;
        for _ in 0..2_000 {
            let colls =
                support::config_docs(&client, "collections", doc! {"_id": "ab.c"}, doc! {}).await;
            if colls[0].get("reshardingFields").is_some() {
                let abort = doc! {"abortReshardCollection": "ab.c"};
                answer = Some(client.database("admin").run_command(abort).await);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let outcome = resharding.await.unwrap();
        match (answer, outcome) {
            (Some(Ok(_)), Err(e)) => {
                assert_eq!(support::error_code(&e), 341, "{e}");
                aborted = true;
                break;
            }
            // Too late: it committed first; put the key back and try again.
            (_, Ok(_)) => {
                admin(&client, doc! {"reshardCollection": "ab.c", "key": {"k": 1}}).await;
            }
            (a, o) => panic!("abort {a:?}, resharding {o:?}"),
        }
    }
    assert!(aborted, "no abort landed during the copy in 3 tries");
    let colls = support::config_docs(&client, "collections", doc! {"_id": "ab.c"}, doc! {}).await;
    assert_eq!(colls[0].get_document("key").unwrap(), &doc! {"k": 1});
    assert!(colls[0].get("reshardingFields").is_none());
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), n as u64);
    let mut held = 0;
    for s in &cluster.shards {
        held += direct_client(s)
            .await
            .database("ab")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
    }
    assert_eq!(held, n as u64, "no copy left behind");
    let orphans = support::config_docs(&client, "chunks", doc! {}, doc! {}).await;
    assert_eq!(orphans.len(), 2, "the old chunks");
}

/// Zones: the new key's zone ranges (`zones`) replace the old key's, and
/// the chunks inside them go to the zone's shard; without `zones`, the old
/// key's ranges are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_with_zones_places_the_zoned_chunks() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "zn", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"addShardToZone": "shard0002", "zone": "hot"}).await;
    admin(
        &client,
        doc! {"updateZoneKeyRange": "zn.c", "min": {"k": 0}, "max": {"k": 100}, "zone": "hot"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "zn.c", "key": {"k": 1}}).await;
    let coll = client.database("zn").collection::<Document>("c");
    let n = 2_000i64;
    coll.insert_many((0..n).map(|i| doc! {"_id": i, "k": i % 1000, "g": (i * 7) % n}))
        .await
        .unwrap();
    let zones = vec![doc! {"zone": "hot", "min": {"g": 500}, "max": {"g": 1000}}];
    let code = support::admin_error(
        &client,
        doc! {"reshardCollection": "zn.c", "key": {"g": 1}, "zones": [{"zone": "nowhere", "min": {"g": 0}, "max": {"g": 1}}]},
    )
    .await;
    assert_eq!(code, 2, "a zone no shard has");
    admin(
        &client,
        doc! {"reshardCollection": "zn.c", "key": {"g": 1}, "zones": zones},
    )
    .await;
    let tags = support::config_docs(&client, "tags", doc! {"ns": "zn.c"}, doc! {}).await;
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].get_document("min").unwrap(), &doc! {"g": 500});
    let chunks = support::config_docs(&client, "chunks", doc! {}, doc! {"min": 1}).await;
    let zoned: Vec<&Document> = chunks
        .iter()
        .filter(|c| {
            let min = c.get_document("min").unwrap();
            min.get_i64("g").is_ok_and(|g| (500..1000).contains(&g))
        })
        .collect();
    assert!(!zoned.is_empty());
    for c in zoned {
        assert_eq!(c.get_str("shard").unwrap(), "shard0002", "{c}");
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), n as u64);
    assert_eq!(
        coll.count_documents(doc! {"g": {"$gte": 500, "$lt": 1000}})
            .await
            .unwrap(),
        500
    );
    // Without zones, the ranges of the old key go.
    admin(&client, doc! {"reshardCollection": "zn.c", "key": {"k": 1}}).await;
    let tags = support::config_docs(&client, "tags", doc! {"ns": "zn.c"}, doc! {}).await;
    assert!(tags.is_empty(), "{tags:?}");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), n as u64);
}

/// `unshardCollection` while a client writes: every document ends on the
/// chosen shard (`toShard`, else the one holding the least data), once, as
/// one server holds them; the other shards keep nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsharding_under_writes_gathers_everything_on_one_shard() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    spread(
        &client,
        "rs",
        "shard0001",
        &[(300, "shard0000"), (700, "shard0002")],
    )
    .await;
    let router = client.database("rs").collection::<Document>("c");
    let (reference, _reference_server) = reference_with_docs(&router).await;
    let held_by = |db: &'static str, want: usize, on: usize| {
        let shards = &cluster.shards;
        async move {
            for (i, s) in shards.iter().enumerate() {
                let held = direct_client(s)
                    .await
                    .database(db)
                    .collection::<Document>("c")
                    .count_documents(doc! {})
                    .await
                    .unwrap();
                let expected = if i == on { want as u64 } else { 0 };
                assert_eq!(held, expected, "{db} on shard{i}");
            }
        }
    };

    // Onto another shard than the primary: gathered, then moved there as
    // moveCollection moves it, and tracked.
    let unshard = admin(
        &client,
        doc! {"unshardCollection": "rs.c", "toShard": "shard0002"},
    )
    .map(|_| ());
    assert!(under_writes((&router, &reference), 1, unshard).await > 20);
    let colls = support::config_docs(&client, "collections", doc! {"_id": "rs.c"}, doc! {}).await;
    assert!(colls[0].get_bool("unsplittable").unwrap(), "{colls:?}");
    let want = all(&reference).await;
    same(&all(&router).await, &want);
    held_by("rs", want.len(), 2).await;
    // Tracked but not sharded: as on mongos, NamespaceNotSharded.
    let code = support::admin_error(&client, doc! {"unshardCollection": "rs.c"}).await;
    assert_eq!(code, 118, "NamespaceNotSharded");

    // Without `toShard`: onto the shard holding the least data, as mongos
    // picks it. Here shard0000: the primary, shard0001, also holds the
    // database `zz`, and shard0002 holds `rs.c`.
    spread(
        &client,
        "rt",
        "shard0001",
        &[(300, "shard0000"), (700, "shard0002")],
    )
    .await;
    admin(
        &client,
        doc! {"enableSharding": "zz", "primaryShard": "shard0001"},
    )
    .await;
    client
        .database("zz")
        .collection::<Document>("pad")
        .insert_many((0..2000).map(|i| doc! {"_id": i, "p": "x".repeat(200)}))
        .await
        .unwrap();
    // (Without client writes: the copy under writes is the one above.)
    let router = client.database("rt").collection::<Document>("c");
    let (reference, _reference_server) = reference_with_docs(&router).await;
    admin(&client, doc! {"unshardCollection": "rt.c"}).await;
    let colls = support::config_docs(&client, "collections", doc! {"_id": "rt.c"}, doc! {}).await;
    assert!(colls[0].get_bool("unsplittable").unwrap(), "{colls:?}");
    let want = all(&reference).await;
    held_by("rt", want.len(), 0).await;
    same(&all(&router).await, &want);
}

/// What a resharding leaves when its router dies mid-copy (the mark, the
/// orphan ranges hiding the copies, some copies): reads stay exact, and
/// the balancer, finding the collection's DDL lock free, deletes the
/// copies and the mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_undoes_a_resharding_whose_router_died() {
    use shardgate_config_store::model::{OrphanRange, ReshardingFields};
    use shardgate_config_store::shard_key::ShardKeyPattern;
    let cluster = TestCluster::start_with(3, config(), false).await;
    let client = cluster.client().await;
    admin(&client, doc! {"balancerStop": 1}).await;
    spread(&client, "dd", "shard0000", &[(500, "shard0001")]).await;
    let coll = client.database("dd").collection::<Document>("c");
    coll.insert_many((0..1000i64).map(|i| doc! {"_id": i, "k": i, "g": i % 10}))
        .await
        .unwrap();

    let catalog = shardgate_config_store::Catalog::new(cluster.router.store());
    let mut entry = catalog.sharded_collection("dd.c").await.unwrap();
    entry.resharding = Some(ReshardingFields {
        key: doc! {"g": 1},
        state: "cloning".into(),
        abort: false,
        commit: false,
    });
    catalog.update_collection(&entry).await.unwrap();
    let pattern = ShardKeyPattern::parse(&doc! {"k": 1}).unwrap();
    let hidden = [
        ("shard0000", doc! {"k": 500}, doc! {"k": bson::Bson::MaxKey}),
        ("shard0001", doc! {"k": bson::Bson::MinKey}, doc! {"k": 500}),
        (
            "shard0002",
            doc! {"k": bson::Bson::MinKey},
            doc! {"k": bson::Bson::MaxKey},
        ),
    ];
    for (shard, min, max) in hidden {
        let range = OrphanRange {
            ns: "dd.c".into(),
            shard: shard.into(),
            min,
            max,
        };
        catalog.add_orphan_range(&pattern, &range).await.unwrap();
    }
    let copies: Vec<Document> = (0..100i64)
        .map(|i| doc! {"_id": i, "k": i, "g": i % 10})
        .collect();
    direct_client(&cluster.shards[2])
        .await
        .database("dd")
        .collection::<Document>("c")
        .insert_many(copies)
        .await
        .unwrap();
    let mut counted = 0;
    for _ in 0..50 {
        counted = coll.count_documents(doc! {}).await.unwrap();
        if counted == 1000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(counted, 1000, "the copies stay hidden");

    admin(&client, doc! {"balancerStart": 1}).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let entry = catalog.sharded_collection("dd.c").await.unwrap();
        let on_third = direct_client(&cluster.shards[2])
            .await
            .database("dd")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
        let ranges = catalog.orphan_ranges("dd.c").await.unwrap();
        if entry.resharding.is_none() && on_third == 0 && ranges.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mark {:?}, {on_third} copies, {} ranges left",
            entry.resharding,
            ranges.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1000);
    // And it reshards again as usual.
    admin(&client, doc! {"reshardCollection": "dd.c", "key": {"g": 1}}).await;
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1000);
}
