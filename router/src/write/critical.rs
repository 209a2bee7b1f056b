//! The critical-section hold: while a migration commits a range, every
//! live router holds new writes to it. A write routes itself, and when one
//! of its targets lies in a range in a critical section it waits for the
//! routing to change (the commit), then goes to the new owner; past
//! `critical_section_wait_ms` it fails with StaleConfig (13388), before
//! anything was sent. A write in flight holds the write gate's read side,
//! so a router's acknowledgement of the critical section (which takes the
//! write side) waits for the writes already sent.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bson::{Document, RawDocument};

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::state::RouterState;
use crate::targeting;
use crate::write::plan::{self, Routed, StmtError, WriteKind};

/// The routing of a write, its targets, and its namespace's write gate
/// held while it runs (so a critical-section acknowledgement waits for it).
pub(crate) type Writable<T> = (
    std::sync::Arc<CollectionRouting>,
    T,
    tokio::sync::OwnedRwLockReadGuard<()>,
);

/// Routes a write with `route` (its targets, and whether any of them lies
/// in a migration's critical section), waiting while one does, up to the
/// configured bound; then the fresh routing sends it to the new owner.
/// Past the bound: StaleConfig, before anything was sent.
pub(crate) async fn when_writable<T>(
    state: &RouterState,
    ns: &str,
    mut route: impl FnMut(&CollectionRouting) -> Result<(T, bool)>,
) -> Result<Writable<T>> {
    let deadline = Instant::now() + Duration::from_millis(state.config.critical_section_wait_ms);
    let mut changes = state.routing.subscribe();
    loop {
        let gate = state.write_gates.of(ns).read_owned().await;
        changes.borrow_and_update();
        let routing = state
            .routing
            .get(ns)
            .ok_or_else(|| stale(ns, "the collection is no longer sharded"))?;
        let (targets, held) = route(&routing)?;
        if !held {
            return Ok((routing, targets, gate));
        }
        drop(gate);
        let now = Instant::now();
        if now >= deadline
            || tokio::time::timeout(deadline - now, changes.changed())
                .await
                .is_err()
        {
            return Err(stale(
                ns,
                "a migration's critical section holds writes to this range; retry",
            ));
        }
    }
}

/// [`when_writable`] for the statements of an insert, update or delete.
pub(crate) async fn route_when_writable(
    state: &RouterState,
    ns: &str,
    kind: WriteKind,
    stmts: &[Cow<'_, RawDocument>],
) -> Result<Writable<Vec<std::result::Result<Routed, StmtError>>>> {
    when_writable(state, ns, |routing| {
        let routes: Vec<_> = stmts
            .iter()
            .map(|s| plan::route_statement(kind, &routing.pattern, &routing.chunks, s))
            .collect();
        let held = !routing.critical.is_empty()
            && stmts
                .iter()
                .zip(&routes)
                .any(|(s, r)| is_held(routing, kind, s, r));
        Ok((routes, held))
    })
    .await
}

fn stale(ns: &str, why: &str) -> RouterError {
    RouterError::command(13388, "StaleConfig", format!("{ns}: {why}"))
}

/// Whether a statement writes into a range in a critical section.
fn is_held(
    routing: &CollectionRouting,
    kind: WriteKind,
    stmt: &RawDocument,
    routed: &std::result::Result<Routed, StmtError>,
) -> bool {
    let Ok(routed) = routed else { return false };
    if let Some(key) = &routed.key {
        return routing
            .critical
            .iter()
            .any(|(min, max)| min <= key && key < max);
    }
    let q = match (kind, stmt.get_document("q")) {
        (WriteKind::Insert, _) | (_, Err(_)) => return true,
        (_, Ok(q)) => Document::try_from(q).unwrap_or_default(),
    };
    overlaps_critical(routing, &targeting::target(&routing.pattern, &q))
}

pub(crate) fn overlaps_critical(routing: &CollectionRouting, targets: &targeting::Targets) -> bool {
    match targets {
        targeting::Targets::All => !routing.critical.is_empty(),
        targeting::Targets::Ranges(ranges) => ranges.iter().any(|r| {
            routing.critical.iter().any(|(min, max)| {
                r.min < *max && (*min < r.max || (r.max_inclusive && *min <= r.max))
            })
        }),
    }
}

/// This router's acknowledgement for `ns`, once it installed a routing
/// with orphan ranges or a critical section: the orphan ranges it now
/// excludes and — after every write to `ns` it had started has finished —
/// the critical-section ranges whose writes it holds. The balancer waits
/// for every live router's before it copies into a range and before it
/// commits.
pub(crate) async fn acknowledge(state: &RouterState, ns: &str) {
    let Some(routing) = state.routing.get(ns) else {
        return;
    };
    if routing.critical.is_empty() && routing.orphans.is_empty() {
        return;
    }
    if !routing.critical.is_empty() {
        state.write_gates.drain(ns).await;
    }
    let mut orphans = Vec::new();
    for o in &routing.orphans {
        if let Ok(min) = routing.pattern.encode_bound(&o.min) {
            orphans.push(format!("{}/{min}", o.shard));
        }
    }
    let ack = shardgate_config_store::model::MigrationAck {
        mins: routing
            .critical
            .iter()
            .map(|(min, _)| min.to_string())
            .collect(),
        orphans,
    };
    if let Err(e) = state
        .catalog
        .put_migration_ack(ns, &state.listen, &ack)
        .await
    {
        tracing::warn!(%ns, error = %e, "could not acknowledge the migration state");
    }
}
