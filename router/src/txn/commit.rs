//! `commitTransaction` and `abortTransaction`, as mongos commits:
//! - no participant: nothing to do;
//! - one: `commitTransaction` there;
//! - several, none wrote: each commits;
//! - one wrote: the readers commit, then the writer;
//! - several wrote, each able to prepare (`prepareTransaction`, probed
//!   once per shard): the two-phase commit. Every writer prepares; any
//!   failure aborts everywhere; else the decision, with the highest
//!   prepare timestamp as the commit timestamp, goes to the store, then
//!   every participant commits at it.
//! - several wrote, one at least unable to prepare (SecantusDB): the
//!   coordinated commit. The decision is written to the store first, then
//!   every participant commits (retried until it answers). What it cannot
//!   promise: a participant that aborted on its own after its last
//!   statement (its transaction lifetime ran out, it restarted) cannot
//!   commit, and the others have — the reply says so.
//!
//! Any router that finds an unfinished decision (a retried commit, or the
//! recovery of a router that died) finishes it.
//!
//! Without the transaction in memory (another router started it), a
//! commit is recovered: from the store's decision, else from the
//! `recoveryToken`'s shard, asked whether it committed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocument};
use shardgate_config_store::catalog::TxnDecision;
use shardgate_shard_client::{ShardClient, Target};

use super::{Participant, Txn, TxnState};
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request};
use crate::state::RouterState;
use crate::transactions::Kind;

/// How long a coordinated commit keeps retrying a participant that does
/// not answer.
const COMMIT_RETRY: Duration = Duration::from_secs(30);

/// `commitTransaction`.
pub(crate) async fn commit_transaction(state: &RouterState, req: &Request<'_>) -> Result<Reply> {
    let (lsid, txn_number) = super::ids(req)?;
    let key = super::lsid_key(lsid);
    let wc = req
        .body
        .get_document("writeConcern")
        .ok()
        .and_then(|d| Document::try_from(d).ok());
    let Some(txn) = state.transactions.get(&key, txn_number) else {
        return recover(state, req, lsid, &key, txn_number, wc).await;
    };
    if txn.state() == TxnState::Aborted {
        return Err(super::no_such_transaction(txn_number));
    }
    commit(state, &txn, wc.as_ref()).await?;
    Ok(ok_reply())
}

/// Commits `txn` by its kind (see the module's notes), counting it.
pub(crate) async fn commit(
    state: &RouterState,
    txn: &Arc<Txn>,
    wc: Option<&Document>,
) -> Result<()> {
    let participants = txn.participants();
    let mut kind = Kind::of(&participants);
    if kind == Kind::Coordinated && all_prepare(state, &participants).await {
        kind = Kind::TwoPhase;
    }
    let counters = &state.transactions.counters;
    counters.kinds[kind.index()][0].fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let body = commit_body(&txn.lsid, txn.txn_number, wc);
    let shards = &state.shards;
    let outcome = match kind {
        Kind::NoShards => Ok(()),
        Kind::SingleShard | Kind::ReadOnly => commit_each(shards, &participants, &body).await,
        Kind::SingleWriteShard => {
            let (writer, readers): (Vec<_>, Vec<_>) =
                participants.iter().cloned().partition(|p| p.wrote);
            match commit_each(shards, &readers, &body).await {
                Ok(()) => commit_each(shards, &writer, &body).await,
                Err(e) => Err(e),
            }
        }
        Kind::TwoPhase => two_phase(state, txn, &participants, &body).await,
        Kind::Coordinated => coordinated(state, txn, &participants, &body).await,
    };
    outcome?;
    txn.set_state(TxnState::Committed);
    let k = &counters.kinds[kind.index()];
    k[1].fetch_add(1, Ordering::Relaxed);
    k[2].fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    counters.committed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn ok_reply() -> Reply {
    Reply::Body(doc! {"ok": 1.0}.to_vec().unwrap_or_default())
}

fn commit_body(lsid: &RawDocument, txn_number: i64, wc: Option<&Document>) -> Document {
    let mut body = doc! {
        "commitTransaction": 1,
        "lsid": Document::try_from(lsid).unwrap_or_default(),
        "txnNumber": txn_number,
        "autocommit": false,
    };
    if let Some(wc) = wc {
        body.insert("writeConcern", wc.clone());
    }
    body.insert("$db", "admin");
    body
}

fn target(p: &Participant) -> Target<'_> {
    Target {
        id: &p.shard,
        host: &p.host,
    }
}

async fn run(shards: &Arc<dyn ShardClient>, p: &Participant, body: &Document) -> Result<()> {
    run_reply(shards, p, body).await.map(drop)
}

async fn run_reply(
    shards: &Arc<dyn ShardClient>,
    p: &Participant,
    body: &Document,
) -> Result<Document> {
    let raw =
        bson::RawDocumentBuf::try_from(body).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let reply = shards.command(target(p), &raw).await?;
    Document::try_from(reply.as_ref()).map_err(|e| RouterError::bad_value(e.to_string()))
}

