//! A resharding's copy: change streams open on every shard, each shard's
//! owned documents copied to their new owners, then caught up with what
//! clients wrote meanwhile. Every write here is a migration write, which
//! change streams (the clients' and the resharding's own) leave out.

use std::collections::BTreeSet;

use bson::{doc, Bson, RawDocument, RawDocumentBuf};
use shardgate_config_store::model::CollectionType;
use shardgate_config_store::model::OrphanRange;
use shardgate_config_store::shard_key::{range_filter, ShardKeyPattern};
use shardgate_config_store::ShardType;
use shardgate_shard_client::{event_id, exclude_migration_events, ChangeStream, Keep};

use super::plan::{id_of, Layout};
use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::shards::{open_cursor, target};
use crate::state::RouterState;

/// Catch-up passes before the commit is tried anyway.
const PASSES: usize = 20;
/// A pass naming fewer documents than this is close enough to commit.
const SMALL_LAG: usize = 100;
/// Passes the commit drains before it gives up.
const DRAIN_PASSES: usize = 50;

/// The change streams on every shard.
pub(in crate::ddl) struct Streams(Vec<(ShardType, ChangeStream)>);

/// Steps 2 and 3: streams, clone, catch-up until the lag is small (or an
/// abort is asked for).
pub(super) async fn run(
    state: &RouterState,
    coll: &CollectionType,
    layout: &Layout,
) -> Result<Streams> {
    let Namespace { db, coll: name } = Namespace::parse(&coll.ns);
    let mut streams = Vec::new();
    for shard in &layout.shards {
        let opened = ChangeStream::open_with(
            state.shards.as_ref(),
            target(shard),
            (db, Some(name)),
            false,
            vec![exclude_migration_events()],
        )
        .await;
        match opened {
            Ok(s) => streams.push((shard.clone(), s)),
            Err(e) => {
                close(state, Streams(streams)).await;
                return Err(e.into());
            }
        }
    }
    let mut streams = Streams(streams);
    let copied = async {
        for donor in &layout.shards {
            clone_donor(state, coll, layout, donor).await?;
        }
        for _ in 0..PASSES {
            let named = pass(state, coll, layout, &mut streams).await?;
            if named < SMALL_LAG || requested(state, coll).await {
                break;
            }
        }
        Ok::<_, RouterError>(())
    };
    match copied.await {
        Ok(()) => Ok(streams),
        Err(e) => {
            close(state, streams).await;
            Err(e)
        }
    }
}

/// Whether `abortReshardCollection` or `commitReshardCollection` asked to
/// stop catching up.
async fn requested(state: &RouterState, coll: &CollectionType) -> bool {
    match state.catalog.collection(&coll.ns).await {
        Ok(Some(c)) => c.resharding.is_some_and(|r| r.abort || r.commit),
        _ => false,
    }
}

/// Step 4's drain (writes held): passes until one names nothing.
pub(super) async fn drain(
    state: &RouterState,
    coll: &CollectionType,
    layout: &Layout,
    mut streams: Streams,
) -> Result<()> {
    let mut outcome = Err(RouterError::command(
        50,
        "MaxTimeMSExpired",
        format!("resharding {}: the change streams did not drain", coll.ns),
    ));
    for _ in 0..DRAIN_PASSES {
        match pass(state, coll, layout, &mut streams).await {
            Ok(0) => {
                outcome = Ok(());
                break;
            }
            Ok(_) => {}
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    close(state, streams).await;
    outcome
}

pub(in crate::ddl) async fn close(state: &RouterState, streams: Streams) {
    for (_, s) in streams.0 {
        s.close(state.shards.as_ref()).await;
    }
}

/// What `to` keeps of `from`'s documents: those `from` owns under the old
/// key and `to` under the new one.
fn keeps<'a>(
    layout: &'a Layout,
    from: &'a str,
    to: &'a str,
) -> impl Fn(&RawDocument) -> bool + Sync + 'a {
    move |d: &RawDocument| {
        layout.old_owner(d) == Some(from) && layout.new_owner(d).is_ok_and(|o| o == to)
    }
}

/// What a fresh copy may replace on `to`: any document `to` does not own
/// under the old key (a stale copy from another shard, whose own event
/// may come in a later pass).
fn stale_on<'a>(layout: &'a Layout, to: &'a str) -> impl Fn(&RawDocument) -> bool + Sync + 'a {
    move |d: &RawDocument| layout.old_owner(d) != Some(to)
}

