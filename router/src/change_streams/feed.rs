//! One shard's part of a router change stream: the shard's
//! `$changeStream` cursor, the events it returned that the merge has not
//! released yet, and its high-water mark — the cluster time up to which
//! the shard has reported every event (mongos's `minPromisedSortKey`).
//!
//! The mark comes from the shard's `postBatchResumeToken` and, after an
//! empty batch, from a `hello` sent just before the `getMore`: a shard
//! advances its `postBatchResumeToken` on an empty batch only when its
//! oplog moved, but `hello` mints a cluster time, and an empty batch read
//! after it means nothing up to that time is left to report.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use shardgate_config_store::ShardType;
use shardgate_shard_client::{ShardClient, Target};

use super::token::shard_token_time;
use crate::error::{Result, RouterError};

/// Where a shard's stream starts.
#[derive(Debug, Clone)]
pub(crate) enum Begin {
    /// At the shard's present.
    Now,
    /// At this cluster time (`startAtOperationTime`).
    At(Timestamp),
    /// After this shard token (`resumeAfter`).
    ResumeAfter(Document),
    /// After this shard token, also past an invalidate (`startAfter`).
    StartAfter(Document),
}

/// An event a shard returned, not yet released.
pub(crate) struct Event {
    /// Its `clusterTime`.
    pub time: Timestamp,
    /// The shard's resume token for it (its `_id`).
    pub token: Document,
    /// The event as the shard returned it.
    pub doc: Document,
}

/// What a shard stream is opened with.
pub(crate) struct FeedSpec<'a> {
    /// `$db` of the `aggregate`.
    pub db: &'a str,
    /// The collection watched; `None`: a database or the cluster.
    pub coll: Option<&'a str>,
    /// The client's `$changeStream` options, less where it starts.
    pub options: &'a Document,
    /// The stages the client put after `$changeStream`.
    pub rest: &'a [Bson],
    /// Other fields of the client's `aggregate` passed on (`collation`, `comment`, `readConcern`).
    pub passed: &'a Document,
}

/// One shard's change stream.
pub(crate) struct Feed {
    /// The shard.
    pub shard: ShardType,
    client: Arc<dyn ShardClient>,
    db: String,
    /// `getMore`'s `collection`.
    collection: String,
    cursor_id: i64,
    /// Events returned, not yet released, in the shard's order.
    pub queue: VecDeque<Event>,
    /// The shard token of the last event released, or where the stream
    /// started.
    released: Option<Document>,
    /// The shard's latest `postBatchResumeToken`.
    latest: Option<Document>,
    /// Every event up to this time has been returned.
    pub mark: Timestamp,
}

impl Feed {
    /// Opens the shard's `$changeStream` at `start`.
    pub(crate) async fn open(
        client: Arc<dyn ShardClient>,
        shard: ShardType,
        spec: &FeedSpec<'_>,
        start: &Begin,
    ) -> Result<Feed> {
        let mut options = spec.options.clone();
        match start {
            Begin::Now => {}
            Begin::At(ts) => {
                options.insert("startAtOperationTime", *ts);
            }
            Begin::ResumeAfter(t) => {
                options.insert("resumeAfter", t.clone());
            }
            Begin::StartAfter(t) => {
                options.insert("startAfter", t.clone());
            }
        }
        // An expanded stream watches the database, for the router's
        // traces of sharding DDL (`ddl_events`).
        let expanded = super::ddl_events::expanded(&options);
        let mut pipeline = vec![Bson::Document(doc! {"$changeStream": options})];
        if expanded {
            let cluster = spec.coll.is_none() && spec.db == "admin";
            pipeline.extend(super::ddl_events::stages(spec.db, spec.coll, cluster));
        } else {
            pipeline.push(Bson::Document(
                shardgate_shard_client::exclude_migration_events(),
            ));
        }
        pipeline.extend(spec.rest.iter().cloned());
        let watched = if expanded { None } else { spec.coll };
        let aggregate = watched.map_or(Bson::Int32(1), Bson::from);
        let mut cmd = doc! {"aggregate": aggregate, "pipeline": pipeline, "cursor": {}};
        cmd.extend(spec.passed.clone());
        cmd.insert("$db", spec.db);
        let reply = command(client.as_ref(), &shard, &cmd).await?;
        let collection = watched.unwrap_or("$cmd.aggregate").to_owned();
        let mut feed = Feed {
            shard,
            client,
            db: spec.db.to_owned(),
            collection,
            cursor_id: 0,
            queue: VecDeque::new(),
            released: None,
            latest: None,
            mark: Timestamp {
                time: 0,
                increment: 0,
            },
        };
        feed.take(&reply, "firstBatch", None)?;
        feed.released = match start {
            Begin::ResumeAfter(t) | Begin::StartAfter(t) => Some(t.clone()),
            _ => None,
        };
        if feed.released.is_none() && feed.queue.is_empty() {
            feed.released = feed.latest.clone();
        }
        Ok(feed)
    }

