//! Catching a copy up with its source, for chunk migrations and
//! `movePrimary`: a [`ChangeStream`] on the source (one collection, or a
//! whole database) read for the events since it opened. The documents
//! they name are then made to match on the destination by
//! [`crate::resync()`].

use bson::{doc, Bson, Document};

use crate::resync::raw;
use crate::{Result, ShardClient, ShardError, Target};

/// Events per `getMore`.
const BATCH: i32 = 10_000;

/// A change stream open on a shard, with the events it returned first.
pub struct ChangeStream {
    shard: String,
    host: String,
    db: String,
    /// The collection watched; `None`: the whole database.
    coll: Option<String>,
    id: i64,
    pending: Vec<Bson>,
}

impl ChangeStream {
    /// Opens a change stream (with `fullDocument: updateLookup`) on `coll`
    /// of `db`, or on the whole database; `expanded` asks for DDL events
    /// too (`showExpandedEvents`).
    pub async fn open(
        client: &dyn ShardClient,
        shard: Target<'_>,
        db: &str,
        coll: Option<&str>,
        expanded: bool,
    ) -> Result<ChangeStream> {
        Self::open_with(client, shard, (db, coll), expanded, Vec::new()).await
    }

    /// As [`ChangeStream::open`], with `stages` after `$changeStream` (a
    /// resharding leaves out migration writes: its own copies).
    pub async fn open_with(
        client: &dyn ShardClient,
        shard: Target<'_>,
        (db, coll): (&str, Option<&str>),
        expanded: bool,
        stages: Vec<Document>,
    ) -> Result<ChangeStream> {
        let mut spec = doc! {"fullDocument": "updateLookup"};
        if expanded {
            spec.insert("showExpandedEvents", true);
        }
        let aggregate = match coll {
            Some(c) => Bson::from(c),
            None => Bson::Int32(1),
        };
        let body = doc! {
            "aggregate": aggregate,
            "pipeline": std::iter::once(doc! {"$changeStream": spec}).chain(stages).collect::<Vec<_>>(),
            "cursor": {"batchSize": 0},
            "$db": db,
        };
        let reply = client.command(shard, &raw(shard, &body)?).await?;
        let reply =
            Document::try_from(reply.as_ref()).map_err(|e| ShardError::protocol(shard.id, e))?;
        let cursor = reply
            .get_document("cursor")
            .map_err(|e| ShardError::protocol(shard.id, e))?;
        Ok(ChangeStream {
            shard: shard.id.to_owned(),
            host: shard.host.to_owned(),
            db: db.to_owned(),
            coll: coll.map(str::to_owned),
            id: cursor.get_i64("id").unwrap_or(0),
            pending: cursor.get_array("firstBatch").cloned().unwrap_or_default(),
        })
    }

    fn target(&self) -> Target<'_> {
        Target {
            id: &self.shard,
            host: &self.host,
        }
    }

    /// The events since the last call (as many `getMore`s as it takes to
    /// read what the shard has now).
    pub async fn events(&mut self, client: &dyn ShardClient) -> Result<Vec<Document>> {
        let mut events = std::mem::take(&mut self.pending);
        let collection = self.coll.as_deref().unwrap_or("$cmd.aggregate");
        loop {
            let body = doc! {
                "getMore": self.id,
                "collection": collection,
                "batchSize": BATCH,
                "maxTimeMS": 20,
                "$db": &self.db,
            };
            let reply = client
                .command(self.target(), &raw(self.target(), &body)?)
                .await?;
            let reply = Document::try_from(reply.as_ref())
                .map_err(|e| ShardError::protocol(&self.shard, e))?;
            let batch = reply
                .get_document("cursor")
                .and_then(|c| c.get_array("nextBatch"))
                .cloned()
                .unwrap_or_default();
            let full = batch.len() >= BATCH as usize;
            events.extend(batch);
            if !full {
                break;
            }
        }
        Ok(events
            .into_iter()
            .filter_map(|e| match e {
                Bson::Document(d) => Some(d),
                _ => None,
            })
            .collect())
    }

    /// Closes the stream on the shard (best effort).
    pub async fn close(self, client: &dyn ShardClient) {
        let collection = self.coll.as_deref().unwrap_or("$cmd.aggregate");
        let body = doc! {"killCursors": collection, "cursors": [self.id], "$db": &self.db};
        if let Ok(body) = raw(self.target(), &body) {
            let _ = client.command(self.target(), &body).await;
        }
    }
}

/// The `_id` an event names (its `documentKey`), if any.
pub fn event_id(event: &Document) -> Option<&Bson> {
    event
        .get_document("documentKey")
        .ok()
        .and_then(|k| k.get("_id"))
}
