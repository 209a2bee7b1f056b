//! `find` on a sharded collection: the targeted shards' cursors opened at
//! once, merged on `$sortKey` behind one router cursor (`getMore` and
//! `killCursors` on it are in `get_more`).

use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Document};

use super::orphans::{exclusions, HashedOrphans, StreamFilter};
use super::{cursor_reply, doc_field, has_orphans, int_field, rewrite, target};
use crate::catalog_cache::routing::CollectionRouting;
use crate::cursors::merge::{SortSpec, SORT_KEY_FIELD};
use crate::cursors::{
    kill, BatchFilter, CursorKind, MergeCursor, Opened, RouterCursor, ShardStream,
};
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
    let args = FindArgs::parse(body)?;
    let add = args.shard_fields(body)?;
    let collator = match &args.spec {
        Some(_) => {
            let collator = crate::collation::Collator::of_command(body);
            crate::collation::for_merge(state, collator, &shards).await
        }
        None => None,
    };
    let opened = open_streams(state, body, routing, shards, &filter, add, &args).await;
    let spec = args.spec.clone().map(|s| s.collated(collator));
    let (mut cursor, partial) = MergeCursor::from_opened(opened, spec, args.allow_partial).await?;
    cursor.skip = args.skip;
    cursor.remaining = (args.limit > 0).then_some(args.limit);
    let first = match args.batch_size {
        Some(0) => 0,
        n => n.unwrap_or(DEFAULT_FIRST_BATCH).max(1) as usize,
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
    let id = if exhausted || args.single_batch {
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

/// Whether `filter` has a `$near` or `$nearSphere` (at the top level or
/// under `$and`): its results come in distance order.
fn has_near(filter: &Document) -> bool {
    filter.iter().any(|(k, v)| match (k.as_str(), v) {
        ("$and", bson::Bson::Array(items)) => {
            items.iter().any(|i| i.as_document().is_some_and(has_near))
        }
        (_, bson::Bson::Document(d)) => d.contains_key("$near") || d.contains_key("$nearSphere"),
        _ => false,
    })
}

/// mongod's error for a sort it cannot read (only a `$meta` other than
/// `textScore` is readable by a server and not merged by the router).
fn sort_error(sort: &Document) -> RouterError {
    for (k, v) in sort {
        match v {
            bson::Bson::Int32(_) | bson::Bson::Int64(_) | bson::Bson::Double(_) => {
                let n = v
                    .as_f64()
                    .or(v.as_i64().map(|n| n as f64))
                    .or(v.as_i32().map(f64::from));
                if n != Some(1.0) && n != Some(-1.0) {
                    return RouterError::command(
                        15975,
                        "Location15975",
                        "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
                    );
                }
            }
            bson::Bson::Document(_) => {}
            _ => {
                return RouterError::command(
                    15974,
                    "Location15974",
                    format!("Illegal key in $sort specification: {k}: {v}"),
                )
            }
        }
    }
    RouterError::bad_value(format!("cannot merge the sort {sort} across shards"))
}

/// Whether documents under `projection` still hold every sort field's
/// value as it was: a projection of plain 1/0 flags that includes each
/// sort field (or a parent of it), or excludes none of them, their
/// parents or their children. Anything else (`$slice`, `$elemMatch`,
/// `$meta`, expressions, positional paths) keeps `$sortKey`.
fn keeps_sort_values(projection: &Document, sort: &Document) -> bool {
    let flag = |v: &bson::Bson| match v {
        bson::Bson::Boolean(b) => Some(*b),
        bson::Bson::Int32(n) => Some(*n != 0),
        bson::Bson::Int64(n) => Some(*n != 0),
        bson::Bson::Double(n) => Some(*n != 0.0),
        _ => None,
    };
    let mut flags = Vec::with_capacity(projection.len());
    for (path, v) in projection {
        match flag(v) {
            Some(f) if !path.contains('$') => flags.push((path.as_str(), f)),
            _ => return false,
        }
    }
    let within = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|r| r.starts_with('.'))
    };
    let inclusion = flags.iter().any(|(p, f)| *f && *p != "_id");
    sort.keys().all(|field| {
        if inclusion {
            let id_kept = !flags.contains(&("_id", false));
            (within(field, "_id") && id_kept) || flags.iter().any(|(p, f)| *f && within(field, p))
        } else {
            flags
                .iter()
                .all(|(p, _)| !within(field, p) && !within(p, field))
        }
    })
}

/// The options of a `find` the router merges.
struct FindArgs {
    /// The merge order, when sorted.
    spec: Option<SortSpec>,
    skip: u64,
    /// The absolute limit (0: none).
    limit: u64,
    single_batch: bool,
    batch_size: Option<i64>,
    allow_partial: bool,
    /// What the shards put in `$sortKey`: `sortKey`, or for a `$near`
    /// query without a sort, `geoNearDistance` (merged ascending, as
    /// mongos merges it).
    meta: &'static str,
    /// The router keys documents by their own sort fields, and the shards
    /// compute no `$sortKey`: a plain `{field: ±1}` sort under the simple
    /// collation, of documents whose projection keeps the sorted values
    /// ([`keeps_sort_values`]). (mongos always asks for
    /// `$sortKey`; computing it costs a shard more than reading the
    /// document, and some shards do not return it.)
    own_keys: bool,
}

