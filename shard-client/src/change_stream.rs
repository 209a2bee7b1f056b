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

/// What [`resync`] keeps on the destination: the documents `keep` accepts
/// (the migrating range), and `guard`, a query selecting the same on the
/// destination (`{}` where none can, as for a hashed key's range).
pub struct Keep<'a> {
    pub keep: &'a (dyn Fn(&RawDocument) -> bool + Sync),
    pub guard: &'a Document,
    /// Documents on the destination that a kept one replaces though `keep`
    /// rejects them (a resharding's stale copy from another shard); `None`:
    /// none, every other document with the same `_id` stays.
    pub replaces: Option<&'a (dyn Fn(&RawDocument) -> bool + Sync)>,
}

/// Makes `dest`'s copies of the documents `ids` of `db.coll` match
/// `source`: each is read again there; if it is still there and kept, it
/// is written to `dest` (replaced whole, or inserted), else `dest`'s copy
/// in the range is removed. A document with the same `_id` outside the
/// range on `dest` is another document (one a shard-key change moved
/// there, perhaps between the read and the write here), and stays: upserts
/// skip an `_id` `dest` holds outside the range ([`upsert_kept`]; one that
/// arrives between that look and the upsert is still replaced), and
/// deletes are guarded by the range. Returns how
/// many ids it resynced. Its writes are migration writes
/// ([`crate::migration_write`]): change streams never show them.
pub async fn resync(
    client: &Arc<dyn ShardClient>,
    (source, dest): (Target<'_>, Target<'_>),
    (db, coll): (&str, &str),
    ids: &[Bson],
    kept: &Keep<'_>,
) -> Result<u64> {
    let guarded = |id: Bson| {
        let mut q = doc! {"_id": id};
        q.extend(kept.guard.clone());
        q
    };
    for chunk in ids.chunks(500) {
        let find = doc! {"find": coll, "filter": {"_id": {"$in": chunk.to_vec()}}, "$db": db};
        let found = ShardCursor::open(client.clone(), source, &raw(source, &find)?)
            .await?
            .all()
            .await?;
        let (docs, _): (Vec<RawDocumentBuf>, _) = found.into_iter().partition(|d| (kept.keep)(d));
        let present: BTreeSet<String> = docs
            .iter()
            .filter_map(id_of)
            .map(|id| id.to_string())
            .collect();
        let gone: Vec<Bson> = chunk
            .iter()
            .filter(|id| !present.contains(&id.to_string()))
            .cloned()
            .collect();
        upsert_kept(client, dest, (db, coll), &docs, kept).await?;
        if !gone.is_empty() {
            let find = doc! {"find": coll, "filter": {"_id": {"$in": gone}}, "$db": db};
            let copies = ShardCursor::open(client.clone(), dest, &raw(dest, &find)?)
                .await?
                .all()
                .await?;
            let deletes: Vec<Document> = copies
                .iter()
                .filter(|d| (kept.keep)(d))
                .filter_map(|d| {
                    d.get("_id")
                        .ok()
                        .flatten()
                        .and_then(|v| Bson::try_from(v).ok())
                })
                .map(|id| doc! {"q": guarded(id), "limit": 1})
                .collect();
            if !deletes.is_empty() {
                let delete = doc! {"delete": coll, "deletes": deletes, "$db": db};
                let reply =
                    crate::migration_write(client.as_ref(), dest, &raw(dest, &delete)?).await?;
                if reply.get_array("writeErrors").is_ok() {
                    return Err(ShardError::from_reply(dest.id, &write_error(&reply)));
                }
            }
        }
    }
    Ok(ids.len() as u64)
}

