//! Reading a filter into a disjunction of conjunctions of per-field value
//! sets, keeping only what concerns the shard-key fields.

use bson::{Bson, Document};
use shardgate_config_store::shard_key::KeyKind;

use super::field::{self, Cmp, FieldSet};
use super::MAX_CONJUNCTIONS;

/// Filters nested deeper than this (`$and` in `$or` in …) are not read
/// further: that part of the filter is taken as unconstrained.
const MAX_DEPTH: usize = 100;
/// Literal values nested deeper than this leave their field unconstrained
/// (shard-key values nest at most 200 levels).
const MAX_VALUE_DEPTH: usize = 200;

static NULL: Bson = Bson::Null;
static UNDEFINED: Bson = Bson::Undefined;

/// What the reading is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Every value a match can have (reads).
    Target,
    /// Only equalities, which pin the key of an upserted document: `$in`,
    /// ranges and `$or` are ignored, and `null` is only `null`.
    Exact,
}

/// The shard-key fields and the mode.
pub(super) struct Ctx<'a> {
    fields: &'a [(&'a str, KeyKind)],
    mode: Mode,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(fields: &'a [(&'a str, KeyKind)], mode: Mode) -> Self {
        Ctx { fields, mode }
    }

    /// The conjunction allowing anything.
    fn all(&self) -> Conj {
        vec![FieldSet::All; self.fields.len()]
    }

    /// The disjunction allowing anything.
    fn anything(&self) -> Dnf {
        vec![self.all()]
    }
}

/// One value set per shard-key field, in pattern order.
pub(super) type Conj = Vec<FieldSet>;
/// Conjunctions any of which may hold; none means nothing matches.
pub(super) type Dnf = Vec<Conj>;

/// Whether the conjunction allows every key.
pub(super) fn is_unconstrained(conj: &Conj) -> bool {
    conj.iter().all(|set| *set == FieldSet::All)
}

fn is_unsatisfiable(conj: &Conj) -> bool {
    conj.iter().any(FieldSet::is_empty)
}

/// A whole filter document (top level or a `$and`/`$or` entry): the AND of
/// its fields and logical operators.
pub(super) fn document(ctx: &Ctx<'_>, doc: &Document, depth: usize) -> Dnf {
    let mut acc = ctx.anything();
    if depth > MAX_DEPTH {
        return acc;
    }
    for (key, value) in doc {
        let part = match key.strip_prefix('$') {
            Some("and") => and_list(ctx, value, depth),
            Some("or") if ctx.mode == Mode::Target => or_list(ctx, value, depth),
            // $nor, $expr, $where, $text, $comment, …: no constraint.
            Some(_) => continue,
            None => field_predicate(ctx, key, value),
        };
        acc = and(ctx, acc, part);
        if acc.is_empty() {
            break;
        }
    }
    acc
}

/// The entries of a `$and`/`$or`: a non-empty array of documents.
fn clauses(value: &Bson) -> Option<Vec<&Document>> {
    let Bson::Array(items) = value else {
        return None;
    };
    let docs: Option<Vec<&Document>> = items.iter().map(Bson::as_document).collect();
    docs.filter(|d| !d.is_empty())
}

fn and_list(ctx: &Ctx<'_>, value: &Bson, depth: usize) -> Dnf {
    let Some(items) = clauses(value) else {
        return ctx.anything();
    };
    let mut acc = ctx.anything();
    for item in items {
        acc = and(ctx, acc, document(ctx, item, depth + 1));
        if acc.is_empty() {
            break;
        }
    }
    acc
}

fn or_list(ctx: &Ctx<'_>, value: &Bson, depth: usize) -> Dnf {
    let Some(items) = clauses(value) else {
        return ctx.anything();
    };
    let mut out = Vec::new();
    for item in items {
        let branch = document(ctx, item, depth + 1);
        if branch.iter().any(is_unconstrained) {
            return ctx.anything();
        }
        out.extend(branch);
        if out.len() > MAX_CONJUNCTIONS {
            out = vec![hull(ctx, &out)];
        }
    }
    out
}

