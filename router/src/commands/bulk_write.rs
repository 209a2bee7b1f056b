//! `bulkWrite` (MongoDB 8.0's client-level bulk command, which drivers use
//! against servers reporting wire version 25): its operations become the
//! router's own `insert`, `update` and `delete` commands, so each goes
//! through the sharded write path (or to the primary shard of an unsharded
//! collection) with the same targeting and shard-key rules.
//!
//! Consecutive inserts into one namespace travel as one `insert`; each
//! update and delete is its own command, so its result (`n`, `nModified`,
//! `upserted`) is per operation as the reply needs. Ordered operations stop
//! at the first error. A retryable `bulkWrite` passes `lsid`, `txnNumber`
//! and, as `stmtIds`, each operation's index.

use std::sync::Arc;

use bson::{doc, Bson, Document, RawBsonRef, RawDocument};
use shardgate_wire::OpMsg;

use super::{reply_ok, route, Reply, Request, Session};
use crate::error::{Result, RouterError};
use crate::state::RouterState;

/// Where `bulkWrite` results live, as on mongod.
const NS: &str = "admin.$cmd.bulkWrite";

/// Fields of `bulkWrite` copied into every command it becomes.
const PASSED: [&str; 6] = [
    "lsid",
    "txnNumber",
    "writeConcern",
    "bypassDocumentValidation",
    "comment",
    "$clusterTime",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Update,
    Delete,
}

struct Op<'a> {
    kind: Kind,
    ns: usize,
    doc: &'a RawDocument,
}

fn parse_op(d: &RawDocument, namespaces: usize) -> Result<Op<'_>> {
    let (kind, index) = [
        ("insert", Kind::Insert),
        ("update", Kind::Update),
        ("delete", Kind::Delete),
    ]
    .into_iter()
    .find_map(|(name, kind)| match d.get(name) {
        Ok(Some(v)) => Some((kind, v)),
        _ => None,
    })
    .ok_or_else(|| {
        RouterError::command(
            40415,
            "IDLUnknownField",
            "a bulkWrite op needs 'insert', 'update' or 'delete'",
        )
    })?;
    let ns = match index {
        RawBsonRef::Int32(i) => i64::from(i),
        RawBsonRef::Int64(i) => i,
        RawBsonRef::Double(f) if f.fract() == 0.0 => f as i64,
        _ => {
            return Err(RouterError::command(
                14,
                "TypeMismatch",
                "a bulkWrite op's namespace index must be a number",
            ))
        }
    };
    if ns < 0 || ns as usize >= namespaces {
        return Err(RouterError::bad_value(format!(
            "BulkWrite ops entry has an invalid nsInfo index {ns}"
        )));
    }
    Ok(Op {
        kind,
        ns: ns as usize,
        doc: d,
    })
}

/// The `update` or `delete` statement of an op.
fn statement(op: &Op<'_>) -> Result<Document> {
    let src = Document::try_from(op.doc).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let filter = src.get_document("filter").cloned().map_err(|_| {
        RouterError::command(40414, "IDLFailedToParse", "bulkWrite op needs 'filter'")
    })?;
    let mut stmt = doc! {"q": filter};
    match op.kind {
        Kind::Update => {
            let mods = src.get("updateMods").cloned().ok_or_else(|| {
                RouterError::command(
                    40414,
                    "IDLFailedToParse",
                    "bulkWrite update needs 'updateMods'",
                )
            })?;
            stmt.insert("u", mods);
            stmt.insert("multi", src.get_bool("multi").unwrap_or(false));
            for f in ["upsert", "arrayFilters", "hint", "collation", "sort"] {
                if let Some(v) = src.get(f) {
                    stmt.insert(f, v.clone());
                }
            }
        }
        _ => {
            stmt.insert(
                "limit",
                if src.get_bool("multi").unwrap_or(false) {
                    0
                } else {
                    1
                },
            );
            for f in ["hint", "collation"] {
                if let Some(v) = src.get(f) {
                    stmt.insert(f, v.clone());
                }
            }
        }
    }
    Ok(stmt)
}

#[derive(Default)]
struct Totals {
    results: Vec<Document>,
    n_errors: i32,
    inserted: i64,
    matched: i64,
    modified: i64,
    upserted: i64,
    deleted: i64,
    write_concern_error: Option<Document>,
}

