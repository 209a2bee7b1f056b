//! The router cursor manager: one client cursor id over several shard
//! cursors, merged (`merge`), in a table with per-connection limits and
//! idle reaping. It needs no router state: shard cursors carry their
//! client, and a stream's filter is a [`BatchFilter`].
//!
//! A `MergeCursor` keeps, per shard, the shard's cursor (a `ShardCursor`,
//! which sends `getMore` with the query's `lsid`) and what the merge has
//! buffered; each shard's next batch is asked for as soon as the last one
//! arrives, so the shards read while the router merges. A `PassThrough` cursor is a single shard's own cursor,
//! recorded so `getMore`/`killCursors` reach that shard. Cursors idle past
//! the timeout, and those last used by a closed connection, are killed on
//! every shard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{RawDocument, RawDocumentBuf};
use shardgate_config_store::ShardType;

use futures::future::BoxFuture;
use shardgate_shard_client::{ShardClient, ShardCursor, Target};

use crate::error::Result;
use merge::KWayMerge;

pub mod merge;

/// What the router does to each batch of one shard stream before the
/// merge takes it (keeping a shard's hashed orphans out: `read::orphans`).
pub(crate) trait BatchFilter: Send + Sync {
    /// The batch as the shard would have returned it without orphans.
    fn apply<'a>(
        &'a self,
        shard: &'a ShardType,
        docs: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<Vec<RawDocumentBuf>>>;
}

/// Largest batch the router returns (16 MB less room for the reply envelope).
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// One shard's part of a merged cursor.
pub(crate) struct ShardStream {
    /// The shard.
    pub shard: ShardType,
    /// The shard's cursor (`None` once exhausted or closed).
    pub cursor: Option<ShardCursor>,
    /// What the router does to each batch when the shard holds hashed
    /// orphans (`None`: the batch is used as it comes).
    pub filter: Option<Arc<dyn BatchFilter>>,
    /// The next batch, asked for while the merge works through this one,
    /// so a shard reads ahead instead of waiting for the merge (not inside
    /// a transaction, whose statements run one at a time; the cursor is in
    /// the task meanwhile).
    ahead: Option<Ahead>,
}

/// A `getMore` in flight, with the cursor it runs on.
type Ahead = tokio::task::JoinHandle<(
    ShardCursor,
    shardgate_shard_client::Result<Option<Vec<RawDocumentBuf>>>,
)>;

impl ShardStream {
    /// Runs `cmd` on `shard` (its later batches of `batch_size`, else as
    /// large as the shard makes them, up to 16 MB); returns
    /// the stream, its first batch as the merge takes it, and whether the
    /// shard's cursor is already exhausted.
    pub(crate) async fn open(
        client: Arc<dyn ShardClient>,
        shard: ShardType,
        cmd: &RawDocument,
        filter: Option<Arc<dyn BatchFilter>>,
        batch_size: Option<i64>,
    ) -> Result<(ShardStream, Vec<RawDocumentBuf>, bool)> {
        let target = Target {
            id: &shard.id,
            host: &shard.host,
        };
        let mut cursor = ShardCursor::open(client, target, cmd).await?;
        if let Some(n) = batch_size {
            cursor = cursor.batch_size(n);
        }
        let mut stream = ShardStream {
            shard,
            cursor: Some(cursor),
            filter,
            ahead: None,
        };
        let (docs, done) = stream.next().await?;
        Ok((stream, docs, done))
    }

    /// The next batch as the merge takes it, and whether it was the last;
    /// the one after it is then asked for ahead.
    async fn next(&mut self) -> Result<(Vec<RawDocumentBuf>, bool)> {
        let fetched = match self.ahead.take() {
            Some(task) => {
                let (cursor, fetched) = task.await.map_err(|e| {
                    crate::error::RouterError::command(1, "InternalError", e.to_string())
                })?;
                self.cursor = Some(cursor);
                fetched
            }
            None => match self.cursor.as_mut() {
                Some(cursor) => cursor.next_batch().await,
                None => return Ok((Vec::new(), true)),
            },
        };
        let docs = fetched?.unwrap_or_default();
        let done = self.cursor.as_ref().is_none_or(|c| c.id() == 0);
        if done {
            self.cursor = None;
        } else {
            self.fetch_ahead();
        }
        let docs = match &self.filter {
            Some(f) => f.apply(&self.shard, docs).await?,
            None => docs,
        };
        Ok((docs, done))
    }

