//! Commands the router answers about itself: `buildInfo`, `serverStatus`,
//! `getCmdLineOpts`, `getParameter`, `connectionStatus`, `getLog`.

use bson::{doc, Bson, Document, RawDocument};
use std::sync::atomic::Ordering;

use super::handshake::MAX_WIRE_VERSION;
use crate::error::{Result, RouterError};
use crate::state::RouterState;
use crate::stats::Stats;

/// The MongoDB version shardgate speaks for (wire version 25).
const COMPAT_VERSION: &str = "8.0.0";

pub(crate) fn build_info() -> Document {
    doc! {
        "version": COMPAT_VERSION,
        "versionArray": [8, 0, 0, 0],
        "gitVersion": "shardgate",
        "shardgateVersion": env!("CARGO_PKG_VERSION"),
        "modules": [],
        "bits": 64,
        "debug": cfg!(debug_assertions),
        "maxBsonObjectSize": shardgate_wire::MAX_BSON_OBJECT_SIZE as i32,
        "storageEngines": [],
        "openssl": {"running": "disabled"},
        "maxWireVersion": MAX_WIRE_VERSION,
    }
}

/// One shard's members and their roles, as `serverStatus` lists them.
fn topology_doc(t: shardgate_shard_client::TopologyReport) -> Bson {
    let members: Vec<Bson> = t
        .members
        .into_iter()
        .map(|m| {
            let role = format!("{:?}", m.role).to_lowercase();
            let mut d = doc! {"host": m.address, "state": role};
            if let Some(rtt) = m.rtt_ms {
                d.insert("pingMs", rtt);
            }
            Bson::Document(d)
        })
        .collect();
    let mut d = doc! {"shard": t.shard, "members": members};
    if let Some(rs) = t.set_name {
        d.insert("setName", rs);
    }
    Bson::Document(d)
}

pub(crate) fn server_status(state: &RouterState) -> Document {
    let s = &state.stats;
    let uptime = state.started.elapsed();
    let current = Stats::get(&s.current_connections);
    let pools: Vec<Bson> = state
        .shards
        .stats()
        .into_iter()
        .map(|p| {
            let st = p.stats;
            Bson::Document(doc! {
                "shard": p.shard,
                "host": p.address,
                "maxSize": p.max_size as i64,
                "open": st.open as i64,
                "idle": st.idle as i64,
                "inUse": st.open.saturating_sub(st.idle) as i64,
                "peakOpen": st.peak_open as i64,
                "created": st.created as i64,
                "generation": st.generation as i64,
            })
        })
        .collect();
    let topology: Vec<Bson> = state
        .shards
        .topology()
        .into_iter()
        .map(topology_doc)
        .collect();
    doc! {
        "host": &state.listen,
        "version": COMPAT_VERSION,
        "process": "mongos",
        "pid": std::process::id() as i64,
        "uptime": uptime.as_secs() as i64,
        "uptimeMillis": uptime.as_millis() as i64,
        "localTime": bson::DateTime::now(),
        "connections": {
            "current": current,
            "available": 1_000_000i64 - current,
            "totalCreated": Stats::get(&s.total_connections),
            "refused": Stats::get(&s.refused_connections),
        },
        "opcounters": {
            "insert": Stats::get(&s.insert),
            "query": Stats::get(&s.query),
            "update": Stats::get(&s.update),
            "delete": Stats::get(&s.delete),
            "getmore": Stats::get(&s.getmore),
            "command": Stats::get(&s.command),
        },
        "shardPools": pools,
        "shardTopology": topology,
        "transactions": state
            .transactions
            .counters
            .section(state.transactions.open_count()),
        "metrics": {
            "cursor": {"open": {"total": state.cursors.len() as i64}},
            "retryableWrites": {"records": state.retries.len() as i64},
        },
        "configStore": state.catalog.store().describe(),
        "queryAnalyzers": state.query_analyzers.server_status(),
    }
}

pub(crate) fn cmd_line_opts(state: &RouterState) -> Document {
    let test = if state.config.enable_test_commands {
        "1"
    } else {
        "0"
    };
    doc! {
        "argv": state.config.argv.clone(),
        "parsed": {
            "net": {"bindIp": &state.listen},
            "sharding": {"configDB": state.catalog.store().describe()},
            "setParameter": {"enableTestCommands": test},
        },
    }
}

/// The parameters `getParameter` reports.
fn parameters(state: &RouterState) -> Document {
    doc! {
        "enableTestCommands": state.config.enable_test_commands,
        "featureCompatibilityVersion": {"version": "8.0"},
        "logLevel": 0,
        "maxWireVersion": MAX_WIRE_VERSION,
        "requireApiVersion": false,
        "authenticationMechanisms": Vec::<String>::new(),
        "shardgateShardPoolMaxSize": state.config.pool.max_size as i64,
        "slowOpThresholdMs": state.slow_ms.load(Ordering::Relaxed) as i64,
    }
}

