//! `shardgate bench`: an end-to-end load tool for any MongoDB endpoint — a
//! shardgate router, a real mongos, or a shard server directly — so that one
//! run can measure the router and a shard side by side.
//!
//! For each endpoint (`--uri`, then `--uri2` with the same settings) the tool
//! connects with ONE `mongodb::Client` whose pool holds at least `--clients`
//! connections, checks the endpoint with `hello` (a router answers
//! `msg: "isdbgrid"`), optionally runs the setup (`--setup`:
//! drop; when `--shard-key` is given and the endpoint is a router, shard on
//! `{key: 1}` in `--splits` chunks, all on the primary shard, or with
//! `--spread` round-robin over the shards through zone ranges named
//! `shardgate-bench-<shard>`; index `key`; load `--docs` documents), then starts
//! `--clients` tokio tasks sharing that client. Each task draws operations
//! from the weighted `--mix` back to back for `--warmup-secs` (not recorded)
//! plus `--duration-secs`, recording per operation the latency of every
//! success in a log-linear histogram and counting failures. Nothing is sent
//! anywhere but the given URIs, and the run stops by itself: an operation
//! still in flight 10 s after the end is abandoned and counted as an error.
//!
//! Documents are `{_id: i, key: i, cat: i % 10, payload: <100 bytes>}` for
//! `i` in `0..docs`. The operations ([`Op`]): `find_by_key`
//! (`find_one({key: random existing})`), `scatter_sorted_find`
//! (`find({cat: random}).sort({key: -1}).limit(20)`), `insert` (one new
//! document) and `insert_batch` (`--batch-size` new documents); new documents
//! get a driver-generated `_id` and fresh keys above `--docs` and above every
//! key already present, so repeated runs on the same data never collide.
//! `update` is `update_one({key: random existing}, {$inc: {n: 1}})`;
//! `sorted_scan` reads `find({}).sort({key: 1})` to the end in batches
//! (checking the order) and reports documents read per second — against a
//! router over spread chunks and a shard holding everything (`--uri2`), the
//! cost of a sorted scatter scan. `--payload-bytes` sizes the payload.
//!
//! `--scenario migration` ([`migration`](mod@migration)) instead moves a
//! chunk through the router while the clients write to it, and reports MB/s
//! and the writes' latencies during the move. Long runs print a progress
//! line on stderr every 5 s ([`window`](mod@window)). `--start-shards N`
//! starts the cluster to measure instead of taking URIs
//! ([`local`](mod@local)).

mod histogram;
mod json;
mod local;
mod migration;
mod mix;
mod report;
mod setup;
mod window;
mod worker;

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;

pub use histogram::Histogram;
pub use mix::{parse_mix, Mix, Op};
pub use report::{EndpointReport, MigrationReport, OpReport, Ratio, Report};
pub use window::PROGRESS_EVERY;
pub use worker::PAYLOAD;

use crate::cli::{BenchArgs, Scenario};
use window::Window;
use worker::{payload, short_error, Workload};

/// How to load and measure an endpoint (the same for both endpoints).
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Concurrent client tasks.
    pub clients: usize,
    /// Warm-up before measuring (operations run but are not recorded).
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// The operation mix.
    pub mix: Mix,
    /// Documents loaded by `--setup`; `find_by_key` reads keys below this.
    pub docs: u64,
    /// Database name.
    pub db: String,
    /// Collection name.
    pub collection: String,
    /// Documents per `insert_batch`.
    pub batch_size: usize,
    /// Drop and load the collection before measuring.
    pub setup: bool,
    /// On a router, shard the collection on `{key: 1}` during setup.
    pub shard_key: bool,
    /// Chunks to split the sharded collection into (at even key points).
    pub splits: u32,
    /// Place the chunks round-robin on the shards (through zones).
    pub spread: bool,
    /// Force `directConnection=true`.
    pub direct_connection: bool,
    /// Server selection and connect timeout.
    pub connect_timeout: Duration,
    /// What to measure: the mix for a duration, or a migration under it.
    pub scenario: Scenario,
    /// Bytes of each document's payload.
    pub payload_bytes: usize,
    /// The migration scenario's destination shard (default: another one).
    pub to_shard: Option<String>,
}