    /// Sends the next `getMore` now, outside a transaction.
    fn fetch_ahead(&mut self) {
        if crate::transactions::current().is_some() {
            return;
        }
        if let Some(mut cursor) = self.cursor.take() {
            self.ahead = Some(tokio::spawn(async move {
                let fetched = cursor.next_batch().await;
                (cursor, fetched)
            }));
        }
    }

    /// Closes the shard's cursor if it is still open (after the `getMore`
    /// in flight, if any).
    pub(crate) async fn close(&mut self) {
        if let Some(task) = self.ahead.take() {
            if let Ok((cursor, _)) = task.await {
                self.cursor = Some(cursor);
            }
        }
        if let Some(cursor) = self.cursor.take() {
            cursor.kill().await;
        }
    }
}

/// A cursor merging shard streams.
pub(crate) struct MergeCursor {
    /// The streams, indexed like the merge's streams.
    pub streams: Vec<ShardStream>,
    /// The merge itself.
    pub merge: KWayMerge,
    /// Documents still to skip.
    pub skip: u64,
    /// Documents still to return (`None`: no limit).
    pub remaining: Option<u64>,
    /// A document held back because the previous batch was full.
    pub pending: Option<RawDocumentBuf>,
}

/// A stream of result documents the router produces batch by batch (an
/// aggregation's merge part: `read::pipeline`).
pub(crate) trait DocStream: Send {
    /// The next batch: at most `max_docs` documents (and about
    /// [`MAX_BATCH_BYTES`]); empty only when exhausted.
    fn next_batch(&mut self, max_docs: usize) -> BoxFuture<'_, Result<Vec<RawDocumentBuf>>>;
    /// Whether no more documents will come.
    fn is_exhausted(&self) -> bool;
    /// Releases what the stream holds on shards (cursors, temporary
    /// collections).
    fn close(&mut self) -> BoxFuture<'_, ()>;
}

impl DocStream for MergeCursor {
    fn next_batch(&mut self, max_docs: usize) -> BoxFuture<'_, Result<Vec<RawDocumentBuf>>> {
        Box::pin(MergeCursor::next_batch(self, max_docs))
    }
    fn is_exhausted(&self) -> bool {
        MergeCursor::is_exhausted(self)
    }
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for stream in &mut self.streams {
                stream.close().await;
            }
        })
    }
}

impl DocStream for std::collections::VecDeque<RawDocumentBuf> {
    fn next_batch(&mut self, max_docs: usize) -> BoxFuture<'_, Result<Vec<RawDocumentBuf>>> {
        let batch = drain_batch(self, max_docs);
        Box::pin(async move { Ok(batch) })
    }
    fn is_exhausted(&self) -> bool {
        self.is_empty()
    }
    fn close(&mut self) -> BoxFuture<'_, ()> {
        self.clear();
        Box::pin(async {})
    }
}

/// What a cursor id stands for.
pub(crate) enum CursorKind {
    /// Merged shard streams.
    Merge(Box<MergeCursor>),
    /// Results computed on the router, handed out in batches.
    Buffered(std::collections::VecDeque<RawDocumentBuf>),
    /// A single shard's own cursor.
    PassThrough(ShardType),
    /// Documents the router produces (an aggregation's merge part).
    Stream(Box<dyn DocStream>),
    /// A change stream merged from shard streams (`change_streams`).
    ChangeStream(Box<dyn StreamCursor>),
}

