//! The router's Prometheus metrics: per command, per namespace and per
//! shard latency, targeting, documents returned, retry replays; served
//! with the process's shared [`shardgate_metrics::Metrics`] by `http`.
//!
//! Every handle an operation updates is resolved without allocating:
//! commands by their index in the registry, shards and namespaces through
//! a read lock on a map that only grows (namespaces up to
//! [`MAX_NAMESPACES`], then `other`).

pub(crate) mod http;
mod render;
pub(crate) mod trace;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shardgate_metrics::Histogram;

pub(crate) use render::render;

/// Namespaces labelled one by one; later ones count as `other`.
pub(crate) const MAX_NAMESPACES: usize = 100;

/// Latency of one command name.
#[derive(Debug, Default)]
pub(crate) struct CommandMetrics {
    /// Whole operation, as the client waits for it.
    pub total: Histogram,
    /// The router's own part: the total minus the time some shard round
    /// trip was in flight.
    pub router: Histogram,
}

/// One shard's round trips.
#[derive(Debug)]
pub(crate) struct ShardMetrics {
    /// The shard's name.
    pub shard: String,
    /// Round trips through the pool (checkout included).
    pub round_trip: Histogram,
    /// Round trips that failed (network, timeout).
    pub errors: AtomicU64,
}

/// Where an operation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Targeting {
    /// The router answered alone.
    Router,
    /// One shard.
    Targeted,
    /// Several shards.
    Scatter,
}

/// The router's metrics.
#[derive(Debug)]
pub(crate) struct RouterMetrics {
    /// Whether operations are recorded (a metrics listener is configured).
    pub enabled: bool,
    /// The process's shared metrics (config store, balancer).
    pub shared: Arc<shardgate_metrics::Metrics>,
    /// Command names by registry index.
    names: Vec<&'static str>,
    /// Per command spec, by registry index; the last is `other`.
    commands: Vec<CommandMetrics>,
    /// Per namespace: database → collection → latency.
    namespaces: RwLock<HashMap<String, HashMap<String, Arc<Histogram>>>>,
    /// How many namespaces have a label.
    labelled: AtomicU64,
    /// Namespaces past the cap.
    other_namespace: Histogram,
    /// Per shard by name.
    shards: RwLock<HashMap<String, Arc<ShardMetrics>>>,
    /// Operations by [`Targeting`].
    targeting: [AtomicU64; 3],
    /// Documents returned to clients in cursor batches.
    pub documents_returned: AtomicU64,
    /// Retryable writes answered from the retry cache.
    pub retry_replays: AtomicU64,
    /// Operations logged as slow.
    pub slow_operations: AtomicU64,
    /// The routing table was loaded at start.
    pub routing_loaded: AtomicBool,
}

impl RouterMetrics {
    /// Metrics for a router; `enabled` when they are served.
    /// `names` are the registry's command names, in its order.
    pub(crate) fn new(
        enabled: bool,
        shared: Arc<shardgate_metrics::Metrics>,
        names: Vec<&'static str>,
    ) -> RouterMetrics {
        let n = names.len() + 1;
        RouterMetrics {
            enabled,
            shared,
            names,
            commands: (0..n).map(|_| CommandMetrics::default()).collect(),
            namespaces: Default::default(),
            labelled: AtomicU64::new(0),
            other_namespace: Histogram::default(),
            shards: Default::default(),
            targeting: Default::default(),
            documents_returned: AtomicU64::new(0),
            retry_replays: AtomicU64::new(0),
            slow_operations: AtomicU64::new(0),
            routing_loaded: AtomicBool::new(false),
        }
    }

    /// The handle of a command by registry index (`None`: unknown).
    pub(crate) fn command(&self, index: Option<usize>) -> Option<&CommandMetrics> {
        let i = index.unwrap_or(self.commands.len().saturating_sub(1));
        self.commands.get(i).or(self.commands.last())
    }

