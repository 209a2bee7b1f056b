//! Cluster-wide settings mongos takes from the config server:
//! `getClusterParameter`/`setClusterParameter` (kept in the config store;
//! `defaultMaxTimeMS` bounds every router's reads that set no `maxTimeMS`)
//! and `setFeatureCompatibilityVersion` (checked as mongos's config server
//! checks it, passed on to every shard that knows the command, recorded);
//! and two commands about this router process: `logRotate` and
//! `dropConnections`.

use bson::{doc, Bson, Document, Timestamp};

use super::ok;
use super::registry::{handler, router, CommandSpec, Privilege::*};
use crate::error::{Result, RouterError};
use crate::session::Request;
use crate::state::RouterState;

/// The commands of this module.
pub(crate) fn specs() -> Vec<CommandSpec> {
    vec![
        router(
            "logRotate",
            HostManager,
            handler!(|state, session, req| log_rotate(req).and_then(ok)),
        ),
        router(
            "dropConnections",
            HostManager,
            handler!(|state, session, req| drop_connections(state, req).and_then(ok)),
        ),
        router(
            "getClusterParameter",
            ClusterMonitor,
            handler!(|state, session, req| get(state, req).await.and_then(ok)),
        ),
        router(
            "setClusterParameter",
            ClusterManager,
            handler!(|state, session, req| set(state, req).await.and_then(ok)),
        ),
        router(
            "setFeatureCompatibilityVersion",
            ClusterManager,
            handler!(|state, session, req| set_fcv(state, req).await.and_then(ok)),
        ),
    ]
}

/// The cluster parameters a community mongos 8.0 shows, with defaults.
fn defaults(shards: usize) -> Vec<(&'static str, Document)> {
    vec![
        (
            "changeStreamOptions",
            doc! {"preAndPostImages": {"expireAfterSeconds": "off"}},
        ),
        ("defaultMaxTimeMS", doc! {"readOperations": 0i64}),
        ("pauseMigrationsDuringMultiUpdates", doc! {"enabled": false}),
        (
            "shardedClusterCardinalityForDirectConns",
            doc! {"hasTwoOrMoreShards": shards >= 2},
        ),
    ]
}

fn no_such_key(msg: String) -> RouterError {
    RouterError::command(4, "NoSuchKey", msg)
}

fn type_mismatch(msg: String) -> RouterError {
    RouterError::command(14, "TypeMismatch", msg)
}

/// `getClusterParameter`: `"*"`, a name, or a list of names.
pub(crate) async fn get(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let arg = req
        .body
        .get("getClusterParameter")
        .ok()
        .flatten()
        .and_then(|v| Bson::try_from(v).ok());
    let names: Option<Vec<String>> = match arg {
        Some(Bson::String(s)) if s == "*" => None,
        Some(Bson::String(s)) => Some(vec![s]),
        Some(Bson::Array(a)) if a.is_empty() => {
            return Err(RouterError::bad_value(
                "getClusterParameter requires at least one parameter name",
            ))
        }
        Some(Bson::Array(a)) => Some(
            a.into_iter()
                .map(|v| match v {
                    Bson::String(s) => Ok(s),
                    _ => Err(type_mismatch("parameter names must be strings".into())),
                })
                .collect::<Result<_>>()?,
        ),
        _ => {
            return Err(type_mismatch(
                "getClusterParameter takes '*', a parameter name or a list of names".into(),
            ))
        }
    };
    let shards = state.placement.shards().len();
    let stored = state.catalog.cluster_parameters().await?;
    let current = |name: &str, default: &Document| {
        stored
            .iter()
            .find(|d| d.get_str("_id").ok() == Some(name))
            .cloned()
            .unwrap_or_else(|| {
                let mut d =
                    doc! {"_id": name, "clusterParameterTime": Timestamp { time: 0, increment: 0 }};
                d.extend(default.clone());
                d
            })
    };
    let known = defaults(shards);
    let mut out = Vec::new();
    match names {
        None => out.extend(known.iter().map(|(n, d)| current(n, d))),
        Some(names) => {
            for name in names {
                let (n, d) = known
                    .iter()
                    .find(|(n, _)| *n == name)
                    .ok_or_else(|| no_such_key(format!("Unknown server parameter: {name}")))?;
                out.push(current(n, d));
            }
        }
    }
    Ok(doc! {"clusterParameters": out})
}

