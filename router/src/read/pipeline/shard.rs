//! The merging shard: the database's primary runs a merge part the router
//! does not, fed the shards' partial results inline with `$documents`
//! when they are small, else through a temporary collection
//! (`tmp.shardgate.merge.<id>`, as mongod's own `$out` uses `tmp.agg_out.*`)
//! that is dropped when the cursor ends.

use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocumentBuf};
use futures::future::BoxFuture;

use super::Ctx;
use crate::cursors::{BatchFilter, DocStream, MergeCursor, ShardStream};
use crate::error::{Result, RouterError};
use shardgate_config_store::ShardType;

/// Partial results up to this size (or the merge budget, if smaller) go
/// inline as `$documents`.
const INLINE_BYTES: usize = 8 * 1024 * 1024;
/// Bytes per `insert` into a temporary collection.
const INSERT_BYTES: usize = 4 * 1024 * 1024;

/// The shard that runs merge parts: the database's primary.
pub(super) async fn merging_shard(ctx: &Ctx) -> Result<ShardType> {
    super::primary_of(&ctx.state, &ctx.db).await
}

/// A cursor on one shard as a stream.
pub(super) async fn open_cursor(
    ctx: &Ctx,
    shard: ShardType,
    cmd: &Document,
) -> Result<Box<dyn DocStream>> {
    let body = RawDocumentBuf::try_from(cmd).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let opened = ShardStream::open(ctx.state.shards.clone(), shard, &body, None, Some(1000)).await;
    let (cursor, _) = MergeCursor::from_opened(vec![opened], None, false).await?;
    Ok(Box::new(cursor))
}

/// Runs `stages` on the merging shard over `buffered` and then the rest of
/// `input`.
pub(super) async fn run_on_shard(
    ctx: &Ctx,
    buffered: Vec<RawDocumentBuf>,
    input: Box<dyn DocStream>,
    stages: &[Document],
) -> Result<Box<dyn DocStream>> {
    let shard = merging_shard(ctx).await?;
    run_on(ctx, shard, buffered, input, stages).await
}

/// Runs `stages` on `shard` over `buffered` and then the rest of `input`.
pub(super) async fn run_on(
    ctx: &Ctx,
    shard: ShardType,
    mut buffered: Vec<RawDocumentBuf>,
    mut input: Box<dyn DocStream>,
    stages: &[Document],
) -> Result<Box<dyn DocStream>> {
    let inline_max = INLINE_BYTES.min(ctx.budget());
    let mut bytes: usize = buffered.iter().map(|d| d.as_bytes().len()).sum();
    while bytes <= inline_max && !input.is_exhausted() {
        let batch = input.next_batch(usize::MAX).await?;
        bytes += batch.iter().map(|d| d.as_bytes().len()).sum::<usize>();
        buffered.extend(batch);
    }
    if input.is_exhausted() && bytes <= inline_max {
        input.close().await;
        let mut pipeline = inline(buffered);
        pipeline.extend(stages.iter().cloned());
        let cmd = ctx.command(Bson::Int32(1), pipeline);
        return open_cursor(ctx, shard, &cmd).await;
    }
    let temp = TempCollection::fill(ctx, shard, buffered, input).await?;
    let mut pipeline = temp.read_back();
    pipeline.extend(stages.iter().cloned());
    let cmd = ctx.command(Bson::String(temp.coll.clone()), pipeline);
    let stream = match open_cursor(ctx, temp.shard.clone(), &cmd).await {
        Ok(s) => s,
        Err(e) => {
            temp.drop_it().await;
            return Err(e);
        }
    };
    Ok(Box::new(WithTemp {
        inner: stream,
        temp: Some(temp),
    }))
}

/// `$documents` holding `docs` as they are: each wrapped in `$literal`
/// (values such as `"$x"` would otherwise be read as expressions), then
/// unwrapped.
pub(super) fn inline(docs: Vec<RawDocumentBuf>) -> Vec<Document> {
    let docs: Vec<Bson> = docs
        .into_iter()
        .filter_map(|d| Document::try_from(d).ok())
        .map(|d| Bson::Document(doc! {"d": {"$literal": d}}))
        .collect();
    vec![doc! {"$documents": docs}, doc! {"$replaceWith": "$d"}]
}

/// A temporary collection on one shard holding a stream's documents in
/// order, each wrapped as `{_id: n, d: doc}` so nothing is added to them.
pub(super) struct TempCollection {
    pub shard: ShardType,
    pub db: String,
    pub coll: String,
    client: Arc<dyn shardgate_shard_client::ShardClient>,
}

