//! Dotted-path helpers: plain lookup, MongoDB's match-time array traversal,
//! aggregation field-path evaluation and nested updates.

use bson::{Bson, Document};

use super::QueryError;

/// The value at a dotted path such as `"a.b.0.c"`: each component names a
/// field of a document or, when the value is an array, a numeric index into
/// it. Returns `None` when any step is missing. (Matching, sorting and
/// aggregation use MongoDB's implicit array traversal instead.)
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for part in parts {
        cur = match cur {
            Bson::Document(d) => d.get(part)?,
            Bson::Array(a) => a.get(array_index(part)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The array index a path component names: all ASCII digits, no leading
/// zero unless the component is `"0"`.
pub(crate) fn array_index(part: &str) -> Option<usize> {
    let bytes = part.as_bytes();
    let canonical = !bytes.is_empty()
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes.len() == 1 || bytes[0] != b'0');
    if canonical {
        part.parse().ok()
    } else {
        None
    }
}

/// Splits and validates a dotted field path (no empty component, none
/// starting with `$`), with MongoDB's `FieldPath` errors.
pub(crate) fn parse_field_path(path: &str) -> Result<Vec<String>, QueryError> {
    if path.is_empty() {
        return Err(location!(
            40352,
            "FieldPath cannot be constructed with empty string"
        ));
    }
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    for p in &parts {
        if p.is_empty() {
            return Err(location!(
                15998,
                "FieldPath field names may not be empty strings."
            ));
        }
        if p.starts_with('$') {
            return Err(location!(
                16410,
                "FieldPath field names may not start with '$'. Consider using $getField or \
                 $setField."
            ));
        }
    }
    Ok(parts)
}

/// Visits the values a match expression sees at `path` in `doc`, as MongoDB's
/// `BSONElementIterator` yields them: `None` stands for a missing value.
/// Arrays met before the last component are traversed (their documents are
/// searched, a numeric component also selects the element at that index);
/// an array at the end of the path is yielded element by element and then
/// whole when `expand_leaf` is set. Stops early, returning `true`, as soon as
/// `visit` returns `true`.
pub(crate) fn any_value(
    doc: &Document,
    path: &[String],
    expand_leaf: bool,
    visit: &mut dyn FnMut(Option<&Bson>) -> bool,
) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match doc.get(first) {
        None => visit(None),
        Some(v) => walk_value(v, rest, expand_leaf, visit),
    }
}

fn walk_value(
    v: &Bson,
    rest: &[String],
    expand_leaf: bool,
    visit: &mut dyn FnMut(Option<&Bson>) -> bool,
) -> bool {
    if rest.is_empty() {
        if let (Bson::Array(items), true) = (v, expand_leaf) {
            if items.iter().any(|e| visit(Some(e))) {
                return true;
            }
        }
        return visit(Some(v));
    }
    match v {
        Bson::Document(d) => any_value(d, rest, expand_leaf, visit),
        Bson::Array(items) => walk_array(items, rest, expand_leaf, visit),
        _ => visit(None),
    }
}

fn walk_array(
    items: &[Bson],
    rest: &[String],
    expand_leaf: bool,
    visit: &mut dyn FnMut(Option<&Bson>) -> bool,
) -> bool {
    let Some((first, after)) = rest.split_first() else {
        return false;
    };
    let index = array_index(first);
    for (i, item) in items.iter().enumerate() {
        if let Bson::Document(d) = item {
            if any_value(d, rest, expand_leaf, visit) {
                return true;
            }
        }
        if index == Some(i) {
            let found = if after.is_empty() {
                visit(Some(item))
            } else {
                walk_value(item, after, expand_leaf, visit)
            };
            if found {
                return true;
            }
        }
    }
    false
}

/// Evaluates an aggregation field path (`$a.b`) against `doc`: arrays met
/// on the way map over their document elements (other elements are
/// skipped, missing results dropped). Numeric components are field names.
pub(crate) fn eval_field_path(doc: &Document, path: &[String]) -> Option<Bson> {
    let (first, rest) = path.split_first()?;
    let v = doc.get(first)?;
    if rest.is_empty() {
        return Some(v.clone());
    }
    eval_path_in_value(v, rest)
}

fn eval_path_in_value(v: &Bson, rest: &[String]) -> Option<Bson> {
    match v {
        Bson::Document(d) => eval_field_path(d, rest),
        Bson::Array(items) => Some(Bson::Array(
            items
                .iter()
                .filter_map(|item| match item {
                    Bson::Document(d) => eval_field_path(d, rest),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// The value at `path` following documents only (no array traversal), as
/// `$unwind` reads its path.
pub(crate) fn get_nested<'a>(doc: &'a Document, path: &[String]) -> Option<&'a Bson> {
    let (first, rest) = path.split_first()?;
    let mut cur = doc.get(first)?;
    for part in rest {
        match cur {
            Bson::Document(d) => cur = d.get(part)?,
            _ => return None,
        }
    }
    Some(cur)
}

/// Sets `path` to `value` (or removes it when `value` is `None`), creating
/// intermediate documents and replacing non-document intermediates.
pub(crate) fn set_nested(doc: &mut Document, path: &[String], value: Option<Bson>) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Some(v) => {
                doc.insert(first.clone(), v);
            }
            None => {
                doc.remove(first);
            }
        }
        return;
    }
    if value.is_none() && !matches!(doc.get(first), Some(Bson::Document(_))) {
        return;
    }
    if !matches!(doc.get(first), Some(Bson::Document(_))) {
        doc.insert(first.clone(), Document::new());
    }
    if let Some(Bson::Document(sub)) = doc.get_mut(first) {
        set_nested(sub, rest, value);
    }
}
