//! Reads on a shard holding hashed orphans that the router completes:
//! counts, `distinct` values, the owned `_id`s a write selects, and a
//! scatter stream's batches (with the rest of a pipeline run over them).

use std::sync::Arc;

use bson::{doc, Bson, Document, RawArrayBuf, RawDocument, RawDocumentBuf};
use shardgate_config_store::ShardType;
use shardgate_shard_client::{ShardClient, ShardCursor, Target};

use super::projection::Reshape;
use super::{HashedOrphans, KEY_FIELD, PAGE};
use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::shards::open_cursor;
use crate::state::RouterState;

/// Options of the client's command that a shard read made for it keeps.
fn copy_options(body: &RawDocument, cmd: &mut Document, names: &[&str]) {
    for name in names {
        if let Ok(Some(v)) = body.get(*name) {
            if let Ok(v) = Bson::try_from(v) {
                cmd.insert(*name, v);
            }
        }
    }
}

/// How many documents matching `filter` the shard owns (`count` on a shard
/// holding hashed orphans): their keys are read and checked here.
pub(crate) async fn count_owned(
    state: &RouterState,
    shard: &ShardType,
    orphans: &HashedOrphans,
    ns: &str,
    filter: &Document,
    body: &RawDocument,
) -> Result<i64> {
    let Namespace { db, coll } = Namespace::parse(ns);
    let mut cmd = doc! {
        "find": coll, "filter": filter.clone(),
        "projection": {"_id": 0, KEY_FIELD: orphans.key_values()},
        "batchSize": PAGE, "$db": db,
    };
    copy_options(
        body,
        &mut cmd,
        &["hint", "collation", "readConcern", "lsid"],
    );
    let mut pager = open_cursor(state, shard, &cmd).await?.batch_size(PAGE);
    let mut n = 0;
    while let Some(page) = pager.next_batch().await? {
        n += page.iter().filter(|d| orphans.owns(d)).count() as i64;
    }
    Ok(n)
}

/// The values of `key` in the documents matching `filter` that the shard
/// owns (`distinct` on a shard holding hashed orphans), arrays unwound as
/// `distinct` does.
pub(crate) async fn distinct_owned(
    state: &RouterState,
    shard: &ShardType,
    orphans: &HashedOrphans,
    ns: &str,
    key: &str,
    filter: &Document,
    body: &RawDocument,
) -> Result<Vec<Bson>> {
    let Namespace { db, coll } = Namespace::parse(ns);
    let mut cmd = doc! {
        "find": coll, "filter": filter.clone(),
        "projection": {"_id": 0, key: 1, KEY_FIELD: orphans.key_values()},
        "batchSize": PAGE, "$db": db,
    };
    copy_options(
        body,
        &mut cmd,
        &["hint", "collation", "readConcern", "lsid"],
    );
    let mut pager = open_cursor(state, shard, &cmd).await?.batch_size(PAGE);
    let parts: Vec<&str> = key.split('.').collect();
    let mut values = Vec::new();
    while let Some(page) = pager.next_batch().await? {
        for d in page.iter().filter(|d| orphans.owns(d)) {
            if let Ok(d) = Document::try_from(d.as_ref()) {
                values_at(&Bson::Document(d), &parts, &mut values);
            }
        }
    }
    Ok(values)
}

/// The values `distinct` takes from `value` at `parts`: through arrays of
/// documents, a final array's elements.
pub(super) fn values_at(value: &Bson, parts: &[&str], out: &mut Vec<Bson>) {
    let Some((first, rest)) = parts.split_first() else {
        match value {
            Bson::Array(items) => out.extend(items.iter().cloned()),
            other => out.push(other.clone()),
        }
        return;
    };
    match value {
        Bson::Document(d) => {
            if let Some(v) = d.get(*first) {
                values_at(v, rest, out);
            }
        }
        Bson::Array(items) => {
            if let Ok(i) = first.parse::<usize>() {
                if let Some(v) = items.get(i) {
                    values_at(v, rest, out);
                }
            }
            for item in items.iter().filter(|i| matches!(i, Bson::Document(_))) {
                values_at(item, parts, out);
            }
        }
        _ => {}
    }
}

/// The `_id`s of the documents matching a write's filter that the shard
/// owns, page by page in `_id` order (so a document written meanwhile is
/// not seen twice).
pub(crate) struct OwnedIds {
    pager: ShardCursor,
    orphans: Arc<HashedOrphans>,
}

