//! Writes through the `config` view: the ones mongosh's helpers make.
//! `config.settings` takes updates (with upsert), inserts and deletes by
//! `_id`; `config.collections` takes updates of `noBalance`,
//! `maxChunkSizeBytes` and `enableAutoMerge`. Updates take the whole update
//! language (operators, pipelines, `arrayFilters`). Everything else is
//! refused with IllegalOperation.

use bson::{doc, Bson, Document, RawDocument};

use crate::error::{Result, RouterError};
use crate::session::Request;
use crate::state::RouterState;

fn read_only(coll: &str) -> RouterError {
    RouterError::command(
        20,
        "IllegalOperation",
        format!("config.{coll} cannot be written through shardgate; use the admin commands (sh.*) instead"),
    )
}

fn statements(body: &RawDocument, field: &str, req: &Request<'_>) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    if let Ok(array) = body.get_array(field) {
        for s in array {
            let d = s
                .ok()
                .and_then(|s| s.as_document())
                .and_then(|d| Document::try_from(d).ok())
                .ok_or_else(|| {
                    RouterError::bad_value(format!("'{field}' entries must be documents"))
                })?;
            out.push(d);
        }
    }
    for seq in req.msg.sequences.iter().filter(|s| s.identifier == field) {
        for d in seq.iter() {
            out.push(Document::try_from(d).map_err(|e| RouterError::bad_value(e.to_string()))?);
        }
    }
    Ok(out)
}

fn id_of(q: &Document) -> Result<String> {
    match q.get("_id") {
        Some(Bson::String(s)) => Ok(s.clone()),
        _ => Err(RouterError::bad_value(
            "writes to the config view must select one document by its string _id",
        )),
    }
}

/// The document `before` (`None`: an upsert inserting) becomes under the
/// statement `stmt`. `$set`, `$unset` and replacements are applied here;
/// any other update (operators such as `$inc` or `$push`, a pipeline,
/// `arrayFilters`) is applied by a shard, as the config server's mongod
/// applies it under mongos ([`on_a_shard`]).
async fn updated(
    state: &RouterState,
    before: Option<&Document>,
    q: &Document,
    stmt: &Document,
) -> Result<Document> {
    let simple = match stmt.get("u") {
        Some(Bson::Document(u)) if !stmt.contains_key("arrayFilters") => u
            .keys()
            .all(|k| !k.starts_with('$') || k == "$set" || k == "$unset")
            .then_some(u),
        Some(Bson::Document(_)) | Some(Bson::Array(_)) => None,
        _ => {
            return Err(RouterError::bad_value(
                "update statements need a 'u' document or pipeline",
            ))
        }
    };
    match simple {
        Some(u) => {
            let mut after = before.cloned().unwrap_or_else(|| {
                let mut d = Document::new();
                d.extend(
                    q.iter()
                        .filter(|(k, _)| !k.starts_with('$'))
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                d
            });
            apply(&mut after, u)?;
            Ok(after)
        }
        None => on_a_shard(state, before, q, stmt).await,
    }
}

/// Applies `$set`/`$unset` fields, or a replacement, to `doc`.
fn apply(doc: &mut Document, u: &Document) -> Result<()> {
    if u.keys().next().is_some_and(|k| k.starts_with('$')) {
        for (op, fields) in u {
            let fields = fields
                .as_document()
                .ok_or_else(|| RouterError::bad_value(format!("{op} takes a document")))?;
            for (field, value) in fields {
                if op == "$set" {
                    doc.insert(field.clone(), value.clone());
                } else {
                    doc.remove(field);
                }
            }
        }
    } else {
        let id = doc.get("_id").cloned();
        *doc = u.clone();
        if let Some(id) = id {
            doc.insert("_id", id);
        }
    }
    Ok(())
}

/// Runs the update on a scratch collection of a shard holding only
/// `before` (empty for an upsert), and drops it: the shard's update
/// language, exactly, for what the router does not apply itself.
async fn on_a_shard(
    state: &RouterState,
    before: Option<&Document>,
    q: &Document,
    stmt: &Document,
) -> Result<Document> {
    let shard = state.placement.shards().into_iter().next().ok_or_else(|| {
        RouterError::command(
            70,
            "ShardNotFound",
            "this update of the config view is applied by a shard; add one first",
        )
    })?;
    let scratch = format!(
        "{}config.{}",
        shardgate_shard_client::ROUTER_TEMP_PREFIX,
        bson::oid::ObjectId::new()
    );
    let run = async {
        if let Some(before) = before {
            let insert = doc! {"insert": &scratch, "documents": [before], "$db": "admin"};
            crate::shards::run_on_shard(state, &shard, insert).await?;
        }
        let mut fam = doc! {
            "findAndModify": &scratch, "query": q, "update": stmt.get("u").cloned().unwrap_or(Bson::Null),
            "new": true, "upsert": before.is_none(), "$db": "admin",
        };
        if let Some(filters) = stmt.get("arrayFilters") {
            fam.insert("arrayFilters", filters.clone());
        }
        let reply = crate::shards::run_on_shard(state, &shard, fam).await?;
        Ok::<_, RouterError>(reply.get_document("value").cloned().unwrap_or_default())
    };
    let after = run.await;
    let drop = doc! {"drop": &scratch, "$db": "admin"};
    let _ = crate::shards::run_on_shard(state, &shard, drop).await;
    after
}

/// IllegalOperation unless every field that differs between `before` and
/// `after` is one of `allowed`.
fn check_changes(before: &Document, after: &Document, allowed: &[&str]) -> Result<()> {
    let changed = before.keys().chain(after.keys()).find(|k| {
        !allowed.contains(&k.as_str()) && before.get(k.as_str()) != after.get(k.as_str())
    });
    match changed {
        Some(field) => Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("field '{field}' cannot be changed through the config view"),
        )),
        None => Ok(()),
    }
}

