//! The service loop: the `moveChunk`/`moveRange` requests routers leave in
//! the store, and a balancing round every interval, each under the lease
//! lock. A request is run by the balancer beside the router that received
//! it; one no such balancer took within [`ADOPT_AFTER`] is run by any.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate_config_store::model::MoveResult;
use shardgate_config_store::{Catalog, ConfigStore};
use shardgate_shard_client::Pools;
use tokio::sync::watch;

use crate::context::{Balancer, BalancerConfig};

/// How often pending move requests are looked for.
const POLL: Duration = Duration::from_millis(100);
/// A request another process's balancer did not take this long is run here.
pub(crate) const ADOPT_AFTER: Duration = Duration::from_secs(2);
/// How long a request waits for the lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Runs the balancer service until `shutdown` turns true. Fails at start
/// with one line when the pool settings are invalid.
pub async fn run(
    config: BalancerConfig,
    store: Arc<dyn ConfigStore>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    run_with_metrics(config, store, shutdown, Default::default()).await
}

/// [`run`], counting rounds and migrations into `metrics`.
pub async fn run_with_metrics(
    config: BalancerConfig,
    store: Arc<dyn ConfigStore>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<shardgate_metrics::Metrics>,
) -> Result<(), String> {
    let pools = Pools::new(config.pool.clone())?;
    let every = Duration::from_secs(config.balancer_interval_secs.max(1));
    let rounds = config.rounds;
    let state = Balancer::new(config, Catalog::new(store), Arc::new(pools)).with_metrics(metrics);
    let state = Arc::new(state);
    let mut next_round = Instant::now() + every;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            _ = tokio::time::sleep(POLL) => {}
        }
        if let Err(e) = run_requests(&state).await {
            tracing::warn!(error = %e, "move requests failed");
        }
        crate::migration::delete_due(&state).await;
        if rounds && Instant::now() >= next_round {
            if let Err(e) = crate::round::round(&state).await {
                tracing::warn!(error = %e, "balancer round failed");
            }
            next_round = Instant::now() + every;
        }
    }
}

/// Runs the pending move requests this service should take.
async fn run_requests(state: &Arc<Balancer>) -> crate::error::Result<()> {
    for request in state.catalog.move_requests().await? {
        let age = bson::DateTime::now().timestamp_millis() - request.when.timestamp_millis();
        let mine = request.requested_by == state.id();
        if !mine && age < ADOPT_AFTER.as_millis() as i64 {
            continue;
        }
        if !state.catalog.take_move(&request, state.id()).await? {
            continue; // another balancer took it
        }
        let started = Instant::now();
        let why = format!("moveChunk {} for {}", request.ns, request.requested_by);
        let outcome = match crate::migration::take_lock(state, &why, LOCK_WAIT).await {
            Ok(guard) => {
                let moved = crate::migration::move_chunk(
                    state,
                    &guard,
                    &request.ns,
                    &request.min,
                    &request.max,
                    &request.to,
                    request.wait_for_delete,
                )
                .await;
                guard.release().await;
                moved.map(|_| ())
            }
            Err(e) => Err(e),
        };
        let (code, code_name, errmsg) = match &outcome {
            Ok(()) => (0, String::new(), String::new()),
            Err(e) => {
                let (code, name) = e.code();
                (code, name.to_owned(), e.to_string())
            }
        };
        state
            .catalog
            .finish_move(&MoveResult {
                id: request.id.clone(),
                code,
                code_name,
                errmsg,
                millis: started.elapsed().as_millis() as i64,
            })
            .await?;
    }
    Ok(())
}
