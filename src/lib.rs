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

/// Opens the config store, binds the listener and serves until `shutdown`.
pub async fn serve(config: RouterConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let store: Arc<dyn shardgate_config_store::ConfigStore> =
        shardgate_config_store::open(&config.config_store).await?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    shardgate_router::run(listener, config, store, shutdown).await?;
    Ok(())
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
