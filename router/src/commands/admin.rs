//! Cluster administration: `addShard`, `listShards`, `enableSharding`, and
//! the commands that reach every shard (`listDatabases`, `killAllSessions`,
//! `endSessions`, `configureFailPoint`) or change placement (`dropDatabase`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bson::{doc, Bson, Document};
use shardgate_config_store::catalog::AddShardOutcome;
use shardgate_config_store::{DatabaseType, ShardType};

use super::{reply_ok, Reply, Request};
use crate::catalog_cache::placement::validate_db_name;
use crate::error::{Result, RouterError};
use crate::shards::{least_loaded_shard, to_all, to_primary};
use crate::state::RouterState;

/// Refuses a command sent to another database than `admin` (Unauthorized, as mongos).
pub(crate) fn admin_only(req: &Request<'_>) -> Result<()> {
    if req.db != "admin" {
        return Err(RouterError::command(
            13,
            "Unauthorized",
            format!("{} may only be run against the admin database.", req.name),
        ));
    }
    Ok(())
}

fn operation_failed(message: String) -> RouterError {
    RouterError::command(96, "OperationFailed", message)
}

/// `addShard`: checks the shard answers `hello`, then records it.
pub(crate) async fn add_shard(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let host = req.body.get_str(req.name).map_err(|_| {
        RouterError::bad_value(
            "addShard takes a connection string: host:port or rsName/host:port,…",
        )
    })?;
    let requested_name = match req.body.get("name") {
        Ok(Some(v)) => Some(
            v.as_str()
                .filter(|n| !n.is_empty() && !n.contains('/'))
                .ok_or_else(|| {
                    RouterError::bad_value("addShard 'name' must be a non-empty string")
                })?
                .to_owned(),
        ),
        _ => None,
    };
    let probe = ShardType::new("probe", host);
    let addresses = probe.addresses();
    if addresses.is_empty()
        || addresses.iter().any(|a| {
            a.rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        })
    {
        return Err(RouterError::command(
            9,
            "FailedToParse",
            format!("invalid shard connection string '{host}': expected host:port or rsName/host:port,…"),
        ));
    }
    let hello = probe_hello(state, &addresses[0]).await.map_err(|e| {
        operation_failed(format!(
            "failed to run command {{ hello: 1 }} when attempting to add shard {host} :: caused by :: HostUnreachable: {e}"
        ))
    })?;
    if hello.get_str("msg").ok() == Some("isdbgrid") {
        return Err(operation_failed(format!(
            "cannot add {host} as a shard: it is a mongos (or another shardgate)"
        )));
    }
    let set_name = host.split_once('/').map(|(rs, _)| rs.to_owned());
    if let Some(rs) = &set_name {
        let actual = hello.get_str("setName").unwrap_or("");
        if actual != rs {
            return Err(operation_failed(format!(
                "in seed list {host}, host {} does not belong to replica set {rs} (it reports '{actual}')",
                addresses[0]
            )));
        }
    }
    let host = full_set_host(host, set_name.as_deref(), &hello, &addresses);
    let host = host.as_str();
    state.placement.refresh_shards(&state.catalog).await?;
    let name = match requested_name.or(set_name) {
        Some(n) => n,
        None => next_shard_name(&state.placement.shards()),
    };
    let shard = ShardType::new(&name, host);
    match state.catalog.add_shard(shard).await? {
        AddShardOutcome::Added | AddShardOutcome::AlreadyPresent => {}
        AddShardOutcome::NameTaken(other) => {
            return Err(operation_failed(format!(
                "a shard named {} already exists with host {}",
                other.id, other.host
            )))
        }
        AddShardOutcome::HostTaken(other) => {
            return Err(operation_failed(format!(
                "{host} is already a member of the cluster as shard {}",
                other.id
            )))
        }
    }
    state.placement.refresh_shards(&state.catalog).await?;
    tracing::info!(shard = %name, host, "shard added");
    Ok(doc! {"shardAdded": name})
}

