//! Sharding DDL events (`shardCollection`, `reshardCollection`,
//! `refineCollectionShardKey`) in change streams opened with
//! `showExpandedEvents`, as mongos reports them. The shards know nothing of
//! sharding, so the router leaves a trace they do report: it inserts the
//! event into a fresh collection `<db>.tmp.shardgate.ddl.<id>` on the
//! database's primary shard and drops it. An expanded stream watches the
//! database there and turns such an insert, on the shard and before the
//! client's own stages, into the event it stands for (its resume token
//! the insert's); every other stream drops it with the router's other
//! temporary collections.

use bson::{doc, Bson, Document};
use shardgate_shard_client::exclude_migration_events;

use crate::session::Namespace;
use crate::shards::run_on_shard;
use crate::state::RouterState;

/// The collections the traces go in.
const PREFIX: &str = "tmp.shardgate.ddl.";

/// Records the event `op` of `ns` (with `operationDescription` `desc` and
/// the collection's UUID) for expanded change streams. Best effort: the
/// DDL itself has happened.
pub(crate) async fn record(state: &RouterState, ns: &str, op: &str, desc: Document, uuid: Bson) {
    let Namespace { db, coll } = Namespace::parse(ns);
    let database = match state.placement.cached(db) {
        Some(d) => Some(d),
        None => state.catalog.database(db).await.ok().flatten(),
    };
    let Some(primary) = database.and_then(|d| state.placement.shard(&d.primary).ok()) else {
        return;
    };
    let trace = format!("{PREFIX}{}", bson::oid::ObjectId::new().to_hex());
    let event = doc! {
        "op": op, "ns": ns, "nsDoc": {"db": db, "coll": coll},
        "desc": desc, "uuid": uuid,
    };
    let insert = doc! {"insert": &trace, "documents": [event], "$db": db};
    if let Err(e) = run_on_shard(state, &primary, insert).await {
        tracing::warn!(%ns, op, error = %e, "could not record a change event");
    }
    let _ = run_on_shard(state, &primary, doc! {"drop": &trace, "$db": db}).await;
}

/// The stages an expanded stream's feed runs right after `$changeStream`
/// (instead of the plain exclusion): migration writes left out, the
/// router's temporary collections left out but for the traces of events in
/// scope (`coll`: one collection of `db`; `None`: the database or, on
/// `admin`, the cluster), which become their events.
pub(crate) fn stages(db: &str, coll: Option<&str>, cluster: bool) -> Vec<Bson> {
    let excluded = exclude_migration_events();
    let sessions = excluded
        .get_document("$match")
        .ok()
        .and_then(|m| m.get("lsid.id").cloned())
        .unwrap_or(Bson::Null);
    let trace_ns = doc! {"$regex": format!("^{}", regex::escape(PREFIX))};
    let temp = doc! {"$regex": "^tmp\\.shardgate\\."};
    let mut trace = doc! {"ns.coll": trace_ns, "operationType": "insert"};
    let own = match (coll, cluster) {
        (Some(c), _) => {
            trace.insert("fullDocument.ns", format!("{db}.{c}"));
            doc! {"$or": [{"ns.coll": c}, {"operationType": "dropDatabase"}]}
        }
        (None, false) => {
            trace.insert("fullDocument.nsDoc.db", db);
            doc! {"ns.coll": {"$not": temp}}
        }
        (None, true) => doc! {"ns.coll": {"$not": temp}},
    };
    let is_trace = doc! {"$eq": [{"$substrBytes": ["$ns.coll", 0, PREFIX.len() as i32]}, PREFIX]};
    let event = doc! {
        "_id": "$_id", "operationType": "$fullDocument.op",
        "clusterTime": "$clusterTime", "wallTime": "$wallTime",
        "collectionUUID": "$fullDocument.uuid", "ns": "$fullDocument.nsDoc",
        "operationDescription": "$fullDocument.desc",
    };
    vec![
        Bson::Document(doc! {"$match": {"lsid.id": sessions, "$or": [own, trace]}}),
        Bson::Document(doc! {"$replaceWith": {"$cond": [is_trace, event, "$$ROOT"]}}),
    ]
}

/// Whether a stream's `$changeStream` options ask for expanded events.
pub(crate) fn expanded(options: &Document) -> bool {
    options.get_bool("showExpandedEvents").unwrap_or(false)
}
