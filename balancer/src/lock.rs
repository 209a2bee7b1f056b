//! The `balancer` lease lock every round and migration holds: only its
//! holder acts, and its fencing token (the store revision that wrote it)
//! guards every metadata change, so a holder whose lease ended commits
//! nothing. `migration::take_lock` takes it and first recovers what a dead
//! holder left.

use std::sync::Arc;
use std::time::Duration;

use shardgate_config_store::catalog::LeaseLock;

use shardgate_config_store::store::Txn;

use crate::context::Balancer;
use crate::error::{BalancerError, Result};

/// The lock every migration (and balancer round) holds.
pub(crate) const LOCK: &str = "balancer";
/// The lease of the migration lock: a holder that dies loses the lock this
/// long after its last keep-alive.
const LOCK_TTL: Duration = Duration::from_secs(5);
/// A held migration lock: its fencing token and the lease keeping it.
pub(crate) struct LockGuard {
    held: LeaseLock,
    /// The fencing token.
    pub token: u64,
}

impl LockGuard {
    /// The compare every metadata change under this lock carries.
    pub(crate) fn fence(&self) -> Txn {
        self.held.fence()
    }

    /// Releases the lock.
    pub(crate) async fn release(self) {
        self.held.release().await;
    }
}

/// Takes the migration lock, waiting up to `wait` for another holder.
pub(crate) async fn lock(state: &Arc<Balancer>, why: &str, wait: Duration) -> Result<LockGuard> {
    let catalog = &state.catalog;
    match LeaseLock::acquire(catalog, LOCK, state.id(), why, LOCK_TTL, wait).await? {
        Some(held) => Ok(LockGuard {
            token: held.token,
            held,
        }),
        None => Err(BalancerError::command(
            46,
            "LockBusy",
            format!(
                "the migration lock is held by {}; retry",
                LeaseLock::holder(catalog, LOCK).await
            ),
        )),
    }
}
