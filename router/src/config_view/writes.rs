//! Writes through the `config` view: the ones mongosh's helpers make.
//! `config.settings` takes updates (with upsert), inserts and deletes by
//! `_id`; `config.collections` takes `$set`/`$unset` of `noBalance` and
//! `maxChunkSizeBytes`. Everything else is refused with IllegalOperation.

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

/// Applies an update document (`$set`/`$unset`, or a replacement) to `doc`.
fn apply(doc: &mut Document, u: &Document, allowed: Option<&[&str]>) -> Result<()> {
    let check = |field: &str| match allowed {
        Some(list) if !list.contains(&field) => Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("field '{field}' cannot be changed through the config view"),
        )),
        _ => Ok(()),
    };
    if u.keys().next().is_some_and(|k| k.starts_with('$')) {
        for (op, fields) in u {
            let fields = fields
                .as_document()
                .ok_or_else(|| RouterError::bad_value(format!("{op} takes a document")))?;
            for (field, value) in fields {
                check(field)?;
                match op.as_str() {
                    "$set" => {
                        doc.insert(field.clone(), value.clone());
                    }
                    "$unset" => {
                        doc.remove(field);
                    }
                    other => {
                        return Err(RouterError::command(
                            238,
                            "NotImplemented",
                            format!("update operator {other} is not supported on the config view"),
                        ))
                    }
                }
            }
        }
    } else {
        let id = doc.get("_id").cloned();
        for field in u.keys().filter(|k| *k != "_id") {
            check(field)?;
        }
        *doc = u.clone();
        if let Some(id) = id {
            doc.insert("_id", id);
        }
    }
    Ok(())
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
        let u = stmt
            .get_document("u")
            .cloned()
            .map_err(|_| RouterError::bad_value("update statements need a 'u' document"))?;
        let id = id_of(&q)?;
        match coll {
            "settings" => {
                let existing = state.catalog.setting(&id).await?;
                let upsert = stmt.get_bool("upsert").unwrap_or(false);
                let Some(before) = existing
                    .clone()
                    .or_else(|| upsert.then(|| doc! {"_id": &id}))
                else {
                    continue;
                };
                let mut after = before.clone();
                apply(&mut after, &u, None)?;
                state.catalog.put_setting(&id, &after).await?;
                n += 1;
                if existing.is_none() {
                    upserted.push(doc! {"index": index as i32, "_id": &id});
                } else if after != before {
                    modified += 1;
                }
            }
            "collections" => {
                let Some(mut entry) = state.catalog.collection(&id).await? else {
                    continue;
                };
                let mut as_doc = doc! {"noBalance": entry.no_balance};
                if let Some(size) = entry.max_chunk_size_bytes {
                    as_doc.insert("maxChunkSizeBytes", size);
                }
                let before = as_doc.clone();
                apply(
                    &mut as_doc,
                    &u,
                    Some(&["noBalance", "maxChunkSizeBytes", "enableAutoMerge"]),
                )?;
                entry.no_balance = as_doc.get_bool("noBalance").unwrap_or(false);
                entry.max_chunk_size_bytes = match as_doc.get("maxChunkSizeBytes") {
                    Some(Bson::Int32(v)) => Some(*v as i64),
                    Some(Bson::Int64(v)) => Some(*v),
                    _ => None,
                };
                state.catalog.update_collection(&entry).await?;
                n += 1;
                if as_doc != before {
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
