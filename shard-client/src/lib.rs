//! Talking to shards, for the router and the balancer alike.
//!
//! Everything that reaches a shard goes through a [`ShardClient`]: `send`
//! a client's message through, run a `command` (an `{ok: 0}` reply is a
//! [`ShardError`] that keeps the shard's code, code name and labels), or
//! page through a [`ShardCursor`]. [`Pools`] is the real implementation;
//! tests of the request path and the balancer put a fake in its place.
//!
//! # Layout
//! - `config`: [`PoolConfig`], [`ShardAuth`], [`ShardTls`].
//! - `error`: [`ShardError`], always blamed on the shard.
//! - `pool`: [`Pools`], one bounded pool per shard member (`pool/conn.rs`:
//!   one connection, framing, the `hello` handshake and SCRAM login), with
//!   a deadline on every round trip.
//! - `topology`: a shard's members — a standalone, or a replica set
//!   monitored with `hello` (`monitor`), commands routed by kind (`route`)
//!   and read preference (`read_pref`), retried once after a stepdown.
//! - `change_stream`: [`ChangeStream`], the events since a copy began.
//! - `resync`: [`resync`] and [`upsert_kept`], how a copy catches up with
//!   its source (chunk migrations, `movePrimary`, resharding), pinned
//!   against clients' concurrent writes of the same `_id`.
//! - `migration_writes`: [`migration_write`], a migration's writes as
//!   one-statement transactions under a tagged session, and the stage
//!   that keeps their events out of change streams.
//! - `cursor`: [`ShardCursor`], a shard's cursor read batch by batch, killed
//!   when dropped before its end; [`cursor_reply`] reads a cursor reply.
//! - [`scram`]: SCRAM-SHA-1/256, client and server sides.
//! - `tls`: the connector for TLS to shards, built once from the files.

mod change_stream;
mod config;
mod cursor;
mod error;
mod migration_writes;
mod pool;
mod resync;
pub mod scram;
mod tls;
mod topology;

use bson::{RawDocument, RawDocumentBuf};
use shardgate_wire::{OpMsg, OpMsgFlags};

pub use change_stream::{event_id, ChangeStream};
pub use config::{PoolConfig, ShardAuth, ShardTls};
pub use cursor::{cursor_reply, CursorReply, ShardCursor};
pub use error::{Result, ShardError};
pub use migration_writes::{
    exclude_migration_events, migration_session_id, migration_write, MIGRATION_SESSION_PREFIX,
    ROUTER_TEMP_PREFIX,
};
pub use pool::{PoolReport, PoolStats, Pools};
pub use resync::{resync, upsert_kept, Keep};
pub use topology::Role;

/// A shard's members as the router sees them.
#[derive(Debug, Clone)]
pub struct TopologyReport {
    /// The shard's name.
    pub shard: String,
    /// Its replica set (`None`: a standalone server).
    pub set_name: Option<String>,
    /// Its members.
    pub members: Vec<MemberReport>,
}

/// One member of a shard.
#[derive(Debug, Clone)]
pub struct MemberReport {
    /// `host:port`.
    pub address: String,
    /// What its last check said.
    pub role: Role,
    /// Round trip of its last `hello`, in ms.
    pub rtt_ms: Option<f64>,
}

/// A shard as the client addresses it: its name and connection string
/// (`host:port` or `rs/host1,host2`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The shard's name (`shard0000`).
    pub id: &'a str,
    /// Its connection string.
    pub host: &'a str,
}

/// How the router and the balancer talk to shards.
#[async_trait::async_trait]
pub trait ShardClient: Send + Sync {
    /// Sends `msg` as it is (only `moreToCome` of its flags is kept) and
    /// returns the shard's reply, `{ok: 0}` included.
    async fn send(&self, shard: Target<'_>, msg: &OpMsg) -> Result<OpMsg>;

    /// Runs a command the caller built; an `{ok: 0}` reply is
    /// [`ShardError::Reply`].
    async fn command(&self, shard: Target<'_>, body: &RawDocument) -> Result<RawDocumentBuf> {
        let msg = OpMsg::from_body(body.as_bytes().to_vec());
        let reply = self.send(shard, &msg).await?;
        let body = reply.body();
        if !reply_ok(body) {
            return Err(ShardError::from_reply(shard.id, body));
        }
        Ok(body.to_owned())
    }

    /// Runs `body` on `host` over a connection of its own, not pooled:
    /// `addShard`'s check of a server that is not a shard yet.
    async fn probe(&self, host: &str, body: &RawDocument) -> Result<RawDocumentBuf> {
        self.command(Target { id: host, host }, body).await
    }

    /// Each shard member pool's counters (none for a client without pools).
    fn stats(&self) -> Vec<PoolReport> {
        Vec::new()
    }

    /// Each shard's members and their roles (none for a client that does
    /// not monitor them).
    fn topology(&self) -> Vec<TopologyReport> {
        Vec::new()
    }

    /// Closes the pooled connections to `host` (`dropConnections`): idle
    /// ones now, checked-out ones when they come back. Returns how many
    /// member pools it cleared.
    fn drop_connections(&self, _host: &str) -> usize {
        0
    }
}

/// `msg` with only `moreToCome` of its flags: a shard is never asked for a
/// checksum or an exhaust stream.
fn outgoing(msg: &OpMsg) -> std::borrow::Cow<'_, OpMsg> {
    if msg.flags.0 & !OpMsgFlags::MORE_TO_COME == 0 {
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut out = msg.clone();
    out.flags = OpMsgFlags(msg.flags.0 & OpMsgFlags::MORE_TO_COME);
    std::borrow::Cow::Owned(out)
}

/// Whether a reply body says `ok: 1`.
pub fn reply_ok(body: &RawDocument) -> bool {
    match body.get("ok") {
        Ok(Some(v)) => {
            v.as_f64()
                .or(v.as_i32().map(f64::from))
                .or(v.as_i64().map(|n| n as f64))
                .unwrap_or(0.0)
                == 1.0
        }
        _ => false,
    }
}
