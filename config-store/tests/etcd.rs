//! The etcd store against real 3-member etcd clusters on loopback (the
//! `etcd` binary, or `$SHARDGATE_ETCD_BIN`). Each test starts its own.

use std::time::{Duration, Instant};

use shardgate_config_store::etcd::cluster::EtcdCluster;
use shardgate_config_store::etcd::{EtcdOptions, EtcdStore};
use shardgate_config_store::{open, ConfigStore, StoreError, StoreUrl, Txn, TxnOutcome};
use tokio::sync::mpsc;

async fn store(cluster: &EtcdCluster, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&cluster.endpoints(), prefix)
        .await
        .expect("connect to the test cluster")
}

/// The next watch event, or a panic after a few seconds.
async fn next<T>(rx: &mut mpsc::Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("watch event within 5s")
        .expect("watch channel open")
}

/// Polls `cond` every 100 ms for up to `within`.
async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Lets the client notice connections closed by a kill, as it would while
/// a router runs (a request sent on a connection the client has not yet
/// seen die fails as "outcome unknown", correctly but not what is tested).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn cas_scan_get_and_deletes() {
    let cluster = EtcdCluster::start(3).await;
    let s = open(&cluster.url("cas")).await.unwrap();
    assert_eq!(s.describe(), cluster.url("cas"));
    let base = s.revision().await.unwrap();

    let t = Txn::default()
        .absent("shards/a")
        .put("shards/a", b"1".to_vec());
    assert_eq!(
        s.txn(t.clone()).await.unwrap(),
        TxnOutcome::Committed(base + 1)
    );
    assert_eq!(s.txn(t).await.unwrap(), TxnOutcome::Conflict);
    let v = s.get("shards/a").await.unwrap().unwrap();
    assert_eq!((v.value.as_slice(), v.mod_revision), (&b"1"[..], base + 1));
    assert_eq!(s.get("shards/none").await.unwrap(), None);

    let stale = Txn::default()
        .unchanged("shards/a", base)
        .put("shards/a", b"x".to_vec());
    assert_eq!(s.txn(stale).await.unwrap(), TxnOutcome::Conflict);
    let t = Txn::default()
        .unchanged("shards/a", base + 1)
        .put("shards/a", b"2".to_vec())
        .put("shards/b", b"3".to_vec());
    assert_eq!(s.txn(t).await.unwrap(), TxnOutcome::Committed(base + 2));
    let all = s.scan("shards/").await.unwrap();
    assert_eq!(all.revision, base + 2);
    let keys: Vec<&str> = all.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["shards/a", "shards/b"]);
    assert_eq!(all.entries[0].1.value, b"2");
    assert_eq!(all.entries[1].1.mod_revision, base + 2);

    s.txn(Txn::default().put("databases/x", vec![]))
        .await
        .unwrap();
    assert_eq!(s.list("shards/").await.unwrap().len(), 2);
    assert_eq!(s.list("").await.unwrap().len(), 3);
    assert_eq!(
        s.txn(Txn::default().delete("shards/b")).await.unwrap(),
        TxnOutcome::Committed(base + 4)
    );
    assert_eq!(s.list("shards/").await.unwrap().len(), 1);
    assert_eq!(s.revision().await.unwrap(), base + 4);

    // Several operations on one key in one transaction: the last one wins.
    let t = Txn::default()
        .delete("shards/a")
        .put("shards/a", b"again".to_vec())
        .put("shards/c", b"c".to_vec())
        .delete("shards/c");
    assert_eq!(s.txn(t).await.unwrap(), TxnOutcome::Committed(base + 5));
    assert_eq!(s.get("shards/a").await.unwrap().unwrap().value, b"again");
    assert_eq!(s.get("shards/c").await.unwrap(), None);

    // A scan longer than one page still reads at one revision.
    let mut big = Txn::default();
    for i in 0..100 {
        big = big.put(format!("chunks/{i:04}"), vec![1; 10]);
    }
    s.txn(big).await.unwrap();
    let mut big = Txn::default();
    for i in 100..1_100 {
        big = big.put(format!("chunks/{i:04}"), vec![]);
        if i % 100 == 99 {
            s.txn(std::mem::take(&mut big)).await.unwrap();
        }
    }
    let chunks = s.scan("chunks/").await.unwrap();
    assert_eq!(chunks.entries.len(), 1_100);
    assert_eq!(chunks.revision, s.revision().await.unwrap());
    assert!(chunks.entries.windows(2).all(|w| w[0].0 < w[1].0));

    // Another prefix in the same etcd sees none of it.
    let other = store(&cluster, "other/ns").await;
    assert_eq!(other.list("").await.unwrap(), vec![]);
    assert_eq!(other.describe(), cluster.url("other/ns"));
    other
        .txn(Txn::default().put("shards/a", b"o".to_vec()))
        .await
        .unwrap();
    assert_eq!(s.get("shards/a").await.unwrap().unwrap().value, b"again");

    // etcd's limits fail clearly and write nothing.
    let mut huge = Txn::default();
    for i in 0..200 {
        huge = huge.put(format!("zones/{i}"), vec![]);
    }
    let err = s.txn(huge).await.unwrap_err();
    assert!(matches!(err, StoreError::Invariant(_)), "{err}");
    assert!(err.to_string().contains("too many operations"), "{err}");
    assert_eq!(s.list("zones/").await.unwrap().len(), 0);
}