impl BenchConfig {
    /// `db.collection`.
    pub fn ns(&self) -> String {
        format!("{}.{}", self.db, self.collection)
    }
}

/// An endpoint to measure.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its name in the report.
    pub label: String,
    /// Its connection string.
    pub uri: String,
}

impl Endpoint {
    /// An endpoint named `label` at `uri`.
    pub fn new(label: &str, uri: &str) -> Endpoint {
        Endpoint {
            label: label.to_owned(),
            uri: uri.to_owned(),
        }
    }
}

/// Endpoints and settings from the command line.
pub fn from_args(a: &BenchArgs) -> anyhow::Result<(Vec<Endpoint>, BenchConfig)> {
    anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(a.batch_size >= 1, "--batch-size must be at least 1");
    anyhow::ensure!(a.splits >= 1, "--splits must be at least 1");
    anyhow::ensure!(
        !a.shard_key || a.setup,
        "--shard-key shards the collection during --setup; add --setup"
    );
    anyhow::ensure!(
        (a.splits == 1 && !a.spread) || a.shard_key,
        "--splits and --spread need --shard-key (and --setup)"
    );
    anyhow::ensure!(
        a.scenario == Scenario::Mix || a.uri2.is_none(),
        "--scenario migration measures one router: drop --uri2"
    );
    anyhow::ensure!(
        a.to_shard.is_none() || a.scenario == Scenario::Migration,
        "--to-shard is for --scenario migration"
    );
    anyhow::ensure!(
        a.start_shards.is_none() || a.uri2.is_none(),
        "--start-shards measures the shard servers it starts: drop --uri2"
    );
    anyhow::ensure!(
        a.start_shards != Some(0),
        "--start-shards must be at least 1"
    );
    let mut endpoints = vec![Endpoint::new(&a.label, &a.uri)];
    if let Some(uri2) = &a.uri2 {
        anyhow::ensure!(a.label2 != a.label, "--label and --label2 must differ");
        endpoints.push(Endpoint::new(&a.label2, uri2));
    }
    let config = BenchConfig {
        clients: a.clients,
        warmup: Duration::from_secs(a.warmup_secs),
        duration: Duration::from_secs(a.duration_secs),
        mix: a.mix.clone(),
        docs: a.docs,
        db: a.db.clone(),
        collection: a.collection.clone(),
        batch_size: a.batch_size,
        setup: a.setup,
        shard_key: a.shard_key,
        splits: a.splits,
        spread: a.spread,
        direct_connection: a.direct_connection,
        connect_timeout: Duration::from_secs(a.connect_timeout_secs.max(1)),
        scenario: a.scenario,
        payload_bytes: a.payload_bytes,
        to_shard: a.to_shard.clone(),
    };
    Ok((endpoints, config))
}

/// `shardgate bench`: measures, prints the report (text or `--json`), and
/// fails when an endpoint could not be measured.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (mut endpoints, config) = from_args(&args)?;
    // Kept until the report is printed: dropping it stops the servers.
    let mut _cluster = None;
    if let Some(n) = args.start_shards {
        let cluster = local::LocalCluster::start(n).await?;
        endpoints = vec![Endpoint::new(&args.label, &cluster.router_uri)];
        if config.scenario == Scenario::Mix {
            endpoints.push(Endpoint::new(&args.label2, &cluster.standalone_uri));
        }
        _cluster = Some(cluster);
    }
    let report = bench(&endpoints, &config).await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    let failed: Vec<String> = report
        .endpoints
        .iter()
        .filter_map(|e| e.error.as_ref().map(|err| format!("{}: {err}", e.label)))
        .collect();
    anyhow::ensure!(failed.is_empty(), "bench failed: {}", failed.join("; "));
    Ok(())
}

