//! `movePrimary`'s clone and catch-up outside the critical section: a
//! change stream on the database at the old primary, opened before the
//! copy; the documents its events name are read again on the old primary
//! and made the same on the new one. Anything the catch-up cannot replay
//! (a DDL event, a collection that was not copied, a lost stream) sends
//! the copy back inside the critical section.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use shardgate_config_store::ShardType;
use shardgate_shard_client::{event_id, resync, ChangeStream};

use crate::error::{Result, RouterError};
use crate::shards::target;
use crate::state::RouterState;

use super::{copy_all, Unsharded};

/// Catch-up rounds before the critical section at most.
const ROUNDS: usize = 20;
/// Events left in a round small enough to enter the critical section.
const SMALL_LAG: usize = 100;

/// The copy so far: the stream to drain in the critical section, and how
/// many documents the catch-up resynced.
pub(super) struct Cloned {
    stream: ChangeStream,
    caught_up: u64,
}

/// Copies the database to `dest` while clients write, then catches up
/// until the lag is small. `None` when the copy must run in the critical
/// section instead (the reason is logged).
pub(super) async fn clone(
    state: &RouterState,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    collections: &[Unsharded],
) -> Option<Cloned> {
    let stream = match ChangeStream::open(state.shards.as_ref(), target(source), db, None, true)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(%db, error = %e, "no change stream on the old primary; movePrimary copies inside the critical section");
            return None;
        }
    };
    let mut cloned = Cloned {
        stream,
        caught_up: 0,
    };
    let copied = async {
        copy_all(state, source, dest, db, collections).await?;
        for _ in 0..ROUNDS {
            if catch_up(state, &mut cloned, source, dest, db, collections).await? < SMALL_LAG {
                break;
            }
        }
        Ok::<(), RouterError>(())
    };
    match copied.await {
        Ok(()) => Some(cloned),
        Err(e) => {
            tracing::info!(%db, error = %e, "movePrimary's online copy stopped; copying inside the critical section");
            cloned.stream.close(state.shards.as_ref()).await;
            None
        }
    }
}

/// In the critical section: the last events applied, or (without an
/// online copy, or when they cannot be) the whole copy. Returns the
/// changelog details.
pub(super) async fn finish(
    state: &RouterState,
    online: Option<Cloned>,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    collections: &[Unsharded],
) -> Result<Document> {
    if let Some(mut cloned) = online {
        let last = catch_up(state, &mut cloned, source, dest, db, collections).await;
        cloned.stream.close(state.shards.as_ref()).await;
        match last {
            Ok(_) => {
                return Ok(doc! {
                    "copiedInCriticalSection": false,
                    "caughtUp": cloned.caught_up as i64,
                })
            }
            Err(e) => {
                tracing::info!(%db, error = %e, "movePrimary's last catch-up failed; copying inside the critical section");
            }
        }
    }
    copy_all(state, source, dest, db, collections).await?;
    Ok(doc! {"copiedInCriticalSection": true})
}

/// Applies the events since the last round; returns how many there were.
async fn catch_up(
    state: &RouterState,
    cloned: &mut Cloned,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    collections: &[Unsharded],
) -> Result<usize> {
    let events = cloned.stream.events(state.shards.as_ref()).await?;
    let mut ids: BTreeMap<String, Vec<Bson>> = BTreeMap::new();
    for e in &events {
        let op = e.get_str("operationType").unwrap_or_default();
        let coll = e
            .get_document("ns")
            .and_then(|ns| ns.get_str("coll"))
            .unwrap_or_default();
        let copied = collections.iter().any(|c| !c.view && c.name == coll);
        let replayable = matches!(op, "insert" | "update" | "replace" | "delete");
        let (true, true, Some(id)) = (replayable, copied, event_id(e)) else {
            return Err(RouterError::command(
                20,
                "IllegalOperation",
                format!("a '{op}' event on {db}.{coll} during the copy"),
            ));
        };
        ids.entry(coll.to_owned()).or_default().push(id.clone());
    }
    let keep = |_: &bson::RawDocument| true;
    let everything = bson::Document::new();
    let kept = shardgate_shard_client::Keep {
        keep: &keep,
        guard: &everything,
        replaces: None,
        pins: &[],
    };
    for (coll, mut ids) in ids {
        ids.dedup();
        cloned.caught_up += resync(
            &state.shards,
            (target(source), target(dest)),
            (db, &coll),
            &ids,
            &kept,
        )
        .await?;
    }
    Ok(events.len())
}
