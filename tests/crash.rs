//! kill -9 of a router during a burst of splits leaves a whole chunk map on
//! the embedded store: after a restart the chunks tile the key space.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bson::{doc, Bson, Document};

const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

fn serve(port: u16, store: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config-store")
        .arg(format!("embedded:{}", store.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn ready(client: &mongodb::Client) {
    for _ in 0..100 {
        if client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("router did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_splits_leaves_a_tiling_chunk_map() {
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 1, false).await;
    let store = dir.path().join("store");
    let port = shardgate::shard_process::free_port().unwrap();
    let mut router = serve(port, &store);
    let client = support::client(&format!("mongodb://127.0.0.1:{port}/")).await;
    ready(&client).await;
    support::admin(&client, doc! {"addShard": shards[0].address()}).await;
    support::admin(&client, doc! {"enableSharding": "crash"}).await;
    support::admin(
        &client,
        doc! {"shardCollection": "crash.c", "key": {"k": 1}},
    )
    .await;

    // Four clients split as fast as they can; the router dies mid-burst.
    let mut burst = Vec::new();
    for lane in 0..4i64 {
        let client = client.clone();
        burst.push(tokio::spawn(async move {
            let mut done = 0;
            for i in 0..10_000i64 {
                let cmd = doc! {"split": "crash.c", "middle": {"k": i * 4 + lane}};
                if client.database("admin").run_command(cmd).await.is_err() {
                    break;
                }
                done += 1;
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    router.kill().unwrap(); // SIGKILL
    router.wait().unwrap();
    let mut splits = 0;
    for b in burst {
        splits += b.await.unwrap();
    }
    assert!(
        splits > 10,
        "the burst was under way when the router died ({splits} splits)"
    );

    let mut router = serve(port, &store);
    let client = support::client(&format!("mongodb://127.0.0.1:{port}/")).await;
    ready(&client).await;
    let chunks =
        support::config_docs(&client, "chunks", doc! {"ns": "crash.c"}, doc! {"min": 1}).await;
    assert!(
        chunks.len() > splits as usize / 2,
        "{} chunks after {splits} splits",
        chunks.len()
    );
    assert_eq!(
        chunks.first().unwrap().get_document("min").unwrap(),
        &doc! {"k": Bson::MinKey}
    );
    assert_eq!(
        chunks.last().unwrap().get_document("max").unwrap(),
        &doc! {"k": Bson::MaxKey}
    );
    for pair in chunks.windows(2) {
        assert_eq!(
            pair[0].get_document("max").unwrap(),
            pair[1].get_document("min").unwrap(),
            "no gap, no overlap"
        );
    }
    let versions: std::collections::BTreeSet<bson::Timestamp> = chunks
        .iter()
        .map(|c| c.get_timestamp("lastmod").unwrap())
        .collect();
    assert_eq!(
        versions.len(),
        chunks.len(),
        "every chunk version is distinct"
    );
    // The restarted router routes and keeps splitting.
    let coll = client.database("crash").collection::<Document>("c");
    coll.insert_one(doc! {"k": 7}).await.unwrap();
    assert_eq!(coll.count_documents(doc! {"k": 7}).await.unwrap(), 1);
    support::admin(
        &client,
        doc! {"split": "crash.c", "middle": {"k": 1_000_000_001i64}},
    )
    .await;
    router.kill().unwrap();
    router.wait().unwrap();
}
