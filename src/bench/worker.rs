//! The measuring loop: client tasks drawing operations from the mix until
//! the window ends, each keeping its own per-operation statistics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document, RawDocumentBuf};
use futures::TryStreamExt;
use mongodb::Collection;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::mix::{Mix, Op, Rng};
use super::window::{Progress, Window};

/// The 100-byte string every bench document carries by default.
pub const PAYLOAD: &str = concat!(
    "shardgate-bench-payload-0123456789-abcdefghijklmnopqrstuvwxyz-",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789xy"
);

/// How long an operation still in flight at the deadline may take before it
/// is abandoned and counted as an error.
const GRACE: Duration = Duration::from_secs(10);

/// A payload of `bytes` bytes: [`PAYLOAD`] repeated and cut.
pub fn payload(bytes: usize) -> String {
    PAYLOAD.chars().cycle().take(bytes).collect()
}

/// A bench document: `{_id: key (when asked), key, cat: key % 10, payload}`.
pub fn bench_doc(key: i64, with_id: bool, payload: &str) -> Document {
    let mut d = Document::new();
    if with_id {
        d.insert("_id", key);
    }
    d.insert("key", key);
    d.insert("cat", key.rem_euclid(10));
    d.insert("payload", payload);
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
    /// Documents read by the scans that succeeded.
    pub docs_read: u64,
}

impl OpStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &OpStats) {
        self.latency.merge(&other.latency);
        self.errors += other.errors;
        self.docs_inserted += other.docs_inserted;
        self.docs_read += other.docs_read;
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
pub type Stats = [OpStats; 6];

/// What one successful operation did to the documents.
#[derive(Debug, Clone, Copy, Default)]
struct Done {
    inserted: u64,
    read: u64,
}

/// What every client of one endpoint shares.
pub struct Workload {
    /// The collection under test (one driver client behind it).
    pub coll: Collection<Document>,
    /// The operation mix.
    pub mix: Mix,
    /// Documents loaded: `find_by_key` and `update` use keys in `0..docs`.
    pub docs: u64,
    /// Documents per `insert_batch`.
    pub batch_size: usize,
    /// The payload of new documents.
    pub payload: String,
    /// The next fresh key for inserts.
    pub next_key: AtomicI64,
    /// Documents inserted by every acknowledged insert, recorded or not.
    pub inserted: AtomicU64,
}

impl Workload {
    /// Runs one operation.
    async fn execute(&self, op: Op, rng: &mut Rng) -> Result<Done, String> {
        let e = |e: mongodb::error::Error| short_error(&e);
        let inserted = |n| Done {
            inserted: n,
            read: 0,
        };
        match op {
            Op::FindByKey => {
                let key = rng.below(self.docs.max(1)) as i64;
                self.coll.find_one(doc! {"key": key}).await.map_err(e)?;
                Ok(Done::default())
            }
            Op::ScatterSortedFind => {
                let cat = rng.below(10) as i64;
                let cursor = self
                    .coll
                    .find(doc! {"cat": cat})
                    .sort(doc! {"key": -1})
                    .limit(20)
                    .await
                    .map_err(e)?;
                let _: Vec<Document> = cursor.try_collect().await.map_err(e)?;
                Ok(Done::default())
            }
            Op::Insert => {
                let key = self.next_key.fetch_add(1, Ordering::Relaxed);
                let d = bench_doc(key, false, &self.payload);
                self.coll.insert_one(d).await.map_err(e)?;
                Ok(inserted(1))
            }
            Op::InsertBatch => {
                let n = self.batch_size.max(1);
                let first = self.next_key.fetch_add(n as i64, Ordering::Relaxed);
                let docs = (first..first + n as i64).map(|k| bench_doc(k, false, &self.payload));
                let done = self.coll.insert_many(docs).await.map_err(e)?;
                Ok(inserted(done.inserted_ids.len() as u64))
            }
            Op::Update => {
                let key = rng.below(self.docs.max(1)) as i64;
                let update = doc! {"$inc": {"n": 1}};
                self.coll
                    .update_one(doc! {"key": key}, update)
                    .await
                    .map_err(e)?;
                Ok(Done::default())
            }
            Op::SortedScan => Ok(Done {
                inserted: 0,
                read: self.sorted_scan().await?,
            }),
        }
    }

    /// `find({}).sort({key: 1})` read to the end without decoding the
    /// documents; fails if a key comes out of order.
    async fn sorted_scan(&self) -> Result<u64, String> {
        let raw = self.coll.clone_with_type::<RawDocumentBuf>();
        let mut cursor = raw
            .find(doc! {})
            .sort(doc! {"key": 1})
            .await
            .map_err(|e| short_error(&e))?;
        let (mut read, mut last) = (0u64, i64::MIN);
        while cursor.advance().await.map_err(|e| short_error(&e))? {
            if let Ok(key) = cursor.current().get_i64("key") {
                if key < last {
                    return Err(format!(
                        "document {read} out of order: key {key} after {last}"
                    ));
                }
                last = key;
            }
            read += 1;
        }
        Ok(read)
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

/// One client: operations back to back until the window ends; those that
/// start outside the window are not recorded.
async fn client_loop(w: Arc<Workload>, window: Arc<Window>, seed: u64) -> Stats {
    let mut rng = Rng::new(seed);
    let mut stats: Stats = Default::default();
    loop {
        let start = Instant::now();
        if window.ended(start) {
            break;
        }
        let op = w.mix.pick(&mut rng);
        let abandon = window.abandon_at(start, GRACE);
        let outcome = tokio::time::timeout_at(abandon, w.execute(op, &mut rng)).await;
        let micros = start.elapsed().as_micros() as u64;
        let recording = window.records(start);
        window.done.fetch_add(1, Ordering::Relaxed);
        let s = &mut stats[op.index()];
        match outcome {
            Ok(Ok(done)) => {
                w.inserted.fetch_add(done.inserted, Ordering::Relaxed);
                window.docs_read.fetch_add(done.read, Ordering::Relaxed);
                if recording {
                    s.latency.record(micros);
                    s.docs_inserted += done.inserted;
                    s.docs_read += done.read;
                }
            }
            Ok(Err(e)) => {
                window.failed.fetch_add(1, Ordering::Relaxed);
                if recording {
                    s.fail(e);
                }
            }
            Err(_) => {
                window.failed.fetch_add(1, Ordering::Relaxed);
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

/// Runs `clients` client tasks until `window` ends, printing a progress
/// line every few seconds as `label`. Returns the merged statistics.
pub async fn run_clients(
    workload: Arc<Workload>,
    window: Arc<Window>,
    clients: usize,
    label: &str,
    seed: u64,
) -> Stats {
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|i| {
            let seed = seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407);
            tokio::spawn(client_loop(workload.clone(), window.clone(), seed))
        })
        .collect();
    let (label, shown) = (label.to_owned(), window.clone());
    let _progress = Progress::start(move |elapsed| shown.progress_line(&label, elapsed));
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
    total
}
