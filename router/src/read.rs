//! Reads on sharded collections: targeting, scatter-gather with a k-way
//! sorted merge, router cursors, and the split of `count`, `distinct` and
//! `aggregate` into a shard part and a router merge part.
//!
//! - `merge` (re-exported from `cursors`): the k-way merge (pure).
//! - `find`: `find` (`pass_through` for a query one shard answers).
//! - `get_more`: `getMore` and `killCursors` on router cursors.
//! - `aggregate`: `count`, `distinct`, `explain`.
//! - `pipeline`: `aggregate`, split between the shards and a merge.
//! - `views`: reads of views over sharded collections.
//! - `orphans`: keeping a shard's orphan ranges out of reads and writes.

pub(crate) mod aggregate;
pub(crate) mod find;
pub(crate) mod get_more;
pub(crate) mod map_reduce;
pub use crate::cursors::merge;
pub(crate) mod orphans;
pub(crate) mod pipeline;
pub(crate) mod views;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use shardgate_config_store::ShardType;
use std::collections::BTreeSet;

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::state::RouterState;
use shardgate_config_store::shard_key::range_filter;

/// A sub-document argument of a command (`None` when absent or null).
pub(crate) fn doc_field(body: &RawDocument, field: &str) -> Result<Option<Document>> {
    match body.get(field) {
        Ok(Some(bson::RawBsonRef::Document(d))) => Document::try_from(d)
            .map(Some)
            .map_err(|e| RouterError::bad_value(format!("'{field}': {e}"))),
        Ok(Some(bson::RawBsonRef::Null)) | Ok(None) | Err(_) => Ok(None),
        Ok(Some(_)) => Err(RouterError::command(
            14,
            "TypeMismatch",
            format!("'{field}' must be a document"),
        )),
    }
}

/// A numeric argument (`None` when absent).
pub(crate) fn int_field(body: &RawDocument, field: &str) -> Result<Option<i64>> {
    match body.get(field) {
        Ok(Some(v)) => v
            .as_i64()
            .or(v.as_i32().map(i64::from))
            .or(v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| {
                RouterError::command(14, "TypeMismatch", format!("'{field}' must be a number"))
            }),
        _ => Ok(None),
    }
}

