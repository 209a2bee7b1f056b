//! Reports: per endpoint and per operation, ratios between two endpoints,
//! as text tables or JSON.

use std::fmt::Write as _;
use std::time::Duration;

use super::mix::Mix;
use super::worker::{OpStats, Stats};

/// The figures of one operation type (or of all of them: `total`).
#[derive(Debug, Clone, PartialEq)]
pub struct OpReport {
    /// Operation name, or `total`.
    pub op: String,
    /// Operations that succeeded in the measured window.
    pub count: u64,
    /// Operations that failed.
    pub errors: u64,
    /// `count` per measured second.
    pub ops_per_sec: f64,
    /// Median latency of the successful operations, µs.
    pub p50_us: u64,
    /// 99th-percentile latency, µs.
    pub p99_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
    /// Documents inserted.
    pub docs_inserted: u64,
    /// Documents read by scans.
    pub docs_read: u64,
    /// `docs_read` per measured second.
    pub docs_read_per_sec: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl OpReport {
    fn new(op: &str, s: &OpStats, secs: f64) -> OpReport {
        let count = s.latency.count();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        OpReport {
            op: op.to_owned(),
            count,
            errors: s.errors,
            ops_per_sec: per_sec(count),
            p50_us: s.latency.quantile(0.50),
            p99_us: s.latency.quantile(0.99),
            max_us: s.latency.max(),
            docs_inserted: s.docs_inserted,
            docs_read: s.docs_read,
            docs_read_per_sec: per_sec(s.docs_read),
            first_error: s.first_error.clone(),
        }
    }
}

/// Everything measured on one endpoint.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointReport {
    /// The endpoint's label.
    pub label: String,
    /// Its connection string.
    pub uri: String,
    /// `router` (hello.msg is `isdbgrid`) or `mongod`; `None` if unreachable.
    pub server: Option<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// The operation mix.
    pub mix: String,
    /// Measured wall time, s.
    pub measured_secs: f64,
    /// One row per operation in the mix.
    pub ops: Vec<OpReport>,
    /// All operations together.
    pub total: Option<OpReport>,
    /// What setup did, and what it could not do.
    pub notes: Vec<String>,
    /// The migration scenario's figures (the rows are then the writes that
    /// started while the chunk moved).
    pub migration: Option<MigrationReport>,
    /// Why the endpoint could not be measured at all.
    pub error: Option<String>,
}

impl EndpointReport {
    /// An endpoint not measured yet.
    pub fn new(label: &str, uri: &str, clients: usize, mix: &Mix) -> EndpointReport {
        EndpointReport {
            label: label.to_owned(),
            uri: uri.to_owned(),
            clients,
            mix: mix.to_string(),
            ..EndpointReport::default()
        }
    }

    /// Fills in the figures from the merged statistics.
    pub fn fill(&mut self, mix: &Mix, stats: &Stats, measured: Duration) {
        let secs = measured.as_secs_f64();
        self.measured_secs = secs;
        let mut all = OpStats::default();
        for op in mix.ops() {
            let s = &stats[op.index()];
            all.merge(s);
            self.ops.push(OpReport::new(op.name(), s, secs));
        }
        self.total = Some(OpReport::new("total", &all, secs));
    }

    /// The row of `op`.
    pub fn op(&self, op: &str) -> Option<&OpReport> {
        self.ops.iter().find(|r| r.op == op)
    }

    /// Documents inserted by the measured operations.
    pub fn docs_inserted(&self) -> u64 {
        self.total.as_ref().map_or(0, |t| t.docs_inserted)
    }
}

/// What the migration scenario measured: one `moveChunk` under write load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MigrationReport {
    /// The shard the chunk left.
    pub from: String,
    /// The shard it moved to.
    pub to: String,
    /// Documents in the chunk when the move started.
    pub chunk_docs: u64,
    /// Their BSON bytes.
    pub chunk_bytes: u64,
    /// Wall time of the `moveChunk` command, s.
    pub secs: f64,
    /// `chunk_bytes` per second of `secs`, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// Documents the writers inserted over the whole run (before, during
    /// and after the move), every one acknowledged.
    pub inserted: u64,
}

/// endpoint1 / endpoint2 for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// Operation name, or `total`.
    pub op: String,
    /// Throughput ratio.
    pub throughput: Option<f64>,
    /// Median latency ratio.
    pub p50: Option<f64>,
    /// 99th-percentile latency ratio.
    pub p99: Option<f64>,
    /// Documents read per second, for scans.
    pub docs_read: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// One per endpoint, in the order run.
    pub endpoints: Vec<EndpointReport>,
    /// First endpoint over second, when two were measured.
    pub ratios: Vec<Ratio>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

