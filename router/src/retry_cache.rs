//! The router's record of retryable writes: the reply of each write command
//! sent with `lsid` + `txnNumber` (outside a transaction), kept so that a
//! driver's retry of the same command, after the reply was lost on the way
//! back, gets the recorded reply instead of running the write again.
//!
//! Shards keep such records too (per statement, with the `stmtIds` the
//! router sends), but a command the router split into several batches to
//! one shard, or a `bulkWrite` split into several commands, needs a shard
//! that records per statement; this record makes the retry exactly-once on
//! any shard as long as it comes back to this router. A retry that arrives
//! while the first attempt is still running waits for its reply.
//!
//! A record matches only the same command (a digest of the body without
//! the envelope fields a retry may change); entries expire after
//! [`LIFETIME`] and the table holds at most [`CAPACITY`] of them.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bson::RawDocument;
use shardgate_wire::OpMsg;
use tokio::sync::watch;

/// How long a record is kept (mongod keeps a session's records for its
/// 30-minute lifetime).
pub const LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Most records kept; the oldest go first.
pub const CAPACITY: usize = 10_000;

/// Body fields a driver may change between attempts of one write.
const ENVELOPE: [&str; 8] = [
    "lsid",
    "txnNumber",
    "$clusterTime",
    "$db",
    "$readPreference",
    "writeConcern",
    "comment",
    "apiVersion",
];

type Key = (Vec<u8>, i64);

enum State {
    Running(watch::Receiver<Option<Vec<u8>>>),
    Done(Vec<u8>),
}

struct Entry {
    digest: u64,
    at: Instant,
    state: State,
}

/// What a write command should do.
pub(crate) enum Claim {
    /// Not a retryable write: run it, record nothing.
    Untracked,
    /// First attempt: run it, then [`RetryCache::finish`] with the reply.
    Run(Ticket),
    /// A retry of a finished attempt: answer with this reply.
    Replay(Vec<u8>),
}

/// The right to record one command's reply.
pub(crate) struct Ticket {
    key: Key,
    done: watch::Sender<Option<Vec<u8>>>,
}

/// Records of retryable writes, by `(lsid, txnNumber)`.
#[derive(Default)]
pub(crate) struct RetryCache {
    entries: Mutex<Table>,
}

impl RetryCache {
    /// Looks up the command in `msg`; waits for a running first attempt.
    pub(crate) async fn claim(&self, msg: &OpMsg) -> Claim {
        let Some((key, digest)) = identity(msg) else {
            return Claim::Untracked;
        };
        loop {
            let mut wait = {
                let Ok(mut entries) = self.entries.lock() else {
                    return Claim::Untracked;
                };
                match entries.get(&key) {
                    Some(e) if e.digest != digest => {
                        // The same txnNumber for another write: not a retry.
                        return Claim::Untracked;
                    }
                    Some(Entry {
                        state: State::Done(reply),
                        ..
                    }) => return Claim::Replay(reply.clone()),
                    Some(Entry {
                        state: State::Running(rx),
                        ..
                    }) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        entries.insert(
                            key.clone(),
                            Entry {
                                digest,
                                at: Instant::now(),
                                state: State::Running(rx),
                            },
                        );
                        return Claim::Run(Ticket { key, done: tx });
                    }
                }
            };
            // A first attempt is running: wait for its reply (or for it to
            // give up, when the entry is gone and this attempt runs).
            let reply = wait
                .wait_for(|r| r.is_some())
                .await
                .ok()
                .and_then(|r| r.clone());
            if let Some(reply) = reply {
                return Claim::Replay(reply);
            }
        }
    }

    /// Records the reply of a first attempt; `None` when it failed in a way
    /// a retry must run again (nothing, or not everything, was applied for
    /// sure), which forgets the entry.
    pub(crate) fn finish(&self, ticket: Ticket, reply: Option<&[u8]>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        match reply {
            Some(reply) => {
                if let Some(e) = entries.map.get_mut(&ticket.key) {
                    // Keeps its place in the order: it expires from its start.
                    e.state = State::Done(reply.to_vec());
                }
                let _ = ticket.done.send(Some(reply.to_vec()));
            }
            None => {
                entries.map.remove(&ticket.key);
                // Dropping the sender wakes waiters, which then run.
            }
        }
    }

    /// Number of records held.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.map.len()).unwrap_or(0)
    }
}

/// The records and their insertion order (oldest first), so expiry and
/// eviction cost O(1) per insert.
#[derive(Default)]
struct Table {
    map: HashMap<Key, Entry>,
    order: VecDeque<(Key, Instant)>,
}

impl Table {
    fn get(&self, key: &Key) -> Option<&Entry> {
        self.map.get(key)
    }

    fn insert(&mut self, key: Key, entry: Entry) {
        self.prune();
        self.order.push_back((key.clone(), entry.at));
        self.map.insert(key, entry);
    }

