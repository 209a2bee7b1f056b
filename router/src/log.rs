//! The router's recent log lines, for `getLog` as mongod and mongos answer
//! it: a `tracing` layer keeps the last [`KEPT`] events as structured-log
//! JSON lines (`{"t": {"$date": …}, "s": "I", "c": …, "ctx": …, "msg": …,
//! "attr": {…}}`), and the warnings logged before the router listened as
//! `startupWarnings`. [`JsonStderr`] writes the same lines to stderr
//! (`--log-format json`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How many lines `getLog: "global"` returns at most, as mongod keeps.
pub const KEPT: usize = 1024;

static LINES: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static STARTUP_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

/// The layer that keeps the lines; add it to the process's subscriber.
pub struct RecentLog;

impl<S: Subscriber> Layer<S> for RecentLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = structured_line(event);
        let meta = event.metadata();
        if *meta.level() == Level::WARN && !STARTED.load(Ordering::Relaxed) {
            lock(&STARTUP_WARNINGS).push(line.clone());
        }
        let mut lines = lock(&LINES);
        if lines.len() == KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
        WRITTEN.fetch_add(1, Ordering::Relaxed);
    }
}

/// `--log-format json`: every event written to stderr as one line of the
/// same structured JSON `getLog` returns, for log shippers.
pub struct JsonStderr;

impl<S: Subscriber> Layer<S> for JsonStderr {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        use std::io::Write;
        let mut line = structured_line(event);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// One event as a mongod structured-log JSON line (no newline).
fn structured_line(event: &Event<'_>) -> String {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let meta = event.metadata();
    let severity = match *meta.level() {
        Level::ERROR => "E",
        Level::WARN => "W",
        Level::INFO => "I",
        _ => "D1",
    };
    let component = meta
        .target()
        .rsplit("::")
        .next()
        .unwrap_or("-")
        .to_uppercase();
    let mut line = json!({
        "t": {"$date": now()},
        "s": severity,
        "c": component,
        "id": 0,
        "ctx": std::thread::current().name().unwrap_or("-"),
        "msg": fields.message,
    });
    if !fields.attr.is_empty() {
        line["attr"] = Value::Object(fields.attr);
    }
    line.to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> String {
    bson::DateTime::now()
        .try_to_rfc3339_string()
        .unwrap_or_default()
}

/// An event's message and other fields.
#[derive(Default)]
struct Fields {
    message: String,
    attr: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, json!(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, json!(value));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::String(s)) => self.message = s,
            (name, value) => {
                self.attr.insert(name.to_owned(), value);
            }
        }
    }
}

/// Marks start-up over: later warnings are not `startupWarnings`.
pub(crate) fn mark_started() {
    STARTED.store(true, Ordering::Relaxed);
}

/// The last lines logged (at most [`KEPT`]) and how many were ever written.
pub(crate) fn global() -> (Vec<String>, u64) {
    let lines = lock(&LINES).iter().cloned().collect();
    (lines, WRITTEN.load(Ordering::Relaxed))
}

/// The warnings logged while the router started.
pub(crate) fn startup_warnings() -> Vec<String> {
    lock(&STARTUP_WARNINGS).clone()
}
