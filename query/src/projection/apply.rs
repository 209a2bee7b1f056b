//! Applying a projection to a document, as MongoDB's `ProjectionNode` does:
//! included fields keep the input document's order, computed fields follow
//! in specification order, and arrays are projected element by element.

use bson::{Bson, Document};

use super::{Child, Kind, ProjNode, Projection};
use crate::QueryError;

/// How deep arrays and documents may nest in projected data.
const MAX_DATA_DEPTH: usize = 200;

fn check_data_depth(depth: usize) -> Result<(), QueryError> {
    if depth > MAX_DATA_DEPTH {
        return Err(QueryError::BadValue(format!(
            "document nesting exceeds the maximum depth of {MAX_DATA_DEPTH}"
        )));
    }
    Ok(())
}

fn child<'a>(node: &'a ProjNode, name: &str) -> Option<&'a Child> {
    node.children
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c)
}

impl Projection {
    /// Applies the projection to `doc`.
    pub(crate) fn apply(&self, doc: &Document) -> Result<Document, QueryError> {
        let rec = self.recurse_nested_arrays;
        match self.kind {
            Kind::Inclusion => {
                let mut out = include_doc(doc, &self.root, rec, 0)?;
                if self.root.computed {
                    apply_computed(doc, &mut out, &self.root, rec, 0)?;
                }
                Ok(out)
            }
            Kind::Exclusion => exclude_doc(doc, &self.root, rec, 0),
            Kind::Addition => {
                let mut out = doc.clone();
                apply_computed(doc, &mut out, &self.root, rec, 0)?;
                Ok(out)
            }
        }
    }
}

fn include_doc(
    doc: &Document,
    node: &ProjNode,
    rec: bool,
    depth: usize,
) -> Result<Document, QueryError> {
    check_data_depth(depth)?;
    let mut out = Document::new();
    for (name, value) in doc {
        match child(node, name) {
            Some(Child::Include) => {
                out.insert(name.clone(), value.clone());
            }
            Some(Child::Node(sub)) => {
                if let Some(v) = include_value(value, sub, rec, depth + 1)? {
                    out.insert(name.clone(), v);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn include_value(
    value: &Bson,
    node: &ProjNode,
    rec: bool,
    depth: usize,
) -> Result<Option<Bson>, QueryError> {
    check_data_depth(depth)?;
    match value {
        Bson::Document(d) => Ok(Some(Bson::Document(include_doc(d, node, rec, depth + 1)?))),
        Bson::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if matches!(item, Bson::Array(_)) && !rec {
                    continue;
                }
                if let Some(v) = include_value(item, node, rec, depth + 1)? {
                    out.push(v);
                }
            }
            Ok(Some(Bson::Array(out)))
        }
        _ => Ok(None),
    }
}

fn exclude_doc(
    doc: &Document,
    node: &ProjNode,
    rec: bool,
    depth: usize,
) -> Result<Document, QueryError> {
    check_data_depth(depth)?;
    let mut out = Document::new();
    for (name, value) in doc {
        match child(node, name) {
            Some(Child::Exclude) => {}
            Some(Child::Node(sub)) => {
                out.insert(name.clone(), exclude_value(value, sub, rec, depth + 1)?);
            }
            _ => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(out)
}

fn exclude_value(
    value: &Bson,
    node: &ProjNode,
    rec: bool,
    depth: usize,
) -> Result<Bson, QueryError> {
    check_data_depth(depth)?;
    match value {
        Bson::Document(d) => Ok(Bson::Document(exclude_doc(d, node, rec, depth + 1)?)),
        Bson::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if matches!(item, Bson::Array(_)) && !rec {
                    out.push(item.clone());
                } else {
                    out.push(exclude_value(item, node, rec, depth + 1)?);
                }
            }
            Ok(Bson::Array(out))
        }
        other => Ok(other.clone()),
    }
}

/// Evaluates the computed fields of `node` against `root` into `out`.
fn apply_computed(
    root: &Document,
    out: &mut Document,
    node: &ProjNode,
    rec: bool,
    depth: usize,
) -> Result<(), QueryError> {
    check_data_depth(depth)?;
    for (name, c) in &node.children {
        match c {
            Child::Computed(expr) => match expr.eval(root) {
                Some(v) => {
                    out.insert(name.clone(), v);
                }
                None => {
                    out.remove(name);
                }
            },
            Child::Node(sub) if sub.computed => match out.get_mut(name) {
                Some(existing) => computed_into(root, existing, sub, rec, depth + 1)?,
                None => {
                    let mut d = Document::new();
                    apply_computed(root, &mut d, sub, rec, depth + 1)?;
                    out.insert(name.clone(), d);
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Applies computed sub-fields to an existing value: into a document, into
/// each element of an array, or replacing a scalar with a new document.
fn computed_into(
    root: &Document,
    value: &mut Bson,
    node: &ProjNode,
    rec: bool,
    depth: usize,
) -> Result<(), QueryError> {
    check_data_depth(depth)?;
    match value {
        Bson::Document(d) => apply_computed(root, d, node, rec, depth + 1),
        Bson::Array(items) => {
            for item in items.iter_mut() {
                if matches!(item, Bson::Array(_)) && !rec {
                    continue;
                }
                computed_into(root, item, node, rec, depth + 1)?;
            }
            Ok(())
        }
        _ => {
            let mut d = Document::new();
            apply_computed(root, &mut d, node, rec, depth + 1)?;
            *value = Bson::Document(d);
            Ok(())
        }
    }
}
