//! Catching a copy up with its source, for chunk migrations and
//! `movePrimary`: a [`ChangeStream`] on the source (one collection, or a
//! whole database) read for the events since it opened, and [`resync`],
//! which reads the named documents again on the source and makes the
//! destination's copies match (written where the source still has them
//! and `keep` accepts them, removed otherwise).

use std::collections::BTreeSet;
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};

use crate::{Result, ShardClient, ShardCursor, ShardError, Target};

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
            "pipeline": [{"$changeStream": spec}],
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

/// Makes `dest`'s copies of the documents `ids` of `db.coll` match
/// `source`: each is read again there; if it is still there and `keep`
/// accepts it, it is written to `dest` (replaced whole, or inserted), else
/// `dest`'s copy is removed — only one `keep` accepts (a document with the
/// same `_id` in another range of `dest` is another document). Returns
/// how many ids it resynced. Its writes are migration writes
/// ([`crate::migration_write`]): change streams never show them.
pub async fn resync(
    client: &Arc<dyn ShardClient>,
    source: Target<'_>,
    dest: Target<'_>,
    db: &str,
    coll: &str,
    ids: &[Bson],
    keep: &(dyn Fn(&RawDocument) -> bool + Sync),
) -> Result<u64> {
    for chunk in ids.chunks(500) {
        let find = doc! {"find": coll, "filter": {"_id": {"$in": chunk.to_vec()}}, "$db": db};
        let found = ShardCursor::open(client.clone(), source, &raw(source, &find)?)
            .await?
            .all()
            .await?;
        let mut updates = Vec::new();
        let mut present = BTreeSet::new();
        for d in found.iter().filter(|d| keep(d)) {
            let id = d
                .get("_id")
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v).ok());
            if let (Some(id), Ok(doc)) = (id, Document::try_from(d.as_ref())) {
                present.insert(id.to_string());
                updates.push(doc! {"q": {"_id": id}, "u": doc, "upsert": true});
            }
        }
        let gone: Vec<Bson> = chunk
            .iter()
            .filter(|id| !present.contains(&id.to_string()))
            .cloned()
            .collect();
        if !updates.is_empty() {
            let update = doc! {"update": coll, "updates": updates, "ordered": false, "$db": db};
            crate::migration_write(client.as_ref(), dest, &raw(dest, &update)?).await?;
        }
        if !gone.is_empty() {
            let find = doc! {"find": coll, "filter": {"_id": {"$in": gone}}, "$db": db};
            let copies = ShardCursor::open(client.clone(), dest, &raw(dest, &find)?)
                .await?
                .all()
                .await?;
            let ours: Vec<Bson> = copies
                .iter()
                .filter(|d| keep(d))
                .filter_map(|d| {
                    d.get("_id")
                        .ok()
                        .flatten()
                        .and_then(|v| Bson::try_from(v).ok())
                })
                .collect();
            if !ours.is_empty() {
                let delete = doc! {"delete": coll, "deletes": [{"q": {"_id": {"$in": ours}}, "limit": 0}], "$db": db};
                crate::migration_write(client.as_ref(), dest, &raw(dest, &delete)?).await?;
            }
        }
    }
    Ok(ids.len() as u64)
}

fn raw(shard: Target<'_>, body: &Document) -> Result<RawDocumentBuf> {
    RawDocumentBuf::try_from(body).map_err(|e| ShardError::protocol(shard.id, e))
}
