//! `--json`: the report as one JSON object (written by hand; the figures
//! are only numbers, strings and nulls).

use super::report::{EndpointReport, MigrationReport, OpReport, Ratio, Report};

fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn opt_number(x: Option<f64>) -> String {
    x.map_or_else(|| "null".into(), number)
}

fn opt_string(s: Option<&str>) -> String {
    s.map_or_else(|| "null".into(), string)
}

fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", string(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn array(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

fn op(r: &OpReport) -> String {
    object(&[
        ("op", string(&r.op)),
        ("count", r.count.to_string()),
        ("errors", r.errors.to_string()),
        ("ops_per_sec", number(r.ops_per_sec)),
        ("p50_us", r.p50_us.to_string()),
        ("p99_us", r.p99_us.to_string()),
        ("max_us", r.max_us.to_string()),
        ("docs_inserted", r.docs_inserted.to_string()),
        ("docs_read", r.docs_read.to_string()),
        ("docs_read_per_sec", number(r.docs_read_per_sec)),
        ("first_error", opt_string(r.first_error.as_deref())),
    ])
}

fn endpoint(e: &EndpointReport) -> String {
    object(&[
        ("label", string(&e.label)),
        ("uri", string(&e.uri)),
        ("server", opt_string(e.server.as_deref())),
        ("clients", e.clients.to_string()),
        ("mix", string(&e.mix)),
        ("measured_secs", number(e.measured_secs)),
        ("ops", array(e.ops.iter().map(op))),
        ("total", e.total.as_ref().map_or_else(|| "null".into(), op)),
        ("notes", array(e.notes.iter().map(|n| string(n)))),
        (
            "migration",
            e.migration
                .as_ref()
                .map_or_else(|| "null".into(), migration),
        ),
        ("error", opt_string(e.error.as_deref())),
    ])
}

fn migration(m: &MigrationReport) -> String {
    object(&[
        ("from", string(&m.from)),
        ("to", string(&m.to)),
        ("chunk_docs", m.chunk_docs.to_string()),
        ("chunk_bytes", m.chunk_bytes.to_string()),
        ("secs", number(m.secs)),
        ("mb_per_sec", number(m.mb_per_sec)),
        ("inserted", m.inserted.to_string()),
    ])
}

fn ratio(r: &Ratio) -> String {
    object(&[
        ("op", string(&r.op)),
        ("throughput", opt_number(r.throughput)),
        ("p50", opt_number(r.p50)),
        ("p99", opt_number(r.p99)),
        ("docs_read", opt_number(r.docs_read)),
    ])
}

impl Report {
    /// The report as JSON: `{endpoints: [...], ratios: [...]}`; latencies in µs.
    pub fn to_json(&self) -> String {
        object(&[
            ("endpoints", array(self.endpoints.iter().map(endpoint))),
            ("ratios", array(self.ratios.iter().map(ratio))),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        assert_eq!(string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(number(f64::NAN), "null");
        assert_eq!(
            object(&[
                ("x", "1".into()),
                ("y", array(["2".to_owned()].into_iter()))
            ]),
            r#"{"x":1,"y":[2]}"#
        );
    }
}
