//! Shard connection pooling: a bound that holds under 1,000 concurrent
//! clients, and recovery after a shard restarts.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use shardgate::shard_process::ShardLauncher;
use shardgate_router::RouterConfig;
use support::{ok_of, RawConn, TestCluster};

const POOL_MAX: usize = 8;
const CLIENTS: usize = 1000;

fn shard_pool(status: &Document) -> Document {
    status.get_array("shardPools").unwrap()[0]
        .as_document()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_never_exceed_the_pool_bound() {
    let mut config = RouterConfig::default();
    config.pool.max_size = POOL_MAX;
    let cluster = TestCluster::start_with(1, config, false).await;
    let client = cluster.client().await;
    let coll = client.database("pooltest").collection::<Document>("c");
    coll.insert_many((0..20).map(|i| doc! {"_id": i}))
        .await
        .unwrap();

    // Watch the shard's own connection count while the load runs.
    let shard = support::direct_client(&cluster.shards[0]).await;
    let admin = shard.database("admin");
    let current = |d: Document| {
        d.get_document("connections")
            .unwrap()
            .get_i32("current")
            .unwrap() as i64
    };
    let baseline = current(admin.run_command(doc! {"serverStatus": 1}).await.unwrap());
    let peak = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, done, admin) = (peak.clone(), done.clone(), admin.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(s) = admin.run_command(doc! {"serverStatus": 1}).await {
                    peak.fetch_max(current(s), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Open every connection first, then let them all run finds at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (addr, barrier) = (cluster.router.addr, barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await;
            let hello = conn.command(doc! {"hello": 1, "$db": "admin"}).await;
            assert_eq!(hello.get_str("msg").unwrap(), "isdbgrid");
            barrier.wait().await;
            for _ in 0..3 {
                let r = conn
                    .command(
                        doc! {"find": "c", "filter": {"_id": (i % 20) as i32}, "$db": "pooltest"},
                    )
                    .await;
                assert_eq!(ok_of(&r), 1.0, "{r}");
                let batch = r
                    .get_document("cursor")
                    .unwrap()
                    .get_array("firstBatch")
                    .unwrap();
                assert_eq!(batch.len(), 1);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();

    let status = client
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    let pool = shard_pool(&status);
    let peak_open = pool.get_i64("peakOpen").unwrap();
    assert!(
        peak_open >= 1 && peak_open <= POOL_MAX as i64,
        "router opened {peak_open}"
    );
    assert_eq!(pool.get_i64("maxSize").unwrap(), POOL_MAX as i64);
    let seen = peak.load(Ordering::Relaxed);
    assert!(
        seen <= baseline + POOL_MAX as i64,
        "shard saw {seen} connections (baseline {baseline}, pool bound {POOL_MAX})"
    );
    let total = status
        .get_document("connections")
        .unwrap()
        .get_i64("totalCreated")
        .unwrap();
    assert!(
        total >= CLIENTS as i64,
        "router accepted {total} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_reconnects_after_a_shard_restart() {
    let mut cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let coll = client.database("restart").collection::<Document>("c");
    coll.insert_many((0..100).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 100);

    let (port, dir) = (
        cluster.shards[0].port(),
        cluster.shards[0].dir().to_path_buf(),
    );
    cluster.shards[0].stop();
    let err = client
        .database("restart")
        .run_command(doc! {"count": "c"})
        .await
        .expect_err("the shard is down");
    let message = err.to_string();
    assert!(
        message.contains("HostUnreachable")
            || message.contains("(6)")
            || message.contains("unreachable"),
        "{message}"
    );
    // The router keeps serving what does not need the shard.
    let ping = client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    assert_eq!(ok_of(&ping), 1.0);

    let restarted = ShardLauncher::from_env()
        .unwrap()
        .start_on(port, &dir, false)
        .await
        .expect("restart shard on the same port and data");
    cluster.shards[0] = restarted;
    let mut count = None;
    for _ in 0..20 {
        if let Ok(n) = coll.count_documents(doc! {}).await {
            count = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        count,
        Some(100),
        "the router reconnects and sees the data again"
    );
    let status = client
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    assert!(
        shard_pool(&status).get_i64("generation").unwrap() >= 1,
        "the pool was cleared"
    );
}
