//! The projection a shard holding hashed orphans gets instead of the
//! client's (so every document carries its shard key), and undoing it.

use bson::{Bson, Document, RawDocument, RawDocumentBuf};

use super::KEY_FIELD;

/// What [`HashedOrphans::reshape_projection`] changed in a projection.
#[derive(Default, Clone)]
pub(crate) struct Reshape {
    /// [`KEY_FIELD`] was added.
    pub(super) hidden: bool,
    /// Exclusions of these paths were taken out.
    pub(super) removed: Vec<String>,
}

impl Reshape {
    /// `doc` as the client's projection would have returned it.
    pub(crate) fn undo(&self, doc: RawDocumentBuf) -> RawDocumentBuf {
        let mut doc = if self.hidden {
            without_field(&doc, KEY_FIELD)
        } else {
            doc
        };
        if !self.removed.is_empty() {
            if let Ok(mut d) = Document::try_from(doc.as_ref()) {
                for path in &self.removed {
                    let parts: Vec<&str> = path.split('.').collect();
                    remove_path(&mut d, &parts);
                }
                if let Ok(raw) = RawDocumentBuf::try_from(&d) {
                    doc = raw;
                }
            }
        }
        doc
    }
}

/// A copy of `doc` without its top-level `field`.
fn without_field(doc: &RawDocument, field: &str) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for (k, v) in doc.iter().flatten() {
        if k.as_str() != field {
            out.append(k, v);
        }
    }
    out
}

/// Whether a find projection includes (rather than excludes), as MongoDB's
/// projection parser decides: any truthy non-`_id` field, computed field or
/// positional `a.$` makes it an inclusion; `$slice`, `$elemMatch` and
/// `$meta` decide nothing; otherwise `_id: 1` alone includes.
pub(super) fn is_inclusion(p: &Document) -> bool {
    let mut id_included = false;
    for (name, value) in p {
        if name.ends_with(".$") {
            return true;
        }
        let decided = match value {
            Bson::Document(d) => match d.keys().next().map(String::as_str) {
                Some("$slice" | "$elemMatch" | "$meta") => None,
                Some(op) if op.starts_with('$') => Some(true),
                _ => Some(is_inclusion(d)),
            },
            other => Some(!excludes(other)),
        };
        if name == "_id" {
            id_included = decided == Some(true);
            continue;
        }
        if let Some(inclusion) = decided {
            return inclusion;
        }
    }
    id_included
}

/// Whether a projection value excludes (`0`, `false`).
pub(super) fn excludes(value: &Bson) -> bool {
    match value {
        Bson::Boolean(b) => !b,
        Bson::Int32(n) => *n == 0,
        Bson::Int64(n) => *n == 0,
        Bson::Double(n) => *n == 0.0,
        _ => false,
    }
}

/// A projection with nested sub-projections (`{a: {b: 0}}`) as dotted
/// paths; operator documents stay whole.
pub(super) fn flatten(p: &Document) -> Vec<(String, Bson)> {
    let mut out = Vec::new();
    for (name, value) in p {
        match value {
            Bson::Document(d) if d.keys().next().is_some_and(|k| !k.starts_with('$')) => {
                for (sub, v) in flatten(d) {
                    out.push((format!("{name}.{sub}"), v));
                }
            }
            _ => out.push((name.clone(), value.clone())),
        }
    }
    out
}

/// Whether one dotted path is the other or lies inside it.
pub(super) fn paths_overlap(a: &str, b: &str) -> bool {
    let inside = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    inside(a, b) || inside(b, a)
}

/// Removes a dotted path from a document, through arrays of documents as a
/// projection exclusion does.
pub(super) fn remove_path(doc: &mut Document, parts: &[&str]) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        doc.remove(*first);
        return;
    }
    match doc.get_mut(*first) {
        Some(Bson::Document(sub)) => remove_path(sub, rest),
        Some(Bson::Array(items)) => {
            for item in items {
                if let Bson::Document(sub) = item {
                    remove_path(sub, rest);
                }
            }
        }
        _ => {}
    }
}
