//! Where a migration's time went, phase by phase, for the changelog's
//! `moveChunk.commit` entry (`phaseMillis`) and the balancer's log.

use std::time::{Duration, Instant};

use bson::{doc, Document};

/// Wall time of each migration phase (steps 1 to 5).
#[derive(Debug, Default, Clone)]
pub(crate) struct Timings {
    /// Routers excluding the destination's orphan range, indexes copied,
    /// leftovers of an earlier attempt deleted, the change stream opened.
    pub prepare: Duration,
    /// The clone, from the first read to the last insert.
    pub clone: Duration,
    /// Of the clone: the source's reads, summed (they overlap the inserts).
    pub clone_read: Duration,
    /// Of the clone: the destination's inserts, summed.
    pub clone_write: Duration,
    /// Catch-up passes before the critical section.
    pub catchup: Duration,
    /// Entering the critical section: the record written and every live
    /// router's acknowledgement.
    pub enter_critical: Duration,
    /// The last drain of the source's events inside the critical section.
    pub drain: Duration,
    /// The commit's store transaction.
    pub commit: Duration,
}

impl Timings {
    /// The figures in milliseconds (fractions kept), as the changelog
    /// entry's `phaseMillis`.
    pub(crate) fn to_doc(&self) -> Document {
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        doc! {
            "prepare": ms(self.prepare),
            "clone": ms(self.clone),
            "cloneRead": ms(self.clone_read),
            "cloneWrite": ms(self.clone_write),
            "catchUp": ms(self.catchup),
            "enterCritical": ms(self.enter_critical),
            "drain": ms(self.drain),
            "commit": ms(self.commit),
        }
    }
}

/// Time since `since`, and restarts it.
pub(crate) fn lap(since: &mut Instant) -> Duration {
    let now = Instant::now();
    let took = now - *since;
    *since = now;
    took
}
