//! The transaction router, as mongos keeps transactions: one per session
//! (`lsid`) and `txnNumber`, its participants in the order statements
//! reach them. A statement runs with its transaction as a task-local
//! ([`run`]); every message the router sends to a shard meanwhile goes
//! through [`TxnShards`], which makes it a statement of that transaction
//! on that shard: `lsid`, `txnNumber` and `autocommit: false` always, and
//! `startTransaction` with the transaction's read concern (one
//! `atClusterTime` for a snapshot) the first time it reaches a shard.
//! Scatter reads, merges and cursors' `getMore`s join without knowing.
//!
//! # Layout
//! - this file: the registry of open transactions, what a request is to
//!   them ([`statement`]), and what a statement's outcome does ([`after`]:
//!   a failed statement aborts every participant; replies carry a
//!   `recoveryToken`).
//! - `client`: [`TxnShards`], the `ShardClient` wrapper that rewrites
//!   statements and keeps the cluster time.
//! - `clock`: [`ClusterClock`], the highest `$clusterTime` seen, stamped on
//!   the router's own replies with `operationTime`.
//! - `commit`: `commitTransaction` and `abortTransaction` — no participant,
//!   one, read-only, one writer, or the coordinated commit (the decision
//!   in the store first, then every participant), and their recovery from
//!   a `recoveryToken` through any router.
//! - `recovery`: finishing decided commits a dead router left.

use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Bson, Document, RawDocument};

use crate::error::{Result, RouterError};
use crate::session::{Reply, Request};
use crate::state::RouterState;

mod commit;
mod recovery;
#[cfg(test)]
mod tests;

pub(crate) use crate::transactions::{lsid_key, run, Participant, Txn, TxnState, LIFETIME};
pub(crate) use commit::{abort_all, abort_transaction, commit, commit_transaction};
pub(crate) use recovery::recover;

/// What a request is to the transactions: `None` outside one; the
/// transaction it is a statement of, started here when it says
/// `startTransaction`. `commitTransaction` and `abortTransaction` are
/// their own handlers'.
pub(crate) fn statement(state: &RouterState, req: &Request<'_>) -> Result<Option<Arc<Txn>>> {
    if req.body.get_bool("autocommit").ok() != Some(false)
        || matches!(req.name, "commitTransaction" | "abortTransaction")
    {
        return Ok(None);
    }
    let (lsid, txn_number) = ids(req)?;
    let key = lsid_key(lsid);
    if req.body.get_bool("startTransaction").ok() == Some(true) {
        let read_concern = read_concern(state, req)?;
        let txn = Arc::new(Txn {
            lsid: lsid.to_owned(),
            lsid_key: key.clone(),
            txn_number,
            read_concern,
            started: Instant::now(),
            inner: Default::default(),
        });
        let replaced = state.transactions.lock().insert(key, txn.clone());
        if let Some(old) = replaced.filter(|o| o.state() == TxnState::Open) {
            // A newer transaction on the session ends the older one.
            commit::abort_in_background(state, old);
        }
        state.transactions.counters.started();
        return Ok(Some(txn));
    }
    match state.transactions.get(&key, txn_number) {
        Some(t) if t.state() == TxnState::Open => Ok(Some(t)),
        _ => Err(no_such_transaction(txn_number)),
    }
}

/// The `lsid` and `txnNumber` of a transaction command.
pub(crate) fn ids<'a>(req: &Request<'a>) -> Result<(&'a RawDocument, i64)> {
    let lsid = req
        .body
        .get_document("lsid")
        .map_err(|_| RouterError::command(72, "InvalidOptions", "a transaction needs an 'lsid'"))?;
    let txn_number = req.body.get_i64("txnNumber").map_err(|_| {
        RouterError::command(72, "InvalidOptions", "a transaction needs a 'txnNumber'")
    })?;
    Ok((lsid, txn_number))
}

