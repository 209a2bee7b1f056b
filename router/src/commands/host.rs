//! Host management and diagnostics mongos answers for the cluster:
//! `currentOp` (command and `$currentOp` stage): the router's own
//! operations (plain `opid`s), then every shard's with its `shard` and an
//! `opid` of `shardId:opid` (only the router's with `localOps: true`),
//! and a `query analyzer` entry per collection the router samples;
//! `killOp` of a router opid interrupts it, of `shardId:opid` is
//! forwarded to that shard; `hostInfo` of the router's own
//! machine; `connPoolStats` of the router's shard pools.

use std::sync::Arc;

use bson::{doc, Bson, Document};

use crate::error::{Result, RouterError};
use crate::session::{Reply, Request, Session};
use crate::shards::run_on_shard;
use crate::state::RouterState;

/// Fields of the `currentOp` command that are not a filter.
const OPTIONS: [&str; 10] = [
    "currentOp",
    "localOps",
    "$all",
    "$ownOps",
    "$db",
    "lsid",
    "$clusterTime",
    "$readPreference",
    "comment",
    "apiVersion",
];

/// Every shard's operations for the `$currentOp` stage `spec`, each with
/// `shard` and `opid: "shardId:opid"`. The shards are asked with the
/// `currentOp` command, whose entries carry their `opid` on every server.
async fn shard_ops(state: &RouterState, spec: &Document) -> Result<Vec<Document>> {
    let all = spec.get_bool("idleConnections").unwrap_or(false);
    let mut ops = state.operations.current(&state.listen, all);
    ops.extend(state.query_analyzers.all().iter().map(|a| a.current_op()));
    if spec.get_bool("localOps").unwrap_or(false) {
        return Ok(ops);
    }
    for shard in state.placement.shards() {
        let command = doc! {"currentOp": 1, "$all": all, "$db": "admin"};
        let reply = run_on_shard(state, &shard, command).await?;
        let batch = reply.get_array("inprog").cloned().unwrap_or_default();
        for op in batch {
            let Bson::Document(mut op) = op else { continue };
            if let Some(id) = op.get("opid").cloned() {
                let id = match id {
                    Bson::Int32(n) => n.to_string(),
                    Bson::Int64(n) => n.to_string(),
                    other => other.to_string(),
                };
                op.insert("opid", format!("{}:{id}", shard.id));
            }
            op.insert("shard", shard.id.as_str());
            ops.push(op);
        }
    }
    Ok(ops)
}

/// `currentOp` as a command: `{inprog: [...]}`, filtered by the command's
/// other fields (as a `$match`: the router's engine, or a shard's when the
/// engine lacks an operator).
pub(crate) async fn current_op(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    let all = req.body.get_bool("$all").unwrap_or(false);
    let body = Document::try_from(req.body).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let filter: Document = body
        .into_iter()
        .filter(|(k, _)| !OPTIONS.contains(&k.as_str()))
        .collect();
    let local = req.body.get_bool("localOps").unwrap_or(false);
    let spec =
        doc! {"allUsers": true, "idleConnections": all, "idleSessions": all, "localOps": local};
    let ops = shard_ops(state, &spec).await?;
    let stream = crate::read::pipeline::held::run(state, ops, &[doc! {"$match": filter}]).await?;
    let inprog: Vec<Bson> = crate::read::pipeline::drain(stream)
        .await?
        .into_iter()
        .filter_map(|d| Document::try_from(d).ok())
        .map(Bson::Document)
        .collect();
    Ok(doc! {"inprog": inprog})
}

/// `aggregate: 1` on `admin` with a pipeline starting with `$currentOp`:
/// the stage on every shard, the rest of the pipeline over their
/// operations on one shard (fed with `$documents`). `None` for other
/// pipelines.
pub(crate) async fn current_op_stage(
    state: &RouterState,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    let Ok(pipeline) = req.body.get_array("pipeline") else {
        return Ok(None);
    };
    let stages: Vec<Document> = pipeline
        .into_iter()
        .filter_map(|s| Document::try_from(s.ok()?.as_document()?).ok())
        .collect();
    let Some(spec) = stages
        .first()
        .and_then(|s| s.get_document("$currentOp").ok())
    else {
        return Ok(None);
    };
    let ops: Vec<Bson> = shard_ops(state, spec)
        .await?
        .into_iter()
        .map(Bson::Document)
        .collect();
    if stages.len() == 1 {
        let reply = doc! {"cursor": {"id": 0i64, "ns": "admin.$cmd.aggregate", "firstBatch": ops}};
        return super::ok(reply).map(Some);
    }
    let shard = state
        .placement
        .shards()
        .into_iter()
        .next()
        .ok_or_else(|| RouterError::command(70, "ShardNotFound", "no shards"))?;
    crate::ddl::rest_on_shard(state, &shard, req, "admin", ops, &stages[1..])
        .await
        .map(Some)
}

