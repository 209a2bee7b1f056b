//! A named lock in the store held under a lease: its holder keeps the lease
//! alive; a holder that dies loses it one lease later. The fencing token
//! (the revision that wrote the lock) lets a holder's writes check that it
//! still holds it. The balancer's migration lock and the per-namespace DDL
//! lock (taken by multi-shard DDL and by migrations) are such locks.

use std::time::{Duration, Instant};

use super::Catalog;
use crate::error::Result;
use crate::store::{LeaseId, Txn};

/// A lock held under a lease, kept alive until released or dropped.
pub struct LeaseLock {
    catalog: Catalog,
    name: String,
    /// The fencing token.
    pub token: u64,
    lease: LeaseId,
    keeper: tokio::task::JoinHandle<()>,
}

/// The DDL lock of a namespace.
pub fn ddl_lock_name(ns: &str) -> String {
    format!("ddl/{ns}")
}

impl LeaseLock {
    /// Takes `name` for `holder`, retrying every 100 ms up to `wait` while
    /// someone else holds it. `Ok(None)`: still busy after `wait`.
    pub async fn acquire(
        catalog: &Catalog,
        name: &str,
        holder: &str,
        why: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<LeaseLock>> {
        let deadline = Instant::now() + wait;
        let store = catalog.store().clone();
        loop {
            let lease = store.grant_lease(ttl).await?;
            if let Some(token) = catalog.try_lock(name, holder, why, lease).await? {
                let keeper = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(ttl / 4).await;
                        if store.keep_alive(lease).await.is_err() {
                            tracing::warn!("lost a lock's lease");
                            return;
                        }
                    }
                });
                return Ok(Some(LeaseLock {
                    catalog: catalog.clone(),
                    name: name.to_owned(),
                    token,
                    lease,
                    keeper,
                }));
            }
            let _ = store.revoke_lease(lease).await;
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Who holds `name` and why, for an error message.
    pub async fn holder(catalog: &Catalog, name: &str) -> String {
        catalog
            .locks()
            .await
            .ok()
            .and_then(|locks| locks.into_iter().find(|l| l.id == name))
            .map(|l| format!("{} ({})", l.process, l.why))
            .unwrap_or_else(|| "another process".into())
    }

    /// The compare every metadata change under this lock carries.
    pub fn fence(&self) -> Txn {
        self.catalog.lock_fence(&self.name, self.token)
    }

    /// Releases the lock.
    pub async fn release(self) {
        self.keeper.abort();
        let _ = self.catalog.unlock(&self.name, self.token).await;
        let _ = self.catalog.store().revoke_lease(self.lease).await;
    }
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        // Never keep a lease alive for a lock nobody holds; the lease ends
        // and the lock with it.
        self.keeper.abort();
    }
}