/// Measures each endpoint in turn with the same settings.
pub async fn bench(endpoints: &[Endpoint], config: &BenchConfig) -> Report {
    let mut reports = Vec::new();
    for e in endpoints {
        reports.push(run_endpoint(e, config).await);
    }
    Report::new(reports)
}

/// Sets up and measures one endpoint. Never fails: an unreachable endpoint
/// or a failed setup is reported in [`EndpointReport::error`].
pub async fn run_endpoint(endpoint: &Endpoint, config: &BenchConfig) -> EndpointReport {
    let mut report =
        EndpointReport::new(&endpoint.label, &endpoint.uri, config.clients, &config.mix);
    if let Err(e) = measure(endpoint, config, &mut report).await {
        eprintln!("bench: {}: {e}", endpoint.label);
        report.error = Some(e);
    }
    report
}

async fn measure(
    endpoint: &Endpoint,
    config: &BenchConfig,
    report: &mut EndpointReport,
) -> Result<(), String> {
    let client = connect(&endpoint.uri, config).await.map_err(|e| {
        format!(
            "bad connection string {}: {}",
            endpoint.uri,
            short_error(&e)
        )
    })?;
    let is_router = is_router(&client)
        .await
        .map_err(|e| format!("cannot reach {}: {}", endpoint.uri, short_error(&e)))?;
    report.server = Some(if is_router { "router" } else { "mongod" }.to_owned());
    if config.setup {
        eprintln!(
            "bench: {}: loading {} documents",
            endpoint.label, config.docs
        );
        setup::setup(&client, is_router, config, &mut report.notes)
            .await
            .map_err(|e| e.to_string())?;
    }
    if config.scenario == Scenario::Migration {
        return migration::measure(&client, is_router, config, &endpoint.label, report).await;
    }
    let coll = client
        .database(&config.db)
        .collection::<Document>(&config.collection);
    let first_key = setup::first_fresh_key(&coll, config.docs, &mut report.notes).await;
    let workload = Arc::new(Workload {
        coll,
        mix: config.mix.clone(),
        docs: config.docs,
        batch_size: config.batch_size,
        payload: payload(config.payload_bytes),
        next_key: AtomicI64::new(first_key),
        inserted: AtomicU64::new(0),
    });
    eprintln!(
        "bench: {}: {} clients, {:.1} s warm-up + {:.1} s measured, mix {}",
        endpoint.label,
        config.clients,
        config.warmup.as_secs_f64(),
        config.duration.as_secs_f64(),
        config.mix
    );
    let window = Arc::new(Window::timed(config.warmup, config.duration));
    let stats = worker::run_clients(
        workload,
        window.clone(),
        config.clients,
        &endpoint.label,
        seed(),
    )
    .await;
    // From the end of the warm-up until the last client stopped.
    let measured = window
        .opened_at()
        .map_or(Duration::ZERO, |from| from.elapsed());
    report.fill(&config.mix, &stats, measured);
    Ok(())
}

/// One driver client for the endpoint, its pool big enough for every task.
async fn connect(uri: &str, config: &BenchConfig) -> mongodb::error::Result<Client> {
    let mut opts = ClientOptions::parse(uri).await?;
    let pool = opts
        .max_pool_size
        .unwrap_or(0)
        // One more for the migration scenario's moveChunk, so no client
        // waits for a connection while it runs.
        .max(u32::try_from(config.clients.saturating_add(1)).unwrap_or(u32::MAX))
        .max(1);
    opts.max_pool_size = Some(pool);
    if config.direct_connection {
        opts.direct_connection = Some(true);
    }
    opts.server_selection_timeout = Some(config.connect_timeout);
    opts.connect_timeout = Some(config.connect_timeout);
    opts.app_name
        .get_or_insert_with(|| "shardgate-bench".into());
    Client::with_options(opts)
}

/// Whether the endpoint is a router: `hello` answers `msg: "isdbgrid"`.
async fn is_router(client: &Client) -> mongodb::error::Result<bool> {
    let hello = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await?;
    Ok(hello.get_str("msg").ok() == Some("isdbgrid"))
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5EED, |d| d.as_nanos() as u64)
}
