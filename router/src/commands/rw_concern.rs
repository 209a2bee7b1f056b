//! The cluster's default read and write concerns: `setDefaultRWConcern`
//! keeps them in the store (`config.settings`, `ReadWriteConcernDefaults`),
//! `getDefaultRWConcern` reads them, and every router adds them to the
//! commands that carry none (outside transactions), as mongos does; so
//! too the `defaultMaxTimeMS` cluster parameter's `maxTimeMS` to reads.

use bson::{doc, Bson, Document, RawDocument};
use shardgate_wire::OpMsg;

use crate::error::{Result, RouterError};
use crate::request::CommandInfo;
use crate::session::Request;
use crate::state::{RouterState, RwDefaults};

use crate::state::RW_DEFAULTS_SETTING as SETTING;

fn defaults(state: &RouterState) -> RwDefaults {
    state
        .rw_defaults
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// `getDefaultRWConcern`.
pub(crate) async fn get(state: &RouterState) -> Result<Document> {
    state.reload_rw_defaults().await?;
    let stored = state.catalog.setting(SETTING).await?.unwrap_or_default();
    let d = defaults(state);
    let source = |set: bool| if set { "global" } else { "implicit" };
    let mut out = doc! {
        "defaultReadConcern": d.read.clone().unwrap_or_else(|| doc! {"level": "local"}),
        "defaultWriteConcern": d.write.clone().unwrap_or_else(|| doc! {"w": "majority", "wtimeout": 0}),
        "defaultReadConcernSource": source(d.read.is_some()),
        "defaultWriteConcernSource": source(d.write.is_some()),
    };
    if let Some(t) = stored.get("updateWallClockTime") {
        out.insert("updateWallClockTime", t.clone());
        out.insert("localUpdateWallClockTime", t.clone());
    }
    Ok(out)
}

/// `setDefaultRWConcern`: at least one of `defaultReadConcern` and
/// `defaultWriteConcern`; an empty document unsets one.
pub(crate) async fn set(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let read = req.body.get_document("defaultReadConcern").ok();
    let write = req.body.get_document("defaultWriteConcern").ok();
    if read.is_none() && write.is_none() {
        return Err(RouterError::bad_value(
            "Must set one of defaultReadConcern or defaultWriteConcern",
        ));
    }
    let mut stored = state
        .catalog
        .setting(SETTING)
        .await?
        .unwrap_or_else(|| doc! {"_id": SETTING});
    if let Some(read) = read {
        let read = Document::try_from(read).map_err(|e| RouterError::bad_value(e.to_string()))?;
        match read.get_str("level") {
            Ok("local" | "available" | "majority") if read.len() == 1 => {}
            _ if read.is_empty() => {}
            _ => {
                return Err(RouterError::bad_value(format!(
                    "Default read concern must have level local, available or majority (and nothing else): {read}"
                )))
            }
        }
        set_or_unset(&mut stored, "defaultReadConcern", read);
    }
    if let Some(write) = write {
        let write = Document::try_from(write).map_err(|e| RouterError::bad_value(e.to_string()))?;
        if matches!(write.get("w"), Some(Bson::Int32(0) | Bson::Int64(0))) {
            return Err(RouterError::bad_value(
                "Default write concern must have w field with value >= 1",
            ));
        }
        set_or_unset(&mut stored, "defaultWriteConcern", write);
    }
    stored.insert("updateWallClockTime", bson::DateTime::now());
    state.catalog.put_setting(SETTING, &stored).await?;
    get(state).await
}

fn set_or_unset(stored: &mut Document, field: &str, value: Document) {
    if value.is_empty() {
        stored.remove(field);
    } else {
        stored.insert(field, value);
    }
}

/// Commands that read with a read concern.
const READS: [&str; 4] = ["find", "aggregate", "count", "distinct"];

/// `msg` with the default concerns added where the command carries none
/// (never inside a transaction); `None` when nothing is added — always,
/// and at the cost of one read lock, while no default is set.
pub(crate) fn apply(state: &RouterState, msg: &OpMsg) -> Result<Option<OpMsg>> {
    let d = {
        let held = state.rw_defaults.read().unwrap_or_else(|e| e.into_inner());
        if held.read.is_none() && held.write.is_none() && held.read_max_time_ms.is_none() {
            return Ok(None);
        }
        held.clone()
    };
    let info = CommandInfo::parse(msg)?;
    let body: &RawDocument = info.body;
    if matches!(body.get("autocommit"), Ok(Some(_))) || matches!(info.db, "config" | "local") {
        return Ok(None);
    }
    let mut extra = Document::new();
    let ddl = matches!(
        info.name,
        "createIndexes" | "dropIndexes" | "drop" | "create" | "collMod" | "renameCollection"
    );
    let out = info.name == "aggregate" && out_stage(body);
    let writes = ddl || out || super::registry().get(info.name).is_some_and(|s| s.writes);
    if let (true, Some(w), Ok(None)) = (writes, &d.write, body.get("writeConcern")) {
        extra.insert("writeConcern", w.clone());
    }
    let reads = READS.contains(&info.name) && !out;
    if let (true, Some(r), Ok(None)) = (reads, &d.read, body.get("readConcern")) {
        extra.insert("readConcern", r.clone());
    }
    if let (true, Some(ms), Ok(None)) = (reads, d.read_max_time_ms, body.get("maxTimeMS")) {
        extra.insert("maxTimeMS", ms);
    }
    if extra.is_empty() {
        return Ok(None);
    }
    let body = crate::read::rewrite(body, &[], extra)?;
    Ok(Some(OpMsg {
        flags: msg.flags,
        body: bytes::Bytes::from(body.into_bytes()),
        sequences: msg.sequences.clone(),
    }))
}

/// Whether an `aggregate` writes (`$out`, `$merge`): a write concern, not
/// a read concern, applies.
fn out_stage(body: &RawDocument) -> bool {
    body.get_array("pipeline").is_ok_and(|p| {
        p.into_iter()
            .filter_map(|s| s.ok()?.as_document())
            .any(|s| {
                s.get("$out").ok().flatten().is_some() || s.get("$merge").ok().flatten().is_some()
            })
    })
}
