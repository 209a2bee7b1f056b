//! The listener: accept clients, one task each, and drain them on shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use shardgate_config_store::{Catalog, ConfigStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::catalog_cache::placement::Placement;
use crate::catalog_cache::routing::RoutingTable;
use crate::commands::Session;
use crate::config::RouterConfig;
use crate::connection;
use crate::error::RouterError;
use crate::state::RouterState;

/// Serves clients on `listener` until `shutdown` turns true, then stops
/// accepting, lets in-flight requests finish within the configured deadline
/// and returns.
pub async fn run(
    listener: TcpListener,
    config: RouterConfig,
    store: Arc<dyn ConfigStore>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RouterError> {
    run_with_metrics(listener, config, store, shutdown, Default::default()).await
}

/// [`run`], counting into `metrics` (shared with a balancer in the same
/// process) and serving them on `metrics_listen` when it is set.
pub async fn run_with_metrics(
    listener: TcpListener,
    config: RouterConfig,
    store: Arc<dyn ConfigStore>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<shardgate_metrics::Metrics>,
) -> Result<(), RouterError> {
    config
        .validate()
        .map_err(|e| RouterError::command(2, "BadValue", e))?;
    let catalog = Catalog::new(store);
    let revision = catalog.store().revision().await?;
    let placement = Placement::load(&catalog).await?;
    let routing = RoutingTable::default();
    routing.load_all(&catalog).await?;
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let acceptor = crate::tls::acceptor(&config.tls)
        .map_err(|e| RouterError::command(2, "BadValue", format!("invalid TLS settings: {e}")))?;
    let pools = shardgate_shard_client::Pools::new(config.pool.clone())
        .map_err(|e| RouterError::command(2, "BadValue", format!("invalid pool settings: {e}")))?;
    let metrics_listener = bind_metrics(&config).await?;
    let names = crate::commands::registry().all().iter().map(|s| s.name);
    let metrics = crate::metrics::RouterMetrics::new(
        config.metrics_listen.is_some(),
        metrics,
        names.collect(),
    );
    let state = Arc::new(RouterState::with_metrics(
        config,
        catalog,
        placement,
        routing,
        Arc::new(pools),
        listen.clone(),
        Arc::new(metrics),
    ));
    state.metrics.routing_loaded.store(true, Ordering::Relaxed);
    state.reload_rw_defaults().await?;
    crate::background::follow_all_db_criticals(&state).await;
    tracing::info!(%listen, store = %state.catalog.store().describe(), "router listening");
    crate::log::mark_started();
    let background = spawn_background(&state, revision, metrics_listener, &shutdown);
    let mut tasks = JoinSet::new();
    accept_until_shutdown(&listener, &state, acceptor, &mut shutdown, &mut tasks).await;
    drop(listener);
    drain(&state, tasks).await;
    for task in background {
        let _ = task.await;
    }
    tracing::info!("router stopped");
    Ok(())
}

/// The metrics listener, when `metrics_listen` is set.
async fn bind_metrics(config: &RouterConfig) -> Result<Option<TcpListener>, RouterError> {
    let Some(addr) = &config.metrics_listen else {
        return Ok(None);
    };
    TcpListener::bind(addr).await.map(Some).map_err(|e| {
        RouterError::command(
            2,
            "BadValue",
            format!("cannot listen on {addr} for metrics: {e}"),
        )
    })
}

/// The router's background tasks on the shutdown watch: the store watch,
/// registration, cursor reaping, transaction recovery, the query
/// analyzers' sample writer, and the metrics
/// listener when there is one.
fn spawn_background(
    state: &Arc<RouterState>,
    revision: u64,
    metrics: Option<TcpListener>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(crate::background::follow_store(
            state.clone(),
            revision,
            shutdown.clone(),
        )),
        tokio::spawn(crate::background::register(state.clone(), shutdown.clone())),
        tokio::spawn(crate::background::reap_cursors(
            state.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::txn::recover(state.clone(), shutdown.clone())),
        tokio::spawn(crate::query_analysis::run(state.clone(), shutdown.clone())),
    ];
    if let Some(l) = metrics {
        let at = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(listen = %at, "serving /metrics, /healthz and /readyz");
        tasks.push(tokio::spawn(crate::metrics::http::serve(
            l,
            state.clone(),
            shutdown.clone(),
        )));
    }
    tasks
}

/// Accepts connections until `shutdown`, each served by a task in `tasks`.
async fn accept_until_shutdown(
    listener: &TcpListener,
    state: &Arc<RouterState>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shutdown: &mut watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connection tasks so the set does not grow forever.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Connection limits: answer the first request with why, then close.
        if let Some(why) = refusal(state, &peer) {
            tracing::warn!(%peer, %why, "connection refused");
            state
                .stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            tasks.spawn(connection::refuse(stream, why));
            continue;
        }
        if let Ok(mut m) = state.clients_by_ip.lock() {
            *m.entry(peer.ip()).or_default() += 1;
        }
        // Counted here, not in the task, so a burst cannot overshoot.
        state
            .stats
            .current_connections
            .fetch_add(1, Ordering::Relaxed);
        let connection_id = state.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let session = Session {
            connection_id,
            peer: peer.to_string(),
            compressors: Vec::new(),
            auth: Default::default(),
            slot: state.operations.connect(connection_id, &peer.to_string()),
            close_now: false,
        };
        tasks.spawn(serve_connection(
            stream,
            peer,
            state.clone(),
            session,
            acceptor.clone(),
            shutdown.clone(),
        ));
    }
}

/// Serves one accepted connection, then releases what it counted.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    state: Arc<RouterState>,
    session: Session,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let connection_id = session.connection_id;
    state
        .stats
        .total_connections
        .fetch_add(1, Ordering::Relaxed);
    match crate::tls::accept(stream, acceptor.as_ref(), state.config.tls.mode).await {
        Some(crate::tls::Accepted::Plain(s)) => {
            connection::serve(s, state.clone(), session, shutdown).await
        }
        Some(crate::tls::Accepted::Tls(s)) => {
            connection::serve(s, state.clone(), session, shutdown).await
        }
        None => {}
    }
    state.operations.disconnect(connection_id);
    state
        .stats
        .current_connections
        .fetch_sub(1, Ordering::Relaxed);
    if let Ok(mut m) = state.clients_by_ip.lock() {
        if let Some(n) = m.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                m.remove(&peer.ip());
            }
        }
    }
}

/// Why a new connection from `peer` is refused, if a limit is reached.
fn refusal(state: &RouterState, peer: &std::net::SocketAddr) -> Option<String> {
    let limits = &state.config.limits;
    let current = state.stats.current_connections.load(Ordering::Relaxed) as usize;
    let from_ip = state
        .clients_by_ip
        .lock()
        .map(|m| m.get(&peer.ip()).copied().unwrap_or(0))
        .unwrap_or(0);
    if current >= limits.max_connections {
        Some(format!(
            "connection refused: the router's limit of {} open connections is reached",
            limits.max_connections
        ))
    } else if from_ip >= limits.max_connections_per_ip {
        Some(format!(
            "connection refused: {} already has {} open connections, the router's limit per address",
            peer.ip(),
            limits.max_connections_per_ip
        ))
    } else {
        None
    }
}

/// Lets open connections finish within the shutdown deadline, then closes
/// the rest.
async fn drain(state: &RouterState, mut tasks: JoinSet<()>) {
    let deadline = state.config.shutdown_deadline();
    tracing::info!(
        open = tasks.len(),
        ?deadline,
        "shutting down: draining connections"
    );
    let drained = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "shutdown deadline passed; closing the rest"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
