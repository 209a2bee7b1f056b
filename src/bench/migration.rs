//! `--scenario migration`: one `moveChunk` through a router while the
//! clients write to the chunk's range.
//!
//! The chunk moved is the collection's first (the one holding `MinKey`;
//! with `--splits 1`, the whole collection, so every insert and update the
//! clients run lands in it), to `--to-shard` or else the first other shard.
//! The clients run the mix for `--warmup-secs` before the move, unrecorded;
//! the window then opens as `moveChunk` is sent and closes when it answers,
//! so the report's rows are the writes that started during the migration —
//! their p99 and maximum show the critical section's pause as clients see
//! it. The chunk's size comes from the router's `dataSize` before the move;
//! MB/s is that size over the command's wall time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Client;
use tokio::time::Instant;

use super::report::{EndpointReport, MigrationReport};
use super::setup::{first_fresh_key, shard_hosts};
use super::window::Window;
use super::worker::{payload, run_clients, short_error, Workload};
use super::BenchConfig;

/// A chunk as `config.chunks` lists it.
struct Chunk {
    min: Document,
    max: Document,
    shard: String,
}

/// Runs the scenario on a router and fills `report` (rows and migration).
pub async fn measure(
    client: &Client,
    is_router: bool,
    config: &BenchConfig,
    label: &str,
    report: &mut EndpointReport,
) -> Result<(), String> {
    if !is_router {
        return Err("the migration scenario moves a chunk: --uri must be a router".into());
    }
    let ns = config.ns();
    let chunk = first_chunk(client, &ns).await?;
    let to = destination(client, config, &chunk.shard).await?;
    let (chunk_docs, chunk_bytes) = chunk_size(client, config, &chunk).await?;
    let coll = client
        .database(&config.db)
        .collection::<Document>(&config.collection);
    let first_key = first_fresh_key(&coll, config.docs, &mut report.notes).await;
    let workload = Arc::new(Workload {
        coll,
        mix: config.mix.clone(),
        docs: config.docs,
        batch_size: config.batch_size,
        payload: payload(config.payload_bytes),
        next_key: AtomicI64::new(first_key),
        inserted: AtomicU64::new(0),
    });
    let window = Arc::new(Window::open_ended());
    eprintln!(
        "bench: {label}: {} clients writing ({}), {:.1} s before the move",
        config.clients,
        config.mix,
        config.warmup.as_secs_f64()
    );
    let writers = tokio::spawn({
        let (w, win, label) = (workload.clone(), window.clone(), label.to_owned());
        let clients = config.clients;
        async move { run_clients(w, win, clients, &label, super::seed()).await }
    });
    tokio::time::sleep(config.warmup).await;
    eprintln!(
        "bench: {label}: moving {chunk_docs} documents ({:.1} MB) from {} to {to}",
        chunk_bytes as f64 / 1e6,
        chunk.shard
    );
    window.open();
    let started = Instant::now();
    let moved = client
        .database("admin")
        .run_command(doc! {"moveChunk": &ns, "bounds": [&chunk.min, &chunk.max], "to": &to})
        .await;
    let took = started.elapsed();
    window.close();
    let stats = writers
        .await
        .map_err(|e| format!("writer clients failed: {e}"))?;
    moved.map_err(|e| format!("moveChunk {ns} to {to}: {}", short_error(&e)))?;
    if let Some(note) = phases_note(client, &ns).await {
        report.notes.push(note);
    }
    report.fill(&config.mix, &stats, took);
    let secs = took.as_secs_f64();
    report.migration = Some(MigrationReport {
        from: chunk.shard,
        to,
        chunk_docs,
        chunk_bytes,
        secs,
        mb_per_sec: if secs > 0.0 {
            chunk_bytes as f64 / 1e6 / secs
        } else {
            0.0
        },
        inserted: workload.inserted.load(Ordering::SeqCst),
    });
    Ok(())
}

/// The collection's first chunk (the one holding `MinKey`).
async fn first_chunk(client: &Client, ns: &str) -> Result<Chunk, String> {
    let read = |e: mongodb::error::Error| format!("reading config.chunks: {}", short_error(&e));
    let cursor = client
        .database("config")
        .collection::<Document>("chunks")
        .find(doc! {"ns": ns})
        .sort(doc! {"min": 1})
        .limit(1)
        .await
        .map_err(read)?;
    let chunks: Vec<Document> = cursor.try_collect().await.map_err(read)?;
    let first = chunks.into_iter().next().ok_or_else(|| {
        format!("{ns} has no chunks: shard it first (--setup --shard-key, or by hand)")
    })?;
    let part = |f: &str| first.get_document(f).cloned().ok();
    match (part("min"), part("max"), first.get_str("shard")) {
        (Some(min), Some(max), Ok(shard)) => Ok(Chunk {
            min,
            max,
            shard: shard.to_owned(),
        }),
        _ => Err(format!("config.chunks: unexpected chunk {first}")),
    }
}

/// The balancer's account of the move: its `moveChunk.commit` changelog
/// entry's phase times and critical section (`None` if the router has none).
async fn phases_note(client: &Client, ns: &str) -> Option<String> {
    let entry = client
        .database("config")
        .collection::<Document>("changelog")
        .find_one(doc! {"what": "moveChunk.commit", "ns": ns})
        .sort(doc! {"time": -1})
        .await
        .ok()??;
    let details = entry.get_document("details").ok()?;
    let field = |f: &str| details.get(f).map_or("-".to_owned(), Bson::to_string);
    Some(format!(
        "balancer: phases (ms) {}; critical section {} ms; {} documents caught up",
        field("phaseMillis"),
        field("criticalSectionMillis"),
        field("caughtUp")
    ))
}

/// `--to-shard`, else the first shard that does not own the chunk.
async fn destination(client: &Client, config: &BenchConfig, from: &str) -> Result<String, String> {
    if let Some(to) = &config.to_shard {
        return Ok(to.clone());
    }
    let shards = shard_hosts(client)
        .await
        .map_err(|e| format!("listShards: {}", short_error(&e)))?;
    shards
        .into_iter()
        .map(|(id, _)| id)
        .find(|id| id != from)
        .ok_or_else(|| "the migration scenario needs at least two shards".to_owned())
}

/// Documents and bytes of the chunk, from the router's `dataSize`.
async fn chunk_size(
    client: &Client,
    config: &BenchConfig,
    chunk: &Chunk,
) -> Result<(u64, u64), String> {
    let reply = client
        .database(&config.db)
        .run_command(doc! {
            "dataSize": config.ns(),
            "keyPattern": {"key": 1},
            "min": &chunk.min,
            "max": &chunk.max,
        })
        .await
        .map_err(|e| format!("dataSize of the chunk: {}", short_error(&e)))?;
    let number = |f: &str| match reply.get(f) {
        Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
        Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
        Some(Bson::Double(n)) if *n >= 0.0 => Some(*n as u64),
        _ => None,
    };
    match (number("numObjects"), number("size")) {
        (Some(docs), Some(bytes)) => Ok((docs, bytes)),
        _ => Err(format!("dataSize of the chunk: unexpected reply {reply}")),
    }
}