/// NoSuchTransaction (251), which drivers retry the transaction on.
pub(crate) fn no_such_transaction(txn_number: i64) -> RouterError {
    RouterError::command(
        251,
        "NoSuchTransaction",
        format!(
            "Given transaction number {txn_number} does not match any in-progress transactions."
        ),
    )
}

/// The transaction's read concern: the first statement's; a snapshot
/// without `atClusterTime` gets the router's cluster time, the same for
/// every participant.
fn read_concern(state: &RouterState, req: &Request<'_>) -> Result<Option<Document>> {
    let Ok(rc) = req.body.get_document("readConcern") else {
        return Ok(None);
    };
    let mut rc = Document::try_from(rc).map_err(|e| RouterError::bad_value(e.to_string()))?;
    if rc.get_str("level").ok() == Some("snapshot") && !rc.contains_key("atClusterTime") {
        if let Some(ts) = state.clock.now() {
            rc.insert("atClusterTime", ts);
        }
    }
    Ok(Some(rc))
}

/// A statement's outcome in `txn`: on failure (an error, `ok: 0` or write
/// errors) every participant aborts and the error carries
/// `TransientTransactionError` where mongos adds it; on success the reply
/// carries the `recoveryToken`.
pub(crate) async fn after(state: &RouterState, txn: &Arc<Txn>, outcome: Result<Reply>) -> Reply {
    let body = match &outcome {
        Ok(Reply::Body(b)) => RawDocument::from_bytes(b).ok(),
        Ok(Reply::Msg(m)) => Some(m.body()),
        Err(_) => None,
    };
    let failed = body
        .is_none_or(|b| !shardgate_shard_client::reply_ok(b) || b.get_array("writeErrors").is_ok());
    if !failed {
        let reply = outcome.expect("a successful statement");
        return match txn.recovery_token() {
            Some(token) => append(reply, &doc! {"recoveryToken": token}),
            None => reply,
        };
    }
    commit::abort_all(state, txn).await;
    txn.set_state(TxnState::Aborted);
    state.transactions.counters.aborted();
    let mut reply = match outcome {
        Ok(r) => transient_write_error(reply_document(&r)),
        Err(e) => Document::from_reader(&e.to_reply()[..]).unwrap_or_default(),
    };
    let ctx = crate::labels::Context {
        in_txn: true,
        ..Default::default()
    };
    crate::labels::relabel(&mut reply, ctx);
    Reply::Body(reply.to_vec().unwrap_or_default())
}

/// A write reply whose first write error is transient (a write conflict)
/// becomes that error at the top level, as a shard answers it inside a
/// transaction; other replies are kept.
fn transient_write_error(reply: Document) -> Document {
    let first = reply
        .get_array("writeErrors")
        .ok()
        .and_then(|w| w.first())
        .and_then(Bson::as_document);
    let Some(first) = first else { return reply };
    let code = first.get_i32("code").unwrap_or(0);
    if !crate::labels::is_transient(code) {
        return reply;
    }
    let name = crate::labels::code_name(code);
    doc! {
        "ok": 0.0,
        "errmsg": first.get_str("errmsg").unwrap_or_default(),
        "code": code,
        "codeName": first.get_str("codeName").unwrap_or(name),
    }
}

/// A reply as a document.
fn reply_document(r: &Reply) -> Document {
    let bytes = match r {
        Reply::Body(b) => &b[..],
        Reply::Msg(m) => m.body().as_bytes(),
    };
    Document::from_reader(bytes).unwrap_or_default()
}

/// `reply` with the fields of `extra` appended (replacing none).
pub(crate) fn append(reply: Reply, extra: &Document) -> Reply {
    let mut bytes = match reply {
        Reply::Body(b) => b,
        Reply::Msg(m) => m.body().as_bytes().to_vec(),
    };
    crate::transactions::append_fields(&mut bytes, extra);
    Reply::Body(bytes)
}
