//! Settings of the shard connection pools: sizes, timeouts, the router's
//! credentials for the shards and TLS to them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the per-shard connection pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Most connections open to one shard at once, shared by all clients.
    pub max_size: usize,
    /// How long a request waits for a free connection, in milliseconds.
    pub wait_timeout_ms: u64,
    /// How long connecting to a shard may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// A connection idle longer than this is pinged before reuse, in milliseconds.
    pub health_check_after_ms: u64,
    /// The router's own credentials for the shards (SCRAM), if they require
    /// authentication.
    pub auth: Option<ShardAuth>,
    /// TLS to the shards, if they require it.
    pub tls: Option<ShardTls>,
    /// The longest one round trip to a shard may take, in milliseconds, so
    /// a hung shard cannot hold a pooled connection forever.
    pub round_trip_timeout_ms: u64,
    /// How often each member of a replica-set shard is checked with
    /// `hello`, in milliseconds.
    pub heartbeat_ms: u64,
    /// How long a command waits for a member it may use (a new primary
    /// after a stepdown), in milliseconds.
    pub server_selection_timeout_ms: u64,
    /// Reads with a read preference go to members within this many
    /// milliseconds of the nearest one.
    pub local_threshold_ms: u64,
}

/// TLS from the router to the shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardTls {
    /// The CA (PEM) that signed the shards' certificates.
    pub ca_file: String,
    /// The router's client certificate and key in one PEM file, for shards
    /// that require one.
    #[serde(default)]
    pub cert_key_file: Option<String>,
}

/// Credentials the router authenticates to shards with.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardAuth {
    /// User name.
    pub user: String,
    /// Password (never logged or shown).
    pub password: String,
    /// Authentication database.
    #[serde(default = "admin_db")]
    pub db: String,
    /// `SCRAM-SHA-256` (default) or `SCRAM-SHA-1`.
    #[serde(default = "sha256")]
    pub mechanism: String,
}

fn admin_db() -> String {
    "admin".into()
}

fn sha256() -> String {
    "SCRAM-SHA-256".into()
}

impl std::fmt::Debug for ShardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("db", &self.db)
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 64,
            wait_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            health_check_after_ms: 10_000,
            auth: None,
            tls: None,
            round_trip_timeout_ms: 600_000,
            heartbeat_ms: 500,
            server_selection_timeout_ms: 15_000,
            local_threshold_ms: 15,
        }
    }
}

impl PoolConfig {
    /// `heartbeat_ms` as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(10))
    }

    /// `server_selection_timeout_ms` as a duration.
    pub fn server_selection_timeout(&self) -> Duration {
        Duration::from_millis(self.server_selection_timeout_ms)
    }

    /// `local_threshold_ms` as a duration.
    pub fn local_threshold(&self) -> Duration {
        Duration::from_millis(self.local_threshold_ms)
    }

    /// `wait_timeout_ms` as a duration.
    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// `round_trip_timeout_ms` as a duration.
    pub fn round_trip_timeout(&self) -> Duration {
        Duration::from_millis(self.round_trip_timeout_ms)
    }

    /// `health_check_after_ms` as a duration.
    pub fn health_check_after(&self) -> Duration {
        Duration::from_millis(self.health_check_after_ms)
    }
}