/// Commits on each participant at once; the first error.
async fn commit_each(
    shards: &Arc<dyn ShardClient>,
    participants: &[Participant],
    body: &Document,
) -> Result<()> {
    let results =
        futures::future::join_all(participants.iter().map(|p| run(shards, p, body))).await;
    results.into_iter().collect()
}

/// Whether every writing participant has `prepareTransaction`: asked once
/// per shard outside any transaction (a server that has the command
/// refuses it there; one without it answers CommandNotFound).
async fn all_prepare(state: &RouterState, participants: &[Participant]) -> bool {
    let counters = &state.transactions.counters;
    for p in participants.iter().filter(|p| p.wrote) {
        let known = counters
            .prepares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p.shard)
            .copied();
        let has = match known {
            Some(has) => has,
            None => {
                let probe = doc! {"prepareTransaction": 1, "$db": "admin"};
                let has =
                    !matches!(run(&state.shards, p, &probe).await, Err(e) if e.code().0 == 59);
                counters
                    .prepares
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(p.shard.clone(), has);
                has
            }
        };
        if !has {
            return false;
        }
    }
    true
}

/// The two-phase commit: every writer prepares; the decision with the
/// highest prepare timestamp goes to the store; every participant
/// commits at it. A failed prepare aborts everywhere.
async fn two_phase(
    state: &RouterState,
    txn: &Arc<Txn>,
    participants: &[Participant],
    body: &Document,
) -> Result<()> {
    let mut prepare = body.clone();
    prepare.remove("commitTransaction");
    let mut prepare_cmd = doc! {"prepareTransaction": 1};
    prepare_cmd.extend(prepare);
    prepare_cmd.insert("writeConcern", doc! {"w": "majority"});
    let writers: Vec<&Participant> = participants.iter().filter(|p| p.wrote).collect();
    let prepared = futures::future::join_all(
        writers
            .iter()
            .map(|p| run_reply(&state.shards, p, &prepare_cmd)),
    )
    .await;
    let mut commit_at: Option<bson::Timestamp> = None;
    for r in &prepared {
        let ts = r
            .as_ref()
            .ok()
            .and_then(|d| d.get_timestamp("prepareTimestamp").ok());
        match ts {
            Some(ts) => commit_at = Some(commit_at.map_or(ts, |c| c.max(ts))),
            None => {
                abort_all(state, txn).await;
                txn.set_state(TxnState::Aborted);
                return Err(super::no_such_transaction(txn.txn_number));
            }
        }
    }
    let mut decision = decision_of(state, txn, participants);
    decision.commit_timestamp = commit_at;
    state.catalog.put_decision(&txn.lsid_key, &decision).await?;
    pause_after_decision(state).await;
    let mut commit = body.clone();
    if let Some(ts) = commit_at {
        commit.insert("commitTimestamp", ts);
    }
    finish(&state.shards, participants, &commit).await?;
    decision.done = true;
    state.catalog.put_decision(&txn.lsid_key, &decision).await?;
    Ok(())
}

fn decision_of(state: &RouterState, txn: &Txn, participants: &[Participant]) -> TxnDecision {
    TxnDecision {
        lsid: Document::try_from(txn.lsid.as_ref()).unwrap_or_default(),
        txn_number: txn.txn_number,
        participants: participants.iter().map(|p| p.shard.clone()).collect(),
        router: state.listen.clone(),
        time: bson::DateTime::now(),
        done: false,
        commit_timestamp: None,
    }
}

/// The coordinated commit: the decision in the store, then every
/// participant, then the decision marked done.
async fn coordinated(
    state: &RouterState,
    txn: &Arc<Txn>,
    participants: &[Participant],
    body: &Document,
) -> Result<()> {
    let mut decision = decision_of(state, txn, participants);
    if let Err(e) = state.catalog.put_decision(&txn.lsid_key, &decision).await {
        // Nothing committed: the transaction aborts.
        abort_all(state, txn).await;
        txn.set_state(TxnState::Aborted);
        tracing::warn!(error = %e, "could not record a commit decision; aborted");
        return Err(super::no_such_transaction(txn.txn_number));
    }
    pause_after_decision(state).await;
    finish(&state.shards, participants, body).await?;
    decision.done = true;
    state.catalog.put_decision(&txn.lsid_key, &decision).await?;
    Ok(())
}