impl Report {
    /// A report over `endpoints`, with ratios when there are two.
    pub fn new(endpoints: Vec<EndpointReport>) -> Report {
        let mut ratios = Vec::new();
        if let [a, b] = endpoints.as_slice() {
            let rows = a.ops.iter().chain(&a.total);
            for ra in rows {
                let rb = if ra.op == "total" {
                    b.total.as_ref()
                } else {
                    b.op(&ra.op)
                };
                if let Some(rb) = rb {
                    ratios.push(Ratio {
                        op: ra.op.clone(),
                        throughput: ratio(ra.ops_per_sec, rb.ops_per_sec),
                        p50: ratio(ra.p50_us as f64, rb.p50_us as f64),
                        p99: ratio(ra.p99_us as f64, rb.p99_us as f64),
                        docs_read: ratio(ra.docs_read_per_sec, rb.docs_read_per_sec),
                    });
                }
            }
        }
        Report { endpoints, ratios }
    }

    /// Whether any endpoint could not be measured.
    pub fn failed(&self) -> bool {
        self.endpoints.iter().any(|e| e.error.is_some())
    }

    /// The report as text tables.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.endpoints {
            endpoint_text(&mut out, e);
        }
        if let [a, b] = self.endpoints.as_slice() {
            if !self.ratios.is_empty() {
                ratios_text(&mut out, &a.label, &b.label, &self.ratios);
            }
        }
        out
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn row_text(out: &mut String, r: &OpReport) {
    let _ = writeln!(
        out,
        "  {:<20} {:>9} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>7}",
        r.op,
        r.count,
        r.ops_per_sec,
        ms(r.p50_us),
        ms(r.p99_us),
        ms(r.max_us),
        r.errors
    );
}

fn endpoint_text(out: &mut String, e: &EndpointReport) {
    let server = e.server.as_deref().unwrap_or("unreachable");
    let _ = writeln!(
        out,
        "== {} {} [{server}] {} clients, mix {}",
        e.label, e.uri, e.clients, e.mix
    );
    for n in &e.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    if let Some(err) = &e.error {
        let _ = writeln!(out, "  ERROR: {err}");
        let _ = writeln!(out, "summary {}: not measured ({err})", e.label);
        return;
    }
    let _ = writeln!(
        out,
        "  {:<20} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "operation", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for r in e.ops.iter().chain(&e.total) {
        row_text(out, r);
    }
    for r in e.ops.iter().filter(|r| r.docs_read > 0) {
        let _ = writeln!(
            out,
            "  {} read {} documents: {:.0} documents/s",
            r.op, r.docs_read, r.docs_read_per_sec
        );
    }
    if let Some(m) = &e.migration {
        migration_text(out, m);
    }
    for r in &e.ops {
        if let Some(err) = &r.first_error {
            let _ = writeln!(out, "  first {} error: {err}", r.op);
        }
    }
    if let Some(t) = &e.total {
        let _ = writeln!(
            out,
            "summary {}: {:.1} ops/s over {:.2} s, p50 {:.3} ms, p99 {:.3} ms, {} errors, {} documents inserted",
            e.label,
            t.ops_per_sec,
            e.measured_secs,
            ms(t.p50_us),
            ms(t.p99_us),
            t.errors,
            t.docs_inserted
        );
    }
}

fn migration_text(out: &mut String, m: &MigrationReport) {
    let _ = writeln!(
        out,
        "  migration: {} documents, {:.1} MB moved {} -> {} in {:.2} s: {:.1} MB/s; the rows above are the writes started during the move; {} documents inserted in the whole run",
        m.chunk_docs,
        m.chunk_bytes as f64 / 1e6,
        m.from,
        m.to,
        m.secs,
        m.mb_per_sec,
        m.inserted
    );
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"))
}

fn ratios_text(out: &mut String, a: &str, b: &str, ratios: &[Ratio]) {
    let _ = writeln!(out, "== ratios {a} / {b}");
    let _ = writeln!(
        out,
        "  {:<20} {:>10} {:>9} {:>9} {:>10}",
        "operation", "ops/s", "p50", "p99", "docs/s"
    );
    for r in ratios {
        let _ = writeln!(
            out,
            "  {:<20} {:>10} {:>9} {:>9} {:>10}",
            r.op,
            ratio_cell(r.throughput),
            ratio_cell(r.p50),
            ratio_cell(r.p99),
            ratio_cell(r.docs_read)
        );
    }
}
