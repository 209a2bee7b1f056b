//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::{self, Overrides};

/// shardgate: a MongoDB sharding router (a mongos you can read).
#[derive(Debug, Parser)]
#[command(name = "shardgate", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as human-readable text or as structured JSON (mongod's
    /// log format, one object per line) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a router that drivers connect to as they would to mongos (and,
    /// with `balancer = true`, the balancer service beside it).
    Serve(ServeArgs),
    /// Run only the balancer service, over the config store of `--config`.
    Balancer(ServeArgs),
    /// Start three local shards and a router, load sample data, and wait for Ctrl-C.
    Demo(DemoArgs),
    /// Print the shards, databases, replica-set members, pools and the
    /// balancer's current migration of a running router.
    Status(StatusArgs),
    /// Load-test any MongoDB endpoint (router or shard) and report throughput and latency.
    Bench(BenchArgs),
}

/// `shardgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:27017].
    #[arg(long)]
    pub listen: Option<String>,
    /// Config store URL: embedded:PATH [default: embedded:./shardgate-data].
    #[arg(long)]
    pub config_store: Option<String>,
    /// TOML config file; flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Most connections to one shard, shared by all clients [default: 64].
    #[arg(long)]
    pub pool_max_size: Option<usize>,
    /// Forward test-only commands (configureFailPoint) to the shards.
    #[arg(long)]
    pub enable_test_commands: bool,
    /// Seconds in-flight requests may run after SIGTERM/Ctrl-C [default: 10].
    #[arg(long)]
    pub shutdown_deadline_secs: Option<u64>,
    /// Client TLS: disabled, allowTLS, preferTLS or requireTLS [default: requireTLS with --tls-cert, else disabled].
    #[arg(long)]
    pub tls_mode: Option<String>,
    /// Server certificate chain for client TLS (PEM).
    #[arg(long)]
    pub tls_cert: Option<String>,
    /// Its private key (PEM).
    #[arg(long)]
    pub tls_key: Option<String>,
    /// CA (PEM) that must have signed every client's certificate.
    #[arg(long)]
    pub tls_ca: Option<String>,
    /// Require authentication (SCRAM) and check each command against the user's roles.
    #[arg(long)]
    pub auth: bool,
    /// Serve Prometheus metrics (/metrics), /healthz and /readyz over HTTP on this ip:port [default: off].
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

/// `shardgate demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Router port.
    #[arg(long, default_value_t = 27017)]
    pub port: u16,
    /// Number of shards to start.
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// Port of the Prometheus metrics, /healthz and /readyz listener.
    #[arg(long, default_value_t = 9216)]
    pub metrics_port: u16,
    /// Directory for shard data and the config store [default: a temporary directory].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `shardgate status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Router connection string.
    #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
    pub uri: String,
}

/// `shardgate bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Connection string of the endpoint to measure (a router or a shard server).
    #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
    pub uri: String,
    /// Name of --uri in the report.
    #[arg(long, default_value = "endpoint1")]
    pub label: String,
    /// A second endpoint, measured after the first with the same settings; ratios follow.
    #[arg(long)]
    pub uri2: Option<String>,
    /// Name of --uri2 in the report.
    #[arg(long, default_value = "endpoint2")]
    pub label2: String,
    /// Concurrent clients (tokio tasks sharing one driver client per endpoint).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds of load before measuring, not recorded.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Operation weights: find_by_key, scatter_sorted_find, insert, insert_batch, update, sorted_scan.
    #[arg(
        long,
        default_value = "find_by_key=70,scatter_sorted_find=10,insert=15,insert_batch=5",
        value_parser = crate::bench::parse_mix
    )]
    pub mix: crate::bench::Mix,
    /// Documents loaded by --setup; find_by_key reads keys below this.
    #[arg(long, default_value_t = 100_000)]
    pub docs: u64,
    /// Database.
    #[arg(long, default_value = "benchdb")]
    pub db: String,
    /// Collection.
    #[arg(long, default_value = "items")]
    pub collection: String,
    /// Documents per insert_batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Drop the collection and load --docs documents before measuring.
    #[arg(long)]
    pub setup: bool,
    /// During --setup on a router: enableSharding and shardCollection on {key: 1}.
    #[arg(long)]
    pub shard_key: bool,
    /// With --shard-key: split into this many chunks at even key points.
    #[arg(long, default_value_t = 1)]
    pub splits: u32,
    /// With --shard-key: place the chunks round-robin on the shards (via zones).
    #[arg(long)]
    pub spread: bool,
    /// Connect with directConnection=true (to one shard server).
    #[arg(long)]
    pub direct_connection: bool,
    /// Seconds to wait for an endpoint before reporting it unreachable.
    #[arg(long, default_value_t = 5)]
    pub connect_timeout_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// mix: run --mix for --duration-secs; migration: moveChunk the first
    /// chunk through the router (--uri) while the clients run --mix, and
    /// report MB/s and the writes' latencies during the move.
    #[arg(long, value_enum, default_value_t = Scenario::Mix)]
    pub scenario: Scenario,
    /// Bytes of each document's payload (loaded and inserted).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// --scenario migration: the destination shard [default: the first other shard].
    #[arg(long)]
    pub to_shard: Option<String>,
    /// Start N shard servers (SHARDGATE_SHARD_BIN, else secantusd-py) and a
    /// router over them, plus one standalone shard, and measure the router
    /// and (with the mix) the standalone shard instead of --uri/--uri2.
    #[arg(long)]
    pub start_shards: Option<usize>,
}