    /// Records one operation on `db.coll`.
    pub(crate) fn namespace(&self, db: &str, coll: &str, took: Duration) {
        let found = self
            .namespaces
            .read()
            .ok()
            .and_then(|m| m.get(db).and_then(|c| c.get(coll)).cloned());
        if let Some(h) = found {
            return h.observe(took);
        }
        if self.labelled.load(Ordering::Relaxed) >= MAX_NAMESPACES as u64 {
            return self.other_namespace.observe(took);
        }
        let Ok(mut m) = self.namespaces.write() else {
            return self.other_namespace.observe(took);
        };
        let labelled = &self.labelled;
        let colls = m.entry(db.to_owned()).or_default();
        let h = match colls.get(coll) {
            Some(h) => h.clone(),
            None if labelled.load(Ordering::Relaxed) < MAX_NAMESPACES as u64 => {
                labelled.fetch_add(1, Ordering::Relaxed);
                colls.entry(coll.to_owned()).or_default().clone()
            }
            None => return self.other_namespace.observe(took),
        };
        h.observe(took);
    }

    /// The handle of `shard`, made on its first round trip.
    pub(crate) fn shard(&self, shard: &str) -> Arc<ShardMetrics> {
        if let Some(s) = self.shards.read().ok().and_then(|m| m.get(shard).cloned()) {
            return s;
        }
        let make = || {
            Arc::new(ShardMetrics {
                shard: shard.to_owned(),
                round_trip: Histogram::default(),
                errors: AtomicU64::new(0),
            })
        };
        match self.shards.write() {
            Ok(mut m) => m.entry(shard.to_owned()).or_insert_with(make).clone(),
            Err(_) => make(),
        }
    }

    /// Counts one operation's targeting.
    pub(crate) fn targeted(&self, t: Targeting) {
        self.targeting[t as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Records one finished operation (when metrics are on) and says where it
/// went and how many documents it returned.
pub(crate) fn record(
    metrics: &RouterMetrics,
    command: Option<usize>,
    namespace: (&str, Option<&str>),
    took: Duration,
    trace: &trace::Trace,
    reply: Option<&crate::session::Reply>,
) -> (Targeting, u64) {
    let targeting = match trace.shard_count() {
        0 => Targeting::Router,
        1 => Targeting::Targeted,
        _ => Targeting::Scatter,
    };
    let docs = reply.map_or(0, documents_in);
    if !metrics.enabled {
        return (targeting, docs);
    }
    if let Some(c) = metrics.command(command) {
        c.total.observe(took);
        c.router.observe(took.saturating_sub(trace.shard_wall()));
    }
    if let (db, Some(coll)) = namespace {
        metrics.namespace(db, coll, took);
    }
    metrics.targeted(targeting);
    metrics
        .documents_returned
        .fetch_add(docs, Ordering::Relaxed);
    (targeting, docs)
}

/// Documents in a cursor reply's batch (0 for any other reply).
fn documents_in(reply: &crate::session::Reply) -> u64 {
    let body = match reply {
        crate::session::Reply::Body(b) => bson::RawDocument::from_bytes(b).ok(),
        crate::session::Reply::Msg(m) => Some(m.body()),
    };
    body.map_or(0, batch_len)
}

/// Documents in the batch of a cursor reply `body` (0 for any other reply).
pub(crate) fn batch_len(body: &bson::RawDocument) -> u64 {
    let Ok(cursor) = body.get_document("cursor") else {
        return 0;
    };
    let batch = cursor
        .get_array("firstBatch")
        .or_else(|_| cursor.get_array("nextBatch"));
    // Counted by walking element headers only: a batch can hold 16 MB of
    // documents, and this runs on every shard reply.
    let Ok(batch) = batch else { return 0 };
    let Ok(mut items) = shardgate_wire::raw::Elements::new(batch.as_bytes()) else {
        return batch.into_iter().count() as u64;
    };
    let mut n = 0;
    while let Ok(Some(_)) = items.next_value() {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use bson::{doc, RawDocumentBuf};

    #[test]
    fn a_batch_is_counted_by_its_elements() {
        let reply = |field: &str, n: i32| {
            let docs: Vec<bson::Bson> = (0..n)
                .map(|i| doc! {"_id": i, "a": [1, 2]}.into())
                .collect();
            RawDocumentBuf::try_from(
                &doc! {"cursor": {"id": 0i64, "ns": "d.c", field: docs}, "ok": 1},
            )
            .unwrap()
        };
        assert_eq!(super::batch_len(&reply("firstBatch", 0)), 0);
        assert_eq!(super::batch_len(&reply("firstBatch", 3)), 3);
        assert_eq!(super::batch_len(&reply("nextBatch", 1001)), 1001);
        let other = RawDocumentBuf::try_from(&doc! {"n": 2, "ok": 1}).unwrap();
        assert_eq!(super::batch_len(&other), 0);
    }
}
