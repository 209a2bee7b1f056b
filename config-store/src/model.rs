//! The metadata documents, shaped as the `config` database of a real cluster
//! so the `config` view can show them as they are, and the store keys they
//! live under.

mod balancing;
mod collection;
mod database;
mod misc;
mod namespace;
mod shard;

pub use balancing::{MigrationAck, MigrationProgress, MoveRequest, MoveResult, PAUSE_MIGRATION};
pub use collection::{
    ChunkHistory, ChunkType, CollectionType, OrphanRange, ReshardingFields, TagType,
};
pub use database::{DatabaseType, DatabaseVersion};
pub use misc::{ChangelogEntry, LockType, MigrationState, MigrationType, MongosType, VersionType};
pub use namespace::Namespace;
pub use shard::ShardType;

/// Store key prefixes, one per metadata kind.
pub mod keys {
    /// `shards/<name>`
    pub const SHARDS: &str = "shards/";
    /// `databases/<name>`
    pub const DATABASES: &str = "databases/";
    /// `collections/<ns>`
    pub const COLLECTIONS: &str = "collections/";
    /// `chunks/<ns>/<hex of the encoded min>`
    pub const CHUNKS: &str = "chunks/";
    /// `tags/<ns>/<hex of the encoded min>`
    pub const TAGS: &str = "tags/";
    /// `settings/<_id>`
    pub const SETTINGS: &str = "settings/";
    /// `config.clusterParameters`: one document per parameter set.
    pub const CLUSTER_PARAMETERS: &str = "cluster_parameters/";
    /// `config.queryAnalyzers`: `query_analyzers/<ns>`, one document per
    /// collection `configureQueryAnalyzer` ever turned on.
    pub const QUERY_ANALYZERS: &str = "query_analyzers/";
    /// The feature compatibility version (`admin.system.version`'s
    /// `featureCompatibilityVersion` document on a mongod).
    pub const FCV: &str = "feature_compatibility_version";
    /// `version`
    pub const VERSION: &str = "version";
    /// `mongos/<host:port>` (leased)
    pub const MONGOS: &str = "mongos/";
    /// `locks/<name>` (leased)
    pub const LOCKS: &str = "locks/";
    /// `migrations/<ns>/<hex min>`
    pub const MIGRATIONS: &str = "migrations/";
    /// `orphans/<ns>/<shard>/<hex min>`
    pub const ORPHANS: &str = "orphans/";
    /// `changelog/<20-digit sequence>`
    pub const CHANGELOG: &str = "changelog/";
    /// `move_requests/<id>`
    pub const MOVE_REQUESTS: &str = "move_requests/";
    /// `move_results/<id>`
    pub const MOVE_RESULTS: &str = "move_results/";
    /// `migration_acks/<ns>/<router>`
    pub const ACKS: &str = "migration_acks/";
    /// `failpoints/<name>/<process>` (test-only fail points)
    pub const FAIL_POINTS: &str = "failpoints/";
    /// `balancer_status`: the balancer service's counters
    pub const BALANCER_STATUS: &str = "balancer_status";
    /// `migration_progress`: the running migration's counts
    pub const MIGRATION_PROGRESS: &str = "migration_progress";
    /// `db_critical/<db>`: a `movePrimary` holds the database's unsharded
    /// collections
    pub const DB_CRITICAL: &str = "db_critical/";
    /// `db_acks/<db>/<router>`: a router holds them and drained its
    /// requests in flight
    pub const DB_ACKS: &str = "db_acks/";

    /// The namespace part of a `chunks/<ns>/<hex>` or `tags/<ns>/<hex>` key.
    pub fn namespace_of(key: &str, prefix: &str) -> Option<String> {
        let rest = key.strip_prefix(prefix)?;
        rest.rsplit_once('/').map(|(ns, _)| ns.to_owned())
    }
}
