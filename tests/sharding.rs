//! Cluster metadata through the router: shardCollection, split, mergeChunks,
//! zones, balancer state, removeShard and the config view, with the error
//! codes mongos gives for bad input.

mod support;

use bson::{doc, Bson, Document};
use support::{admin, admin_error, aggregate_all, config_docs, TestCluster};

async fn chunks_of(client: &mongodb::Client, ns: &str) -> Vec<Document> {
    config_docs(client, "chunks", doc! {"ns": ns}, doc! {"min": 1}).await
}

fn shard_of(chunk: &Document) -> &str {
    chunk.get_str("shard").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_split_merge_and_bad_input() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "app", "primaryShard": "shard0001"},
    )
    .await;

    // Bad shard keys and namespaces change nothing.
    assert_eq!(
        admin_error(
            &client,
            doc! {"shardCollection": "app.x", "key": {"a": "text"}}
        )
        .await,
        2
    );
    assert_eq!(
        admin_error(
            &client,
            doc! {"shardCollection": "app.x", "key": {"a": "hashed", "b": "hashed"}}
        )
        .await,
        2
    );
    assert_eq!(
        admin_error(&client, doc! {"shardCollection": "app.x", "key": {}}).await,
        2
    );
    assert_eq!(
        admin_error(&client, doc! {"shardCollection": "nodb.x", "key": {"a": 1}}).await,
        26
    );
    assert_eq!(
        admin_error(&client, doc! {"shardCollection": "noDot", "key": {"a": 1}}).await,
        73
    );
    assert!(config_docs(&client, "collections", doc! {}, doc! {})
        .await
        .is_empty());

    let r = admin(
        &client,
        doc! {"shardCollection": "app.orders", "key": {"customerId": 1}},
    )
    .await;
    assert_eq!(r.get_str("collectionsharded").unwrap(), "app.orders");
    // Again with the same key: fine, as on mongos; with another key: refused.
    admin(
        &client,
        doc! {"shardCollection": "app.orders", "key": {"customerId": 1}},
    )
    .await;
    assert_eq!(
        admin_error(
            &client,
            doc! {"shardCollection": "app.orders", "key": {"other": 1}}
        )
        .await,
        23
    );
    let chunks = chunks_of(&client, "app.orders").await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        shard_of(&chunks[0]),
        "shard0001",
        "the one chunk is on the primary"
    );
    assert_eq!(
        chunks[0].get_document("min").unwrap(),
        &doc! {"customerId": Bson::MinKey}
    );
    let colls = config_docs(&client, "collections", doc! {}, doc! {}).await;
    assert_eq!(
        colls[0].get_document("key").unwrap(),
        &doc! {"customerId": 1}
    );

    // Writes and reads go to the one owning shard.
    let orders = client.database("app").collection::<Document>("orders");
    let docs: Vec<Document> = (0..100)
        .map(|i| doc! {"customerId": format!("c{i:03}"), "n": i})
        .collect();
    orders.insert_many(docs).await.unwrap();
    assert_eq!(orders.count_documents(doc! {}).await.unwrap(), 100);

    // split: middle, at an existing bound, find (median of the data).
    admin(
        &client,
        doc! {"split": "app.orders", "middle": {"customerId": "c050"}},
    )
    .await;
    assert_eq!(
        admin_error(
            &client,
            doc! {"split": "app.orders", "middle": {"customerId": "c050"}}
        )
        .await,
        87
    );
    assert_ne!(
        admin_error(
            &client,
            doc! {"split": "app.orders", "middle": {"wrong": 1}}
        )
        .await,
        0
    );
    admin(
        &client,
        doc! {"split": "app.orders", "find": {"customerId": "c010"}},
    )
    .await;
    let chunks = chunks_of(&client, "app.orders").await;
    assert_eq!(chunks.len(), 3);
    assert_eq!(
        chunks[1].get_document("min").unwrap(),
        &doc! {"customerId": "c025"},
        "median of c000..c049"
    );
    assert_eq!(
        chunks[2].get_document("min").unwrap(),
        &doc! {"customerId": "c050"}
    );
    let version = admin(&client, doc! {"getShardVersion": "app.orders"}).await;
    assert_eq!(
        version.get_timestamp("version").unwrap(),
        bson::Timestamp {
            time: 1,
            increment: 4
        }
    );

    // mergeChunks needs exact chunk bounds.
    assert_eq!(
        admin_error(&client, doc! {"mergeChunks": "app.orders", "bounds": [{"customerId": "c001"}, {"customerId": Bson::MaxKey}]}).await,
        20
    );
    admin(&client, doc! {"mergeChunks": "app.orders", "bounds": [{"customerId": Bson::MinKey}, {"customerId": Bson::MaxKey}]}).await;
    assert_eq!(chunks_of(&client, "app.orders").await.len(), 1);
    assert_eq!(
        orders.count_documents(doc! {}).await.unwrap(),
        100,
        "no document lost"
    );

    // A non-empty collection needs a supporting index first.
    let items = client.database("app").collection::<Document>("items");
    items
        .insert_many((0..10).map(|i| doc! {"sku": i}))
        .await
        .unwrap();
    assert_eq!(
        admin_error(
            &client,
            doc! {"shardCollection": "app.items", "key": {"sku": 1}}
        )
        .await,
        72
    );
    items
        .create_index(mongodb::IndexModel::builder().keys(doc! {"sku": 1}).build())
        .await
        .unwrap();
    admin(
        &client,
        doc! {"shardCollection": "app.items", "key": {"sku": 1}},
    )
    .await;

    // Hashed: initial chunks spread over every shard.
    admin(
        &client,
        doc! {"shardCollection": "app.events", "key": {"_id": "hashed"}, "numInitialChunks": 6},
    )
    .await;
    let chunks = chunks_of(&client, "app.events").await;
    assert_eq!(chunks.len(), 6);
    for shard in ["shard0000", "shard0001", "shard0002"] {
        assert_eq!(
            chunks.iter().filter(|c| shard_of(c) == shard).count(),
            2,
            "{shard}"
        );
    }
    assert_eq!(
        admin_error(
            &client,
            doc! {"shardCollection": "app.u", "key": {"a": "hashed"}, "unique": true}
        )
        .await,
        72
    );
    // Inserts spread by hash; reads merge from every shard.
    let events = client.database("app").collection::<Document>("events");
    events
        .insert_many((0..60).map(|i| doc! {"_id": i, "n": i}))
        .await
        .unwrap();
    assert_eq!(events.count_documents(doc! {}).await.unwrap(), 60);
    let mut spread = Vec::new();
    for shard in &cluster.shards {
        let n = support::direct_client(shard)
            .await
            .database("app")
            .collection::<Document>("events")
            .count_documents(doc! {})
            .await
            .unwrap();
        spread.push(n);
    }
    assert_eq!(spread.iter().sum::<u64>(), 60);
    assert!(
        spread.iter().all(|n| *n > 0),
        "every shard got documents: {spread:?}"
    );
    // An update across shards reaches every document once.
    let r = events
        .update_many(doc! {}, doc! {"$set": {"x": 1}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (60, 60));

    // Dropping a sharded collection forgets its metadata.
    client
        .database("app")
        .collection::<Document>("events")
        .drop()
        .await
        .unwrap();
    assert!(chunks_of(&client, "app.events").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_balancer_settings_and_remove_shard() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "geo", "primaryShard": "shard0002"},
    )
    .await;

    assert_eq!(
        admin_error(&client, doc! {"addShardToZone": "nope", "zone": "EU"}).await,
        70
    );
    admin(&client, doc! {"addShardToZone": "shard0000", "zone": "EU"}).await;
    admin(&client, doc! {"addShardToZone": "shard0001", "zone": "US"}).await;
    let eu = doc! {"updateZoneKeyRange": "geo.users", "min": {"country": "DE"}, "max": {"country": "DF"}, "zone": "EU"};
    admin(&client, eu.clone()).await;
    admin(&client, eu).await; // idempotent
    assert_eq!(
        admin_error(&client, doc! {"updateZoneKeyRange": "geo.users", "min": {"country": "DE5"}, "max": {"country": "E"}, "zone": "US"}).await,
        178,
        "overlap"
    );
    assert_eq!(
        admin_error(&client, doc! {"updateZoneKeyRange": "geo.users", "min": {"country": "X"}, "max": {"country": "Y"}, "zone": "APAC"}).await,
        177,
        "unknown zone"
    );
    admin(&client, doc! {"addTagRange": "geo.users", "min": {"country": "US"}, "max": {"country": "UT"}, "tag": "US"}).await;
    // The last shard of a zone with ranges cannot leave it.
    assert_eq!(
        admin_error(
            &client,
            doc! {"removeShardFromZone": "shard0000", "zone": "EU"}
        )
        .await,
        163
    );

    admin(
        &client,
        doc! {"shardCollection": "geo.users", "key": {"country": 1}},
    )
    .await;
    let chunks = chunks_of(&client, "geo.users").await;
    let layout: Vec<(Document, String)> = chunks
        .iter()
        .map(|c| {
            (
                c.get_document("min").unwrap().clone(),
                shard_of(c).to_owned(),
            )
        })
        .collect();
    assert_eq!(
        layout,
        vec![
            (doc! {"country": Bson::MinKey}, "shard0002".to_owned()),
            (doc! {"country": "DE"}, "shard0000".to_owned()),
            (doc! {"country": "DF"}, "shard0002".to_owned()),
            (doc! {"country": "US"}, "shard0001".to_owned()),
            (doc! {"country": "UT"}, "shard0002".to_owned()),
        ]
    );
    let tags = config_docs(&client, "tags", doc! {"ns": "geo.users"}, doc! {"min": 1}).await;
    assert_eq!(tags.len(), 2);
    assert_eq!(tags[1].get_str("tag").unwrap(), "US");
    // zone: null removes a range.
    admin(&client, doc! {"updateZoneKeyRange": "geo.users", "min": {"country": "US"}, "max": {"country": "UT"}, "zone": Bson::Null}).await;
    assert_eq!(
        config_docs(&client, "tags", doc! {"ns": "geo.users"}, doc! {})
            .await
            .len(),
        1
    );
    let shards = config_docs(&client, "shards", doc! {"tags": "EU"}, doc! {}).await;
    assert_eq!(shards.len(), 1);

    // Balancer state and config.settings writes (what mongosh's helpers do).
    admin(&client, doc! {"balancerStop": 1}).await;
    assert_eq!(
        admin(&client, doc! {"balancerStatus": 1})
            .await
            .get_str("mode")
            .unwrap(),
        "off"
    );
    let settings = config_docs(&client, "settings", doc! {"_id": "balancer"}, doc! {}).await;
    assert!(settings[0].get_bool("stopped").unwrap());
    admin(&client, doc! {"balancerStart": 1}).await;
    assert_eq!(
        admin(&client, doc! {"balancerStatus": 1})
            .await
            .get_str("mode")
            .unwrap(),
        "full"
    );
    let config_settings = client.database("config").collection::<Document>("settings");
    config_settings
        .update_one(doc! {"_id": "chunksize"}, doc! {"$set": {"value": 1}})
        .upsert(true)
        .await
        .unwrap();
    let chunksize = config_docs(&client, "settings", doc! {"_id": "chunksize"}, doc! {}).await;
    assert_eq!(chunksize[0].get_i32("value").unwrap(), 1);
    // The whole update language, as mongos's config server applies it.
    let r = config_settings
        .update_one(
            doc! {"_id": "chunksize"},
            doc! {"$inc": {"value": 63}, "$currentDate": {"at": true}},
        )
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    config_settings
        .update_one(
            doc! {"_id": "notes"},
            doc! {"$push": {"list": {"$each": [3, 1, 2], "$sort": 1}}, "$setOnInsert": {"made": 1}},
        )
        .upsert(true)
        .await
        .unwrap();
    config_settings
        .update_one(
            doc! {"_id": "notes"},
            vec![doc! {"$set": {"total": {"$sum": "$list"}}}],
        )
        .await
        .unwrap();
    let notes = config_docs(&client, "settings", doc! {"_id": "notes"}, doc! {}).await;
    assert_eq!(
        notes[0],
        doc! {"_id": "notes", "list": [1, 2, 3], "made": 1, "total": 6}
    );
    let chunksize = config_docs(&client, "settings", doc! {"_id": "chunksize"}, doc! {}).await;
    assert_eq!(chunksize[0].get_i32("value").unwrap(), 64);
    assert!(chunksize[0].get_datetime("at").is_ok());
    let config_collections = client
        .database("config")
        .collection::<Document>("collections");
    config_collections
        .update_one(
            doc! {"_id": "geo.users"},
            doc! {"$max": {"maxChunkSizeBytes": 2_097_152i64}},
        )
        .await
        .unwrap();
    let users = config_docs(&client, "collections", doc! {"_id": "geo.users"}, doc! {}).await;
    assert_eq!(users[0].get_i64("maxChunkSizeBytes").unwrap(), 2_097_152);
    let err = config_collections
        .update_one(doc! {"_id": "geo.users"}, doc! {"$inc": {"unique": 1}})
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&err), 20, "only the balancing fields");
    config_collections
        .update_one(
            doc! {"_id": "geo.users"},
            doc! {"$unset": {"maxChunkSizeBytes": ""}},
        )
        .await
        .unwrap();
    config_settings
        .delete_one(doc! {"_id": "notes"})
        .await
        .unwrap();
    let err = client
        .database("config")
        .collection::<Document>("chunks")
        .delete_many(doc! {})
        .await
        .unwrap_err();
    assert_eq!(
        support::error_code(&err),
        20,
        "the view refuses raw metadata writes"
    );
    // Aggregations mongosh runs over the view.
    let per_shard = aggregate_all(
        &client.database("config").collection::<Document>("chunks"),
        vec![
            doc! {"$match": {"ns": "geo.users"}},
            doc! {"$group": {"_id": "$shard", "cnt": {"$sum": 1}}},
            doc! {"$project": {"_id": 0, "shard": "$_id", "nChunks": "$cnt"}},
            doc! {"$sort": {"shard": 1}},
        ],
    )
    .await;
    assert_eq!(
        per_shard,
        vec![
            doc! {"shard": "shard0000", "nChunks": 1},
            doc! {"shard": "shard0001", "nChunks": 1},
            doc! {"shard": "shard0002", "nChunks": 3},
        ]
    );
    config_view_reads(&client).await;

    // removeShard: a shard with chunks starts draining and reports what is left.
    let r = admin(&client, doc! {"removeShard": "shard0001"}).await;
    assert_eq!(r.get_str("state").unwrap(), "started");
    let r = admin(&client, doc! {"removeShard": "shard0001"}).await;
    assert_eq!(r.get_str("state").unwrap(), "ongoing");
    assert_eq!(
        r.get_document("remaining")
            .unwrap()
            .get_i64("chunks")
            .unwrap(),
        1
    );
    let draining = config_docs(&client, "shards", doc! {"_id": "shard0001"}, doc! {}).await;
    assert!(draining[0].get_bool("draining").unwrap());
    // An empty shard is removed at once.
    let dir = tempfile::tempdir().unwrap();
    let extra = support::start_shards(dir.path(), 1, false).await;
    let added = admin(
        &client,
        doc! {"addShard": extra[0].address(), "name": "spare"},
    )
    .await;
    assert_eq!(added.get_str("shardAdded").unwrap(), "spare");
    let r = admin(&client, doc! {"removeShard": "spare"}).await;
    assert_eq!(r.get_str("state").unwrap(), "completed");
    assert_eq!(
        admin_error(&client, doc! {"removeShard": "spare"}).await,
        70
    );
    let version = config_docs(&client, "version", doc! {}, doc! {}).await;
    assert!(version[0].get_object_id("clusterId").is_ok());
    let mongos = config_docs(&client, "mongos", doc! {}, doc! {}).await;
    assert_eq!(mongos.len(), 1, "this router is registered");
}

