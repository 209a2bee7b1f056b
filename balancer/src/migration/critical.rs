//! The critical section: recorded, then every live router acknowledges
//! holding writes to the range; acknowledgements are also how the balancer
//! knows routers exclude a destination's copies.

use std::time::{Duration, Instant};

use shardgate_config_store::model::{MigrationState, MigrationType};
use shardgate_config_store::shard_key::ShardKeyPattern;

use shardgate_config_store::model::MigrationAck;

use super::*;
use crate::context::Balancer;
use crate::error::{BalancerError, Result};
use crate::lock::LockGuard;

/// Records the critical section and waits until every live router holds
/// writes to the range; returns when it began.
pub(super) async fn enter_critical(
    state: &Balancer,
    guard: &LockGuard,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
    range: &Range,
) -> Result<Instant> {
    let mut critical = m.clone();
    critical.state = MigrationState::Critical;
    put_fenced(state, guard, pattern, &critical).await?;
    let held = Instant::now();
    let min_hex = range.min_hex.clone();
    wait_for_acks(state, &m.ns, "the critical section", |ack| {
        ack.mins.contains(&min_hex)
    })
    .await?;
    pause_point(state, "critical").await;
    Ok(held)
}

/// Waits until every live router's acknowledgement for `ns` satisfies
/// `acked` (or the router stopped being live).
pub(super) async fn wait_for_acks(
    state: &Balancer,
    ns: &str,
    what: &str,
    acked: impl Fn(&MigrationAck) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + ACK_WAIT;
    loop {
        let missing = state.catalog.routers_without_ack(ns, &acked).await?;
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BalancerError::command(
                50,
                "MaxTimeMSExpired",
                format!("routers {missing:?} did not acknowledge {what}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) async fn clear_acks(state: &Balancer, ns: &str) {
    let _ = state.catalog.clear_migration_acks(ns).await;
}
