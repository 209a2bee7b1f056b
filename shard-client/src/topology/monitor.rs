//! The monitor of one replica set: every heartbeat (or at once when a
//! command met a stepdown) it runs `hello` on each member over a
//! connection of its own, records the member's role, round trip, tags and
//! last write, adds members it was told of, and keeps one primary: when two
//! claim it, the one with the higher `(setVersion, electionId)` wins, as
//! SDAM has it. It ends when the set is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bson::{doc, Document};
use shardgate_wire::OpMsg;
use tokio::sync::Notify;

use super::{Member, MemberState, ReplicaSet, Role};
use crate::pool::conn::ShardConn;

/// What one `hello` said.
struct Checked {
    state: MemberState,
    hosts: Vec<String>,
}

/// The monitor loop.
pub(super) async fn run(set: Weak<ReplicaSet>, rescan: Arc<Notify>) {
    let mut conns: HashMap<String, ShardConn> = HashMap::new();
    loop {
        let Some(rs) = set.upgrade() else { return };
        let members = rs.members();
        let checks = members.iter().map(|m| {
            let conn = conns.remove(&m.address);
            let rs = rs.clone();
            async move { (m.clone(), check(&rs, m, conn).await) }
        });
        for (member, (checked, conn)) in futures::future::join_all(checks).await {
            if let Some(conn) = conn {
                conns.insert(member.address.clone(), conn);
            }
            apply(&rs, &member, checked);
        }
        one_primary(&rs.members());
        let heartbeat = rs.config.heartbeat();
        drop(rs);
        tokio::select! {
            _ = tokio::time::sleep(heartbeat) => {}
            _ = rescan.notified() => {}
        }
    }
}

/// Records a member's check and adds the members it listed.
fn apply(rs: &ReplicaSet, member: &Member, checked: Option<Checked>) {
    let previous = member.state().role;
    let state = match checked {
        Some(c) => {
            rs.discover(&c.hosts);
            c.state
        }
        None => MemberState {
            role: Role::Unknown,
            ..member.state()
        },
    };
    if state.role != previous {
        tracing::info!(shard = %rs.shard, member = %member.address, from = ?previous, to = ?state.role, "replica set member changed role");
    }
    if let Ok(mut s) = member.state.lock() {
        *s = state;
    }
}

/// Runs `hello` on `member`; its state and the connection to keep (none
/// after a failure).
async fn check(
    rs: &ReplicaSet,
    member: &Member,
    conn: Option<ShardConn>,
) -> (Option<Checked>, Option<ShardConn>) {
    let config = &rs.config;
    let mut conn = match conn {
        Some(c) => c,
        None => {
            let connect =
                ShardConn::connect(&member.address, 0, config.auth.as_ref(), rs.tls.as_ref());
            match tokio::time::timeout(config.connect_timeout(), connect).await {
                Ok(Ok(c)) => c,
                _ => return (None, None),
            }
        }
    };
    let Ok(body) = doc! {"hello": 1, "$db": "admin"}.to_vec() else {
        return (None, None);
    };
    let started = Instant::now();
    let msg = OpMsg::from_body(body);
    let round_trip = conn.round_trip(&msg);
    let reply = match tokio::time::timeout(config.connect_timeout(), round_trip).await {
        Ok(Ok(r)) => r,
        _ => return (None, None),
    };
    let rtt = started.elapsed();
    let Ok(hello) = Document::try_from(reply.body()) else {
        return (None, None);
    };
    (Some(read_hello(rs, &hello, rtt)), Some(conn))
}

/// A member's state from its `hello` reply.
fn read_hello(rs: &ReplicaSet, hello: &Document, rtt: std::time::Duration) -> Checked {
    let same_set = hello.get_str("setName").ok() == rs.set_name.as_deref();
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