/// A cursor kind the table holds without knowing it: a change stream,
/// whose `getMore` its own module runs.
pub(crate) trait StreamCursor: Send {
    /// Closes its shard cursors.
    fn kill(&mut self) -> BoxFuture<'_, ()>;
    /// The cursor itself, for its module to downcast.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

/// An entry of the cursor table.
pub(crate) struct RouterCursor {
    /// What it is.
    pub kind: CursorKind,
    /// `db.coll`.
    pub ns: String,
    /// The connection that last used it.
    pub connection: i32,
    /// When it was last used.
    pub last_used: Instant,
}

/// Every open router cursor, by client cursor id.
#[derive(Default)]
pub(crate) struct CursorTable {
    cursors: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<RouterCursor>>>>,
    /// The connection that opened each cursor (for the per-connection limit).
    opened_by: Mutex<HashMap<i64, i32>>,
}

impl CursorTable {
    /// Registers a cursor under a fresh id (or the shard's id for a
    /// pass-through cursor) and returns the id.
    pub(crate) fn insert(&self, id: Option<i64>, cursor: RouterCursor) -> i64 {
        let Ok(mut map) = self.cursors.lock() else {
            return 0;
        };
        let id = id.unwrap_or_else(|| loop {
            let candidate = (rand_u64() >> 1) as i64;
            if candidate != 0 && !map.contains_key(&candidate) {
                break candidate;
            }
        });
        if let Ok(mut owners) = self.opened_by.lock() {
            owners.insert(id, cursor.connection);
        }
        map.insert(id, Arc::new(tokio::sync::Mutex::new(cursor)));
        id
    }

    /// Refuses a new cursor when `connection` already opened `max` that are
    /// still open.
    pub(crate) fn check_limit(&self, connection: i32, max: usize) -> crate::error::Result<()> {
        let open = self
            .opened_by
            .lock()
            .map(|m| m.values().filter(|c| **c == connection).count())
            .unwrap_or(0);
        if open >= max {
            return Err(crate::error::RouterError::command(
                96,
                "OperationFailed",
                format!("this connection has {open} open cursors, the router's limit (limits.max_cursors_per_connection); close some (killCursors) or exhaust them"),
            ));
        }
        Ok(())
    }

    /// The cursor with this id.
    pub(crate) fn get(&self, id: i64) -> Option<Arc<tokio::sync::Mutex<RouterCursor>>> {
        self.cursors.lock().ok()?.get(&id).cloned()
    }

    /// Forgets a cursor (its shard cursors must be closed by the caller).
    pub(crate) fn remove(&self, id: i64) -> Option<Arc<tokio::sync::Mutex<RouterCursor>>> {
        if let Ok(mut owners) = self.opened_by.lock() {
            owners.remove(&id);
        }
        self.cursors.lock().ok()?.remove(&id)
    }

