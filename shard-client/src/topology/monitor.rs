//! The monitor of one replica set, as the drivers' SDAM specification has
//! it: one task per member runs `hello` over a connection of its own,
//! records the member's role, round trip, tags and last write, adds members
//! it was told of, and keeps one primary: when two claim it, the one with
//! the higher `(setVersion, electionId)` wins.
//!
//! A member whose `hello` carries a `topologyVersion` is *streamed*: the
//! next `hello` names that version with `maxAwaitTimeMS` (the heartbeat),
//! and the server answers as soon as its state changes (a stepdown, an
//! election) or when the wait ends — so a new primary is seen at once, not
//! at the next poll. Exhaust replies are not used: each answer is asked
//! for. The round trip of an awaited `hello` measures the wait, not the
//! network, so a streamed member's round trip is measured apart, on a
//! second connection with a plain `hello` every heartbeat (the spec's RTT
//! monitor). A member without `topologyVersion` is polled every heartbeat,
//! or at once when a command met a stepdown (`rescan`).
//!
//! The set's task starts the members' tasks (for members discovered later
//! too) and passes `rescan` on to them. Every task ends when the set is
//! dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bson::{doc, Document};
use shardgate_wire::OpMsg;
use tokio::sync::Notify;

use super::{Member, MemberState, ReplicaSet, Role};
use crate::pool::conn::ShardConn;

/// What a check needs of its set, copied so that no check — an awaited
/// one may wait a heartbeat — keeps a dropped set alive.
struct Probe {
    config: crate::config::PoolConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    set_name: Option<String>,
}

impl Probe {
    fn of(rs: &ReplicaSet) -> Probe {
        Probe {
            config: rs.config.clone(),
            tls: rs.tls.clone(),
            set_name: rs.set_name.clone(),
        }
    }
}

/// What one `hello` said.
struct Checked {
    state: MemberState,
    hosts: Vec<String>,
    /// Its `topologyVersion`: the member can be streamed.
    topology_version: Option<Document>,
}

/// The set's task: a task per member, woken all at once on `rescan`.
pub(super) async fn run(set: Weak<ReplicaSet>, rescan: Arc<Notify>) {
    let mut watched: HashMap<String, Arc<Notify>> = HashMap::new();
    loop {
        let Some(rs) = set.upgrade() else { return };
        for m in rs.members() {
            watched.entry(m.address.clone()).or_insert_with(|| {
                let wake = Arc::new(Notify::new());
                tokio::spawn(watch_member(set.clone(), m.clone(), wake.clone()));
                wake
            });
        }
        let heartbeat = rs.config.heartbeat();
        drop(rs);
        tokio::select! {
            _ = tokio::time::sleep(heartbeat) => {}
            _ = rescan.notified() => watched.values().for_each(|w| w.notify_one()),
        }
    }
}

/// How the next check of a member is made.
enum Next {
    /// Awaitable `hello` with the last `topologyVersion`, right away.
    Stream(Document),
    /// Plain `hello`, right away (a known member's failed check is retried
    /// once at once, as SDAM has it).
    Now,
    /// Plain `hello` after the heartbeat or a `rescan`.
    Poll,
}

