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
    let ns_info = namespaces(req)?;
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
        let body = command(req, &ops, start..end, coll, db, ordered, retryable)?;
        let outcome = run(state, session, body, retryable).await?;
        let stop = totals.record(
            first.kind,
            start..end,
            &outcome,
            Mode {
                ordered,
                errors_only,
            },
        );
        if stop {
            break;
        }
        start = end;
    }
    let batch_size = req
        .body
        .get_document("cursor")
        .ok()
        .and_then(|c| crate::commands::number_field(c, "batchSize"))
        .filter(|n| *n >= 0)
        .map_or(usize::MAX, |n| n as usize);
    totals.reply(state, session, batch_size)
}

/// `nsInfo`, as `(db, collection)` pairs.
fn namespaces(req: &Request<'_>) -> Result<Vec<(String, String)>> {
    req.documents("nsInfo")
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
        .collect()
}

/// The `insert`, `update` or `delete` command for ops `range` (all of one
/// kind and namespace).
fn command(
    req: &Request<'_>,
    ops: &[Op<'_>],
    range: std::ops::Range<usize>,
    coll: &str,
    db: &str,
    ordered: bool,
    retryable: bool,
) -> Result<Document> {
    let kind = ops[range.start].kind;
    let (name, field) = match kind {
        Kind::Insert => ("insert", "documents"),
        Kind::Update => ("update", "updates"),
        Kind::Delete => ("delete", "deletes"),
    };
    let stmts: Vec<Bson> = ops[range.clone()]
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
    let mut body = doc! {name: coll, field: stmts, "ordered": ordered};
    let copy = |body: &mut Document, f: &str| {
        if let Ok(Some(v)) = req.body.get(f) {
            body.insert(f, Bson::try_from(v).unwrap_or(Bson::Null));
        }
    };
    if kind != Kind::Insert {
        copy(&mut body, "let");
    }
    for f in PASSED {
        copy(&mut body, f);
    }
    if retryable {
        let ids: Vec<Bson> = range.map(|i| Bson::Int32(i as i32)).collect();
        body.insert("stmtIds", ids);
    }
    body.insert("$db", db);
    Ok(body)
}

/// Runs one command through the router's own path; its failure becomes
/// its reply, except a retryable error of a retryable write, which fails
/// the whole `bulkWrite` so the driver retries it.
async fn run(
    state: &Arc<RouterState>,
    session: &Session,
    body: Document,
    retryable: bool,
) -> Result<bson::RawDocumentBuf> {
    let bytes = body
        .to_vec()
        .map_err(|e| RouterError::bad_value(e.to_string()))?;
    let msg = OpMsg::from_body(bytes);
    let name = body.keys().next().map(String::as_str).unwrap_or_default();
    let (db, coll) = (
        body.get_str("$db").unwrap_or_default(),
        body.get_str(name).unwrap_or_default(),
    );
    let sub = Request {
        name,
        db,
        collection: Some(coll),
        body: msg.body(),
        msg: &msg,
    };
    let raw = |b: Vec<u8>| {
        bson::RawDocumentBuf::from_bytes(b).map_err(|e| RouterError::bad_value(e.to_string()))
    };
    match route(state, session, &sub).await {
        Ok(Reply::Body(b)) => raw(b),
        Ok(Reply::Msg(m)) => Ok(m.body().to_owned()),
        Err(e) if retryable && e.is_retryable() => Err(e),
        Err(e) => raw(e.to_reply()),
    }
}

/// How results are recorded.
#[derive(Clone, Copy)]
struct Mode {
    ordered: bool,
    errors_only: bool,
}

/// One op's error entry in the results cursor.
fn op_error(idx: usize, e: &RawDocument) -> Document {
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
}

impl Totals {
    /// Adds the outcome of ops `range` (one command) to the totals; true
    /// when an ordered bulk write must stop.
    fn record(
        &mut self,
        kind: Kind,
        range: std::ops::Range<usize>,
        reply: &RawDocument,
        mode: Mode,
    ) -> bool {
        if let Ok(wce) = reply.get_document("writeConcernError") {
            if self.write_concern_error.is_none() {
                self.write_concern_error = Document::try_from(wce).ok();
            }
        }
        if !reply_ok(reply) {
            // The whole command failed: ordered, its first op; else every op.
            let last = if mode.ordered {
                range.start + 1
            } else {
                range.end
            };
            for idx in range.start..last {
                self.push_error(op_error(idx, reply));
            }
            return mode.ordered;
        }
        let mut failed: Vec<(usize, Document)> = reply
            .get_array("writeErrors")
            .map(|a| {
                a.into_iter()
                    .filter_map(|v| v.ok().and_then(|v| v.as_document()))
                    .map(|e| {
                        let idx = range.start + e.get_i32("index").unwrap_or(0).max(0) as usize;
                        (idx, op_error(idx, e))
                    })
                    .collect()
            })
            .unwrap_or_default();
        failed.sort_by_key(|(i, _)| *i);
        match kind {
            Kind::Insert => {
                self.record_inserts(range, reply, failed, mode);
                mode.ordered && self.n_errors > 0
            }
            Kind::Update | Kind::Delete => match failed.into_iter().next() {
                Some((_, e)) => {
                    self.push_error(e);
                    mode.ordered
                }
                None => {
                    self.record_one(kind, range.start, reply, mode.errors_only);
                    false
                }
            },
        }
    }

    fn push_error(&mut self, e: Document) {
        self.results.push(e);
        self.n_errors += 1;
    }

    /// One `insert` command's ops: ordered inserts stop at the first
    /// error, so the ops after it did not run.
    fn record_inserts(
        &mut self,
        range: std::ops::Range<usize>,
        reply: &RawDocument,
        failed: Vec<(usize, Document)>,
        mode: Mode,
    ) {
        self.inserted += crate::commands::number_field(reply, "n").unwrap_or(0);
        let ran_until = match failed.first() {
            Some((i, _)) if mode.ordered => *i + 1,
            _ => range.end,
        };
        for idx in range.start..ran_until {
            match failed.iter().find(|(i, _)| *i == idx) {
                Some((_, e)) => self.push_error(e.clone()),
                None if !mode.errors_only => self
                    .results
                    .push(doc! {"ok": 1.0, "idx": idx as i32, "n": 1}),
                None => {}
            }
        }
    }

    /// A successful update or delete op.
    fn record_one(&mut self, kind: Kind, idx: usize, reply: &RawDocument, errors_only: bool) {
        let n = crate::commands::number_field(reply, "n").unwrap_or(0);
        let mut entry = doc! {"ok": 1.0, "idx": idx as i32, "n": n as i32};
        if kind == Kind::Update {
            let modified = crate::commands::number_field(reply, "nModified").unwrap_or(0);
            entry.insert("nModified", modified as i32);
            self.modified += modified;
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
                    self.upserted += 1;
                    entry.insert("upserted", doc! {"_id": id});
                }
                None => self.matched += n,
            }
        } else {
            self.deleted += n;
        }
        if !errors_only {
            self.results.push(entry);
        }
    }

    /// The `bulkWrite` reply: the results as a cursor, its first batch at
    /// most `batch_size` results and 16 MB, the rest for `getMore`.
    fn reply(self, state: &RouterState, session: &Session, batch_size: usize) -> Result<Reply> {
        let mut results: std::collections::VecDeque<bson::RawDocumentBuf> = self
            .results
            .iter()
            .filter_map(|d| bson::RawDocumentBuf::try_from(d).ok())
            .collect();
        let first: Vec<Bson> = crate::cursors::drain_batch(&mut results, batch_size)
            .into_iter()
            .filter_map(|d| Document::try_from(d).ok().map(Bson::Document))
            .collect();
        let id = match results.is_empty() {
            true => 0,
            false => state.cursors.insert(
                None,
                crate::cursors::RouterCursor {
                    kind: crate::cursors::CursorKind::Buffered(results),
                    ns: NS.to_owned(),
                    connection: session.connection_id,
                    last_used: std::time::Instant::now(),
                },
            ),
        };
        let mut reply = doc! {
            "cursor": {"id": id, "firstBatch": first, "ns": NS},
            "nErrors": self.n_errors,
            "nInserted": self.inserted as i32,
            "nMatched": self.matched as i32,
            "nModified": self.modified as i32,
            "nUpserted": self.upserted as i32,
            "nDeleted": self.deleted as i32,
        };
        if let Some(wce) = self.write_concern_error {
            reply.insert("writeConcernError", wce);
        }
        reply.insert("ok", 1.0);
        Ok(Reply::Body(
            reply
                .to_vec()
                .map_err(|e| RouterError::bad_value(e.to_string()))?,
        ))
    }
}
