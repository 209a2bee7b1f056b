//! Projections: find's projection, `$project`, `$addFields`/`$set` and
//! `$unset`, parsed as MongoDB's `projection_parser.cpp` does.

mod apply;

use bson::{Bson, Document};

use super::expr::{is_expression_name, Expr};
use super::path::parse_field_path;
use super::{check_depth, QueryError};

/// Which flavour of projection a spec is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Inclusion,
    Exclusion,
    /// `$addFields`/`$set`: every field is computed, the rest kept.
    Addition,
}

/// Where the projection comes from; decides which syntax is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Find,
    Project,
    AddFields,
}

/// A node of the projection tree: its children in specification order.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProjNode {
    children: Vec<(String, Child)>,
    /// Whether the subtree holds computed fields.
    computed: bool,
}

#[derive(Debug, Clone)]
enum Child {
    Include,
    Exclude,
    Computed(Expr),
    Node(ProjNode),
}

/// A parsed projection.
#[derive(Debug, Clone)]
pub(crate) struct Projection {
    root: ProjNode,
    kind: Kind,
    /// Whether arrays nested directly in arrays are projected into
    /// (aggregation) or left alone (find).
    recurse_nested_arrays: bool,
}

struct Ctx {
    policy: Policy,
    kind: Option<Kind>,
    id_included: bool,
    id_specified: bool,
}

impl Projection {
    /// Parses a find projection (empty means "everything").
    pub(crate) fn parse_find(spec: &Document) -> Result<Projection, QueryError> {
        Projection::parse(spec, Policy::Find)
    }

    /// Parses a `$project` specification.
    pub(crate) fn parse_project(spec: &Document) -> Result<Projection, QueryError> {
        if spec.is_empty() {
            return Err(location!(
                51272,
                "projection specification must have at least one field"
            ));
        }
        Projection::parse(spec, Policy::Project)
    }

    /// Parses an `$addFields`/`$set` specification.
    pub(crate) fn parse_add_fields(spec: &Document) -> Result<Projection, QueryError> {
        Projection::parse(spec, Policy::AddFields)
    }

    /// An exclusion projection of `paths` (`$unset`).
    pub(crate) fn exclusion_of(paths: &[String]) -> Result<Projection, QueryError> {
        let mut spec = Document::new();
        for p in paths {
            spec.insert(p.clone(), 0);
        }
        Projection::parse(&spec, Policy::Project)
    }

    fn parse(spec: &Document, policy: Policy) -> Result<Projection, QueryError> {
        let mut ctx = Ctx {
            policy,
            kind: (policy == Policy::AddFields).then_some(Kind::Addition),
            id_included: false,
            id_specified: false,
        };
        let mut root = ProjNode::default();
        for (name, value) in spec {
            ctx.id_specified |= name == "_id" || name.starts_with("_id.");
            parse_element(&mut ctx, name, value, &mut root, true, 1)?;
        }
        let kind = match ctx.kind {
            Some(k) => k,
            None if ctx.id_included => Kind::Inclusion,
            None => Kind::Exclusion,
        };
        if !ctx.id_specified && kind == Kind::Inclusion {
            root.children.push(("_id".to_owned(), Child::Include));
        }
        if kind == Kind::Exclusion && ctx.id_included {
            root.children.retain(|(n, _)| n != "_id");
        }
        mark_computed(&mut root);
        Ok(Projection {
            root,
            kind,
            recurse_nested_arrays: policy != Policy::Find,
        })
    }
}

fn parse_element(
    ctx: &mut Ctx,
    name: &str,
    value: &Bson,
    parent: &mut ProjNode,
    at_root: bool,
    depth: usize,
) -> Result<(), QueryError> {
    check_depth(depth)?;
    if name.ends_with(".$") || name == "$" || name.contains(".$.") {
        if ctx.policy != Policy::Find {
            return Err(location!(
                31324,
                "Cannot use positional projection in aggregation projection"
            ));
        }
        return Err(QueryError::not_implemented("positional projection ('.$')"));
    }
    let path = parse_field_path(name)?;
    match value {
        Bson::Document(sub) if ctx.kind == Some(Kind::Addition) && sub.is_empty() => {
            add_computed(ctx, &path, value, parent, depth)
        }
        Bson::Document(sub) => parse_sub_object(ctx, name, &path, sub, parent, depth),
        Bson::Boolean(_)
        | Bson::Int32(_)
        | Bson::Int64(_)
        | Bson::Double(_)
        | Bson::Decimal128(_)
            if ctx.kind != Some(Kind::Addition) =>
        {
            let top_id = at_root && name == "_id";
            if super::expr::truthy(Some(value)) {
                add_node(parent, &path, Child::Include)?;
                if top_id {
                    ctx.id_included = true;
                } else {
                    set_kind(ctx, Kind::Inclusion, name)?;
                }
            } else {
                add_node(parent, &path, Child::Exclude)?;
                if !top_id {
                    set_kind(ctx, Kind::Exclusion, name)?;
                }
            }
            Ok(())
        }
        _ => add_computed(ctx, &path, value, parent, depth),
    }
}