/// Reads of the config view that the router's own engine cannot run
/// (`$facet`, `$sortByCount` inside it) or that need a cursor answer as
/// a server would: geo.users has 1 chunk on shard0000 and shard0001 and 3
/// on shard0002.
async fn config_view_reads(client: &mongodb::Client) {
    use futures::TryStreamExt;
    let chunks = client.database("config").collection::<Document>("chunks");
    let faceted = aggregate_all(
        &chunks,
        vec![
            doc! {"$match": {"ns": "geo.users"}},
            doc! {"$facet": {
                "byShard": [{"$sortByCount": "$shard"}, {"$sort": {"count": -1, "_id": 1}}],
                "total": [{"$count": "n"}],
            }},
        ],
    )
    .await;
    assert_eq!(
        faceted,
        vec![doc! {
            "byShard": [
                {"_id": "shard0002", "count": 3},
                {"_id": "shard0000", "count": 1},
                {"_id": "shard0001", "count": 1},
            ],
            "total": [{"n": 5}],
        }]
    );
    // A stage no server knows gets the server's error, not NotImplemented.
    let err = chunks
        .aggregate(vec![doc! {"$noSuchStage": {}}])
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&err), 40324);
    let mut shards: Vec<Bson> = chunks
        .distinct("shard", doc! {"ns": "geo.users"})
        .await
        .unwrap();
    shards.sort_by_key(|b| b.as_str().unwrap_or_default().to_owned());
    assert_eq!(
        shards,
        vec![
            Bson::from("shard0000"),
            Bson::from("shard0001"),
            Bson::from("shard0002")
        ]
    );
    let n = client
        .database("config")
        .run_command(doc! {"count": "chunks", "query": {"ns": "geo.users", "shard": "shard0002"}})
        .await
        .unwrap();
    assert_eq!(n.get_i64("n").unwrap(), 3);
    // Small batches: the rest comes with getMore.
    let batched: Vec<Document> = chunks
        .find(doc! {"ns": "geo.users"})
        .sort(doc! {"min": 1})
        .batch_size(2)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batched.len(), 5);
    assert_eq!(batched, chunks_of(client, "geo.users").await);
    // $shardedDataDistribution followed by a stage for the shard.
    let per_ns: Vec<Document> = client
        .database("admin")
        .aggregate(vec![
            doc! {"$shardedDataDistribution": {}},
            doc! {"$match": {"ns": "geo.users"}},
            doc! {"$facet": {"n": [{"$count": "n"}]}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(per_ns, vec![doc! {"n": [{"n": 1}]}]);
}
