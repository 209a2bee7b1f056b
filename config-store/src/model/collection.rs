//! `config.collections`, `config.chunks`, `config.tags` and orphan ranges.

use bson::oid::ObjectId;
use bson::{DateTime, Document, Timestamp, Uuid};
use serde::{Deserialize, Serialize};

/// A sharded collection (`config.collections`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionType {
    /// The namespace `db.coll` (`_id`).
    #[serde(rename = "_id")]
    pub ns: String,
    /// The epoch: new on every shardCollection or drop; chunk versions carry it.
    #[serde(rename = "lastmodEpoch")]
    pub epoch: ObjectId,
    /// When the collection was last sharded.
    #[serde(rename = "lastmod")]
    pub last_modified: DateTime,
    /// Creation timestamp (its presence makes mongosh match chunks by `uuid`).
    pub timestamp: Timestamp,
    /// The collection's UUID.
    pub uuid: Uuid,
    /// The shard key pattern, e.g. `{customerId: 1}` or `{_id: "hashed"}`.
    pub key: Document,
    /// Whether the shard key is unique.
    pub unique: bool,
    /// The balancer skips this collection when set.
    #[serde(rename = "noBalance", default)]
    pub no_balance: bool,
    /// Per-collection chunk size (`configureCollectionBalancing`), bytes.
    #[serde(
        rename = "maxChunkSizeBytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_chunk_size_bytes: Option<i64>,
    /// Whether the balancer merges contiguous chunks on one shard
    /// (`configureCollectionBalancing`'s `enableAutoMerger`; off unless
    /// set).
    #[serde(
        rename = "enableAutoMerger",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_auto_merger: Option<bool>,
    /// `false` after `setAllowMigrations: false`: no chunk of the
    /// collection moves.
    #[serde(
        rename = "permitMigrations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub permit_migrations: Option<bool>,
    /// `true` after `configureCollectionBalancing` with
    /// `defragmentCollection: true`, until the balancer finished it.
    #[serde(
        rename = "defragmentCollection",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub defragment_collection: Option<bool>,
    /// Set while a `drop` runs on the shards: every router holds writes to
    /// the collection (as in a migration's critical section over all of
    /// it), so none lands on a shard after the shard dropped its copy.
    #[serde(
        rename = "dropping",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub dropping: bool,
    /// An unsharded collection tracked to live off its database's primary
    /// (`moveCollection`, mongos ≥ 8.0): key `{_id: 1}`, one chunk, never
    /// split nor balanced; shown unsharded.
    #[serde(
        rename = "unsplittable",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub unsplittable: bool,
    /// The collection's default collation when it is not the simple one
    /// (the shard key's index still uses the simple one): commands that name
    /// no collation run under it.
    #[serde(
        rename = "defaultCollation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_collation: Option<Document>,
    /// Set while `reshardCollection` runs: the key it moves to and whether
    /// writes are held for its commit.
    #[serde(
        rename = "reshardingFields",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub resharding: Option<ReshardingFields>,
}

/// A resharding in progress (`config.collections`' `reshardingFields`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReshardingFields {
    /// The new shard key.
    pub key: Document,
    /// `cloning` (copying and catching up; reads and writes go on) or
    /// `committing` (every router holds writes to the collection).
    pub state: String,
    /// Set by `abortReshardCollection`: the resharding stops and removes
    /// its copies.
    #[serde(default)]
    pub abort: bool,
    /// Set by `commitReshardCollection`: commit after the current catch-up
    /// pass.
    #[serde(default)]
    pub commit: bool,
}

impl CollectionType {
    /// A newly sharded collection: a new epoch and UUID, balanced, with
    /// every option at its default.
    pub fn new(ns: &str, key: Document, unique: bool, timestamp: Timestamp) -> CollectionType {
        CollectionType {
            ns: ns.to_owned(),
            epoch: ObjectId::new(),
            last_modified: DateTime::now(),
            timestamp,
            uuid: Uuid::new(),
            key,
            unique,
            no_balance: false,
            max_chunk_size_bytes: None,
            enable_auto_merger: None,
            permit_migrations: None,
            dropping: false,
            unsplittable: false,
            defragment_collection: None,
            default_collation: None,
            resharding: None,
        }
    }
}

/// One shard-ownership record of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkHistory {
    /// From when the shard owned the chunk.
    #[serde(rename = "validAfter")]
    pub valid_after: Timestamp,
    /// The owning shard.
    pub shard: String,
}

/// A chunk: `[min, max)` of the shard-key space on one shard (`config.chunks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkType {
    /// The chunk's id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The collection's UUID.
    pub uuid: Uuid,
    /// The namespace (kept too, for tools that match chunks by `ns`).
    pub ns: String,
    /// Inclusive lower bound, a full shard-key document.
    pub min: Document,
    /// Exclusive upper bound.
    pub max: Document,
    /// The owning shard.
    pub shard: String,
    /// The chunk version `(major, minor)` as MongoDB stores it: Timestamp(major, minor).
    pub lastmod: Timestamp,
    /// The collection epoch this version belongs to.
    #[serde(rename = "lastmodEpoch")]
    pub epoch: ObjectId,
    /// Since when the current shard owns it.
    #[serde(rename = "onCurrentShardSince")]
    pub on_current_shard_since: Timestamp,
    /// Ownership history, newest first.
    #[serde(default)]
    pub history: Vec<ChunkHistory>,
    /// Set when the chunk is above the chunk size and cannot be split.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jumbo: bool,
}

impl ChunkType {
    /// The chunk's major version.
    pub fn major(&self) -> u32 {
        self.lastmod.time
    }

    /// The chunk's minor version.
    pub fn minor(&self) -> u32 {
        self.lastmod.increment
    }
}

/// A zone range of a namespace (`config.tags`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagType {
    /// The range's id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The namespace.
    pub ns: String,
    /// Inclusive lower bound.
    pub min: Document,
    /// Exclusive upper bound.
    pub max: Document,
    /// The zone name.
    pub tag: String,
}

/// A range whose documents are on a shard that does not own them: a
/// migration's destination before commit, its source before range deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrphanRange {
    /// The namespace.
    pub ns: String,
    /// The shard holding the documents.
    pub shard: String,
    /// Inclusive lower bound.
    pub min: Document,
    /// Exclusive upper bound.
    pub max: Document,
}
