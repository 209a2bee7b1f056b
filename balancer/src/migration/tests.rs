//! Migration abort paths against a fake `ShardClient` (a test double for
//! faults real shards cannot be made to produce on cue): a copy that fails
//! on the destination aborts and deletes what reached it; a destination
//! that is down during the abort leaves an `aborted` record that the next
//! lock holder's recovery finishes; a change stream lost during catch-up,
//! a failure inside the critical section and a commit that loses to a
//! chunk split each abort, delete the destination's copies and leave the
//! chunk where it was.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bson::{doc, Bson, Document};
use shardgate_config_store::catalog::{new_chunk, CollectionVersion};
use shardgate_config_store::model::{CollectionType, MigrationState};
use shardgate_config_store::{Catalog, EmbeddedStore, ShardType};
use shardgate_shard_client::{PoolConfig, Result as ShardResult, ShardClient, ShardError, Target};
use shardgate_wire::OpMsg;

use crate::context::{Balancer, BalancerConfig};

/// Fake shards: `s0` holds `x` 0..100; `s1` is the destination.
#[derive(Default)]
struct FakeShards {
    /// Commands received: (shard, name, body).
    calls: Mutex<Vec<(String, String, Document)>>,
    /// `s1` refuses inserts.
    refuse_inserts: AtomicBool,
    /// `s1` cannot be reached.
    s1_down: AtomicBool,
    /// `s1` goes down at its first insert.
    down_at_insert: AtomicBool,
    /// The catalog, for faults that change it or look at it mid-migration.
    catalog: OnceLock<Catalog>,
    /// `getMore`s on the source's change stream so far.
    get_mores: AtomicUsize,
    /// The change stream fails at this `getMore` (1-based; 0: never).
    fail_get_more_at: AtomicUsize,
    /// The chunk `[50, MaxKey)` is split at 75 during this `getMore`.
    split_at_get_more: AtomicUsize,
    /// The migration record's state at the `getMore` that failed or split.
    state_at_fault: Mutex<Option<MigrationState>>,
}

impl FakeShards {
    fn calls(&self, shard: &str, name: &str) -> Vec<Document> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, n, _)| s == shard && n == name)
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

impl FakeShards {
    /// The fault planned for this change-stream `getMore`, if any: an error
    /// reply, or a split of the migrating chunk (then `None`, and the
    /// `getMore` answers as usual).
    async fn stream_fault(&self) -> Option<Document> {
        let n = self.get_mores.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = self.fail_get_more_at.load(Ordering::SeqCst) == n;
        let split = self.split_at_get_more.load(Ordering::SeqCst) == n;
        if !fail && !split {
            return None;
        }
        let catalog = self.catalog.get().unwrap();
        let record = catalog.migrations("db.c").await.unwrap();
        *self.state_at_fault.lock().unwrap() = record.first().map(|m| m.state);
        if split {
            let now = bson::Timestamp {
                time: 2,
                increment: 1,
            };
            catalog
                .split_at("db.c", &doc! {"x": 75}, now)
                .await
                .unwrap();
            return None;
        }
        Some(doc! {
            "ok": 0.0, "code": 286, "codeName": "ChangeStreamHistoryLost",
            "errmsg": "resume point lost (test double)",
        })
    }
}

#[async_trait::async_trait]
impl ShardClient for FakeShards {
    async fn send(&self, shard: Target<'_>, msg: &OpMsg) -> ShardResult<OpMsg> {
        let body = Document::try_from(msg.body()).unwrap();
        let name = body.keys().next().cloned().unwrap_or_default();
        self.calls
            .lock()
            .unwrap()
            .push((shard.id.to_owned(), name.clone(), body.clone()));
        if shard.id == "s1" && name == "insert" && self.down_at_insert.load(Ordering::SeqCst) {
            self.s1_down.store(true, Ordering::SeqCst);
        }
        if shard.id == "s1" && self.s1_down.load(Ordering::SeqCst) {
            return Err(ShardError::Unreachable {
                shard: "s1".into(),
                host: shard.host.into(),
                reason: "connection refused (test double)".into(),
            });
        }
        let cursor = |id: i64, docs: Vec<Document>| {
            doc! {"cursor": {"id": id, "ns": "db.c", "firstBatch": docs}, "ok": 1.0}
        };
        if name == "getMore" {
            if let Some(reply) = self.stream_fault().await {
                return Ok(OpMsg::from_body(reply.to_vec().unwrap()));
            }
        }
        let reply = match name.as_str() {
            "listIndexes" => cursor(0, vec![doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}]),
            "aggregate" => cursor(77, Vec::new()), // the change stream
            "getMore" => doc! {"cursor": {"id": 77i64, "ns": "db.c", "nextBatch": []}, "ok": 1.0},
            "find" if shard.id == "s0" => {
                cursor(0, (0..100).map(|x| doc! {"_id": x, "x": x}).collect())
            }
            "find" => cursor(0, Vec::new()),
            "insert" if self.refuse_inserts.load(Ordering::SeqCst) => doc! {
                "n": 0,
                "writeErrors": [{"index": 0, "code": 10334, "errmsg": "disk full (test double)"}],
                "ok": 1.0,
            },
            "insert" => {
                doc! {"n": body.get_array("documents").map_or(0, |d| d.len() as i32), "ok": 1.0}
            }
            "delete" => doc! {"n": 0, "ok": 1.0},
            _ => doc! {"ok": 1.0},
        };
        Ok(OpMsg::from_body(reply.to_vec().unwrap()))
    }
}

