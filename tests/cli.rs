//! The `shardgate` binary: help, configuration errors, the embedded store's
//! lock, and a graceful stop on SIGTERM that lets in-flight requests finish.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bson::{doc, Document};

const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["demo", "--help"],
        vec!["status", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
}

#[test]
fn bad_configuration_fails_at_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--pool-max-size", "0", "--config-store"])
        .arg(format!("embedded:{}", dir.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pool.max_size"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nno_such_setting = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_setting"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = Command::new(BIN)
        .args(["serve", "--config-store", "mystery:x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid config store URL"));
}

struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(port: u16, store: &std::path::Path) -> Serve {
    Serve(
        Command::new(BIN)
            .args(["serve", "--enable-test-commands", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config-store")
            .arg(format!("embedded:{}", store.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 1, true).await;
    let port = shardgate::shard_process::free_port().unwrap();
    let store = dir.path().join("store");
    let mut router = serve(port, &store);
    let uri = format!("mongodb://127.0.0.1:{port}/");
    let client = support::client(&uri).await;
    let admin = client.database("admin");
    let mut ready = false;
    for _ in 0..100 {
        if admin.run_command(doc! {"ping": 1}).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "router answers ping");
    // getLog: the router's own recent lines, as structured-log JSON.
    let log = admin.run_command(doc! {"getLog": "global"}).await.unwrap();
    let lines = log.get_array("log").unwrap();
    let listening = lines.iter().any(|l| {
        let line: serde_json::Value = serde_json::from_str(l.as_str().unwrap()).unwrap();
        line["msg"] == "router listening" && line["s"] == "I" && line["t"]["$date"].is_string()
    });
    assert!(listening, "{log}");
    assert!(log.get_i64("totalLinesWritten").unwrap() >= lines.len() as i64);
    let names = admin.run_command(doc! {"getLog": "*"}).await.unwrap();
    assert_eq!(
        names.get_array("names").unwrap(),
        &vec![
            bson::Bson::from("global"),
            bson::Bson::from("startupWarnings")
        ]
    );
    admin
        .run_command(doc! {"getLog": "startupWarnings"})
        .await
        .unwrap();

    // A second router on the same embedded store is refused with a clear error.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config-store"])
        .arg(format!("embedded:{}", store.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another process"));

    admin
        .run_command(doc! {"addShard": shards[0].address()})
        .await
        .unwrap();
    let coll = client.database("slow").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    // The shard holds every `count` for 1.5 s.
    admin
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": ["count"], "blockConnection": true, "blockTimeMS": 1500},
        })
        .await
        .unwrap();
    let in_flight = tokio::spawn({
        let db = client.database("slow");
        async move {
            let start = Instant::now();
            (db.run_command(doc! {"count": "c"}).await, start.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(router.0.id() as i32, libc::SIGTERM);
    }
    let (reply, took) = in_flight.await.unwrap();
    let reply = reply.expect("the in-flight count completes");
    // The fail point really held the request past the signal.
    assert!(took >= Duration::from_millis(1000), "count took {took:?}");
    assert_eq!(reply.get_i32("n").unwrap(), 1);

    let start = Instant::now();
    let status = loop {
        if let Some(s) = router.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "router did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit: {status}");
    // It no longer accepts connections.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}

/// `shardgate status` against `uri`: its standard output.
fn status_output(uri: &str) -> String {
    let out = Command::new(BIN)
        .args(["status", "--uri", uri])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_running_migration_with_documents_copied_of_the_estimate() {
    const DOCS: i32 = 2500;
    let config = shardgate_router::RouterConfig {
        balancer: false,
        enable_test_commands: true,
        ..Default::default()
    };
    let cluster = support::TestCluster::start_with(2, config, false).await;
    let client = cluster.client().await;
    let admin = client.database("admin");
    let run = |cmd: Document| {
        let admin = admin.clone();
        async move { admin.run_command(cmd).await.unwrap() }
    };
    run(doc! {"enableSharding": "st", "primaryShard": "shard0000"}).await;
    run(doc! {"shardCollection": "st.c", "key": {"k": 1}}).await;
    for at in [0, 10_000] {
        run(doc! {"split": "st.c", "middle": {"k": at}}).await;
    }
    client
        .database("st")
        .collection::<Document>("c")
        .insert_many((0..DOCS).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    let uri = cluster.router.uri();
    assert!(status_output(&uri).contains("no migration running"));

    // The copy stops after its first batch until the fail point is off.
    run(doc! {"configureFailPoint": "shardgatePauseMigrationAt", "mode": "alwaysOn", "data": {"state": "cloningPartial"}}).await;
    let mover = tokio::spawn({
        let admin = admin.clone();
        async move {
            admin
                .run_command(doc! {"moveChunk": "st.c", "bounds": [{"k": 0}, {"k": 10_000}], "to": "shard0001"})
                .await
        }
    });
    let current = loop {
        let status = run(doc! {"balancerStatus": 1}).await;
        // mongos's fields stay as mongos has them.
        for field in ["mode", "inBalancerRound", "numBalancerRounds"] {
            assert!(status.contains_key(field), "{status}");
        }
        match status.get_document("currentMigration") {
            Ok(m) if m.get_i64("docsCopied").unwrap() > 0 => break m.clone(),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let (copied, estimate) = (
        current.get_i64("docsCopied").unwrap(),
        current.get_i64("docsEstimate").unwrap(),
    );
    assert_eq!(estimate, i64::from(DOCS));
    assert!(copied < estimate, "paused after the first batch: {current}");
    assert_eq!(current.get_str("state").unwrap(), "cloning");
    let text = status_output(&uri);
    println!("{text}");
    let line = text
        .lines()
        .find(|l| l.contains("migrating st.c"))
        .unwrap_or_else(|| panic!("no migration line: {text}"));
    assert!(line.contains("shard0000 -> shard0001"), "{line}");
    assert!(
        line.contains(&format!("{copied} of {estimate} documents copied")),
        "{line}"
    );

    run(doc! {"configureFailPoint": "shardgatePauseMigrationAt", "mode": "off"}).await;
    mover.await.unwrap().unwrap();
    let after = run(doc! {"balancerStatus": 1}).await;
    assert!(!after.contains_key("currentMigration"), "{after}");
    let text = status_output(&uri);
    assert!(text.contains("no migration running"), "{text}");
    assert!(!text.contains("migrating st.c"), "{text}");
}