/// `killOp`: of a router operation's id, interrupts it; of
/// `shardId:opid`, forwarded to that shard.
pub(crate) async fn kill_op(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let local = match req.body.get("op") {
        Ok(Some(bson::RawBsonRef::Int32(n))) => Some(i64::from(n)),
        Ok(Some(bson::RawBsonRef::Int64(n))) => Some(n),
        Ok(Some(bson::RawBsonRef::Double(f))) if f.fract() == 0.0 => Some(f as i64),
        Ok(Some(bson::RawBsonRef::String(s))) if !s.contains(':') => s.parse().ok(),
        _ => None,
    };
    if let Some(opid) = local {
        let opid = u32::try_from(opid)
            .map_err(|_| RouterError::bad_value(format!("invalid opid {opid}")))?;
        state.operations.kill(opid);
        return Ok(doc! {"info": "attempting to kill op"});
    }
    let op = req.body.get_str("op").map_err(|_| {
        RouterError::command(
            14,
            "TypeMismatch",
            "killOp takes op as a router opid or \"shardId:opid\"",
        )
    })?;
    let (shard, id) = op.split_once(':').ok_or_else(|| {
        RouterError::bad_value(format!("invalid op : {op}; expected \"shardId:opid\""))
    })?;
    let id: i64 = id
        .parse()
        .map_err(|_| RouterError::bad_value(format!("invalid opid in {op}")))?;
    let shard = state.placement.shard(shard)?;
    let id = i32::try_from(id)
        .map(Bson::Int32)
        .unwrap_or(Bson::Int64(id));
    run_on_shard(
        state,
        &shard,
        doc! {"killOp": 1, "op": id.clone(), "$db": "admin"},
    )
    .await?;
    Ok(doc! {"info": "attempting to kill op", "shard": &shard.id, "shardid": id})
}

/// `hostInfo`: the router's machine.
pub(crate) fn host_info() -> Document {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let hostname = read("/proc/sys/kernel/hostname").trim().to_owned();
    let mem_kb: i64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    let os_release = read("/etc/os-release");
    let os_field = |key: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    doc! {
        "system": {
            "currentTime": bson::DateTime::now(),
            "hostname": hostname,
            "cpuAddrSize": (std::mem::size_of::<usize>() * 8) as i32,
            "memSizeMB": mem_kb / 1024,
            "memLimitMB": mem_kb / 1024,
            "numCores": cores,
            "numPhysicalCores": cores,
            "numCpuSockets": 1,
            "cpuArch": std::env::consts::ARCH,
            "numaEnabled": false,
            "numNumaNodes": 1,
        },
        "os": {
            "type": "Linux",
            "name": os_field("PRETTY_NAME="),
            "version": read("/proc/sys/kernel/osrelease").trim(),
        },
        "extra": {
            "versionString": read("/proc/version").trim(),
            "pageSize": 4096i64,
        },
    }
}

/// `connPoolStats`: the router's connection pools to its shards.
pub(crate) fn conn_pool_stats(state: &RouterState) -> Document {
    let mut hosts = Document::new();
    let (mut in_use, mut available, mut created) = (0i64, 0i64, 0i64);
    for p in state.shards.stats() {
        let busy = p.stats.open.saturating_sub(p.stats.idle) as i64;
        in_use += busy;
        available += p.stats.idle as i64;
        created += p.stats.created as i64;
        hosts.insert(
            p.address,
            doc! {
                "inUse": busy,
                "available": p.stats.idle as i64,
                "created": p.stats.created as i64,
                "refreshing": 0i64,
                "shard": p.shard,
                "maxSize": p.max_size as i64,
            },
        );
    }
    doc! {
        "numClientConnections": 0i64,
        "numAScopedConnections": 0i64,
        "totalInUse": in_use,
        "totalAvailable": available,
        "totalCreated": created,
        "totalRefreshing": 0i64,
        "hosts": hosts,
    }
}

/// Any other `aggregate: 1` on `admin`: `$listSampledQueries` lists every
/// shard's sampled queries, `$listLocalSessions` lists the
/// sessions clients used through this router, the later stages run as
/// `read::pipeline::held` runs them; a pipeline of other stages
/// (`$documents`, …) runs on a shard, whose answer is the server's.
pub(crate) async fn admin_aggregate(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Reply> {
    let stages = crate::read::pipeline::pipeline_of(req.body)?;
    if let Some(spec) = stages.first().and_then(|s| s.get("$listSampledQueries")) {
        let spec = spec.clone();
        return crate::query_analysis::list_sampled_queries(
            state,
            session,
            req,
            &spec,
            &stages[1..],
        )
        .await;
    }
    let Some(spec) = stages
        .first()
        .and_then(|s| s.get_document("$listLocalSessions").ok())
    else {
        let shard = state
            .placement
            .shards()
            .into_iter()
            .min_by(|a, b| a.id.cmp(&b.id))
            .ok_or_else(|| RouterError::command(70, "ShardNotFound", "no shards"))?;
        let reply = crate::shards::to_shard(state, &shard, req.msg).await?;
        return Ok(Reply::Msg(reply));
    };
    let user = session
        .auth
        .users
        .first()
        .map(|u| format!("{}@{}", u.user, u.db));
    let sessions = state.local_sessions.list(spec, user.as_deref());
    let stream = crate::read::pipeline::held::run(state, sessions, &stages[1..]).await?;
    let first = crate::read::pipeline::first_batch_size(req.body);
    crate::read::pipeline::respond(state, session, "admin.$cmd.aggregate", stream, first).await
}
