//! A copy's catch-up against a client writing the same `_id` at the worst
//! moment: between the catch-up's look at the destination and its write.
//! The client's write is a shard-key change moving the document onto the
//! destination (which replaces the destination's stale copy there), the
//! race behind a document lost during a resharding under writes.
//!
//! Two real shard servers; the catch-up goes through real pools wrapped by
//! `Interleave`, a test double that only decides *when* the client's write
//! runs (right before the catch-up's first write to the destination): a
//! timing real clients produce only now and then.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use shardgate_shard_client::{resync, Keep, Pools, Result, ShardClient, Target};
use shardgate_wire::OpMsg;
use support::all_by_id as held;

/// Real pools; before the first migration write (a write command carrying
/// `startTransaction`) to `dest`, runs `client_write` on it.
struct Interleave {
    pools: Pools,
    dest: String,
    client_write: Document,
    fired: AtomicBool,
}

#[async_trait::async_trait]
impl ShardClient for Interleave {
    async fn send(&self, shard: Target<'_>, msg: &OpMsg) -> Result<OpMsg> {
        let body = msg.body();
        let write = ["insert", "update", "delete"]
            .iter()
            .any(|c| body.get(c).ok().flatten().is_some());
        let in_txn = body.get("startTransaction").ok().flatten().is_some();
        if shard.id == self.dest && write && in_txn && !self.fired.swap(true, Ordering::SeqCst) {
            let raw = RawDocumentBuf::try_from(&self.client_write).unwrap();
            let reply = self.pools.command(shard, &raw).await.unwrap();
            assert!(reply.get_array("writeErrors").is_err(), "{reply:?}");
        }
        self.pools.send(shard, msg).await
    }
}

/// The old key is `{k: 1}`: the source owns `k < 100`, the destination
/// `k >= 100`. The resharding copies the source's documents to the
/// destination (`keep`); a copy from a shard that does not own the document
/// under the old key may be replaced (`replaces`).
fn old_owner_is_source(d: &RawDocument) -> bool {
    matches!(d.get_i32("k"), Ok(k) if k < 100)
}

async fn setup(
    dir: &std::path::Path,
) -> (
    Vec<shardgate::shard_process::ShardProcess>,
    mongodb::Collection<Document>,
    mongodb::Collection<Document>,
) {
    let shards = support::start_shards(dir, 2, false).await;
    let source = support::direct_client(&shards[0])
        .await
        .database("r")
        .collection::<Document>("c");
    let dest = support::direct_client(&shards[1])
        .await
        .database("r")
        .collection::<Document>("c");
    (shards, source, dest)
}

async fn run_resync(
    shards: &[shardgate::shard_process::ShardProcess],
    client_write: Document,
    id: i32,
) -> shardgate_shard_client::Result<u64> {
    let (s, d) = (shards[0].address(), shards[1].address());
    let client: Arc<dyn ShardClient> = Arc::new(Interleave {
        pools: Pools::new(Default::default()).unwrap(),
        dest: "dest".into(),
        client_write,
        fired: AtomicBool::new(false),
    });
    let keep = old_owner_is_source;
    let kept = Keep {
        keep: &keep,
        guard: &Document::new(),
        replaces: Some(&keep),
        pins: &["k"],
    };
    let source = Target {
        id: "source",
        host: &s,
    };
    let dest = Target {
        id: "dest",
        host: &d,
    };
    resync(
        &client,
        (source, dest),
        ("r", "c"),
        &[Bson::Int32(id)],
        &kept,
    )
    .await
}

/// The catch-up read the document on the source (old `k`: 5); before it
/// writes its copy, the client moves the document onto the destination
/// (new `k`: 150, which the destination owns), replacing the stale copy
/// there. The copy must not overwrite the moved document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_never_overwrites_a_document_moved_onto_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, source, dest) = setup(dir.path()).await;
    source
        .insert_one(doc! {"_id": 1, "k": 5, "v": "old"})
        .await
        .unwrap();
    dest.insert_one(doc! {"_id": 1, "k": 3, "v": "stale"})
        .await
        .unwrap();
    // The client's move, on the destination: the stale copy out, the
    // document in (as `key_update::move_to` does).
    let moved = doc! {"update": "c", "updates": [{
        "q": {"_id": 1}, "u": {"_id": 1, "k": 150, "v": "moved"}, "upsert": true,
    }], "$db": "r"};
    run_resync(&shards, moved, 1).await.unwrap();
    assert_eq!(
        held(&dest).await,
        vec![doc! {"_id": 1, "k": 150, "v": "moved"}]
    );

    // And when the destination held nothing at the look.
    source
        .insert_one(doc! {"_id": 2, "k": 6, "v": "old"})
        .await
        .unwrap();
    let moved = doc! {"insert": "c", "documents": [{"_id": 2, "k": 160, "v": "moved"}], "$db": "r"};
    run_resync(&shards, moved, 2).await.unwrap();
    let two: Vec<Document> = held(&dest)
        .await
        .into_iter()
        .filter(|d| d.get_i32("_id").ok() == Some(2))
        .collect();
    assert_eq!(two, vec![doc! {"_id": 2, "k": 160, "v": "moved"}]);
}

/// The source no longer has the document (the client moved it away), so
/// the catch-up deletes the destination's stale copy; between its look and
/// its delete, the move lands on the destination. The moved document must
/// stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_delete_never_removes_a_document_moved_there() {
    let dir = tempfile::tempdir().unwrap();
    let (shards, _source, dest) = setup(dir.path()).await;
    dest.insert_one(doc! {"_id": 7, "k": 9, "v": "stale"})
        .await
        .unwrap();
    let moved = doc! {"update": "c", "updates": [{
        "q": {"_id": 7}, "u": {"_id": 7, "k": 170, "v": "moved"}, "upsert": true,
    }], "$db": "r"};
    run_resync(&shards, moved, 7).await.unwrap();
    assert_eq!(
        held(&dest).await,
        vec![doc! {"_id": 7, "k": 170, "v": "moved"}]
    );

    // Without a client write in the way, the stale copy goes.
    dest.insert_one(doc! {"_id": 8, "k": 9, "v": "stale"})
        .await
        .unwrap();
    let unrelated = doc! {"insert": "c", "documents": [{"_id": 99, "k": 500}], "$db": "r"};
    run_resync(&shards, unrelated, 8).await.unwrap();
    let ids: Vec<i32> = held(&dest)
        .await
        .iter()
        .map(|d| d.get_i32("_id").unwrap())
        .collect();
    assert_eq!(ids, vec![7, 99]);
}