/// The shards a filter must reach, in name order. Under a non-simple
/// collation string comparisons do not follow byte order, so the query
/// reaches every shard owning a chunk.
pub(crate) fn target(
    state: &RouterState,
    routing: &CollectionRouting,
    filter: &Document,
    body: &RawDocument,
) -> Result<Vec<ShardType>> {
    let simple = match body.get_document("collation") {
        Ok(c) => c.get_str("locale").ok() == Some("simple"),
        Err(_) => true,
    };
    let ids: BTreeSet<String> = if simple {
        crate::targeting::target_shards(&routing.pattern, &routing.chunks, filter)
    } else {
        routing
            .chunks
            .shards()
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let ids = if ids.is_empty() {
        // Nothing can match; ask one shard so the reply has the real shape.
        routing
            .chunks
            .shards()
            .into_iter()
            .take(1)
            .map(str::to_owned)
            .collect()
    } else {
        ids
    };
    ids.iter().map(|id| state.placement.shard(id)).collect()
}

/// The clause that keeps a shard's orphan ranges (documents it holds but
/// does not own) out of a ranged key's query, so a range present on two
/// shards during a migration is returned once: `{$nor: [range, …]}`, or
/// an empty document when the shard holds none. A hashed key's ranges are
/// hash values a plain filter cannot select: see [`orphans::Exclusion`].
pub(crate) fn orphan_clause(routing: &CollectionRouting, shard: &str) -> Document {
    if routing.pattern.hashed_field().is_some() {
        return Document::new();
    }
    let fields: Vec<_> = routing.pattern.fields().collect();
    let orphans: Vec<Bson> = routing
        .orphans
        .iter()
        .filter(|o| o.shard == shard)
        .map(|o| Bson::Document(range_filter(&fields, &o.min, &o.max)))
        .collect();
    if orphans.is_empty() {
        return Document::new();
    }
    doc! {"$nor": orphans}
}

/// Whether any target shard holds orphan ranges of this collection.
pub(crate) fn has_orphans(routing: &CollectionRouting, shards: &[ShardType]) -> bool {
    routing
        .orphans
        .iter()
        .any(|o| shards.iter().any(|s| s.id == o.shard))
}

/// A copy of a command body without `drop`ped fields, then `add`ed ones.
pub(crate) fn rewrite(body: &RawDocument, drop: &[&str], add: Document) -> Result<RawDocumentBuf> {
    let mut out = RawDocumentBuf::new();
    for elem in body.iter() {
        let (k, v) = elem.map_err(|e| RouterError::bad_value(e.to_string()))?;
        if !drop.contains(&k.as_str()) && !add.contains_key(k.as_str()) {
            out.append(k, v);
        }
    }
    let extra =
        RawDocumentBuf::try_from(&add).map_err(|e| RouterError::bad_value(e.to_string()))?;
    for elem in extra.iter() {
        let (k, v) = elem.map_err(|e| RouterError::bad_value(e.to_string()))?;
        out.append(k, v);
    }
    Ok(out)
}

/// Runs a raw command body on a shard; `{ok: 0}` becomes an error.
pub(crate) async fn run_raw(
    state: &RouterState,
    shard: &ShardType,
    body: &RawDocumentBuf,
) -> Result<RawDocumentBuf> {
    let msg = shardgate_wire::OpMsg::from_body(body.as_bytes().to_vec());
    let reply = crate::shards::to_shard(state, shard, &msg).await?;
    if !shardgate_shard_client::reply_ok(reply.body()) {
        return Err(RouterError::from_shard_reply(&shard.id, reply.body()));
    }
    Ok(reply.body().to_owned())
}

/// Builds `{cursor: {id, ns, <field>: docs}, ok: 1}` and extra fields.
pub(crate) fn cursor_reply(
    id: i64,
    ns: &str,
    field: &str,
    docs: &[RawDocumentBuf],
    extra: Document,
) -> Vec<u8> {
    // Written once into a buffer of the final size: a batch can be 16 MB,
    // and building it through nested documents copied it four times.
    let extra = RawDocumentBuf::try_from(&extra).unwrap_or_default();
    let extra = &extra.as_bytes()[4..extra.as_bytes().len() - 1];
    let docs_len: usize = docs.iter().map(|d| d.as_bytes().len() + 8).sum();
    // (Room too for the `$clusterTime` the reply is stamped with.)
    let mut out = Vec::with_capacity(docs_len + ns.len() + field.len() + extra.len() + 320);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(b"\x03cursor\0");
    let cursor = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(b"\x12id\0");
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(b"\x02ns\0");
    out.extend_from_slice(&((ns.len() + 1) as i32).to_le_bytes());
    out.extend_from_slice(ns.as_bytes());
    out.push(0);
    out.push(0x04);
    out.extend_from_slice(field.as_bytes());
    out.push(0);
    let array = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut index = itoa::Buffer::new();
    for (i, d) in docs.iter().enumerate() {
        out.push(0x03);
        out.extend_from_slice(index.format(i).as_bytes());
        out.push(0);
        out.extend_from_slice(d.as_bytes());
    }
    out.push(0);
    patch_len(&mut out, array);
    out.push(0);
    patch_len(&mut out, cursor);
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\x01ok\0");
    out.extend_from_slice(&1.0f64.to_le_bytes());
    out.push(0);
    patch_len(&mut out, 0);
    out
}

/// Writes the length of the document that starts at `at` and ends the
/// buffer.
fn patch_len(out: &mut [u8], at: usize) {
    let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests;
