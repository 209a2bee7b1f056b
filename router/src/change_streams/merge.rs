//! The router's change stream cursor: shard feeds merged by cluster time
//! (shard id breaking ties), an event released only once every other
//! shard has reported it has nothing earlier (its high-water mark is past
//! the event), as mongos's `AsyncResultsMerger` does for change streams.

use std::any::Any;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::{Bson, Document, Timestamp};
use futures::future::BoxFuture;

use super::feed::{Begin, Feed, FeedSpec};
use super::token::RouterToken;
use crate::error::Result;

/// How long a `getMore` waits for events when the client gave no
/// `maxTimeMS` (mongod's default `maxAwaitTimeMS`).
pub(crate) const DEFAULT_AWAIT: Duration = Duration::from_secs(1);
/// How long a shard `getMore` waits when other shards already returned
/// events (only its high-water mark is needed).
const SHORT_WAIT: Duration = Duration::from_millis(5);

/// What a stream watches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scope {
    /// One collection (`db`, `coll`).
    Collection(String, String),
    /// A database.
    Database(String),
    /// Every database (`allChangesForCluster`).
    Cluster,
}

/// How shard feeds of this stream are opened.
pub(crate) struct StreamSpec {
    /// What it watches.
    pub scope: Scope,
    /// The client's `$changeStream` options, less where it starts.
    pub options: Document,
    /// The stages after `$changeStream`.
    pub rest: Vec<Bson>,
    /// `aggregate` fields passed on to the shards.
    pub passed: Document,
}

impl StreamSpec {
    /// The view feeds open with.
    pub(crate) fn feed_spec(&self) -> FeedSpec<'_> {
        let (db, coll) = match &self.scope {
            Scope::Collection(db, coll) => (db.as_str(), Some(coll.as_str())),
            Scope::Database(db) => (db.as_str(), None),
            Scope::Cluster => ("admin", None),
        };
        FeedSpec {
            db,
            coll,
            options: &self.options,
            rest: &self.rest,
            passed: &self.passed,
        }
    }
}

/// A change stream over shard feeds.
pub(crate) struct ChangeStreamCursor {
    /// How feeds are opened (also for shards joining later).
    pub spec: StreamSpec,
    /// One per shard.
    pub feeds: Vec<Feed>,
    /// When the stream started: a joining shard starts here.
    pub origin: Timestamp,
    /// The cluster time of the last released event.
    last: Timestamp,
    /// A drop or rename was released (from this feed): the invalidate
    /// comes next.
    invalidating: Option<(usize, Document)>,
    /// The stream ended (invalidated).
    pub finished: bool,
}

impl ChangeStreamCursor {
    /// A cursor over feeds opened from `origin`.
    pub(crate) fn new(spec: StreamSpec, feeds: Vec<Feed>, origin: Timestamp) -> Self {
        ChangeStreamCursor {
            spec,
            feeds,
            origin,
            last: origin,
            invalidating: None,
            finished: false,
        }
    }

