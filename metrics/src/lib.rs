//! Prometheus metrics for shardgate, hand-written over atomics: an update
//! on the request path is a few relaxed atomic adds on a handle resolved
//! beforehand, never an allocation or a lock.
//!
//! # Layout
//! - `histogram`: [`Histogram`], fixed latency buckets in seconds.
//! - `text`: [`Exposition`], the Prometheus text format (version 0.0.4)
//!   writer: `# HELP`/`# TYPE` once per family, escaped label values.
//! - `store`: [`StoreMetrics`] and [`MeteredStore`], a `ConfigStore` that
//!   times every call by operation and counts its errors.
//! - `balancer`: [`BalancerMetrics`], rounds and migrations.
//!
//! The router owns the listener that serves them (`shardgate-router`'s
//! `metrics` module); the balancer and the config store only count.

mod balancer;
mod histogram;
mod store;
mod text;

pub use balancer::{BalancerMetrics, MigrationFigures, MigrationOutcome, RoundOutcome};
pub use histogram::{Histogram, Snapshot, BUCKETS};
pub use store::{MeteredStore, StoreMetrics, StoreOp};
pub use text::Exposition;

/// The metrics a process shares between its router and its balancer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Config store calls.
    pub store: StoreMetrics,
    /// Balancer rounds and migrations.
    pub balancer: BalancerMetrics,
}

impl Metrics {
    /// Writes the store's and the balancer's families.
    pub fn render(&self, out: &mut Exposition) {
        self.store.render(out);
        self.balancer.render(out);
    }
}
