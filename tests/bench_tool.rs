//! `shardgate bench`, the end-to-end load tool: a router and a direct shard
//! measured in one run with every operation; a dead endpoint reported, not
//! panicked on. Nothing here asserts anything about speed.

mod support;

use std::process::Command;
use std::time::Duration;

use bson::{doc, Document};
use shardgate::bench::{self, BenchConfig, Endpoint, EndpointReport, Mix, Op};
use shardgate::cli::Scenario;

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
        scenario: Scenario::Mix,
        payload_bytes: 100,
        to_shard: None,
    }
}

fn check_endpoint(e: &EndpointReport, server: &str) {
    assert_eq!(e.error, None, "{}: {e:?}", e.label);
    assert_eq!(e.server.as_deref(), Some(server), "{}", e.label);
    assert_eq!(e.ops.len(), 4, "{}: {:?}", e.label, e.ops);
    for op in [
        Op::FindByKey,
        Op::ScatterSortedFind,
        Op::Insert,
        Op::InsertBatch,
    ] {
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

/// The sorted scatter scan: every loaded document read back in key order,
/// through a router over three shards and from one shard holding them all,
/// with a documents/s ratio between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sorted_scan_reads_every_document_through_the_router_and_from_one_shard() {
    let cluster = support::TestCluster::start(3).await;
    let direct = support::start_shards(&cluster.dir().join("direct"), 1, false).await;
    let direct_uri = format!("mongodb://{}/?directConnection=true", direct[0].address());
    let endpoints = [
        Endpoint::new("router", &cluster.router.uri()),
        Endpoint::new("one-shard", &direct_uri),
    ];
    let config = BenchConfig {
        clients: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        mix: Mix::only(Op::SortedScan),
        splits: 3,
        spread: true,
        ..config()
    };
    let report = bench::bench(&endpoints, &config).await;
    println!("{}", report.to_text());
    assert!(!report.failed(), "{report:?}");
    for e in &report.endpoints {
        let scan = e.op("sorted_scan").expect("a sorted_scan row");
        assert!(scan.count >= 1, "{}: {scan:?}", e.label);
        assert_eq!(scan.errors, 0, "{}: {scan:?}", e.label);
        assert_eq!(scan.docs_read, scan.count * DOCS, "{}: {scan:?}", e.label);
        assert!(scan.docs_read_per_sec > 0.0, "{}: {scan:?}", e.label);
    }
    assert!(
        report.endpoints[0]
            .notes
            .iter()
            .any(|n| n.contains(": 3 chunk(s) on shard0000") && n.contains("shard0002")),
        "{:?}",
        report.endpoints[0].notes
    );
    let ratio = report
        .ratios
        .iter()
        .find(|r| r.op == "sorted_scan")
        .unwrap();
    assert!(ratio.docs_read.is_some_and(|r| r > 0.0), "{ratio:?}");
    assert!(report.to_text().contains("== ratios router / one-shard"));
    assert!(report.to_json().contains("\"docs_read_per_sec\":"));
}

/// `--scenario migration`: the chunk moves to the other shard while clients
/// insert and update in it; every acknowledged insert is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_moves_the_chunk_under_writes_and_loses_none() {
    let cluster = support::TestCluster::start(2).await;
    let config = BenchConfig {
        scenario: Scenario::Migration,
        clients: 4,
        warmup: Duration::from_millis(300),
        mix: "insert=1,update=1".parse::<Mix>().unwrap(),
        payload_bytes: 1000,
        splits: 1,
        ..config()
    };
    let e = bench::run_endpoint(&Endpoint::new("router", &cluster.router.uri()), &config).await;
    println!("{}", bench::Report::new(vec![e.clone()]).to_text());
    assert_eq!(e.error, None, "{e:?}");
    let m = e.migration.as_ref().expect("a migration report");
    assert_eq!((m.from.as_str(), m.to.as_str()), ("shard0000", "shard0001"));
    assert_eq!(m.chunk_docs, DOCS);
    assert!(m.chunk_bytes >= DOCS * 1000, "{m:?}");
    assert!(m.secs > 0.0 && m.mb_per_sec > 0.0, "{m:?}");
    for op in ["insert", "update"] {
        let r = e.op(op).unwrap_or_else(|| panic!("{op} missing: {e:?}"));
        assert_eq!(r.errors, 0, "{r:?}");
        assert!(r.p50_us <= r.p99_us && r.p99_us <= r.max_us, "{r:?}");
    }
    let chunks = support::config_docs(
        &cluster.client().await,
        "chunks",
        doc! {"ns": "benchdb.items"},
        doc! {"min": 1},
    )
    .await;
    let owners: Vec<&str> = chunks.iter().map(|c| c.get_str("shard").unwrap()).collect();
    assert_eq!(owners, ["shard0001"]);
    assert_eq!(count(&cluster.router.uri()).await, DOCS + m.inserted);
    let text = bench::Report::new(vec![e.clone()]).to_text();
    assert!(text.contains("shard0000 -> shard0001"), "{text}");
}

/// `--start-shards`: the tool starts its own shards and router, measures
/// the router and the standalone shard, and stops them all.
#[test]
fn start_shards_measures_a_local_cluster_and_a_standalone_shard() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["bench", "--start-shards", "2", "--json"])
        .args(["--label", "router", "--label2", "one-shard"])
        .args(["--setup", "--shard-key", "--splits", "2", "--spread"])
        .args(["--docs", "500", "--mix", "sorted_scan", "--clients", "1"])
        .args(["--warmup-secs", "0", "--duration-secs", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let endpoints = report["endpoints"].as_array().unwrap();
    let servers: Vec<&str> = endpoints
        .iter()
        .map(|e| e["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["router", "mongod"], "{stdout}");
    for e in endpoints {
        let scan = &e["ops"][0];
        assert_eq!(scan["op"], "sorted_scan", "{e}");
        assert_eq!(scan["errors"], 0, "{e}");
        let (count, read) = (scan["count"].as_u64().unwrap(), scan["docs_read"].as_u64());
        assert!(count >= 1, "{e}");
        assert_eq!(read, Some(count * 500), "{e}");
    }
    assert!(endpoints[0]["notes"]
        .to_string()
        .contains("2 chunk(s) on shard0000"));
    assert!(
        report["ratios"][0]["docs_read"].as_f64().is_some(),
        "{stdout}"
    );
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
        vec!["bench", "--scenario", "migration", "--uri2", "mongodb://x"],
        vec!["bench", "--scenario", "nope"],
        vec!["bench", "--start-shards", "2", "--uri2", "mongodb://x"],
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
