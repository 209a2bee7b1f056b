//! Counters behind the router's own `serverStatus`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters, shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Client connections open now.
    pub current_connections: AtomicU64,
    /// Client connections accepted since start.
    pub total_connections: AtomicU64,
    /// Client connections refused by a connection limit.
    pub refused_connections: AtomicU64,
    /// `insert` commands.
    pub insert: AtomicU64,
    /// `find` commands.
    pub query: AtomicU64,
    /// `update` commands.
    pub update: AtomicU64,
    /// `delete` commands.
    pub delete: AtomicU64,
    /// `getMore` commands.
    pub getmore: AtomicU64,
    /// Every other command.
    pub command: AtomicU64,
}

impl Stats {
    /// Counts one command by its name, as mongod's `opcounters` do.
    pub(crate) fn count(&self, name: &str) {
        let counter = match name {
            "insert" => &self.insert,
            "find" => &self.query,
            "update" => &self.update,
            "delete" => &self.delete,
            "getMore" => &self.getmore,
            _ => &self.command,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub(crate) fn get(counter: &AtomicU64) -> i64 {
        counter.load(Ordering::Relaxed) as i64
    }
}
