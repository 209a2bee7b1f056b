//! A filter-targeted update or delete on a shard holding hashed orphans: the
//! shard cannot tell its orphans from what it owns, so the router selects
//! the owned matching documents' `_id`s page by page (in `_id` order) and
//! writes each page with the statement's filter re-checked. `n` and
//! `nModified` count each owned document once; orphans are never written.

use bson::{doc, Bson, Document, RawDocument};
use shardgate_config_store::ShardType;
use shardgate_wire::OpMsg;

use super::exec::{merge, outcome, Outcome};
use crate::error::{Result, RouterError};
use crate::read::orphans::{HashedOrphans, OwnedIds};
use crate::read::rewrite;
use crate::session::Request;
use crate::shards::to_shard;
use crate::state::RouterState;
use crate::write::plan::WriteKind;
use shardgate_shard_client::reply_ok;

/// One statement of the client's batch.
pub(super) struct Statement<'a> {
    /// `update` or `delete`.
    pub kind: WriteKind,
    /// The statement (`{q, u, multi, …}` or `{q, limit, …}`).
    pub doc: &'a RawDocument,
    /// Its index in the client's batch.
    pub index: usize,
}

impl Statement<'_> {
    /// Whether it may write more than one document.
    fn multi(&self, stmt: &Document) -> bool {
        match self.kind {
            WriteKind::Update => stmt.get_bool("multi").unwrap_or(false),
            _ => !matches!(
                stmt.get("limit"),
                Some(Bson::Int32(1) | Bson::Int64(1)) | Some(Bson::Double(1.0))
            ),
        }
    }
}

/// Runs `stmt` on `shard` over the documents it owns.
pub(super) async fn write_owned(
    state: &RouterState,
    req: &Request<'_>,
    shard: &ShardType,
    ns: &str,
    orphans: &std::sync::Arc<HashedOrphans>,
    stmt: Statement<'_>,
    retryable: bool,
) -> Result<Outcome> {
    let failed = |e: RouterError| {
        if retryable && e.is_retryable() {
            return Err(e);
        }
        let (code, _) = e.code();
        Ok(Outcome {
            write_errors: vec![
                doc! {"index": stmt.index as i32, "code": code, "errmsg": e.to_string()},
            ],
            ..Outcome::default()
        })
    };
    let doc = Document::try_from(stmt.doc).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let q = doc.get_document("q").cloned().unwrap_or_default();
    let multi = stmt.multi(&doc);
    let collation = doc.get_document("collation").ok();
    let mut ids = match OwnedIds::open(state, shard, orphans.clone(), ns, &q, collation).await {
        Ok(ids) => ids,
        Err(e) => return failed(e),
    };
    let mut total = Outcome::default();
    loop {
        let page = match ids.next().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                ids.close().await;
                return failed(e);
            }
        };
        if page.is_empty() {
            continue;
        }
        let mut one = doc.clone();
        one.insert("q", doc! {"$and": [q.clone(), {"_id": {"$in": page}}]});
        let field = stmt.kind.field();
        let mut add = doc! {field: [one], "ordered": true};
        if retryable {
            let id = req
                .body
                .get_array("stmtIds")
                .ok()
                .and_then(|a| a.into_iter().nth(stmt.index))
                .and_then(|v| v.ok().and_then(|v| Bson::try_from(v).ok()))
                .unwrap_or(Bson::Int32(stmt.index as i32));
            add.insert("stmtIds", vec![id]);
        }
        let body = rewrite(req.body, &[field, "stmtIds", "ordered"], add)?;
        let reply = match to_shard(state, shard, &OpMsg::from_body(body.into_bytes())).await {
            Ok(r) => r,
            Err(e) => {
                ids.close().await;
                return failed(e);
            }
        };
        if !reply_ok(reply.body()) {
            ids.close().await;
            return failed(RouterError::from_shard_reply(&shard.id, reply.body()));
        }
        let out = outcome(&shard.id, reply.body(), &[stmt.index])?;
        let stop = !out.write_errors.is_empty() || (!multi && out.n > 0);
        merge(&mut total, out);
        if stop {
            ids.close().await;
            break;
        }
    }
    Ok(total)
}
