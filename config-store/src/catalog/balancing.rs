//! What routers and the balancer service exchange: move requests and
//! results, migration acknowledgements, the balancer's status, and the
//! test-only fail points a router sets for the balancer at its side.

use bson::Document;

use super::{decode, encode, Catalog};
use crate::error::Result;
use crate::model::keys::{
    ACKS, BALANCER_STATUS, FAIL_POINTS, MIGRATION_PROGRESS, MOVE_REQUESTS, MOVE_RESULTS,
};
use crate::model::{MigrationAck, MigrationProgress, MigrationState, MoveRequest, MoveResult};
use crate::store::Txn;

impl Catalog {
    /// Leaves a move request for a balancer service.
    pub async fn request_move(&self, request: &MoveRequest) -> Result<()> {
        let key = format!("{MOVE_REQUESTS}{}", request.id);
        self.store()
            .txn(Txn::default().put(key, encode(request)?))
            .await?;
        Ok(())
    }

    /// The move requests no balancer has taken yet, oldest first.
    pub async fn move_requests(&self) -> Result<Vec<MoveRequest>> {
        let mut out: Vec<MoveRequest> = self.list(MOVE_REQUESTS).await?;
        out.retain(|r| r.taken_by.is_none());
        out.sort_by_key(|r| r.when);
        Ok(out)
    }

    /// Takes `request` for the balancer `by`; false when another took it
    /// first (or it was withdrawn).
    pub async fn take_move(&self, request: &MoveRequest, by: &str) -> Result<bool> {
        let key = format!("{MOVE_REQUESTS}{}", request.id);
        let Some(current) = self.store().get(&key).await? else {
            return Ok(false);
        };
        let mut taken: MoveRequest = decode(&key, &current.value)?;
        if taken.taken_by.is_some() {
            return Ok(false);
        }
        taken.taken_by = Some(by.to_owned());
        let txn = Txn::default()
            .unchanged(&key, current.mod_revision)
            .put(&key, encode(&taken)?);
        Ok(matches!(
            self.store().txn(txn).await?,
            crate::store::TxnOutcome::Committed(_)
        ))
    }

    /// Answers a move request: its result recorded and the request gone,
    /// at once.
    pub async fn finish_move(&self, result: &MoveResult) -> Result<()> {
        let txn = Txn::default()
            .delete(format!("{MOVE_REQUESTS}{}", result.id))
            .put(format!("{MOVE_RESULTS}{}", result.id), encode(result)?);
        self.store().txn(txn).await?;
        Ok(())
    }

    /// The result of the move request `id`, once there is one.
    pub async fn move_result(&self, id: &str) -> Result<Option<MoveResult>> {
        let key = format!("{MOVE_RESULTS}{id}");
        match self.store().get(&key).await? {
            Some(v) => decode(&key, &v.value).map(Some),
            None => Ok(None),
        }
    }

    /// Forgets a move request and its result (the asking router read it or
    /// gave up).
    pub async fn forget_move(&self, id: &str) -> Result<()> {
        let txn = Txn::default()
            .delete(format!("{MOVE_REQUESTS}{id}"))
            .delete(format!("{MOVE_RESULTS}{id}"));
        self.store().txn(txn).await?;
        Ok(())
    }

    /// Records `router`'s acknowledgement for `ns`.
    pub async fn put_migration_ack(
        &self,
        ns: &str,
        router: &str,
        ack: &MigrationAck,
    ) -> Result<()> {
        let key = format!("{ACKS}{ns}/{router}");
        self.store()
            .txn(Txn::default().put(key, encode(ack)?))
            .await?;
        Ok(())
    }

    /// Every router's acknowledgement for `ns`, by router.
    pub async fn migration_acks(&self, ns: &str) -> Result<Vec<(String, MigrationAck)>> {
        let prefix = format!("{ACKS}{ns}/");
        let mut out = Vec::new();
        for (key, v) in self.store().list(&prefix).await? {
            let router = key.strip_prefix(&prefix).unwrap_or_default().to_owned();
            out.push((router, decode(&key, &v.value)?));
        }
        Ok(out)
    }