/// A catalog with `db.c` on `{x: 1}`: `[MinKey, 50)` and `[50, MaxKey)`
/// on `s0`, and the balancer over `shards`.
async fn setup(shards: Arc<FakeShards>) -> (Arc<Balancer>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::new(Arc::new(EmbeddedStore::open(dir.path()).unwrap()));
    for id in ["s0", "s1"] {
        catalog
            .add_shard(ShardType::new(id, format!("{id}.invalid:1")))
            .await
            .unwrap();
    }
    let coll = CollectionType {
        no_balance: true,
        ..CollectionType::new(
            "db.c",
            doc! {"x": 1},
            false,
            bson::Timestamp {
                time: 1,
                increment: 1,
            },
        )
    };
    let now = bson::Timestamp {
        time: 1,
        increment: 1,
    };
    let v = |minor| CollectionVersion { major: 1, minor };
    let chunks = [
        new_chunk(
            &coll,
            doc! {"x": Bson::MinKey},
            doc! {"x": 50},
            "s0",
            v(0),
            now,
        ),
        new_chunk(
            &coll,
            doc! {"x": 50},
            doc! {"x": Bson::MaxKey},
            "s0",
            v(1),
            now,
        ),
    ];
    assert!(catalog
        .create_sharded_collection(&coll, &chunks)
        .await
        .unwrap());
    let _ = shards.catalog.set(catalog.clone());
    let config = BalancerConfig {
        id: "test-balancer".into(),
        rounds: false,
        balancer_interval_secs: 3600,
        orphan_cleanup_delay_secs: 0,
        enable_test_commands: false,
        pool: PoolConfig::default(),
    };
    (Arc::new(Balancer::new(config, catalog, shards)), dir)
}

fn range_deletes(shards: &FakeShards, shard: &str) -> usize {
    shards
        .calls(shard, "delete")
        .iter()
        .filter(|b| {
            let q = b.get_array("deletes").unwrap()[0]
                .as_document()
                .unwrap()
                .get_document("q")
                .unwrap()
                .clone();
            q.to_string().contains("50")
        })
        .count()
}

async fn owners(state: &Balancer) -> Vec<String> {
    state
        .catalog
        .chunks("db.c")
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c.shard)
        .collect()
}

#[tokio::test]
async fn a_copy_that_fails_on_the_destination_aborts_and_cleans_up() {
    let shards = Arc::new(FakeShards::default());
    shards.refuse_inserts.store(true, Ordering::SeqCst);
    let (state, _dir) = setup(shards.clone()).await;
    let guard = super::take_lock(&state, "test", std::time::Duration::ZERO)
        .await
        .unwrap();
    let (min, max) = (doc! {"x": 50}, doc! {"x": Bson::MaxKey});
    let e = super::move_chunk(&state, &guard, "db.c", &min, &max, "s1", true)
        .await
        .unwrap_err();
    guard.release().await;
    assert!(e.to_string().contains("disk full"), "{e}");
    assert_eq!(
        owners(&state).await,
        ["s0", "s0"],
        "the chunk stays on the source"
    );
    assert!(
        state.catalog.migrations("db.c").await.unwrap().is_empty(),
        "no record left"
    );
    assert!(
        state
            .catalog
            .orphan_ranges("db.c")
            .await
            .unwrap()
            .is_empty(),
        "no orphan range left"
    );
    // The destination's copies were deleted (once before the copy, once in
    // the abort); the source was never touched.
    assert_eq!(range_deletes(&shards, "s1"), 2);
    assert_eq!(range_deletes(&shards, "s0"), 0);
    let log = state.catalog.changelog().await.unwrap();
    assert!(log
        .iter()
        .any(|e| e.what == "moveChunk.error" && e.details.get_bool("aborted").ok() == Some(true)));
}