/// Both disjunctions: every pair of conjunctions, intersected.
fn and(ctx: &Ctx<'_>, a: Dnf, b: Dnf) -> Dnf {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    if matches!(a.as_slice(), [only] if is_unconstrained(only)) {
        return b;
    }
    if matches!(b.as_slice(), [only] if is_unconstrained(only)) {
        return a;
    }
    let b = if a.len() * b.len() > MAX_CONJUNCTIONS {
        vec![hull(ctx, &b)]
    } else {
        b
    };
    let a = if a.len() * b.len() > MAX_CONJUNCTIONS {
        vec![hull(ctx, &a)]
    } else {
        a
    };
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in &a {
        for y in &b {
            let conj: Conj = x.iter().zip(y).map(|(s, t)| s.intersect(t)).collect();
            if !is_unsatisfiable(&conj) {
                out.push(conj);
            }
        }
    }
    out
}

/// One conjunction allowing at least everything `dnf` allows: per field,
/// the hull of its intervals across the conjunctions.
fn hull(ctx: &Ctx<'_>, dnf: &[Conj]) -> Conj {
    let mut out = ctx.all();
    for (i, slot) in out.iter_mut().enumerate() {
        let mut intervals = Vec::new();
        for conj in dnf {
            match conj.get(i) {
                Some(FieldSet::Values(list)) => intervals.extend(list.iter().cloned()),
                _ => {
                    intervals.clear();
                    break;
                }
            }
        }
        if let Some(h) = field::hull(&intervals) {
            *slot = FieldSet::Values(vec![h]);
        }
    }
    out
}

/// `{path: value}` where `path` names a field (not an operator).
fn field_predicate(ctx: &Ctx<'_>, path: &str, value: &Bson) -> Dnf {
    let mut conj = ctx.all();
    let mut children: Vec<(usize, &str, KeyKind)> = Vec::new();
    for (i, (name, kind)) in ctx.fields.iter().enumerate() {
        if *name == path {
            conj[i] = value_set(ctx, value, *kind);
        } else if let Some(rest) = name.strip_prefix(path).and_then(|r| r.strip_prefix('.')) {
            children.push((i, rest, *kind));
        }
    }
    if is_unsatisfiable(&conj) {
        return Vec::new();
    }
    let parents = match children.is_empty() {
        true => None,
        false => parent_values(ctx, value),
    };
    let Some(parents) = parents else {
        return vec![conj];
    };
    // An equality on the parent document pins its dotted sub-fields.
    let mut out = Vec::new();
    for parent in parents {
        let mut c = conj.clone();
        for &(i, rest, kind) in &children {
            if let Some(v) = child_value(parent, rest) {
                c[i] = c[i].intersect(&field::points([v], kind));
            }
        }
        if !is_unsatisfiable(&c) {
            out.push(c);
        }
    }
    if out.len() > MAX_CONJUNCTIONS {
        out = vec![hull(ctx, &out)];
    }
    out
}

/// The values a field may take under `{field: value}`.
fn value_set(ctx: &Ctx<'_>, value: &Bson, kind: KeyKind) -> FieldSet {
    match value {
        Bson::Document(ops) if is_operator_document(ops) => operators(ctx, ops, kind),
        _ => equality(ctx, value, kind),
    }
}

/// `{field: {$op: arg, …}}`: the intersection of what each operator allows.
fn operators(ctx: &Ctx<'_>, ops: &Document, kind: KeyKind) -> FieldSet {
    let mut set = FieldSet::All;
    for (op, arg) in ops {
        let part = match (op.as_str(), ctx.mode) {
            ("$eq", _) => equality(ctx, arg, kind),
            ("$in", Mode::Target) => in_list(ctx, arg, kind),
            ("$gt", Mode::Target) => field::comparison(Cmp::Gt, arg, kind),
            ("$gte", Mode::Target) => field::comparison(Cmp::Gte, arg, kind),
            ("$lt", Mode::Target) => field::comparison(Cmp::Lt, arg, kind),
            ("$lte", Mode::Target) => field::comparison(Cmp::Lte, arg, kind),
            _ => continue,
        };
        set = set.intersect(&part);
    }
    set
}

