//! Two routers on a real 3-member etcd cluster share one truth: a split made
//! through one is used by the other within a second; losing one member
//! changes nothing; losing two fails admin writes clearly while targeted
//! reads keep working from the routers' caches.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use shardgate_config_store::etcd::cluster::EtcdCluster;
use shardgate_router::RouterConfig;
use support::{admin, RouterHandle};

async fn router_on(etcd: &EtcdCluster) -> RouterHandle {
    let store = shardgate_config_store::open(&etcd.url("shardgate-test"))
        .await
        .expect("open the etcd store");
    RouterHandle::start_with_store(Arc::clone(&store), RouterConfig::default()).await
}

async fn minor_version(client: &mongodb::Client, ns: &str) -> Option<u32> {
    let r = client
        .database("admin")
        .run_command(doc! {"getShardVersion": ns})
        .await
        .ok()?;
    r.get_timestamp("version").ok().map(|t| t.increment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_metadata_and_survive_losing_etcd_members() {
    let mut etcd = EtcdCluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 2, false).await;
    let r1 = router_on(&etcd).await;
    let r2 = router_on(&etcd).await;
    let c1 = support::client(&r1.uri()).await;
    let c2 = support::client(&r2.uri()).await;

    for s in &shards {
        admin(&c1, doc! {"addShard": s.address()}).await;
    }
    admin(&c1, doc! {"enableSharding": "app"}).await;
    admin(&c1, doc! {"shardCollection": "app.c", "key": {"k": 1}}).await;
    let coll1 = c1.database("app").collection::<Document>("c");
    coll1
        .insert_many((0..100).map(|i| doc! {"k": i}))
        .await
        .unwrap();

    // Router 2 learns of the collection, then of a split made through router 1.
    let start = Instant::now();
    while minor_version(&c2, "app.c").await != Some(0) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "router 2 never saw app.c"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin(&c1, doc! {"split": "app.c", "middle": {"k": 50}}).await;
    let split_at = Instant::now();
    let mut seen = None;
    while split_at.elapsed() < Duration::from_secs(1) {
        if minor_version(&c2, "app.c").await == Some(2) {
            seen = Some(split_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen.is_some(), "router 2 used the split within one second");
    let chunks2 = support::config_docs(&c2, "chunks", doc! {"ns": "app.c"}, doc! {"min": 1}).await;
    assert_eq!(chunks2.len(), 2);
    let routers = support::config_docs(&c1, "mongos", doc! {}, doc! {}).await;
    assert_eq!(routers.len(), 2, "both routers are registered");

    // One etcd member down: both routers serve, admin writes succeed.
    etcd.kill(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let coll2 = c2.database("app").collection::<Document>("c");
    assert_eq!(coll2.count_documents(doc! {"k": 7}).await.unwrap(), 1);
    admin(&c2, doc! {"split": "app.c", "middle": {"k": 25}}).await;
    assert_eq!(
        support::config_docs(&c1, "chunks", doc! {"ns": "app.c"}, doc! {})
            .await
            .len(),
        3
    );

    // Two members down: admin writes fail with a clear error, quickly;
    // targeted reads still work from the cached routing tables.
    etcd.kill(1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    let err = c1
        .database("admin")
        .run_command(doc! {"split": "app.c", "middle": {"k": 75}})
        .await
        .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "the failure is not a hang"
    );
    let message = err.to_string();
    assert!(
        message.contains("etcd") || message.contains("config store"),
        "{message}"
    );
    for client in [&c1, &c2] {
        let coll = client.database("app").collection::<Document>("c");
        assert_eq!(
            coll.count_documents(doc! {"k": 42}).await.unwrap(),
            1,
            "served from cache"
        );
    }

    // A member back: writes succeed again.
    etcd.restart(1).await;
    etcd.wait_ready(Duration::from_secs(20)).await.unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if c1
            .database("admin")
            .run_command(doc! {"split": "app.c", "middle": {"k": 90}})
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "admin writes work again with a majority back");
}

/// `moveChunk` through a router that runs no balancer service is run by the
/// balancer service beside another router (the lock holder), and its result
/// comes back to the client; a move that fails there fails for the client
/// with the balancer's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_chunk_through_one_router_runs_on_another_routers_balancer() {
    let etcd = EtcdCluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 2, false).await;
    let store = || async {
        shardgate_config_store::open(&etcd.url("shardgate-move"))
            .await
            .expect("open the etcd store")
    };
    let config = RouterConfig {
        balancer: false,
        ..Default::default()
    };
    // Router 1: no balancer service. Router 2: a balancer service (no
    // rounds: `balancer = false` keeps rounds off in the harness).
    let r1 = RouterHandle::start_router_only(store().await, config.clone()).await;
    let r2 = RouterHandle::start_with_store(store().await, config).await;
    let c1 = support::client(&r1.uri()).await;
    for s in &shards {
        admin(&c1, doc! {"addShard": s.address()}).await;
    }
    admin(
        &c1,
        doc! {"enableSharding": "mv", "primaryShard": "shard0000"},
    )
    .await;
    admin(&c1, doc! {"shardCollection": "mv.c", "key": {"k": 1}}).await;
    admin(&c1, doc! {"split": "mv.c", "middle": {"k": 50}}).await;
    c1.database("mv")
        .collection::<Document>("c")
        .insert_many((0..100).map(|i| doc! {"k": i}))
        .await
        .unwrap();

    let reply = admin(
        &c1,
        doc! {"moveChunk": "mv.c", "find": {"k": 70}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    assert!(reply.get_i64("millis").is_ok(), "{reply}");
    let chunks = support::config_docs(&c1, "chunks", doc! {"ns": "mv.c"}, doc! {"min": 1}).await;
    let owners: Vec<&str> = chunks.iter().map(|c| c.get_str("shard").unwrap()).collect();
    assert_eq!(owners, ["shard0000", "shard0001"]);
    // The changelog says which process ran it: router 2's balancer.
    let log = support::config_docs(
        &c1,
        "changelog",
        doc! {"what": "moveChunk.commit", "ns": "mv.c"},
        doc! {},
    )
    .await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].get_str("server").unwrap(), r2.addr.to_string());
    // Every document is still there once, on its owner.
    let on = |i: usize| {
        let s = &shards[i];
        async move {
            support::direct_client(s)
                .await
                .database("mv")
                .collection::<Document>("c")
                .count_documents(doc! {})
                .await
                .unwrap()
        }
    };
    assert_eq!((on(0).await, on(1).await), (50, 50));
    // A failing move fails for the client with the balancer's error.
    let e = c1
        .database("admin")
        .run_command(
            doc! {"moveChunk": "mv.c", "bounds": [{"k": 10}, {"k": 20}], "to": "shard0001"},
        )
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&e), 2, "{e}");
    assert!(e.to_string().contains("no chunk of mv.c has bounds"), "{e}");
    drop(r2);
}
