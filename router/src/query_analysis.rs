//! Query sampling for `analyzeShardKey` (mongos ≥ 7.0).
//!
//! `configureQueryAnalyzer` turns sampling on for a collection (sharded or
//! not) at a cluster-wide `samplesPerSecond`, kept in the config store as
//! the `config.queryAnalyzers` document. Every router takes an equal share
//! of that rate (mongos weighs the shares by each router's query rate) and
//! samples the commands it routes through a token bucket per collection
//! (burst twice the rate, at least 1), as mongos does:
//!
//! - reads: `find`, `aggregate` (not `explain`), `count`, `distinct`, as
//!   `{filter, collation, let}`;
//! - writes: every `update` and `delete` statement on its own, and
//!   `findAndModify`, as the command with that one statement. Inserts are
//!   never sampled.
//!
//! A sample is stored as on a mongod, `{_id: sampleId, ns, collectionUuid,
//! cmdName, cmd, expireAt}`, in `config.sampledQueries` on the database's
//! primary shard, with the TTL index mongod uses (7 days). A sampled update
//! that changed a document also leaves its diff in
//! `config.sampledQueriesDiff` (the fields whose values changed, from the
//! document before and after), from which `analyzeShardKey` counts shard
//! key updates. Samples are buffered and written every second.
//!
//! `$listSampledQueries` reads them back from every shard;
//! `analyzeShardKey` classifies them against a candidate key
//! ([`distribution`]).

mod configure;
pub(crate) mod distribution;
mod sampled;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use tokio::sync::watch;

pub(crate) use configure::{configure, list_sampled_queries};
pub(crate) use sampled::Pending;

use crate::error::Result;
use crate::session::{Reply, Request};
use crate::state::RouterState;

/// How long a sample is kept (`queryAnalysisSampleExpirationSecs`).
const EXPIRATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often buffered samples are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often the share of the rate is recomputed (routers come and go).
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// The collection samples are stored in, on a shard's `config` database.
pub(crate) const SAMPLES: &str = "sampledQueries";
/// The collection update diffs are stored in.
pub(crate) const DIFFS: &str = "sampledQueriesDiff";

/// The collections this router samples, and the samples waiting to be
/// written.
#[derive(Default)]
pub(crate) struct QueryAnalyzers {
    /// Whether any collection is sampled (the one check on every request).
    any: AtomicBool,
    active: RwLock<HashMap<String, Arc<Analyzer>>>,
    pending: Mutex<Vec<Pending>>,
    /// Shards whose sample collections have their TTL index.
    indexed: Mutex<HashSet<String>>,
}

/// One sampled collection.
pub(crate) struct Analyzer {
    pub ns: String,
    pub uuid: bson::Uuid,
    /// This router's share of `samplesPerSecond`.
    pub rate: f64,
    pub start: bson::DateTime,
    bucket: Mutex<Bucket>,
    reads: AtomicI64,
    writes: AtomicI64,
}

