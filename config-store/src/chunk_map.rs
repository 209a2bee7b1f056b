//! The in-memory routing table of one sharded collection: which shard owns
//! which range of shard-key values.
//!
//! A [`ChunkMap`] holds [`RoutingChunk`]s, half-open ranges `[min, max)` of
//! [`KeyBytes`], in a flat array sorted by `min` beside an array of each
//! `min`'s first eight bytes (as a big-endian `u64`), rebuilt whole on every
//! refresh: a lookup is a binary search over those integers (about 800 KB
//! for 100,000 chunks, cache-friendly), with a full-key comparison only
//! among chunks whose mins share the key's first eight bytes. It is built only from chunks
//! that tile the whole key space, from the global minimum (the pattern's
//! [`min_bytes`](ShardKeyPattern::min_bytes): `MinKey` in every field, `MaxKey`
//! in descending ones) to the global maximum
//! ([`max_bytes`](ShardKeyPattern::max_bytes)), without gaps or overlaps, so
//! every key has exactly one owning chunk.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use bson::oid::ObjectId;

use crate::shard_key::{KeyBytes, ShardKeyPattern};

#[cfg(test)]
mod tests;

/// The version of a chunk (MongoDB's `lastmod` plus the collection epoch).
/// Versions are ordered by `(major, minor)`; the epoch only breaks ties so
/// that `Ord` agrees with `Eq`, since versions of different epochs (a dropped
/// and recreated collection) are not comparable — check
/// [`same_epoch`](Self::same_epoch) first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkVersion {
    /// The collection incarnation the version belongs to.
    pub epoch: ObjectId,
    /// Bumped when chunks move between shards.
    pub major: u32,
    /// Bumped when chunks split or merge.
    pub minor: u32,
}

impl ChunkVersion {
    /// Whether both versions belong to the same collection incarnation.
    pub fn same_epoch(&self, other: &ChunkVersion) -> bool {
        self.epoch == other.epoch
    }
}

impl Ord for ChunkVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.epoch.bytes()).cmp(&(
            other.major,
            other.minor,
            other.epoch.bytes(),
        ))
    }
}

impl PartialOrd for ChunkVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One chunk: the keys in `[min, max)` live on `shard`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingChunk {
    /// Inclusive lower bound.
    pub min: KeyBytes,
    /// Exclusive upper bound.
    pub max: KeyBytes,
    /// The owning shard's name.
    pub shard: String,
    /// The chunk's version.
    pub version: ChunkVersion,
}

impl RoutingChunk {
    /// Whether `key` falls in `[min, max)`.
    pub fn contains(&self, key: &KeyBytes) -> bool {
        self.min <= *key && *key < self.max
    }
}

/// Why a set of chunks is not a valid routing table. `Display` names the
/// offending chunks and keys (hex [`KeyBytes`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkMapError {
    /// No chunks at all.
    #[error("a routing table needs at least one chunk")]
    NoChunks,
    /// A chunk whose max is not above its min.
    #[error("chunk [{min}, {max}) on shard {shard} is empty or inverted")]
    EmptyChunk {
        /// Its min.
        min: KeyBytes,
        /// Its max.
        max: KeyBytes,
        /// Its shard.
        shard: String,
    },
    /// The lowest chunk does not start at a global minimum (`MinKey` in
    /// every field, `MaxKey` in descending ones).
    #[error(
        "the first chunk starts at {found}, which is not the global minimum \
         (MinKey in every field, MaxKey in descending ones)"
    )]
    NotGlobalMin {
        /// The first chunk's min.
        found: KeyBytes,
    },
    /// The lowest chunk does not start at the given global minimum.
    #[error("the first chunk starts at {found}, not at the global minimum {expected}")]
    WrongStart {
        /// The global minimum.
        expected: KeyBytes,
        /// The first chunk's min.
        found: KeyBytes,
    },
    /// The highest chunk does not end at the global maximum.
    #[error("the last chunk ends at {found}, not at the global maximum {expected}")]
    WrongEnd {
        /// The global maximum.
        expected: KeyBytes,
        /// The last chunk's max.
        found: KeyBytes,
    },
    /// Keys between two consecutive chunks belong to no chunk.
    #[error("gap: no chunk covers [{from}, {to})")]
    Gap {
        /// End of the chunk before the gap.
        from: KeyBytes,
        /// Start of the chunk after the gap.
        to: KeyBytes,
    },
    /// Two chunks both cover `[from, to)`.
    #[error("overlap: two chunks cover [{from}, {to})")]
    Overlap {
        /// Start of the later chunk.
        from: KeyBytes,
        /// End of the earlier chunk (or of the later one if that is lower).
        to: KeyBytes,
    },
    /// Chunks of different collection epochs.
    #[error("chunk starting at {min} has epoch {found}, the first chunk has {expected}")]
    MixedEpochs {
        /// The chunk's min.
        min: KeyBytes,
        /// The first chunk's epoch.
        expected: ObjectId,
        /// This chunk's epoch.
        found: ObjectId,
    },
}

