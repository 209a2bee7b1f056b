//! A shard's members, as the drivers' SDAM specification monitors a
//! replica set: a shard whose connection string names a set
//! (`rs0/h1:27018,h2:27018`) is watched by a monitor that runs `hello` on
//! every member — awaitable where the member supports it, so a stepdown is
//! seen at once; else each heartbeat (at once after a failure) — learns the
//! primary, the secondaries and members the seeds did not list, and keeps a
//! pool per member. A command goes to the member its kind asks for
//! (`route`): writes and everything else to the primary, reads with a
//! `$readPreference` to the members it allows (`read_pref`), `getMore` and
//! `killCursors` to the member holding the cursor. A retryable command
//! that meets a stepdown (a NotWritablePrimary-class error or a broken
//! connection) is sent once more, to the new primary. A shard named by a
//! single `host:port` is a standalone: one pool, no monitor.

mod monitor;
pub(crate) mod read_pref;
pub(crate) mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bson::Document;
use shardgate_wire::OpMsg;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

use crate::config::PoolConfig;
use crate::error::{Result, ShardError};
use crate::pool::ShardPool;
use read_pref::ReadPreference;
use route::Route;

/// What a member is, as its last `hello` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not reached yet, or its last check failed.
    Unknown,
    /// The writable primary.
    Primary,
    /// A secondary.
    Secondary,
    /// A member that serves neither (arbiter, recovering, another set).
    Other,
    /// A server that is not in a replica set.
    Standalone,
}

/// A primary's `(setVersion, electionId)`: the higher one wins.
pub(crate) type Election = (i64, Vec<u8>);

/// A member's state from its last check.
#[derive(Debug, Clone)]
pub(crate) struct MemberState {
    pub role: Role,
    /// Round-trip time of its last `hello`.
    pub rtt: Option<Duration>,
    /// Its replica-set tags.
    pub tags: Document,
    /// When it last applied a write (`lastWrite.lastWriteDate`), in ms.
    pub last_write_ms: Option<i64>,
    /// When this state was read.
    pub updated: Instant,
    /// `(setVersion, electionId)` a primary reported.
    pub election: Option<Election>,
}

/// One member and its pool.
pub(crate) struct Member {
    pub address: String,
    pub pool: Arc<ShardPool>,
    pub state: Mutex<MemberState>,
}

impl Member {
    fn new(
        shard: &str,
        address: &str,
        config: &PoolConfig,
        tls: Option<TlsConnector>,
        role: Role,
    ) -> Arc<Member> {
        Arc::new(Member {
            address: address.to_owned(),
            pool: Arc::new(ShardPool::new(shard, address, config.clone(), tls)),
            state: Mutex::new(MemberState {
                role,
                rtt: None,
                tags: Document::new(),
                last_write_ms: None,
                updated: Instant::now(),
                election: None,
            }),
        })
    }

    pub(crate) fn state(&self) -> MemberState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn mark_unknown(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.role = Role::Unknown;
        }
    }
}

/// A shard's members: one (a standalone) or a monitored replica set.
pub(crate) struct ReplicaSet {
    pub shard: String,
    /// The connection string it was made from.
    pub seeds: String,
    /// The replica set's name (`None`: a standalone).
    pub set_name: Option<String>,
    config: PoolConfig,
    tls: Option<TlsConnector>,
    members: RwLock<Vec<Arc<Member>>>,
    /// Wakes the monitor for an immediate check.
    rescan: Arc<Notify>,
    /// Which member holds each open cursor.
    cursors: Mutex<HashMap<i64, Arc<Member>>>,
}