#[tokio::test]
async fn watch_replays_then_follows() {
    let cluster = EtcdCluster::start(3).await;
    let s = store(&cluster, "watch").await;
    let noise = store(&cluster, "watch-other").await;
    let base = s.revision().await.unwrap();
    s.txn(Txn::default().put("chunks/a", b"1".to_vec()))
        .await
        .unwrap();
    s.txn(Txn::default().put("other/x", b"1".to_vec()))
        .await
        .unwrap();
    noise
        .txn(Txn::default().put("chunks/z", b"n".to_vec()))
        .await
        .unwrap();

    let mut w = s.watch("chunks/", base).await.unwrap();
    let first = next(&mut w).await;
    assert_eq!(
        (first.revision, first.key.as_str(), first.value.as_deref()),
        (base + 1, "chunks/a", Some(&b"1"[..]))
    );
    let t = Txn::default()
        .delete("chunks/a")
        .put("chunks/b", b"2".to_vec());
    let TxnOutcome::Committed(rev) = s.txn(t).await.unwrap() else {
        panic!("unconditional txn conflicted")
    };
    let del = next(&mut w).await;
    assert_eq!(
        (del.revision, del.key.as_str(), del.value),
        (rev, "chunks/a", None)
    );
    let put = next(&mut w).await;
    assert_eq!(
        (put.revision, put.key.as_str(), put.value),
        (rev, "chunks/b", Some(b"2".to_vec()))
    );
    s.txn(Txn::default().put("other/y", vec![])).await.unwrap();
    noise
        .txn(Txn::default().put("chunks/y", vec![]))
        .await
        .unwrap();
    s.txn(Txn::default().put("chunks/c", vec![])).await.unwrap();
    assert_eq!(
        next(&mut w).await.key,
        "chunks/c",
        "only this store's chunks/ keys"
    );

    // A watch from the current revision sees only what comes next.
    let now = s.revision().await.unwrap();
    let mut live = s.watch("chunks/", now).await.unwrap();
    s.txn(Txn::default().put("chunks/d", vec![])).await.unwrap();
    assert_eq!(next(&mut live).await.key, "chunks/d");

    // History compacted away: Compacted, and a rescan + watch recovers.
    let etcd = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    let compact_at = s.revision().await.unwrap();
    etcd.kv_client()
        .compact(compact_at as i64, None)
        .await
        .unwrap();
    let err = s.watch("chunks/", base).await.unwrap_err();
    match err {
        StoreError::Compacted { revision } => assert_eq!(revision, compact_at),
        other => panic!("expected Compacted, got {other}"),
    }
    let listing = s.scan("chunks/").await.unwrap();
    let mut w = s.watch("chunks/", listing.revision).await.unwrap();
    s.txn(Txn::default().put("chunks/e", vec![])).await.unwrap();
    assert_eq!(next(&mut w).await.key, "chunks/e");
}

#[tokio::test]
async fn leases_expire_renew_and_revoke() {
    let cluster = EtcdCluster::start(3).await;
    let s = store(&cluster, "lease").await;
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    let now = s.revision().await.unwrap();
    let mut w = s.watch("locks/", now).await.unwrap();
    s.txn(Txn::default().put_leased("locks/balancer", b"me".to_vec(), lease))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.value, Some(b"me".to_vec()));

    // Kept alive well past its TTL, the key stays.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.keep_alive(lease).await.unwrap();
    }
    assert!(s.get("locks/balancer").await.unwrap().is_some());

    // Left alone, it expires, the key goes, and watchers see a delete.
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async {
            s.get("locks/balancer").await.unwrap().is_none()
        })
        .await,
        "leased key still present"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    let gone = next(&mut w).await;
    assert_eq!((gone.key.as_str(), gone.value), ("locks/balancer", None));
    match s.keep_alive(lease).await {
        Err(StoreError::LeaseExpired(id)) => assert_eq!(id, lease),
        other => panic!("expected LeaseExpired, got {other:?}"),
    }
    let put = Txn::default().put_leased("x", vec![], lease);
    match s.txn(put).await {
        Err(StoreError::LeaseExpired(id)) => assert_eq!(id, lease),
        other => panic!("expected LeaseExpired, got {other:?}"),
    }

    // Revoking deletes at once; revoking again is harmless.
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.txn(Txn::default().put_leased("routers/r1", vec![], lease))
        .await
        .unwrap();
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get("routers/r1").await.unwrap(), None);
    s.revoke_lease(lease).await.unwrap();
}

