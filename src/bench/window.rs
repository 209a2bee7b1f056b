//! The measuring window the clients share — when operations start being
//! recorded and when the clients stop — and the progress line long runs
//! print on stderr.
//!
//! A timed run fixes the window up front (warm-up, then the measured
//! duration); a scenario can instead open and close it when something
//! happens (the migration scenario records the writes that start while the
//! chunk moves).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often a long run prints its progress line.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// "Not yet": a bound that has not been set.
const UNSET: u64 = u64::MAX;

/// When operations are recorded (`from`) and when clients stop (`until`),
/// in microseconds since `base`; and running counts for the progress line.
#[derive(Debug)]
pub struct Window {
    base: Instant,
    from: AtomicU64,
    until: AtomicU64,
    /// Operations finished, recorded or not.
    pub done: AtomicU64,
    /// Operations failed, recorded or not.
    pub failed: AtomicU64,
    /// Documents read by scans, recorded or not.
    pub docs_read: AtomicU64,
}

impl Window {
    /// `warmup` not recorded, then `duration` recorded, then stop.
    pub fn timed(warmup: Duration, duration: Duration) -> Window {
        let from = warmup.as_micros() as u64;
        let until = from + duration.as_micros() as u64;
        Window::with(from, until)
    }

    /// Nothing recorded and no stop until [`Window::open`] and
    /// [`Window::close`] are called.
    pub fn open_ended() -> Window {
        Window::with(UNSET, UNSET)
    }

    fn with(from: u64, until: u64) -> Window {
        Window {
            base: Instant::now(),
            from: AtomicU64::new(from),
            until: AtomicU64::new(until),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            docs_read: AtomicU64::new(0),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }

    fn instant(&self, micros: u64) -> Instant {
        self.base + Duration::from_micros(micros)
    }

    /// Starts recording now.
    pub fn open(&self) {
        self.from
            .store(self.micros(Instant::now()), Ordering::SeqCst);
    }

    /// Stops the clients now (operations in flight finish and are recorded).
    pub fn close(&self) {
        self.until
            .store(self.micros(Instant::now()), Ordering::SeqCst);
    }

    /// When recording started (`None` before it has).
    pub fn opened_at(&self) -> Option<Instant> {
        let from = self.from.load(Ordering::SeqCst);
        (from != UNSET).then(|| self.instant(from))
    }

    /// Whether an operation started at `start` is recorded.
    pub fn records(&self, start: Instant) -> bool {
        let at = self.micros(start);
        at >= self.from.load(Ordering::SeqCst) && at < self.until.load(Ordering::SeqCst)
    }

    /// Whether the clients must stop by `now`.
    pub fn ended(&self, now: Instant) -> bool {
        self.micros(now) >= self.until.load(Ordering::SeqCst)
    }

    /// When an operation started now is abandoned: `grace` after the end
    /// when it is known, else `grace` after `start` plus one minute.
    pub fn abandon_at(&self, start: Instant, grace: Duration) -> Instant {
        match self.until.load(Ordering::SeqCst) {
            UNSET => start + Duration::from_secs(60) + grace,
            until => self.instant(until) + grace,
        }
    }

    /// `label: 12 s, 3456 operations (0 errors)`, and documents read when
    /// there were any.
    pub fn progress_line(&self, label: &str, elapsed: Duration) -> String {
        let read = self.docs_read.load(Ordering::Relaxed);
        let read = if read > 0 {
            format!(", {read} documents read")
        } else {
            String::new()
        };
        format!(
            "bench: {label}: {:.0} s, {} operations ({} errors){read}",
            elapsed.as_secs_f64(),
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        )
    }
}

/// A task printing `line(elapsed)` on stderr every [`PROGRESS_EVERY`] until
/// dropped.
pub struct Progress(JoinHandle<()>);

impl Progress {
    /// Starts printing.
    pub fn start(line: impl Fn(Duration) -> String + Send + 'static) -> Progress {
        let started = Instant::now();
        Progress(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
            loop {
                tick.tick().await;
                eprintln!("{}", line(started.elapsed()));
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_window_records_after_the_warm_up_only() {
        let w = Window::timed(Duration::from_secs(1), Duration::from_secs(2));
        let t0 = w.base;
        assert!(!w.records(t0));
        assert!(w.records(t0 + Duration::from_millis(1500)));
        assert!(!w.records(t0 + Duration::from_secs(3)));
        assert!(!w.ended(t0 + Duration::from_millis(2999)));
        assert!(w.ended(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn an_open_ended_window_records_between_open_and_close() {
        let w = Window::open_ended();
        assert!(!w.records(Instant::now()));
        assert_eq!(w.opened_at(), None);
        w.open();
        assert!(w.opened_at().is_some());
        assert!(w.records(Instant::now()));
        assert!(!w.ended(Instant::now()));
        w.close();
        let later = Instant::now() + Duration::from_millis(1);
        assert!(w.ended(later));
        assert!(!w.records(later));
    }
}