impl OwnedIds {
    /// Opens the scan of `filter` (with the statement's `collation`).
    pub(crate) async fn open(
        state: &RouterState,
        shard: &ShardType,
        orphans: Arc<HashedOrphans>,
        ns: &str,
        filter: &Document,
        collation: Option<&Document>,
    ) -> Result<OwnedIds> {
        let Namespace { db, coll } = Namespace::parse(ns);
        let mut cmd = doc! {
            "find": coll, "filter": filter.clone(), "sort": {"_id": 1},
            "projection": {"_id": 1, KEY_FIELD: orphans.key_values()},
            "batchSize": PAGE, "$db": db,
        };
        if let Some(c) = collation {
            cmd.insert("collation", c.clone());
        }
        let pager = open_cursor(state, shard, &cmd).await?.batch_size(PAGE);
        Ok(OwnedIds { pager, orphans })
    }

    /// The next page of owned `_id`s (possibly empty); `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Bson>>> {
        let Some(page) = self.pager.next_batch().await? else {
            return Ok(None);
        };
        let ids = page
            .iter()
            .filter(|d| self.orphans.owns(d))
            .filter_map(|d| d.get("_id").ok().flatten())
            .filter_map(|v| Bson::try_from(v).ok())
            .collect();
        Ok(Some(ids))
    }

    /// Stops early, closing the shard cursor.
    pub(crate) async fn close(self) {
        self.pager.kill().await;
    }
}

/// What the router does to one shard stream of a scatter read whose shard
/// holds hashed orphans: drop the orphans, undo the projection change, and
/// run the rest of the shard's part of a pipeline over what survives (on
/// the same shard, fed with `$documents`).
pub(crate) struct StreamFilter {
    /// The shard's orphan ranges.
    pub orphans: Arc<HashedOrphans>,
    /// How the projection was changed.
    pub reshape: Reshape,
    /// Pipeline stages still to run on the survivors (empty for `find`).
    pub rest: Vec<Document>,
    /// The database, for the `$documents` pipeline.
    pub db: String,
    /// `collation` and `let` of the client's `aggregate`.
    pub options: Document,
    /// The shard client the rest of the pipeline runs through.
    pub client: Arc<dyn ShardClient>,
}

impl crate::cursors::BatchFilter for StreamFilter {
    fn apply<'a>(
        &'a self,
        shard: &'a ShardType,
        docs: Vec<RawDocumentBuf>,
    ) -> futures::future::BoxFuture<'a, Result<Vec<RawDocumentBuf>>> {
        Box::pin(self.run(shard, docs))
    }
}

impl StreamFilter {
    /// A batch as the shard would have returned it had it held no orphans.
    async fn run(
        &self,
        shard: &ShardType,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<RawDocumentBuf>> {
        let owned = self.orphans.admit(docs, &self.reshape);
        if self.rest.is_empty() || owned.is_empty() {
            return Ok(owned);
        }
        let mut out = Vec::new();
        for part in by_bytes(owned, 8 * 1024 * 1024) {
            let mut input = RawArrayBuf::new();
            for d in part {
                input.push(d);
            }
            let mut pipeline = RawArrayBuf::new();
            let mut documents = RawDocumentBuf::new();
            documents.append(bson::cstr!("$documents"), input);
            pipeline.push(documents);
            for stage in &self.rest {
                let stage = RawDocumentBuf::try_from(stage)
                    .map_err(|e| RouterError::bad_value(e.to_string()))?;
                pipeline.push(stage);
            }
            let mut cmd = RawDocumentBuf::new();
            cmd.append(bson::cstr!("aggregate"), 1);
            cmd.append(bson::cstr!("pipeline"), pipeline);
            let mut cursor = RawDocumentBuf::new();
            cursor.append(bson::cstr!("batchSize"), PAGE);
            cmd.append(bson::cstr!("cursor"), cursor);
            let options = RawDocumentBuf::try_from(&self.options)
                .map_err(|e| RouterError::bad_value(e.to_string()))?;
            for (k, v) in options.iter().flatten() {
                cmd.append(k, v);
            }
            cmd.append(bson::cstr!("$db"), self.db.as_str());
            let target = Target {
                id: &shard.id,
                host: &shard.host,
            };
            let cursor = ShardCursor::open(self.client.clone(), target, &cmd).await?;
            out.extend(cursor.all().await?);
        }
        Ok(out)
    }
}

/// `docs` cut into runs of at most `limit` bytes (at least one each).
pub(super) fn by_bytes(docs: Vec<RawDocumentBuf>, limit: usize) -> Vec<Vec<RawDocumentBuf>> {
    let mut out: Vec<Vec<RawDocumentBuf>> = Vec::new();
    let mut bytes = 0;
    for d in docs {
        let len = d.as_bytes().len();
        match out.last_mut() {
            Some(run) if bytes + len <= limit => run.push(d),
            _ => {
                bytes = 0;
                out.push(vec![d]);
            }
        }
        bytes += len;
    }
    out
}
