//! The slow operation log, as mongod's `slowms`: an operation slower than
//! the threshold is logged once, as one structured `tracing` event with
//! its namespace, the command's shape (every value replaced by `"?"`),
//! the shards it reached with their time, documents returned and whether
//! it was a scatter.
//!
//! Per shard, the documents its replies counted, under mongod's slow-log
//! names: `nreturned` (documents in its cursor batches), and for writes
//! `ninserted`, `nMatched`/`nModified` or `ndeleted` from the reply's
//! `n`/`nModified`. There is no `docsExamined` or `keysExamined`: mongod
//! reports those only in its own log and in explain, never in a command's
//! reply, so the router has no such figure and logs none.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bson::{RawBsonRef, RawDocument};

use crate::metrics::trace::Trace;
use crate::metrics::Targeting;
use crate::session::Request;
use crate::state::RouterState;

/// Deepest nesting written out; deeper documents become `"?"`.
const MAX_DEPTH: usize = 20;
/// Longest shape logged, in bytes.
const MAX_SHAPE: usize = 4096;

/// Top-level fields that are not the command's own (session, cluster
/// time, routing): left out of the shape.
const GENERIC: [&str; 7] = [
    "$db",
    "lsid",
    "$clusterTime",
    "txnNumber",
    "$readPreference",
    "signature",
    "$audit",
];

/// What the finished operation did.
pub(crate) struct Finished<'a> {
    /// How long it took.
    pub took: Duration,
    /// Its shard round trips.
    pub trace: &'a Trace,
    /// Documents it returned.
    pub docs: u64,
    /// Where it went.
    pub targeting: Targeting,
}

/// Logs `req` when it took longer than the threshold.
pub(crate) fn check(state: &RouterState, req: &Request<'_>, done: &Finished<'_>) {
    let threshold = state.slow_ms.load(Ordering::Relaxed);
    if done.took < Duration::from_millis(threshold) {
        return;
    }
    state
        .metrics
        .slow_operations
        .fetch_add(1, Ordering::Relaxed);
    let ns = match req.collection {
        Some(c) => format!("{}.{c}", req.db),
        None => format!("{}.$cmd", req.db),
    };
    let shards = shard_entries(req.name, done.trace);
    let shard_ms = done.trace.shard_wall().as_secs_f64() * 1e3;
    let total_ms = done.took.as_secs_f64() * 1e3;
    tracing::info!(
        target: "shardgate::command",
        ns = %ns,
        command = req.name,
        shape = %shape(req.body),
        shards = %shards,
        nShards = done.trace.shard_count() as u64,
        scatter = done.targeting == Targeting::Scatter,
        nreturned = done.docs,
        durationMillis = total_ms,
        shardMillis = shard_ms,
        routerMillis = (total_ms - shard_ms).max(0.0),
        slowms = threshold,
        "Slow query"
    );
}

/// `[{shard, calls, millis, nreturned, …}, …]` as compact JSON: each
/// shard's time and what its replies counted, named as mongod's slow log
/// names them for `command`.
fn shard_entries(command: &str, trace: &Trace) -> String {
    let n_name = match command {
        "insert" => Some("ninserted"),
        "update" => Some("nMatched"),
        "delete" => Some("ndeleted"),
        _ => None,
    };
    let mut out = String::new();
    for t in trace.shards() {
        let ms = t.time.as_secs_f64() * 1e3;
        let sep = if out.is_empty() { "" } else { "," };
        let _ = write!(
            out,
            "{sep}{{\"shard\":{:?},\"calls\":{},\"millis\":{ms:.3},\"nreturned\":{}",
            t.shard.shard, t.calls, t.counts.returned
        );
        if let (Some(name), Some(n)) = (n_name, t.counts.n) {
            let _ = write!(out, ",\"{name}\":{n}");
        }
        if let (Some("nMatched"), Some(n)) = (n_name, t.counts.modified) {
            let _ = write!(out, ",\"nModified\":{n}");
        }
        out.push('}');
    }
    format!("[{out}]")
}

/// The command with every value replaced by `"?"`, as compact JSON: field
/// names and operators stay, no value does.
pub(crate) fn shape(body: &RawDocument) -> String {
    let mut out = String::new();
    write_doc(&mut out, body, 0, true);
    if out.len() > MAX_SHAPE {
        let mut end = MAX_SHAPE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

fn write_doc(out: &mut String, doc: &RawDocument, depth: usize, top: bool) {
    out.push('{');
    let mut first = true;
    for elem in doc.iter() {
        let Ok((key, value)) = elem else {
            break;
        };
        let key = key.as_str();
        if top && GENERIC.contains(&key) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{}:", serde_json::Value::String(key.to_owned()));
        write_value(out, value, depth + 1);
    }
    out.push('}');
}

fn write_value(out: &mut String, value: RawBsonRef<'_>, depth: usize) {
    if depth > MAX_DEPTH {
        out.push_str("\"?\"");
        return;
    }
    match value {
        RawBsonRef::Document(d) => write_doc(out, d, depth, false),
        RawBsonRef::Array(a) => {
            // Arrays of documents keep their shape ($and, pipelines); any
            // other array is one value.
            let docs: Vec<&RawDocument> = a
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_document())
                .collect();
            if docs.is_empty() {
                out.push_str("\"?\"");
                return;
            }
            out.push('[');
            for (i, d) in docs.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_doc(out, d, depth + 1, false);
            }
            out.push(']');
        }
        _ => out.push_str("\"?\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_keeps_names_and_operators_and_drops_values() {
        let body = bson::rawdoc! {
            "find": "people",
            "filter": {"$and": [{"age": {"$gt": 41}}, {"name": "Ada Lovelace"}], "tags": ["x", "y"]},
            "sort": {"age": -1},
            "limit": 7,
            "$db": "secretdb",
            "lsid": {"id": 1},
        };
        let s = shape(&body);
        assert_eq!(
            s,
            r#"{"find":"?","filter":{"$and":[{"age":{"$gt":"?"}},{"name":"?"}],"tags":"?"},"sort":{"age":"?"},"limit":"?"}"#
        );
        for secret in ["people", "41", "Ada", "secretdb", "lsid", "\"x\""] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
    }

    #[test]
    fn deep_documents_are_cut() {
        let mut d = bson::doc! {"v": 1};
        for _ in 0..100 {
            d = bson::doc! {"a": d};
        }
        let body = bson::RawDocumentBuf::try_from(&d).unwrap();
        let s = shape(&body);
        assert!(s.len() < 200, "{s}");
        assert!(!s.contains('1'));
    }
}
