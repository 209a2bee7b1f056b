//! Merging chunks: contiguous chunks on one shard become one, the minor
//! version bumped; and a chunk's jumbo flag. Used by the router's `mergeChunks`,
//! `mergeAllChunksOnShard` and `configureCollectionBalancing`'s
//! defragmentation, and by the balancer's auto-merger.

use bson::{doc, Document, Timestamp};

use super::sharding::{new_chunk, ChunkChange, CollectionVersion};
use super::Catalog;
use crate::error::{Result, StoreError};
use crate::model::ChunkType;
use crate::shard_key::ShardKeyPattern;

fn illegal(message: String) -> StoreError {
    StoreError::Rejected {
        code: 20,
        code_name: "IllegalOperation",
        message,
    }
}

fn conflict(ns: &str) -> StoreError {
    StoreError::Rejected {
        code: 117,
        code_name: "ConflictingOperationInProgress",
        message: format!("chunks of {ns} kept changing; retry the merge"),
    }
}

impl Catalog {
    /// Merges the chunks of `ns` that exactly cover `[min, max)`, all on one
    /// shard, into one; retries conflicts. Returns the changelog details.
    pub async fn merge_range(
        &self,
        ns: &str,
        min: &Document,
        max: &Document,
        now: Timestamp,
    ) -> Result<Document> {
        for _attempt in 0..5 {
            let coll = self.sharded_collection(ns).await?;
            let pattern = ShardKeyPattern::parse(&coll.key).map_err(|e| illegal(e.to_string()))?;
            let version = self.collection_version(ns).await?;
            let (lo, hi) = (
                pattern
                    .encode_bound(min)
                    .map_err(|e| illegal(e.to_string()))?,
                pattern
                    .encode_bound(max)
                    .map_err(|e| illegal(e.to_string()))?,
            );
            let inside: Vec<(ChunkType, u64)> = self
                .chunks(ns)
                .await?
                .into_iter()
                .filter(|(c, _)| {
                    let cl = pattern.encode_bound(&c.min).ok();
                    let ch = pattern.encode_bound(&c.max).ok();
                    cl.is_some_and(|cl| cl < hi) && ch.is_some_and(|ch| ch > lo)
                })
                .collect();
            let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
                return Err(illegal(format!("no chunks of {ns} in [{min}, {max})")));
            };
            if first.0.min != *min || last.0.max != *max {
                return Err(illegal(format!(
                    "could not merge chunks: [{min}, {max}) does not start and end at chunk boundaries"
                )));
            }
            if inside.len() < 2 {
                return Err(illegal(format!(
                    "could not merge chunks: [{min}, {max}) is a single chunk already"
                )));
            }
            let shard = first.0.shard.clone();
            if let Some((other, _)) = inside.iter().find(|(c, _)| c.shard != shard) {
                return Err(illegal(format!(
                    "could not merge chunks: [{}, {}) is on shard {} but [{min}, …) starts on {shard}",
                    other.min, other.max, other.shard
                )));
            }
            let v = version.0;
            let merged = new_chunk(
                &coll,
                min.clone(),
                max.clone(),
                &shard,
                CollectionVersion {
                    major: v.major,
                    minor: v.minor + 1,
                },
                now,
            );
            let count = inside.len();
            let change = ChunkChange {
                removed: inside,
                added: vec![merged],
            };
            if self.apply_chunk_change(&coll, version, &change).await? {
                return Ok(doc! {"min": min, "max": max, "merged": count as i64, "shard": &shard});
            }
        }
        Err(conflict(ns))
    }

    /// Merges every run of two or more contiguous chunks of `ns` on `shard`
    /// (on every shard when `None`). Returns each merge's details.
    pub async fn merge_all_on_shard(
        &self,
        ns: &str,
        shard: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<Document>> {
        let chunks: Vec<ChunkType> = self.chunks(ns).await?.into_iter().map(|(c, _)| c).collect();
        let mut runs: Vec<(Document, Document)> = Vec::new();
        let mut i = 0;
        while i < chunks.len() {
            let mut j = i;
            while j + 1 < chunks.len()
                && chunks[j + 1].shard == chunks[i].shard
                && chunks[j + 1].min == chunks[j].max
            {
                j += 1;
            }
            if j > i && shard.is_none_or(|s| s == chunks[i].shard) {
                runs.push((chunks[i].min.clone(), chunks[j].max.clone()));
            }
            i = j + 1;
        }
        let mut done = Vec::new();
        for (min, max) in runs {
            done.push(self.merge_range(ns, &min, &max, now).await?);
        }
        Ok(done)
    }

    /// Sets the jumbo flag of the chunk `[min, max)` of `ns`; false when no
    /// chunk has these bounds. Retries conflicts.
    pub async fn set_jumbo(
        &self,
        ns: &str,
        min: &Document,
        max: &Document,
        jumbo: bool,
    ) -> Result<bool> {
        for _attempt in 0..5 {
            let Some(coll) = self.collection(ns).await? else {
                return Ok(false);
            };
            let version = self.collection_version(ns).await?;
            let Some((chunk, rev)) = self
                .chunks(ns)
                .await?
                .into_iter()
                .find(|(c, _)| c.min == *min && c.max == *max)
            else {
                return Ok(false);
            };
            if chunk.jumbo == jumbo {
                return Ok(true);
            }
            let mut changed = chunk.clone();
            changed.jumbo = jumbo;
            let change = ChunkChange {
                removed: vec![(chunk, rev)],
                added: vec![changed],
            };
            if self.apply_chunk_change(&coll, version, &change).await? {
                return Ok(true);
            }
        }
        Err(conflict(ns))
    }
}
