//! Router configuration: serde defaults, then [`RouterConfig::validate`];
//! the binary applies command-line overrides in between.

use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use shardgate_shard_client::{PoolConfig, ShardAuth, ShardTls};

/// Everything the router needs besides its listener and config store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Address to listen on (`host:port`).
    pub listen: String,
    /// Where the cluster metadata lives: `embedded:PATH`.
    pub config_store: String,
    /// Shard connection pools.
    pub pool: PoolConfig,
    /// Limits on what clients may hold.
    pub limits: LimitsConfig,
    /// TLS for client connections.
    pub tls: TlsConfig,
    /// Require authentication (SCRAM) and check every command's roles.
    pub auth: bool,
    /// Forward test-only commands (`configureFailPoint`) to the shards.
    pub enable_test_commands: bool,
    /// A router cursor unused this long is closed on every shard, in seconds.
    pub cursor_idle_timeout_secs: u64,
    /// How long in-flight requests may run after shutdown begins, in seconds.
    pub shutdown_deadline_secs: u64,
    /// How long a write to a range in a migration's critical section waits
    /// for the commit before it fails with a retryable StaleConfig, in ms.
    pub critical_section_wait_ms: u64,
    /// How long a migrated range stays on its old owner before it is
    /// deleted there (open cursors may still read it), in seconds.
    pub orphan_cleanup_delay_secs: u64,
    /// Run the balancer task on this router (only the lock holder acts).
    pub balancer: bool,
    /// Seconds between balancer rounds.
    pub balancer_interval_secs: u64,
    /// Where to serve Prometheus metrics, `/healthz` and `/readyz` over
    /// HTTP (`host:port`); none when unset.
    pub metrics_listen: Option<String>,
    /// An operation slower than this is logged once as a slow query, in
    /// ms (mongod's `slowms`; changed at runtime with `profile` or
    /// `setParameter: {slowOpThresholdMs}`).
    pub slow_op_threshold_ms: u64,
    /// The command line the process was started with (`getCmdLineOpts`).
    #[serde(skip)]
    pub argv: Vec<String>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: "127.0.0.1:27017".into(),
            config_store: "embedded:./shardgate-data".into(),
            pool: PoolConfig::default(),
            limits: LimitsConfig::default(),
            tls: TlsConfig::default(),
            auth: false,
            enable_test_commands: false,
            cursor_idle_timeout_secs: 600,
            shutdown_deadline_secs: 10,
            critical_section_wait_ms: 10_000,
            orphan_cleanup_delay_secs: 60,
            balancer: true,
            balancer_interval_secs: 10,
            metrics_listen: None,
            slow_op_threshold_ms: 100,
            argv: Vec::new(),
        }
    }
}

/// Whether client connections use TLS (mongos's `net.tls.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    /// Plain connections only.
    #[default]
    #[serde(rename = "disabled")]
    Disabled,
    /// Both; plain is what the router expects.
    #[serde(rename = "allowTLS")]
    Allow,
    /// Both; TLS is what the router expects.
    #[serde(rename = "preferTLS")]
    Prefer,
    /// TLS only: a plain connection is refused.
    #[serde(rename = "requireTLS")]
    Require,
}

/// TLS settings for client connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// `disabled`, `allowTLS`, `preferTLS` or `requireTLS`.
    pub mode: TlsMode,
    /// The server certificate chain (PEM).
    pub cert_file: Option<String>,
    /// Its private key (PEM).
    pub key_file: Option<String>,
    /// With a CA (PEM), clients must present a certificate it signed.
    pub ca_file: Option<String>,
}

/// Limits on client connections, so that no client (or address) can take
/// the router down. Requests on one connection are served one at a time, in
/// order, so a connection has at most one request in flight and buffers at
/// most one frame (48 MB at most).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Most client connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Most bytes of incoming frames buffered over all connections, in MB;
    /// a frame that does not fit waits up to half of `frame_timeout_secs`,
    /// then its connection gets an error and is closed.
    pub max_buffered_mb: u64,
    /// A frame that has begun must arrive whole within this many seconds
    /// (slow clients are disconnected); idle connections are not affected.
    pub frame_timeout_secs: u64,
    /// Most router cursors (queries on sharded collections) one connection
    /// may hold open; a query past it is refused (OperationFailed, 96).
    pub max_cursors_per_connection: usize,
    /// Most bytes, in MB, of shard results one aggregation merge holds in
    /// the router's memory; past it the merge runs on the database's
    /// primary shard instead.
    pub max_merge_mb: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 20_000,
            max_connections_per_ip: 5_000,
            max_buffered_mb: 2_048,
            frame_timeout_secs: 30,
            max_cursors_per_connection: 10_000,
            max_merge_mb: 100,
        }
    }
}

impl RouterConfig {
    /// Checks the values; the error is one line naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "listen must be an ip:port address, got {:?}",
                self.listen
            ));
        }
        shardgate_config_store::StoreUrl::parse(&self.config_store).map_err(|e| e.to_string())?;
        if let Some(m) = &self.metrics_listen {
            if m.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "metrics_listen must be an ip:port address, got {m:?}"
                ));
            }
        }
        if self.pool.max_size == 0 || self.pool.max_size > 10_000 {
            return Err(format!(
                "pool.max_size must be between 1 and 10000, got {}",
                self.pool.max_size
            ));
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_ip == 0 {
            return Err(
                "limits.max_connections and limits.max_connections_per_ip must be above 0".into(),
            );
        }
        if self.limits.max_buffered_mb < 48 {
            return Err(format!(
                "limits.max_buffered_mb must be at least 48 (one whole message), got {}",
                self.limits.max_buffered_mb
            ));
        }
        if self.tls.mode != TlsMode::Disabled
            && (self.tls.cert_file.is_none() || self.tls.key_file.is_none())
        {
            return Err("tls.mode other than disabled needs tls.cert_file and tls.key_file".into());
        }
        if self.limits.frame_timeout_secs == 0 {
            return Err("limits.frame_timeout_secs must be above 0".into());
        }
        if self.pool.wait_timeout_ms == 0 {
            return Err("pool.wait_timeout_ms must be above 0".into());
        }
        if self.pool.connect_timeout_ms == 0 {
            return Err("pool.connect_timeout_ms must be above 0".into());
        }
        Ok(())
    }

    /// `shutdown_deadline_secs` as a duration.
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.shutdown_deadline_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        assert!(RouterConfig::default().validate().is_ok());
        let mut c = RouterConfig::default();
        c.pool.max_size = 0;
        assert!(c.validate().unwrap_err().contains("pool.max_size"));
    }
}
