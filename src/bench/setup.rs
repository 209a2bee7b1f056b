//! `--setup`: drop, optionally shard and split (router only), load the
//! documents, index the shard key; and where fresh insert keys start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Bson, Document};
use futures::{StreamExt, TryStreamExt};
use mongodb::{Client, Collection, IndexModel};

use super::window::Progress;
use super::worker::{bench_doc, payload, short_error};
use super::BenchConfig;

/// Documents per `insert_many` while loading.
const LOAD_BATCH: u64 = 1000;
/// Loading batches in flight at once.
const LOAD_CONCURRENCY: usize = 4;

/// Drops and reloads the collection; shards it first when asked and the
/// endpoint is a router. Sharding steps are best effort (noted, not fatal);
/// dropping and loading must succeed.
pub async fn setup(
    client: &Client,
    is_router: bool,
    cfg: &BenchConfig,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let coll = client
        .database(&cfg.db)
        .collection::<Document>(&cfg.collection);
    coll.drop()
        .await
        .map_err(|e| anyhow::anyhow!("setup: drop {}: {}", cfg.ns(), short_error(&e)))?;
    let mut sharded = false;
    if cfg.shard_key {
        if is_router {
            sharded = shard(client, cfg, notes).await;
        } else {
            notes.push("--shard-key ignored: not a router (hello.msg != \"isdbgrid\")".into());
        }
    }
    // The index comes before the documents everywhere: shardCollection
    // builds it (on every chunk owner) on the empty collection, so loading
    // pays for it on every endpoint alike.
    if !sharded {
        let index = IndexModel::builder().keys(doc! {"key": 1}).build();
        if let Err(e) = coll.create_index(index).await {
            notes.push(format!("setup: index {{key: 1}}: {}", short_error(&e)));
        }
    }
    let started = Instant::now();
    load(&coll, cfg.docs, &payload(cfg.payload_bytes)).await?;
    notes.push(format!(
        "setup: dropped {} and loaded {} documents in {:.1} s",
        cfg.ns(),
        cfg.docs,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Inserts `{_id: i, key: i, cat: i % 10, payload}` for `i` in `0..docs`,
/// printing a progress line every few seconds.
async fn load(coll: &Collection<Document>, docs: u64, payload: &str) -> anyhow::Result<()> {
    let loaded = Arc::new(AtomicU64::new(0));
    let shown = loaded.clone();
    let _progress = Progress::start(move |elapsed| {
        format!(
            "bench: loading: {:.0} s, {} of {docs} documents",
            elapsed.as_secs_f64(),
            shown.load(Ordering::Relaxed)
        )
    });
    let batches = (0..docs).step_by(LOAD_BATCH as usize).map(|first| {
        let last = (first + LOAD_BATCH).min(docs);
        let batch: Vec<Document> = (first..last)
            .map(|i| bench_doc(i as i64, true, payload))
            .collect();
        let loaded = &loaded;
        async move {
            coll.insert_many(batch).await?;
            loaded.fetch_add(last - first, Ordering::Relaxed);
            Ok::<(), mongodb::error::Error>(())
        }
    });
    futures::stream::iter(batches)
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map_err(|e| anyhow::anyhow!("setup: loading documents: {}", short_error(&e)))?;
    Ok(())
}

/// `enableSharding`, then `shardCollection` on `{key: 1}` cut into
/// `--splits` chunks at even points of `0..docs`: with `--spread`, zone
/// ranges laid out before `shardCollection` place the chunks round-robin on
/// the shards (this router cannot move chunks); without, `split` commands cut
/// the one chunk on the primary shard. Returns whether the collection is
/// sharded.
async fn shard(client: &Client, cfg: &BenchConfig, notes: &mut Vec<String>) -> bool {
    let admin = client.database("admin");
    let ns = cfg.ns();
    if let Err(e) = admin.run_command(doc! {"enableSharding": &cfg.db}).await {
        notes.push(format!("enableSharding {}: {}", cfg.db, short_error(&e)));
    }
    let points = split_points(cfg);
    if cfg.spread {
        spread(client, &ns, &points, notes).await;
    }
    let sharded = admin
        .run_command(doc! {"shardCollection": &ns, "key": {"key": 1}})
        .await;
    if let Err(e) = sharded {
        notes.push(format!("shardCollection {ns}: {}", short_error(&e)));
        return false;
    }
    if !cfg.spread {
        for middle in &points {
            let split = admin
                .run_command(doc! {"split": &ns, "middle": {"key": middle}})
                .await;
            if let Err(e) = split {
                notes.push(format!("split {ns} at key {middle}: {}", short_error(&e)));
            }
        }
    }
    notes.push(chunk_summary(client, &ns).await);
    true
}

/// The `--splits - 1` inner split points, evenly over `0..docs`.
fn split_points(cfg: &BenchConfig) -> Vec<i64> {
    let splits = u64::from(cfg.splits.max(1));
    (1..splits)
        .map(|j| (j * cfg.docs / splits) as i64)
        .collect()
}

/// Zone `shardgate-bench-<shard>` on every shard, and the key ranges between
/// `points` assigned to them round-robin.
async fn spread(client: &Client, ns: &str, points: &[i64], notes: &mut Vec<String>) {
    let admin = client.database("admin");
    let shards: Vec<String> = match shard_hosts(client).await {
        Ok(s) => s.into_iter().map(|(id, _)| id).collect(),
        Err(e) => {
            notes.push(format!("--spread: listShards: {}", short_error(&e)));
            return;
        }
    };
    let mut bounds = vec![Bson::MinKey];
    bounds.extend(points.iter().map(|p| Bson::Int64(*p)));
    bounds.push(Bson::MaxKey);
    for (i, pair) in bounds.windows(2).enumerate() {
        let Some(shard) = shards.get(i % shards.len().max(1)) else {
            notes.push("--spread: the router has no shards".into());
            return;
        };
        let zone = format!("shardgate-bench-{shard}");
        let steps = [
            doc! {"addShardToZone": shard, "zone": &zone},
            doc! {"updateZoneKeyRange": ns, "min": {"key": pair[0].clone()},
            "max": {"key": pair[1].clone()}, "zone": &zone},
        ];
        for cmd in steps {
            if let Err(e) = admin.run_command(cmd.clone()).await {
                notes.push(format!("--spread: {cmd}: {}", short_error(&e)));
            }
        }
    }
}

/// The shard ids and hosts of the router's shards.
pub async fn shard_hosts(client: &Client) -> mongodb::error::Result<Vec<(String, String)>> {
    let reply = client
        .database("admin")
        .run_command(doc! {"listShards": 1})
        .await?;
    let shards = reply
        .get_array("shards")
        .map(|a| a.to_vec())
        .unwrap_or_default();
    Ok(shards
        .iter()
        .filter_map(Bson::as_document)
        .filter_map(|s| {
            Some((
                s.get_str("_id").ok()?.into(),
                s.get_str("host").ok()?.into(),
            ))
        })
        .collect())
}

/// `sharded NS on {key: 1}: 3 chunk(s) on shard0000 (HOST), …`: where to
/// point a direct comparison.
async fn chunk_summary(client: &Client, ns: &str) -> String {
    let chunks = client
        .database("config")
        .collection::<Document>("chunks")
        .find(doc! {"ns": ns})
        .await;
    let chunks: Vec<Document> = match chunks {
        Ok(cursor) => cursor.try_collect().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let hosts = shard_hosts(client).await.unwrap_or_default();
    let mut owners: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c.get_str("shard").ok())
        .collect();
    owners.sort_unstable();
    owners.dedup();
    let owners: Vec<String> = owners
        .iter()
        .map(|id| match hosts.iter().find(|(i, _)| i == id) {
            Some((_, host)) => format!("{id} ({host})"),
            None => (*id).to_owned(),
        })
        .collect();
    format!(
        "sharded {ns} on {{key: 1}}: {} chunk(s) on {}",
        chunks.len(),
        owners.join(", ")
    )
}

/// Where fresh insert keys start: above `docs` and above every key present.
pub async fn first_fresh_key(
    coll: &Collection<Document>,
    docs: u64,
    notes: &mut Vec<String>,
) -> i64 {
    let top = coll
        .find_one(doc! {})
        .sort(doc! {"key": -1})
        .projection(doc! {"key": 1, "_id": 0})
        .await;
    let floor = docs as i64;
    match top {
        Ok(Some(d)) => match d.get("key") {
            Some(bson::Bson::Int64(k)) => floor.max(k.saturating_add(1)),
            Some(bson::Bson::Int32(k)) => floor.max(i64::from(*k) + 1),
            Some(bson::Bson::Double(k)) => floor.max(*k as i64 + 1),
            _ => floor,
        },
        Ok(None) => floor,
        Err(e) => {
            notes.push(format!(
                "cannot read the largest key ({}); new keys start at {floor}",
                short_error(&e)
            ));
            floor
        }
    }
}
