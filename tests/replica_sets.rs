//! Replica-set shards, driven by a test double of the topology
//! (`support::replica_set`: member proxies in front of one real SecantusDB
//! server): the router finds the members from one seed, follows a
//! stepdown under load without losing or doubling an acknowledged write,
//! and sends reads where their read preference says.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use shardgate_router::RouterConfig;
use support::replica_set::ReplicaSetDouble;
use support::{admin, client, direct_client, RouterHandle};

struct Setup {
    _dir: tempfile::TempDir,
    backend: Vec<shardgate::shard_process::ShardProcess>,
    set: ReplicaSetDouble,
    router: RouterHandle,
}

async fn setup() -> Setup {
    let config = RouterConfig {
        balancer: false,
        ..RouterConfig::default()
    };
    setup_with(config).await
}

async fn setup_with(config: RouterConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let backend = support::start_shards(dir.path(), 1, false).await;
    let set = ReplicaSetDouble::start("rs0", 3, &backend[0].address()).await;
    let router = RouterHandle::start(&dir.path().join("config"), config).await;
    Setup {
        _dir: dir,
        backend,
        set,
        router,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_found_from_one_seed() {
    let s = setup().await;
    let c = client(&s.router.uri()).await;
    let added = admin(&c, doc! {"addShard": s.set.seed(1)}).await;
    assert_eq!(added.get_str("shardAdded").unwrap(), "rs0");
    let shards = admin(&c, doc! {"listShards": 1}).await;
    let host = shards.get_array("shards").unwrap()[0]
        .as_document()
        .unwrap()
        .get_str("host")
        .unwrap()
        .to_owned();
    assert_eq!(host, s.set.connection_string());
    // A write through the router lands on the primary (member 0), not the seed.
    c.database("app")
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    assert_eq!(s.set.served(1).1, 0);
    assert!(s.set.served(0).1 >= 1);
    // serverStatus (and `shardgate status`) show each member's role.
    let status = admin(&c, doc! {"serverStatus": 1}).await;
    let set = status.get_array("shardTopology").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(set.get_str("setName").unwrap(), "rs0");
    let states: Vec<String> = set
        .get_array("members")
        .unwrap()
        .iter()
        .map(|m| {
            m.as_document()
                .unwrap()
                .get_str("state")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(states, ["primary", "secondary", "secondary"]);
}

/// Each member's state as the router's `serverStatus` shows it.
async fn member_states(c: &mongodb::Client) -> Vec<String> {
    let status = admin(c, doc! {"serverStatus": 1}).await;
    let set = status.get_array("shardTopology").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    set.get_array("members")
        .unwrap()
        .iter()
        .map(|m| {
            m.as_document()
                .unwrap()
                .get_str("state")
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Waits until `serverStatus` shows the members in `want` (a minute at
/// most, against a hang: the heartbeat poll is an hour away).
async fn wait_for_states(c: &mongodb::Client, want: [&str; 3]) {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let states = member_states(c).await;
        if states == want {
            return;
        }
        assert!(Instant::now() < give_up, "still {states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awaitable_hello_shows_the_new_primary_before_any_poll_is_due() {
    // No heartbeat poll falls due while the test runs: only the members'
    // answers to awaitable hellos can tell the router of the election.
    let mut config = RouterConfig {
        balancer: false,
        ..RouterConfig::default()
    };
    config.pool.heartbeat_ms = 3_600_000;
    let s = setup_with(config).await;
    let c = client(&s.router.uri()).await;
    admin(&c, doc! {"addShard": s.set.connection_string()}).await;
    let coll = c.database("app").collection::<Document>("await");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    wait_for_states(&c, ["primary", "secondary", "secondary"]).await;
    let writes_before = s.set.served(2).1;

    s.set.step_down(2, Duration::from_millis(200)).await;
    // Nothing is sent to the shard meanwhile (no command meets the
    // stepdown and asks for a rescan): serverStatus only reads the
    // router's view.
    wait_for_states(&c, ["secondary", "secondary", "primary"]).await;
    assert_eq!(
        s.set.served(2).1,
        writes_before,
        "no write went to the shard"
    );
    // Writes go to the new primary.
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert!(s.set.served(2).1 > writes_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stepdown_under_load_loses_and_doubles_nothing() {
    let s = setup().await;
    let c = client(&format!(
        "{}/?retryWrites=true",
        s.router.uri().trim_end_matches('/')
    ))
    .await;
    admin(&c, doc! {"addShard": s.set.connection_string()}).await;
    let coll = c.database("app").collection::<Document>("load");
    coll.insert_one(doc! {"_id": "warm"}).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let last_ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (coll, stop, last_ok) = (coll.clone(), stop.clone(), last_ok.clone());
            tokio::spawn(async move {
                let (mut acked, mut errors) = (Vec::new(), Vec::new());
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("c{i}-{n}");
                    n += 1;
                    match coll.insert_one(doc! {"_id": &id, "i": i}).await {
                        Ok(_) => {
                            acked.push(id.clone());
                            last_ok
                                .fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                        }
                        Err(e) => errors.push(format!("insert {id}: {e}")),
                    }
                    if let Err(e) = coll.find_one(doc! {"_id": &id}).await {
                        errors.push(format!("read {id}: {e}"));
                    }
                }
                (acked, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let down_at = started.elapsed().as_millis() as u64;
    s.set.step_down(2, Duration::from_millis(1000)).await;
    // Writes flow again: the first acknowledged write after the stepdown.
    let mut resumed = None;
    for _ in 0..200 {
        let before = last_ok.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(25)).await;
        let after = last_ok.load(Ordering::SeqCst);
        if after > before && after > down_at + 1000 {
            resumed = Some(after - down_at);
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut acked, mut errors) = (Vec::new(), Vec::new());
    for c in clients {
        let (a, e) = c.await.unwrap();
        acked.extend(a);
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let resumed = resumed.expect("writes resumed after the stepdown");
    println!("writes flowed again {resumed} ms after the stepdown (1000 ms of it the election)");
    assert!(resumed < 5000, "{resumed} ms");
    // Every acknowledged write is on the server exactly once.
    let stored = direct_client(&s.backend[0])
        .await
        .database("app")
        .collection::<Document>("load");
    let n = stored
        .count_documents(doc! {"i": {"$exists": true}})
        .await
        .unwrap();
    assert_eq!(n as usize, acked.len());
    for id in acked.iter().step_by(37) {
        assert_eq!(stored.count_documents(doc! {"_id": id}).await.unwrap(), 1);
    }
    assert_eq!(s.set.primary(), Some(2));
    assert!(s.set.served(2).1 > 0, "writes reached the new primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_their_read_preference() {
    let s = setup().await;
    let c = client(&s.router.uri()).await;
    admin(&c, doc! {"addShard": s.set.connection_string()}).await;
    let db = c.database("app");
    db.collection::<Document>("r")
        .insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let before: Vec<u64> = (0..3).map(|i| s.set.served(i).0).collect();
    let secondary = client(&format!(
        "{}/?readPreference=secondary",
        s.router.uri().trim_end_matches('/')
    ))
    .await;
    let coll = secondary.database("app").collection::<Document>("r");
    for i in 0..60 {
        assert!(coll.find_one(doc! {"_id": i % 10}).await.unwrap().is_some());
    }
    let after: Vec<u64> = (0..3).map(|i| s.set.served(i).0).collect();
    assert_eq!(after[0], before[0], "no secondary read reached the primary");
    assert_eq!(after[1] + after[2] - before[1] - before[2], 60);
    let nearest = client(&format!(
        "{}/?readPreference=nearest",
        s.router.uri().trim_end_matches('/')
    ))
    .await;
    let coll = nearest.database("app").collection::<Document>("r");
    for i in 0..90 {
        coll.find_one(doc! {"_id": i % 10}).await.unwrap();
    }
    let spread: Vec<u64> = (0..3).map(|i| s.set.served(i).0 - after[i]).collect();
    assert_eq!(spread.iter().sum::<u64>(), 90);
    assert!(spread.iter().all(|n| *n > 0), "nearest spreads: {spread:?}");
}
