//! Refusing an update that would change a document's shard key
//! (ImmutableField, 66), unless it provably sets the key to the value the
//! filter already pins.

use super::*;

/// Refuses an update that would change a document's shard key. `query_key`
/// is the key the filter pins, if it pins one.
pub(super) fn check_key_unchanged(
    pattern: &ShardKeyPattern,
    q: &Document,
    u: &Bson,
    query_key: Option<&KeyBytes>,
) -> Result<(), StmtError> {
    let fields: Vec<&str> = pattern.fields().map(|(f, _)| f).collect();
    match u {
        Bson::Document(update) if is_operator_update(update) => {
            operators_keep_key(pattern, &fields, q, update, query_key)
        }
        Bson::Document(replacement) => {
            let Some(k) = query_key else { return Ok(()) };
            replacement_keeps_key(pattern, &fields, q, replacement, k)
        }
        Bson::Array(stages) => pipeline_keeps_key(&fields, stages),
        _ => Ok(()),
    }
}

fn altered(field: &str, value: &dyn std::fmt::Display) -> StmtError {
    StmtError::new(
        66,
        "ImmutableField",
        format!("After applying the update, the (immutable) field '{field}' was found to have been altered to {field}: {value}"),
    )
}

fn touched(path: &str, field: &str) -> StmtError {
    StmtError::new(
        66,
        "ImmutableField",
        format!(
            "Performing an update on the path '{path}' would modify the shard key field '{field}'"
        ),
    )
}

/// An operator update: paths set by `$set`/`$setOnInsert` to a value the
/// filter pins are allowed; any other operator on a key path is not.
fn operators_keep_key(
    pattern: &ShardKeyPattern,
    fields: &[&str],
    q: &Document,
    update: &Document,
    query_key: Option<&KeyBytes>,
) -> Result<(), StmtError> {
    let mut sets = Document::new();
    for (op, args) in update {
        let Bson::Document(args) = args else { continue };
        for (path, value) in args {
            let mut paths = vec![path.as_str()];
            if op == "$rename" {
                if let Bson::String(to) = value {
                    paths.push(to.as_str());
                }
            }
            for p in paths {
                for field in fields {
                    match relation(p, field) {
                        Relation::None => {}
                        Relation::SameOrParent if op == "$set" || op == "$setOnInsert" => {
                            sets.insert(p, value.clone());
                        }
                        _ => return Err(touched(p, field)),
                    }
                }
            }
        }
    }
    let Some((path, value)) = sets.iter().next() else {
        return Ok(());
    };
    let combined = doc! {"$and": [q.clone(), sets.clone()]};
    match (query_key, targeting::exact_key(pattern, &combined)) {
        (Some(k), Some(c)) if *k == c => Ok(()),
        _ => Err(altered(path, value)),
    }
}

/// A replacement keeps the key the filter pins (its `_id` taken from the
/// filter when it has none).
fn replacement_keeps_key(
    pattern: &ShardKeyPattern,
    fields: &[&str],
    q: &Document,
    replacement: &Document,
    k: &KeyBytes,
) -> Result<(), StmtError> {
    let mut r = replacement.clone();
    if !r.contains_key("_id") {
        if let Some(id) = exact_id(q) {
            r.insert("_id", id.clone());
        }
    }
    let raw = bson::RawDocumentBuf::try_from(&r).map_err(bad_value)?;
    match pattern.extract_key(&raw) {
        Ok(new) if new == *k => Ok(()),
        Ok(_) => {
            let field = fields
                .iter()
                .find(|f| lookup(&r, f) != lookup(q, f) || lookup(q, f).is_none())
                .unwrap_or(&fields[0]);
            let value = lookup(&r, field).cloned().unwrap_or(Bson::Null);
            Err(altered(field, &value))
        }
        Err(e) => Err(StmtError::new(e.code().0, e.code().1, e.to_string())),
    }
}

/// A pipeline update may not write a key path, nor replace the document.
fn pipeline_keeps_key(fields: &[&str], stages: &[Bson]) -> Result<(), StmtError> {
    for stage in stages.iter().filter_map(Bson::as_document) {
        for (name, spec) in stage {
            let paths: Vec<&str> = match (name.as_str(), spec) {
                ("$set" | "$addFields", Bson::Document(d)) => {
                    d.keys().map(String::as_str).collect()
                }
                ("$unset", Bson::String(s)) => vec![s.as_str()],
                ("$unset", Bson::Array(a)) => a.iter().filter_map(Bson::as_str).collect(),
                ("$project" | "$replaceRoot" | "$replaceWith", _) => {
                    return Err(touched(name, fields[0]))
                }
                _ => Vec::new(),
            };
            for p in paths {
                if let Some(field) = fields.iter().find(|f| relation(p, f) != Relation::None) {
                    return Err(touched(p, field));
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Relation {
    None,
    /// The path is the key field or one of its parents.
    SameOrParent,
    /// The path is inside the key field.
    Child,
}

fn relation(path: &str, field: &str) -> Relation {
    let below = |long: &str, short: &str| {
        long.len() > short.len() && long.starts_with(short) && long.as_bytes()[short.len()] == b'.'
    };
    if path == field || below(field, path) {
        Relation::SameOrParent
    } else if below(path, field) {
        Relation::Child
    } else {
        Relation::None
    }
}

/// The value at a dotted path.
pub(super) fn lookup<'a>(d: &'a Document, path: &str) -> Option<&'a Bson> {
    if let Some(v) = d.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    match d.get(head)? {
        Bson::Document(inner) => lookup(inner, rest),
        _ => None,
    }
}
