//! The `shardgate` binary's library: CLI, wiring and shard processes.
//!
//! # Layout
//! - [`bench`](mod@bench): `shardgate bench`, the end-to-end load tool for any endpoint.
//! - [`cli`]: clap definitions and the `serve`, `demo` and `status` commands.
//! - [`settings`]: TOML file, then flags, then `validate()`.
//! - [`shard_process`]: starting and stopping local shard servers
//!   (SecantusDB by default, `SHARDGATE_SHARD_BIN` for another binary such
//!   as a real `mongod`), shared by `demo` and the end-to-end tests.
//! - [`demo`]: three shards, a router, a sample dataset.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod settings;
pub mod shard_process;

use std::sync::Arc;

use shardgate_router::RouterConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Opens the config store, binds the listener and serves until `shutdown`:
/// the router, and beside it (with `balancer = true`) the balancer service,
/// siblings on one shutdown watch sharing one set of metrics (served on
/// `metrics_listen` when set).
pub async fn serve(config: RouterConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let metrics = Arc::new(shardgate_metrics::Metrics::default());
    let store: Arc<dyn shardgate_config_store::ConfigStore> =
        Arc::new(shardgate_metrics::MeteredStore::new(
            shardgate_config_store::open(&config.config_store).await?,
            metrics.clone(),
        ));
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let id = listener.local_addr()?.to_string();
    let balancer = config.balancer.then(|| balancer_config(&config, id, true));
    let router = shardgate_router::run_with_metrics(
        listener,
        config,
        store.clone(),
        shutdown.clone(),
        metrics.clone(),
    );
    match balancer {
        Some(b) => {
            let balancer = shardgate_balancer::run_with_metrics(b, store, shutdown, metrics);
            let (routed, balanced) = tokio::join!(router, balancer);
            routed?;
            balanced.map_err(|e| anyhow::anyhow!("balancer: {e}"))?;
        }
        None => router.await?,
    }
    Ok(())
}

/// Runs only the balancer service (`shardgate balancer`) until `shutdown`.
pub async fn balance(config: RouterConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let store: Arc<dyn shardgate_config_store::ConfigStore> =
        shardgate_config_store::open(&config.config_store).await?;
    let id = format!("balancer-{}", std::process::id());
    shardgate_balancer::run(balancer_config(&config, id, true), store, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("balancer: {e}"))
}

/// The balancer service's settings from a router's: `id` names the process
/// (the router's address when beside one), `rounds` runs balancing rounds.
pub fn balancer_config(
    config: &RouterConfig,
    id: String,
    rounds: bool,
) -> shardgate_balancer::BalancerConfig {
    shardgate_balancer::BalancerConfig {
        id,
        rounds,
        balancer_interval_secs: config.balancer_interval_secs,
        orphan_cleanup_delay_secs: config.orphan_cleanup_delay_secs,
        enable_test_commands: config.enable_test_commands,
        pool: config.pool.clone(),
    }
}

/// A shutdown watch that turns true on Ctrl-C or SIGTERM.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    let _ = tx.send(true);
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        let _ = tx.send(true);
    });
    rx
}
