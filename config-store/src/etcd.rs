//! The etcd config store: the cluster metadata in an etcd v3 cluster, so
//! several routers (and the balancer) share it, and it survives the loss of
//! a minority of etcd members.
//!
//! Every key lives under `/<prefix>/` (several shardgate clusters can share
//! one etcd); the [`ConfigStore`] keys are relative to it. Revisions are
//! etcd's own store revisions: every committed write transaction advances
//! them (a transaction that writes nothing does not). Leases are etcd
//! leases, so keys of a router that dies vanish after its lease TTL, and
//! watches are etcd watches (a lease expiry shows as a delete).
//!
//! Every call has a deadline ([`EtcdOptions::request_timeout`]). Calls go
//! to one preferred member and fail over to the next when a member is down
//! or has no leader; with a majority down they fail with
//! [`StoreError::Unavailable`] naming each member's error. A write is sent
//! again to another member only when it surely was not applied; after an
//! ambiguous failure (timeout, connection lost mid-call) it fails with a
//! message saying the outcome is unknown.
//!
//! Limits inherited from etcd: a transaction may hold at most
//! `--max-txn-ops` (default 128) operations and 1.5 MiB of data; etcd
//! rejects larger ones and they fail with [`StoreError::Invariant`], having
//! written nothing. Authentication and TLS are not supported yet.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare as EtcdCompare, CompareOp, GetOptions, KeyValue, PutOptions, Txn as EtcdTxn, TxnOp,
};
use tokio::sync::mpsc;

use crate::error::{Result, StoreError};
use crate::store::{
    Compare, ConfigStore, LeaseId, Listing, Op, Txn, TxnOutcome, Versioned, WatchEvent,
};

mod call;
#[cfg(feature = "test-harness")]
pub mod cluster;
mod keys;
mod watch;

use call::{Members, Retry};
pub use keys::valid_prefix;
use keys::{header_revision, prefix_end, revision_u64};

/// Entries fetched per page of a scan (all pages read at one revision).
const SCAN_PAGE: i64 = 1_000;
/// Largest response accepted from etcd (a scan page, a watch batch).
const MAX_MESSAGE: usize = 64 << 20;

/// Timeouts of an [`EtcdStore`].
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// How long opening a TCP connection to one member may take.
    pub connect_timeout: Duration,
    /// How long one store call may take in all, failovers and retries
    /// included, before it fails with [`StoreError::Unavailable`].
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
        }
    }
}

/// A [`ConfigStore`] over an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    members: Members,
    /// `/<prefix>/`, prepended to every key.
    namespace: String,
    prefix: String,
}

impl EtcdStore {
    /// Connects to the cluster whose members are `endpoints` (`host:port`
    /// each), keeping keys under `/<prefix>/`, with default timeouts. Fails
    /// with [`StoreError::Unavailable`] if the cluster does not answer.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore> {
        EtcdStore::connect_with(endpoints, prefix, EtcdOptions::default()).await
    }

    /// [`EtcdStore::connect`] with explicit timeouts.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        options: EtcdOptions,
    ) -> Result<EtcdStore> {
        let describe = format!("etcd://{}/{prefix}", endpoints.join(","));
        if endpoints.is_empty() || !valid_prefix(prefix) {
            return Err(StoreError::BadUrl(describe));
        }
        let members =
            Members::new(endpoints, options.connect_timeout, options.request_timeout).await?;
        let store = EtcdStore {
            inner: Arc::new(Inner {
                members,
                namespace: format!("/{prefix}/"),
                prefix: prefix.to_owned(),
            }),
        };
        store.revision().await?;
        Ok(store)
    }

    /// The etcd key prefix of this store, `/<prefix>/`.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.namespace)
    }

    /// The store key of an etcd key under the namespace.
    fn relative_key(&self, key: &[u8]) -> Result<String> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_owned(),
        };
        let key = std::str::from_utf8(key).map_err(|_| corrupt("key is not UTF-8"))?;
        key.strip_prefix(self.inner.namespace.as_str())
            .map(str::to_owned)
            .ok_or_else(|| corrupt("key outside the store's prefix"))
    }

    fn entry(&self, kv: &KeyValue) -> Result<(String, Versioned)> {
        Ok((
            self.relative_key(kv.key())?,
            Versioned {
                value: kv.value().to_vec(),
                mod_revision: revision_u64(kv.mod_revision()),
            },
        ))
    }

    /// One page of a range read: `[from, end)`, at `revision` (0: latest).
    async fn range_page(
        &self,
        from: Vec<u8>,
        end: Vec<u8>,
        revision: i64,
    ) -> Result<etcd_client::GetResponse> {
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(SCAN_PAGE)
            .with_revision(revision);
        self.inner
            .members
            .call("scan", Retry::Always, |c| {
                let (from, options) = (from.clone(), options.clone());
                async move {
                    let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE);
                    kv.get(from, Some(options)).await
                }
            })
            .await
    }

    /// Reads every key in `[from, end)` at one revision, page by page.
    async fn range_all(&self, from: Vec<u8>, end: Vec<u8>) -> Result<Listing> {
        'restart: loop {
            let mut listing = Listing::default();
            let mut next = from.clone();
            let mut at = 0;
            loop {
                let page = match self.range_page(next, end.clone(), at).await {
                    Ok(page) => page,
                    // Compacted between pages: read again at the newest revision.
                    Err(StoreError::Compacted { .. }) if at != 0 => continue 'restart,
                    Err(e) => return Err(e),
                };
                if at == 0 {
                    at = header_revision(page.header());
                    listing.revision = revision_u64(at);
                }
                for kv in page.kvs() {
                    listing.entries.push(self.entry(kv)?);
                }
                match page.kvs().last() {
                    Some(last) if page.more() => {
                        next = last.key().to_vec();
                        next.push(0);
                    }
                    _ => return Ok(listing),
                }
            }
        }
    }
}