#[tokio::test]
async fn survives_a_member_and_fails_clearly_without_quorum() {
    let mut cluster = EtcdCluster::start(3).await;
    let s = store(&cluster, "ha").await;
    s.txn(Txn::default().put("shards/a", b"1".to_vec()))
        .await
        .unwrap();
    let mut w = s
        .watch("shards/", s.revision().await.unwrap())
        .await
        .unwrap();

    // Member 0 is where calls start: losing it (maybe the leader) is
    // transparent to reads and compare-and-swap writes.
    cluster.kill(0);
    settle().await;
    let v = s.get("shards/a").await.unwrap().unwrap();
    let cas = Txn::default()
        .unchanged("shards/a", v.mod_revision)
        .put("shards/a", b"2".to_vec());
    assert!(matches!(
        s.txn(cas).await.unwrap(),
        TxnOutcome::Committed(_)
    ));
    for i in 0..5 {
        let t = Txn::default()
            .absent(format!("shards/n{i}"))
            .put(format!("shards/n{i}"), vec![]);
        assert!(matches!(s.txn(t).await.unwrap(), TxnOutcome::Committed(_)));
    }
    assert_eq!(s.list("shards/").await.unwrap().len(), 6);

    // Without a majority, calls fail within their deadline, clearly.
    cluster.kill(1);
    settle().await;
    let started = Instant::now();
    let write = Txn::default().put("shards/b", vec![]);
    let result = tokio::time::timeout(Duration::from_secs(15), s.txn(write))
        .await
        .expect("a write without quorum must not hang");
    let elapsed = started.elapsed();
    let err = result.expect_err("a write without quorum must fail");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
    let msg = err.to_string();
    assert!(msg.contains("config store unavailable: etcd"), "{msg}");
    assert!(
        cluster
            .endpoints()
            .iter()
            .any(|ep| msg.contains(ep.as_str())),
        "names the member(s): {msg}"
    );
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}: {msg}");
    let err = tokio::time::timeout(Duration::from_secs(15), s.get("shards/a"))
        .await
        .expect("a read without quorum must not hang")
        .expect_err("a linearizable read without quorum must fail");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    // The watch breaks too: its channel closes (the caller rescans later).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while w.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "watch channel still open without quorum");

    // A member back: a majority again, and writes go through.
    cluster.restart(1).await;
    cluster
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("quorum after restart");
    let t = Txn::default().absent("shards/c").put("shards/c", vec![]);
    assert!(matches!(s.txn(t).await.unwrap(), TxnOutcome::Committed(_)));
    // The write that failed may still have been applied: a member that was
    // leader when it lost its majority had it in its log, and the new
    // majority commits it. The error said so ("may or may not").
    let b = s.get("shards/b").await.unwrap();
    let expected = if b.is_some() { 8 } else { 7 };
    assert_eq!(s.list("shards/").await.unwrap().len(), expected);
}

#[tokio::test]
async fn urls_parse_and_dead_clusters_fail_fast() {
    assert_eq!(
        StoreUrl::parse("etcd://127.0.0.1:1,127.0.0.1:2/pfx").unwrap(),
        StoreUrl::Etcd {
            endpoints: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            prefix: "pfx".into(),
        }
    );
    for bad in [
        "etcd://127.0.0.1:1",
        "etcd://127.0.0.1:1/",
        "etcd:///pfx",
        "etcd://127.0.0.1/pfx",
        "etcd://127.0.0.1:1,,127.0.0.1:2/pfx",
        "etcd://u:p@127.0.0.1:1/pfx",
        "etcd:127.0.0.1:1/pfx",
    ] {
        match open(bad).await {
            Err(StoreError::BadUrl(u)) => assert_eq!(u, bad),
            Err(other) => panic!("{bad}: expected BadUrl, got {other}"),
            Ok(s) => panic!("{bad}: opened {}", s.describe()),
        }
    }

    // Nothing listens: open fails within its deadline, naming the members.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
    };
    let started = Instant::now();
    let endpoints = vec![format!("127.0.0.1:{port}")];
    let err = EtcdStore::connect_with(&endpoints, "pfx", options)
        .await
        .err()
        .expect("no etcd there");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains(&endpoints[0]), "{err}");
}