impl FindArgs {
    fn parse(body: &bson::RawDocument) -> Result<FindArgs> {
        let (spec, meta) = match doc_field(body, "sort")?.filter(|s| !s.is_empty()) {
            Some(s) => (
                Some(SortSpec::parse_shard_keyed(&s).ok_or_else(|| sort_error(&s))?),
                "sortKey",
            ),
            None if doc_field(body, "filter")?.is_some_and(|f| has_near(&f)) => {
                (SortSpec::parse(&doc! {"distance": 1}), "geoNearDistance")
            }
            None => (None, "sortKey"),
        };
        let raw_limit = int_field(body, "limit")?.unwrap_or(0);
        let sort = doc_field(body, "sort")?.unwrap_or_default();
        let own_keys = meta == "sortKey"
            && spec.as_ref().is_some_and(SortSpec::ownable)
            && sort.values().all(|v| v.as_document().is_none())
            && doc_field(body, "projection")?.is_none_or(|p| keeps_sort_values(&p, &sort))
            && !body.get_bool("returnKey").unwrap_or(false)
            && crate::session::simple_collation(body);
        let spec = if own_keys {
            spec.map(SortSpec::by_own_fields)
        } else {
            spec
        };
        Ok(FindArgs {
            spec,
            skip: int_field(body, "skip")?.unwrap_or(0).max(0) as u64,
            limit: raw_limit.unsigned_abs(),
            single_batch: body.get_bool("singleBatch").unwrap_or(false) || raw_limit < 0,
            batch_size: int_field(body, "batchSize")?,
            allow_partial: body.get_bool("allowPartialResults").unwrap_or(false),
            meta,
            own_keys,
        })
    }

    /// What every shard's `find` gets instead of the client's: `limit +
    /// skip`, the projection with `$sortKey` when sorted, the first batch.
    fn shard_fields(&self, body: &bson::RawDocument) -> Result<Document> {
        let mut add = Document::new();
        if self.limit > 0 {
            add.insert("limit", (self.limit + self.skip) as i64);
        }
        let mut projection = doc_field(body, "projection")?;
        if self.spec.is_some() && !self.own_keys {
            projection
                .get_or_insert_with(Document::new)
                .insert(SORT_KEY_FIELD, doc! {"$meta": self.meta});
        }
        if let Some(p) = projection {
            add.insert("projection", p);
        }
        add.insert(
            "batchSize",
            self.batch_size.unwrap_or(DEFAULT_FIRST_BATCH).max(1),
        );
        Ok(add)
    }
}

/// The shard cursors of a merged `find`, opened at once.
async fn open_streams(
    state: &RouterState,
    body: &bson::RawDocument,
    routing: &CollectionRouting,
    shards: Vec<shardgate_config_store::ShardType>,
    filter: &Document,
    add: Document,
    args: &FindArgs,
) -> Vec<Result<Opened>> {
    let simple = crate::session::simple_collation(body);
    let (adds, filters): (Vec<Document>, Vec<_>) = exclusions(state, routing, &shards, simple)
        .await
        .into_iter()
        .map(|exclusion| {
            let mut add = add.clone();
            add.insert("filter", exclusion.apply(filter));
            let filter = exclusion
                .router()
                .map(|orphans| filter_stream(state, orphans, &mut add));
            (add, filter)
        })
        .unzip();
    // As mongos: the client's batch size, else the shard's (16 MB).
    let getmore_batch = args.batch_size.map(|n| n.max(1));
    let opens =
        shards
            .into_iter()
            .zip(adds)
            .zip(filters)
            .map(|((shard, add), filter)| async move {
                let dropped = ["skip", "limit", "singleBatch", "allowPartialResults"];
                let cmd = rewrite(body, &dropped, add)?;
                ShardStream::open(state.shards.clone(), shard, &cmd, filter, getmore_batch).await
            });
    futures::future::join_all(opens).await
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

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::keeps_sort_values;

    #[test]
    fn projections_that_keep_the_sorted_values() {
        let sort = doc! {"a.b": 1, "_id": -1};
        for (projection, keeps) in [
            (doc! {"a": 1}, true),
            (doc! {"a.b": 1, "x": 1}, true),
            (doc! {"a.b.c": 1}, false),
            (doc! {"a": 1, "_id": 0}, false),
            (doc! {"x": 0}, true),
            (doc! {"a": 0}, false),
            (doc! {"a.b.c": 0}, false),
            (doc! {"_id": 0}, false),
            (doc! {"a": {"$slice": 2}}, false),
            (doc! {"a.$": 1}, false),
            (doc! {"a": true, "y": 1.0}, true),
        ] {
            assert_eq!(keeps_sort_values(&projection, &sort), keeps, "{projection}");
        }
        assert!(keeps_sort_values(&doc! {"_id": 0}, &doc! {"v": 1}));
    }
}
