//! The exact reads mongosh's `sh.status()` issues against the config
//! database (from mongosh's `helpers.js`).

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, DateTime, Document};

use super::{ids, re};
use crate::{aggregate, find};

const NOW: i64 = 1_700_000_000_000;

fn at(minutes_ago: i64) -> Bson {
    Bson::DateTime(DateTime::from_millis(NOW - minutes_ago * 60_000))
}

fn uuid(b: u8) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: vec![b; 16],
    })
}

fn s(v: &str) -> Bson {
    Bson::String(v.to_owned())
}

#[test]
fn mongos_versions() {
    let mongos = vec![
        doc! {"_id": "r1:27017", "ping": at(1), "mongoVersion": "8.0.4"},
        doc! {"_id": "r2:27017", "ping": at(2), "mongoVersion": "7.0.1"},
        doc! {"_id": "r3:27017", "ping": at(3), "mongoVersion": "8.0.4"},
        doc! {"_id": "r4:27017", "ping": at(60), "mongoVersion": "6.0.0"},
    ];
    let pipeline = [
        doc! {"$match": {"ping": {"$gt": at(10)}}},
        doc! {"$group": {"_id": "$mongoVersion", "num": {"$sum": 1}}},
        doc! {"$sort": {"num": -1}},
    ];
    assert_eq!(
        aggregate(mongos.clone(), &pipeline).expect("runs"),
        vec![
            doc! {"_id": "8.0.4", "num": 2},
            doc! {"_id": "7.0.1", "num": 1}
        ]
    );
    let latest = find(mongos, &doc! {}, Some(&doc! {"ping": -1}), None, 0, 1).expect("find");
    assert_eq!(ids(&latest), vec![s("r1:27017")]);
}

fn chunks() -> Vec<Document> {
    vec![
        doc! {"_id": 1, "uuid": uuid(1), "ns": "db.c", "min": {"x": 10}, "max": {"x": Bson::MaxKey}, "shard": "s1"},
        doc! {"_id": 2, "uuid": uuid(1), "ns": "db.c", "min": {"x": Bson::MinKey}, "max": {"x": 0}, "shard": "s0"},
        doc! {"_id": 3, "uuid": uuid(1), "ns": "db.c", "min": {"x": 0}, "max": {"x": 10}, "shard": "s0"},
        doc! {"_id": 4, "uuid": uuid(2), "ns": "db.d", "min": {"y": Bson::MinKey}, "max": {"y": Bson::MaxKey}, "shard": "s1"},
    ]
}

#[test]
fn chunk_distribution() {
    for filter in [doc! {"uuid": uuid(1)}, doc! {"ns": "db.c"}] {
        let pipeline = [
            doc! {"$match": filter},
            doc! {"$group": {"_id": "$shard", "cnt": {"$sum": 1}}},
            doc! {"$project": {"_id": 0, "shard": "$_id", "nChunks": "$cnt"}},
            doc! {"$sort": {"shard": 1}},
        ];
        assert_eq!(
            aggregate(chunks(), &pipeline).expect("runs"),
            vec![
                doc! {"shard": "s0", "nChunks": 2},
                doc! {"shard": "s1", "nChunks": 1}
            ]
        );
    }
}

#[test]
fn chunk_listing_sorted_by_min() {
    let want = vec![Bson::Int32(2), Bson::Int32(3), Bson::Int32(1)];
    let by_uuid = find(
        chunks(),
        &doc! {"uuid": uuid(1)},
        Some(&doc! {"min": 1}),
        None,
        0,
        0,
    );
    assert_eq!(ids(&by_uuid.expect("find")), want);
    let by_ns = find(
        chunks(),
        &doc! {"ns": "db.c"},
        Some(&doc! {"min": 1}),
        None,
        0,
        0,
    );
    assert_eq!(ids(&by_ns.expect("find")), want);
}

fn changelog() -> Vec<Document> {
    vec![
        doc! {"_id": "c1", "time": at(1), "what": "moveChunk.from", "details": {"note": "success", "from": "s0", "to": "s1"}},
        doc! {"_id": "c2", "time": at(2), "what": "moveChunk.from", "details": {"note": "success"}},
        doc! {"_id": "c3", "time": at(3), "what": "moveChunk.from", "details": {"errmsg": "boom", "note": "abort", "from": "s0", "to": "s1"}},
        doc! {"_id": "c4", "time": at(4), "what": "moveChunk.from", "details": {"note": "aborted", "from": "s1", "to": "s0"}},
        doc! {"_id": "c5", "time": at(900), "what": "moveChunk.from", "details": {"note": "success"}},
        doc! {"_id": "c6", "time": at(5), "what": "split", "details": {"note": "success"}},
    ]
}

