//! `reshardCollection`'s commit: the collection moves to a new shard key
//! and a new set of chunks in one store transaction, and its orphan ranges
//! (each shard's documents it does not own, under the key that owns them)
//! are replaced by those of the new key, so a reader sees the old layout
//! with its orphan ranges or the new one with its own, never a mix.

use super::sharding::{check_tiling, orphan_key, range_key};
use super::{decode, encode, Catalog};
use crate::error::{Result, StoreError};
use crate::model::keys::{CHUNKS, COLLECTIONS, TAGS};
use crate::model::{ChunkType, CollectionType, OrphanRange, TagType};
use crate::shard_key::ShardKeyPattern;
use crate::store::{Txn, TxnOutcome};

/// Operations one commit may take (stores bound a transaction's size).
pub const RESHARD_MAX_OPS: usize = 120;

/// What a resharding commit replaces, as read under the DDL lock.
pub struct ReshardCommit<'a> {
    /// The collection as it is (old key), and as it becomes.
    pub old: &'a CollectionType,
    pub new: &'a CollectionType,
    /// The old chunks with their store revisions (unchanged since read).
    pub old_chunks: &'a [(ChunkType, u64)],
    pub new_chunks: &'a [ChunkType],
    pub old_orphans: &'a [OrphanRange],
    pub new_orphans: &'a [OrphanRange],
    /// The zone ranges of the old key (removed) and of the new (added).
    pub old_zones: &'a [TagType],
    pub new_zones: &'a [TagType],
}

impl Catalog {
    /// Changes the collection entry of `ns` with `change` as one
    /// compare-and-swap (read again and retried when another writer got in
    /// between). `change` returns false to leave the entry as it is. The
    /// entry as it is afterwards; `None` when `ns` is not sharded.
    pub async fn change_collection(
        &self,
        ns: &str,
        mut change: impl FnMut(&mut CollectionType) -> bool,
    ) -> Result<Option<CollectionType>> {
        let key = format!("{COLLECTIONS}{ns}");
        loop {
            let Some(current) = self.store().get(&key).await? else {
                return Ok(None);
            };
            let mut coll: CollectionType = decode(&key, &current.value)?;
            if !change(&mut coll) {
                return Ok(Some(coll));
            }
            let txn = Txn::default()
                .unchanged(&key, current.mod_revision)
                .put(&key, encode(&coll)?);
            if matches!(self.store().txn(txn).await?, TxnOutcome::Committed(_)) {
                return Ok(Some(coll));
            }
        }
    }

    /// Commits a resharding (see the module). ConflictingOperationInProgress
    /// when a chunk changed since it was read.
    pub async fn commit_reshard(&self, c: &ReshardCommit<'_>) -> Result<()> {
        let invariant = |e: crate::shard_key::ShardKeyError| StoreError::Invariant(e.to_string());
        let old = ShardKeyPattern::parse(&c.old.key).map_err(invariant)?;
        let new = ShardKeyPattern::parse(&c.new.key).map_err(invariant)?;
        check_tiling(&new, c.new_chunks, &new.global_min(), &new.global_max())?;
        let ns = &c.new.ns;
        let ops =
            2 + c.old_chunks.len() + c.new_chunks.len() + c.old_orphans.len() + c.new_orphans.len();
        if ops > RESHARD_MAX_OPS {
            return Err(StoreError::Rejected {
                code: 72,
                code_name: "InvalidOptions",
                message: format!("resharding {ns} takes {ops} store operations, more than {RESHARD_MAX_OPS}: merge chunks or ask for fewer (numInitialChunks)"),
            });
        }
        let mut txn = Txn::default()
            .put(format!("{COLLECTIONS}{ns}"), encode(c.new)?)
            .put(
                format!("{}{ns}", super::sharding::COLLVERSION),
                encode(&crate::catalog::CollectionVersion { major: 1, minor: 0 })?,
            );
        for (chunk, rev) in c.old_chunks {
            let key = range_key(CHUNKS, ns, &old, &chunk.min)?;
            txn = txn.unchanged(&key, *rev).delete(key);
        }
        for chunk in c.new_chunks {
            txn = txn.put(range_key(CHUNKS, ns, &new, &chunk.min)?, encode(chunk)?);
        }
        for orphan in c.old_orphans {
            txn = txn.delete(orphan_key(&old, orphan)?);
        }
        for orphan in c.new_orphans {
            txn = txn.put(orphan_key(&new, orphan)?, encode(orphan)?);
        }
        for zone in c.old_zones {
            txn = txn.delete(range_key(TAGS, ns, &old, &zone.min)?);
        }
        for zone in c.new_zones {
            txn = txn.put(range_key(TAGS, ns, &new, &zone.min)?, encode(zone)?);
        }
        match self.store().txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(()),
            TxnOutcome::Conflict => Err(StoreError::Rejected {
                code: 117,
                code_name: "ConflictingOperationInProgress",
                message: format!("chunks of {ns} changed during the resharding; retry"),
            }),
        }
    }
}
