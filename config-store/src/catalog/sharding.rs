//! Sharded collections and their chunks.
//!
//! Each collection has a `collversion/<ns>` key holding its collection
//! version; every chunk change compares and bumps it in the same
//! transaction, so chunk changes of one collection are serialized and
//! versions never repeat. Chunk keys are `chunks/<ns>/<hex of encoded min>`,
//! so a prefix scan returns them in shard-key order.

use bson::oid::ObjectId;
use bson::{doc, Document, Timestamp};
use serde::{Deserialize, Serialize};

use super::{decode, encode, Catalog};
use crate::error::{Result, StoreError};
use crate::model::keys::{CHUNKS, COLLECTIONS, MIGRATIONS, ORPHANS};
use crate::model::{ChunkHistory, ChunkType, CollectionType, MigrationType, OrphanRange};
use crate::shard_key::ShardKeyPattern;
use crate::store::{Txn, TxnOutcome};

pub(crate) const COLLVERSION: &str = "collversion/";
/// Most writes put in one transaction (etcd refuses more than 128 operations).
const TXN_BATCH: usize = 100;

/// A collection's version: the highest chunk version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CollectionVersion {
    /// Bumped by migrations.
    pub major: u32,
    /// Bumped by splits and merges.
    pub minor: u32,
}

/// A change of chunks: `removed` (as read, with their revisions) are
/// replaced by `added`, which must cover exactly the same range.
#[derive(Debug, Clone, Default)]
pub struct ChunkChange {
    /// The chunks being replaced and the revision each was read at.
    pub removed: Vec<(ChunkType, u64)>,
    /// The chunks replacing them.
    pub added: Vec<ChunkType>,
}