/// The etcd operations of a transaction. etcd refuses a transaction that
/// touches one key twice, so only the last operation on each key is kept
/// (it alone decides the key's final state).
fn etcd_ops(store: &EtcdStore, ops: &[Op]) -> Vec<TxnOp> {
    let mut seen = HashSet::new();
    let mut kept: Vec<TxnOp> = ops
        .iter()
        .rev()
        .filter(|op| {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            seen.insert(key.as_str())
        })
        .map(|op| match op {
            Op::Put { key, value, lease } => TxnOp::put(
                store.full_key(key),
                value.clone(),
                lease.map(|l| PutOptions::new().with_lease(l)),
            ),
            Op::Delete { key } => TxnOp::delete(store.full_key(key), None),
        })
        .collect();
    kept.reverse();
    kept
}

#[async_trait]
impl ConfigStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let key = self.full_key(key);
        let resp = self
            .inner
            .members
            .call("get", Retry::Always, |c| {
                let key = key.clone();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| Versioned {
            value: kv.value().to_vec(),
            mod_revision: revision_u64(kv.mod_revision()),
        }))
    }

    async fn scan(&self, prefix: &str) -> Result<Listing> {
        let from = self.full_key(prefix).into_bytes();
        let end = prefix_end(&from);
        self.range_all(from, end).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|Compare::ModRevision { key, revision }| {
                // A missing key compares as mod_revision 0 in etcd, so
                // "absent" needs no special case.
                let revision = i64::try_from(*revision).unwrap_or(i64::MAX);
                EtcdCompare::mod_revision(self.full_key(key), CompareOp::Equal, revision)
            })
            .collect();
        let request = EtcdTxn::new()
            .when(compares)
            .and_then(etcd_ops(self, &txn.ops));
        let resp = self
            .inner
            .members
            .call("transaction", Retry::IfNotSent, |c| {
                let request = request.clone();
                async move { c.kv_client().txn(request).await }
            })
            .await
            .map_err(|e| match e {
                StoreError::LeaseExpired(_) => {
                    let lease = txn.ops.iter().find_map(|op| match op {
                        Op::Put { lease, .. } => *lease,
                        Op::Delete { .. } => None,
                    });
                    StoreError::LeaseExpired(lease.unwrap_or(0))
                }
                e => e,
            })?;
        Ok(if resp.succeeded() {
            TxnOutcome::Committed(revision_u64(header_revision(resp.header())))
        } else {
            TxnOutcome::Conflict
        })
    }

    async fn revision(&self) -> Result<u64> {
        let key = self.inner.namespace.clone();
        let resp = self
            .inner
            .members
            .call("revision read", Retry::Always, |c| {
                let key = key.clone();
                async move {
                    let options = GetOptions::new().with_count_only();
                    c.kv_client().get(key, Some(options)).await
                }
            })
            .await?;
        Ok(revision_u64(header_revision(resp.header())))
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<mpsc::Receiver<WatchEvent>> {
        watch::start(self.clone(), prefix, after_revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        // etcd counts whole seconds (and raises a TTL below its minimum).
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000).max(1)).unwrap_or(i64::MAX);
        let resp = self
            .inner
            .members
            .call("lease grant", Retry::Always, |c| async move {
                c.lease_client().grant(secs, None).await
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Unavailable(format!(
                "etcd lease grant: {}",
                resp.error()
            )));
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner
            .members
            .call("lease keep-alive", Retry::Always, |c| async move {
                // One round trip: the client sends one request and waits
                // for its answer; TTL 0 there means the lease is gone.
                c.lease_client().keep_alive(lease).await.map(drop)
            })
            .await
            .map_err(|e| match e {
                StoreError::LeaseExpired(_) => StoreError::LeaseExpired(lease),
                e => e,
            })
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let result = self
            .inner
            .members
            .call("lease revoke", Retry::Always, |c| async move {
                c.lease_client().revoke(lease).await.map(drop)
            })
            .await;
        match result {
            // Already expired or revoked: its keys are gone, as asked.
            Err(StoreError::LeaseExpired(_)) => Ok(()),
            other => other,
        }
    }

    fn describe(&self) -> String {
        format!(
            "etcd://{}/{}",
            self.inner.members.endpoint_list(),
            self.inner.prefix
        )
    }
}
