//! `drop` of a sharded collection: on every shard (a shard that held
//! chunks earlier, or orphaned documents, keeps a copy), under the DDL lock
//! so no migration copies into it meanwhile, then the metadata.

use bson::doc;

use crate::error::Result;
use crate::session::Namespace;
use crate::shards::run_on_shard;
use crate::state::RouterState;

use super::lock;

/// Drops the sharded collection `ns`; false when it is not sharded.
pub(crate) async fn drop(state: &RouterState, ns: &str, db: &str) -> Result<bool> {
    if state.routing.get(ns).is_none() {
        return Ok(false);
    }
    let held = lock::hold(state, ns, "drop").await?;
    let outcome = drop_held(state, ns, db).await;
    held.release().await;
    outcome.map(|()| true)
}

async fn drop_held(state: &RouterState, ns: &str, db: &str) -> Result<()> {
    let coll = Namespace::parse(ns).coll;
    for shard in state.placement.shards() {
        match run_on_shard(state, &shard, doc! {"drop": coll, "$db": db}).await {
            Ok(_) => {}
            Err(e) if e.code().0 == 26 => {}
            Err(e) => return Err(e),
        }
    }
    state.catalog.drop_collection(ns).await?;
    state.routing.refresh(&state.catalog, ns).await?;
    Ok(())
}
