//! The state of transactions the router keeps, below the protocols that
//! use it (`txn`): the registry of open transactions, each with its
//! participants; the statement running on a task ([`run`]); the
//! `ShardClient` wrapper that turns what the router sends during a
//! statement into a statement of its transaction (`client`); the cluster
//! time (`clock`); the `serverStatus.transactions` counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocument, RawDocumentBuf};

mod client;
mod clock;

pub(crate) use client::TxnShards;
pub(crate) use clock::{append_fields, ClusterClock};

tokio::task_local! {
    static CURRENT: Arc<Txn>;
    static OUTSIDE: ();
}

/// How long an open transaction may live, as mongod's
/// `transactionLifetimeLimitSeconds`.
pub(crate) const LIFETIME: Duration = Duration::from_secs(60);

/// The router's open transactions, one per session.
#[derive(Default)]
pub(crate) struct Transactions {
    pub(crate) open: Mutex<HashMap<String, Arc<Txn>>>,
    /// `serverStatus.transactions` counters.
    pub counters: Counters,
}

/// One transaction.
pub(crate) struct Txn {
    /// The session's `lsid`, as the client sent it.
    pub lsid: RawDocumentBuf,
    /// [`lsid_key`] of it.
    pub lsid_key: String,
    pub txn_number: i64,
    /// The read concern every participant starts with.
    pub read_concern: Option<Document>,
    pub started: Instant,

    pub(crate) inner: Mutex<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    participants: Vec<Participant>,
    state: TxnState,
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum TxnState {
    #[default]
    Open,
    Aborted,
    Committed,
}

/// A shard the transaction reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Participant {
    pub shard: String,
    pub host: String,
    /// A statement that writes reached it.
    pub wrote: bool,
}

/// The store-key form of an `lsid`: the hex of its bytes.
pub(crate) fn lsid_key(lsid: &RawDocument) -> String {
    lsid.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

impl Txn {
    /// A transaction the router runs itself (to move a document whose
    /// shard key changed): its own session, transaction 1.
    pub(crate) fn internal() -> Txn {
        let lsid = RawDocumentBuf::try_from(&doc! {"id": bson::Uuid::new()}).unwrap_or_default();
        Txn {
            lsid_key: lsid_key(&lsid),
            lsid,
            txn_number: 1,
            read_concern: None,
            started: Instant::now(),
            inner: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The participants so far, in the order they were reached.
    pub(crate) fn participants(&self) -> Vec<Participant> {
        self.lock().participants.clone()
    }

    pub(crate) fn state(&self) -> TxnState {
        self.lock().state
    }

    pub(crate) fn set_state(&self, s: TxnState) {
        self.lock().state = s;
    }

    /// Adds `shard` as a participant (a writer if `writes`); true when this
    /// is its first statement.
    pub(crate) fn join(&self, shard: &str, host: &str, writes: bool) -> bool {
        let mut inner = self.lock();
        if let Some(p) = inner.participants.iter_mut().find(|p| p.shard == shard) {
            p.wrote |= writes;
            return false;
        }
        inner.participants.push(Participant {
            shard: shard.to_owned(),
            host: host.to_owned(),
            wrote: writes,
        });
        true
    }

    /// The `recoveryToken` replies carry: the first participant.
    pub(crate) fn recovery_token(&self) -> Option<Document> {
        let inner = self.lock();
        let first = inner.participants.first()?;
        Some(doc! {"recoveryShardId": &first.shard})
    }
}

impl Transactions {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Txn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's transaction `txn_number`, if the router holds it.
    pub(crate) fn get(&self, lsid_key: &str, txn_number: i64) -> Option<Arc<Txn>> {
        self.lock()
            .get(lsid_key)
            .filter(|t| t.txn_number == txn_number)
            .cloned()
    }

    /// Every transaction held.
    pub(crate) fn all(&self) -> Vec<Arc<Txn>> {
        self.lock().values().cloned().collect()
    }

    /// Forgets `txn` (if it is still the session's).
    pub(crate) fn forget(&self, txn: &Txn) {
        let mut open = self.lock();
        if open
            .get(&txn.lsid_key)
            .is_some_and(|t| t.txn_number == txn.txn_number)
        {
            open.remove(&txn.lsid_key);
        }
    }

    /// How many are open now.
    pub(crate) fn open_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|t| t.state() == TxnState::Open)
            .count()
    }
}

/// Runs `f` (a statement's execution) as a statement of `txn`.
pub(crate) async fn run<F: std::future::Future>(txn: Arc<Txn>, f: F) -> F::Output {
    CURRENT.scope(txn, f).await
}

/// Runs `f` outside the transaction of the statement running on this
/// task: what it sends to shards is no statement of that transaction.
pub(crate) async fn outside<F: std::future::Future>(f: F) -> F::Output {
    OUTSIDE.scope((), f).await
}

/// The transaction of the statement running on this task, if any.
pub(crate) fn current() -> Option<Arc<Txn>> {
    if OUTSIDE.try_with(|_| ()).is_ok() {
        return None;
    }
    CURRENT.try_with(|t| t.clone()).ok()
}

/// How a transaction commits (`serverStatus.transactions.commitTypes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NoShards,
    SingleShard,
    SingleWriteShard,
    ReadOnly,
    /// Several writers that can prepare.
    TwoPhase,
    /// Several writers, one at least unable to prepare: the decision in
    /// the store, then each commits.
    Coordinated,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::NoShards, "noShards"),
    (Kind::SingleShard, "singleShard"),
    (Kind::SingleWriteShard, "singleWriteShard"),
    (Kind::ReadOnly, "readOnly"),
    (Kind::TwoPhase, "twoPhaseCommit"),
    (Kind::Coordinated, "coordinatedCommit"),
];

