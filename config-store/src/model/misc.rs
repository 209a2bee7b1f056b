//! `config.version`, `config.mongos`, `config.locks`, `config.changelog` and
//! migration records.

use bson::oid::ObjectId;
use bson::{DateTime, Document};
use serde::{Deserialize, Serialize};

/// The cluster identity (`config.version`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionType {
    /// Always 1.
    #[serde(rename = "_id")]
    pub id: i32,
    /// The cluster's id, made once.
    #[serde(rename = "clusterId")]
    pub cluster_id: ObjectId,
}

/// A live router (`config.mongos`), kept under the router's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MongosType {
    /// `host:port` the router listens on.
    #[serde(rename = "_id")]
    pub id: String,
    /// Last time it reported itself.
    pub ping: DateTime,
    /// Seconds it has been up.
    pub up: i64,
    /// Always true.
    pub waiting: bool,
    /// The MongoDB version it speaks for.
    #[serde(rename = "mongoVersion")]
    pub mongo_version: String,
    /// shardgate's own version.
    #[serde(rename = "shardgateVersion")]
    pub shardgate_version: String,
}

/// A held lock (`config.locks`), kept under the holder's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockType {
    /// The lock name (`balancer`, or a namespace).
    #[serde(rename = "_id")]
    pub id: String,
    /// 2 while held, as MongoDB shows it.
    pub state: i32,
    /// The holder (`host:port`).
    pub process: String,
    /// When it was taken.
    pub when: DateTime,
    /// Why.
    pub why: String,
}

/// The state of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    /// Copying the range to the destination.
    Cloning,
    /// Applying changes made during the copy.
    Catchup,
    /// Writes to the range are held.
    Critical,
    /// Ownership changed; the source still has to delete the range.
    Committed,
    /// Given up; the destination's copy is deleted.
    Aborted,
}

impl MigrationState {
    /// Its name as the record stores it.
    pub fn name(self) -> &'static str {
        match self {
            MigrationState::Cloning => "cloning",
            MigrationState::Catchup => "catchup",
            MigrationState::Critical => "critical",
            MigrationState::Committed => "committed",
            MigrationState::Aborted => "aborted",
        }
    }
}

/// A migration record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationType {
    /// The namespace.
    pub ns: String,
    /// Inclusive lower bound.
    pub min: Document,
    /// Exclusive upper bound.
    pub max: Document,
    /// Source shard.
    #[serde(rename = "fromShard")]
    pub from_shard: String,
    /// Destination shard.
    #[serde(rename = "toShard")]
    pub to_shard: String,
    /// Where it is.
    pub state: MigrationState,
    /// The balancer lock's fencing token when it started.
    pub fencing: u64,
}

/// One entry of `config.changelog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangelogEntry {
    /// `<server>-<time>-<sequence>`, as MongoDB shapes it.
    #[serde(rename = "_id")]
    pub id: String,
    /// The router that made the change.
    pub server: String,
    /// The client that asked for it.
    #[serde(rename = "clientAddr")]
    pub client_addr: String,
    /// When.
    pub time: DateTime,
    /// What (`shardCollection.end`, `split`, `merge`, `moveChunk.from`, …).
    pub what: String,
    /// The namespace.
    pub ns: String,
    /// Details of the change.
    pub details: Document,
}