/// The routing table of one collection; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ChunkMap {
    /// The chunks sorted by `min` (never empty).
    chunks: Vec<RoutingChunk>,
    /// [`prefix`] of each chunk's `min`, in the same order.
    prefixes: Vec<u64>,
    version: ChunkVersion,
    shard_versions: BTreeMap<String, ChunkVersion>,
}

impl ChunkMap {
    /// Builds a routing table from chunks in any order. The lowest `min`
    /// must be a global minimum key (each field `MinKey`, or `MaxKey` for a
    /// descending field, as [`ShardKeyPattern::min_bytes`] encodes it), and
    /// the chunks must tile up to the matching global maximum; see
    /// [`with_bounds`](Self::with_bounds) for the checks.
    pub fn new(chunks: Vec<RoutingChunk>) -> Result<Self, ChunkMapError> {
        let Some(lowest) = chunks.iter().map(|c| &c.min).min() else {
            return Err(ChunkMapError::NoChunks);
        };
        let global_min = lowest.clone();
        let global_max = crate::shard_key::global_max_matching(lowest.as_slice())
            .map(KeyBytes::from)
            .ok_or_else(|| ChunkMapError::NotGlobalMin {
                found: global_min.clone(),
            })?;
        Self::with_bounds(&global_min, &global_max, chunks)
    }

    /// [`new`](Self::new), also checking that the chunks cover exactly
    /// `pattern`'s key space.
    pub fn for_pattern(
        pattern: &ShardKeyPattern,
        chunks: Vec<RoutingChunk>,
    ) -> Result<Self, ChunkMapError> {
        Self::with_bounds(&pattern.min_bytes(), &pattern.max_bytes(), chunks)
    }