/// One member's task.
async fn watch_member(set: Weak<ReplicaSet>, member: Arc<Member>, wake: Arc<Notify>) {
    let Some(probe) = set.upgrade().map(|rs| Probe::of(&rs)) else {
        return;
    };
    let heartbeat = probe.config.heartbeat();
    let mut conn: Option<ShardConn> = None;
    let mut rtt_monitor: Option<AbortOnDrop> = None;
    let mut next = Next::Now;
    let mut streamable = true;
    loop {
        let awaited = match std::mem::replace(&mut next, Next::Poll) {
            Next::Stream(version) => Some(version),
            Next::Now => None,
            Next::Poll => {
                tokio::select! {
                    _ = tokio::time::sleep(heartbeat) => {}
                    _ = wake.notified() => {}
                }
                None
            }
        };
        let was_known = member.state().role != Role::Unknown;
        let started = Instant::now();
        let (checked, kept) = check(&probe, &member, conn.take(), awaited.as_ref()).await;
        conn = kept;
        let Some(rs) = set.upgrade() else { return };
        let version = checked.as_ref().and_then(|c| c.topology_version.clone());
        if let (Some(sent), Some(got)) = (&awaited, &version) {
            // A server that answers an unchanged version long before the
            // wait ends does not await: poll it instead.
            if sent == got && started.elapsed() < heartbeat / 2 {
                tracing::info!(shard = %rs.shard, member = %member.address, "member does not await hello; polling it");
                streamable = false;
            }
        }
        let failed = checked.is_none();
        apply(&rs, &member, checked, awaited.is_some());
        one_primary(&rs.members());
        next = match version.filter(|_| streamable) {
            Some(v) => {
                rtt_monitor.get_or_insert_with(|| {
                    let rtt = measure_rtt(set.clone(), Probe::of(&rs), member.clone());
                    AbortOnDrop(tokio::spawn(rtt))
                });
                Next::Stream(v)
            }
            None if failed && was_known => Next::Now,
            None => Next::Poll,
        };
        if !matches!(next, Next::Stream(_)) {
            rtt_monitor = None;
        }
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A streamed member's round trip, measured every heartbeat with a plain
/// `hello` on a connection of its own.
async fn measure_rtt(set: Weak<ReplicaSet>, probe: Probe, member: Arc<Member>) {
    let mut conn: Option<ShardConn> = None;
    while set.strong_count() > 0 {
        let started = Instant::now();
        let (checked, kept) = check(&probe, &member, conn.take(), None).await;
        conn = kept;
        if checked.is_some() {
            if let Ok(mut s) = member.state.lock() {
                s.rtt = Some(started.elapsed());
            }
        }
        tokio::time::sleep(probe.config.heartbeat()).await;
    }
}

/// Records a member's check and adds the members it listed. An awaited
/// `hello` keeps the round trip the RTT monitor measured.
fn apply(rs: &ReplicaSet, member: &Member, checked: Option<Checked>, awaited: bool) {
    let before = member.state();
    let previous = before.role;
    let state = match checked {
        Some(c) => {
            if rs.discover(&c.hosts) {
                rs.rescan.notify_one();
            }
            let rtt = if awaited { before.rtt } else { c.state.rtt };
            MemberState { rtt, ..c.state }
        }
        None => MemberState {
            role: Role::Unknown,
            ..before
        },
    };
    if state.role != previous {
        tracing::info!(shard = %rs.shard, member = %member.address, from = ?previous, to = ?state.role, "replica set member changed role");
    }
    if let Ok(mut s) = member.state.lock() {
        *s = state;
    }
}

/// Runs `hello` on `member` — awaitable when `awaited` is the
/// `topologyVersion` it last reported; its state and the connection to keep
/// (none after a failure).
async fn check(
    probe: &Probe,
    member: &Member,
    conn: Option<ShardConn>,
    awaited: Option<&Document>,
) -> (Option<Checked>, Option<ShardConn>) {
    let config = &probe.config;
    let mut conn = match conn {
        Some(c) => c,
        None => {
            let connect =
                ShardConn::connect(&member.address, 0, config.auth.as_ref(), probe.tls.as_ref());
            match tokio::time::timeout(config.connect_timeout(), connect).await {
                Ok(Ok(c)) => c,
                _ => return (None, None),
            }
        }
    };
    let mut hello = doc! {"hello": 1, "$db": "admin"};
    let mut deadline = config.connect_timeout();
    if let Some(version) = awaited {
        let wait = config.heartbeat();
        hello.insert("topologyVersion", version.clone());
        hello.insert("maxAwaitTimeMS", wait.as_millis() as i64);
        deadline += wait;
    }
    let Ok(body) = hello.to_vec() else {
        return (None, None);
    };
    let started = Instant::now();
    let msg = OpMsg::from_body(body);
    let round_trip = conn.round_trip(&msg);
    let reply = match tokio::time::timeout(deadline, round_trip).await {
        Ok(Ok(r)) => r,
        _ => return (None, None),
    };
    let rtt = started.elapsed();
    let Ok(hello) = Document::try_from(reply.body()) else {
        return (None, None);
    };
    (Some(read_hello(probe, &hello, rtt)), Some(conn))
}

/// A member's state from its `hello` reply.
fn read_hello(probe: &Probe, hello: &Document, rtt: std::time::Duration) -> Checked {
    let same_set = hello.get_str("setName").ok() == probe.set_name.as_deref();
    let primary = hello
        .get_bool("isWritablePrimary")
        .or_else(|_| hello.get_bool("ismaster"))
        .unwrap_or(false);
    let secondary = hello.get_bool("secondary").unwrap_or(false);
    let role = match (same_set, primary, secondary) {
        (false, _, _) => Role::Other,
        (true, true, _) => Role::Primary,
        (true, false, true) => Role::Secondary,
        _ => Role::Other,
    };
    let mut hosts = Vec::new();
    if same_set {
        for field in ["hosts", "passives"] {
            if let Ok(list) = hello.get_array(field) {
                hosts.extend(list.iter().filter_map(|h| h.as_str().map(str::to_owned)));
            }
        }
    }
    let last_write_ms = hello
        .get_document("lastWrite")
        .ok()
        .and_then(|w| w.get_datetime("lastWriteDate").ok())
        .map(|d| d.timestamp_millis());
    let election = match (hello.get("setVersion"), hello.get_object_id("electionId")) {
        (Some(v), Ok(id)) => Some((
            v.as_i64().or(v.as_i32().map(i64::from)).unwrap_or(0),
            id.bytes().to_vec(),
        )),
        _ => None,
    };
    Checked {
        state: MemberState {
            role,
            rtt: Some(rtt),
            tags: hello.get_document("tags").cloned().unwrap_or_default(),
            last_write_ms,
            updated: Instant::now(),
            election,
        },
        hosts,
        topology_version: hello.get_document("topologyVersion").ok().cloned(),
    }
}

/// When several members claim to be primary, keeps the one with the
/// highest `(setVersion, electionId)`; the others become unknown until
/// their next check.
fn one_primary(members: &[Arc<Member>]) {
    let claims: Vec<(usize, Option<super::Election>)> = members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let s = m.state();
            (s.role == Role::Primary).then_some((i, s.election))
        })
        .collect();
    if claims.len() < 2 {
        return;
    }
    let winner = claims.iter().max_by(|a, b| a.1.cmp(&b.1)).map(|c| c.0);
    for (i, _) in &claims {
        if Some(*i) != winner {
            members[*i].mark_unknown();
        }
    }
}
