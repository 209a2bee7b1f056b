//! Making a destination's copies match their source ([`resync`],
//! [`upsert_kept`]) while clients go on writing.
//!
//! Every write here is a migration write ([`crate::migration_write`]):
//! change streams never show it. Clients may write the same `_id` on the
//! destination between this code's look at it and its write (a shard-key
//! change moving the document there, replacing a stale copy), so every
//! replacement and delete is pinned: it selects the destination's document
//! only while its [`Keep::pins`] fields still hold the values seen at the
//! look. A document that changed since is looked at again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bson::{doc, Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf};

use crate::{Result, ShardClient, ShardCursor, ShardError, Target};

/// Looks at the destination before a document is given up as changing
/// too often.
const LOOKS: usize = 5;

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
    /// The fields that decide where a document belongs (the collection's
    /// shard key fields; none for an unsharded collection). A write
    /// replaces or deletes a destination document only while these still
    /// hold what they held when it was looked at.
    pub pins: &'a [&'a str],
}

impl Keep<'_> {
    /// Whether a document held on the destination may be overwritten by a
    /// kept one: a copy in the range, or a stale copy `replaces` accepts.
    fn may_replace(&self, held: &RawDocument) -> bool {
        (self.keep)(held) || self.replaces.is_some_and(|r| r(held))
    }

    /// The filter selecting `held` (by `_id`) while its pinned fields are
    /// unchanged.
    fn pinned(&self, id: Bson, held: &RawDocument) -> Document {
        let mut q = doc! {"_id": id};
        for path in self.pins {
            q.insert(*path, value_at(held, path));
        }
        q
    }
}

/// The value at a dotted path (null where it is missing, which an
/// equality on null matches too).
fn value_at(d: &RawDocument, path: &str) -> Bson {
    let mut doc = d;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        match doc.get(part) {
            Ok(Some(RawBsonRef::Document(inner))) if parts.peek().is_some() => doc = inner,
            Ok(Some(v)) if parts.peek().is_none() => {
                return Bson::try_from(v).unwrap_or(Bson::Null);
            }
            _ => return Bson::Null,
        }
    }
    Bson::Null
}

/// Makes `dest`'s copies of the documents `ids` of `db.coll` match
/// `source`: each is read again there; if it is still there and kept, it
/// is written to `dest` ([`upsert_kept`]), else `dest`'s copy in the range
/// is removed (pinned, and guarded by the range). A document with the same
/// `_id` outside the range on `dest` is another document (one a shard-key
/// change moved there) and stays. Returns how many ids it resynced.
pub async fn resync(
    client: &Arc<dyn ShardClient>,
    (source, dest): (Target<'_>, Target<'_>),
    (db, coll): (&str, &str),
    ids: &[Bson],
    kept: &Keep<'_>,
) -> Result<u64> {
    for chunk in ids.chunks(500) {
        let found = find_ids(client, source, (db, coll), chunk.to_vec()).await?;
        let (docs, _): (Vec<RawDocumentBuf>, _) = found.into_iter().partition(|d| (kept.keep)(d));
        let present: BTreeSet<String> = docs
            .iter()
            .filter_map(|d| id_of(d))
            .map(|id| id.to_string())
            .collect();
        let gone: Vec<Bson> = chunk
            .iter()
            .filter(|id| !present.contains(&id.to_string()))
            .cloned()
            .collect();
        upsert_kept(client, dest, (db, coll), &docs, kept).await?;
        if !gone.is_empty() {
            delete_copies(client, dest, (db, coll), gone, kept).await?;
        }
    }
    Ok(ids.len() as u64)
}

/// Deletes `dest`'s copies in the range of the documents `gone`, each only
/// as it was looked at (one a client moved there since stays).
async fn delete_copies(
    client: &Arc<dyn ShardClient>,
    dest: Target<'_>,
    (db, coll): (&str, &str),
    gone: Vec<Bson>,
    kept: &Keep<'_>,
) -> Result<()> {
    let copies = find_ids(client, dest, (db, coll), gone).await?;
    let deletes: Vec<Document> = copies
        .iter()
        .filter(|d| (kept.keep)(d))
        .filter_map(|d| {
            let mut q = kept.pinned(id_of(d)?, d);
            if !kept.guard.is_empty() {
                q.insert("$and", vec![Bson::Document(kept.guard.clone())]);
            }
            Some(doc! {"q": q, "limit": 1})
        })
        .collect();
    if deletes.is_empty() {
        return Ok(());
    }
    let delete = doc! {"delete": coll, "deletes": deletes, "$db": db};
    let reply = crate::migration_write(client.as_ref(), dest, &raw(dest, &delete)?).await?;
    if reply.get_array("writeErrors").is_ok() {
        return Err(ShardError::from_reply(dest.id, &write_error(&reply)));
    }
    Ok(())
}