/// A replica set is stored with every member its `hello` lists (and the
/// seeds), as mongos records the set's full connection string.
fn full_set_host(host: &str, set_name: Option<&str>, hello: &Document, seeds: &[String]) -> String {
    match (set_name, hello.get_array("hosts")) {
        (Some(rs), Ok(members)) if !members.is_empty() => {
            let mut all: Vec<String> = members
                .iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect();
            for seed in seeds {
                if !all.contains(seed) {
                    all.push(seed.clone());
                }
            }
            format!("{rs}/{}", all.join(","))
        }
        _ => host.to_owned(),
    }
}

async fn probe_hello(state: &RouterState, address: &str) -> Result<Document> {
    let body = bson::rawdoc! {"hello": 1, "$db": "admin"};
    let reply = state.shards.probe(address, &body).await?;
    Document::try_from(reply.as_ref())
        .map_err(|e| RouterError::Shard(shardgate_shard_client::ShardError::protocol(address, e)))
}

/// The first unused `shardNNNN` name.
fn next_shard_name(shards: &[ShardType]) -> String {
    (0..)
        .map(|i| format!("shard{i:04}"))
        .find(|n| shards.iter().all(|s| &s.id != n))
        .unwrap_or_else(|| "shard".into())
}

/// `listShards`.
pub(crate) async fn list_shards(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    state.placement.refresh_shards(&state.catalog).await?;
    let shards: Vec<Bson> = state
        .placement
        .shards()
        .into_iter()
        .map(|s| {
            let mut d = doc! {"_id": s.id, "host": s.host, "state": s.state};
            if !s.tags.is_empty() {
                d.insert("tags", s.tags);
            }
            if s.draining {
                d.insert("draining", true);
            }
            Bson::Document(d)
        })
        .collect();
    Ok(doc! {"shards": shards})
}

/// `enableSharding`: creates the database entry, on `primaryShard` if given.
pub(crate) async fn enable_sharding(
    state: &Arc<RouterState>,
    req: &Request<'_>,
) -> Result<Document> {
    admin_only(req)?;
    let db = req
        .body
        .get_str(req.name)
        .map_err(|_| RouterError::bad_value("enableSharding takes a database name"))?;
    validate_db_name(db)?;
    if matches!(db, "admin" | "config" | "local") {
        return Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("enableSharding is not allowed on the {db} database"),
        ));
    }
    let wanted = req.body.get_str("primaryShard").ok();
    state.placement.refresh_shards(&state.catalog).await?;
    if let Some(w) = wanted {
        state.placement.shard(w)?;
    }
    let existing = match state.placement.cached(db) {
        Some(d) => Some(d),
        None => state.catalog.database(db).await?,
    };
    let entry = match existing {
        Some(d) => d,
        None => {
            let primary = match wanted {
                Some(w) => w.to_owned(),
                None => least_loaded_shard(state).await?,
            };
            state
                .catalog
                .create_database(DatabaseType::new(db, primary))
                .await?
        }
    };
    state.placement.remember(entry.clone());
    if let Some(w) = wanted {
        if entry.primary != w {
            return Err(RouterError::command(
                48,
                "NamespaceExists",
                format!(
                    "database {db} already exists with primary shard {}",
                    entry.primary
                ),
            ));
        }
    }
    Ok(doc! {"primaryShard": entry.primary})
}

