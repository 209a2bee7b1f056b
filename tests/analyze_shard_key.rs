//! `analyzeShardKey` over a collection spread across three shards: the
//! counts, distinct values, most common values and monotonicity a user
//! reads to judge a candidate key, computed over every shard (a shard
//! server alone would see its part only), and mongos's errors.

mod support;

use bson::{doc, Document};
use mongodb::IndexModel;
use support::{admin, admin_error, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_keys_are_measured_over_every_shard() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "an", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "an.c", "key": {"_id": 1}}).await;
    for (middle, to) in [(300, "shard0001"), (700, "shard0002")] {
        admin(&client, doc! {"split": "an.c", "middle": {"_id": middle}}).await;
        admin(
            &client,
            doc! {"moveChunk": "an.c", "find": {"_id": middle}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    let coll = client.database("an").collection::<Document>("c");
    let docs: Vec<Document> = (0..1000i64)
        .map(|i| {
            let hot = if i % 4 == 0 {
                "hot".to_owned()
            } else {
                format!("u{:03}", i % 150)
            };
            doc! {"_id": i, "seq": i, "user": hot, "rnd": (i * 7919) % 1000}
        })
        .collect();
    coll.insert_many(docs).await.unwrap();
    for key in [doc! {"user": 1}, doc! {"seq": 1}, doc! {"rnd": 1}] {
        coll.create_index(IndexModel::builder().keys(key).build())
            .await
            .unwrap();
    }
    let analyze = |key: Document, extra: Document| {
        let client = client.clone();
        async move {
            let mut cmd = doc! {"analyzeShardKey": "an.c", "key": key};
            cmd.extend(extra);
            admin(&client, cmd).await
        }
    };

    // A skewed key: "hot" holds a quarter of the documents.
    let r = analyze(doc! {"user": 1}, doc! {}).await;
    let k = r.get_document("keyCharacteristics").unwrap();
    assert_eq!(k.get_i64("numDocsTotal").unwrap(), 1000);
    assert_eq!(k.get_i64("numDocsSampled").unwrap(), 1000);
    assert_eq!(k.get_i64("numOrphanDocs").unwrap(), 0);
    assert!(!k.get_bool("isUnique").unwrap());
    // u000..u149 minus those whose every document is hot (i % 4 == 0 for
    // all i ≡ u mod 150, never), plus "hot": 151 distinct values.
    assert_eq!(k.get_i64("numDistinctValues").unwrap(), 151);
    let common = k.get_array("mostCommonValues").unwrap();
    assert_eq!(common.len(), 5);
    let first = common[0].as_document().unwrap();
    assert_eq!(first.get_document("value").unwrap(), &doc! {"user": "hot"});
    assert_eq!(first.get_i64("frequency").unwrap(), 250);
    assert!(k.get_i64("avgDocSizeBytes").unwrap() > 20);
    let reads = r.get_document("readDistribution").unwrap();
    assert_eq!(
        reads
            .get_document("sampleSize")
            .unwrap()
            .get_i64("total")
            .unwrap(),
        0
    );
    assert!(r.get_document("writeDistribution").is_ok());

    // An increasing key is monotonic; a scrambled one is not; a hashed one
    // never is.
    let r = analyze(doc! {"seq": 1}, doc! {"readWriteDistribution": false}).await;
    let k = r.get_document("keyCharacteristics").unwrap();
    assert_eq!(k.get_i64("numDistinctValues").unwrap(), 1000);
    let m = k.get_document("monotonicity").unwrap();
    assert_eq!(m.get_str("type").unwrap(), "monotonic", "{m}");
    assert!(m.get_f64("recordIdCorrelationCoefficient").unwrap() > 0.9);
    assert!(r.get_document("readDistribution").is_err());
    let r = analyze(doc! {"rnd": 1}, doc! {}).await;
    let m = r
        .get_document("keyCharacteristics")
        .unwrap()
        .get_document("monotonicity")
        .unwrap();
    assert_eq!(m.get_str("type").unwrap(), "not monotonic", "{m}");
    let r = analyze(doc! {"seq": "hashed"}, doc! {}).await;
    let m = r
        .get_document("keyCharacteristics")
        .unwrap()
        .get_document("monotonicity")
        .unwrap();
    assert_eq!(m.get_str("type").unwrap(), "not monotonic");
    // The _id index is unique on exactly the key.
    let r = analyze(doc! {"_id": 1}, doc! {}).await;
    assert!(r
        .get_document("keyCharacteristics")
        .unwrap()
        .get_bool("isUnique")
        .unwrap());

    // Sampling.
    let r = analyze(doc! {"user": 1}, doc! {"sampleSize": 100i64}).await;
    let sampled = r
        .get_document("keyCharacteristics")
        .unwrap()
        .get_i64("numDocsSampled")
        .unwrap();
    assert!((100..=103).contains(&sampled), "{sampled}");

    // Errors, with mongod's codes.
    let err = |cmd: Document| admin_error(&client, cmd);
    assert_eq!(
        err(doc! {"analyzeShardKey": "an.c", "key": {"nope": 1}}).await,
        20
    );
    assert_eq!(
        err(doc! {"analyzeShardKey": "an.missing", "key": {"a": 1}}).await,
        26
    );
    assert_eq!(
        err(doc! {"analyzeShardKey": "an.c", "key": {"user": 1}, "sampleRate": 0.5, "sampleSize": 10i64}).await,
        72
    );

    // An unsharded collection, on its primary.
    let u = client.database("an").collection::<Document>("u");
    u.insert_many((0..10i64).map(|i| doc! {"_id": i, "x": i % 2}))
        .await
        .unwrap();
    u.create_index(IndexModel::builder().keys(doc! {"x": 1}).build())
        .await
        .unwrap();
    let r = admin(&client, doc! {"analyzeShardKey": "an.u", "key": {"x": 1}}).await;
    let k = r.get_document("keyCharacteristics").unwrap();
    assert_eq!(k.get_i64("numDistinctValues").unwrap(), 2);
    assert!(k.get("numOrphanDocs").is_none());
}
