//! `drop` of a sharded collection, fenced: under the DDL lock (so no
//! migration copies into it meanwhile) the collection is marked `dropping`
//! in the store, and every live router holds writes to it and says so (as
//! for a migration's critical section over the whole key space); only then
//! is it dropped on every shard (a shard that held chunks earlier, or
//! orphaned documents, keeps a copy) and its metadata removed. The held
//! writes then see an unsharded collection and go to the primary, so no
//! write routed by the old metadata lands on a shard after its copy was
//! dropped. Reads are not held: one running during the drop may see some
//! shards' documents and not others', as a read racing a drop may.

use std::time::{Duration, Instant};

use bson::doc;
use shardgate_config_store::shard_key::ShardKeyPattern;

use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::shards::run_on_shard;
use crate::state::RouterState;

use super::lock;

/// How long the drop waits for every router to hold writes.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// Drops the sharded collection `ns`; false when it is not sharded.
pub(crate) async fn drop(state: &RouterState, ns: &str, db: &str) -> Result<bool> {
    if state.routing.get(ns).is_none() {
        return Ok(false);
    }
    let held = lock::hold(state, ns, "drop").await?;
    let outcome = drop_held(state, ns, db).await;
    let _ = state.catalog.clear_migration_acks(ns).await;
    held.release().await;
    outcome.map(|()| true)
}

async fn drop_held(state: &RouterState, ns: &str, db: &str) -> Result<()> {
    // The metadata as the store has it now, under the lock.
    let Some(mut coll) = state.catalog.collection(ns).await? else {
        return Ok(());
    };
    coll.dropping = true;
    state.catalog.update_collection(&coll).await?;
    if let Err(e) = await_writes_held(state, ns, &coll.key).await {
        coll.dropping = false;
        state.catalog.update_collection(&coll).await?;
        return Err(e);
    }
    let name = Namespace::parse(ns).coll;
    for shard in state.placement.shards() {
        match run_on_shard(state, &shard, doc! {"drop": name, "$db": db}).await {
            Ok(_) => {}
            Err(e) if e.code().0 == 26 => {}
            Err(e) => return Err(e),
        }
    }
    state.catalog.drop_collection(ns).await?;
    state.routing.refresh(&state.catalog, ns).await?;
    Ok(())
}

/// Waits until every live router acknowledged holding writes to all of
/// `ns` (the critical-section range from MinKey).
pub(crate) async fn await_writes_held(
    state: &RouterState,
    ns: &str,
    key: &bson::Document,
) -> Result<()> {
    let pattern = ShardKeyPattern::parse(key)
        .map_err(|e| RouterError::bad_value(format!("shard key of {ns}: {e}")))?;
    let min: bson::Document = pattern
        .fields()
        .map(|(f, _)| (f.to_owned(), bson::Bson::MinKey))
        .collect();
    let min = pattern
        .encode_bound(&min)
        .map_err(|e| RouterError::bad_value(format!("shard key of {ns}: {e}")))?
        .to_string();
    await_acks(state, ns, "hold writes", |ack| ack.mins.contains(&min)).await
}

/// Waits until every live router's acknowledgement for `ns` satisfies
/// `acked` (MaxTimeMSExpired naming the late ones after `ACK_WAIT`).
pub(crate) async fn await_acks(
    state: &RouterState,
    ns: &str,
    what: &str,
    acked: impl Fn(&shardgate_config_store::model::MigrationAck) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + ACK_WAIT;
    loop {
        let missing = state.catalog.routers_without_ack(ns, &acked).await?;
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RouterError::command(
                50,
                "MaxTimeMSExpired",
                format!("{ns}: routers {missing:?} did not {what} in time"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