/// Copies `donor`'s owned documents to their new owners.
async fn clone_donor(
    state: &RouterState,
    coll: &CollectionType,
    layout: &Layout,
    donor: &ShardType,
) -> Result<()> {
    let Namespace { db, coll: name } = Namespace::parse(&coll.ns);
    let find = doc! {"find": name, "batchSize": 2_000, "$db": db};
    let mut cursor = match open_cursor(state, donor, &find).await {
        Ok(c) => c,
        Err(e) if e.code().0 == 26 => return Ok(()),
        Err(e) => return Err(e),
    };
    let none = bson::Document::new();
    while let Some(batch) = cursor.next_batch().await? {
        let mut by_owner: Vec<(&ShardType, Vec<RawDocumentBuf>)> = Vec::new();
        for d in batch {
            if layout.old_owner(&d) != Some(donor.id.as_str()) {
                continue;
            }
            let owner = layout.new_owner(&d)?;
            if owner == donor.id {
                continue;
            }
            match by_owner.iter_mut().find(|(s, _)| s.id == owner) {
                Some((_, docs)) => docs.push(d),
                None => {
                    let shard = layout
                        .shards
                        .iter()
                        .find(|s| s.id == owner)
                        .ok_or_else(|| {
                            RouterError::command(
                                70,
                                "ShardNotFound",
                                format!("shard {owner} not found"),
                            )
                        })?;
                    by_owner.push((shard, vec![d]));
                }
            }
        }
        for (to, docs) in by_owner {
            let keep = keeps(layout, &donor.id, &to.id);
            let stale = stale_on(layout, &to.id);
            let kept = Keep {
                keep: &keep,
                guard: &none,
                replaces: Some(&stale),
                pins: &layout.old_pins(),
            };
            for part in docs.chunks(2_000) {
                shardgate_shard_client::upsert_kept(
                    &state.shards,
                    target(to),
                    (db, name),
                    part,
                    &kept,
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// One catch-up pass: every shard's new events, the documents they name
/// made to match on every other shard. Returns how many it named.
async fn pass(
    state: &RouterState,
    coll: &CollectionType,
    layout: &Layout,
    streams: &mut Streams,
) -> Result<usize> {
    let Namespace { db, coll: name } = Namespace::parse(&coll.ns);
    let none = bson::Document::new();
    let mut named = 0;
    for (donor, stream) in streams.0.iter_mut() {
        let events = stream.events(state.shards.as_ref()).await?;
        let mut seen = BTreeSet::new();
        let ids: Vec<Bson> = events
            .iter()
            .filter_map(event_id)
            .filter(|id| seen.insert(id.to_string()))
            .cloned()
            .collect();
        if ids.is_empty() {
            continue;
        }
        named += ids.len();
        for to in layout.shards.iter().filter(|s| s.id != donor.id) {
            let keep = keeps(layout, &donor.id, &to.id);
            let stale = stale_on(layout, &to.id);
            let kept = Keep {
                keep: &keep,
                guard: &none,
                replaces: Some(&stale),
                pins: &layout.old_pins(),
            };
            let pair = (target(donor), target(to));
            shardgate_shard_client::resync(&state.shards, pair, (db, name), &ids, &kept).await?;
        }
    }
    Ok(named)
}

/// Deletes `shard`'s documents in `orphan` (under `pattern`), as migration
/// writes.
pub(super) async fn delete_range(
    state: &RouterState,
    shard: &ShardType,
    coll: &CollectionType,
    pattern: &ShardKeyPattern,
    orphan: &OrphanRange,
) -> Result<()> {
    let Namespace { db, coll: name } = Namespace::parse(&coll.ns);
    let deletes: Vec<bson::Document> = if pattern.hashed_field().is_none() {
        let fields: Vec<_> = pattern.fields().collect();
        vec![doc! {"q": range_filter(&fields, &orphan.min, &orphan.max), "limit": 0}]
    } else {
        let min = pattern
            .encode_bound(&orphan.min)
            .map_err(super::key_error)?;
        let max = pattern
            .encode_bound(&orphan.max)
            .map_err(super::key_error)?;
        let find = doc! {"find": name, "$db": db};
        let ids: Vec<Bson> = match open_cursor(state, shard, &find).await {
            Ok(c) => c.all().await?,
            Err(e) if e.code().0 == 26 => return Ok(()),
            Err(e) => return Err(e),
        }
        .iter()
        .filter(|d| pattern.extract_key(d).is_ok_and(|k| min <= k && k < max))
        .filter_map(id_of)
        .collect();
        ids.chunks(1_000)
            .map(|c| doc! {"q": {"_id": {"$in": c.to_vec()}}, "limit": 0})
            .collect()
    };
    for d in deletes {
        let cmd = doc! {"delete": name, "deletes": [d], "$db": db};
        let body = bson::RawDocumentBuf::try_from(&cmd)
            .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
        shardgate_shard_client::migration_write(state.shards.as_ref(), target(shard), &body)
            .await?;
    }
    Ok(())
}