    /// Builds a routing table whose chunks, in any order, must tile
    /// `[global_min, global_max)` exactly: once sorted by `min`, the first
    /// starts at `global_min`, each ends where the next starts, the last ends
    /// at `global_max`, none is empty, and all share one epoch.
    pub fn with_bounds(
        global_min: &KeyBytes,
        global_max: &KeyBytes,
        mut chunks: Vec<RoutingChunk>,
    ) -> Result<Self, ChunkMapError> {
        chunks.sort_by(|a, b| a.min.cmp(&b.min).then_with(|| a.max.cmp(&b.max)));
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return Err(ChunkMapError::NoChunks);
        };
        if first.min != *global_min {
            return Err(ChunkMapError::WrongStart {
                expected: global_min.clone(),
                found: first.min.clone(),
            });
        }
        if last.max != *global_max {
            return Err(ChunkMapError::WrongEnd {
                expected: global_max.clone(),
                found: last.max.clone(),
            });
        }
        let epoch = first.version.epoch;
        for chunk in &chunks {
            if chunk.min >= chunk.max {
                return Err(ChunkMapError::EmptyChunk {
                    min: chunk.min.clone(),
                    max: chunk.max.clone(),
                    shard: chunk.shard.clone(),
                });
            }
            if chunk.version.epoch != epoch {
                return Err(ChunkMapError::MixedEpochs {
                    min: chunk.min.clone(),
                    expected: epoch,
                    found: chunk.version.epoch,
                });
            }
        }
        for pair in chunks.windows(2) {
            if let [before, after] = pair {
                match before.max.cmp(&after.min) {
                    Ordering::Less => {
                        return Err(ChunkMapError::Gap {
                            from: before.max.clone(),
                            to: after.min.clone(),
                        })
                    }
                    Ordering::Greater => {
                        return Err(ChunkMapError::Overlap {
                            from: after.min.clone(),
                            to: before.max.clone().min(after.max.clone()),
                        })
                    }
                    Ordering::Equal => {}
                }
            }
        }
        let mut version = first.version;
        let mut shard_versions: BTreeMap<String, ChunkVersion> = BTreeMap::new();
        for chunk in &chunks {
            version = version.max(chunk.version);
            shard_versions
                .entry(chunk.shard.clone())
                .and_modify(|v| *v = (*v).max(chunk.version))
                .or_insert(chunk.version);
        }
        let prefixes = chunks.iter().map(|c| prefix(c.min.as_slice())).collect();
        Ok(ChunkMap {
            chunks,
            prefixes,
            version,
            shard_versions,
        })
    }

    /// The chunk owning `key`: the one with the greatest `min <= key`. A key
    /// at or above the global maximum (only the all-`MaxKey` key) maps to the
    /// last chunk, one below the global minimum to the first.
    pub fn chunk_for(&self, key: &KeyBytes) -> &RoutingChunk {
        let i = self.index_for(key.as_slice());
        // `chunks` is never empty, and `index_for` is below its length.
        &self.chunks[i]
    }

    /// The index of the chunk with the greatest `min <= key` (0 when none).
    fn index_for(&self, key: &[u8]) -> usize {
        let p = prefix(key);
        // Chunks before `hi` have a prefix <= p; those from `lo` on share it
        // and need the full comparison.
        let hi = self.prefixes.partition_point(|&x| x <= p);
        let lo = match hi.checked_sub(1).map(|i| self.prefixes[i]) {
            Some(q) if q == p => self.prefixes[..hi].partition_point(|&x| x < p),
            _ => hi,
        };
        let tied = self.chunks[lo..hi].partition_point(|c| c.min.as_slice() <= key);
        (lo + tied).saturating_sub(1)
    }

    /// The chunks intersecting `[min, max)`, in key order (none if
    /// `min >= max`).
    pub fn chunks_overlapping<'a>(
        &'a self,
        min: &KeyBytes,
        max: &'a KeyBytes,
    ) -> impl Iterator<Item = &'a RoutingChunk> + 'a {
        let nonempty = min < max;
        let start = self.index_for(min.as_slice());
        self.chunks[start..]
            .iter()
            .take_while(move |chunk| nonempty && chunk.min < *max)
    }

    /// The shards owning at least one chunk.
    pub fn shards(&self) -> BTreeSet<&str> {
        self.shard_versions.keys().map(String::as_str).collect()
    }

    /// The number of chunks (never zero).
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Always `false`: a routing table has at least one chunk.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The collection version: the highest chunk version.
    pub fn version(&self) -> ChunkVersion {
        self.version
    }

    /// The shard version: the highest version among `shard`'s chunks, or
    /// `None` if it owns none.
    pub fn shard_version(&self, shard: &str) -> Option<ChunkVersion> {
        self.shard_versions.get(shard).copied()
    }

    /// All chunks in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RoutingChunk> + '_ {
        self.chunks.iter()
    }
}

/// The first eight bytes of an encoded key as a big-endian integer, zero
/// padded: `a <= b` implies `prefix(a) <= prefix(b)`.
fn prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}
