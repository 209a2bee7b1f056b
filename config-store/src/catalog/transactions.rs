//! Decisions of transactions that wrote on several shards, for the
//! router's coordinated commit: written before any participant commits, so
//! any router that finds one (a client's retried `commitTransaction`, or
//! the recovery of a router that died mid-commit) finishes the commit, and
//! kept a while after it completed for late retries.

use bson::Document;
use serde::{Deserialize, Serialize};

use super::{decode, encode, Catalog};
use crate::error::Result;
use crate::store::Txn;

/// `txn_decisions/<lsid key>/<txnNumber, 20 digits>`
pub const TXN_DECISIONS: &str = "txn_decisions/";

/// A commit decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnDecision {
    /// The session's `lsid`, as the client sent it.
    pub lsid: Document,
    /// The transaction.
    #[serde(rename = "txnNumber")]
    pub txn_number: i64,
    /// Every participant shard, in the order the transaction reached them.
    pub participants: Vec<String>,
    /// The router that decided.
    pub router: String,
    /// When it decided.
    pub time: bson::DateTime,
    /// Every participant acknowledged the commit.
    pub done: bool,
    /// With a two-phase commit: the timestamp every participant commits
    /// at (the highest prepare timestamp).
    #[serde(
        rename = "commitTimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub commit_timestamp: Option<bson::Timestamp>,
}

/// The store key of a decision.
pub fn decision_key(lsid_key: &str, txn_number: i64) -> String {
    format!("{TXN_DECISIONS}{lsid_key}/{txn_number:020}")
}

impl Catalog {
    /// Records the decision to commit.
    pub async fn put_decision(&self, lsid_key: &str, d: &TxnDecision) -> Result<()> {
        self.store()
            .txn(Txn::default().put(decision_key(lsid_key, d.txn_number), encode(d)?))
            .await?;
        Ok(())
    }

    /// The decision of `(lsid, txnNumber)`, if one was recorded.
    pub async fn decision(&self, lsid_key: &str, txn_number: i64) -> Result<Option<TxnDecision>> {
        let key = decision_key(lsid_key, txn_number);
        match self.store().get(&key).await? {
            Some(v) => decode(&key, &v.value).map(Some),
            None => Ok(None),
        }
    }

    /// Every recorded decision, with its lsid key.
    pub async fn decisions(&self) -> Result<Vec<(String, TxnDecision)>> {
        let mut out = Vec::new();
        for (key, v) in self.store().list(TXN_DECISIONS).await? {
            let lsid_key = key
                .strip_prefix(TXN_DECISIONS)
                .and_then(|r| r.rsplit_once('/'))
                .map(|(l, _)| l.to_owned())
                .unwrap_or_default();
            out.push((lsid_key, decode(&key, &v.value)?));
        }
        Ok(out)
    }

    /// Forgets a decision.
    pub async fn delete_decision(&self, lsid_key: &str, txn_number: i64) -> Result<()> {
        self.store()
            .txn(Txn::default().delete(decision_key(lsid_key, txn_number)))
            .await?;
        Ok(())
    }
}