fn set_kind(ctx: &mut Ctx, kind: Kind, name: &str) -> Result<(), QueryError> {
    match (ctx.kind, kind) {
        (Some(Kind::Exclusion), Kind::Inclusion) => Err(location!(
            31253,
            "Cannot do inclusion on field {name} in exclusion projection"
        )),
        (Some(Kind::Inclusion), Kind::Exclusion) => Err(location!(
            31254,
            "Cannot do exclusion on field {name} in inclusion projection"
        )),
        _ => {
            ctx.kind = Some(kind);
            Ok(())
        }
    }
}

/// A literal or `$path` operand becomes a computed field.
fn add_computed(
    ctx: &mut Ctx,
    path: &[String],
    value: &Bson,
    parent: &mut ProjNode,
    depth: usize,
) -> Result<(), QueryError> {
    if ctx.kind == Some(Kind::Exclusion) {
        return Err(location!(
            31310,
            "Cannot use an expression {}: {} in an exclusion projection",
            path.join("."),
            value
        ));
    }
    let expr = Expr::parse(value, depth + 1)?;
    add_node(parent, path, Child::Computed(expr))?;
    if ctx.kind.is_none() {
        ctx.kind = Some(Kind::Inclusion);
    }
    Ok(())
}

fn parse_sub_object(
    ctx: &mut Ctx,
    name: &str,
    path: &[String],
    sub: &Document,
    parent: &mut ProjNode,
    depth: usize,
) -> Result<(), QueryError> {
    let Some((first, _)) = sub.iter().next() else {
        return Err(location!(51270, "Invalid empty sub-projection: {name}"));
    };
    if sub.len() == 1 && first.starts_with('$') {
        return parse_operator_object(ctx, path, first, sub, parent, depth);
    }
    let node = inner_node(parent, path)?;
    for (child_name, child_value) in sub {
        parse_element(ctx, child_name, child_value, node, false, depth + 1)?;
    }
    Ok(())
}

fn parse_operator_object(
    ctx: &mut Ctx,
    path: &[String],
    op: &str,
    sub: &Document,
    parent: &mut ProjNode,
    depth: usize,
) -> Result<(), QueryError> {
    if ctx.policy == Policy::Find && (op == "$slice" || op == "$elemMatch") {
        return Err(QueryError::not_implemented(format!(
            "the {op} projection operator"
        )));
    }
    if op == "$meta" {
        return Err(QueryError::not_implemented("the $meta projection"));
    }
    if !is_expression_name(op) {
        return Err(location!(31325, "Unknown expression {op}"));
    }
    if ctx.kind == Some(Kind::Exclusion) {
        return Err(location!(
            31252,
            "Cannot use expression other than $meta in exclusion projection"
        ));
    }
    let expr = Expr::parse(&Bson::Document(sub.clone()), depth + 1)?;
    add_node(parent, path, Child::Computed(expr))?;
    if ctx.kind.is_none() {
        ctx.kind = Some(Kind::Inclusion);
    }
    Ok(())
}

/// Sets the `computed` flags bottom-up; returns the root's.
fn mark_computed(node: &mut ProjNode) -> bool {
    let mut any = false;
    for (_, child) in &mut node.children {
        any |= match child {
            Child::Computed(_) => true,
            Child::Node(n) => mark_computed(n),
            Child::Include | Child::Exclude => false,
        };
    }
    node.computed = any;
    any
}

/// Adds a leaf at `path` below `root` (`addNodeAtPath`), failing on path
/// collisions with MongoDB's 31249 / 31250.
fn add_node(root: &mut ProjNode, path: &[String], child: Child) -> Result<(), QueryError> {
    let mut node = root;
    for (i, comp) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        let pos = node.children.iter().position(|(n, _)| n == comp);
        if last {
            if pos.is_some() {
                return Err(location!(31250, "Path collision at {}", path.join(".")));
            }
            node.children.push((comp.clone(), child));
            return Ok(());
        }
        let idx = match pos {
            Some(idx) => idx,
            None => {
                node.children
                    .push((comp.clone(), Child::Node(ProjNode::default())));
                node.children.len() - 1
            }
        };
        node = match node.children.get_mut(idx) {
            Some((_, Child::Node(n))) => n,
            _ => {
                return Err(location!(
                    31249,
                    "Path collision at {} remaining portion {}",
                    path.join("."),
                    path.get(1..).unwrap_or_default().join(".")
                ))
            }
        };
    }
    Ok(())
}

/// The inner node at `path` below `root`, created if absent (for
/// sub-object projections such as `{a: {b: 1}}`).
fn inner_node<'a>(root: &'a mut ProjNode, path: &[String]) -> Result<&'a mut ProjNode, QueryError> {
    let mut node = root;
    for comp in path {
        let idx = match node.children.iter().position(|(n, _)| n == comp) {
            Some(idx) => idx,
            None => {
                node.children
                    .push((comp.clone(), Child::Node(ProjNode::default())));
                node.children.len() - 1
            }
        };
        node = match node.children.get_mut(idx) {
            Some((_, Child::Node(n))) => n,
            _ => return Err(location!(31250, "Path collision at {}", path.join("."))),
        };
    }
    Ok(node)
}
