//! Operating the router: Prometheus metrics after a known workload (and
//! `promtool check metrics` over the page), `/readyz` following the config
//! store while `/healthz` stays up, and the slow operation log.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use shardgate_router::RouterConfig;
use support::{admin, direct_client, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port free now, for the metrics listener.
fn free_addr() -> String {
    let port = shardgate::shard_process::free_port().unwrap();
    format!("127.0.0.1:{port}")
}

/// `GET path` on `addr`: the status code and the body (the router binds
/// the listener as it starts: a refused connection is tried again).
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut tries = 0;
    let mut s = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect to the metrics listener {addr}: {e}"),
        }
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// The value of the sample `key` (name with its labels) on `page`.
fn value(page: &str, key: &str) -> f64 {
    sample(page, key).unwrap_or_else(|| panic!("no sample {key} on the page"))
}

fn sample(page: &str, key: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == key))
        .map(|(_, v)| v.parse().unwrap())
}

fn metrics_config(addr: &str) -> RouterConfig {
    RouterConfig {
        balancer: false,
        metrics_listen: Some(addr.to_owned()),
        ..RouterConfig::default()
    }
}

/// `db.c` sharded on `{k: 1}`, documents `k` 0..200, `[MinKey, 100)` on
/// shard0000 and `[100, MaxKey)` moved to shard0001.
async fn two_chunks(client: &mongodb::Client, db: &str) {
    let ns = format!("{db}.c");
    admin(
        client,
        doc! {"enableSharding": db, "primaryShard": "shard0000"},
    )
    .await;
    admin(client, doc! {"shardCollection": &ns, "key": {"k": 1}}).await;
    admin(client, doc! {"split": &ns, "middle": {"k": 100}}).await;
    let docs: Vec<Document> = (0..200)
        .map(|k| doc! {"k": k, "pad": "x".repeat(50)})
        .collect();
    let coll = client.database(db).collection::<Document>("c");
    coll.insert_many(docs).await.unwrap();
    admin(
        client,
        doc! {"moveChunk": &ns, "find": {"k": 100}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload() {
    let addr = free_addr();
    let cluster = TestCluster::start_with(2, metrics_config(&addr), false).await;
    let client = cluster.client().await;
    two_chunks(&client, "m").await;
    // The one migration copied the range's 100 documents.
    let before = get(&addr, "/metrics").await.1;
    assert_eq!(
        value(&before, "shardgate_migrations_total{outcome=\"committed\"}"),
        1.0
    );
    assert_eq!(
        value(&before, "shardgate_migration_documents_copied_total"),
        100.0
    );
    assert!(value(&before, "shardgate_migration_bytes_copied_total") > 100.0 * 50.0);
    assert!(value(&before, "shardgate_migration_catchup_passes_total") >= 1.0);
    assert_eq!(
        value(
            &before,
            "shardgate_migration_critical_section_seconds_count"
        ),
        1.0
    );

    // 20 finds on one shard, 5 on both.
    let coll = client.database("m").collection::<Document>("c");
    for k in 0..20 {
        assert!(coll.find_one(doc! {"k": k}).await.unwrap().is_some());
    }
    for _ in 0..5 {
        let found: Vec<Document> = coll
            .find(doc! {"k": {"$in": [5, 150]}})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
    }
    let after = get(&addr, "/metrics").await.1;
    // A command first seen in the workload has no sample before it.
    let delta = |key: &str| value(&after, key) - sample(&before, key).unwrap_or(0.0);
    let count = |name: &str, labels: &str| format!("{name}_count{{{labels}}}");
    assert_eq!(
        delta(&count(
            "shardgate_command_duration_seconds",
            "command=\"find\""
        )),
        25.0
    );
    assert_eq!(
        delta(&count(
            "shardgate_command_router_duration_seconds",
            "command=\"find\""
        )),
        25.0
    );
    assert_eq!(
        delta(&count(
            "shardgate_namespace_duration_seconds",
            "namespace=\"m.c\""
        )),
        25.0
    );
    // Round trips: 20 + 5 to shard0000, 5 to shard0001.
    let rt = "shardgate_shard_round_trip_seconds";
    assert_eq!(delta(&count(rt, "shard=\"shard0000\"")), 25.0);
    assert_eq!(delta(&count(rt, "shard=\"shard0001\"")), 5.0);
    assert_eq!(
        delta("shardgate_operations_total{targeting=\"targeted\"}"),
        20.0
    );
    assert_eq!(
        delta("shardgate_operations_total{targeting=\"scatter\"}"),
        5.0
    );
    assert_eq!(delta("shardgate_documents_returned_total"), 30.0);
    let member0 = cluster.shards[0].address();
    assert_eq!(
        delta(&format!(
            "shardgate_pool_checkouts_total{{shard=\"shard0000\",member=\"{member0}\"}}"
        )),
        25.0
    );
    // Pools are idle again, nobody waits.
    for (i, shard) in ["shard0000", "shard0001"].iter().enumerate() {
        let member = cluster.shards[i].address();
        let labels = format!("shard=\"{shard}\",member=\"{member}\"");
        let in_use = format!("shardgate_pool_connections{{{labels},state=\"in_use\"}}");
        assert_eq!(value(&after, &in_use), 0.0);
        assert_eq!(
            value(&after, &format!("shardgate_pool_waiters{{{labels}}}")),
            0.0
        );
        let idle = format!("shardgate_pool_connections{{{labels},state=\"idle\"}}");
        assert!(value(&after, &idle) >= 1.0);
    }
    assert_eq!(value(&after, "shardgate_cursors_open"), 0.0);
    assert!(value(&after, "shardgate_connections_open") >= 1.0);
    assert!(
        value(
            &after,
            &count(
                "shardgate_config_store_request_duration_seconds",
                "op=\"txn\""
            )
        ) > 0.0
    );
    promtool_accepts(&after);
}

/// `promtool check metrics` over the page (Debian package `prometheus`,
/// installed by scripts/setup.sh).
fn promtool_accepts(page: &str) {
    use std::io::Write;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED promtool check: promtool is not installed (run scripts/setup.sh, Debian package prometheus)");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

/// Keeps the router's log lines for `getLog` in this test process.
fn capture_log() {
    use tracing_subscriber::prelude::*;
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(shardgate_router::log::RecentLog)
        .try_init();
}

/// The slow-query lines of `find`s on `ns` that `getLog` returns, parsed.
async fn slow_lines(client: &mongodb::Client, ns: &str) -> Vec<serde_json::Value> {
    let log = admin(client, doc! {"getLog": "global"}).await;
    log.get_array("log")
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["msg"] == "Slow query" && l["attr"]["ns"] == ns)
        // The set-up's inserts may be slow too on a loaded machine.
        .filter(|l| l["attr"]["command"] == "find")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_is_logged_once_without_its_values() {
    capture_log();
    let cluster = TestCluster::start_with(2, metrics_config(&free_addr()), true).await;
    let client = cluster.client().await;
    two_chunks(&client, "slow").await;
    let db = client.database("slow");
    // mongos' ways to set slowms: profile level 0, and setParameter.
    let was = admin(&client, doc! {"setParameter": 1, "slowOpThresholdMs": 250}).await;
    assert_eq!(was.get_i64("was").unwrap(), 100, "{was}");
    let r = db
        .run_command(doc! {"profile": 0, "slowms": 200})
        .await
        .unwrap();
    assert_eq!(r.get_i64("slowms").unwrap(), 250, "{r}");
    let r = db.run_command(doc! {"profile": -1}).await.unwrap();
    assert_eq!(r.get_i64("slowms").unwrap(), 200, "{r}");
    let bad = db.run_command(doc! {"profile": 2}).await.unwrap_err();
    assert_eq!(support::error_code(&bad), 2);
    let bad = db
        .run_command(doc! {"profile": 0, "slowms": "fast"})
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&bad), 14);

    // shard0001 holds every find for 400 ms.
    let shard = direct_client(&cluster.shards[1]).await;
    let block = doc! {"failCommands": ["find"], "blockConnection": true, "blockTimeMS": 400};
    admin(
        &shard,
        doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": block},
    )
    .await;
    let coll = db.collection::<Document>("c");
    let slow = doc! {"k": {"$gte": 150, "$lt": 153}, "pad": {"$ne": "needle-7f3a-secret"}};
    let found: Vec<Document> = coll.find(slow).await.unwrap().try_collect().await.unwrap();
    assert_eq!(found.len(), 3);
    // A fast one, on shard0000 only.
    let fast = doc! {"k": 7, "pad": {"$ne": "fast-9c1e-marker"}};
    assert!(coll.find_one(fast).await.unwrap().is_some());
    admin(
        &shard,
        doc! {"configureFailPoint": "failCommand", "mode": "off"},
    )
    .await;

    let lines = slow_lines(&client, "slow.c").await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let attr = &lines[0]["attr"];
    assert_eq!(attr["command"], "find");
    assert_eq!(attr["scatter"], false);
    assert_eq!(attr["nShards"], 1);
    assert_eq!(attr["nreturned"], 3);
    assert!(attr["durationMillis"].as_f64().unwrap() >= 400.0, "{attr}");
    assert!(attr["shardMillis"].as_f64().unwrap() >= 400.0, "{attr}");
    assert!(attr["routerMillis"].as_f64().unwrap() < 400.0, "{attr}");
    let shards: serde_json::Value = serde_json::from_str(attr["shards"].as_str().unwrap()).unwrap();
    assert_eq!(shards[0]["shard"], "shard0001", "{shards}");
    assert!(shards[0]["millis"].as_f64().unwrap() >= 400.0, "{shards}");
    let shape = attr["shape"].as_str().unwrap();
    assert!(
        shape.contains("\"$gte\":\"?\"") && shape.contains("\"$ne\":\"?\""),
        "{shape}"
    );
    // No value of either query is anywhere in the log.
    let all = admin(&client, doc! {"getLog": "global"}).await.to_string();
    for secret in ["needle-7f3a-secret", "fast-9c1e-marker", "150", "153"] {
        assert!(!shape.contains(secret), "{secret} in {shape}");
    }
    assert!(
        !all.contains("needle-7f3a") && !all.contains("fast-9c1e"),
        "a value was logged"
    );
}

/// The slow-operation lines of `command` on `ns`, parsed, each line's
/// `shards` attribute parsed too.
async fn logged(client: &mongodb::Client, ns: &str, command: &str) -> Vec<serde_json::Value> {
    let log = admin(client, doc! {"getLog": "global"}).await;
    log.get_array("log")
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["msg"] == "Slow query" && l["attr"]["ns"] == ns)
        .filter(|l| l["attr"]["command"] == command)
        .map(|mut l| {
            let shards = l["attr"]["shards"].as_str().unwrap().to_owned();
            l["attr"]["shards"] = serde_json::from_str(&shards).unwrap();
            l
        })
        .collect()
}

/// Each shard's entry in a logged line, by shard name.
fn by_shard(line: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    line["attr"]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["shard"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_log_counts_what_each_shard_returned_and_wrote() {
    capture_log();
    let cluster = TestCluster::start_with(2, metrics_config(&free_addr()), false).await;
    let client = cluster.client().await;
    two_chunks(&client, "counts").await;
    // Every operation is slow now.
    admin(&client, doc! {"setParameter": 1, "slowOpThresholdMs": 0}).await;
    let coll = client.database("counts").collection::<Document>("c");
    let found: Vec<Document> = coll
        .find(doc! {"k": {"$gte": 95, "$lt": 105}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 10);
    let r = coll
        .update_many(
            doc! {"k": {"$gte": 97, "$lt": 103}},
            doc! {"$set": {"pad": "y"}},
        )
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (6, 6));
    let r = coll
        .delete_many(doc! {"k": {"$gte": 99, "$lt": 102}})
        .await
        .unwrap();
    assert_eq!(r.deleted_count, 3);

    let finds = logged(&client, "counts.c", "find").await;
    assert_eq!(finds.len(), 1, "{finds:#?}");
    assert_eq!(finds[0]["attr"]["nreturned"], 10);
    assert_eq!(finds[0]["attr"]["scatter"], true);
    let shards = by_shard(&finds[0]);
    assert_eq!(shards["shard0000"]["nreturned"], 5, "{shards:?}");
    assert_eq!(shards["shard0001"]["nreturned"], 5, "{shards:?}");
    // The shards' replies carry no examined counts: none is made up.
    let text = finds[0].to_string();
    assert!(!text.contains("docsExamined") && !text.contains("keysExamined"));

    let updates = logged(&client, "counts.c", "update").await;
    assert_eq!(updates.len(), 1, "{updates:#?}");
    let shards = by_shard(&updates[0]);
    for (shard, n) in [("shard0000", 3), ("shard0001", 3)] {
        assert_eq!(shards[shard]["nMatched"], n, "{shards:?}");
        assert_eq!(shards[shard]["nModified"], n, "{shards:?}");
        assert_eq!(shards[shard]["nreturned"], 0, "{shards:?}");
    }
    let deletes = logged(&client, "counts.c", "delete").await;
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    let shards = by_shard(&deletes[0]);
    assert_eq!(shards["shard0000"]["ndeleted"], 1, "{shards:?}");
    assert_eq!(shards["shard0001"]["ndeleted"], 2, "{shards:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_config_store_and_healthz_stays_up() {
    use shardgate_config_store::etcd::cluster::EtcdCluster;
    let mut etcd = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 1, false).await;
    let store = shardgate_config_store::open(&etcd.url("shardgate-readyz"))
        .await
        .expect("open the etcd store");
    let addr = free_addr();
    let router = support::RouterHandle::start_with_store(store, metrics_config(&addr)).await;
    // No shard yet: not ready, with the reason.
    let (code, body) = get(&addr, "/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (503, "not ready: no shards in the cluster\n")
    );
    let client = support::client(&router.uri()).await;
    admin(&client, doc! {"addShard": shards[0].address()}).await;
    assert_eq!(get(&addr, "/readyz").await.0, 200);
    assert_eq!(get(&addr, "/healthz").await, (200, "ok\n".to_owned()));

    etcd.kill(0);
    let (code, body) = get(&addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: config store"), "{body}");
    assert_eq!(get(&addr, "/healthz").await.0, 200);

    etcd.restart(0).await;
    etcd.wait_ready(Duration::from_secs(20)).await.unwrap();
    let mut code = 0;
    for _ in 0..100 {
        code = get(&addr, "/readyz").await.0;
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(code, 200, "/readyz once etcd is back");
    assert_eq!(get(&addr, "/healthz").await.0, 200);
    assert_eq!(get(&addr, "/nope").await.0, 404);
    let page = get(&addr, "/metrics").await.1;
    assert!(
        value(
            &page,
            "shardgate_config_store_errors_total{op=\"revision\"}"
        ) >= 1.0
    );
}