impl TempCollection {
    /// Writes `first`, then everything left in `input`, into a new
    /// temporary collection of the context's database on `shard`.
    pub(super) async fn fill(
        ctx: &Ctx,
        shard: ShardType,
        first: Vec<RawDocumentBuf>,
        mut input: Box<dyn DocStream>,
    ) -> Result<TempCollection> {
        let temp = TempCollection {
            shard,
            db: ctx.db.clone(),
            coll: format!(
                "tmp.shardgate.merge.{}",
                bson::oid::ObjectId::new().to_hex()
            ),
            client: ctx.state.shards.clone(),
        };
        let mut n: i64 = 0;
        let mut pending = first;
        loop {
            if let Err(e) = temp.insert(&mut n, std::mem::take(&mut pending)).await {
                input.close().await;
                temp.drop_it().await;
                return Err(e);
            }
            if input.is_exhausted() {
                break;
            }
            pending = match input.next_batch(usize::MAX).await {
                Ok(b) => b,
                Err(e) => {
                    input.close().await;
                    temp.drop_it().await;
                    return Err(e);
                }
            };
        }
        input.close().await;
        Ok(temp)
    }

    /// The stages that read the documents back, in order.
    pub(super) fn read_back(&self) -> Vec<Document> {
        vec![doc! {"$sort": {"_id": 1}}, doc! {"$replaceWith": "$d"}]
    }

    async fn insert(&self, n: &mut i64, docs: Vec<RawDocumentBuf>) -> Result<()> {
        let mut batch = bson::RawArrayBuf::new();
        let mut bytes = 0;
        let mut docs = docs.into_iter().peekable();
        while docs.peek().is_some() || bytes > 0 {
            if let Some(d) = docs.next() {
                bytes += d.as_bytes().len() + 16;
                let mut w = RawDocumentBuf::new();
                w.append(bson::cstr!("_id"), *n);
                w.append(bson::cstr!("d"), d);
                batch.push(w);
                *n += 1;
                if bytes < INSERT_BYTES && docs.peek().is_some() {
                    continue;
                }
            }
            let mut cmd = RawDocumentBuf::new();
            cmd.append(bson::cstr!("insert"), self.coll.as_str());
            cmd.append(bson::cstr!("documents"), std::mem::take(&mut batch));
            cmd.append(bson::cstr!("$db"), self.db.as_str());
            let reply = self
                .client
                .command(crate::shards::target(&self.shard), &cmd)
                .await?;
            if !shardgate_shard_client::reply_ok(&reply)
                || reply.get("writeErrors").ok().flatten().is_some()
            {
                return Err(RouterError::from_shard_reply(&self.shard.id, &reply));
            }
            bytes = 0;
        }
        Ok(())
    }

    /// Drops the collection (errors ignored: it may already be gone).
    pub(super) async fn drop_it(&self) {
        let cmd = doc! {"drop": self.coll.as_str(), "$db": self.db.as_str()};
        if let Ok(cmd) = RawDocumentBuf::try_from(&cmd) {
            let _ = self
                .client
                .command(crate::shards::target(&self.shard), &cmd)
                .await;
        }
    }
}

/// A stream reading through a temporary collection, dropped at its end.
struct WithTemp {
    inner: Box<dyn DocStream>,
    temp: Option<TempCollection>,
}

impl DocStream for WithTemp {
    fn next_batch(&mut self, max_docs: usize) -> BoxFuture<'_, Result<Vec<RawDocumentBuf>>> {
        Box::pin(async move {
            let batch = self.inner.next_batch(max_docs).await;
            if batch.is_err() || self.inner.is_exhausted() {
                if let Some(temp) = self.temp.take() {
                    temp.drop_it().await;
                }
            }
            batch
        })
    }
    fn is_exhausted(&self) -> bool {
        self.inner.is_exhausted()
    }
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.close().await;
            if let Some(temp) = self.temp.take() {
                temp.drop_it().await;
            }
        })
    }
}

/// Appends the `$sortKey` of `sort` to every document of a shard's batch,
/// after the stream's own filter.
pub(super) struct SortKeys {
    pub sort: Document,
    pub inner: Option<Arc<dyn BatchFilter>>,
}

impl BatchFilter for SortKeys {
    fn apply<'a>(
        &'a self,
        shard: &'a ShardType,
        docs: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<Vec<RawDocumentBuf>>> {
        Box::pin(async move {
            let docs = match &self.inner {
                Some(f) => f.apply(shard, docs).await?,
                None => docs,
            };
            docs.into_iter()
                .map(|raw| {
                    let doc = Document::try_from(raw.as_ref())
                        .map_err(|e| RouterError::bad_value(e.to_string()))?;
                    let key =
                        shardgate_query::sort_key(&doc, &self.sort).map_err(super::query_error)?;
                    let mut raw = raw;
                    raw.append(
                        bson::cstr!("$sortKey"),
                        bson::RawBson::try_from(Bson::Array(key))
                            .map_err(|e| RouterError::bad_value(e.to_string()))?,
                    );
                    Ok(raw)
                })
                .collect()
        })
    }
}