/// `setClusterParameter: {<name>: {<fields>}}`.
pub(crate) async fn set(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let arg = req
        .body
        .get_document("setClusterParameter")
        .map_err(|_| type_mismatch("setClusterParameter takes a document".into()))?;
    let arg = Document::try_from(arg).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let mut entries = arg.iter();
    let (name, value) = entries
        .next()
        .ok_or_else(|| no_such_key("No cluster parameter provided".into()))?;
    if entries.next().is_some() {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            "Exactly one cluster parameter may be set at a time",
        ));
    }
    let Bson::Document(value) = value else {
        return Err(RouterError::bad_value(format!(
            "Cluster parameter value must be an object: {name}"
        )));
    };
    let value = validate(name, value)?;
    let mut stored = doc! {"_id": name, "clusterParameterTime": crate::session::now_ts()};
    stored.extend(value);
    state.catalog.put_cluster_parameter(name, &stored).await?;
    state.reload_rw_defaults().await?;
    Ok(Document::new())
}

/// The stored form of a parameter's new value, or the error mongos gives.
fn validate(name: &str, value: &Document) -> Result<Document> {
    if let Some(k) = value.keys().find(|k| k.starts_with('$')) {
        return Err(RouterError::command(
            52,
            "DollarPrefixedFieldName",
            format!("{k} is not valid for storage"),
        ));
    }
    let unknown = |allowed: &[&str]| {
        value
            .keys()
            .find(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                RouterError::command(
                    40415,
                    "Location40415",
                    format!("BSON field '{name}.{k}' is an unknown field."),
                )
            })
    };
    match name {
        "defaultMaxTimeMS" => unknown(&["readOperations"]).map_or_else(|| max_time(value), Err),
        "pauseMigrationsDuringMultiUpdates" => match unknown(&["enabled"]) {
            Some(e) => Err(e),
            None => match value.get("enabled") {
                Some(Bson::Boolean(b)) => Ok(doc! {"enabled": *b}),
                None => Ok(doc! {"enabled": false}),
                Some(_) => Err(type_mismatch(
                    "BSON field 'pauseMigrationsDuringMultiUpdates.enabled' is the wrong type, expected type 'bool'".into(),
                )),
            },
        },
        "changeStreamOptions" => {
            unknown(&["preAndPostImages"]).map_or_else(|| change_stream_options(value), Err)
        }
        "shardedClusterCardinalityForDirectConns" => Err(RouterError::bad_value(format!(
            "{name} is set by the cluster itself"
        ))),
        _ => Err(no_such_key(format!("Unknown server parameter: {name}"))),
    }
}

/// `defaultMaxTimeMS: {readOperations}`: a non-negative integer.
fn max_time(value: &Document) -> Result<Document> {
    let ms = match value.get("readOperations") {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Double(v)) if v.fract() == 0.0 => *v as i64,
        None => 0,
        Some(_) => return Err(type_mismatch(
            "BSON field 'defaultMaxTimeMS.readOperations' is the wrong type, expected type 'long'"
                .into(),
        )),
    };
    if ms < 0 {
        return Err(RouterError::bad_value(format!(
            "readOperations must be non-negative, got {ms}"
        )));
    }
    Ok(doc! {"readOperations": ms})
}

/// `changeStreamOptions: {preAndPostImages: {expireAfterSeconds}}`: `"off"`
/// or a positive number of seconds.
fn change_stream_options(value: &Document) -> Result<Document> {
    let images = value.get_document("preAndPostImages").ok();
    let expire = match images.and_then(|i| i.get("expireAfterSeconds")) {
        None => Bson::String("off".into()),
        Some(Bson::String(s)) if s == "off" => Bson::String("off".into()),
        Some(Bson::String(_)) => {
            return Err(RouterError::bad_value(
                "Non-numeric value of 'expireAfterSeconds' should be 'off'",
            ))
        }
        Some(Bson::Int32(n)) => positive(i64::from(*n))?,
        Some(Bson::Int64(n)) => positive(*n)?,
        Some(Bson::Double(d)) => positive(*d as i64)?,
        Some(_) => {
            return Err(type_mismatch(
                "'expireAfterSeconds' must be 'off' or a number".into(),
            ))
        }
    };
    Ok(doc! {"preAndPostImages": {"expireAfterSeconds": expire}})
}

fn positive(n: i64) -> Result<Bson> {
    if n <= 0 {
        return Err(RouterError::bad_value(
            "Numeric value of 'expireAfterSeconds' should be positive",
        ));
    }
    Ok(Bson::Int64(n))
}

/// The feature compatibility versions mongos 8.0 accepts.
const VERSIONS: [&str; 3] = ["7.0", "7.3", "8.0"];
/// The version a new cluster runs at.
pub(crate) const CURRENT_FCV: &str = "8.0";