/// The store key of a chunk (or zone range) starting at `min`.
pub(crate) fn range_key(
    prefix: &str,
    ns: &str,
    pattern: &ShardKeyPattern,
    min: &Document,
) -> Result<String> {
    let encoded = pattern
        .encode_bound(min)
        .map_err(|e| StoreError::Invariant(e.to_string()))?;
    Ok(format!("{prefix}{ns}/{}", hex(encoded.as_slice())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `chunks` (any order) tile `[lo, hi)` exactly.
pub(crate) fn check_tiling(
    pattern: &ShardKeyPattern,
    chunks: &[ChunkType],
    lo: &Document,
    hi: &Document,
) -> Result<()> {
    let enc = |d: &Document| {
        pattern
            .encode_bound(d)
            .map_err(|e| StoreError::Invariant(format!("bad chunk bound {d}: {e}")))
    };
    let mut ranges = chunks
        .iter()
        .map(|c| Ok((enc(&c.min)?, enc(&c.max)?, c)))
        .collect::<Result<Vec<_>>>()?;
    ranges.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = enc(lo)?;
    for (min, max, chunk) in &ranges {
        if *min != expected {
            let what = if *min > expected {
                "a gap"
            } else {
                "an overlap"
            };
            return Err(StoreError::Invariant(format!(
                "chunks would leave {what} at {} (chunk [{}, {}))",
                chunk.min, chunk.min, chunk.max
            )));
        }
        if max <= min {
            return Err(StoreError::Invariant(format!(
                "empty or inverted chunk [{}, {})",
                chunk.min, chunk.max
            )));
        }
        expected = max.clone();
    }
    if expected != enc(hi)? {
        return Err(StoreError::Invariant(format!(
            "chunks would not reach {hi}: the key space would have a gap"
        )));
    }
    Ok(())
}

impl Catalog {
    /// Every sharded collection, by namespace.
    pub async fn collections(&self) -> Result<Vec<CollectionType>> {
        self.list(COLLECTIONS).await
    }

    /// One sharded collection.
    pub async fn collection(&self, ns: &str) -> Result<Option<CollectionType>> {
        let key = format!("{COLLECTIONS}{ns}");
        match self.store().get(&key).await? {
            Some(v) => decode(&key, &v.value).map(Some),
            None => Ok(None),
        }
    }

    /// The chunks of `ns` in shard-key order, each with its revision.
    pub async fn chunks(&self, ns: &str) -> Result<Vec<(ChunkType, u64)>> {
        self.store()
            .list(&format!("{CHUNKS}{ns}/"))
            .await?
            .into_iter()
            .map(|(k, v)| decode(&k, &v.value).map(|c| (c, v.mod_revision)))
            .collect()
    }

    /// The collection version and the revision of its key.
    pub async fn collection_version(&self, ns: &str) -> Result<(CollectionVersion, u64)> {
        let key = format!("{COLLVERSION}{ns}");
        match self.store().get(&key).await? {
            Some(v) => Ok((decode(&key, &v.value)?, v.mod_revision)),
            None => Err(StoreError::Invariant(format!("{ns} is not sharded"))),
        }
    }

    /// Records a newly sharded collection with its initial chunks, which
    /// must tile the whole key space. False if `ns` is already sharded.
    pub async fn create_sharded_collection(
        &self,
        coll: &CollectionType,
        chunks: &[ChunkType],
    ) -> Result<bool> {
        let pattern =
            ShardKeyPattern::parse(&coll.key).map_err(|e| StoreError::Invariant(e.to_string()))?;
        check_tiling(
            &pattern,
            chunks,
            &pattern.global_min(),
            &pattern.global_max(),
        )?;
        let version = chunks
            .iter()
            .map(|c| CollectionVersion {
                major: c.major(),
                minor: c.minor(),
            })
            .max()
            .unwrap_or(CollectionVersion { major: 1, minor: 0 });
        let coll_key = format!("{COLLECTIONS}{}", coll.ns);
        let mut chunk_puts = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            chunk_puts.push((
                range_key(CHUNKS, &coll.ns, &pattern, &chunk.min)?,
                encode(chunk)?,
            ));
        }
        // Stores bound the size of one transaction (etcd: 128 operations), so
        // many initial chunks are written first; they are invisible until
        // the collection entry that names them commits.
        let inline = chunk_puts.len() <= TXN_BATCH;
        if !inline {
            for batch in chunk_puts.chunks(TXN_BATCH) {
                let txn = batch
                    .iter()
                    .fold(Txn::default(), |t, (k, v)| t.put(k.clone(), v.clone()));
                self.store().txn(txn).await?;
            }
        }
        let mut txn = Txn::default()
            .absent(&coll_key)
            .put(&coll_key, encode(coll)?)
            .put(format!("{COLLVERSION}{}", coll.ns), encode(&version)?);
        if inline {
            for (k, v) in chunk_puts {
                txn = txn.put(k, v);
            }
        }
        Ok(matches!(
            self.store().txn(txn).await?,
            TxnOutcome::Committed(_)
        ))
    }

    /// Applies a chunk change if the collection version and every removed
    /// chunk are unchanged since read; the added chunks must tile exactly the
    /// range the removed ones covered. Returns false on a conflict (re-read
    /// and retry).
    pub async fn apply_chunk_change(
        &self,
        coll: &CollectionType,
        read_version: (CollectionVersion, u64),
        change: &ChunkChange,
    ) -> Result<bool> {
        self.apply_chunk_change_with(coll, read_version, change, Txn::default())
            .await
    }

    /// [`apply_chunk_change`](Self::apply_chunk_change) with more compares
    /// and writes in the same transaction (a migration's commit).
    pub async fn apply_chunk_change_with(
        &self,
        coll: &CollectionType,
        read_version: (CollectionVersion, u64),
        change: &ChunkChange,
        extra: Txn,
    ) -> Result<bool> {
        let pattern =
            ShardKeyPattern::parse(&coll.key).map_err(|e| StoreError::Invariant(e.to_string()))?;
        let removed: Vec<ChunkType> = change.removed.iter().map(|(c, _)| c.clone()).collect();
        let (lo, hi) = span(&pattern, &removed)?;
        check_tiling(&pattern, &removed, &lo, &hi)?;
        check_tiling(&pattern, &change.added, &lo, &hi)?;
        let new_version = change
            .added
            .iter()
            .map(|c| CollectionVersion {
                major: c.major(),
                minor: c.minor(),
            })
            .max()
            .unwrap_or(read_version.0)
            .max(read_version.0);
        let vkey = format!("{COLLVERSION}{}", coll.ns);
        let mut txn = Txn::default()
            .unchanged(&vkey, read_version.1)
            .put(&vkey, encode(&new_version)?);
        let mut added = Vec::with_capacity(change.added.len());
        for chunk in &change.added {
            added.push((
                range_key(CHUNKS, &coll.ns, &pattern, &chunk.min)?,
                encode(chunk)?,
            ));
        }
        for (chunk, rev) in &change.removed {
            let key = range_key(CHUNKS, &coll.ns, &pattern, &chunk.min)?;
            txn = txn.unchanged(&key, *rev);
            // A chunk keeping its min is overwritten by the put below.
            if !added.iter().any(|(k, _)| *k == key) {
                txn = txn.delete(key);
            }
        }
        for (key, value) in added {
            txn = txn.put(key, value);
        }
        txn.compares.extend(extra.compares);
        txn.ops.extend(extra.ops);
        Ok(matches!(
            self.store().txn(txn).await?,
            TxnOutcome::Committed(_)
        ))
    }

    /// Forgets a dropped sharded collection: its entry and version first
    /// (atomically), then its chunks and zone ranges.
    pub async fn drop_collection(&self, ns: &str) -> Result<()> {
        let head = Txn::default()
            .delete(format!("{COLLECTIONS}{ns}"))
            .delete(format!("{COLLVERSION}{ns}"));
        self.store().txn(head).await?;
        // Without the entry the chunks are unreachable; remove them in batches.
        for prefix in [CHUNKS, crate::model::keys::TAGS] {
            let keys: Vec<String> = self
                .store()
                .list(&format!("{prefix}{ns}/"))
                .await?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            for batch in keys.chunks(TXN_BATCH) {
                let txn = batch
                    .iter()
                    .fold(Txn::default(), |t, k| t.delete(k.clone()));
                self.store().txn(txn).await?;
            }
        }
        Ok(())
    }

    /// Renames the sharded collection `from` to `to` (which must not be a
    /// sharded collection): the same UUID, key and chunks under a new epoch,
    /// its zone ranges moved along. The new entry is written before the old
    /// one is removed, so a crash between leaves both, never neither.
    pub async fn rename_collection(&self, from: &str, to: &str, now: Timestamp) -> Result<()> {
        let rejected = |code, code_name, message: String| StoreError::Rejected {
            code,
            code_name,
            message,
        };
        let coll = self.collection(from).await?.ok_or_else(|| {
            rejected(118, "NamespaceNotSharded", format!("{from} is not sharded"))
        })?;
        let pattern =
            ShardKeyPattern::parse(&coll.key).map_err(|e| StoreError::Invariant(e.to_string()))?;
        let mut renamed = coll.clone();
        renamed.ns = to.to_owned();
        renamed.epoch = ObjectId::new();
        renamed.timestamp = now;
        renamed.last_modified = bson::DateTime::now();
        let chunks: Vec<ChunkType> = self
            .chunks(from)
            .await?
            .into_iter()
            .map(|(mut c, _)| {
                c.ns = to.to_owned();
                c.epoch = renamed.epoch;
                c
            })
            .collect();
        if !self.create_sharded_collection(&renamed, &chunks).await? {
            return Err(rejected(
                48,
                "NamespaceExists",
                format!("{to} is a sharded collection already"),
            ));
        }
        for mut zone in self.zone_ranges(from).await? {
            zone.ns = to.to_owned();
            let key = range_key(crate::model::keys::TAGS, to, &pattern, &zone.min)?;
            self.store()
                .txn(Txn::default().put(key, encode(&zone)?))
                .await?;
        }
        self.drop_collection(from).await
    }

    /// The orphan ranges of `ns` on every shard.
    pub async fn orphan_ranges(&self, ns: &str) -> Result<Vec<OrphanRange>> {
        self.list(&format!("{ORPHANS}{ns}/")).await
    }

    /// Records that `range.shard` holds documents of `[min, max)` it does not own.
    pub async fn add_orphan_range(
        &self,
        pattern: &ShardKeyPattern,
        range: &OrphanRange,
    ) -> Result<()> {
        let key = orphan_key(pattern, range)?;
        self.store()
            .txn(Txn::default().put(key, encode(range)?))
            .await?;
        Ok(())
    }

    /// Forgets an orphan range (its documents were deleted).
    pub async fn remove_orphan_range(
        &self,
        pattern: &ShardKeyPattern,
        range: &OrphanRange,
    ) -> Result<()> {
        let key = orphan_key(pattern, range)?;
        self.store().txn(Txn::default().delete(key)).await?;
        Ok(())
    }

    /// The migration records of `ns`.
    pub async fn migrations(&self, ns: &str) -> Result<Vec<MigrationType>> {
        self.list(&format!("{MIGRATIONS}{ns}/")).await
    }

    /// Writes a migration record (`migrations/<ns>/<hex min>`). Routers hold
    /// writes to its range while it is in the critical section.
    pub async fn put_migration(
        &self,
        pattern: &ShardKeyPattern,
        migration: &MigrationType,
    ) -> Result<()> {
        self.put_migration_fenced(pattern, migration, Txn::default())
            .await
            .map(|_| ())
    }

    /// [`put_migration`](Self::put_migration) if `fence` (the migration
    /// lock's compare) still holds; false when it does not.
    pub async fn put_migration_fenced(
        &self,
        pattern: &ShardKeyPattern,
        migration: &MigrationType,
        fence: Txn,
    ) -> Result<bool> {
        let key = range_key(MIGRATIONS, &migration.ns, pattern, &migration.min)?;
        let txn = fence.put(key, encode(migration)?);
        Ok(matches!(
            self.store().txn(txn).await?,
            TxnOutcome::Committed(_)
        ))
    }

    /// Removes a migration record.
    pub async fn remove_migration(
        &self,
        pattern: &ShardKeyPattern,
        migration: &MigrationType,
    ) -> Result<()> {
        let key = range_key(MIGRATIONS, &migration.ns, pattern, &migration.min)?;
        self.store().txn(Txn::default().delete(key)).await?;
        Ok(())
    }

    /// The writes that commit a migration with `change` (the chunk's new
    /// owner): the destination's orphan range goes, the source's copy
    /// becomes one, and the record says `committed`. `fence` is a compare
    /// (the balancer lock) that must still hold.
    pub fn migration_commit_ops(
        &self,
        pattern: &ShardKeyPattern,
        migration: &MigrationType,
        fence: Txn,
    ) -> Result<Txn> {
        let dest = OrphanRange {
            ns: migration.ns.clone(),
            shard: migration.to_shard.clone(),
            min: migration.min.clone(),
            max: migration.max.clone(),
        };
        let source = OrphanRange {
            shard: migration.from_shard.clone(),
            ..dest.clone()
        };
        let mut committed = migration.clone();
        committed.state = crate::model::MigrationState::Committed;
        let key = range_key(MIGRATIONS, &migration.ns, pattern, &migration.min)?;
        Ok(fence
            .delete(orphan_key(pattern, &dest)?)
            .put(orphan_key(pattern, &source)?, encode(&source)?)
            .put(key, encode(&committed)?))
    }

    /// Starts a migration: the record (`cloning`) and the destination's
    /// orphan range, if no migration of this collection is recorded.
    pub async fn start_migration(
        &self,
        pattern: &ShardKeyPattern,
        migration: &MigrationType,
        fence: Txn,
    ) -> Result<bool> {
        if !self.migrations(&migration.ns).await?.is_empty() {
            return Ok(false);
        }
        let dest = OrphanRange {
            ns: migration.ns.clone(),
            shard: migration.to_shard.clone(),
            min: migration.min.clone(),
            max: migration.max.clone(),
        };
        let key = range_key(MIGRATIONS, &migration.ns, pattern, &migration.min)?;
        let txn = fence
            .absent(&key)
            .put(key, encode(migration)?)
            .put(orphan_key(pattern, &dest)?, encode(&dest)?);
        Ok(matches!(
            self.store().txn(txn).await?,
            TxnOutcome::Committed(_)
        ))
    }

    /// Ends a migration: removes its record and the orphan range of
    /// `holder` (the destination after an abort, the source after its range
    /// was deleted).
    pub async fn finish_migration(
        &self,
        pattern: &ShardKeyPattern,
        migration: &MigrationType,
        holder: &str,
    ) -> Result<()> {
        let orphan = OrphanRange {
            ns: migration.ns.clone(),
            shard: holder.to_owned(),
            min: migration.min.clone(),
            max: migration.max.clone(),
        };
        let key = range_key(MIGRATIONS, &migration.ns, pattern, &migration.min)?;
        self.store()
            .txn(
                Txn::default()
                    .delete(key)
                    .delete(orphan_key(pattern, &orphan)?),
            )
            .await?;
        Ok(())
    }

    /// The entry of the sharded collection `ns`; NamespaceNotSharded (118)
    /// when it is not sharded.
    pub async fn sharded_collection(&self, ns: &str) -> Result<CollectionType> {
        self.collection(ns)
            .await?
            .ok_or_else(|| StoreError::Rejected {
                code: 118,
                code_name: "NamespaceNotSharded",
                message: format!("{ns} is not sharded"),
            })
    }

    /// Updates fields of a collection entry (noBalance, chunk size).
    pub async fn update_collection(&self, coll: &CollectionType) -> Result<()> {
        let key = format!("{COLLECTIONS}{}", coll.ns);
        self.store()
            .txn(Txn::default().put(key, encode(coll)?))
            .await?;
        Ok(())
    }
}

/// `orphans/<ns>/<shard>/<hex min>`.
pub(crate) fn orphan_key(pattern: &ShardKeyPattern, range: &OrphanRange) -> Result<String> {
    range_key(
        ORPHANS,
        &format!("{}/{}", range.ns, range.shard),
        pattern,
        &range.min,
    )
}

/// The lowest min and highest max of `chunks`.
fn span(pattern: &ShardKeyPattern, chunks: &[ChunkType]) -> Result<(Document, Document)> {
    let enc = |d: &Document| {
        pattern
            .encode_bound(d)
            .map_err(|e| StoreError::Invariant(e.to_string()))
    };
    let mut lo: Option<(crate::shard_key::KeyBytes, &Document)> = None;
    let mut hi: Option<(crate::shard_key::KeyBytes, &Document)> = None;
    for c in chunks {
        let (min, max) = (enc(&c.min)?, enc(&c.max)?);
        if lo.as_ref().is_none_or(|(k, _)| min < *k) {
            lo = Some((min, &c.min));
        }
        if hi.as_ref().is_none_or(|(k, _)| max > *k) {
            hi = Some((max, &c.max));
        }
    }
    match (lo, hi) {
        (Some((_, l)), Some((_, h))) => Ok((l.clone(), h.clone())),
        _ => Err(StoreError::Invariant(
            "a chunk change must replace at least one chunk".into(),
        )),
    }
}

/// A new chunk with a fresh id and one history entry.
pub fn new_chunk(
    coll: &CollectionType,
    min: Document,
    max: Document,
    shard: &str,
    version: CollectionVersion,
    now: Timestamp,
) -> ChunkType {
    ChunkType {
        id: ObjectId::new(),
        uuid: coll.uuid,
        ns: coll.ns.clone(),
        min,
        max,
        shard: shard.to_owned(),
        lastmod: Timestamp {
            time: version.major,
            increment: version.minor,
        },
        epoch: coll.epoch,
        on_current_shard_since: now,
        history: vec![ChunkHistory {
            valid_after: now,
            shard: shard.to_owned(),
        }],
        jumbo: false,
    }
}

/// Shapes a version as `{major, minor}` for replies and logs.
pub fn version_doc(v: CollectionVersion) -> Document {
    doc! {"major": v.major as i64, "minor": v.minor as i64}
}
