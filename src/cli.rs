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
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a router that drivers connect to as they would to mongos.
    Serve(ServeArgs),
    /// Start three local shards and a router, load sample data, and wait for Ctrl-C.
    Demo(DemoArgs),
    /// Print the shards, databases and pools of a running router.
    Status(StatusArgs),
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

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => {
            let overrides = Overrides {
                listen: a.listen,
                config_store: a.config_store,
                pool_max_size: a.pool_max_size,
                enable_test_commands: a.enable_test_commands,
                shutdown_deadline_secs: a.shutdown_deadline_secs,
            };
            let config =
                settings::load(a.config.as_deref(), overrides, std::env::args().collect())?;
            crate::serve(config, crate::shutdown_on_signals()).await
        }
        Command::Demo(a) => crate::demo::run(a).await,
        Command::Status(a) => status(&a.uri).await,
    }
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