/// Writes `docs` to `dest` (each replaced whole by `_id`, or inserted) as
/// migration writes. A document with the same `_id` outside the range on
/// `dest` is another one (moved there by a shard-key change) and stays:
/// `dest` is asked first, and the upserts select by `_id` alone, the query
/// shard servers answer fastest.
pub async fn upsert_kept(
    client: &Arc<dyn ShardClient>,
    dest: Target<'_>,
    (db, coll): (&str, &str),
    docs: &[RawDocumentBuf],
    kept: &Keep<'_>,
) -> Result<()> {
    let ids: Vec<Bson> = docs.iter().filter_map(id_of).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let find = doc! {"find": coll, "filter": {"_id": {"$in": ids}}, "$db": db};
    let held = ShardCursor::open(client.clone(), dest, &raw(dest, &find)?)
        .await?
        .all()
        .await?;
    let present: BTreeSet<String> = held
        .iter()
        .filter_map(id_of)
        .map(|id| id.to_string())
        .collect();
    let others: BTreeSet<String> = held
        .iter()
        .filter(|d| !(kept.keep)(d) && !kept.replaces.is_some_and(|r| r(d)))
        .filter_map(id_of)
        .map(|id| id.to_string())
        .collect();
    // Documents the destination lacks are inserted (much cheaper than an
    // upsert on a shard server); the others it may replace are upserted.
    let (mut inserts, mut updates) = (Vec::new(), Vec::new());
    for d in docs {
        let (Some(id), Ok(doc)) = (id_of(d), Document::try_from(d.as_ref())) else {
            continue;
        };
        let key = id.to_string();
        if !present.contains(&key) {
            inserts.push(doc);
        } else if !others.contains(&key) {
            updates.push(doc! {"q": {"_id": id}, "u": doc, "upsert": true});
        }
    }
    if !inserts.is_empty() {
        let insert =
            doc! {"insert": coll, "documents": inserts.clone(), "ordered": true, "$db": db};
        let reply = crate::migration_write(client.as_ref(), dest, &raw(dest, &insert)?).await?;
        if reply.get_array("writeErrors").is_ok() {
            // One arrived since the look (the transaction is gone): upsert
            // them all, leaving out any that meets another document.
            updates.extend(inserts.into_iter().filter_map(|d| {
                let id = d.get("_id").cloned()?;
                Some(doc! {"q": {"_id": id}, "u": d, "upsert": true})
            }));
        }
    }
    update_skipping_duplicates(client, dest, (db, coll), updates).await
}

/// A document's `_id`.
fn id_of(d: &RawDocumentBuf) -> Option<Bson> {
    d.get("_id")
        .ok()
        .flatten()
        .and_then(|v| Bson::try_from(v).ok())
}

/// Runs the upserts `updates` on `dest` as one migration write. An upsert
/// that meets a duplicate `_id` (another document, outside the guard) is
/// left out and the rest run again, since a write error ends the write's
/// transaction; any other write error fails the resync.
async fn update_skipping_duplicates(
    client: &Arc<dyn ShardClient>,
    dest: Target<'_>,
    (db, coll): (&str, &str),
    mut updates: Vec<Document>,
) -> Result<()> {
    while !updates.is_empty() {
        let update = doc! {"update": coll, "updates": updates.clone(), "ordered": false, "$db": db};
        let reply = crate::migration_write(client.as_ref(), dest, &raw(dest, &update)?).await?;
        let Ok(errors) = reply.get_array("writeErrors") else {
            return Ok(());
        };
        let mut skipped = Vec::new();
        for e in errors.into_iter().flatten().filter_map(|e| e.as_document()) {
            if e.get_i32("code").ok() != Some(11000) {
                return Err(ShardError::from_reply(dest.id, &write_error(&reply)));
            }
            skipped.extend(
                e.get_i32("index")
                    .ok()
                    .and_then(|i| usize::try_from(i).ok()),
            );
        }
        if skipped.is_empty() {
            return Err(ShardError::from_reply(dest.id, &write_error(&reply)));
        }
        skipped.sort_unstable();
        skipped.dedup();
        let count = updates.len();
        for i in skipped.into_iter().rev().filter(|i| *i < count) {
            updates.remove(i);
        }
    }
    Ok(())
}

/// A reply's first write error as an error reply.
fn write_error(reply: &RawDocument) -> RawDocumentBuf {
    reply
        .get_array("writeErrors")
        .ok()
        .and_then(|w| w.into_iter().next())
        .and_then(|e| e.ok())
        .and_then(|e| e.as_document().map(ToOwned::to_owned))
        .unwrap_or_default()
}

fn raw(shard: Target<'_>, body: &Document) -> Result<RawDocumentBuf> {
    RawDocumentBuf::try_from(body).map_err(|e| ShardError::protocol(shard.id, e))
}
