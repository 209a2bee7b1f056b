//! Splitting a chunk: two pieces on the same shard, minor versions bumped,
//! the parent's ownership history kept. Used by the router's `split` and
//! `moveRange` and by the balancer's auto-split.

use bson::{doc, Document, Timestamp};

use super::sharding::{new_chunk, ChunkChange, CollectionVersion};
use super::Catalog;
use crate::error::{Result, StoreError};
use crate::model::{ChunkType, CollectionType};
use crate::shard_key::ShardKeyPattern;

fn cannot_split(message: String) -> StoreError {
    StoreError::Rejected {
        code: 87,
        code_name: "CannotSplit",
        message,
    }
}

fn bad_key(e: crate::shard_key::ShardKeyError) -> StoreError {
    let (code, code_name) = e.code();
    StoreError::Rejected {
        code,
        code_name,
        message: e.to_string(),
    }
}

/// A split piece keeps the parent's ownership history.
fn carry(mut piece: ChunkType, parent: &ChunkType) -> ChunkType {
    piece.history = parent.history.clone();
    piece.on_current_shard_since = parent.on_current_shard_since;
    piece
}

impl Catalog {
    /// Splits chunk `index` of `chunks` (as read with `version`) at `at`.
    /// `Some(details)` (for the changelog) once split; `None` on a conflict
    /// (re-read and retry); CannotSplit (87) when `at` is not strictly
    /// inside the chunk.
    pub async fn split_chunk(
        &self,
        coll: &CollectionType,
        chunks: &[(ChunkType, u64)],
        version: (CollectionVersion, u64),
        index: usize,
        at: &Document,
        now: Timestamp,
    ) -> Result<Option<Document>> {
        let pattern = ShardKeyPattern::parse(&coll.key).map_err(bad_key)?;
        let (chunk, rev) = chunks
            .get(index)
            .ok_or_else(|| StoreError::Invariant("no such chunk".into()))?;
        let at_key = pattern.encode_bound(at).map_err(bad_key)?;
        let lo = pattern.encode_bound(&chunk.min).map_err(bad_key)?;
        let hi = pattern.encode_bound(&chunk.max).map_err(bad_key)?;
        if at_key <= lo || at_key >= hi {
            return Err(cannot_split(format!(
                "cannot split chunk [{}, {}) at {at}: the split point must lie strictly inside the chunk",
                chunk.min, chunk.max
            )));
        }
        let v = version.0;
        let piece = |min: &Document, max: &Document, minor: u32| {
            let version = CollectionVersion {
                major: v.major,
                minor,
            };
            carry(
                new_chunk(coll, min.clone(), max.clone(), &chunk.shard, version, now),
                chunk,
            )
        };
        let change = ChunkChange {
            removed: vec![(chunk.clone(), *rev)],
            added: vec![
                piece(&chunk.min, at, v.minor + 1),
                piece(at, &chunk.max, v.minor + 2),
            ],
        };
        if !self.apply_chunk_change(coll, version, &change).await? {
            return Ok(None);
        }
        Ok(Some(doc! {
            "before": {"min": &chunk.min, "max": &chunk.max},
            "left": {"min": &chunk.min, "max": at},
            "right": {"min": at, "max": &chunk.max},
        }))
    }

    /// Splits `ns` at `at`, retrying conflicts; `None` when `at` is already
    /// a chunk bound.
    pub async fn split_at(
        &self,
        ns: &str,
        at: &Document,
        now: Timestamp,
    ) -> Result<Option<Document>> {
        for _attempt in 0..5 {
            let coll = self.sharded_collection(ns).await?;
            let pattern = ShardKeyPattern::parse(&coll.key).map_err(bad_key)?;
            let version = self.collection_version(ns).await?;
            let chunks = self.chunks(ns).await?;
            let key = pattern.encode_bound(at).map_err(bad_key)?;
            let index = chunks
                .iter()
                .position(|(c, _)| {
                    let lo = pattern.encode_bound(&c.min).ok();
                    let hi = pattern.encode_bound(&c.max).ok();
                    lo.is_some_and(|l| l <= key) && hi.is_some_and(|h| key < h)
                })
                .ok_or_else(|| StoreError::Invariant("chunks do not cover the key".into()))?;
            if pattern.encode_bound(&chunks[index].0.min).ok() == Some(key) {
                return Ok(None);
            }
            if let Some(details) = self
                .split_chunk(&coll, &chunks, version, index, at, now)
                .await?
            {
                return Ok(Some(details));
            }
        }
        Err(StoreError::Rejected {
            code: 117,
            code_name: "ConflictingOperationInProgress",
            message: format!("chunks of {ns} kept changing; retry the split"),
        })
    }
}
