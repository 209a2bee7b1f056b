//! `configureQueryAnalyzer` and `$listSampledQueries`, answered as mongos
//! 8.0 answers them.

use std::sync::Arc;

use bson::{doc, Bson, Document};

use super::{number, SAMPLES};
use crate::commands::admin::admin_only;
use crate::commands::sharding::split_ns;
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request, Session};
use crate::shards::run_on_shard;
use crate::state::RouterState;

/// Most samples per second a collection may be given.
const MAX_RATE: f64 = 50.0;

fn invalid_options(message: &str) -> RouterError {
    RouterError::command(72, "InvalidOptions", message)
}

fn illegal(message: &str) -> RouterError {
    RouterError::command(20, "IllegalOperation", message)
}

/// The checks mongos makes of the namespace itself.
pub(crate) fn validate_namespace(ns: &str) -> Result<(&str, &str)> {
    let (db, coll) = split_ns(ns)?;
    if matches!(db, "admin" | "config" | "local") {
        return Err(illegal("Cannot run against an internal collection"));
    }
    if coll.starts_with("system.") {
        return Err(illegal("Cannot run against a system collection"));
    }
    if coll.starts_with("enxcol_.") {
        return Err(illegal("Cannot run against an internal collection"));
    }
    Ok((db, coll))
}

/// The collection's UUID, when it exists and is a collection (not a view,
/// not a timeseries collection, not encrypted).
pub(crate) async fn collection_uuid(state: &RouterState, ns: &str) -> Result<bson::Uuid> {
    let (db, coll) = split_ns(ns)?;
    let missing = || RouterError::command(26, "NamespaceNotFound", "The namespace does not exist");
    let database = match state.placement.cached(db) {
        Some(d) => Some(d),
        None => state.catalog.database(db).await?,
    };
    let database = database.ok_or_else(missing)?;
    if let Some(routing) = state.routing.get(ns) {
        return Ok(routing.collection.uuid);
    }
    let primary = state.placement.shard(&database.primary)?;
    let list = doc! {"listCollections": 1, "filter": {"name": coll}, "$db": db};
    let reply = run_on_shard(state, &primary, list).await?;
    let entry = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.iter().find_map(Bson::as_document))
        .cloned()
        .ok_or_else(missing)?;
    match entry.get_str("type") {
        Ok("view") => {
            return Err(RouterError::command(
                166,
                "CommandNotSupportedOnView",
                "Operation not supported for a view",
            ))
        }
        Ok("timeseries") => {
            return Err(illegal(
                "Operation not supported for a timeseries collection",
            ))
        }
        _ => {}
    }
    let options = entry.get_document("options").cloned().unwrap_or_default();
    if options.contains_key("encryptedFields") {
        return Err(illegal(
            "Operation not supported for a collection with queryable encryption enabled",
        ));
    }
    super::uuid(entry.get_document("info").ok().and_then(|i| i.get("uuid"))).ok_or_else(|| {
        RouterError::command(
            1,
            "InternalError",
            format!("the primary shard gives {ns} no UUID"),
        )
    })
}

/// `configureQueryAnalyzer`.
pub(crate) async fn configure(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = req.body.get_str(req.name).map_err(|_| {
        RouterError::command(
            14,
            "TypeMismatch",
            "BSON field 'configureQueryAnalyzer.configureQueryAnalyzer' is the wrong type, expected type 'string'",
        )
    })?;
    let mode = match req.body.get("mode") {
        Ok(Some(bson::RawBsonRef::String(m))) => m,
        Ok(None) | Err(_) => {
            return Err(RouterError::command(
                40414,
                "Location40414",
                "BSON field 'configureQueryAnalyzer.mode' is missing but a required field",
            ))
        }
        Ok(Some(_)) => return Err(RouterError::command(
            14,
            "TypeMismatch",
            "BSON field 'configureQueryAnalyzer.mode' is the wrong type, expected type 'string'",
        )),
    };
    if !matches!(mode, "full" | "off") {
        return Err(RouterError::bad_value(format!(
            "Enumeration value '{mode}' for field 'configureQueryAnalyzer.mode' is not a valid value."
        )));
    }
    for concern in ["readConcern", "writeConcern"] {
        if matches!(req.body.get(concern), Ok(Some(_))) {
            return Err(invalid_options(&format!(
                "Command does not support {concern}"
            )));
        }
    }
    let rate = match req.body.get("samplesPerSecond") {
        Ok(Some(v)) => Some(
            number(Bson::try_from(v).ok().as_ref()).ok_or_else(|| {
                RouterError::command(
                    14,
                    "TypeMismatch",
                    "BSON field 'configureQueryAnalyzer.samplesPerSecond' is the wrong type, expected a number",
                )
            })?,
        ),
        _ => None,
    };
    validate_namespace(ns)?;
    let rate = check_rate(mode, rate)?;
    let uuid = collection_uuid(state, ns).await?;
    store(state, ns, uuid, mode, rate).await
}

