//! Catch-up: the source's change stream, read for the ids of documents
//! written since the copy began; each is read again on the source and
//! written to (or removed from) the destination.

use bson::{doc, Bson};
use shardgate_config_store::model::ShardType;

use std::collections::BTreeSet;

use super::*;
use crate::context::{target, Balancer};
use crate::error::{BalancerError, Result};

/// Makes the destination's copies of `ids` match the source: each is read
/// again on S; in the range it is written to D, else removed from D.
pub(super) async fn resync(
    state: &Balancer,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
    range: &Range,
    ids: Vec<Bson>,
) -> Result<u64> {
    let keep = |d: &bson::RawDocument| range.contains(d);
    let kept = shardgate_shard_client::Keep {
        keep: &keep,
        guard: &range.filter,
    };
    Ok(shardgate_shard_client::resync(
        &state.shards,
        (target(source), target(dest)),
        (db, coll),
        &ids,
        &kept,
    )
    .await?)
}

/// A change stream on the source collection, read for document ids.
pub(super) struct ChangeStream {
    stream: shardgate_shard_client::ChangeStream,
    db: String,
    coll: String,
}

impl ChangeStream {
    pub(super) async fn open(
        state: &Balancer,
        shard: &ShardType,
        db: &str,
        coll: &str,
    ) -> Result<Self> {
        let stream = shardgate_shard_client::ChangeStream::open(
            state.shards.as_ref(),
            target(shard),
            db,
            Some(coll),
            false,
        )
        .await
        .map_err(|e| {
            BalancerError::command(
                e.code().0,
                "ChangeStreamUnavailable",
                format!(
                    "{} cannot open a change stream for the migration: {e}",
                    shard.id
                ),
            )
        })?;
        Ok(ChangeStream {
            stream,
            db: db.to_owned(),
            coll: coll.to_owned(),
        })
    }

    /// The ids of documents in `range` that events since the last call
    /// name: inserts and updates whose document is in the range, and
    /// deletes of documents the destination holds.
    pub(super) async fn next_ids(
        &mut self,
        state: &Balancer,
        range: &Range,
        dest: &ShardType,
    ) -> Result<Vec<Bson>> {
        let events = self.stream.events(state.shards.as_ref()).await?;
        let mut ids = Vec::new();
        let mut maybe_gone = Vec::new();
        let mut seen = BTreeSet::new();
        for e in &events {
            let Some(id) = shardgate_shard_client::event_id(e) else {
                continue;
            };
            if !seen.insert(id.to_string()) {
                continue;
            }
            match e.get_document("fullDocument") {
                Ok(d) => {
                    let in_range = bson::RawDocumentBuf::try_from(d)
                        .map(|raw| range.contains(&raw))
                        .unwrap_or(true);
                    if in_range {
                        ids.push(id.clone());
                    } else {
                        // It left the range (its shard key changed): the
                        // destination's copy in the range, if any, goes.
                        maybe_gone.push(id.clone());
                    }
                }
                Err(_) => maybe_gone.push(id.clone()),
            }
        }
        // A deleted document matters only if the destination has a copy
        // in the range (a document with the same `_id` elsewhere on the
        // destination — one a shard-key change moved there — is not it).
        for chunk in maybe_gone.chunks(1_000) {
            let reply = state.run_on_shard(dest,
                doc! {"find": &self.coll, "filter": {"_id": {"$in": chunk.to_vec()}}, "batchSize": 10_000, "$db": &self.db},
            )
            .await?;
            if let Ok(found) = reply
                .get_document("cursor")
                .and_then(|c| c.get_array("firstBatch"))
            {
                ids.extend(
                    found
                        .iter()
                        .filter_map(Bson::as_document)
                        .filter(|d| {
                            bson::RawDocumentBuf::try_from(*d).is_ok_and(|raw| range.contains(&raw))
                        })
                        .filter_map(|d| d.get("_id").cloned()),
                );
            }
        }
        Ok(ids)
    }

    pub(super) async fn close(self, state: &Balancer) {
        self.stream.close(state.shards.as_ref()).await;
    }
}
