//! The `balancer` lease lock every round and migration holds: only its
//! holder acts, and its fencing token (the store revision that wrote it)
//! guards every metadata change, so a holder whose lease ended commits
//! nothing. `migration::take_lock` takes it and first recovers what a dead
//! holder left.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    state: Arc<Balancer>,
    /// The fencing token.
    pub token: u64,
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    /// The compare every metadata change under this lock carries.
    pub(crate) fn fence(&self) -> Txn {
        self.state.catalog.lock_fence(LOCK, self.token)
    }

    /// Releases the lock.
    pub(crate) async fn release(self) {
        self.keeper.abort();
        let _ = self.state.catalog.unlock(LOCK, self.token).await;
        let _ = self.state.catalog.store().revoke_lease(self.lease).await;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Never keep a lease alive for a guard nobody holds.
        self.keeper.abort();
    }
}

/// Takes the migration lock, waiting up to `wait` for another holder.
pub(crate) async fn lock(state: &Arc<Balancer>, why: &str, wait: Duration) -> Result<LockGuard> {
    let deadline = Instant::now() + wait;
    let store = state.catalog.store().clone();
    loop {
        let lease = store.grant_lease(LOCK_TTL).await?;
        if let Some(token) = state.catalog.try_lock(LOCK, state.id(), why, lease).await? {
            let keeper = {
                let store = store.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(LOCK_TTL / 4).await;
                        if store.keep_alive(lease).await.is_err() {
                            tracing::warn!("lost the migration lock's lease");
                            return;
                        }
                    }
                })
            };
            let guard = LockGuard {
                state: state.clone(),
                token,
                lease,
                keeper,
            };
            return Ok(guard);
        }
        let _ = store.revoke_lease(lease).await;
        if Instant::now() >= deadline {
            let holder = state
                .catalog
                .locks()
                .await?
                .into_iter()
                .find(|l| l.id == LOCK)
                .map(|l| format!("{} ({})", l.process, l.why))
                .unwrap_or_else(|| "another router".into());
            return Err(BalancerError::command(
                46,
                "LockBusy",
                format!("the migration lock is held by {holder}; retry"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