#[test]
fn successful_migrations() {
    let pipeline = [
        doc! {"$match": {"time": {"$gt": at(60)}, "what": "moveChunk.from", "details.errmsg": {"$exists": false}, "details.note": "success"}},
        doc! {"$group": {"_id": {"msg": "$details.errmsg"}, "count": {"$sum": 1}}},
        doc! {"$project": {"_id": {"$ifNull": ["$_id.msg", "Success"]}, "count": "$count"}},
    ];
    assert_eq!(
        aggregate(changelog(), &pipeline).expect("runs"),
        vec![doc! {"_id": "Success", "count": 2}]
    );
}

#[test]
fn failed_migrations() {
    let pipeline = [
        doc! {"$match": {"time": {"$gt": at(60)}, "what": "moveChunk.from", "$or": [
            {"details.errmsg": {"$exists": true}},
            {"details.note": {"$ne": "success"}},
        ]}},
        doc! {"$group": {"_id": {"msg": "$details.errmsg", "from": "$details.from", "to": "$details.to"}, "count": {"$sum": 1}}},
        doc! {"$project": {"_id": {"$ifNull": ["$_id.msg", "aborted"]}, "from": "$_id.from", "to": "$_id.to", "count": "$count"}},
    ];
    assert_eq!(
        aggregate(changelog(), &pipeline).expect("runs"),
        vec![
            doc! {"_id": "boom", "from": "s0", "to": "s1", "count": 1},
            doc! {"_id": "aborted", "from": "s1", "to": "s0", "count": 1},
        ]
    );
}

#[test]
fn config_finds() {
    let shards = vec![
        doc! {"_id": "s1", "host": "rs1/h:1", "state": 1},
        doc! {"_id": "s0", "host": "rs0/h:0", "state": 1},
        doc! {"_id": "s2", "host": "rs2/h:2", "state": 2},
    ];
    let all = find(shards.clone(), &doc! {}, Some(&doc! {"_id": 1}), None, 0, 0).expect("find");
    assert_eq!(ids(&all), vec![s("s0"), s("s1"), s("s2")]);
    let draining = find(shards, &doc! {"state": {"$eq": 2}}, None, None, 0, 0).expect("find");
    assert_eq!(ids(&draining), vec![s("s2")]);

    let collections = vec![
        doc! {"_id": "db.b", "key": {"x": 1}},
        doc! {"_id": "db.a", "dropped": false},
        doc! {"_id": "db.gone", "dropped": true},
        doc! {"_id": "db.u", "unsplittable": true},
        doc! {"_id": "other.c"},
    ];
    let live = find(
        collections.clone(),
        &doc! {"dropped": {"$ne": true}, "unsplittable": {"$ne": true}},
        Some(&doc! {"_id": 1}),
        None,
        0,
        0,
    );
    assert_eq!(
        ids(&live.expect("find")),
        vec![s("db.a"), s("db.b"), s("other.c")]
    );
    let in_db = find(
        collections,
        &doc! {"_id": re("^db\\.", "")},
        Some(&doc! {"_id": 1}),
        None,
        0,
        0,
    );
    assert_eq!(
        ids(&in_db.expect("find")),
        vec![s("db.a"), s("db.b"), s("db.gone"), s("db.u")]
    );

    let settings = vec![
        doc! {"_id": "chunksize", "value": 128},
        doc! {"_id": "balancer", "mode": "full"},
    ];
    let balancer = find(settings, &doc! {"_id": "balancer"}, None, None, 0, -1).expect("find");
    assert_eq!(balancer, vec![doc! {"_id": "balancer", "mode": "full"}]);
}

#[test]
fn balancer_rounds() {
    let mut actionlog: Vec<Document> = (0..7i64)
        .map(|i| doc! {"_id": i, "what": "balancer.round", "time": at(10 * i)})
        .collect();
    actionlog.push(doc! {"_id": 99, "what": "balancer.start", "time": at(0)});
    let rounds = find(
        actionlog,
        &doc! {"what": "balancer.round"},
        Some(&doc! {"time": -1}),
        None,
        0,
        5,
    );
    let want: Vec<Bson> = (0..5).map(Bson::Int64).collect();
    assert_eq!(ids(&rounds.expect("find")), want);
}

#[test]
fn find_skip_limit_projection() {
    let docs: Vec<Document> = (0..6)
        .map(|i| doc! {"_id": i, "v": i * 10, "w": 1})
        .collect();
    let out = find(
        docs,
        &doc! {"v": {"$gte": 10}},
        Some(&doc! {"v": -1}),
        Some(&doc! {"w": 0}),
        1,
        -2,
    );
    assert_eq!(
        out.expect("find"),
        vec![doc! {"_id": 4, "v": 40}, doc! {"_id": 3, "v": 30}]
    );
}
