//! The `$unwind` stage.

use bson::{Bson, Document};

use crate::path::{get_nested, parse_field_path, set_nested};
use crate::QueryError;

/// A parsed `$unwind` specification.
#[derive(Debug, Clone)]
pub(crate) struct UnwindSpec {
    path: Vec<String>,
    preserve: bool,
    index_field: Option<Vec<String>>,
}

fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Boolean(_) => "bool",
        Bson::Null => "null",
        Bson::Int32(_) => "int",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        _ => "other",
    }
}

fn parse_path(path: &str) -> Result<Vec<String>, QueryError> {
    let Some(stripped) = path.strip_prefix('$') else {
        return Err(location!(
            28818,
            "path option to $unwind stage should be prefixed with a '$': {path}"
        ));
    };
    parse_field_path(stripped)
}

impl UnwindSpec {
    /// Parses `"$path"` or `{path, preserveNullAndEmptyArrays,
    /// includeArrayIndex}`.
    pub(crate) fn parse(spec: &Bson) -> Result<UnwindSpec, QueryError> {
        match spec {
            Bson::String(s) => Ok(UnwindSpec {
                path: parse_path(s)?,
                preserve: false,
                index_field: None,
            }),
            Bson::Document(d) => UnwindSpec::parse_object(d),
            other => Err(location!(
                15981,
                "expected either a string or an object as specification for $unwind stage, got {}",
                type_name(other)
            )),
        }
    }

    fn parse_object(d: &Document) -> Result<UnwindSpec, QueryError> {
        let mut path = None;
        let mut preserve = false;
        let mut index_field = None;
        for (key, value) in d {
            match (key.as_str(), value) {
                ("path", Bson::String(s)) => path = Some(parse_path(s)?),
                ("path", other) => {
                    return Err(location!(
                        28808,
                        "expected a string as the path for $unwind stage, got {}",
                        type_name(other)
                    ))
                }
                ("preserveNullAndEmptyArrays", Bson::Boolean(b)) => preserve = *b,
                ("preserveNullAndEmptyArrays", other) => {
                    return Err(location!(
                        28809,
                        "expected a boolean for the preserveNullAndEmptyArrays option to \
                         $unwind stage, got {}",
                        type_name(other)
                    ))
                }
                ("includeArrayIndex", Bson::String(s)) if !s.is_empty() => {
                    if s.starts_with('$') {
                        return Err(location!(
                            28822,
                            "includeArrayIndex option to $unwind stage should not be prefixed \
                             with a '$': {s}"
                        ));
                    }
                    index_field = Some(parse_field_path(s)?);
                }
                ("includeArrayIndex", other) => {
                    return Err(location!(
                        28810,
                        "expected a non-empty string for the includeArrayIndex option to \
                         $unwind stage, got {}",
                        type_name(other)
                    ))
                }
                (other, _) => {
                    return Err(location!(
                        28811,
                        "unrecognized option to $unwind stage: {other}"
                    ))
                }
            }
        }
        let path = path.ok_or_else(|| location!(28812, "no path specified to $unwind stage"))?;
        Ok(UnwindSpec {
            path,
            preserve,
            index_field,
        })
    }

    /// Unwinds `docs`.
    pub(crate) fn run(&self, docs: Vec<Document>) -> Vec<Document> {
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            self.unwind_one(doc, &mut out);
        }
        out
    }

    fn with_index(&self, mut doc: Document, index: Bson) -> Document {
        if let Some(field) = &self.index_field {
            set_nested(&mut doc, field, Some(index));
        }
        doc
    }

    fn unwind_one(&self, doc: Document, out: &mut Vec<Document>) {
        let items = match get_nested(&doc, &self.path) {
            Some(Bson::Array(items)) => items.clone(),
            None | Some(Bson::Null) | Some(Bson::Undefined) => {
                if self.preserve {
                    out.push(self.with_index(doc, Bson::Null));
                }
                return;
            }
            Some(_) => {
                out.push(self.with_index(doc, Bson::Null));
                return;
            }
        };
        if items.is_empty() {
            if self.preserve {
                let mut doc = doc;
                set_nested(&mut doc, &self.path, None);
                out.push(self.with_index(doc, Bson::Null));
            }
            return;
        }
        for (i, item) in items.into_iter().enumerate() {
            let mut copy = doc.clone();
            set_nested(&mut copy, &self.path, Some(item));
            let index = Bson::Int64(i64::try_from(i).unwrap_or(i64::MAX));
            out.push(self.with_index(copy, index));
        }
    }
}