/// Writes `docs` to `dest` as migration writes: inserted where `dest` has
/// no document with their `_id`, replaced where it holds one that
/// [`Keep`] lets them replace, left out where it holds another document
/// (moved there by a shard-key change). Each write is pinned to what the
/// look saw; one that meets a different document (a duplicate `_id`) is
/// looked at again.
pub async fn upsert_kept(
    client: &Arc<dyn ShardClient>,
    dest: Target<'_>,
    (db, coll): (&str, &str),
    docs: &[RawDocumentBuf],
    kept: &Keep<'_>,
) -> Result<()> {
    let mut pending: Vec<&RawDocumentBuf> = docs.iter().collect();
    for _ in 0..LOOKS {
        let ids: Vec<Bson> = pending.iter().filter_map(|d| id_of(d)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let held: BTreeMap<String, RawDocumentBuf> = find_ids(client, dest, (db, coll), ids)
            .await?
            .into_iter()
            .filter_map(|d| Some((id_of(&d)?.to_string(), d)))
            .collect();
        // Documents the destination lacks are inserted (much cheaper than
        // an upsert on a shard server); those it may replace are replaced.
        let (mut inserts, mut updates) = (Vec::new(), Vec::new());
        for d in pending {
            let (Some(id), Ok(doc)) = (id_of(d), Document::try_from(d.as_ref())) else {
                continue;
            };
            match held.get(&id.to_string()) {
                None => inserts.push((d, doc)),
                Some(h) if kept.may_replace(h) => {
                    let q = kept.pinned(id, h);
                    updates.push((d, doc! {"q": q, "u": doc, "upsert": true}));
                }
                Some(_) => {}
            }
        }
        pending = insert_all(client, dest, (db, coll), inserts).await?;
        pending.extend(write_all(client, dest, (db, coll), "update", updates).await?);
        if pending.is_empty() {
            return Ok(());
        }
    }
    Err(ShardError::Reply {
        shard: dest.id.to_owned(),
        code: 112,
        code_name: "WriteConflict".to_owned(),
        message: format!("{db}.{coll}: a copied document kept changing there"),
        labels: Vec::new(),
    })
}

/// Inserts `docs` in one migration write; returns those to look at again
/// (the write failed on a duplicate `_id`: one arrived since the look).
async fn insert_all<'d>(
    client: &Arc<dyn ShardClient>,
    dest: Target<'_>,
    (db, coll): (&str, &str),
    docs: Vec<(&'d RawDocumentBuf, Document)>,
) -> Result<Vec<&'d RawDocumentBuf>> {
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let documents: Vec<&Document> = docs.iter().map(|(_, d)| d).collect();
    let insert = doc! {"insert": coll, "documents": documents, "ordered": true, "$db": db};
    let reply = crate::migration_write(client.as_ref(), dest, &raw(dest, &insert)?).await?;
    if reply.get_array("writeErrors").is_err() {
        return Ok(Vec::new());
    }
    if id_conflicts(&reply).is_none() {
        return Err(ShardError::from_reply(dest.id, &write_error(&reply)));
    }
    // The transaction ended with the error: none of them was written.
    Ok(docs.into_iter().map(|(d, _)| d).collect())
}

/// Runs the `statements` of a `command` (`update`) on `dest` as one
/// migration write. A statement that meets a duplicate `_id` (what it
/// pinned changed since the look) is left out and the rest run again,
/// since a write error ends the write's transaction; returns the left-out
/// statements' documents. Any other write error fails it.
async fn write_all<'d>(
    client: &Arc<dyn ShardClient>,
    dest: Target<'_>,
    (db, coll): (&str, &str),
    command: &str,
    mut statements: Vec<(&'d RawDocumentBuf, Document)>,
) -> Result<Vec<&'d RawDocumentBuf>> {
    let mut conflicted = Vec::new();
    while !statements.is_empty() {
        let list: Vec<&Document> = statements.iter().map(|(_, s)| s).collect();
        let body = doc! {command: coll, format!("{command}s"): list, "ordered": false, "$db": db};
        let reply = crate::migration_write(client.as_ref(), dest, &raw(dest, &body)?).await?;
        let Some(mut skipped) = id_conflicts(&reply) else {
            return Err(ShardError::from_reply(dest.id, &write_error(&reply)));
        };
        if skipped.is_empty() {
            break;
        }
        skipped.sort_unstable();
        skipped.dedup();
        let count = statements.len();
        for i in skipped.into_iter().rev().filter(|i| *i < count) {
            conflicted.push(statements.remove(i).0);
        }
    }
    Ok(conflicted)
}

/// The indexes of a reply's write errors when every one is a duplicate
/// `_id` (empty without errors); `None` when another error is among them.
fn id_conflicts(reply: &RawDocument) -> Option<Vec<usize>> {
    let Ok(errors) = reply.get_array("writeErrors") else {
        return Some(Vec::new());
    };
    errors
        .into_iter()
        .map(|e| {
            let e = e.ok()?.as_document()?;
            let index = usize::try_from(e.get_i32("index").ok()?).ok()?;
            duplicate_id(e).then_some(index)
        })
        .collect()
}

/// Whether a write error is a duplicate `_id` (not another unique index).
fn duplicate_id(e: &RawDocument) -> bool {
    if e.get_i32("code").ok() != Some(11000) {
        return false;
    }
    match e.get_document("keyPattern") {
        Ok(pattern) => pattern.iter().flatten().map(|(k, _)| k).eq(["_id"]),
        Err(_) => e.get_str("errmsg").is_ok_and(|m| m.contains("_id_")),
    }
}

/// The documents of `db.coll` on `shard` whose `_id` is one of `ids`.
async fn find_ids(
    client: &Arc<dyn ShardClient>,
    shard: Target<'_>,
    (db, coll): (&str, &str),
    ids: Vec<Bson>,
) -> Result<Vec<RawDocumentBuf>> {
    let find = doc! {"find": coll, "filter": {"_id": {"$in": ids}}, "$db": db};
    ShardCursor::open(client.clone(), shard, &raw(shard, &find)?)
        .await?
        .all()
        .await
}

/// A document's `_id`.
fn id_of(d: &RawDocument) -> Option<Bson> {
    d.get("_id")
        .ok()
        .flatten()
        .and_then(|v| Bson::try_from(v).ok())
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

pub(crate) fn raw(shard: Target<'_>, body: &Document) -> Result<RawDocumentBuf> {
    RawDocumentBuf::try_from(body).map_err(|e| ShardError::protocol(shard.id, e))
}
