//! Catch-up: the source's change stream, read for the documents written
//! since the copy began. One whose last event in a pass carries it in the
//! range (an insert, a replace, or an update's post-image) is written to the
//! destination as the event shows it; any other (deleted, gone out of the
//! range, no post-image) is read again on the source and written to, or
//! removed from, the destination.

use bson::{doc, Bson, RawDocumentBuf};
use shardgate_config_store::model::ShardType;

use std::collections::BTreeSet;

use super::*;
use crate::context::{target, Balancer};
use crate::error::{BalancerError, Result};

/// What one pass over the source's change events asks of the destination.
#[derive(Default)]
pub(super) struct Changes {
    /// Documents in the range as the last event naming each showed them;
    /// a later change has a later event, seen by a later pass.
    pub docs: Vec<RawDocumentBuf>,
    /// Ids to read again on the source (deleted, out of the range, or
    /// without a post-image).
    pub ids: Vec<Bson>,
}

impl Changes {
    /// Documents the pass names.
    pub(super) fn len(&self) -> usize {
        self.docs.len() + self.ids.len()
    }
}

/// Makes the destination match the source for what `changes` names:
/// `docs` upserted as they are, `ids` read again on the source (written
/// when there and in the range, else the destination's copy removed).
/// Returns how many documents it resynced.
pub(super) async fn apply(
    state: &Balancer,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
    range: &Range,
    changes: Changes,
) -> Result<u64> {
    let keep = |d: &bson::RawDocument| range.contains(d);
    let kept = shardgate_shard_client::Keep {
        keep: &keep,
        guard: &range.filter,
        replaces: None,
        pins: &range.pins(),
    };
    for part in changes.docs.chunks(RESYNC_BATCH) {
        let docs = (db, coll);
        shardgate_shard_client::upsert_kept(&state.shards, target(dest), docs, part, &kept).await?;
    }
    let resynced = shardgate_shard_client::resync(
        &state.shards,
        (target(source), target(dest)),
        (db, coll),
        &changes.ids,
        &kept,
    )
    .await?;
    Ok(changes.docs.len() as u64 + resynced)
}

/// Documents per upsert command of the catch-up.
const RESYNC_BATCH: usize = 500;

/// A change stream on the source collection, read for the documents its
/// events name.
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

    /// What events since the last call name in `range`, by the last event
    /// of each document: inserts and updates whose document is in the range
    /// (with that document), and deletes of documents the destination holds.
    pub(super) async fn next_changes(
        &mut self,
        state: &Balancer,
        range: &Range,
        dest: &ShardType,
    ) -> Result<Changes> {
        let events = self.stream.events(state.shards.as_ref()).await?;
        let mut changes = Changes::default();
        let mut maybe_gone = Vec::new();
        let mut seen = BTreeSet::new();
        for e in events.iter().rev() {
            let Some(id) = shardgate_shard_client::event_id(e) else {
                continue;
            };
            if !seen.insert(id.to_string()) {
                continue;
            }
            match e.get_document("fullDocument").map(RawDocumentBuf::try_from) {
                Ok(Ok(raw)) if range.contains(&raw) => changes.docs.push(raw),
                // Read it again on the source.
                Ok(Err(_)) => changes.ids.push(id.clone()),
                // Deleted, or gone out of the range (its shard key
                // changed): the destination's copy in the range, if any,
                // goes.
                _ => maybe_gone.push(id.clone()),
            }
        }
        let ids = &mut changes.ids;
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
        Ok(changes)
    }

    pub(super) async fn close(self, state: &Balancer) {
        self.stream.close(state.shards.as_ref()).await;
    }
}
