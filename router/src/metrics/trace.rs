//! What one operation did on the shards, for its metrics and the slow
//! query log: a task-local [`Trace`] that [`MeteredShards`] fills on each
//! round trip made by the operation's task — a fixed array, no allocation.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{RawDocument, RawDocumentBuf};
use shardgate_shard_client::{PoolReport, Result, ShardClient, Target};
use shardgate_wire::OpMsg;

use super::{RouterMetrics, ShardMetrics};

/// Shards kept by name per operation; more are only counted.
const KEPT: usize = 8;

tokio::task_local! {
    static TRACE: Trace;
}

/// Time one operation spent on one shard, and what its replies counted.
#[derive(Debug, Clone)]
pub(crate) struct ShardTime {
    /// The shard's handle (its name).
    pub shard: Arc<ShardMetrics>,
    /// Round trips to it.
    pub calls: u32,
    /// Their total time.
    pub time: Duration,
    /// What its replies counted, summed.
    pub counts: ReplyCounts,
}

/// The document counts a shard's reply carries. mongod's replies say
/// nothing of documents or keys examined (its own slow log has them, its
/// replies do not), so none is counted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReplyCounts {
    /// Documents in cursor batches (`firstBatch`/`nextBatch`).
    pub returned: u64,
    /// A write reply's `n` (inserted, matched or deleted), if any came.
    pub n: Option<u64>,
    /// An update reply's `nModified`, if any came.
    pub modified: Option<u64>,
}

impl ReplyCounts {
    /// What `body`, a shard's reply, counts.
    pub(crate) fn of(body: &RawDocument) -> ReplyCounts {
        let number = |f: &str| match body.get(f) {
            Ok(Some(bson::RawBsonRef::Int32(n))) => Some(n.max(0) as u64),
            Ok(Some(bson::RawBsonRef::Int64(n))) => Some(n.max(0) as u64),
            _ => None,
        };
        ReplyCounts {
            returned: super::batch_len(body),
            n: number("n"),
            modified: number("nModified"),
        }
    }

    fn add(&mut self, other: ReplyCounts) {
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.returned += other.returned;
        self.n = sum(self.n, other.n);
        self.modified = sum(self.modified, other.modified);
    }
}

/// One operation's shard round trips.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    shards: RefCell<[Option<ShardTime>; KEPT]>,
    more_shards: Cell<u32>,
    in_flight: Cell<u32>,
    busy_since: Cell<Option<Instant>>,
    busy: Cell<Duration>,
}

impl Trace {
    /// The shards reached, with their time.
    pub(crate) fn shards(&self) -> impl Iterator<Item = ShardTime> + '_ {
        let kept: Vec<ShardTime> = self.shards.borrow().iter().flatten().cloned().collect();
        kept.into_iter()
    }

    /// How many shards were reached.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.borrow().iter().flatten().count() + self.more_shards.get() as usize
    }

    /// Wall time during which some shard round trip was in flight.
    pub(crate) fn shard_wall(&self) -> Duration {
        self.busy.get()
    }

    /// The trace so far, leaving an empty one.
    fn take(&self) -> Trace {
        Trace {
            shards: RefCell::new(self.shards.take()),
            more_shards: Cell::new(self.more_shards.take()),
            in_flight: Cell::new(self.in_flight.take()),
            busy_since: Cell::new(self.busy_since.take()),
            busy: Cell::new(self.busy.take()),
        }
    }

    fn begin(&self) {
        if self.in_flight.get() == 0 {
            self.busy_since.set(Some(Instant::now()));
        }
        self.in_flight.set(self.in_flight.get() + 1);
    }

    fn end(&self, shard: &Arc<ShardMetrics>, took: Duration, counts: ReplyCounts) {
        let left = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(left);
        if left == 0 {
            if let Some(since) = self.busy_since.take() {
                self.busy.set(self.busy.get() + since.elapsed());
            }
        }
        let mut shards = self.shards.borrow_mut();
        if let Some(t) = shards
            .iter_mut()
            .flatten()
            .find(|t| t.shard.shard == shard.shard)
        {
            t.calls += 1;
            t.time += took;
            t.counts.add(counts);
            return;
        }
        match shards.iter_mut().find(|s| s.is_none()) {
            Some(free) => {
                *free = Some(ShardTime {
                    shard: shard.clone(),
                    calls: 1,
                    time: took,
                    counts,
                })
            }
            None => self.more_shards.set(self.more_shards.get() + 1),
        }
    }
}

/// Runs `f` with a fresh trace and returns it with `f`'s output.
pub(crate) async fn traced<F: Future>(f: F) -> (F::Output, Trace) {
    TRACE
        .scope(Trace::default(), async move {
            let out = f.await;
            let trace = TRACE.try_with(Trace::take).unwrap_or_default();
            (out, trace)
        })
        .await
}

/// A round trip in flight; ends in the trace when dropped (a cancelled
/// request too).
struct InFlight<'a> {
    shard: &'a Arc<ShardMetrics>,
    started: Instant,
    /// What the reply counted (nothing for a cancelled or failed one).
    counts: ReplyCounts,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let _ = TRACE.try_with(|t| t.end(self.shard, took, self.counts));
    }
}

/// The shard client that times every round trip, per shard and into the
/// operation's trace.
pub(crate) struct MeteredShards {
    inner: Arc<dyn ShardClient>,
    metrics: Arc<RouterMetrics>,
}

impl MeteredShards {
    /// `inner`, timed into `metrics`.
    pub(crate) fn new(inner: Arc<dyn ShardClient>, metrics: Arc<RouterMetrics>) -> MeteredShards {
        MeteredShards { inner, metrics }
    }
}

#[async_trait::async_trait]
impl ShardClient for MeteredShards {
    async fn send(&self, shard: Target<'_>, msg: &OpMsg) -> Result<OpMsg> {
        let handle = self.metrics.shard(shard.id);
        let _ = TRACE.try_with(Trace::begin);
        let mut flight = InFlight {
            shard: &handle,
            started: Instant::now(),
            counts: ReplyCounts::default(),
        };
        let out = self.inner.send(shard, msg).await;
        if let Ok(reply) = &out {
            flight.counts = ReplyCounts::of(reply.body());
        }
        if self.metrics.enabled {
            handle.round_trip.observe(flight.started.elapsed());
            if out.is_err() {
                handle.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(flight);
        out
    }

    async fn probe(&self, host: &str, body: &RawDocument) -> Result<RawDocumentBuf> {
        self.inner.probe(host, body).await
    }

    fn stats(&self) -> Vec<PoolReport> {
        self.inner.stats()
    }

    fn topology(&self) -> Vec<shardgate_shard_client::TopologyReport> {
        self.inner.topology()
    }

    fn drop_connections(&self, host: &str) -> usize {
        self.inner.drop_connections(host)
    }
}