    /// The live routers whose acknowledgement for `ns` does not satisfy
    /// `acked` yet.
    pub async fn routers_without_ack(
        &self,
        ns: &str,
        acked: impl Fn(&MigrationAck) -> bool,
    ) -> Result<Vec<String>> {
        let done: std::collections::BTreeSet<String> = self
            .migration_acks(ns)
            .await?
            .into_iter()
            .filter(|(_, ack)| acked(ack))
            .map(|(router, _)| router)
            .collect();
        let mut missing: Vec<String> = self
            .routers()
            .await?
            .into_iter()
            .map(|r| r.id)
            .filter(|id| !done.contains(id))
            .collect();
        missing.sort();
        missing.dedup();
        Ok(missing)
    }

    /// Forgets the acknowledgements for `ns`.
    pub async fn clear_migration_acks(&self, ns: &str) -> Result<()> {
        let keys = self.store().list(&format!("{ACKS}{ns}/")).await?;
        let txn = keys
            .into_iter()
            .fold(Txn::default(), |t, (k, _)| t.delete(k));
        self.store().txn(txn).await?;
        Ok(())
    }

    /// Records the balancer service's counters (`balancerStatus`).
    pub async fn put_balancer_status(&self, status: &Document) -> Result<()> {
        self.store()
            .txn(Txn::default().put(BALANCER_STATUS, encode(status)?))
            .await?;
        Ok(())
    }

    /// The balancer service's counters, if one ever ran.
    pub async fn balancer_status(&self) -> Result<Option<Document>> {
        match self.store().get(BALANCER_STATUS).await? {
            Some(v) => decode(BALANCER_STATUS, &v.value).map(Some),
            None => Ok(None),
        }
    }

    /// Publishes (`Some`) or clears the running migration's progress.
    pub async fn put_migration_progress(&self, progress: Option<&MigrationProgress>) -> Result<()> {
        let txn = match progress {
            Some(p) => Txn::default().put(MIGRATION_PROGRESS, encode(p)?),
            None => Txn::default().delete(MIGRATION_PROGRESS),
        };
        self.store().txn(txn).await?;
        Ok(())
    }

    /// The running migration's progress and its record's state, if one was
    /// published and its record is still there (a balancer that died
    /// leaves its progress behind; recovery removes the record).
    pub async fn migration_progress(&self) -> Result<Option<(MigrationProgress, MigrationState)>> {
        let Some(v) = self.store().get(MIGRATION_PROGRESS).await? else {
            return Ok(None);
        };
        let progress: MigrationProgress = decode(MIGRATION_PROGRESS, &v.value)?;
        let state = self
            .migrations(&progress.ns)
            .await?
            .into_iter()
            .find(|m| m.min == progress.min && m.max == progress.max)
            .map(|m| m.state);
        Ok(state.map(|s| (progress, s)))
    }

    /// Sets (`Some`) or clears a test-only fail point for `process`.
    pub async fn set_fail_point(
        &self,
        name: &str,
        process: &str,
        data: Option<&Document>,
    ) -> Result<()> {
        let key = format!("{FAIL_POINTS}{name}/{process}");
        let txn = match data {
            Some(d) => Txn::default().put(key, encode(d)?),
            None => Txn::default().delete(key),
        };
        self.store().txn(txn).await?;
        Ok(())
    }

    /// The fail point `name` set for `process`, if any.
    pub async fn fail_point(&self, name: &str, process: &str) -> Result<Option<Document>> {
        let key = format!("{FAIL_POINTS}{name}/{process}");
        match self.store().get(&key).await? {
            Some(v) => decode(&key, &v.value).map(Some),
            None => Ok(None),
        }
    }
}