/// `shardgate bench --scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The operation mix for a duration.
    Mix,
    /// One chunk migration under the mix's write load.
    Migration,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let only_balancer = matches!(cli.command, Command::Balancer(_));
    match cli.command {
        Command::Serve(a) | Command::Balancer(a) => {
            let overrides = Overrides {
                listen: a.listen,
                config_store: a.config_store,
                pool_max_size: a.pool_max_size,
                enable_test_commands: a.enable_test_commands,
                shutdown_deadline_secs: a.shutdown_deadline_secs,
                tls_mode: a.tls_mode,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                tls_ca: a.tls_ca,
                auth: a.auth,
                metrics_listen: a.metrics_listen,
            };
            let config =
                settings::load(a.config.as_deref(), overrides, std::env::args().collect())?;
            if only_balancer {
                crate::balance(config, crate::shutdown_on_signals()).await
            } else {
                crate::serve(config, crate::shutdown_on_signals()).await
            }
        }
        Command::Demo(a) => crate::demo::run(a).await,
        Command::Status(a) => status(&a.uri).await,
        Command::Bench(a) => crate::bench::run(a).await,
    }
}

/// Each replica-set shard's members and which is primary.
fn print_topology(server_status: &bson::Document) {
    let sets = server_status
        .get_array("shardTopology")
        .map(|a| a.to_vec())
        .unwrap_or_default();
    let sets: Vec<&bson::Document> = sets
        .iter()
        .filter_map(|s| s.as_document())
        .filter(|s| s.contains_key("setName"))
        .collect();
    if sets.is_empty() {
        return;
    }
    println!("replica-set members:");
    for s in sets {
        println!(
            "  {} ({})",
            s.get_str("shard").unwrap_or("?"),
            s.get_str("setName").unwrap_or("?")
        );
        for m in s
            .get_array("members")
            .map(|a| a.to_vec())
            .unwrap_or_default()
        {
            if let Some(m) = m.as_document() {
                let ping = m
                    .get_f64("pingMs")
                    .map(|p| format!(" {p:.1} ms"))
                    .unwrap_or_default();
                println!(
                    "    {:<22} {}{ping}",
                    m.get_str("host").unwrap_or("?"),
                    m.get_str("state").unwrap_or("?")
                );
            }
        }
    }
}

/// The balancer's mode and its current migration with the copy's progress.
fn print_balancer(status: &bson::Document) {
    let number = |d: &bson::Document, f: &str| match d.get(f) {
        Some(bson::Bson::Int64(n)) => *n,
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        _ => 0,
    };
    println!(
        "balancer: mode {}, {} rounds, {} migrations",
        status.get_str("mode").unwrap_or("?"),
        number(status, "numBalancerRounds"),
        number(status, "numMigrations")
    );
    let Ok(m) = status.get_document("currentMigration") else {
        println!("  no migration running");
        return;
    };
    let (copied, estimate) = (number(m, "docsCopied"), number(m, "docsEstimate"));
    let percent = if estimate > 0 {
        format!(" ({}%)", copied.saturating_mul(100) / estimate)
    } else {
        String::new()
    };
    println!(
        "  migrating {} [{}, {}) {} -> {}: {}, {copied} of {estimate} documents copied{percent}",
        m.get_str("ns").unwrap_or("?"),
        m.get_document("min")
            .map(|d| d.to_string())
            .unwrap_or_default(),
        m.get_document("max")
            .map(|d| d.to_string())
            .unwrap_or_default(),
        m.get_str("fromShard").unwrap_or("?"),
        m.get_str("toShard").unwrap_or("?"),
        m.get_str("state").unwrap_or("?"),
    );
}

async fn status(uri: &str) -> anyhow::Result<()> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let admin = client.database("admin");
    let shards = admin.run_command(bson::doc! {"listShards": 1}).await?;
    println!("shards:");
    for s in shards
        .get_array("shards")
        .map(|a| a.to_vec())
        .unwrap_or_default()
    {
        if let Some(s) = s.as_document() {
            println!(
                "  {:<12} {}",
                s.get_str("_id").unwrap_or("?"),
                s.get_str("host").unwrap_or("?")
            );
        }
    }
    let dbs = admin.run_command(bson::doc! {"listDatabases": 1}).await?;
    println!("databases:");
    for d in dbs
        .get_array("databases")
        .map(|a| a.to_vec())
        .unwrap_or_default()
    {
        if let Some(d) = d.as_document() {
            println!("  {}", d.get_str("name").unwrap_or("?"));
        }
    }
    let st = admin.run_command(bson::doc! {"serverStatus": 1}).await?;
    print_topology(&st);
    let balancer = admin.run_command(bson::doc! {"balancerStatus": 1}).await?;
    print_balancer(&balancer);
    println!("shard pools:");
    for p in st
        .get_array("shardPools")
        .map(|a| a.to_vec())
        .unwrap_or_default()
    {
        if let Some(p) = p.as_document() {
            println!(
                "  {:<12} open {} idle {} peak {} / max {}",
                p.get_str("shard").unwrap_or("?"),
                p.get_i64("open").unwrap_or(0),
                p.get_i64("idle").unwrap_or(0),
                p.get_i64("peakOpen").unwrap_or(0),
                p.get_i64("maxSize").unwrap_or(0)
            );
        }
    }
    Ok(())
}
