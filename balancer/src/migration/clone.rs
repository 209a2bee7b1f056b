//! Copying: the source's indexes, then the range in shard-key order, in
//! batches, to the destination.

use std::time::Instant;

use bson::{doc, Bson, Document, RawDocumentBuf};
use shardgate_config_store::model::ShardType;

use super::*;
use crate::context::Balancer;
use crate::error::{BalancerError, Result};

/// Bytes of documents per insert on the destination. Bigger is not
/// faster: a SecantusDB (secantusd-rs 0.5.3) shard inserts 64 MB as
/// one-statement transactions of 500-2,000 documents of 1 KB at 29-43 MB/s
/// and of 8,000-16,000 at 15-26 MB/s (pymongo, same machine); the pipeline
/// hides the round trips.
const INSERT_BYTES: usize = 1 << 20;
/// Documents per insert at most (the shards' `maxWriteBatchSize`).
const INSERT_DOCS: usize = 100_000;

/// The options a collection was created with, as `create` takes them.
async fn collection_options(
    state: &Balancer,
    source: &ShardType,
    db: &str,
    coll: &str,
) -> Result<Document> {
    let reply = state
        .run_on_shard(
            source,
            doc! {"listCollections": 1, "filter": {"name": coll}, "$db": db},
        )
        .await?;
    let options = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.iter().filter_map(Bson::as_document).next())
        .and_then(|c| c.get_document("options").ok())
        .cloned()
        .unwrap_or_default();
    Ok(options)
}

/// A destination that owns no chunk of the collection may hold indexes
/// dropped since it last did (DDL goes to the owning shards): those the
/// source lacks are dropped, as mongod's recipient does.
async fn drop_stale_indexes(
    state: &Balancer,
    dest: &ShardType,
    db: &str,
    coll: &str,
    wanted: &[Bson],
) -> Result<()> {
    let ns = format!("{db}.{coll}");
    let owns = state
        .catalog
        .chunks(&ns)
        .await?
        .iter()
        .any(|(c, _)| c.shard == dest.id);
    if owns {
        return Ok(());
    }
    let names: Vec<&str> = wanted
        .iter()
        .filter_map(|i| i.as_document()?.get_str("name").ok())
        .collect();
    let reply = state
        .run_on_shard(dest, doc! {"listIndexes": coll, "$db": db})
        .await?;
    let stale: Vec<String> = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|b| {
            b.iter()
                .filter_map(|i| i.as_document()?.get_str("name").ok())
                .filter(|n| *n != "_id_" && !names.contains(n))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if !stale.is_empty() {
        state
            .run_on_shard(dest, doc! {"dropIndexes": coll, "index": stale, "$db": db})
            .await?;
    }
    Ok(())
}

pub(super) async fn copy_indexes(
    state: &Balancer,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
) -> Result<()> {
    let reply = state
        .run_on_shard(source, doc! {"listIndexes": coll, "$db": db})
        .await?;
    let indexes: Vec<Bson> = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|b| {
            b.iter()
                .filter_map(Bson::as_document)
                .filter(|i| i.get_str("name").ok() != Some("_id_"))
                .map(|i| {
                    let mut i = i.clone();
                    i.remove("v");
                    i.remove("ns");
                    Bson::Document(i)
                })
                .collect()
        })
        .unwrap_or_default();
    // The collection with the source's options (validator, collation,
    // capped…), unless the destination has it already.
    let mut create = doc! {"create": coll};
    create.extend(collection_options(state, source, db, coll).await?);
    create.insert("$db", db);
    state.run_on_shard(dest, create).await.or_else(|e| {
        if e.code().0 == 48 {
            Ok(Document::new())
        } else {
            Err(e)
        }
    })?;
    drop_stale_indexes(state, dest, db, coll, &indexes).await?;
    if indexes.is_empty() {
        return Ok(());
    }
    state
        .run_on_shard(
            dest,
            doc! {"createIndexes": coll, "indexes": indexes, "$db": db},
        )
        .await?;
    Ok(())
}