/// A token bucket: `rate` tokens a second, up to `burst`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Analyzer {
    fn new(ns: &str, uuid: bson::Uuid, rate: f64, start: bson::DateTime) -> Analyzer {
        Analyzer {
            ns: ns.to_owned(),
            uuid,
            rate,
            start,
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
            reads: AtomicI64::new(0),
            writes: AtomicI64::new(0),
        }
    }

    /// Takes a token if one is there.
    fn take(&self) -> bool {
        let burst = (2.0 * self.rate).max(1.0);
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 - 1e-9 {
            b.tokens = (b.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// The `$currentOp` entry of a router's query analyzer.
    pub(crate) fn current_op(&self) -> Document {
        doc! {
            "desc": "query analyzer",
            "ns": &self.ns,
            "collUuid": self.uuid,
            "samplesPerSecond": self.rate,
            "startTime": self.start,
            "sampledReadsCount": self.reads.load(Ordering::Relaxed),
            "sampledWritesCount": self.writes.load(Ordering::Relaxed),
        }
    }
}

impl QueryAnalyzers {
    /// The analyzer of `ns`, when sampling is on for it.
    fn get(&self, ns: &str) -> Option<Arc<Analyzer>> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ns)
            .cloned()
    }

    /// Every collection this router samples.
    pub(crate) fn all(&self) -> Vec<Arc<Analyzer>> {
        let mut all: Vec<_> = self
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.ns.cmp(&b.ns));
        all
    }

    /// `serverStatus`'s `queryAnalyzers` section.
    pub(crate) fn server_status(&self) -> Document {
        let all = self.all();
        doc! {
            "activeCollections": all.len() as i64,
            "totalCollections": all.len() as i64,
            "totalSampledReadsCount": all.iter().map(|a| a.reads.load(Ordering::Relaxed)).sum::<i64>(),
            "totalSampledWritesCount": all.iter().map(|a| a.writes.load(Ordering::Relaxed)).sum::<i64>(),
        }
    }

    /// Rereads the configuration: the collections in mode `full`, each at
    /// its rate divided among the live routers. Counters and buckets of
    /// collections that stay (same UUID and start) are kept.
    pub(crate) async fn reload(&self, state: &RouterState) -> Result<()> {
        let docs = state.catalog.query_analyzers().await?;
        let routers = state.catalog.routers().await?.len().max(1);
        let old = self
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut next = HashMap::new();
        for d in docs
            .iter()
            .filter(|d| d.get_str("mode").ok() == Some("full"))
        {
            let (Ok(ns), Some(uuid)) = (d.get_str("_id"), uuid(d.get("collUuid"))) else {
                continue;
            };
            let rate = number(d.get("samplesPerSecond")).unwrap_or(0.0) / routers as f64;
            let start = d
                .get_datetime("startTime")
                .copied()
                .unwrap_or(bson::DateTime::now());
            let analyzer = match old.get(ns) {
                Some(a) if a.uuid == uuid && a.start == start && a.rate == rate => a.clone(),
                Some(a) if a.uuid == uuid && a.start == start => {
                    let fresh = Analyzer::new(ns, uuid, rate, start);
                    fresh
                        .reads
                        .store(a.reads.load(Ordering::Relaxed), Ordering::Relaxed);
                    fresh
                        .writes
                        .store(a.writes.load(Ordering::Relaxed), Ordering::Relaxed);
                    Arc::new(fresh)
                }
                _ => Arc::new(Analyzer::new(ns, uuid, rate, start)),
            };
            next.insert(ns.to_owned(), analyzer);
        }
        self.any.store(!next.is_empty(), Ordering::Relaxed);
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// The samples `req` on `db` gives, taking tokens; `None` (at the cost
    /// of one atomic load) while nothing is sampled.
    pub(crate) fn choose(&self, req: &Request<'_>, db: &str) -> Option<Vec<Pending>> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let coll = sampled::collection(req)?;
        let analyzer = self.get(&format!("{db}.{coll}"))?;
        let chosen = sampled::choose(&analyzer, req, db, || analyzer.take());
        for p in &chosen {
            let counter = if p.is_write() {
                &analyzer.writes
            } else {
                &analyzer.reads
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        (!chosen.is_empty()).then_some(chosen)
    }

    /// Queues samples (and diffs) for the writer.
    pub(crate) fn queue(&self, samples: Vec<Pending>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < 100_000 {
            pending.extend(samples);
        }
    }

    fn take_pending(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A UUID field (binary subtype 4, or 3 from older writers).
pub(crate) fn uuid(v: Option<&Bson>) -> Option<bson::Uuid> {
    match v? {
        Bson::Binary(b) => <[u8; 16]>::try_from(b.bytes.as_slice())
            .ok()
            .map(bson::Uuid::from_bytes),
        _ => None,
    }
}

/// A number field as a double.
pub(crate) fn number(v: Option<&Bson>) -> Option<f64> {
    match v? {
        Bson::Double(d) => Some(*d),
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

/// Runs a routed command with sampling around it: the samples are chosen
/// before it runs, and queued after (an update's with its diff).
pub(crate) async fn sampled<F>(
    state: &Arc<RouterState>,
    req: &Request<'_>,
    db: &str,
    run: F,
) -> Result<Reply>
where
    F: std::future::Future<Output = Result<Reply>>,
{
    let Some(mut samples) = state.query_analyzers.choose(req, db) else {
        return run.await;
    };
    // Boxed: they read through the router, and futures nest in every
    // request's.
    let before = Box::pin(sampled::pre_images(state, req, &mut samples)).await;
    let reply = run.await;
    if reply.is_ok() {
        Box::pin(sampled::diffs(state, req, &mut samples, before)).await;
        state.query_analyzers.queue(samples);
    }
    reply
}

/// After a `drop`, `dropDatabase` or `renameCollection` that succeeded,
/// forgets the query analyzers of what it removed (`from`: the dropped or
/// renamed namespace, or `db.` for a whole database), as mongos's config
/// server does.
pub(crate) async fn forget(state: &RouterState, from: &str, reply: &Result<Reply>) {
    let ok = match reply {
        Ok(Reply::Msg(m)) => {
            m.body()
                .get("ok")
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v).ok())
                .and_then(|v| number(Some(&v)))
                == Some(1.0)
        }
        Ok(Reply::Body(_)) => true,
        Err(_) => false,
    };
    if !ok {
        return;
    }
    let Ok(docs) = state.catalog.query_analyzers().await else {
        return;
    };
    let mut changed = false;
    for d in docs {
        let Ok(ns) = d.get_str("_id") else { continue };
        let gone = if from.ends_with('.') {
            ns.starts_with(from)
        } else {
            ns == from
        };
        if gone && state.catalog.delete_query_analyzer(ns).await.is_ok() {
            changed = true;
        }
    }
    if changed {
        let _ = state.query_analyzers.reload(state).await;
    }
}

/// After a resharding gave `ns` a new UUID: its query analyzer follows,
/// so sampling goes on for the new incarnation (as mongos's resharding
/// coordinator rewrites `collUuid`).
pub(crate) async fn follow_uuid(state: &RouterState, ns: &str) {
    let Ok(docs) = state.catalog.query_analyzers().await else {
        return;
    };
    let Some(mut d) = docs.into_iter().find(|d| d.get_str("_id").ok() == Some(ns)) else {
        return;
    };
    let Ok(current) = configure::collection_uuid(state, ns).await else {
        return;
    };
    if uuid(d.get("collUuid")) == Some(current) {
        return;
    }
    d.insert("collUuid", current);
    if state.catalog.put_query_analyzer(ns, &d).await.is_ok() {
        let _ = state.query_analyzers.reload(state).await;
    }
}

/// Writes buffered samples every second, and recomputes this router's
/// share of each rate every ten, until shutdown.
pub(crate) async fn run(state: Arc<RouterState>, mut shutdown: watch::Receiver<bool>) {
    let mut last_refresh = Instant::now();
    if let Err(e) = state.query_analyzers.reload(&state).await {
        tracing::debug!(error = %e, "reading the query analyzers failed");
    }
    loop {
        let stop = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => true,
            _ = tokio::time::sleep(FLUSH_EVERY) => false,
        };
        flush(&state).await;
        if stop {
            return;
        }
        if last_refresh.elapsed() >= REFRESH_EVERY {
            last_refresh = Instant::now();
            if let Err(e) = state.query_analyzers.reload(&state).await {
                tracing::debug!(error = %e, "reading the query analyzers failed");
            }
        }
    }
}

/// Writes every buffered sample to its database's primary shard.
pub(crate) async fn flush(state: &RouterState) {
    let pending = state.query_analyzers.take_pending();
    if pending.is_empty() {
        return;
    }
    let mut by_db: HashMap<String, (Vec<Document>, Vec<Document>)> = HashMap::new();
    for p in pending {
        let entry = by_db.entry(p.db.clone()).or_default();
        entry.0.push(p.sample);
        entry.1.extend(p.diff);
    }
    for (db, (samples, diffs)) in by_db {
        let Some(primary) = state.placement.cached(&db) else {
            continue;
        };
        let Ok(shard) = state.placement.shard(&primary.primary) else {
            continue;
        };
        if let Err(e) = write(state, &shard, samples, diffs).await {
            tracing::warn!(%db, error = %e, "storing sampled queries failed; they are dropped");
        }
    }
}

async fn write(
    state: &RouterState,
    shard: &shardgate_config_store::ShardType,
    samples: Vec<Document>,
    diffs: Vec<Document>,
) -> Result<()> {
    let fresh = state
        .query_analyzers
        .indexed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(shard.id.clone());
    if fresh {
        for (coll, name) in [
            (SAMPLES, "SampledQueriesTTLIndex"),
            (DIFFS, "SampledQueriesDiffTTLIndex"),
        ] {
            let create = doc! {
                "createIndexes": coll,
                "indexes": [{"key": {"expireAt": 1}, "name": name, "expireAfterSeconds": 0}],
                "$db": "config",
            };
            crate::shards::run_on_shard(state, shard, create).await?;
        }
    }
    for (coll, docs) in [(SAMPLES, samples), (DIFFS, diffs)] {
        if docs.is_empty() {
            continue;
        }
        // Unordered: a duplicate sample id (never expected) skips one.
        let insert = doc! {"insert": coll, "documents": docs, "ordered": false, "$db": "config"};
        crate::shards::run_on_shard(state, shard, insert).await?;
    }
    Ok(())
}

/// When a sample expires, from now.
fn expire_at() -> bson::DateTime {
    bson::DateTime::from_millis(
        bson::DateTime::now().timestamp_millis() + EXPIRATION.as_millis() as i64,
    )
}
