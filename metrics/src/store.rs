//! Config store metrics: a [`MeteredStore`] in front of the real store
//! times each call by operation and counts the calls that failed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate_config_store::store::{Listing, Txn, TxnOutcome, Versioned, WatchEvent};
use shardgate_config_store::{ConfigStore, StoreError};
use tokio::sync::mpsc;

use crate::histogram::Histogram;
use crate::text::Exposition;

/// A kind of config store call (the `op` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// `get`.
    Get,
    /// `scan` and `list`.
    Scan,
    /// A compare-and-swap transaction.
    Txn,
    /// `revision`.
    Revision,
    /// Opening a watch.
    Watch,
    /// Granting, renewing or revoking a lease.
    Lease,
}

const OPS: [(StoreOp, &str); 6] = [
    (StoreOp::Get, "get"),
    (StoreOp::Scan, "scan"),
    (StoreOp::Txn, "txn"),
    (StoreOp::Revision, "revision"),
    (StoreOp::Watch, "watch"),
    (StoreOp::Lease, "lease"),
];

/// Latency and errors of config store calls, by operation.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    latency: [Histogram; 6],
    errors: [AtomicU64; 6],
}

impl StoreMetrics {
    fn index(op: StoreOp) -> usize {
        OPS.iter().position(|(o, _)| *o == op).unwrap_or(0)
    }

    /// Records one call.
    pub fn record(&self, op: StoreOp, took: Duration, failed: bool) {
        let i = Self::index(op);
        if let Some(h) = self.latency.get(i) {
            h.observe(took);
        }
        if failed {
            if let Some(e) = self.errors.get(i) {
                e.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Errors so far for `op`.
    pub fn errors(&self, op: StoreOp) -> u64 {
        self.errors
            .get(Self::index(op))
            .map_or(0, |e| e.load(Ordering::Relaxed))
    }

    /// Writes `shardgate_config_store_*`.
    pub fn render(&self, out: &mut Exposition) {
        let name = "shardgate_config_store_request_duration_seconds";
        out.family(name, "histogram", "Config store call latency by operation.");
        for (i, (_, op)) in OPS.iter().enumerate() {
            out.histogram(name, &[("op", op)], &self.latency[i]);
        }
        let name = "shardgate_config_store_errors_total";
        out.family(
            name,
            "counter",
            "Config store calls that failed, by operation.",
        );
        for (i, (_, op)) in OPS.iter().enumerate() {
            out.sample(
                name,
                &[("op", op)],
                self.errors[i].load(Ordering::Relaxed) as f64,
            );
        }
    }
}

/// A config store that records every call in [`StoreMetrics`].
pub struct MeteredStore {
    inner: Arc<dyn ConfigStore>,
    metrics: Arc<crate::Metrics>,
}

impl MeteredStore {
    /// `inner`, counted into `metrics.store`.
    pub fn new(inner: Arc<dyn ConfigStore>, metrics: Arc<crate::Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut call = Call {
            metrics: &self.metrics.store,
            op,
            started: Instant::now(),
            failed: true,
        };
        let out = f.await;
        call.failed = out.is_err();
        out
    }
}

/// One store call, recorded when dropped: a call abandoned before the
/// store answered (a caller's timeout) counts as an error.
struct Call<'a> {
    metrics: &'a StoreMetrics,
    op: StoreOp,
    started: Instant,
    failed: bool,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.metrics
            .record(self.op, self.started.elapsed(), self.failed);
    }
}

#[async_trait::async_trait]
impl ConfigStore for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.timed(StoreOp::Get, self.inner.get(key)).await
    }
    async fn scan(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.timed(StoreOp::Scan, self.inner.scan(prefix)).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.timed(StoreOp::Txn, self.inner.txn(txn)).await
    }
    async fn revision(&self) -> Result<u64, StoreError> {
        self.timed(StoreOp::Revision, self.inner.revision()).await
    }
    async fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        self.timed(StoreOp::Watch, self.inner.watch(prefix, after_revision))
            .await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        self.timed(StoreOp::Lease, self.inner.grant_lease(ttl))
            .await
    }
    async fn keep_alive(&self, lease: i64) -> Result<(), StoreError> {
        self.timed(StoreOp::Lease, self.inner.keep_alive(lease))
            .await
    }
    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        self.timed(StoreOp::Lease, self.inner.revoke_lease(lease))
            .await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.timed(StoreOp::Scan, self.inner.list(prefix)).await
    }
}
