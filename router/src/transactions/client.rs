//! [`TxnShards`]: the router's `ShardClient`, wrapping the pools. Inside a
//! statement of a transaction it rewrites each message into a statement of
//! that transaction on its shard; always, it notes the cluster time of the
//! replies.

use std::sync::Arc;

use bson::{RawBsonRef, RawDocumentBuf};
use shardgate_shard_client::{PoolReport, Result, ShardClient, ShardError, Target};
use shardgate_wire::OpMsg;

use super::{current, ClusterClock, Txn};

/// Fields a transaction statement gets from the transaction, not the body.
const TXN_FIELDS: [&str; 6] = [
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "readConcern",
    "writeConcern",
];

/// Commands that only read: a participant reached only by these commits
/// as a read-only one.
const READS: [&str; 11] = [
    "find",
    "getMore",
    "killCursors",
    "count",
    "distinct",
    "listCollections",
    "listIndexes",
    "collStats",
    "dbStats",
    "explain",
    "aggregate",
];

/// The router's shard client.
pub(crate) struct TxnShards {
    inner: Arc<dyn ShardClient>,
    clock: Arc<ClusterClock>,
}

impl TxnShards {
    pub(crate) fn new(inner: Arc<dyn ShardClient>, clock: Arc<ClusterClock>) -> TxnShards {
        TxnShards { inner, clock }
    }
}

#[async_trait::async_trait]
impl ShardClient for TxnShards {
    async fn send(&self, shard: Target<'_>, msg: &OpMsg) -> Result<OpMsg> {
        let reply = match current() {
            Some(txn) => {
                let statement = statement(&txn, shard, msg)?;
                self.inner.send(shard, &statement).await?
            }
            None => self.inner.send(shard, msg).await?,
        };
        self.clock.observe(reply.body());
        Ok(reply)
    }

    async fn probe(&self, host: &str, body: &bson::RawDocument) -> Result<RawDocumentBuf> {
        self.inner.probe(host, body).await
    }

    fn stats(&self) -> Vec<PoolReport> {
        self.inner.stats()
    }

    fn topology(&self) -> Vec<shardgate_shard_client::TopologyReport> {
        self.inner.topology()
    }

    fn drop_connections(&self, host: &str) -> usize {
        self.inner.drop_connections(host)
    }
}

/// `msg` as a statement of `txn` on `shard`: the body without the fields
/// the transaction sets, then `lsid`, `txnNumber`, `autocommit: false`,
/// and on the shard's first statement `startTransaction` and the
/// transaction's read concern.
fn statement(txn: &Txn, shard: Target<'_>, msg: &OpMsg) -> Result<OpMsg> {
    let body = msg.body();
    let name = body
        .iter()
        .next()
        .and_then(|e| e.ok())
        .map(|(k, _)| k.as_str().to_owned())
        .unwrap_or_default();
    let writes = !READS.contains(&name.as_str()) || writes_out(body);
    let first = txn.join(shard.id, shard.host, writes);
    let mut out = RawDocumentBuf::new();
    for elem in body.iter() {
        let (k, v) = elem.map_err(|e| ShardError::protocol(shard.id, e))?;
        if !TXN_FIELDS.contains(&k.as_str()) {
            out.append(k, v);
        }
    }
    out.append(bson::cstr!("lsid"), RawBsonRef::Document(&txn.lsid));
    out.append(bson::cstr!("txnNumber"), txn.txn_number);
    out.append(bson::cstr!("autocommit"), false);
    if first && !matches!(name.as_str(), "getMore" | "killCursors") {
        out.append(bson::cstr!("startTransaction"), true);
        if let Some(rc) = &txn.read_concern {
            let rc = RawDocumentBuf::try_from(rc).map_err(|e| ShardError::protocol(shard.id, e))?;
            out.append(bson::cstr!("readConcern"), RawBsonRef::Document(&rc));
        }
    }
    Ok(OpMsg {
        flags: msg.flags,
        body: out.into_bytes().into(),
        sequences: msg.sequences.clone(),
    })
}

/// Whether an aggregation writes (`$out`, `$merge`).
fn writes_out(body: &bson::RawDocument) -> bool {
    let Ok(pipeline) = body.get_array("pipeline") else {
        return false;
    };
    pipeline.into_iter().any(|s| {
        s.ok()
            .and_then(|s| s.as_document())
            .and_then(|s| s.iter().next())
            .and_then(|e| e.ok())
            .is_some_and(|(k, _)| k == "$out" || k == "$merge")
    })
}