/// `listDatabases`: every shard's databases, merged by name.
pub(crate) async fn list_databases(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let name_only = req.body.get_bool("nameOnly").unwrap_or(false);
    let mut merged: BTreeMap<String, (i64, bool)> = BTreeMap::new();
    for (shard, reply) in to_all(state, req.msg).await {
        let reply = reply?;
        let body = reply.body();
        if !reply_ok(body) {
            return Err(RouterError::from_shard_reply(&shard.id, body));
        }
        let Ok(dbs) = body.get_array("databases") else {
            continue;
        };
        for d in dbs
            .into_iter()
            .filter_map(|d| d.ok().and_then(|d| d.as_document()))
        {
            let Ok(name) = d.get_str("name") else {
                continue;
            };
            if matches!(name, "admin" | "config" | "local") {
                continue;
            }
            let size = super::number_field(d, "sizeOnDisk").unwrap_or(0);
            let empty = d.get_bool("empty").unwrap_or(size == 0);
            let entry = merged.entry(name.to_owned()).or_insert((0, true));
            entry.0 += size;
            entry.1 &= empty;
        }
    }
    let total: i64 = merged.values().map(|(s, _)| s).sum();
    let databases: Vec<Bson> = merged
        .into_iter()
        .map(|(name, (size, empty))| {
            Bson::Document(if name_only {
                doc! {"name": name}
            } else {
                doc! {"name": name, "sizeOnDisk": size, "empty": empty}
            })
        })
        .collect();
    let mut out = doc! {"databases": databases};
    if !name_only {
        out.insert("totalSize", total);
        out.insert("totalSizeMb", total / (1024 * 1024));
    }
    Ok(out)
}

/// `dropDatabase`: drops on the primary, then forgets the placement.
pub(crate) async fn drop_database(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Reply> {
    validate_db_name(req.db)?;
    if matches!(req.db, "admin" | "config" | "local") {
        return Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("cannot drop the {} database through the router", req.db),
        ));
    }
    let known = match state.placement.cached(req.db) {
        Some(d) => Some(d),
        None => state.catalog.database(req.db).await?,
    };
    if known.is_none() {
        return super::ok(Document::new());
    }
    let prefix = format!("{}.", req.db);
    for routing in state.routing.all() {
        let ns = routing.collection.ns.clone();
        if ns.starts_with(&prefix) {
            super::sharding::drop_sharded(state, &ns, req).await?;
        }
    }
    let reply = to_primary(state, req.db, req.msg).await?;
    if reply_ok(reply.body()) {
        state.catalog.drop_database(req.db).await?;
        state.placement.forget(req.db);
    }
    Ok(Reply::Msg(reply))
}

/// `endSessions` and `refreshSessions`: best effort on every shard; always
/// succeed, as on mongos.
pub(crate) async fn end_sessions(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    if req.name == "endSessions" {
        state.local_sessions.end(req.body);
    }
    for (shard, reply) in to_all(state, req.msg).await {
        if let Err(e) = reply {
            tracing::debug!(shard = %shard.id, error = %e, command = req.name, "session command on shard failed");
        }
    }
    Ok(Document::new())
}

/// The router's own fail point: close the client connection after a write
/// command was applied, without replying (a test-only fault).
pub(crate) const CLOSE_AFTER_WRITE: &str = "shardgateCloseConnectionAfterWrite";

/// `configureFailPoint` for [`CLOSE_AFTER_WRITE`]: `mode` is `"off"`,
/// `"alwaysOn"` or `{times: n}`.
pub(crate) fn router_fail_point(state: &RouterState, body: &bson::RawDocument) -> Result<Document> {
    let times = match body.get("mode") {
        Ok(Some(bson::RawBsonRef::String("off"))) => 0,
        Ok(Some(bson::RawBsonRef::String("alwaysOn"))) => -1,
        Ok(Some(bson::RawBsonRef::Document(d))) => crate::commands::number_field(d, "times")
            .filter(|n| *n > 0)
            .ok_or_else(|| RouterError::bad_value("mode.times must be a positive number"))?,
        _ => {
            return Err(RouterError::bad_value(
                "mode must be 'off', 'alwaysOn' or {times: n}",
            ))
        }
    };
    let was = state
        .close_after_write
        .swap(times, std::sync::atomic::Ordering::SeqCst);
    Ok(bson::doc! {"count": was})
}

/// The router's fail point that holds a coordinated commit after its
/// decision is in the store and before any participant committed (a
/// test-only fault, to kill the router there).
pub(crate) const PAUSE_AFTER_COMMIT_DECISION: &str = "shardgatePauseAfterCommitDecision";