/// `setParameter`: shardgate's parameters are fixed at start-up (its
/// configuration file); setting one to its current value answers `was`,
/// any other value or an unknown name is refused as mongod refuses them.
pub(crate) fn set_parameter(state: &RouterState, body: &RawDocument) -> Result<Document> {
    let all = parameters(state);
    let mut out = Document::new();
    for elem in body.iter().skip(1).flatten() {
        let (name, value) = (elem.0.as_str(), elem.1);
        if name.starts_with('$') || matches!(name, "lsid" | "comment") {
            continue;
        }
        let current = all.get(name).ok_or_else(|| {
            RouterError::command(
                72,
                "InvalidOptions",
                format!("attempted to set unrecognized parameter [{name}], use help:true to see options"),
            )
        })?;
        if name == "slowOpThresholdMs" {
            let was = set_slow_ms(state, value, name)?;
            out.insert("was", was);
            continue;
        }
        let same = bson::Bson::try_from(value).ok().as_ref() == Some(current);
        if !same {
            return Err(RouterError::command(
                72,
                "InvalidOptions",
                format!("not allowed to change [{name}] at runtime on shardgate; set it in the configuration file"),
            ));
        }
        out.insert("was", current.clone());
    }
    if out.is_empty() {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            "no option found to set, use help:true to see options",
        ));
    }
    Ok(out)
}

/// Sets the slow operation threshold from a command's number; returns
/// the previous value.
fn set_slow_ms(state: &RouterState, value: bson::RawBsonRef<'_>, field: &str) -> Result<i64> {
    let n = value
        .as_i32()
        .map(i64::from)
        .or(value.as_i64())
        .or(value
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .map(|f| f as i64))
        .ok_or_else(|| {
            RouterError::command(
                14,
                "TypeMismatch",
                format!("{field} must be a whole number"),
            )
        })?;
    let n = u64::try_from(n).map_err(|_| {
        RouterError::command(2, "BadValue", format!("{field} must be 0 or more, got {n}"))
    })?;
    Ok(state.slow_ms.swap(n, Ordering::Relaxed) as i64)
}

/// `profile` on a router, as mongos answers it: level 0 (and -1 to read)
/// only, with `slowms` setting the slow operation threshold.
pub(crate) fn profile(state: &RouterState, body: &RawDocument) -> Result<Document> {
    let level = body
        .get("profile")
        .ok()
        .flatten()
        .and_then(|v| {
            v.as_i32()
                .or(v.as_f64().map(|f| f as i32))
                .or(v.as_i64().map(|n| n as i32))
        })
        .ok_or_else(|| RouterError::command(14, "TypeMismatch", "profile must be a number"))?;
    if !matches!(level, -1 | 0) {
        return Err(RouterError::command(
            2,
            "BadValue",
            format!("profiling level {level} is not available on a router; use 0 with slowms to set the slow operation threshold"),
        ));
    }
    let was = state.slow_ms.load(Ordering::Relaxed) as i64;
    if level == 0 {
        if let Ok(Some(v)) = body.get("slowms") {
            set_slow_ms(state, v, "slowms")?;
        }
    }
    Ok(doc! {"was": 0, "slowms": was, "sampleRate": 1.0})
}

pub(crate) fn get_parameter(state: &RouterState, body: &RawDocument) -> Result<Document> {
    let all = parameters(state);
    let wants_all = matches!(body.get("getParameter"), Ok(Some(v)) if v.as_str() == Some("*"));
    if wants_all {
        return Ok(all);
    }
    let mut out = Document::new();
    for elem in body.iter().skip(1).flatten() {
        let name = elem.0.as_str();
        if name.starts_with('$') || name == "lsid" {
            continue;
        }
        if let Some(v) = all.get(name) {
            out.insert(name, v.clone());
        }
    }
    if out.is_empty() {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            "no option found to get",
        ));
    }
    Ok(out)
}

/// `connectionStatus`: the users this connection authenticated as and
/// their roles.
pub(crate) fn connection_status(session: &crate::session::Session) -> Document {
    let users: Vec<Document> = session
        .auth
        .users
        .iter()
        .map(|u| doc! {"user": &u.user, "db": &u.db})
        .collect();
    let mut roles: Vec<Document> = Vec::new();
    for r in session.auth.users.iter().flat_map(|u| &u.roles) {
        let role = doc! {"role": &r.role, "db": &r.db};
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    doc! {
        "authInfo": {
            "authenticatedUsers": users,
            "authenticatedUserRoles": roles,
        }
    }
}

pub(crate) fn get_log(body: &RawDocument) -> Result<Document> {
    match body.get_str("getLog") {
        Ok("*") => Ok(doc! {"names": ["global", "startupWarnings"]}),
        Ok("global") => {
            let (lines, written) = crate::log::global();
            Ok(doc! {"totalLinesWritten": written as i64, "log": lines})
        }
        Ok("startupWarnings") => {
            let lines = crate::log::startup_warnings();
            Ok(doc! {"totalLinesWritten": lines.len() as i64, "log": lines})
        }
        _ => Err(RouterError::command(
            72,
            "InvalidOptions",
            "getLog takes '*', 'global' or 'startupWarnings'",
        )),
    }
}

/// `startSession`: a new logical session id, as mongos makes one.
pub(crate) fn start_session() -> Document {
    doc! {"id": {"id": bson::Uuid::new()}, "timeoutMinutes": 30}
}
