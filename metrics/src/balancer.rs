//! Balancer metrics: rounds and their outcome, migrations and what they
//! copied.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::histogram::Histogram;
use crate::text::Exposition;

/// How a balancing round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    /// It ran to its end.
    Completed,
    /// It failed.
    Failed,
}

/// How a migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// The chunk moved.
    Committed,
    /// It was aborted.
    Failed,
}

/// The balancer's counters.
#[derive(Debug, Default)]
pub struct BalancerMetrics {
    rounds: [AtomicU64; 2],
    migrations: [AtomicU64; 2],
    /// Migrations running now.
    active: AtomicI64,
    docs_copied: AtomicU64,
    bytes_copied: AtomicU64,
    docs_caught_up: AtomicU64,
    catchup_passes: AtomicU64,
    critical_section: Histogram,
}

/// What one committed migration did, for [`BalancerMetrics::migrated`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrationFigures {
    /// Documents copied by the clone.
    pub docs: u64,
    /// Bytes copied by the clone.
    pub bytes: u64,
    /// Documents re-synced from change events.
    pub caught_up: u64,
    /// Catch-up passes over the change stream.
    pub passes: u64,
    /// How long writes to the range were held.
    pub critical: Duration,
}

impl BalancerMetrics {
    /// Counts a round.
    pub fn round(&self, outcome: RoundOutcome) {
        self.rounds[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A migration started.
    pub fn migration_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// A migration ended; `figures` when it committed.
    pub fn migration_ended(&self, figures: Option<MigrationFigures>) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        let Some(f) = figures else {
            self.migrations[MigrationOutcome::Failed as usize].fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.migrations[MigrationOutcome::Committed as usize].fetch_add(1, Ordering::Relaxed);
        self.docs_copied.fetch_add(f.docs, Ordering::Relaxed);
        self.bytes_copied.fetch_add(f.bytes, Ordering::Relaxed);
        self.docs_caught_up
            .fetch_add(f.caught_up, Ordering::Relaxed);
        self.catchup_passes.fetch_add(f.passes, Ordering::Relaxed);
        self.critical_section.observe(f.critical);
    }

    /// Writes `shardgate_balancer_*` and `shardgate_migration_*`.
    pub fn render(&self, out: &mut Exposition) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let name = "shardgate_balancer_rounds_total";
        out.family(name, "counter", "Balancing rounds run, by outcome.");
        out.sample(name, &[("outcome", "completed")], get(&self.rounds[0]));
        out.sample(name, &[("outcome", "failed")], get(&self.rounds[1]));
        let name = "shardgate_migrations_total";
        out.family(name, "counter", "Chunk migrations ended, by outcome.");
        out.sample(name, &[("outcome", "committed")], get(&self.migrations[0]));
        out.sample(name, &[("outcome", "failed")], get(&self.migrations[1]));
        out.single(
            "shardgate_migrations_active",
            "gauge",
            "Chunk migrations running now.",
            self.active.load(Ordering::Relaxed) as f64,
        );
        let counters = [
            (
                "shardgate_migration_documents_copied_total",
                "Documents the clone phase of committed migrations copied.",
                &self.docs_copied,
            ),
            (
                "shardgate_migration_bytes_copied_total",
                "Bytes the clone phase of committed migrations copied.",
                &self.bytes_copied,
            ),
            (
                "shardgate_migration_documents_caught_up_total",
                "Documents committed migrations re-synced from change events.",
                &self.docs_caught_up,
            ),
            (
                "shardgate_migration_catchup_passes_total",
                "Catch-up passes over the source's change stream.",
                &self.catchup_passes,
            ),
        ];
        for (name, help, c) in counters {
            out.single(name, "counter", help, get(c));
        }
        let name = "shardgate_migration_critical_section_seconds";
        out.family(
            name,
            "histogram",
            "How long committed migrations held writes to their range.",
        );
        out.histogram(name, &[], &self.critical_section);
    }
}
