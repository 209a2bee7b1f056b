//! What the router does for transactions in the background, every couple
//! of seconds: it finishes coordinated commits whose deciding router is no
//! longer live (their decision is in the store, some participants may not
//! have committed), forgets finished decisions after a while, and aborts
//! its own transactions left open past their lifetime (a client that went
//! away mid-transaction), as a shard's transaction reaper would.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{commit, Participant, TxnState, LIFETIME};
use crate::error::Result;
use crate::state::RouterState;

/// How often the checks run.
const EVERY: Duration = Duration::from_secs(2);
/// How long a finished decision is kept for a late retried commit.
const KEEP_DONE: Duration = Duration::from_secs(30 * 60);
/// A decision of this router's older than this, unfinished, was left by
/// an earlier run of it.
const ORPHANED: Duration = Duration::from_secs(60);

/// The participants of a decision, addressed by the shards' hosts now.
pub(super) fn participants(
    state: &RouterState,
    d: &shardgate_config_store::catalog::TxnDecision,
) -> Result<Vec<Participant>> {
    d.participants
        .iter()
        .map(|id| {
            let s = state.placement.shard(id)?;
            Ok(Participant {
                shard: s.id,
                host: s.host,
                wrote: true,
            })
        })
        .collect()
}

/// The background loop.
pub(crate) async fn recover(state: Arc<RouterState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        expire(&state).await;
        if let Err(e) = finish_decisions(&state).await {
            tracing::debug!(error = %e, "transaction recovery could not run");
        }
    }
}

/// Aborts transactions open past their lifetime; forgets finished ones.
pub(crate) async fn expire(state: &RouterState) {
    for txn in state.transactions.all() {
        if txn.started.elapsed() < LIFETIME {
            continue;
        }
        if txn.state() == TxnState::Open {
            tracing::info!(
                txn_number = txn.txn_number,
                "aborting a transaction past its lifetime"
            );
            commit::abort_all(state, &txn).await;
            txn.set_state(TxnState::Aborted);
            state.transactions.counters.aborted();
        }
        state.transactions.forget(&txn);
    }
}

async fn finish_decisions(state: &RouterState) -> Result<()> {
    let live: Vec<String> = state
        .catalog
        .routers()
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    for (key, mut d) in state.catalog.decisions().await? {
        let age = bson::DateTime::now()
            .checked_duration_since(d.time)
            .unwrap_or_default();
        if d.done {
            if age > KEEP_DONE {
                state.catalog.delete_decision(&key, d.txn_number).await?;
            }
            continue;
        }
        let abandoned = !live.contains(&d.router) || (d.router == state.listen && age > ORPHANED);
        if !abandoned {
            continue;
        }
        tracing::info!(router = %d.router, txn_number = d.txn_number, "finishing a commit a router left");
        let mut body = bson::doc! {
            "commitTransaction": 1,
            "lsid": d.lsid.clone(),
            "txnNumber": d.txn_number,
            "autocommit": false,
            "$db": "admin",
        };
        if let Some(ts) = d.commit_timestamp {
            body.insert("commitTimestamp", ts);
        }
        let participants = participants(state, &d)?;
        if let Err(e) = commit::finish(&state.shards, &participants, &body).await {
            tracing::warn!(error = %e, "a recovered commit did not reach every participant");
        }
        d.done = true;
        state.catalog.put_decision(&key, &d).await?;
    }
    Ok(())
}
