//! Calls to etcd members: one client per member, a preferred member that
//! every call starts at, failover to the next member when one cannot serve,
//! and a deadline on every call so that a cluster without quorum gives a
//! clear [`StoreError::Unavailable`] instead of a hang.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::time::Instant;

use crate::error::{Result, StoreError};

/// gRPC status codes (tonic's `Code` as numbers; `etcd_client` does not
/// re-export tonic).
mod code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// Whether a failed call may be sent again to another member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and idempotent lease calls: retry on any transient failure.
    Always,
    /// Writes: retry only when the request surely did not reach the cluster
    /// (connection refused, member without a leader); after an ambiguous
    /// failure the outcome is unknown and the caller must re-read.
    IfNotSent,
}

/// How one attempt failed.
#[derive(Debug)]
enum Failure {
    /// The request was not applied; another member may serve it.
    NotSent(String),
    /// The request may or may not have been applied.
    Unknown(String),
    /// A definite answer: retrying elsewhere gives the same.
    Final(StoreError),
}

/// The members of one etcd cluster and where calls go first.
pub(crate) struct Members {
    endpoints: Vec<String>,
    clients: Vec<Client>,
    preferred: AtomicUsize,
    request_timeout: Duration,
}

impl Members {
    /// One client per endpoint (`host:port`). Connections are made lazily,
    /// on the first call that needs them.
    pub(crate) async fn new(
        endpoints: &[String],
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Members> {
        let options = ConnectOptions::new()
            .with_connect_timeout(connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false)
            // A member cut off from the leader refuses at once ("no leader")
            // instead of queueing the request; the call then fails over.
            .with_require_leader(true);
        let mut clients = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            let client = Client::connect([format!("http://{ep}")], Some(options.clone()))
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("etcd endpoint {ep}: {}", error_text(&e)))
                })?;
            clients.push(client);
        }
        Ok(Members {
            endpoints: endpoints.to_vec(),
            clients,
            preferred: AtomicUsize::new(0),
            request_timeout,
        })
    }

    /// `host:port` of every member, comma-separated.
    pub(crate) fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// Runs `f` against the preferred member, failing over to the others
    /// until it succeeds, fails definitely, or the request timeout passes.
    /// `what` names the operation in error messages.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, retry: Retry, mut f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        // One slow member must not use up the whole budget of a read.
        // (A write is not sent twice after a timeout, so it gets it all.)
        let attempt_cap = match retry {
            Retry::Always => (self.request_timeout / 2).max(Duration::from_millis(500)),
            Retry::IfNotSent => self.request_timeout,
        };
        let n = self.clients.len();
        let mut errors: Vec<Option<String>> = vec![None; n];
        let mut backoff = Duration::from_millis(25);
        loop {
            let start = self.preferred.load(Ordering::Relaxed) % n;
            for k in 0..n {
                let i = (start + k) % n;
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let budget = (deadline - now).min(attempt_cap);
                let failure = match tokio::time::timeout(budget, f(self.clients[i].clone())).await {
                    Ok(Ok(value)) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Ok(Err(e)) => classify(&e),
                    Err(_) => Failure::Unknown(format!(
                        "no answer within {budget:.1?} (is a majority of members up?)"
                    )),
                };
                match failure {
                    Failure::Final(err) => return Err(err),
                    Failure::Unknown(msg) if retry == Retry::IfNotSent => {
                        self.avoid(i);
                        return Err(StoreError::Unavailable(format!(
                            "etcd {what} via {}: {msg}; it may or may not have been applied \
                             (re-read before retrying)",
                            self.endpoints[i]
                        )));
                    }
                    Failure::NotSent(msg) | Failure::Unknown(msg) => {
                        tracing::debug!(endpoint = %self.endpoints[i], %what, "etcd call failed: {msg}");
                        self.avoid(i);
                        errors[i] = Some(msg);
                    }
                }
            }
            if Instant::now() + backoff >= deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(400));
        }
        let detail: Vec<String> = self
            .endpoints
            .iter()
            .zip(&errors)
            .map(|(ep, e)| format!("{ep}: {}", e.as_deref().unwrap_or("not tried")))
            .collect();
        Err(StoreError::Unavailable(format!(
            "etcd cluster {} could not serve {what} within {:.1?} (is a majority of members up?): {}",
            self.endpoint_list(),
            self.request_timeout,
            detail.join("; ")
        )))
    }

    /// Moves the preference off member `i` (unless another call already did).
    fn avoid(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self
            .preferred
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Sorts an etcd client error into what the call loop does with it.
fn classify(e: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => {
            let text = error_text(e);
            let code = status.code() as i32;
            match code {
                code::UNAVAILABLE | code::UNKNOWN if is_not_sent(&text) => Failure::NotSent(text),
                code::UNAVAILABLE
                | code::UNKNOWN
                | code::DEADLINE_EXCEEDED
                | code::CANCELLED
                | code::ABORTED
                | code::INTERNAL => Failure::Unknown(text),
                code::NOT_FOUND if text.contains("lease not found") => {
                    // The caller knows which lease; it replaces the 0.
                    Failure::Final(StoreError::LeaseExpired(0))
                }
                code::OUT_OF_RANGE if text.contains("compacted") => {
                    // The caller fills in the revision.
                    Failure::Final(StoreError::Compacted { revision: 0 })
                }
                code::INVALID_ARGUMENT | code::FAILED_PRECONDITION => Failure::Final(
                    StoreError::Invariant(format!("etcd rejected the request: {text}")),
                ),
                _ => Failure::Final(StoreError::Unavailable(format!("etcd: {text}"))),
            }
        }
        E::TransportError(_) => Failure::NotSent(error_text(e)),
        E::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
            Failure::Final(StoreError::LeaseExpired(0))
        }
        E::LeaseKeepAliveError(_) | E::WatchError(_) => Failure::Unknown(error_text(e)),
        _ => Failure::Final(StoreError::Unavailable(format!("etcd: {}", error_text(e)))),
    }
}

/// Failures that prove the request was not applied: no connection was
/// made, or the member refused it for want of a leader.
fn is_not_sent(text: &str) -> bool {
    const MARKERS: &[&str] = &[
        "tcp connect error",
        "error trying to connect",
        "connection refused",
        "no leader",
        "proposal dropped",
        "dns error",
    ];
    let lower = text.to_ascii_lowercase();
    MARKERS.iter().any(|m| lower.contains(m))
}

/// A one-line description of an etcd client error: the gRPC message and
/// its causes, without the status's metadata dump.
pub(crate) fn error_text(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let mut text = match e {
        etcd_client::Error::GRpcStatus(s) if !s.message().is_empty() => s.message().to_owned(),
        other => other.to_string(),
    };
    let mut source = match e {
        etcd_client::Error::GRpcStatus(s) => s.source(),
        other => other.source(),
    };
    while let Some(cause) = source {
        let c = cause.to_string();
        if !c.is_empty() && !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_sent_markers() {
        assert!(is_not_sent(
            "tcp connect error: Connection refused (os error 111)"
        ));
        assert!(is_not_sent("etcdserver: no leader"));
        assert!(!is_not_sent("etcdserver: request timed out"));
        assert!(!is_not_sent("h2 protocol error: connection reset"));
    }
}