/// `setFeatureCompatibilityVersion`.
pub(crate) async fn set_fcv(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let to = match req.body.get("setFeatureCompatibilityVersion") {
        Ok(Some(bson::RawBsonRef::String(s))) => s.to_owned(),
        _ => return Err(type_mismatch(
            "BSON field 'setFeatureCompatibilityVersion' is the wrong type, expected type 'string'"
                .into(),
        )),
    };
    if !VERSIONS.contains(&to.as_str()) {
        return Err(RouterError::command(
            4926900,
            "Location4926900",
            format!("Invalid feature compatibility version value '{to}'; expected '7.0' or '7.3' or '8.0'. See https://docs.mongodb.com/master/release-notes/8.0-compatibility/#feature-compatibility."),
        ));
    }
    let from = state
        .catalog
        .feature_compatibility_version()
        .await?
        .and_then(|d| d.get_str("version").ok().map(str::to_owned))
        .unwrap_or_else(|| CURRENT_FCV.to_owned());
    if !req.body.get_bool("confirm").unwrap_or(false) {
        let msg = if to.as_str() > from.as_str() {
            format!("Once you have upgraded to {to}, you will not be able to downgrade FCV and binary version without support assistance. Please re-run this command with 'confirm: true' to acknowledge this and continue with the FCV upgrade.")
        } else {
            "Once you have downgraded the FCV, if you choose to downgrade the binary version, it will require support assistance. Please re-run this command with 'confirm: true' to acknowledge this and continue with the FCV downgrade.".to_owned()
        };
        return Err(RouterError::command(7369100, "Location7369100", msg));
    }
    if to == from {
        return Ok(Document::new());
    }
    let allowed = matches!(
        (from.as_str(), to.as_str()),
        ("7.0", "8.0") | ("8.0", "7.0") | ("7.3", "8.0")
    );
    if !allowed {
        return Err(RouterError::command(
            5147403,
            "Location5147403",
            format!("cannot set featureCompatibilityVersion to '{to}' while featureCompatibilityVersion is '{from}'"),
        ));
    }
    let cmd = doc! {"setFeatureCompatibilityVersion": &to, "confirm": true, "$db": "admin"};
    for shard in state.placement.shards() {
        match crate::shards::run_on_shard(state, &shard, cmd.clone()).await {
            Ok(_) => {}
            // A shard server without the notion keeps no version to set.
            Err(e) if e.code().0 == 59 => {}
            Err(e) => return Err(e),
        }
    }
    let record = doc! {"_id": "featureCompatibilityVersion", "version": &to};
    state
        .catalog
        .put_feature_compatibility_version(&record)
        .await?;
    Ok(Document::new())
}

/// `logRotate`: the router logs to stderr (and keeps recent lines for
/// `getLog`), so there is no file to reopen; `"server"` and a number or
/// boolean succeed, another log type is NoSuchKey, as on mongos.
pub(crate) fn log_rotate(req: &Request<'_>) -> Result<Document> {
    match req.body.get("logRotate") {
        Ok(Some(bson::RawBsonRef::String(s))) if s != "server" => {
            tracing::warn!(log = s, "logRotate: no such log");
            Err(no_such_key(
                "Log rotation failed due to one or more errors".into(),
            ))
        }
        _ => {
            tracing::info!("logRotate: the router logs to stderr; nothing to reopen");
            Ok(Document::new())
        }
    }
}

/// `dropConnections: {hostAndPort: [...]}`: closes this router's pooled
/// connections to those shard members.
pub(crate) fn drop_connections(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    if let Some(k) = req
        .body
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .find(|k| {
            !k.starts_with('$')
                && !matches!(
                    *k,
                    "dropConnections"
                        | "hostAndPort"
                        | "lsid"
                        | "comment"
                        | "apiVersion"
                        | "apiStrict"
                        | "apiDeprecationErrors"
                )
        })
    {
        return Err(RouterError::command(
            40415,
            "Location40415",
            format!("BSON field 'dropConnections.{k}' is an unknown field."),
        ));
    }
    let hosts =
        match req.body.get("hostAndPort") {
            Ok(Some(bson::RawBsonRef::Array(a))) => a,
            Ok(Some(_)) => return Err(type_mismatch(
                "BSON field 'dropConnections.hostAndPort' is the wrong type, expected type 'array'"
                    .into(),
            )),
            _ => {
                return Err(RouterError::command(
                    40414,
                    "Location40414",
                    "BSON field 'dropConnections.hostAndPort' is missing but a required field",
                ))
            }
        };
    for host in hosts {
        let Ok(bson::RawBsonRef::String(host)) = host else {
            return Err(type_mismatch(
                "BSON field 'dropConnections.hostAndPort' elements must be strings".into(),
            ));
        };
        if host
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(RouterError::command(
                9,
                "FailedToParse",
                format!("'{host}' is not a valid host:port"),
            ));
        }
        let cleared = state.shards.drop_connections(host);
        tracing::info!(host, cleared, "dropConnections");
    }
    Ok(Document::new())
}