    /// Drops expired records, then the oldest while over capacity; stops at
    /// an attempt still running.
    fn prune(&mut self) {
        let now = Instant::now();
        while let Some((key, at)) = self.order.front() {
            let current = self.map.get(key).filter(|e| e.at == *at);
            let Some(entry) = current else {
                // Removed, or re-inserted later: a stale position.
                self.order.pop_front();
                continue;
            };
            let old = now.duration_since(*at) >= LIFETIME || self.map.len() >= CAPACITY;
            if !old || matches!(entry.state, State::Running(_)) {
                break;
            }
            let (key, _) = self.order.pop_front().expect("front exists");
            self.map.remove(&key);
        }
    }
}

/// `(lsid id, txnNumber)` and the command digest, for a retryable write
/// outside a transaction.
fn identity(msg: &OpMsg) -> Option<(Key, u64)> {
    let body: &RawDocument = msg.body();
    if body.get("autocommit").ok().flatten().is_some() {
        return None;
    }
    let txn = match body.get("txnNumber").ok().flatten()? {
        bson::RawBsonRef::Int64(n) => n,
        bson::RawBsonRef::Int32(n) => i64::from(n),
        _ => return None,
    };
    let lsid = body.get_document("lsid").ok()?;
    let id = lsid.get("id").ok().flatten()?;
    let id_bytes = match id {
        bson::RawBsonRef::Binary(b) => b.bytes.to_vec(),
        _ => return None,
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in body.iter().flatten() {
        if ENVELOPE.contains(&k.as_str()) {
            continue;
        }
        k.as_str().hash(&mut h);
        raw_bytes(v).hash(&mut h);
    }
    for seq in &msg.sequences {
        seq.identifier.hash(&mut h);
        seq.documents.hash(&mut h);
    }
    Some(((id_bytes, txn), h.finish()))
}

/// The bytes of a value, for hashing (documents and arrays by their BSON).
fn raw_bytes(v: bson::RawBsonRef<'_>) -> Vec<u8> {
    let mut doc = bson::RawDocumentBuf::new();
    doc.append(bson::cstr!("v"), v);
    doc.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, spec::BinarySubtype, Binary};

    fn msg(txn: i64, n: i32) -> OpMsg {
        let lsid = doc! {"id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] }};
        let body = doc! {"insert": "c", "documents": [{"_id": n}], "lsid": lsid, "txnNumber": txn, "$db": "d"};
        OpMsg::from_body(body.to_vec().unwrap())
    }

    #[tokio::test]
    async fn a_retry_replays_and_another_write_runs() {
        let cache = RetryCache::default();
        let Claim::Run(ticket) = cache.claim(&msg(1, 1)).await else {
            panic!("first attempt runs")
        };
        cache.finish(ticket, Some(b"reply"));
        match cache.claim(&msg(1, 1)).await {
            Claim::Replay(r) => assert_eq!(r, b"reply"),
            _ => panic!("the retry replays"),
        }
        assert!(matches!(cache.claim(&msg(1, 2)).await, Claim::Untracked));
        assert!(matches!(cache.claim(&msg(2, 1)).await, Claim::Run(_)));
        let plain = OpMsg::from_body(doc! {"insert": "c", "$db": "d"}.to_vec().unwrap());
        assert!(matches!(cache.claim(&plain).await, Claim::Untracked));
    }

    #[tokio::test]
    async fn a_retry_waits_for_the_running_attempt() {
        let cache = std::sync::Arc::new(RetryCache::default());
        let Claim::Run(ticket) = cache.claim(&msg(5, 1)).await else {
            panic!()
        };
        let c2 = cache.clone();
        let retry = tokio::spawn(async move {
            match c2.claim(&msg(5, 1)).await {
                Claim::Replay(r) => r,
                _ => panic!("waits, then replays"),
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!retry.is_finished());
        cache.finish(ticket, Some(b"done"));
        assert_eq!(retry.await.unwrap(), b"done");
    }

    #[tokio::test]
    async fn a_failed_attempt_lets_the_retry_run() {
        let cache = RetryCache::default();
        let Claim::Run(ticket) = cache.claim(&msg(9, 1)).await else {
            panic!()
        };
        cache.finish(ticket, None);
        assert!(matches!(cache.claim(&msg(9, 1)).await, Claim::Run(_)));
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn the_table_stays_within_capacity() {
        let cache = RetryCache::default();
        for txn in 0..(CAPACITY as i64 + 50) {
            let Claim::Run(ticket) = cache.claim(&msg(txn, 1)).await else {
                panic!()
            };
            cache.finish(ticket, Some(b"r"));
        }
        assert!(cache.len() <= CAPACITY, "{}", cache.len());
        assert!(matches!(
            cache.claim(&msg(CAPACITY as i64 + 49, 1)).await,
            Claim::Replay(_)
        ));
        assert!(
            matches!(cache.claim(&msg(0, 1)).await, Claim::Run(_)),
            "the oldest went first"
        );
    }
}