    /// Which feed holds the next event, if it may be released now.
    fn next_feed(&self) -> Option<usize> {
        let (i, head) = self
            .feeds
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.queue.front().map(|e| (i, (e.time, &f.shard.id))))
            .min_by(|a, b| a.1.cmp(&b.1))?;
        let promised = self
            .feeds
            .iter()
            .filter(|f| f.queue.is_empty() && !f.is_closed())
            .all(|f| (f.mark, &f.shard.id) > head);
        promised.then_some(i)
    }

    /// The resume token after `released` events, at `time`.
    fn token(&self, time: Timestamp) -> Document {
        let shards: BTreeMap<String, Document> = self
            .feeds
            .iter()
            .filter_map(|f| Some((f.shard.id.clone(), f.position()?)))
            .collect();
        RouterToken {
            time,
            origin: self.origin,
            shards,
        }
        .encode()
    }

    /// The next event that may be released, with the router's token.
    fn release(&mut self) -> Option<Document> {
        if self.finished {
            return None;
        }
        if let Some((i, ended)) = self.invalidating.take() {
            self.finished = true;
            return Some(self.invalidate_event(i, &ended));
        }
        let i = self.next_feed()?;
        let event = self.feeds.get_mut(i)?.release()?;
        self.last = self.last.max(event.time);
        let op = event.doc.get_str("operationType").unwrap_or("");
        let ends = match &self.spec.scope {
            Scope::Collection(..) => matches!(op, "drop" | "rename" | "dropDatabase"),
            Scope::Database(_) => op == "dropDatabase",
            Scope::Cluster => false,
        };
        if op == "invalidate" {
            self.finished = true;
        }
        let mut out = Document::new();
        out.insert("_id", self.token(event.time));
        for (k, v) in event.doc {
            if k != "_id" {
                out.insert(k, v);
            }
        }
        if ends {
            self.invalidating = Some((i, out.clone()));
        }
        Some(out)
    }

    /// The invalidate that follows a drop, rename or dropDatabase from
    /// feed `i`; its token holds that shard's own invalidate when it came
    /// with the drop, so `startAfter` resumes past it there.
    fn invalidate_event(&mut self, i: usize, ended: &Document) -> Document {
        let time = ended.get_timestamp("clusterTime").unwrap_or(self.last);
        if let Some(feed) = self.feeds.get_mut(i) {
            let next = feed
                .queue
                .front()
                .and_then(|e| e.doc.get_str("operationType").ok());
            if next == Some("invalidate") {
                feed.release();
            }
        }
        let mut out = Document::new();
        out.insert("_id", self.token(time));
        out.insert("operationType", "invalidate");
        for k in ["clusterTime", "wallTime"] {
            if let Some(v) = ended.get(k) {
                out.insert(k, v.clone());
            }
        }
        out
    }

    /// The token of everything released so far (`postBatchResumeToken`).
    pub(crate) fn post_batch_token(&self) -> Document {
        self.token(self.last)
    }

    /// Releases what may be released, up to `max_docs`, without waiting.
    pub(crate) fn drain(&mut self, max_docs: usize) -> Vec<Document> {
        let mut out = Vec::new();
        while out.len() < max_docs {
            match self.release() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    /// The next batch: released events, waiting for shards (until `wait`
    /// has passed) while there are none.
    pub(crate) async fn next_batch(
        &mut self,
        max_docs: usize,
        wait: Duration,
    ) -> Result<Vec<Document>> {
        let deadline = Instant::now() + wait;
        loop {
            let out = self.drain(max_docs);
            let now = Instant::now();
            if !out.is_empty() || self.finished || now >= deadline {
                return Ok(out);
            }
            let queued = self.feeds.iter().any(|f| !f.queue.is_empty());
            let left = deadline - now;
            let shard_wait = match queued {
                true => SHORT_WAIT.min(left),
                false => left.min(DEFAULT_AWAIT),
            };
            let polls = self
                .feeds
                .iter_mut()
                .filter(|f| f.queue.is_empty() && !f.is_closed())
                .map(|f| f.poll(shard_wait));
            for polled in futures::future::join_all(polls).await {
                polled?;
            }
        }
    }

    /// Adds a feed (a shard that joined), started at the stream's origin
    /// or its resume token's position on that shard.
    pub(crate) fn add_feed(&mut self, feed: Feed) {
        self.feeds.push(feed);
    }

    /// Where a joining shard starts.
    pub(crate) fn join_start(&self) -> Begin {
        Begin::At(join_time(self.origin))
    }

    /// Closes every shard cursor.
    pub(crate) async fn kill_all(&mut self) {
        for f in &mut self.feeds {
            f.kill().await;
        }
    }
}

/// Where a shard that joins a stream started at `origin` starts its own
/// stream: at the start of `origin`'s second.
///
/// `origin` is a time on another shard's clock. Shards count operations
/// within a wall-clock second independently (SecantusDB takes no cluster
/// time from gossip), so a shard whose writes come just after the
/// stream opened can stamp them `(second, n)` with `n` below `origin`'s
/// count, and starting it at `origin` itself would skip them. Every write
/// made after the stream opened carries a second no earlier than
/// `origin`'s. What starting earlier can add is a write to the watched
/// data on that shard in the same second before the stream opened, which
/// only a shard that held a chunk then and lost it before the stream
/// opened could have.
pub(crate) fn join_time(origin: Timestamp) -> Timestamp {
    Timestamp {
        time: origin.time,
        increment: 0,
    }
}

impl crate::cursors::StreamCursor for ChangeStreamCursor {
    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.kill_all())
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}
