//! `shardgate demo`: three local shards, a router on the embedded store,
//! the shards added, a small sample dataset, and a clean stop on Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use bson::doc;
use shardgate_router::RouterConfig;

use crate::cli::DemoArgs;
use crate::shard_process::ShardLauncher;

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let launcher = ShardLauncher::from_env()?;
    let temp;
    let root: PathBuf = match args.data_dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new()
                .prefix("shardgate-demo-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    println!(
        "starting {} shard servers ({})…",
        args.shards,
        launcher.bin.display()
    );
    let starts = (0..args.shards).map(|i| {
        let dir = root.join(format!("shard{i}"));
        let launcher = launcher.clone();
        async move { launcher.start(&dir, false).await }
    });
    let shards = futures::future::try_join_all(starts).await?;

    let config = RouterConfig {
        listen: format!("127.0.0.1:{}", args.port),
        config_store: format!("embedded:{}", root.join("config").display()),
        metrics_listen: Some(format!("127.0.0.1:{}", args.metrics_port)),
        argv: std::env::args().collect(),
        ..RouterConfig::default()
    };
    config.validate().map_err(|e| anyhow::anyhow!(e))?;
    let shutdown = crate::shutdown_on_signals();
    let router = tokio::spawn(crate::serve(config, shutdown.clone()));

    let uri = format!("mongodb://127.0.0.1:{}", args.port);
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let admin = client.database("admin");
    wait_for_router(&admin, &router).await?;
    for s in &shards {
        let r = admin.run_command(doc! {"addShard": s.address()}).await?;
        println!(
            "  added {} at {}",
            r.get_str("shardAdded").unwrap_or("?"),
            s.address()
        );
    }
    load_sample(&client)
        .await
        .context("loading the sample dataset")?;

    println!();
    println!("shardgate demo is up. Connect with:");
    println!("  mongosh \"{uri}\"");
    println!(
        "metrics: curl http://127.0.0.1:{}/metrics (and /healthz, /readyz)",
        args.metrics_port
    );
    println!("then try: sh.status(), use analytics, db.events.find().sort({{n: -1}}).limit(3)");
    println!("Press Ctrl-C to stop everything.");

    let mut stop = shutdown;
    let _ = stop.wait_for(|s| *s).await;
    match router.await {
        Ok(r) => r?,
        Err(e) => anyhow::bail!("router task failed: {e}"),
    }
    drop(shards);
    println!("stopped router and {} shard servers", args.shards);
    Ok(())
}

async fn wait_for_router(
    admin: &mongodb::Database,
    router: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    for _ in 0..100 {
        if router.is_finished() {
            anyhow::bail!("the router stopped during start-up (is the port taken?)");
        }
        if admin.run_command(doc! {"ping": 1}).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("the router did not answer ping")
}

/// Three databases, placed by the router on the least-loaded shards.
async fn load_sample(client: &mongodb::Client) -> anyhow::Result<()> {
    let orders: Vec<_> = (0..1000)
        .map(|i| doc! {"_id": i, "customer": format!("c{:03}", i % 97), "total": (i * 37 % 500) as f64 / 4.0, "status": (["new", "paid", "shipped"][i as usize % 3])})
        .collect();
    client
        .database("shop")
        .collection("orders")
        .insert_many(orders)
        .await?;
    let customers: Vec<_> = (0..97)
        .map(|i| doc! {"_id": format!("c{i:03}"), "name": format!("Customer {i}"), "city": (["Lisbon", "Oslo", "Quito"][i % 3])})
        .collect();
    client
        .database("shop")
        .collection("customers")
        .insert_many(customers)
        .await?;
    let posts: Vec<_> = (0..50)
        .map(|i| doc! {"_id": i, "title": format!("Post {i}"), "tags": ["mongodb", "sharding"]})
        .collect();
    client
        .database("blog")
        .collection("posts")
        .insert_many(posts)
        .await?;
    // One sharded collection, spread over every shard by a hashed key.
    let admin = client.database("admin");
    admin
        .run_command(doc! {"enableSharding": "analytics"})
        .await?;
    admin
        .run_command(doc! {"shardCollection": "analytics.events", "key": {"_id": "hashed"}})
        .await?;
    let events: Vec<_> = (0..500)
        .map(|i| doc! {"kind": (["view", "click"][i % 2]), "n": i as i64})
        .collect();
    client
        .database("analytics")
        .collection("events")
        .insert_many(events)
        .await?;
    println!(
        "  loaded shop.orders (1000), shop.customers (97), blog.posts (50), analytics.events (500, sharded on hashed _id)"
    );
    Ok(())
}
