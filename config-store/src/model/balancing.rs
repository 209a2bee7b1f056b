//! What routers and the balancer service tell each other through the store:
//! move requests and their results, and routers' acknowledgements of
//! migration states.

use bson::{DateTime, Document};
use serde::{Deserialize, Serialize};

/// A `moveChunk`/`moveRange` a router received, for a balancer service to
/// run (`move_requests/<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveRequest {
    /// Unique id (an ObjectId's hex).
    #[serde(rename = "_id")]
    pub id: String,
    /// `db.coll`.
    pub ns: String,
    /// The chunk's lower bound.
    pub min: Document,
    /// The chunk's upper bound.
    pub max: Document,
    /// The destination shard.
    pub to: String,
    /// Delete the range on the source before answering.
    #[serde(rename = "waitForDelete")]
    pub wait_for_delete: bool,
    /// The router that asked (its balancer service runs it when it has one).
    #[serde(rename = "requestedBy")]
    pub requested_by: String,
    /// When.
    pub when: DateTime,
    /// The balancer service running it, once one took it.
    #[serde(rename = "takenBy", default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<String>,
}

/// The outcome of a [`MoveRequest`] (`move_results/<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveResult {
    /// The request's id.
    #[serde(rename = "_id")]
    pub id: String,
    /// 0 on success, else the MongoDB error code.
    pub code: i32,
    /// The code name (empty on success).
    #[serde(rename = "codeName")]
    pub code_name: String,
    /// The error message (empty on success).
    pub errmsg: String,
    /// How long the migration took.
    pub millis: i64,
}

/// A router's acknowledgement of what it installed for a collection
/// (`migration_acks/<ns>/<router>`): the migrations in their critical
/// section whose writes it holds, and the orphan ranges it excludes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationAck {
    /// Hex of each encoded min of a range in a critical section.
    pub mins: Vec<String>,
    /// `<shard>/<hex of the encoded min>` of each orphan range.
    #[serde(default)]
    pub orphans: Vec<String>,
}

/// The test-only fail point that pauses a migration at a state
/// (`configureFailPoint` on a router with `--enable-test-commands`; the
/// balancer service beside that router honours it).
pub const PAUSE_MIGRATION: &str = "shardgatePauseMigrationAt";

/// How far the running migration got, published by the balancer that runs
/// it (`migration_progress`) for `balancerStatus` and `shardgate status`.
/// Its state is the migration record's; this only counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationProgress {
    /// The namespace.
    pub ns: String,
    /// Inclusive lower bound of the range.
    pub min: Document,
    /// Exclusive upper bound of the range.
    pub max: Document,
    /// Source shard.
    #[serde(rename = "fromShard")]
    pub from_shard: String,
    /// Destination shard.
    #[serde(rename = "toShard")]
    pub to_shard: String,
    /// Documents copied to the destination so far (the clone phase).
    #[serde(rename = "docsCopied")]
    pub docs_copied: i64,
    /// Bytes copied so far.
    #[serde(rename = "bytesCopied")]
    pub bytes_copied: i64,
    /// The range's documents as the balancer estimated them at the start
    /// (writes during the copy can make the copy larger).
    #[serde(rename = "docsEstimate")]
    pub docs_estimate: i64,
    /// When the migration started.
    pub started: DateTime,
    /// The balancer process running it.
    pub process: String,
}