/// `configureFailPoint` for [`PAUSE_AFTER_COMMIT_DECISION`]: `mode:
/// "alwaysOn"` with `data: {ms}`, or `mode: "off"`.
pub(crate) fn commit_pause_fail_point(
    state: &RouterState,
    body: &bson::RawDocument,
) -> Result<Document> {
    let ms = match body.get_str("mode") {
        Ok("off") => 0,
        Ok("alwaysOn") => body
            .get_document("data")
            .ok()
            .and_then(|d| crate::commands::number_field(d, "ms"))
            .filter(|ms| *ms > 0)
            .ok_or_else(|| RouterError::bad_value("data.ms must be a positive number"))?,
        _ => return Err(RouterError::bad_value("mode must be 'alwaysOn' or 'off'")),
    };
    state
        .pause_after_commit_decision_ms
        .store(ms as u64, std::sync::atomic::Ordering::SeqCst);
    Ok(Document::new())
}

/// The router's fail point that pauses a migration at a state.
pub(crate) use shardgate_config_store::model::PAUSE_MIGRATION;

/// `configureFailPoint` for [`PAUSE_MIGRATION`]: `mode: "alwaysOn"` with
/// `data: {state: "cloning" | "cloningPartial" | "catchup" | "critical" |
/// "committed"}` (`cloningPartial`: after the first cloned batch), or
/// `mode: "off"`. Kept in the store for the balancer service beside this
/// router (the one that runs this router's `moveChunk`s).
pub(crate) async fn pause_fail_point(
    state: &RouterState,
    body: &bson::RawDocument,
) -> Result<Document> {
    let on = match body.get_str("mode") {
        Ok("off") => None,
        Ok("alwaysOn") => Some(
            body.get_document("data")
                .and_then(|d| d.get_str("state"))
                .map_err(|_| RouterError::bad_value("data.state names the migration state"))?
                .to_owned(),
        ),
        _ => return Err(RouterError::bad_value("mode must be 'alwaysOn' or 'off'")),
    };
    let data = on.map(|at| bson::doc! {"state": at});
    state
        .catalog
        .set_fail_point(PAUSE_MIGRATION, &state.listen, data.as_ref())
        .await?;
    Ok(Document::new())
}

/// Runs the command on every shard; fails with the first shard's error.
pub(crate) async fn to_every_shard(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    for (shard, reply) in to_all(state, req.msg).await {
        let reply = reply?;
        if !reply_ok(reply.body()) {
            return Err(RouterError::from_shard_reply(&shard.id, reply.body()));
        }
    }
    Ok(Document::new())
}

/// `fsync` and `fsyncUnlock` on every shard, as mongos runs them: each
/// shard's reply under `all`; `fsync` sums `numFiles`, and with `lock`
/// (or `fsyncUnlock`) answers the lock's `info` and `lockCount` as the
/// shards do. The first shard's error fails it.
pub(crate) async fn fsync(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let (mut all, mut files, mut lock) = (Document::new(), 0i64, None);
    for (shard, reply) in to_all(state, req.msg).await {
        let reply = reply?;
        if !reply_ok(reply.body()) {
            return Err(RouterError::from_shard_reply(&shard.id, reply.body()));
        }
        let body = Document::try_from(reply.body())
            .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
        files += body
            .get("numFiles")
            .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
            .unwrap_or(0);
        if lock.is_none() {
            lock = body
                .get("lockCount")
                .map(|c| (body.get("info").cloned(), c.clone()));
        }
        all.insert(shard.id.clone(), body);
    }
    let mut out = Document::new();
    match lock {
        Some((info, count)) => {
            if let Some(info) = info {
                out.insert("info", info);
            }
            out.insert("lockCount", count);
        }
        None => {
            out.insert("numFiles", files);
        }
    }
    out.insert("all", all);
    Ok(out)
}
