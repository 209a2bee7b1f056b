//! The measuring loop: client tasks drawing operations from the mix until
//! the deadline, each keeping its own per-operation statistics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::Collection;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::mix::{Mix, Op, Rng};

/// The 100-byte string every bench document carries.
pub const PAYLOAD: &str = concat!(
    "shardgate-bench-payload-0123456789-abcdefghijklmnopqrstuvwxyz-",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789xy"
);

/// How long an operation still in flight at the deadline may take before it
/// is abandoned and counted as an error.
const GRACE: Duration = Duration::from_secs(10);

/// A bench document: `{_id: key (when asked), key, cat: key % 10, payload}`.
pub fn bench_doc(key: i64, with_id: bool) -> Document {
    let mut d = Document::new();
    if with_id {
        d.insert("_id", key);
    }
    d.insert("key", key);
    d.insert("cat", key.rem_euclid(10));
    d.insert("payload", PAYLOAD);
    d
}

/// What one operation type did on one endpoint.
#[derive(Debug, Clone, Default)]
pub struct OpStats {
    /// Latencies (µs) of the operations that succeeded.
    pub latency: Histogram,
    /// Operations that failed.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Documents inserted by the operations that succeeded.
    pub docs_inserted: u64,
}

impl OpStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &OpStats) {
        self.latency.merge(&other.latency);
        self.errors += other.errors;
        self.docs_inserted += other.docs_inserted;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    fn fail(&mut self, message: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

/// Statistics per operation, indexed by [`Op::index`].
pub type Stats = [OpStats; 4];

/// What every client of one endpoint shares.
pub struct Workload {
    /// The collection under test (one driver client behind it).
    pub coll: Collection<Document>,
    /// The operation mix.
    pub mix: Mix,
    /// Documents loaded: `find_by_key` reads keys in `0..docs`.
    pub docs: u64,
    /// Documents per `insert_batch`.
    pub batch_size: usize,
    /// The next fresh key for inserts.
    pub next_key: AtomicI64,
}

impl Workload {
    /// Runs one operation; returns the documents it inserted.
    async fn execute(&self, op: Op, rng: &mut Rng) -> mongodb::error::Result<u64> {
        match op {
            Op::FindByKey => {
                let key = rng.below(self.docs.max(1)) as i64;
                self.coll.find_one(doc! {"key": key}).await?;
                Ok(0)
            }
            Op::ScatterSortedFind => {
                let cat = rng.below(10) as i64;
                let cursor = self
                    .coll
                    .find(doc! {"cat": cat})
                    .sort(doc! {"key": -1})
                    .limit(20)
                    .await?;
                let _: Vec<Document> = cursor.try_collect().await?;
                Ok(0)
            }
            Op::Insert => {
                let key = self.next_key.fetch_add(1, Ordering::Relaxed);
                self.coll.insert_one(bench_doc(key, false)).await?;
                Ok(1)
            }
            Op::InsertBatch => {
                let n = self.batch_size.max(1);
                let first = self.next_key.fetch_add(n as i64, Ordering::Relaxed);
                let docs = (first..first + n as i64).map(|k| bench_doc(k, false));
                let done = self.coll.insert_many(docs).await?;
                Ok(done.inserted_ids.len() as u64)
            }
        }
    }
}

/// A driver error on one line, at most 300 characters: code, name and
/// message for server errors, the driver's text otherwise.
pub fn short_error(e: &mongodb::error::Error) -> String {
    use mongodb::error::{ErrorKind, WriteFailure};
    let text = match &*e.kind {
        ErrorKind::Command(c) => format!("error {} ({}): {}", c.code, c.code_name, c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            format!("write error {}: {}", w.code, w.message)
        }
        ErrorKind::InsertMany(m) => match m.write_errors.as_deref().and_then(|w| w.first()) {
            Some(w) => format!(
                "write error {} at document {}: {}",
                w.code, w.index, w.message
            ),
            None => e.to_string(),
        },
        ErrorKind::ServerSelection { message, .. } => {
            format!("no server available: {message}")
        }
        _ => e.to_string(),
    };
    let text = text.replace('\n', " ");
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// One client: operations back to back until `deadline`; those started
/// before `measure_from` (the warm-up) are not recorded.
async fn client_loop(
    w: Arc<Workload>,
    seed: u64,
    measure_from: Instant,
    deadline: Instant,
) -> Stats {
    let mut rng = Rng::new(seed);
    let mut stats: Stats = Default::default();
    loop {
        let start = Instant::now();
        if start >= deadline {
            break;
        }
        let op = w.mix.pick(&mut rng);
        let outcome = tokio::time::timeout_at(deadline + GRACE, w.execute(op, &mut rng)).await;
        let micros = start.elapsed().as_micros() as u64;
        let recording = start >= measure_from;
        let s = &mut stats[op.index()];
        match outcome {
            Ok(Ok(docs)) if recording => {
                s.latency.record(micros);
                s.docs_inserted += docs;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if recording => s.fail(short_error(&e)),
            Ok(Err(_)) => {}
            Err(_) => {
                s.fail(format!(
                    "still running {}s after the end of the run; abandoned",
                    GRACE.as_secs()
                ));
                break;
            }
        }
    }
    stats
}

/// Runs `clients` client tasks: `warmup`, then `duration` measured. Returns
/// the merged statistics and the measured wall time (from the end of the
/// warm-up until the last client stopped).
pub async fn run_clients(
    workload: Arc<Workload>,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    seed: u64,
) -> (Stats, Duration) {
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + duration;
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|i| {
            let seed = seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407);
            tokio::spawn(client_loop(workload.clone(), seed, measure_from, deadline))
        })
        .collect();
    let mut total: Stats = Default::default();
    for task in tasks {
        match task.await {
            Ok(stats) => {
                for (t, s) in total.iter_mut().zip(&stats) {
                    t.merge(s);
                }
            }
            Err(e) => total[0].fail(format!("client task failed: {e}")),
        }
    }
    let measured = Instant::now().saturating_duration_since(measure_from);
    (total, measured)
}
