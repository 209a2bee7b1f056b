//! Catch-up: the source's change stream, read for the ids of documents
//! written since the copy began; each is read again on the source and
//! written to (or removed from) the destination.

use bson::{doc, Bson, Document};
use shardgate_config_store::model::ShardType;

use std::collections::BTreeSet;

use super::*;
use crate::context::Balancer;
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
    let n = ids.len() as u64;
    for chunk in ids.chunks(500) {
        let found = find_all(
            state,
            source,
            db,
            coll,
            doc! {"find": coll, "filter": {"_id": {"$in": chunk.to_vec()}}},
        )
        .await?;
        let mut updates = Vec::new();
        let mut present = BTreeSet::new();
        for d in &found {
            if range.contains(d) {
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
        }
        let gone: Vec<Bson> = chunk
            .iter()
            .filter(|id| !present.contains(&id.to_string()))
            .cloned()
            .collect();
        if !updates.is_empty() {
            state
                .run_on_shard(
                    dest,
                    doc! {"update": coll, "updates": updates, "ordered": false, "$db": db},
                )
                .await?;
        }
        if !gone.is_empty() {
            state.run_on_shard(dest,
                doc! {"delete": coll, "deletes": [{"q": {"_id": {"$in": gone}}, "limit": 0}], "$db": db},
            )
            .await?;
        }
    }
    Ok(n)
}

/// A change stream on the source collection, read for document ids.
pub(super) struct ChangeStream {
    shard: ShardType,
    db: String,
    coll: String,
    id: i64,
    pending: Vec<Bson>,
}

impl ChangeStream {
    pub(super) async fn open(
        state: &Balancer,
        shard: &ShardType,
        db: &str,
        coll: &str,
    ) -> Result<Self> {
        let reply = state.run_on_shard(shard,
            doc! {"aggregate": coll, "pipeline": [{"$changeStream": {"fullDocument": "updateLookup"}}], "cursor": {"batchSize": 0}, "$db": db},
        )
        .await
        .map_err(|e| {
            BalancerError::command(
                e.code().0,
                "ChangeStreamUnavailable",
                format!("{} cannot open a change stream for the migration: {e}", shard.id),
            )
        })?;
        let cursor = reply
            .get_document("cursor")
            .map_err(|e| BalancerError::bad_value(e.to_string()))?;
        Ok(ChangeStream {
            shard: shard.clone(),
            db: db.to_owned(),
            coll: coll.to_owned(),
            id: cursor.get_i64("id").unwrap_or(0),
            pending: cursor.get_array("firstBatch").cloned().unwrap_or_default(),
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
        let mut events = std::mem::take(&mut self.pending);
        loop {
            let reply = state.run_on_shard(&self.shard,
                doc! {"getMore": self.id, "collection": &self.coll, "batchSize": 10_000, "maxTimeMS": 20, "$db": &self.db},
            )
            .await?;
            let cursor = reply
                .get_document("cursor")
                .map_err(|e| BalancerError::bad_value(e.to_string()))?;
            let batch = cursor.get_array("nextBatch").cloned().unwrap_or_default();
            let full = batch.len() >= 10_000;
            events.extend(batch);
            if !full {
                break;
            }
        }
        let mut ids = Vec::new();
        let mut maybe_gone = Vec::new();
        let mut seen = BTreeSet::new();
        for e in events.iter().filter_map(Bson::as_document) {
            let Some(id) = e
                .get_document("documentKey")
                .ok()
                .and_then(|k| k.get("_id"))
            else {
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
                    }
                }
                Err(_) => maybe_gone.push(id.clone()),
            }
        }
        // A deleted document matters only if the destination has a copy.
        for chunk in maybe_gone.chunks(1_000) {
            let reply = state.run_on_shard(dest,
                doc! {"find": &self.coll, "filter": {"_id": {"$in": chunk.to_vec()}}, "projection": {"_id": 1}, "batchSize": 10_000, "$db": &self.db},
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
                        .filter_map(|d| d.get("_id").cloned()),
                );
            }
        }
        Ok(ids)
    }

    pub(super) async fn close(self, state: &Balancer) {
        let _ = state
            .run_on_shard(
                &self.shard,
                doc! {"killCursors": &self.coll, "cursors": [self.id], "$db": &self.db},
            )
            .await;
    }
}
