//! The Prometheus text exposition format, written by hand: one `# HELP`
//! and `# TYPE` per family, then its samples.

use std::fmt::Write;

use crate::histogram::{Histogram, BUCKETS};

/// A page of metrics being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    /// An empty page.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: `kind` is `counter`, `gauge` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram (`_bucket`, `_sum`, `_count`).
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, h: &Histogram) {
        let s = h.snapshot();
        for (i, count) in s.cumulative.iter().enumerate() {
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| number(*b));
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(s.sum_seconds));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", s.count);
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: Labels<'_>, le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_value(v));
    }
    out.push('}');
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_and_escapes_labels() {
        let mut e = Exposition::new();
        e.family("x_total", "counter", "Things.");
        e.sample("x_total", &[("ns", "a\"b\\c")], 3.0);
        let h = Histogram::default();
        h.observe(std::time::Duration::from_millis(2));
        e.family("y_seconds", "histogram", "Latency.");
        e.histogram("y_seconds", &[("shard", "s0")], &h);
        let page = e.finish();
        assert!(page.contains("# TYPE x_total counter\n"));
        assert!(page.contains("x_total{ns=\"a\\\"b\\\\c\"} 3\n"), "{page}");
        assert!(page.contains("y_seconds_bucket{shard=\"s0\",le=\"0.001\"} 0\n"));
        assert!(page.contains("y_seconds_bucket{shard=\"s0\",le=\"0.0025\"} 1\n"));
        assert!(page.contains("y_seconds_bucket{shard=\"s0\",le=\"+Inf\"} 1\n"));
        assert!(page.contains("y_seconds_count{shard=\"s0\"} 1\n"));
    }
}