#[tokio::test]
async fn a_destination_down_during_the_abort_is_recovered_by_the_next_lock_holder() {
    let shards = Arc::new(FakeShards::default());
    shards.refuse_inserts.store(true, Ordering::SeqCst);
    let (state, _dir) = setup(shards.clone()).await;
    let guard = super::take_lock(&state, "test", std::time::Duration::ZERO)
        .await
        .unwrap();
    let (min, max) = (doc! {"x": 50}, doc! {"x": Bson::MaxKey});
    // The destination goes down at the first insert of the copy: its
    // copies cannot be deleted yet.
    shards.refuse_inserts.store(false, Ordering::SeqCst);
    shards.down_at_insert.store(true, Ordering::SeqCst);
    let outcome = super::move_chunk(&state, &guard, "db.c", &min, &max, "s1", true).await;
    assert!(outcome.is_err());
    guard.release().await;
    let records = state.catalog.migrations("db.c").await.unwrap();
    assert_eq!(records.len(), 1, "the record stays for recovery");
    assert_eq!(records[0].state, MigrationState::Aborted);
    assert_eq!(owners(&state).await, ["s0", "s0"]);
    // The destination is back; the next lock holder finishes the abort.
    shards.down_at_insert.store(false, Ordering::SeqCst);
    shards.s1_down.store(false, Ordering::SeqCst);
    let guard = super::take_lock(&state, "next", std::time::Duration::ZERO)
        .await
        .unwrap();
    guard.release().await;
    assert!(
        state.catalog.migrations("db.c").await.unwrap().is_empty(),
        "recovered"
    );
    assert!(state
        .catalog
        .orphan_ranges("db.c")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(owners(&state).await, ["s0", "s0"]);
}

/// Runs the move of `[50, MaxKey)` to `s1` and returns its error.
async fn failed_move(state: &Arc<Balancer>) -> crate::error::BalancerError {
    let guard = super::take_lock(state, "test", std::time::Duration::ZERO)
        .await
        .unwrap();
    let (min, max) = (doc! {"x": 50}, doc! {"x": Bson::MaxKey});
    let e = super::move_chunk(state, &guard, "db.c", &min, &max, "s1", true)
        .await
        .unwrap_err();
    guard.release().await;
    e
}

/// What every completed abort leaves: no record, no orphan range, the
/// destination's copies deleted twice (before the copy and in the abort)
/// and the source untouched.
async fn assert_aborted(state: &Balancer, shards: &FakeShards) {
    assert!(
        state.catalog.migrations("db.c").await.unwrap().is_empty(),
        "no record left"
    );
    assert!(
        state
            .catalog
            .orphan_ranges("db.c")
            .await
            .unwrap()
            .is_empty(),
        "no orphan range left"
    );
    assert_eq!(range_deletes(shards, "s1"), 2);
    assert_eq!(range_deletes(shards, "s0"), 0);
    let log = state.catalog.changelog().await.unwrap();
    assert!(log
        .iter()
        .any(|e| e.what == "moveChunk.error" && e.details.get_bool("aborted").ok() == Some(true)));
    assert!(!log.iter().any(|e| e.what == "moveChunk.commit"));
}

#[tokio::test]
async fn a_change_stream_lost_during_catch_up_aborts() {
    let shards = Arc::new(FakeShards::default());
    shards.fail_get_more_at.store(1, Ordering::SeqCst);
    let (state, _dir) = setup(shards.clone()).await;
    let e = failed_move(&state).await;
    assert_eq!(e.code().0, 286, "{e}");
    assert_eq!(
        *shards.state_at_fault.lock().unwrap(),
        Some(MigrationState::Catchup)
    );
    // The whole range had been copied before the stream failed.
    assert_eq!(shards.calls("s1", "insert").len(), 1);
    assert_eq!(owners(&state).await, ["s0", "s0"]);
    assert_aborted(&state, &shards).await;
}

#[tokio::test]
async fn a_failure_inside_the_critical_section_aborts_and_releases_writes() {
    let shards = Arc::new(FakeShards::default());
    // The first getMore is catch-up; the second drains inside the critical
    // section.
    shards.fail_get_more_at.store(2, Ordering::SeqCst);
    let (state, _dir) = setup(shards.clone()).await;
    let e = failed_move(&state).await;
    assert_eq!(e.code().0, 286, "{e}");
    assert_eq!(
        *shards.state_at_fault.lock().unwrap(),
        Some(MigrationState::Critical)
    );
    // Routers hold writes while a `critical` record exists: it is gone.
    assert_eq!(owners(&state).await, ["s0", "s0"]);
    assert_aborted(&state, &shards).await;
}

#[tokio::test]
async fn a_commit_that_loses_to_a_chunk_split_aborts() {
    let shards = Arc::new(FakeShards::default());
    shards.split_at_get_more.store(2, Ordering::SeqCst);
    let (state, _dir) = setup(shards.clone()).await;
    let e = failed_move(&state).await;
    assert_eq!(e.code().0, 117, "{e}");
    assert!(e.to_string().contains("chunk changed"), "{e}");
    assert_eq!(
        *shards.state_at_fault.lock().unwrap(),
        Some(MigrationState::Critical)
    );
    // The split stands; nothing moved.
    let chunks = state.catalog.chunks("db.c").await.unwrap();
    let bounds: Vec<_> = chunks
        .iter()
        .map(|(c, _)| (c.min.clone(), c.shard.clone()))
        .collect();
    assert_eq!(
        bounds,
        [
            (doc! {"x": Bson::MinKey}, "s0".to_owned()),
            (doc! {"x": 50}, "s0".to_owned()),
            (doc! {"x": 75}, "s0".to_owned()),
        ]
    );
    assert_aborted(&state, &shards).await;
}