/// `bulkWrite` on the admin database.
pub(crate) async fn bulk_write(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Reply> {
    if req.db != "admin" {
        return Err(RouterError::command(
            13,
            "Unauthorized",
            "bulkWrite may only be run against the admin database.",
        ));
    }
    let ns_info: Vec<(String, String)> = req
        .documents("nsInfo")
        .into_iter()
        .map(|d| {
            let ns = d.get_str("ns").map_err(|_| {
                RouterError::command(14, "TypeMismatch", "nsInfo entries need a string 'ns'")
            })?;
            match ns.split_once('.') {
                Some((db, coll)) if !db.is_empty() && !coll.is_empty() => {
                    Ok((db.to_owned(), coll.to_owned()))
                }
                _ => Err(RouterError::command(
                    73,
                    "InvalidNamespace",
                    format!("Invalid namespace specified for bulkWrite: '{ns}'"),
                )),
            }
        })
        .collect::<Result<_>>()?;
    let ops = req
        .documents("ops")
        .into_iter()
        .map(|d| parse_op(d, ns_info.len()))
        .collect::<Result<Vec<_>>>()?;
    if ops.is_empty() || ops.len() > 100_000 {
        return Err(RouterError::command(
            16,
            "InvalidLength",
            format!(
                "Write batch sizes must be between 1 and 100000. Got {} operations.",
                ops.len()
            ),
        ));
    }
    let ordered = req.body.get_bool("ordered").unwrap_or(true);
    let errors_only = req.body.get_bool("errorsOnly").unwrap_or(false);
    let retryable = matches!(req.body.get("txnNumber"), Ok(Some(_)));
    let mut totals = Totals::default();
    let mut start = 0;
    while start < ops.len() {
        let first = &ops[start];
        // Consecutive inserts into one namespace form one command.
        let end = if first.kind == Kind::Insert {
            (start..ops.len())
                .find(|i| ops[*i].kind != Kind::Insert || ops[*i].ns != first.ns)
                .unwrap_or(ops.len())
        } else {
            start + 1
        };
        let (db, coll) = &ns_info[first.ns];
        let mut body = Document::new();
        let (name, field) = match first.kind {
            Kind::Insert => ("insert", "documents"),
            Kind::Update => ("update", "updates"),
            Kind::Delete => ("delete", "deletes"),
        };
        body.insert(name, coll.as_str());
        let stmts: Vec<Bson> = ops[start..end]
            .iter()
            .map(|op| match op.kind {
                Kind::Insert => op
                    .doc
                    .get_document("document")
                    .map_err(|_| {
                        RouterError::command(
                            40414,
                            "IDLFailedToParse",
                            "bulkWrite insert needs 'document'",
                        )
                    })
                    .and_then(|d| {
                        Document::try_from(d).map_err(|e| RouterError::bad_value(e.to_string()))
                    })
                    .map(Bson::Document),
                _ => statement(op).map(Bson::Document),
            })
            .collect::<Result<_>>()?;
        body.insert(field, stmts);
        body.insert("ordered", ordered);
        if first.kind != Kind::Insert {
            if let Ok(Some(v)) = req.body.get("let") {
                body.insert("let", Bson::try_from(v).unwrap_or(Bson::Null));
            }
        }
        for f in PASSED {
            if let Ok(Some(v)) = req.body.get(f) {
                body.insert(f, Bson::try_from(v).unwrap_or(Bson::Null));
            }
        }
        if retryable {
            let ids: Vec<Bson> = (start..end).map(|i| Bson::Int32(i as i32)).collect();
            body.insert("stmtIds", ids);
        }
        body.insert("$db", db.as_str());
        let bytes = body
            .to_vec()
            .map_err(|e| RouterError::bad_value(e.to_string()))?;
        let msg = OpMsg::from_body(bytes);
        let sub = Request {
            name,
            db,
            collection: Some(coll),
            body: msg.body(),
            msg: &msg,
        };
        let outcome = match route(state, session, &sub).await {
            Ok(Reply::Body(b)) => bson::RawDocumentBuf::from_bytes(b)
                .map_err(|e| RouterError::bad_value(e.to_string()))?,
            Ok(Reply::Msg(m)) => m.body().to_owned(),
            Err(e) if retryable && e.is_retryable() => return Err(e),
            Err(e) => bson::RawDocumentBuf::from_bytes(e.to_reply())
                .map_err(|e| RouterError::bad_value(e.to_string()))?,
        };
        let stop = record(
            &mut totals,
            first.kind,
            start,
            end,
            &outcome,
            ordered,
            errors_only,
        );
        if stop {
            break;
        }
        start = end;
    }
    let mut reply = doc! {
        "cursor": {"id": 0i64, "firstBatch": totals.results, "ns": NS},
        "nErrors": totals.n_errors,
        "nInserted": totals.inserted as i32,
        "nMatched": totals.matched as i32,
        "nModified": totals.modified as i32,
        "nUpserted": totals.upserted as i32,
        "nDeleted": totals.deleted as i32,
    };
    if let Some(wce) = totals.write_concern_error {
        reply.insert("writeConcernError", wce);
    }
    reply.insert("ok", 1.0);
    Ok(Reply::Body(
        reply
            .to_vec()
            .map_err(|e| RouterError::bad_value(e.to_string()))?,
    ))
}

/// Adds the outcome of ops `start..end` (one command) to `totals`; true
/// when an ordered bulk write must stop.
fn record(
    totals: &mut Totals,
    kind: Kind,
    start: usize,
    end: usize,
    reply: &RawDocument,
    ordered: bool,
    errors_only: bool,
) -> bool {
    let error = |idx: usize, e: &RawDocument| {
        let mut out = doc! {
            "ok": 0.0,
            "idx": idx as i32,
            "code": e.get_i32("code").unwrap_or(1),
            "errmsg": e.get_str("errmsg").unwrap_or(""),
        };
        if let Ok(name) = e.get_str("codeName") {
            out.insert("codeName", name);
        }
        for f in ["keyPattern", "keyValue", "errInfo"] {
            if let Ok(Some(v)) = e.get(f) {
                out.insert(f, Bson::try_from(v).unwrap_or(Bson::Null));
            }
        }
        out.insert("n", 0);
        out
    };
    if let Ok(wce) = reply.get_document("writeConcernError") {
        if totals.write_concern_error.is_none() {
            totals.write_concern_error = Document::try_from(wce).ok();
        }
    }
    if !reply_ok(reply) {
        // The whole command failed: ordered, its first op; else every op.
        let last = if ordered { start + 1 } else { end };
        for idx in start..last {
            totals.results.push(error(idx, reply));
            totals.n_errors += 1;
        }
        return ordered;
    }
    let mut failed: Vec<(usize, Document)> = reply
        .get_array("writeErrors")
        .map(|a| {
            a.into_iter()
                .filter_map(|v| v.ok().and_then(|v| v.as_document()))
                .map(|e| {
                    let idx = start + e.get_i32("index").unwrap_or(0).max(0) as usize;
                    (idx, error(idx, e))
                })
                .collect()
        })
        .unwrap_or_default();
    failed.sort_by_key(|(i, _)| *i);
    let n = crate::commands::number_field(reply, "n").unwrap_or(0);
    match kind {
        Kind::Insert => {
            totals.inserted += n;
            // Ordered inserts stop at the first error; the ops after it did not run.
            let ran_until = if ordered {
                failed.first().map(|(i, _)| *i + 1).unwrap_or(end)
            } else {
                end
            };
            for idx in start..ran_until {
                match failed.iter().find(|(i, _)| *i == idx) {
                    Some((_, e)) => {
                        totals.results.push(e.clone());
                        totals.n_errors += 1;
                    }
                    None if !errors_only => totals
                        .results
                        .push(doc! {"ok": 1.0, "idx": idx as i32, "n": 1}),
                    None => {}
                }
            }
        }
        Kind::Update | Kind::Delete => {
            if let Some((_, e)) = failed.into_iter().next() {
                totals.results.push(e);
                totals.n_errors += 1;
                return ordered;
            }
            let mut entry = doc! {"ok": 1.0, "idx": start as i32, "n": n as i32};
            if kind == Kind::Update {
                let modified = crate::commands::number_field(reply, "nModified").unwrap_or(0);
                entry.insert("nModified", modified as i32);
                totals.modified += modified;
                let upserted = reply
                    .get_array("upserted")
                    .ok()
                    .and_then(|a| a.into_iter().next())
                    .and_then(|v| v.ok())
                    .and_then(|v| v.as_document())
                    .and_then(|d| d.get("_id").ok().flatten())
                    .and_then(|id| Bson::try_from(id).ok());
                match upserted {
                    Some(id) => {
                        totals.upserted += 1;
                        entry.insert("upserted", doc! {"_id": id});
                    }
                    None => totals.matched += n,
                }
            } else {
                totals.deleted += n;
            }
            if !errors_only {
                totals.results.push(entry);
            }
            return false;
        }
    }
    ordered && totals.n_errors > 0
}