    /// Whether the shard's cursor is closed (after an invalidate).
    pub(crate) fn is_closed(&self) -> bool {
        self.cursor_id == 0
    }

    /// Reads the next batch: `hello` for a cluster time, then `getMore`
    /// waiting up to `wait` for events.
    pub(crate) async fn poll(&mut self, wait: Duration) -> Result<()> {
        if self.is_closed() {
            return Ok(());
        }
        let hello = doc! {"hello": 1, "$db": "admin"};
        let minted = command(self.client.as_ref(), &self.shard, &hello)
            .await
            .ok()
            .and_then(|r| r.get_timestamp("operationTime").ok());
        let wait_ms = wait.as_millis().clamp(1, 60_000) as i64;
        let get_more = doc! {
            "getMore": self.cursor_id,
            "collection": &self.collection,
            "maxTimeMS": wait_ms,
            "$db": &self.db,
        };
        let reply = command(self.client.as_ref(), &self.shard, &get_more).await?;
        self.take(&reply, "nextBatch", minted)
    }

    /// Takes a cursor reply's batch, token and cursor id; `minted` is a
    /// cluster time minted before the batch was read.
    fn take(&mut self, reply: &Document, field: &str, minted: Option<Timestamp>) -> Result<()> {
        let cursor = reply
            .get_document("cursor")
            .map_err(|_| protocol(&self.shard, "a change stream reply without a cursor"))?;
        self.cursor_id = cursor.get_i64("id").unwrap_or(0);
        let batch = cursor.get_array(field).map(Vec::as_slice).unwrap_or(&[]);
        for e in batch {
            let Some(doc) = e.as_document() else { continue };
            let token = doc.get_document("_id").cloned().unwrap_or_default();
            let time = doc
                .get_timestamp("clusterTime")
                .ok()
                .or_else(|| shard_token_time(&token))
                .unwrap_or(self.mark);
            self.mark = self.mark.max(time);
            self.queue.push_back(Event {
                time,
                token,
                doc: doc.clone(),
            });
        }
        if let Ok(pbrt) = cursor.get_document("postBatchResumeToken") {
            if let Some(t) = shard_token_time(pbrt) {
                self.mark = self.mark.max(t);
            }
            self.latest = Some(pbrt.clone());
        }
        if batch.is_empty() {
            if let Some(t) = minted {
                self.mark = self.mark.max(t);
            }
        }
        Ok(())
    }

    /// Takes the next event off the queue, remembering its token.
    pub(crate) fn release(&mut self) -> Option<Event> {
        let event = self.queue.pop_front()?;
        self.released = Some(event.token.clone());
        Some(event)
    }

    /// The shard token a resume should start after: the latest batch
    /// token when everything returned was released, else the last
    /// released event's.
    pub(crate) fn position(&self) -> Option<Document> {
        match self.queue.is_empty() {
            true => self.latest.clone().or_else(|| self.released.clone()),
            false => self.released.clone(),
        }
    }

    /// Closes the shard's cursor (best effort).
    pub(crate) async fn kill(&mut self) {
        if self.is_closed() {
            return;
        }
        let cmd =
            doc! {"killCursors": &self.collection, "cursors": [self.cursor_id], "$db": &self.db};
        let _ = command(self.client.as_ref(), &self.shard, &cmd).await;
        self.cursor_id = 0;
    }
}

/// Runs `cmd` on `shard` (an `{ok: 0}` reply is the shard's error).
async fn command(client: &dyn ShardClient, shard: &ShardType, cmd: &Document) -> Result<Document> {
    let raw = RawDocumentBuf::try_from(cmd)
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
    let target = Target {
        id: &shard.id,
        host: &shard.host,
    };
    let reply = client.command(target, &raw).await?;
    Document::try_from(reply.as_ref()).map_err(|e| protocol(shard, e))
}

fn protocol(shard: &ShardType, why: impl std::fmt::Display) -> RouterError {
    RouterError::Shard(shardgate_shard_client::ShardError::protocol(&shard.id, why))
}
