//! The two-phase commit against fake shards that have `prepareTransaction`
//! (no shard process here has it): every writer prepares before any
//! commits, the decision in the store carries the highest prepare
//! timestamp, every participant commits at it; a refused prepare aborts
//! everywhere and nothing commits.

use std::sync::Arc;

use bson::{doc, Document, Timestamp};
use shardgate_wire::OpMsg;

use crate::commands::dispatch;
use crate::testing::{session, sharded_state, FakeShards};

fn msg(body: Document) -> OpMsg {
    OpMsg::from_body(body.to_vec().unwrap())
}

fn reply_of(reply: crate::session::Reply) -> Document {
    match reply {
        crate::session::Reply::Body(b) => Document::from_reader(&b[..]).unwrap(),
        crate::session::Reply::Msg(m) => Document::try_from(m.body()).unwrap(),
    }
}

/// Inserts `x: 1` (shard s0) and `x: 60` (shard s1) in transaction 1 of
/// `lsid`, then commits; returns the commit's reply.
async fn write_both_and_commit(
    state: &Arc<crate::state::RouterState>,
    lsid: &Document,
) -> Document {
    let mut s = session();
    for (i, x) in [1, 60].into_iter().enumerate() {
        let mut body = doc! {"insert": "c", "documents": [{"x": x}], "lsid": lsid.clone(), "txnNumber": 1i64, "autocommit": false, "$db": "db"};
        if i == 0 {
            body.insert("startTransaction", true);
        }
        let (reply, _) = dispatch(state, &mut s, &msg(body)).await;
        assert_eq!(reply_of(reply).get_f64("ok").unwrap(), 1.0);
    }
    let commit = doc! {"commitTransaction": 1, "lsid": lsid.clone(), "txnNumber": 1i64, "autocommit": false, "$db": "admin"};
    let (reply, _) = dispatch(state, &mut s, &msg(commit)).await;
    reply_of(reply)
}

#[tokio::test]
async fn writers_prepare_then_commit_at_the_highest_prepare_timestamp() {
    let fake = Arc::new(FakeShards::default());
    let (early, late) = (
        Timestamp {
            time: 10,
            increment: 1,
        },
        Timestamp {
            time: 12,
            increment: 3,
        },
    );
    fake.prepares
        .lock()
        .unwrap()
        .insert("s0".into(), Some(early));
    fake.prepares
        .lock()
        .unwrap()
        .insert("s1".into(), Some(late));
    let (state, _dir) = sharded_state(fake.clone()).await;
    let lsid = doc! {"id": bson::Uuid::new()};
    let reply = write_both_and_commit(&state, &lsid).await;
    assert_eq!(reply.get_f64("ok").unwrap(), 1.0, "{reply}");
    let calls = fake.calls.lock().unwrap().clone();
    let names: Vec<(&str, &str)> = calls
        .iter()
        .filter(|c| c.name.ends_with("Transaction"))
        .filter(|c| c.body.contains_key("lsid"))
        .map(|c| (c.name.as_str(), c.shard.as_str()))
        .collect();
    let last_prepare = names
        .iter()
        .rposition(|(n, _)| *n == "prepareTransaction")
        .unwrap();
    let first_commit = names
        .iter()
        .position(|(n, _)| *n == "commitTransaction")
        .unwrap();
    assert!(last_prepare < first_commit, "{names:?}");
    let commits: Vec<_> = calls
        .iter()
        .filter(|c| c.name == "commitTransaction")
        .collect();
    assert_eq!(commits.len(), 2);
    for c in commits {
        assert_eq!(
            c.body.get_timestamp("commitTimestamp").unwrap(),
            late,
            "{}",
            c.body
        );
        assert_eq!(c.body.get_i64("txnNumber").unwrap(), 1);
    }
    let key = super::lsid_key(&bson::RawDocumentBuf::try_from(&lsid).unwrap());
    let decision = state.catalog.decision(&key, 1).await.unwrap().unwrap();
    assert_eq!(decision.commit_timestamp, Some(late));
    assert!(decision.done);
    assert_eq!(decision.participants, ["s0", "s1"]);
    let section = state.transactions.counters.section(0);
    let two_phase = section
        .get_document("commitTypes")
        .unwrap()
        .get_document("twoPhaseCommit")
        .unwrap();
    assert_eq!(two_phase.get_i64("successful").unwrap(), 1);
}

#[tokio::test]
async fn a_refused_prepare_aborts_every_participant() {
    let fake = Arc::new(FakeShards::default());
    fake.prepares.lock().unwrap().insert(
        "s0".into(),
        Some(Timestamp {
            time: 10,
            increment: 1,
        }),
    );
    fake.prepares.lock().unwrap().insert("s1".into(), None);
    let (state, _dir) = sharded_state(fake.clone()).await;
    let lsid = doc! {"id": bson::Uuid::new()};
    let reply = write_both_and_commit(&state, &lsid).await;
    assert_eq!(reply.get_i32("code").unwrap(), 251, "{reply}");
    assert_eq!(
        reply.get_array("errorLabels").unwrap(),
        &vec![bson::Bson::from("TransientTransactionError")]
    );
    assert!(fake.calls_named("commitTransaction").is_empty());
    let aborted: Vec<String> = fake
        .calls_named("abortTransaction")
        .into_iter()
        .map(|c| c.shard)
        .collect();
    assert_eq!(aborted, ["s0", "s1"]);
    let key = super::lsid_key(&bson::RawDocumentBuf::try_from(&lsid).unwrap());
    assert!(
        state.catalog.decision(&key, 1).await.unwrap().is_none(),
        "no decision"
    );
}

#[tokio::test]
async fn without_prepare_the_decision_is_stored_before_each_participant_commits() {
    let fake = Arc::new(FakeShards::default());
    let (state, _dir) = sharded_state(fake.clone()).await;
    let lsid = doc! {"id": bson::Uuid::new()};
    let reply = write_both_and_commit(&state, &lsid).await;
    assert_eq!(reply.get_f64("ok").unwrap(), 1.0, "{reply}");
    let commits = fake.calls_named("commitTransaction");
    assert_eq!(commits.len(), 2);
    assert!(commits
        .iter()
        .all(|c| !c.body.contains_key("commitTimestamp")));
    let key = super::lsid_key(&bson::RawDocumentBuf::try_from(&lsid).unwrap());
    let decision = state.catalog.decision(&key, 1).await.unwrap().unwrap();
    assert!(decision.done && decision.commit_timestamp.is_none());
    // The first statement on each shard started the transaction there.
    let inserts = fake.calls_named("insert");
    assert!(inserts
        .iter()
        .all(|c| c.body.get_bool("startTransaction").unwrap_or(false)));
}