/// The test-only fault `shardgatePauseAfterCommitDecision`: hold here.
async fn pause_after_decision(state: &RouterState) {
    let ms = state.pause_after_commit_decision_ms.load(Ordering::SeqCst);
    if ms > 0 && state.config.enable_test_commands {
        tracing::info!(ms, "test fault: holding a commit after its decision");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Commits a decided transaction on every participant, each retried
/// until it answers; a participant that no longer has the transaction is
/// reported (the others committed).
pub(crate) async fn finish(
    shards: &Arc<dyn ShardClient>,
    participants: &[Participant],
    body: &Document,
) -> Result<()> {
    let results = futures::future::join_all(
        participants
            .iter()
            .map(|p| commit_until_answered(shards, p, body)),
    )
    .await;
    let lost: Vec<&str> = participants
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Err(e) if e.code().0 == 251))
        .map(|(p, _)| p.shard.as_str())
        .collect();
    if !lost.is_empty() {
        // Not NoSuchTransaction: the others committed, so the transaction
        // must not be run again as a whole.
        return Err(RouterError::command(
            96,
            "OperationFailed",
            format!(
                "the transaction was committed, but participant(s) {lost:?} had aborted it on their own before the commit reached them"
            ),
        ));
    }
    results.into_iter().collect()
}

async fn commit_until_answered(
    shards: &Arc<dyn ShardClient>,
    p: &Participant,
    body: &Document,
) -> Result<()> {
    let deadline = Instant::now() + COMMIT_RETRY;
    loop {
        match run(shards, p, body).await {
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::info!(shard = %p.shard, error = %e, "commit not answered; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// A commit of a transaction this router does not hold.
async fn recover(
    state: &RouterState,
    req: &Request<'_>,
    lsid: &RawDocument,
    key: &str,
    txn_number: i64,
    wc: Option<Document>,
) -> Result<Reply> {
    let mut body = commit_body(lsid, txn_number, wc.as_ref());
    if let Some(mut d) = state.catalog.decision(key, txn_number).await? {
        if let Some(ts) = d.commit_timestamp {
            body.insert("commitTimestamp", ts);
        }
        if !d.done {
            let participants = super::recovery::participants(state, &d)?;
            finish(&state.shards, &participants, &body).await?;
            d.done = true;
            state.catalog.put_decision(key, &d).await?;
        }
        return Ok(ok_reply());
    }
    let shard = req
        .body
        .get_document("recoveryToken")
        .ok()
        .and_then(|t| t.get_str("recoveryShardId").ok());
    let Some(shard) = shard else {
        return Err(super::no_such_transaction(txn_number));
    };
    // No decision: the transaction had one writer at most. Its recovery
    // shard tells whether it committed; asking it to abort ends it if not.
    let shard = state.placement.shard(shard)?;
    let mut abort = body.clone();
    abort.remove("commitTransaction");
    let mut ask = doc! {"abortTransaction": 1};
    ask.extend(abort);
    let p = Participant {
        shard: shard.id.clone(),
        host: shard.host.clone(),
        wrote: false,
    };
    match run(&state.shards, &p, &ask).await {
        Err(e) if e.code().0 == 256 => Ok(ok_reply()),
        Err(e) if e.is_retryable() => Err(e),
        _ => Err(super::no_such_transaction(txn_number)),
    }
}

/// `abortTransaction`: every participant aborts.
pub(crate) async fn abort_transaction(state: &RouterState, req: &Request<'_>) -> Result<Reply> {
    let (lsid, txn_number) = super::ids(req)?;
    let key = super::lsid_key(lsid);
    let Some(txn) = state.transactions.get(&key, txn_number) else {
        return Err(super::no_such_transaction(txn_number));
    };
    match txn.state() {
        TxnState::Committed => Err(RouterError::command(
            256,
            "TransactionCommitted",
            format!("Transaction {txn_number} has been committed."),
        )),
        TxnState::Aborted => Err(super::no_such_transaction(txn_number)),
        TxnState::Open => {
            abort_all(state, &txn).await;
            txn.set_state(TxnState::Aborted);
            state.transactions.counters.aborted();
            Ok(ok_reply())
        }
    }
}

/// Sends `abortTransaction` to every participant (errors ignored: one
/// that lost the transaction has nothing to abort).
pub(crate) async fn abort_all(state: &RouterState, txn: &Txn) {
    abort_participants(&state.shards, txn).await;
}

async fn abort_participants(shards: &Arc<dyn ShardClient>, txn: &Txn) {
    let body = doc! {
        "abortTransaction": 1,
        "lsid": Document::try_from(txn.lsid.as_ref()).unwrap_or_default(),
        "txnNumber": txn.txn_number,
        "autocommit": false,
        "$db": "admin",
    };
    let participants = txn.participants();
    let sends = participants.iter().map(|p| run(shards, p, &body));
    for (p, r) in participants
        .iter()
        .zip(futures::future::join_all(sends).await)
    {
        if let Err(e) = r {
            if !matches!(e.code().0, 251 | 256) {
                tracing::debug!(shard = %p.shard, error = %e, "abortTransaction failed");
            }
        }
    }
}

/// Aborts `txn` on its participants without waiting.
pub(crate) fn abort_in_background(state: &RouterState, txn: Arc<Txn>) {
    let shards = state.shards.clone();
    tokio::spawn(async move {
        abort_participants(&shards, &txn).await;
        txn.set_state(TxnState::Aborted);
    });
}
