//! Watches: an etcd watch stream forwarded into a channel by a task.

use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions, WatchResponse, WatchResponseStream};
use tokio::sync::mpsc;

use super::keys::{header_revision, revision_u64};
use super::{EtcdStore, MAX_MESSAGE};
use crate::error::{Result, StoreError};
use crate::store::{ConfigStore, WatchEvent};

use super::call::Retry;

/// Buffer of one watch channel; the etcd stream waits while it is full.
const WATCH_BUFFER: usize = 4_096;
/// How long to wait for etcd to say which revision a compacted watch
/// would have needed.
const COMPACTED_WAIT: Duration = Duration::from_secs(1);

/// Opens a watch of `prefix` from `after_revision + 1` and spawns the task
/// that forwards its events. A start revision that is compacted away is
/// reported as [`StoreError::Compacted`]; a compaction etcd reports later
/// closes the channel.
pub(super) async fn start(
    store: EtcdStore,
    prefix: &str,
    after_revision: u64,
) -> Result<mpsc::Receiver<WatchEvent>> {
    let key = store.full_key(prefix);
    let start_revision = i64::try_from(after_revision.saturating_add(1)).unwrap_or(i64::MAX);
    let (sender, mut stream, created_at) = store
        .inner
        .members
        .call("watch", Retry::Always, |c| {
            let key = key.clone();
            async move {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(start_revision);
                let mut client = c.watch_client().max_decoding_message_size(MAX_MESSAGE);
                let (sender, mut stream) = client.watch(key, Some(options)).await?.split();
                loop {
                    match stream.message().await? {
                        Some(resp) if resp.created() => {
                            return Ok((sender, stream, resp));
                        }
                        Some(_) => continue,
                        None => {
                            return Err(etcd_client::Error::WatchError(
                                "watch stream closed before the watch was created".into(),
                            ))
                        }
                    }
                }
            }
        })
        .await?;
    if created_at.canceled() {
        return Err(cancellation(&created_at));
    }
    // etcd reports a compacted start revision only after the watch is
    // created, and asynchronously; a read at that revision answers now.
    let current = header_revision(created_at.header());
    if start_revision <= current {
        match history_available(&store, start_revision).await {
            Err(StoreError::Compacted { .. }) => {
                let revision = compact_revision(&mut stream).await.unwrap_or(current);
                return Err(StoreError::Compacted {
                    revision: revision_u64(revision),
                });
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    tokio::spawn(forward(store, sender, stream, tx));
    Ok(rx)
}

/// Succeeds when revision `revision` is still readable (not compacted).
async fn history_available(store: &EtcdStore, revision: i64) -> Result<()> {
    let key = store.inner.namespace.clone();
    store
        .inner
        .members
        .call("history check", Retry::Always, |c| {
            let key = key.clone();
            async move {
                let options = GetOptions::new().with_count_only().with_revision(revision);
                c.kv_client().get(key, Some(options)).await
            }
        })
        .await
        .map(drop)
}

/// Waits briefly for etcd's cancellation of a compacted watch and returns
/// the oldest revision it still has.
async fn compact_revision(stream: &mut WatchResponseStream) -> Option<i64> {
    let wait = async {
        while let Ok(Some(resp)) = stream.message().await {
            if resp.compact_revision() > 0 {
                return Some(resp.compact_revision());
            }
        }
        None
    };
    tokio::time::timeout(COMPACTED_WAIT, wait)
        .await
        .ok()
        .flatten()
}

/// The error for a watch etcd canceled.
fn cancellation(resp: &WatchResponse) -> StoreError {
    if resp.compact_revision() > 0 {
        StoreError::Compacted {
            revision: revision_u64(resp.compact_revision()),
        }
    } else {
        StoreError::Unavailable(format!("etcd canceled the watch: {}", resp.cancel_reason()))
    }
}

/// Forwards events until the stream ends or fails, etcd cancels the watch,
/// or the receiver is dropped; then the channel closes.
async fn forward(
    store: EtcdStore,
    // Dropping the request side would end the watch stream.
    _sender: etcd_client::WatchRequestSender,
    mut stream: WatchResponseStream,
    tx: mpsc::Sender<WatchEvent>,
) {
    let describe = store.describe();
    loop {
        let resp = tokio::select! {
            _ = tx.closed() => return,
            msg = stream.message() => msg,
        };
        let resp = match resp {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                tracing::debug!(store = %describe, "etcd watch stream ended");
                return;
            }
            Err(e) => {
                tracing::debug!(store = %describe, "etcd watch failed: {}", super::call::error_text(&e));
                return;
            }
        };
        if resp.canceled() {
            tracing::debug!(store = %describe, "etcd watch ended: {}", cancellation(&resp));
            return;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let key = match store.relative_key(kv.key()) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(store = %describe, "skipping watch event: {e}");
                    continue;
                }
            };
            let value = match event.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            let event = WatchEvent {
                revision: revision_u64(kv.mod_revision()),
                key,
                value,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}