    /// How many cursors are open.
    pub(crate) fn len(&self) -> usize {
        self.cursors.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Removes and returns the cursors matching `pred`.
    fn take_where(
        &self,
        mut pred: impl FnMut(&RouterCursor) -> bool,
    ) -> Vec<Arc<tokio::sync::Mutex<RouterCursor>>> {
        let Ok(mut map) = self.cursors.lock() else {
            return Vec::new();
        };
        let ids: Vec<i64> = map
            .iter()
            .filter(|(_, c)| c.try_lock().map(|c| pred(&c)).unwrap_or(false))
            .map(|(id, _)| *id)
            .collect();
        if let Ok(mut owners) = self.opened_by.lock() {
            for id in &ids {
                owners.remove(id);
            }
        }
        ids.iter().filter_map(|id| map.remove(id)).collect()
    }

    /// Kills the cursors last used by a closed connection.
    pub(crate) async fn kill_for_connection(&self, connection: i32) {
        for c in self.take_where(|c| c.connection == connection) {
            kill(&mut *c.lock().await).await;
        }
    }

    /// Kills cursors idle longer than `idle`.
    pub(crate) async fn kill_idle(&self, idle: Duration) {
        for c in self.take_where(|c| c.last_used.elapsed() > idle) {
            kill(&mut *c.lock().await).await;
        }
    }
}

/// A random 64-bit number (cursor ids must not be guessable in sequence).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Closes every shard cursor behind a router cursor.
pub(crate) async fn kill(cursor: &mut RouterCursor) {
    match &mut cursor.kind {
        CursorKind::Merge(m) => DocStream::close(m.as_mut()).await,
        CursorKind::Stream(s) => s.close().await,
        CursorKind::ChangeStream(s) => s.kill().await,
        CursorKind::Buffered(_) | CursorKind::PassThrough(_) => {}
    }
}

/// The next batch of buffered results: at most `max_docs` documents and
/// [`MAX_BATCH_BYTES`] (one document at least).
pub(crate) fn drain_batch(
    buffer: &mut std::collections::VecDeque<RawDocumentBuf>,
    max_docs: usize,
) -> Vec<RawDocumentBuf> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while out.len() < max_docs {
        let Some(next) = buffer.front() else { break };
        bytes += next.as_bytes().len();
        if bytes > MAX_BATCH_BYTES && !out.is_empty() {
            break;
        }
        out.extend(buffer.pop_front());
    }
    out
}

/// One shard stream just opened: the stream, its first batch, whether it
/// is already exhausted.
pub(crate) type Opened = (ShardStream, Vec<RawDocumentBuf>, bool);

impl MergeCursor {
    /// A merge over streams opened at once (`opened`, in stream order,
    /// merged by `spec` when sorted). A shard that failed is left out when
    /// `allow_partial` and its error is retryable (the flag returned says
    /// so); any other failure closes every opened stream and is returned.
    pub(crate) async fn from_opened(
        opened: Vec<Result<Opened>>,
        spec: Option<merge::SortSpec>,
        allow_partial: bool,
    ) -> Result<(MergeCursor, bool)> {
        let (mut streams, mut firsts) = (Vec::new(), Vec::new());
        let (mut failure, mut partial) = (None, false);
        for o in opened {
            match o {
                Ok((stream, docs, done)) => {
                    streams.push(stream);
                    firsts.push((docs, done));
                }
                Err(e) if allow_partial && e.is_retryable() => partial = true,
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            for mut stream in streams {
                stream.close().await;
            }
            return Err(e);
        }
        let mut merge = KWayMerge::new(streams.len(), spec);
        for (i, (docs, done)) in firsts.into_iter().enumerate() {
            merge.push(i, docs, done);
        }
        let cursor = MergeCursor {
            streams,
            merge,
            skip: 0,
            remaining: None,
            pending: None,
        };
        Ok((cursor, partial))
    }

    /// The next batch: at most `max_docs` documents and `MAX_BATCH_BYTES`.
    pub(crate) async fn next_batch(&mut self, max_docs: usize) -> Result<Vec<RawDocumentBuf>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_docs && self.remaining != Some(0) {
            let next = match self.pending.take() {
                Some(doc) => Some(doc),
                None => self.merge.pop_next(),
            };
            if let Some(doc) = next {
                if self.skip > 0 {
                    self.skip -= 1;
                    continue;
                }
                // A sorted merge cut `$sortKey` out as the document arrived.
                bytes += doc.as_bytes().len();
                if bytes > MAX_BATCH_BYTES && !out.is_empty() {
                    self.pending = Some(doc);
                    break;
                }
                out.push(doc);
                if let Some(r) = self.remaining.as_mut() {
                    *r -= 1;
                }
                continue;
            }
            let refill = self.merge.needs_refill();
            if refill.is_empty() {
                break; // every stream is drained
            }
            self.refill(&refill).await?;
        }
        Ok(out)
    }

    /// Whether no more documents will come.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.remaining == Some(0) || (self.pending.is_none() && self.merge.is_done())
    }

    /// Runs `getMore` on the given streams at once.
    async fn refill(&mut self, streams: &[usize]) -> Result<()> {
        let calls = self
            .streams
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| streams.contains(i))
            .map(|(i, s)| async move { (i, s.next().await) });
        for (i, next) in futures::future::join_all(calls).await {
            let (docs, done) = next?;
            self.merge.push(i, docs, done);
        }
        Ok(())
    }
}