fn check_rate(mode: &str, rate: Option<f64>) -> Result<Option<f64>> {
    match (mode, rate) {
        ("off", Some(_)) => Err(invalid_options(
            "Cannot specify 'samplesPerSecond' when 'mode' is \"off\"",
        )),
        ("off", None) => Ok(None),
        (_, None) => Err(invalid_options(
            "'samplesPerSecond' must be specified when 'mode' is not \"off\"",
        )),
        (_, Some(r)) if r.is_nan() || r <= 0.0 => {
            Err(invalid_options("'samplesPerSecond' must be greater than 0"))
        }
        (_, Some(r)) if r > MAX_RATE => Err(invalid_options(&format!(
            "'samplesPerSecond' must be less than or equal to {MAX_RATE}"
        ))),
        (_, Some(r)) => Ok(Some(r)),
    }
}

/// Writes the new configuration and answers with it and the one it
/// replaced (of the same collection incarnation).
async fn store(
    state: &RouterState,
    ns: &str,
    uuid: bson::Uuid,
    mode: &str,
    rate: Option<f64>,
) -> Result<Document> {
    let old = state
        .catalog
        .query_analyzers()
        .await?
        .into_iter()
        .find(|d| d.get_str("_id").ok() == Some(ns));
    let same_collection = old
        .as_ref()
        .is_some_and(|d| super::uuid(d.get("collUuid")) == Some(uuid));
    let old = old.filter(|_| same_collection);
    let shown = |d: &Document| {
        let mut c = doc! {"mode": d.get_str("mode").unwrap_or("off")};
        if let Some(r) = d.get("samplesPerSecond") {
            c.insert("samplesPerSecond", r.clone());
        }
        c
    };
    let mut reply = Document::new();
    let now = bson::DateTime::now();
    match rate {
        None => {
            reply.insert("newConfiguration", doc! {"mode": "off"});
            // Only a running analyzer is turned off (and answered for).
            if let Some(mut d) = old.filter(|d| d.get_str("mode").ok() != Some("off")) {
                reply.insert("oldConfiguration", shown(&d));
                d.insert("mode", "off");
                d.insert("stopTime", now);
                state.catalog.put_query_analyzer(ns, &d).await?;
            }
        }
        Some(rate) => {
            reply.insert(
                "newConfiguration",
                doc! {"mode": mode, "samplesPerSecond": rate},
            );
            let start = match &old {
                Some(d) if d.get_str("mode").ok() == Some("full") => {
                    d.get_datetime("startTime").copied().unwrap_or(now)
                }
                _ => now,
            };
            if let Some(d) = &old {
                reply.insert("oldConfiguration", shown(d));
            }
            let d = doc! {
                "_id": ns,
                "collUuid": uuid,
                "mode": mode,
                "samplesPerSecond": rate,
                "startTime": start,
            };
            state.catalog.put_query_analyzer(ns, &d).await?;
        }
    }
    state.query_analyzers.reload(state).await?;
    Ok(reply)
}

/// `$listSampledQueries` (the first stage of an `aggregate: 1` on
/// `admin`): every shard's samples, of one collection or all; the later
/// stages run over them as over the config view's documents.
pub(crate) async fn list_sampled_queries(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
    spec: &Bson,
    stages: &[Document],
) -> Result<Reply> {
    if matches!(req.body.get("autocommit"), Ok(Some(_))) {
        return Err(RouterError::command(
            263,
            "OperationNotSupportedInTransaction",
            "$listSampledQueries cannot be used in a transaction",
        ));
    }
    let Bson::Document(spec) = spec else {
        return Err(RouterError::command(
            6876001,
            "Location6876001",
            format!("$listSampledQueries must take a nested object but found: {spec}"),
        ));
    };
    let filter = match spec.get("namespace") {
        None => Document::new(),
        Some(Bson::String(ns)) => {
            validate_namespace(ns)?;
            doc! {"ns": ns}
        }
        Some(_) => return Err(RouterError::command(
            14,
            "TypeMismatch",
            "BSON field '$listSampledQueries.namespace' is the wrong type, expected type 'string'",
        )),
    };
    super::flush(state).await;
    let docs = read_samples(state, SAMPLES, filter).await?;
    let stream = crate::read::pipeline::held::run(state, docs, stages).await?;
    let first = crate::read::pipeline::first_batch_size(req.body);
    crate::read::pipeline::respond(state, session, "admin.$cmd.aggregate", stream, first).await
}

/// Every shard's documents of `config.<coll>` that match `filter`.
pub(crate) async fn read_samples(
    state: &RouterState,
    coll: &str,
    filter: Document,
) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    let mut shards = state.placement.shards();
    shards.sort_by(|a, b| a.id.cmp(&b.id));
    for shard in shards {
        let find = doc! {"find": coll, "filter": filter.clone(), "$db": "config"};
        let docs = match crate::shards::open_cursor(state, &shard, &find).await {
            Ok(c) => c.all().await?,
            Err(e) if e.code().0 == 26 => continue,
            Err(e) => return Err(e),
        };
        for d in docs {
            out.push(
                Document::try_from(d.as_ref())
                    .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?,
            );
        }
    }
    Ok(out)
}
