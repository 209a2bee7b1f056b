//! `find` on a sharded collection: the targeted shards' cursors opened at
//! once, merged on `$sortKey` behind one router cursor (`getMore` and
//! `killCursors` on it are in `get_more`).

use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Document};

use super::orphans::{exclusions, HashedOrphans, StreamFilter};
use super::{cursor_reply, doc_field, has_orphans, int_field, rewrite, target};
use crate::catalog_cache::routing::CollectionRouting;
use crate::cursors::merge::{KWayMerge, SortSpec, SORT_KEY_FIELD};
use crate::cursors::{kill, BatchFilter, CursorKind, MergeCursor, RouterCursor, ShardStream};
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request, Session};
use crate::state::RouterState;

/// mongos's default first batch.
const DEFAULT_FIRST_BATCH: i64 = 101;

/// `find` on a sharded collection.
pub(crate) async fn find(
    state: &RouterState,
    session: &Session,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Reply> {
    state.cursors.check_limit(
        session.connection_id,
        state.config.limits.max_cursors_per_connection,
    )?;
    let body = req.body;
    let filter = doc_field(body, "filter")?.unwrap_or_default();
    let shards = target(state, routing, &filter, req.body)?;
    if shards.len() == 1 && !has_orphans(routing, &shards) {
        return pass_through(state, session, req, &shards[0], ns).await;
    }
    let sort = doc_field(body, "sort")?.filter(|s| !s.is_empty());
    let spec = match &sort {
        Some(s) => Some(SortSpec::parse(s).ok_or_else(|| {
            RouterError::command(
                238,
                "NotImplemented",
                format!("cannot merge sort {s} across shards"),
            )
        })?),
        None => None,
    };
    let skip = int_field(body, "skip")?.unwrap_or(0).max(0) as u64;
    let raw_limit = int_field(body, "limit")?.unwrap_or(0);
    let single_batch = body.get_bool("singleBatch").unwrap_or(false) || raw_limit < 0;
    let limit = raw_limit.unsigned_abs();
    let batch_size = int_field(body, "batchSize")?;
    let allow_partial = body.get_bool("allowPartialResults").unwrap_or(false);
    let mut add = Document::new();
    if limit > 0 {
        add.insert("limit", (limit + skip) as i64);
    }
    let mut projection = doc_field(body, "projection")?;
    if spec.is_some() {
        projection
            .get_or_insert_with(Document::new)
            .insert(SORT_KEY_FIELD, doc! {"$meta": "sortKey"});
    }
    if let Some(p) = projection {
        add.insert("projection", p);
    }
    let shard_batch = batch_size.unwrap_or(DEFAULT_FIRST_BATCH).max(1);
    add.insert("batchSize", shard_batch);
    let simple = crate::session::simple_collation(body);
    let (adds, filters): (Vec<Document>, Vec<_>) = exclusions(state, routing, &shards, simple)
        .await
        .into_iter()
        .map(|exclusion| {
            let mut add = add.clone();
            add.insert("filter", exclusion.apply(&filter));
            let filter = exclusion
                .router()
                .map(|orphans| filter_stream(state, orphans, &mut add));
            (add, filter)
        })
        .unzip();
    let getmore_batch = batch_size.unwrap_or(1000).max(1);
    let opens =
        shards
            .into_iter()
            .zip(adds)
            .zip(filters)
            .map(|((shard, add), filter)| async move {
                let cmd = rewrite(
                    body,
                    &["skip", "limit", "singleBatch", "allowPartialResults"],
                    add,
                )?;
                ShardStream::open(state.shards.clone(), shard, &cmd, filter, getmore_batch).await
            });
    let mut streams = Vec::new();
    let mut merge_input = Vec::new();
    let mut failure = None;
    let mut partial = false;
    for opened in futures::future::join_all(opens).await {
        match opened {
            Ok((stream, docs, done)) => {
                streams.push(stream);
                merge_input.push((docs, done));
            }
            Err(e) if allow_partial && e.is_retryable() => partial = true,
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        for mut stream in streams {
            stream.close().await;
        }
        return Err(e);
    }
    let mut merge = KWayMerge::new(streams.len(), spec);
    for (i, (docs, done)) in merge_input.into_iter().enumerate() {
        merge.push(i, docs, done);
    }
    let mut cursor = MergeCursor {
        streams,
        merge,
        skip,
        remaining: (limit > 0).then_some(limit),
        strip: sort.is_some(),
        pending: None,
    };
    let first = batch_size.unwrap_or(DEFAULT_FIRST_BATCH).max(0) as usize;
    let first = if batch_size == Some(0) {
        0
    } else {
        first.max(1)
    };
    let batch = cursor.next_batch(first).await?;
    let extra = if partial {
        doc! {"partialResultsReturned": true}
    } else {
        Document::new()
    };
    let mut cursor_kind = RouterCursor {
        kind: CursorKind::Merge(Box::new(cursor)),
        ns: ns.to_owned(),
        connection: session.connection_id,
        last_used: Instant::now(),
    };
    let exhausted = matches!(&cursor_kind.kind, CursorKind::Merge(m) if m.is_exhausted());
    let id = if exhausted || single_batch {
        kill(&mut cursor_kind).await;
        0
    } else {
        state.cursors.insert(None, cursor_kind)
    };
    Ok(Reply::Body(cursor_reply(
        id,
        ns,
        "firstBatch",
        &batch,
        extra,
    )))
}

/// The router's part for a shard holding hashed orphans, and the change to
/// the shard's command (`add`) it needs: no limit (it would count orphans
/// the router drops) and a projection that keeps the shard key.
fn filter_stream(
    state: &RouterState,
    orphans: Arc<HashedOrphans>,
    add: &mut Document,
) -> Arc<dyn BatchFilter> {
    add.remove("limit");
    let (projection, reshape) = orphans.reshape_projection(add.get_document("projection").ok());
    match projection {
        Some(p) => add.insert("projection", p),
        None => add.remove("projection"),
    };
    Arc::new(StreamFilter {
        orphans,
        reshape,
        rest: Vec::new(),
        db: String::new(),
        options: Document::new(),
        client: state.shards.clone(),
    })
}

/// A query that reaches one shard goes there unchanged; its cursor is
/// recorded so `getMore` finds the shard.
async fn pass_through(
    state: &RouterState,
    session: &Session,
    req: &Request<'_>,
    shard: &shardgate_config_store::ShardType,
    ns: &str,
) -> Result<Reply> {
    let reply = crate::shards::to_shard(state, shard, req.msg).await?;
    let id = reply
        .body()
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_i64("id").ok())
        .unwrap_or(0);
    if id != 0 {
        state.cursors.insert(
            Some(id),
            RouterCursor {
                kind: CursorKind::PassThrough(shard.clone()),
                ns: ns.to_owned(),
                connection: session.connection_id,
                last_used: Instant::now(),
            },
        );
    }
    Ok(Reply::Msg(reply))
}