/// Copies the range from the source to the destination in key order, as
/// a pipeline: the source's next batch is read while the last one is
/// inserted. The first batch is [`BATCH`] documents (so the destination
/// starts early); later ones are sized from it to about [`INSERT_BYTES`].
pub(super) async fn clone_range(
    state: &Balancer,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
    range: &Range,
    stats: &mut MoveStats,
) -> Result<()> {
    let find = doc! {"find": coll, "filter": range.filter.clone(), "sort": range.sort.clone(), "batchSize": BATCH, "$db": db};
    let started = Instant::now();
    let mut cursor = state.open_cursor(source, &find).await?;
    stats.timings.clone_read += started.elapsed();
    let mut next = cursor.next_batch().await?;
    let mut sized = false;
    while let Some(mut docs) = next {
        docs.retain(|d| range.contains(d));
        let bytes: usize = docs.iter().map(|d| d.as_bytes().len()).sum();
        if !sized && !docs.is_empty() {
            sized = true;
            let per_doc = (bytes / docs.len()).max(1);
            cursor.set_batch_size((INSERT_BYTES / per_doc).clamp(1, INSERT_DOCS) as i64);
        }
        stats.cloned += docs.len() as u64;
        stats.bytes += bytes as u64;
        let read = async {
            let at = Instant::now();
            let batch = cursor.next_batch().await;
            (batch, at.elapsed())
        };
        let write = async {
            let at = Instant::now();
            let wrote = insert_all(state, dest, db, coll, docs).await;
            (wrote, at.elapsed())
        };
        let ((batch, read_took), (wrote, write_took)) = tokio::join!(read, write);
        stats.timings.clone_read += read_took;
        stats.timings.clone_write += write_took;
        wrote?;
        next = batch?;
        super::progress::copied(state, stats).await;
        // Part of the range is on the destination, the rest not yet.
        pause_point(state, "cloningPartial").await;
    }
    stats.timings.clone = started.elapsed();
    Ok(())
}

/// Inserts `docs` on the destination in commands of at most
/// [`INSERT_BYTES`] (one document past it when it is larger alone) and
/// [`INSERT_DOCS`] documents, one after the other.
async fn insert_all(
    state: &Balancer,
    dest: &ShardType,
    db: &str,
    coll: &str,
    docs: Vec<RawDocumentBuf>,
) -> Result<()> {
    let mut part = Vec::new();
    let mut bytes = 0;
    for d in docs {
        let len = d.as_bytes().len();
        if !part.is_empty() && (bytes + len > INSERT_BYTES || part.len() >= INSERT_DOCS) {
            insert(state, dest, db, coll, std::mem::take(&mut part)).await?;
            bytes = 0;
        }
        bytes += len;
        part.push(d);
    }
    if !part.is_empty() {
        insert(state, dest, db, coll, part).await?;
    }
    Ok(())
}

pub(super) async fn insert(
    state: &Balancer,
    dest: &ShardType,
    db: &str,
    coll: &str,
    docs: Vec<RawDocumentBuf>,
) -> Result<()> {
    let mut array = bson::RawArrayBuf::new();
    for d in docs {
        array.push(d);
    }
    let mut body = RawDocumentBuf::new();
    body.append(bson::cstr!("insert"), coll);
    body.append(bson::cstr!("documents"), array);
    body.append(bson::cstr!("ordered"), false);
    body.append(bson::cstr!("$db"), db);
    // A migration write: change streams leave the copy out.
    let reply = shardgate_shard_client::migration_write(
        state.shards.as_ref(),
        crate::context::target(dest),
        &body,
    )
    .await?;
    check_write(&reply, dest)
}

/// A migration write's reply: its first write error, as the migration's
/// failure.
pub(super) fn check_write(reply: &bson::RawDocument, dest: &ShardType) -> Result<()> {
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(Ok(e)) = errors.into_iter().next() {
            let e = e.as_document();
            let code = e.and_then(|e| e.get_i32("code").ok()).unwrap_or(1);
            let errmsg = e
                .and_then(|e| e.get_str("errmsg").ok())
                .unwrap_or("write error");
            return Err(BalancerError::command(
                96,
                "OperationFailed",
                format!("copying to {}: {errmsg} (code {code})", dest.id),
            ));
        }
    }
    Ok(())
}
