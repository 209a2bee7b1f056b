//! `shardgate bench`, the end-to-end load tool: a router and a direct shard
//! measured in one run with every operation; a dead endpoint reported, not
//! panicked on. Nothing here asserts anything about speed.

mod support;

use std::process::Command;
use std::time::Duration;

use bson::{doc, Document};
use shardgate::bench::{self, BenchConfig, Endpoint, EndpointReport, Mix, Op};

const DOCS: u64 = 2_000;
const BATCH: usize = 50;

fn config() -> BenchConfig {
    BenchConfig {
        clients: 4,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(2),
        mix: "find_by_key=40,scatter_sorted_find=20,insert=25,insert_batch=15"
            .parse::<Mix>()
            .unwrap(),
        docs: DOCS,
        db: "benchdb".into(),
        collection: "items".into(),
        batch_size: BATCH,
        setup: true,
        shard_key: true,
        splits: 4,
        spread: false,
        direct_connection: false,
        connect_timeout: Duration::from_secs(10),
    }
}

fn check_endpoint(e: &EndpointReport, server: &str) {
    assert_eq!(e.error, None, "{}: {e:?}", e.label);
    assert_eq!(e.server.as_deref(), Some(server), "{}", e.label);
    assert_eq!(e.ops.len(), 4, "{}: {:?}", e.label, e.ops);
    for op in Op::ALL {
        let r = e.op(op.name()).unwrap_or_else(|| panic!("{op} missing"));
        assert!(r.count > 0, "{} {op}: no operations: {r:?}", e.label);
        assert_eq!(r.errors, 0, "{} {op}: {r:?}", e.label);
        assert!(r.ops_per_sec > 0.0, "{} {op}: {r:?}", e.label);
        assert!(r.p50_us <= r.p99_us && r.p99_us <= r.max_us, "{r:?}");
    }
    let insert = e.op("insert").unwrap();
    let batch = e.op("insert_batch").unwrap();
    assert_eq!(insert.docs_inserted, insert.count);
    assert_eq!(batch.docs_inserted, batch.count * BATCH as u64);
    let total = e.total.as_ref().unwrap();
    assert_eq!(total.count, e.ops.iter().map(|r| r.count).sum::<u64>());
    assert_eq!(e.docs_inserted(), insert.count + batch.count * BATCH as u64);
    assert!(e.measured_secs >= 1.9, "{}", e.measured_secs);
}

async fn count(uri: &str) -> u64 {
    support::client(uri)
        .await
        .database("benchdb")
        .collection::<Document>("items")
        .count_documents(doc! {})
        .await
        .expect("count through the driver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn measures_a_router_and_a_direct_shard_with_every_operation() {
    let cluster = support::TestCluster::start(1).await;
    let direct = support::start_shards(&cluster.dir().join("direct"), 1, false).await;
    let direct_uri = format!("mongodb://{}/?directConnection=true", direct[0].address());
    let endpoints = [
        Endpoint::new("router", &cluster.router.uri()),
        Endpoint::new("direct", &direct_uri),
    ];
    let report = bench::bench(&endpoints, &config()).await;
    println!("{}", report.to_text());
    assert!(!report.failed());
    let [router, shard] = report.endpoints.as_slice() else {
        panic!("two endpoint reports expected: {report:?}");
    };
    check_endpoint(router, "router");
    check_endpoint(shard, "mongod");
    assert!(
        router.notes.iter().any(|n| n.ends_with(&format!(
            ": 4 chunk(s) on shard0000 ({})",
            cluster.shards[0].address()
        ))),
        "{:?}",
        router.notes
    );
    assert!(
        shard
            .notes
            .iter()
            .any(|n| n.contains("--shard-key ignored")),
        "{:?}",
        shard.notes
    );
    assert_eq!(report.ratios.len(), 5, "{:?}", report.ratios);
    assert!(report.ratios.iter().all(|r| r.throughput.is_some()));
    for (e, uri) in [(router, cluster.router.uri()), (shard, direct_uri.clone())] {
        let n = count(&uri).await;
        assert!(
            n >= DOCS + e.docs_inserted(),
            "{}: {n} documents, expected at least {} + {}",
            e.label,
            DOCS,
            e.docs_inserted()
        );
    }
    let json = report.to_json();
    assert!(
        json.starts_with("{\"endpoints\":[{\"label\":\"router\""),
        "{json}"
    );
    assert!(
        json.contains("\"ratios\":[{\"op\":\"find_by_key\""),
        "{json}"
    );
}

/// `--spread` places the chunks on every shard through zones (what the
/// operations then do across shards is the router's business, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_places_chunks_on_every_shard() {
    let cluster = support::TestCluster::start(2).await;
    let config = BenchConfig {
        clients: 2,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(300),
        mix: Mix::only(Op::FindByKey),
        docs: 300,
        spread: true,
        ..config()
    };
    let report =
        bench::run_endpoint(&Endpoint::new("router", &cluster.router.uri()), &config).await;
    assert_eq!(report.error, None, "{report:?}");
    assert!(
        report.notes.iter().any(|n| n.ends_with(&format!(
            ": 4 chunk(s) on shard0000 ({}), shard0001 ({})",
            cluster.shards[0].address(),
            cluster.shards[1].address()
        ))),
        "{:?}",
        report.notes
    );
    let chunks = support::config_docs(
        &cluster.client().await,
        "chunks",
        doc! {"ns": "benchdb.items"},
        doc! {"min": 1},
    )
    .await;
    let owners: Vec<&str> = chunks.iter().map(|c| c.get_str("shard").unwrap()).collect();
    assert_eq!(owners, ["shard0000", "shard0001", "shard0000", "shard0001"]);
}

#[test]
fn a_dead_endpoint_is_one_clear_error() {
    let port = shardgate::shard_process::free_port().unwrap();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["bench", "--uri", &uri, "--label", "gone"])
        .args(["--connect-timeout-secs", "1", "--duration-secs", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("ERROR: cannot reach"), "{stdout}");
    assert!(
        stderr.contains("bench failed: gone: cannot reach"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_arguments_are_refused() {
    for args in [
        vec!["bench", "--mix", "find_by_key=1,delete=2"],
        vec!["bench", "--shard-key"],
        vec!["bench", "--clients", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["bench", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--uri2"));
}
