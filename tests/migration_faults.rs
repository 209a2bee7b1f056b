//! Migration faults. A router process holding the migration lock is killed
//! (SIGKILL) while a migration sits in each state: cloning, catch-up,
//! critical section, committed-but-not-cleaned. A second router on the same
//! 3-member etcd cluster takes the lock once the lease expires and aborts
//! (before the commit) or finishes (after it). Every document stays present
//! exactly once, on the right owner. A destination shard killed mid-clone
//! aborts the migration with the source unchanged and nothing visible twice.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use shardgate_config_store::etcd::cluster::EtcdCluster;
use shardgate_config_store::model::MigrationState;
use shardgate_config_store::Catalog;
use shardgate_router::RouterConfig;
use support::{admin, config_docs, RouterHandle};

const BIN: &str = env!("CARGO_BIN_EXE_shardgate");
const N: i32 = 3000;

/// A `shardgate serve` process on `store_url` with test commands on and a
/// balancer service that runs this router's moves but no rounds (none falls
/// due within a test).
fn serve(dir: &std::path::Path, port: u16, store_url: &str) -> Child {
    let config = dir.join(format!("router-{port}.toml"));
    std::fs::write(
        &config,
        "enable_test_commands = true\nbalancer = true\nbalancer_interval_secs = 86400\norphan_cleanup_delay_secs = 600\n",
    )
    .unwrap();
    Command::new(BIN)
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config-store")
        .arg(store_url)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn ready(client: &mongodb::Client) {
    for _ in 0..100 {
        if client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("router did not come up");
}

/// The owner of the chunk starting at k = 1000.
async fn owner(client: &mongodb::Client) -> String {
    let chunks = config_docs(client, "chunks", doc! {"min": {"k": 1000}}, doc! {}).await;
    chunks[0].get_str("shard").unwrap().to_owned()
}

/// Documents of [1000, 2000) stored on `shard`.
async fn range_docs(shard: &shardgate::shard_process::ShardProcess) -> u64 {
    support::direct_client(shard)
        .await
        .database("mf")
        .collection::<Document>("c")
        .count_documents(doc! {"k": {"$gte": 1000, "$lt": 2000}})
        .await
        .unwrap_or(0)
}

/// Every document once through the router.
async fn all_once(client: &mongodb::Client) {
    let docs: Vec<Document> = client
        .database("mf")
        .collection::<Document>("c")
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<i32> = docs.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    assert_eq!(ids, (0..N).collect::<Vec<_>>());
    let n = client
        .database("mf")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_lock_holder_is_recovered_in_every_migration_state() {
    let etcd = EtcdCluster::start(3).await;
    let url = etcd.url("shardgate-mf");
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 3, false).await;
    // Router B: in process, runs the balancer every second.
    let store = shardgate_config_store::open(&url).await.unwrap();
    let catalog = Catalog::new(Arc::clone(&store));
    let b = RouterHandle::start_with_store(
        Arc::clone(&store),
        RouterConfig {
            balancer: true,
            balancer_interval_secs: 1,
            orphan_cleanup_delay_secs: 0,
            ..Default::default()
        },
    )
    .await;
    let cb = support::client(&b.uri()).await;
    for s in &shards {
        admin(&cb, doc! {"addShard": s.address()}).await;
    }
    admin(
        &cb,
        doc! {"enableSharding": "mf", "primaryShard": "shard0000"},
    )
    .await;
    admin(&cb, doc! {"shardCollection": "mf.c", "key": {"k": 1}}).await;
    for at in [1000, 2000] {
        admin(&cb, doc! {"split": "mf.c", "middle": {"k": at}}).await;
    }
    cb.database("mf")
        .collection::<Document>("c")
        .insert_many((0..N).map(|i| doc! {"_id": i, "k": i, "pad": "x".repeat(100)}))
        .await
        .unwrap();

    for (state, finished) in [
        ("cloning", false),
        ("catchup", false),
        ("critical", false),
        ("committed", true),
    ] {
        let from = owner(&cb).await;
        let to = if from == "shard0000" {
            "shard0001"
        } else {
            "shard0000"
        };
        let port = shardgate::shard_process::free_port().unwrap();
        let mut a = serve(dir.path(), port, &url);
        let ca = support::client(&format!("mongodb://127.0.0.1:{port}/?retryWrites=false")).await;
        ready(&ca).await;
        admin(
            &ca,
            doc! {"configureFailPoint": "shardgatePauseMigrationAt", "mode": "alwaysOn", "data": {"state": state}},
        )
        .await;
        let mover = {
            let ca = ca.clone();
            let to = to.to_owned();
            tokio::spawn(async move {
                ca.database("admin")
                    .run_command(
                        doc! {"moveChunk": "mf.c", "bounds": [{"k": 1000}, {"k": 2000}], "to": to},
                    )
                    .await
            })
        };
        // Wait for the migration to reach the state, then kill its router.
        let want = match state {
            "cloning" => MigrationState::Cloning,
            "catchup" => MigrationState::Catchup,
            "critical" => MigrationState::Critical,
            _ => MigrationState::Committed,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let records = catalog.migrations("mf.c").await.unwrap();
            if records.iter().any(|m| m.state == want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{state}: never reached ({records:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.kill().unwrap();
        a.wait().unwrap();
        assert!(
            mover.await.unwrap().is_err(),
            "{state}: the killed router never answered"
        );

        // Router B takes the lock after the lease expires and recovers.
        let deadline = Instant::now() + Duration::from_secs(40);
        while !catalog.migrations("mf.c").await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "{state}: not recovered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let now_owner = owner(&cb).await;
        let expected = if finished { to } else { from.as_str() };
        assert_eq!(now_owner, expected, "{state}: owner after recovery");
        all_once(&cb).await;
        let index = |id: &str| id.trim_start_matches("shard").parse::<usize>().unwrap();
        assert_eq!(
            range_docs(&shards[index(expected)]).await,
            1000,
            "{state}: owner has the range"
        );
        let other = if finished { from.as_str() } else { to };
        assert_eq!(
            range_docs(&shards[index(other)]).await,
            0,
            "{state}: no copy left on {other}"
        );
        assert!(
            catalog.orphan_ranges("mf.c").await.unwrap().is_empty(),
            "{state}: orphan ranges left"
        );
        let log = config_docs(
            &cb,
            "changelog",
            doc! {"what": {"$in": ["moveChunk.error", "moveChunk.recovered"]}},
            doc! {},
        )
        .await;
        assert!(!log.is_empty());
    }
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destination_killed_mid_clone_aborts_with_the_source_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut shards = support::start_shards(dir.path(), 2, false).await;
    let store: Arc<dyn shardgate_config_store::ConfigStore> =
        Arc::new(shardgate_config_store::EmbeddedStore::open(dir.path().join("config")).unwrap());
    let router = RouterHandle::start_with_store(
        Arc::clone(&store),
        RouterConfig {
            enable_test_commands: true,
            balancer: false,
            pool: shardgate_router::PoolConfig {
                connect_timeout_ms: 500,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let client = support::client(&router.uri()).await;
    for s in &shards {
        admin(&client, doc! {"addShard": s.address()}).await;
    }
    admin(
        &client,
        doc! {"enableSharding": "mf", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "mf.c", "key": {"k": 1}}).await;
    for at in [1000, 2000] {
        admin(&client, doc! {"split": "mf.c", "middle": {"k": at}}).await;
    }
    client
        .database("mf")
        .collection::<Document>("c")
        .insert_many((0..N).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    admin(
        &client,
        doc! {"configureFailPoint": "shardgatePauseMigrationAt", "mode": "alwaysOn", "data": {"state": "cloning"}},
    )
    .await;
    let mover = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .database("admin")
                .run_command(doc! {"moveChunk": "mf.c", "bounds": [{"k": 1000}, {"k": 2000}], "to": "shard0001"})
                .await
        })
    };
    let catalog = Catalog::new(store);
    while catalog.migrations("mf.c").await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shards[1].kill();
    admin(
        &client,
        doc! {"configureFailPoint": "shardgatePauseMigrationAt", "mode": "off"},
    )
    .await;
    let e = mover.await.unwrap().unwrap_err();
    println!("moveChunk failed as it should: {e}");
    assert_eq!(owner(&client).await, "shard0000");
    assert_eq!(
        range_docs(&shards[0]).await,
        1000,
        "the source is unchanged"
    );
    let n = client
        .database("mf")
        .collection::<Document>("c")
        .count_documents(doc! {"k": {"$gte": 0}})
        .await
        .unwrap();
    assert_eq!(n, N as u64);
    let found: Vec<Document> = client
        .database("mf")
        .collection::<Document>("c")
        .find(doc! {"k": {"$gte": 1000, "$lt": 2000}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 1000);
    let aborted = config_docs(
        &client,
        "changelog",
        doc! {"what": "moveChunk.error"},
        doc! {},
    )
    .await;
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    let _ = Bson::Null;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_change_streams_copies_inside_the_critical_section() {
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 2, true).await;
    let router = RouterHandle::start(
        &dir.path().join("config"),
        RouterConfig {
            balancer: false,
            orphan_cleanup_delay_secs: 0,
            ..Default::default()
        },
    )
    .await;
    let client = support::client(&router.uri()).await;
    for s in &shards {
        admin(&client, doc! {"addShard": s.address()}).await;
    }
    admin(
        &client,
        doc! {"enableSharding": "mf", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "mf.c", "key": {"k": 1}}).await;
    for at in [1000, 2000] {
        admin(&client, doc! {"split": "mf.c", "middle": {"k": at}}).await;
    }
    client
        .database("mf")
        .collection::<Document>("c")
        .insert_many((0..N).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    // The source refuses `$changeStream` once, as a standalone mongod does.
    support::direct_client(&shards[0])
        .await
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["aggregate"], "errorCode": 40573},
        })
        .await
        .unwrap();
    admin(
        &client,
        doc! {"moveChunk": "mf.c", "bounds": [{"k": 1000}, {"k": 2000}], "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    assert_eq!(owner(&client).await, "shard0001");
    assert_eq!(range_docs(&shards[1]).await, 1000);
    assert_eq!(range_docs(&shards[0]).await, 0);
    all_once_plain(&client).await;
    let log = config_docs(
        &client,
        "changelog",
        doc! {"what": "moveChunk.commit"},
        doc! {},
    )
    .await;
    let details = log[0].get_document("details").unwrap();
    assert_eq!(
        details.get_bool("copiedInCriticalSection").ok(),
        Some(true),
        "{details}"
    );
}

async fn all_once_plain(client: &mongodb::Client) {
    let n = client
        .database("mf")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, N as u64);
}
