//! The namespace's DDL lock: a multi-shard DDL holds it while it runs on
//! the shards, as a migration does while it copies, so neither misses the
//! other's change (an index built after a migration copied the indexes).

use std::time::Duration;

use shardgate_config_store::catalog::{ddl_lock_name, LeaseLock};

use crate::error::{Result, RouterError};
use crate::state::RouterState;

/// How long a DDL waits for a migration (or another DDL) of the namespace.
const WAIT: Duration = Duration::from_secs(60);
/// The lock's lease: a router that dies loses it this long after.
const TTL: Duration = Duration::from_secs(10);

/// Takes the DDL lock of `ns` for `why` (the command).
pub(crate) async fn hold(state: &RouterState, ns: &str, why: &str) -> Result<LeaseLock> {
    let name = ddl_lock_name(ns);
    match LeaseLock::acquire(&state.catalog, &name, &state.listen, why, TTL, WAIT).await? {
        Some(held) => Ok(held),
        None => Err(RouterError::command(
            46,
            "LockBusy",
            format!(
                "{why} on {ns} waited {} s for {}; retry",
                WAIT.as_secs(),
                LeaseLock::holder(&state.catalog, &name).await
            ),
        )),
    }
}

/// Whether nobody holds the DDL lock of `ns` now.
pub(crate) async fn is_free(state: &RouterState, ns: &str) -> bool {
    let name = ddl_lock_name(ns);
    state
        .catalog
        .locks()
        .await
        .map(|locks| !locks.iter().any(|l| l.id == name && l.state != 0))
        .unwrap_or(true)
}
