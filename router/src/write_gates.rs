//! One write gate per sharded collection, for the critical-section hold
//! (`write::critical`): writes hold its read side while they run, an
//! acknowledgement takes the write side.

/// One write gate per namespace: writes to a collection hold its read
/// side while they run; acknowledging a critical section of that
/// collection takes the write side, waiting for those in flight (and only
/// those: writes to other collections go on).
#[derive(Default)]
pub(crate) struct WriteGates {
    gates: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<tokio::sync::RwLock<()>>>,
    >,
}

impl WriteGates {
    /// The gate of `ns`.
    pub(crate) fn of(&self, ns: &str) -> std::sync::Arc<tokio::sync::RwLock<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.entry(ns.to_owned()).or_default().clone()
    }

    /// Waits until every write to `ns` that started before now finished.
    pub(crate) async fn drain(&self, ns: &str) {
        drop(self.of(ns).write_owned().await);
    }
}
