//! Sorted `find`s over a collection spread unevenly over 3 shards give the
//! documents in the order one server holding them all gives: values of
//! mixed types, arrays (empty ones too), dotted paths through arrays of
//! documents, missing fields; ascending, descending and compound; with
//! skip, limit, small batches, and projections that keep the sorted
//! values. The router merges these by keys it reads from the documents
//! themselves (the shards compute no `$sortKey`), so this checks its keys
//! against a server's own sort. (Asked for `$sortKey` over these values,
//! the SecantusDB shards fail with an internal error.) No sort here is over
//! two array fields at once, which a mongod refuses.

mod support;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use support::{admin, TestCluster};

/// A value of one of several types, picked by `i`.
fn value(i: i64) -> Option<Bson> {
    Some(match i % 13 {
        0 => return None,
        1 => Bson::Null,
        2 => Bson::Int32((i % 7) as i32 - 3),
        3 => Bson::Double((i % 11) as f64 / 2.0 - 2.0),
        4 => Bson::Int64(i % 5),
        5 => Bson::String(format!("s{}", i % 6)),
        6 => Bson::Array(vec![]),
        7 => Bson::Array(vec![
            Bson::Int32((i % 4) as i32),
            Bson::Int32(-((i % 3) as i32)),
        ]),
        8 => Bson::Boolean(i % 2 == 0),
        9 => Bson::Document(doc! {"x": i % 3}),
        10 => Bson::Array(vec![Bson::String(format!("a{}", i % 3)), Bson::Int32(1)]),
        11 => Bson::DateTime(bson::DateTime::from_millis(i % 9)),
        _ => Bson::Decimal128(format!("{}.5", i % 4).parse().unwrap()),
    })
}

fn docs() -> Vec<Document> {
    (0..600i64)
        .map(|i| {
            let mut d = doc! {"_id": i, "k": (i * 37) % 600};
            if let Some(v) = value(i) {
                d.insert("v", v);
            }
            // `o.c` through a document, an array of documents, or nothing.
            match i % 4 {
                0 => {}
                1 => {
                    d.insert("o", doc! {"c": value(i / 3).unwrap_or(Bson::Int32(0))});
                }
                2 => {
                    let items: Vec<Bson> = (0..(i % 3))
                        .map(|j| Bson::Document(doc! {"c": (i + j) % 5}))
                        .collect();
                    d.insert("o", items);
                }
                _ => {
                    d.insert("o", doc! {"other": 1});
                }
            }
            d
        })
        .collect()
}

async fn read(
    coll: &mongodb::Collection<Document>,
    (sort, projection): (Document, Option<Document>),
    skip: u64,
    limit: i64,
) -> Vec<Document> {
    coll.find(doc! {})
        .sort(sort)
        .projection(projection.unwrap_or_default())
        .skip(skip)
        .limit(limit)
        .batch_size(7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_finds_across_shards_match_one_server() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "sf", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "sf.c", "key": {"k": 1}}).await;
    for (middle, to) in [(100, "shard0001"), (250, "shard0002"), (400, "shard0001")] {
        admin(&client, doc! {"split": "sf.c", "middle": {"k": middle}}).await;
        let mv =
            doc! {"moveChunk": "sf.c", "find": {"k": middle}, "to": to, "_waitForDelete": true};
        admin(&client, mv).await;
    }
    let db = client.database("sf");
    let sharded = db.collection::<Document>("c");
    let plain = db.collection::<Document>("plain");
    sharded.insert_many(docs()).await.unwrap();
    plain.insert_many(docs()).await.unwrap();

    for (sort, projection) in [
        (doc! {"v": 1, "_id": 1}, None),
        (doc! {"v": -1, "_id": 1}, None),
        (doc! {"o.c": 1, "_id": -1}, None),
        (doc! {"o.c": -1, "k": 1}, None),
        (doc! {"k": -1}, None),
        // Projections that keep the sorted values.
        (doc! {"v": 1, "_id": 1}, Some(doc! {"v": 1})),
        (
            doc! {"o.c": -1, "k": 1},
            Some(doc! {"o": 1, "k": 1, "_id": 0}),
        ),
        (doc! {"v": -1, "_id": 1}, Some(doc! {"k": 0, "o": 0})),
    ] {
        let sort = (sort, projection);
        for (skip, limit) in [(0, 0), (13, 50)] {
            let got = read(&sharded, sort.clone(), skip, limit).await;
            let want = read(&plain, sort.clone(), skip, limit).await;
            let (s, p) = &sort;
            assert_eq!(
                got, want,
                "sort {s} projection {p:?} skip {skip} limit {limit}"
            );
        }
    }
}