/// Implicit or `$eq` equality with `value`.
fn equality(ctx: &Ctx<'_>, value: &Bson, kind: KeyKind) -> FieldSet {
    match value {
        Bson::Null => field::points(null_values(ctx), kind),
        _ => match literal(value) {
            Some(v) => field::points([v], kind),
            None => FieldSet::All,
        },
    }
}

/// `$in`: the listed values; anything but plain values leaves the field
/// unconstrained.
fn in_list(ctx: &Ctx<'_>, value: &Bson, kind: KeyKind) -> FieldSet {
    let Bson::Array(items) = value else {
        return FieldSet::All;
    };
    let mut values = Vec::with_capacity(items.len() + 1);
    for item in items {
        match item {
            Bson::Null => values.extend(null_values(ctx)),
            _ => match literal(item) {
                Some(v) => values.push(v),
                None => return FieldSet::All,
            },
        }
    }
    field::points(values, kind)
}

/// What `null` equality matches (besides missing fields, routed as null).
fn null_values(ctx: &Ctx<'_>) -> Vec<&'static Bson> {
    match ctx.mode {
        Mode::Target => vec![&NULL, &UNDEFINED],
        Mode::Exact => vec![&NULL],
    }
}

/// `value` if equality with it matches only values equal to it: not a
/// regex (pattern match), an array (matches elements too), `undefined`
/// (refused by servers) or a document with `$`-fields.
fn literal(value: &Bson) -> Option<&Bson> {
    match value {
        Bson::RegularExpression(_) | Bson::Array(_) | Bson::Undefined => None,
        Bson::Document(d) if d.keys().any(|k| k.starts_with('$')) => None,
        // Encoding and hashing recurse; shard keys cannot nest this deep.
        _ if nested_deeper_than(value, MAX_VALUE_DEPTH) => None,
        _ => Some(value),
    }
}

/// Whether `value` nests documents/arrays more than `levels` deep (looks
/// no deeper than that).
fn nested_deeper_than(value: &Bson, levels: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Bson>> = match value {
        Bson::Document(doc) => Box::new(doc.values()),
        Bson::Array(items) => Box::new(items.iter()),
        Bson::JavaScriptCodeWithScope(code) => Box::new(code.scope.values()),
        _ => return false,
    };
    levels == 0
        || children
            .into_iter()
            .any(|c| nested_deeper_than(c, levels - 1))
}

/// Whether a filter value is an operator document (first field `$…`).
fn is_operator_document(doc: &Document) -> bool {
    doc.keys().next().is_some_and(|k| k.starts_with('$'))
}

/// The values a parent field is pinned to by equality or `$in`, if it is.
fn parent_values<'v>(ctx: &Ctx<'_>, value: &'v Bson) -> Option<Vec<&'v Bson>> {
    let Bson::Document(ops) = value else {
        return literal(value).map(|v| vec![v]);
    };
    if !is_operator_document(ops) {
        return literal(value).map(|v| vec![v]);
    }
    for (op, arg) in ops {
        match (op.as_str(), ctx.mode) {
            ("$eq", _) => return literal(arg).map(|v| vec![v]),
            ("$in", Mode::Target) => {
                let Bson::Array(items) = arg else {
                    return None;
                };
                return items.iter().map(literal).collect();
            }
            _ => {}
        }
    }
    None
}

/// The value at the dotted `rest` path inside a parent value, as a stored
/// document's key would hold it: null where the path is missing or runs
/// through a non-document; `None` (unconstrained) for arrays and regexes.
fn child_value<'v>(parent: &'v Bson, rest: &str) -> Option<&'v Bson> {
    let mut current = parent;
    for segment in rest.split('.') {
        current = match current {
            Bson::Document(d) => match d.get(segment) {
                Some(v) => v,
                None => return Some(&NULL),
            },
            Bson::Array(_) => return None,
            _ => return Some(&NULL),
        };
    }
    literal(current)
}