impl Kind {
    pub(crate) fn of(participants: &[Participant]) -> Kind {
        match (
            participants.len(),
            participants.iter().filter(|p| p.wrote).count(),
        ) {
            (0, _) => Kind::NoShards,
            (1, _) => Kind::SingleShard,
            (_, 0) => Kind::ReadOnly,
            (_, 1) => Kind::SingleWriteShard,
            _ => Kind::Coordinated,
        }
    }

    pub(crate) fn index(self) -> usize {
        KINDS.iter().position(|(k, _)| *k == self).unwrap_or(0)
    }
}

/// `serverStatus.transactions`.
#[derive(Default)]
pub(crate) struct Counters {
    started: AtomicU64,
    pub(crate) committed: AtomicU64,
    aborted: AtomicU64,
    /// Per kind: initiated, successful, successful duration (µs).
    pub(crate) kinds: [[AtomicU64; 3]; 6],
    /// Whether each shard has `prepareTransaction` (probed once).
    pub(crate) prepares: std::sync::Mutex<std::collections::HashMap<String, bool>>,
}

impl Counters {
    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn aborted(&self) {
        self.aborted.fetch_add(1, Ordering::Relaxed);
    }

    /// Per commit type: its name, commits initiated and successful.
    pub(crate) fn commit_types(&self) -> [(&'static str, u64, u64); 6] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        std::array::from_fn(|i| (KINDS[i].1, get(&self.kinds[i][0]), get(&self.kinds[i][1])))
    }

    /// The `transactions` section, with `open` transactions now.
    pub(crate) fn section(&self, open: usize) -> Document {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        let mut types = Document::new();
        for (i, (_, name)) in KINDS.iter().enumerate() {
            let k = &self.kinds[i];
            types.insert(
                *name,
                doc! {"initiated": get(&k[0]), "successful": get(&k[1]), "successfulDurationMicros": get(&k[2])},
            );
        }
        doc! {
            "currentOpen": open as i64,
            "currentActive": 0i64,
            "currentInactive": open as i64,
            "totalStarted": get(&self.started),
            "totalCommitted": get(&self.committed),
            "totalAborted": get(&self.aborted),
            "commitTypes": types,
        }
    }
}
