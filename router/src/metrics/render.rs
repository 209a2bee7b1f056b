//! The `/metrics` page: the router's families, then the shared ones.

use std::sync::atomic::{AtomicU64, Ordering};

use shardgate_metrics::Exposition;

use crate::state::RouterState;

/// The Prometheus text exposition of everything this router counts.
pub(crate) fn render(state: &RouterState) -> String {
    let mut out = Exposition::new();
    commands(state, &mut out);
    namespaces(state, &mut out);
    shards(state, &mut out);
    operations(state, &mut out);
    pools(state, &mut out);
    connections(state, &mut out);
    transactions(state, &mut out);
    state.metrics.shared.render(&mut out);
    out.finish()
}

fn get(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

fn commands(state: &RouterState, out: &mut Exposition) {
    let m = &state.metrics;
    let names = m.names.iter().copied().chain(std::iter::once("other"));
    let used: Vec<(&str, &super::CommandMetrics)> = names
        .enumerate()
        .filter_map(|(i, name)| Some((name, m.command(Some(i))?)))
        .filter(|(_, c)| c.total.count() > 0)
        .collect();
    let name = "shardgate_command_duration_seconds";
    out.family(
        name,
        "histogram",
        "Operation latency as the client sees it, by command.",
    );
    for (command, c) in &used {
        out.histogram(name, &[("command", command)], &c.total);
    }
    let name = "shardgate_command_router_duration_seconds";
    out.family(
        name,
        "histogram",
        "The router's own part of an operation (no shard round trip in flight), by command.",
    );
    for (command, c) in &used {
        out.histogram(name, &[("command", command)], &c.router);
    }
}

fn namespaces(state: &RouterState, out: &mut Exposition) {
    let name = "shardgate_namespace_duration_seconds";
    out.family(
        name,
        "histogram",
        "Operation latency by namespace (the first 100 namespaces; later ones as other).",
    );
    if let Ok(m) = state.metrics.namespaces.read() {
        let mut all: Vec<(String, &shardgate_metrics::Histogram)> = m
            .iter()
            .flat_map(|(db, colls)| colls.iter().map(move |(c, h)| (format!("{db}.{c}"), &**h)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (ns, h) in all {
            out.histogram(name, &[("namespace", &ns)], h);
        }
    }
    let other = &state.metrics.other_namespace;
    if other.count() > 0 {
        out.histogram(name, &[("namespace", "other")], other);
    }
}

fn shards(state: &RouterState, out: &mut Exposition) {
    let mut all: Vec<std::sync::Arc<super::ShardMetrics>> = state
        .metrics
        .shards
        .read()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    all.sort_by(|a, b| a.shard.cmp(&b.shard));
    let name = "shardgate_shard_round_trip_seconds";
    out.family(
        name,
        "histogram",
        "Round trips to a shard from the router's pool (checkout included), by shard.",
    );
    for s in &all {
        out.histogram(name, &[("shard", &s.shard)], &s.round_trip);
    }
    let name = "shardgate_shard_errors_total";
    out.family(
        name,
        "counter",
        "Round trips to a shard that failed (network, timeout).",
    );
    for s in &all {
        out.sample(name, &[("shard", &s.shard)], get(&s.errors));
    }
}

fn operations(state: &RouterState, out: &mut Exposition) {
    let m = &state.metrics;
    let name = "shardgate_operations_total";
    out.family(
        name,
        "counter",
        "Operations by where they went: the router alone, one shard (targeted) or several (scatter).",
    );
    for (i, t) in ["router", "targeted", "scatter"].iter().enumerate() {
        out.sample(name, &[("targeting", t)], get(&m.targeting[i]));
    }
    let counters = [
        (
            "shardgate_documents_returned_total",
            "Documents returned to clients in cursor batches.",
            &m.documents_returned,
        ),
        (
            "shardgate_retryable_write_replays_total",
            "Retried writes answered from the retry cache instead of run again.",
            &m.retry_replays,
        ),
        (
            "shardgate_slow_operations_total",
            "Operations logged as slow (over slowms).",
            &m.slow_operations,
        ),
    ];
    for (name, help, c) in counters {
        out.single(name, "counter", help, get(c));
    }
    out.single(
        "shardgate_cursors_open",
        "gauge",
        "Router cursors open now.",
        state.cursors.len() as f64,
    );
}

fn pools(state: &RouterState, out: &mut Exposition) {
    let reports = state.shards.stats();
    let name = "shardgate_pool_connections";
    out.family(
        name,
        "gauge",
        "Shard pool connections by state (open = idle + in_use).",
    );
    for r in &reports {
        let s = &r.stats;
        let in_use = s.open.saturating_sub(s.idle);
        for (st, v) in [("open", s.open), ("idle", s.idle), ("in_use", in_use)] {
            out.sample(
                name,
                &[("shard", &r.shard), ("member", &r.address), ("state", st)],
                v as f64,
            );
        }
    }
    type Field = fn(&shardgate_shard_client::PoolReport) -> f64;
    let families: [(&str, &str, &str, Field); 5] = [
        (
            "shardgate_pool_max_connections",
            "gauge",
            "The pool's size limit.",
            |r| r.max_size as f64,
        ),
        (
            "shardgate_pool_waiters",
            "gauge",
            "Requests waiting for a free connection now.",
            |r| r.stats.waiting as f64,
        ),
        (
            "shardgate_pool_checkouts_total",
            "counter",
            "Connections checked out of the pool.",
            |r| r.stats.checkouts as f64,
        ),
        (
            "shardgate_pool_wait_seconds_total",
            "counter",
            "Time checkouts waited for a free connection.",
            |r| r.stats.wait_nanos as f64 / 1e9,
        ),
        (
            "shardgate_pool_connections_created_total",
            "counter",
            "Connections the pool opened.",
            |r| r.stats.created as f64,
        ),
    ];
    for (name, kind, help, field) in families {
        out.family(name, kind, help);
        for r in &reports {
            out.sample(
                name,
                &[("shard", &r.shard), ("member", &r.address)],
                field(r),
            );
        }
    }
}

fn connections(state: &RouterState, out: &mut Exposition) {
    let s = &state.stats;
    out.single(
        "shardgate_connections_open",
        "gauge",
        "Client connections open now.",
        get(&s.current_connections),
    );
    out.single(
        "shardgate_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        get(&s.total_connections),
    );
    out.single(
        "shardgate_connections_refused_total",
        "counter",
        "Client connections refused by a connection limit.",
        get(&s.refused_connections),
    );
}

fn transactions(state: &RouterState, out: &mut Exposition) {
    let kinds = state.transactions.counters.commit_types();
    let name = "shardgate_transaction_commits_total";
    out.family(
        name,
        "counter",
        "Transaction commits begun, by commit type.",
    );
    for (kind, initiated, _) in &kinds {
        out.sample(name, &[("commit_type", kind)], *initiated as f64);
    }
    let name = "shardgate_transaction_commits_successful_total";
    out.family(
        name,
        "counter",
        "Transaction commits that succeeded, by commit type.",
    );
    for (kind, _, ok) in &kinds {
        out.sample(name, &[("commit_type", kind)], *ok as f64);
    }
}