/// `update` on `config.settings` or `config.collections`.
pub(crate) async fn update(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let coll = req.body.get_str("update").unwrap_or("");
    let (mut n, mut modified) = (0i64, 0i64);
    let mut upserted = Vec::new();
    for (index, stmt) in statements(req.body, "updates", req)?
        .into_iter()
        .enumerate()
    {
        let q = stmt.get_document("q").cloned().unwrap_or_default();
        let id = id_of(&q)?;
        match coll {
            "settings" => {
                let existing = state.catalog.setting(&id).await?;
                let upsert = stmt.get_bool("upsert").unwrap_or(false);
                if existing.is_none() && !upsert {
                    continue;
                }
                let mut after = updated(state, existing.as_ref(), &q, &stmt).await?;
                after.insert("_id", &id);
                state.catalog.put_setting(&id, &after).await?;
                n += 1;
                if existing.is_none() {
                    upserted.push(doc! {"index": index as i32, "_id": &id});
                } else if existing.as_ref() != Some(&after) {
                    modified += 1;
                }
            }
            "collections" => {
                let Some(mut entry) = state.catalog.collection(&id).await? else {
                    continue;
                };
                let mut before = doc! {"_id": &id, "noBalance": entry.no_balance};
                if let Some(size) = entry.max_chunk_size_bytes {
                    before.insert("maxChunkSizeBytes", size);
                }
                let after = updated(state, Some(&before), &q, &stmt).await?;
                check_changes(
                    &before,
                    &after,
                    &["noBalance", "maxChunkSizeBytes", "enableAutoMerge"],
                )?;
                entry.no_balance = after.get_bool("noBalance").unwrap_or(false);
                entry.max_chunk_size_bytes = match after.get("maxChunkSizeBytes") {
                    Some(Bson::Int32(v)) => Some(*v as i64),
                    Some(Bson::Int64(v)) => Some(*v),
                    _ => None,
                };
                state.catalog.update_collection(&entry).await?;
                n += 1;
                if after != before {
                    modified += 1;
                }
            }
            other => return Err(read_only(other)),
        }
    }
    let mut reply = doc! {"n": n, "nModified": modified};
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    Ok(reply)
}

/// `insert` into `config.settings`.
pub(crate) async fn insert(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let coll = req.body.get_str("insert").unwrap_or("");
    if coll != "settings" {
        return Err(read_only(coll));
    }
    let mut n = 0i64;
    let mut errors = Vec::new();
    for (index, d) in statements(req.body, "documents", req)?
        .into_iter()
        .enumerate()
    {
        let id = id_of(&d)?;
        if state.catalog.setting(&id).await?.is_some() {
            errors.push(doc! {
                "index": index as i32,
                "code": 11000,
                "errmsg": format!("E11000 duplicate key error collection: config.settings index: _id_ dup key: {{ _id: \"{id}\" }}"),
            });
            continue;
        }
        state.catalog.put_setting(&id, &d).await?;
        n += 1;
    }
    let mut reply = doc! {"n": n};
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

/// `delete` from `config.settings` by `_id`.
pub(crate) async fn delete(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let coll = req.body.get_str("delete").unwrap_or("");
    if coll != "settings" {
        return Err(read_only(coll));
    }
    let mut n = 0i64;
    for stmt in statements(req.body, "deletes", req)? {
        let q = stmt.get_document("q").cloned().unwrap_or_default();
        let id = id_of(&q)?;
        if state.catalog.setting(&id).await?.is_some() {
            state.catalog.delete_setting(&id).await?;
            n += 1;
        }
    }
    Ok(doc! {"n": n})
}