/// The hosts of a connection string (`host:port` or `rs/h1,h2`).
pub(crate) fn hosts_of(seeds: &str) -> Vec<String> {
    let hosts = seeds.split_once('/').map_or(seeds, |(_, h)| h);
    hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ReplicaSet {
    /// The members of `seeds`; a replica set starts its monitor.
    pub(crate) fn new(
        shard: &str,
        seeds: &str,
        config: PoolConfig,
        tls: Option<TlsConnector>,
    ) -> Arc<ReplicaSet> {
        let set_name = seeds
            .split_once('/')
            .map(|(rs, _)| rs.to_owned())
            .filter(|rs| !rs.is_empty());
        let role = if set_name.is_some() {
            Role::Unknown
        } else {
            Role::Standalone
        };
        let mut hosts = hosts_of(seeds);
        if set_name.is_none() {
            hosts.truncate(1);
        }
        let members = hosts
            .iter()
            .map(|h| Member::new(shard, h, &config, tls.clone(), role))
            .collect();
        let rs = Arc::new(ReplicaSet {
            shard: shard.to_owned(),
            seeds: seeds.to_owned(),
            set_name,
            config,
            tls,
            members: RwLock::new(members),
            rescan: Arc::new(Notify::new()),
            cursors: Mutex::new(HashMap::new()),
        });
        if rs.set_name.is_some() {
            tokio::spawn(monitor::run(Arc::downgrade(&rs), rs.rescan.clone()));
        }
        rs
    }

    pub(crate) fn members(&self) -> Vec<Arc<Member>> {
        self.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Adds members a `hello` listed that the set does not know yet; true
    /// when there were some.
    fn discover(&self, hosts: &[String]) -> bool {
        let Ok(mut members) = self.members.write() else {
            return false;
        };
        let mut added = false;
        for h in hosts {
            if !members.iter().any(|m| &m.address == h) {
                added = true;
                tracing::info!(shard = %self.shard, member = %h, "replica set member discovered");
                members.push(Member::new(
                    &self.shard,
                    h,
                    &self.config,
                    self.tls.clone(),
                    Role::Unknown,
                ));
            }
        }
        added
    }

    /// Sends `msg` to the member its kind asks for; a retryable command
    /// that meets a stepdown is sent once more after the new primary is
    /// found.
    pub(crate) async fn send(&self, msg: &OpMsg) -> Result<OpMsg> {
        if self.set_name.is_none() {
            let member = self
                .members()
                .into_iter()
                .next()
                .ok_or_else(|| self.no_member("no host"))?;
            return member.pool.run(msg).await;
        }
        let body = msg.body();
        let route = Route::of(body);
        let mut retried = false;
        loop {
            let member = self.select(&route).await?;
            let result = member.pool.run(msg).await;
            let stepped_down = match &result {
                Err(e) => e.is_retryable(),
                Ok(reply) => route::not_primary(reply.body()),
            };
            if stepped_down {
                member.mark_unknown();
                self.rescan.notify_one();
                if route.retryable && !retried {
                    retried = true;
                    tracing::info!(shard = %self.shard, member = %member.address, "member stepped down or unreachable; retrying once");
                    continue;
                }
            }
            if let Ok(reply) = &result {
                self.note_cursor(&route, reply.body(), &member);
            }
            return result;
        }
    }

    /// Remembers the member of a cursor a reply opened, forgets one that
    /// ended.
    fn note_cursor(&self, route: &Route, body: &bson::RawDocument, member: &Arc<Member>) {
        let id = body
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_i64("id").ok())
            .unwrap_or(0);
        let Ok(mut cursors) = self.cursors.lock() else {
            return;
        };
        match route.cursor {
            Some(old) if id == 0 || route.kills => {
                cursors.remove(&old);
            }
            _ if id != 0 => {
                cursors.insert(id, member.clone());
            }
            _ => {}
        }
    }

    /// The member for `route`, waiting (checks asked for at once) up to
    /// the selection timeout for one to become eligible.
    async fn select(&self, route: &Route) -> Result<Arc<Member>> {
        if let Some(id) = route.cursor {
            if let Some(m) = self.cursors.lock().ok().and_then(|c| c.get(&id).cloned()) {
                return Ok(m);
            }
        }
        let deadline = Instant::now() + self.config.server_selection_timeout();
        loop {
            if let Some(m) = self.pick(route.read.as_ref()) {
                return Ok(m);
            }
            if Instant::now() >= deadline {
                let wanted = route.read.as_ref().map_or("primary", |r| r.mode.name());
                return Err(self.no_member(&format!(
                    "no {wanted} member of replica set {} within {} ms (pool.server_selection_timeout_ms)",
                    self.set_name.as_deref().unwrap_or(""),
                    self.config.server_selection_timeout_ms
                )));
            }
            self.rescan.notify_one();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A member eligible now: the primary, or one the read preference allows.
    fn pick(&self, read: Option<&ReadPreference>) -> Option<Arc<Member>> {
        let members = self.members();
        let states: Vec<MemberState> = members.iter().map(|m| m.state()).collect();
        let index = match read {
            None => states.iter().position(|s| s.role == Role::Primary),
            Some(pref) => pref.choose(
                &states,
                self.config.heartbeat(),
                self.config.local_threshold(),
            ),
        }?;
        members.get(index).cloned()
    }

    fn no_member(&self, reason: &str) -> ShardError {
        ShardError::Unreachable {
            shard: self.shard.clone(),
            host: self.seeds.clone(),
            reason: reason.to_owned(),
        }
    }

    /// The members and their roles, for `shardgate status` and `listShards`.
    pub(crate) fn report(&self) -> crate::TopologyReport {
        crate::TopologyReport {
            shard: self.shard.clone(),
            set_name: self.set_name.clone(),
            members: self
                .members()
                .iter()
                .map(|m| {
                    let s = m.state();
                    crate::MemberReport {
                        address: m.address.clone(),
                        role: s.role,
                        rtt_ms: s.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    }
                })
                .collect(),
        }
    }
}
