//! Aggregation expressions: field paths, variables, literals, object and
//! array literals, and a few operators.

mod names;

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::compare::compare_opt;
use super::number::as_num;
use super::path::{eval_field_path, parse_field_path};
use super::{check_depth, QueryError};

/// A parsed aggregation expression.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Const(Bson),
    /// A path in the current document (`$a.b`, `$$CURRENT.a.b`, `$$ROOT.a.b`).
    Path(Vec<String>),
    /// `$$ROOT` / `$$CURRENT` themselves.
    Root,
    /// `$$REMOVE`: a missing value.
    Remove,
    Object(Vec<(String, Expr)>),
    Array(Vec<Expr>),
    IfNull(Vec<Expr>),
    Cond(Box<[Expr; 3]>),
    Compare(CmpKind, Box<[Expr; 2]>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

/// An aggregation comparison operator.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CmpKind {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Cmp,
}

impl Expr {
    /// Parses an operand: a `$path` or `$$variable` string, an object (an
    /// operator expression when its first field starts with `$`, otherwise
    /// an object literal of expressions), an array of expressions, or a
    /// constant.
    pub(crate) fn parse(value: &Bson, depth: usize) -> Result<Expr, QueryError> {
        check_depth(depth)?;
        match value {
            Bson::String(s) if s.starts_with("$$") => parse_variable(&s[2..]),
            Bson::String(s) if s.starts_with('$') => {
                if s.len() == 1 {
                    return Err(location!(16872, "'$' by itself is not a valid FieldPath"));
                }
                Ok(Expr::Path(parse_field_path(&s[1..])?))
            }
            Bson::Document(d) => parse_object(d, depth),
            Bson::Array(items) => Ok(Expr::Array(
                items
                    .iter()
                    .map(|i| Expr::parse(i, depth + 1))
                    .collect::<Result<_, _>>()?,
            )),
            other => Ok(Expr::Const(other.clone())),
        }
    }

    /// Whether the expression is a constant.
    pub(crate) fn as_const(&self) -> Option<&Bson> {
        match self {
            Expr::Const(c) => Some(c),
            _ => None,
        }
    }

    /// Evaluates against `root` (both `$$ROOT` and `$$CURRENT`); `None` is a
    /// missing value.
    pub(crate) fn eval(&self, root: &Document) -> Option<Bson> {
        match self {
            Expr::Const(c) => Some(c.clone()),
            Expr::Path(p) => eval_field_path(root, p),
            Expr::Root => Some(Bson::Document(root.clone())),
            Expr::Remove => None,
            Expr::Object(fields) => {
                let mut out = Document::new();
                for (name, e) in fields {
                    if let Some(v) = e.eval(root) {
                        out.insert(name.clone(), v);
                    }
                }
                Some(Bson::Document(out))
            }
            Expr::Array(items) => Some(Bson::Array(
                items
                    .iter()
                    .map(|e| e.eval(root).unwrap_or(Bson::Null))
                    .collect(),
            )),
            Expr::IfNull(args) => eval_if_null(args, root),
            Expr::Cond(parts) => {
                let [cond, then, otherwise] = parts.as_ref();
                if truthy(cond.eval(root).as_ref()) {
                    then.eval(root)
                } else {
                    otherwise.eval(root)
                }
            }
            Expr::Compare(kind, args) => {
                let [a, b] = args.as_ref();
                Some(eval_compare(
                    *kind,
                    a.eval(root).as_ref(),
                    b.eval(root).as_ref(),
                ))
            }
            Expr::And(args) => Some(Bson::Boolean(
                args.iter().all(|e| truthy(e.eval(root).as_ref())),
            )),
            Expr::Or(args) => Some(Bson::Boolean(
                args.iter().any(|e| truthy(e.eval(root).as_ref())),
            )),
            Expr::Not(e) => Some(Bson::Boolean(!truthy(e.eval(root).as_ref()))),
        }
    }
}

fn eval_if_null(args: &[Expr], root: &Document) -> Option<Bson> {
    let (last, firsts) = args.split_last()?;
    for e in firsts {
        let v = e.eval(root);
        if !matches!(v, None | Some(Bson::Null) | Some(Bson::Undefined)) {
            return v;
        }
    }
    last.eval(root)
}

fn eval_compare(kind: CmpKind, a: Option<&Bson>, b: Option<&Bson>) -> Bson {
    let ord = compare_opt(a, b);
    let r = match kind {
        CmpKind::Cmp => {
            return Bson::Int32(match ord {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            })
        }
        CmpKind::Eq => ord.is_eq(),
        CmpKind::Ne => ord.is_ne(),
        CmpKind::Gt => ord.is_gt(),
        CmpKind::Gte => ord.is_ge(),
        CmpKind::Lt => ord.is_lt(),
        CmpKind::Lte => ord.is_le(),
    };
    Bson::Boolean(r)
}

/// Aggregation truthiness (`coerceToBool`): false for missing, null,
/// undefined, `false` and numeric zero; true otherwise.
pub(crate) fn truthy(v: Option<&Bson>) -> bool {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) => false,
        Some(Bson::Boolean(b)) => *b,
        Some(other) => match as_num(other) {
            Some(super::number::Num::Int(i)) => i != 0,
            Some(super::number::Num::Double(d)) => d != 0.0,
            Some(super::number::Num::Dec(d)) => !d.is_zero(),
            None => true,
        },
    }
}

fn parse_variable(rest: &str) -> Result<Expr, QueryError> {
    let (name, path) = match rest.split_once('.') {
        Some((n, p)) => (n, Some(p)),
        None => (rest, None),
    };
    match name {
        "ROOT" | "CURRENT" => match path {
            None => Ok(Expr::Root),
            Some(p) => Ok(Expr::Path(parse_field_path(p)?)),
        },
        "REMOVE" => Ok(Expr::Remove),
        "NOW" | "CLUSTER_TIME" | "USER_ROLES" | "SEARCH_META" => Err(QueryError::not_implemented(
            format!("the variable $${name}"),
        )),
        "" => Err(location!(16869, "empty variable names are not allowed")),
        _ => Err(location!(17276, "Use of undefined variable: {name}")),
    }
}

fn parse_object(d: &Document, depth: usize) -> Result<Expr, QueryError> {
    let Some(first) = d.keys().next() else {
        return Ok(Expr::Object(Vec::new()));
    };
    if first.starts_with('$') {
        if d.len() != 1 {
            return Err(location!(
                15983,
                "an expression specification must contain exactly one field, the name of the \
                 expression. Found {} fields in {}",
                d.len(),
                d
            ));
        }
        let arg = d.get(first).unwrap_or(&Bson::Null);
        return parse_operator(first, arg, depth);
    }
    let mut fields = Vec::with_capacity(d.len());
    for (name, value) in d {
        if name.starts_with('$') {
            return Err(location!(
                16410,
                "FieldPath field names may not start with '$'."
            ));
        }
        if name.contains('.') {
            return Err(location!(
                16412,
                "FieldPath field names may not contain '.'."
            ));
        }
        fields.push((name.clone(), Expr::parse(value, depth + 1)?));
    }
    Ok(Expr::Object(fields))
}

/// The operands of an n-ary operator: the array's elements, or the single
/// non-array operand.
fn operands(arg: &Bson, depth: usize) -> Result<Vec<Expr>, QueryError> {
    match arg {
        Bson::Array(items) => items.iter().map(|i| Expr::parse(i, depth + 1)).collect(),
        other => Ok(vec![Expr::parse(other, depth + 1)?]),
    }
}

fn exactly<const N: usize>(name: &str, args: Vec<Expr>) -> Result<[Expr; N], QueryError> {
    let n = args.len();
    args.try_into().map_err(|_| {
        location!(
            16020,
            "Expression {name} takes exactly {N} arguments. {n} were passed in."
        )
    })
}

fn parse_operator(name: &str, arg: &Bson, depth: usize) -> Result<Expr, QueryError> {
    let cmp = |kind| -> Result<Expr, QueryError> {
        Ok(Expr::Compare(
            kind,
            Box::new(exactly::<2>(name, operands(arg, depth)?)?),
        ))
    };
    match name {
        "$literal" => Ok(Expr::Const(arg.clone())),
        "$ifNull" => {
            let args = operands(arg, depth)?;
            if args.len() < 2 {
                return Err(location!(
                    1257300,
                    "$ifNull needs at least two arguments, had: {}",
                    args.len()
                ));
            }
            Ok(Expr::IfNull(args))
        }
        "$cond" => parse_cond(arg, depth),
        "$eq" => cmp(CmpKind::Eq),
        "$ne" => cmp(CmpKind::Ne),
        "$gt" => cmp(CmpKind::Gt),
        "$gte" => cmp(CmpKind::Gte),
        "$lt" => cmp(CmpKind::Lt),
        "$lte" => cmp(CmpKind::Lte),
        "$cmp" => cmp(CmpKind::Cmp),
        "$and" => Ok(Expr::And(operands(arg, depth)?)),
        "$or" => Ok(Expr::Or(operands(arg, depth)?)),
        "$not" => {
            let [e] = exactly::<1>(name, operands(arg, depth)?)?;
            Ok(Expr::Not(Box::new(e)))
        }
        _ if names::is_expression_name(name) => Err(QueryError::not_implemented(format!(
            "the {name} expression"
        ))),
        _ => Err(QueryError::InvalidPipelineOperator(format!(
            "Unrecognized expression '{name}'"
        ))),
    }
}

fn parse_cond(arg: &Bson, depth: usize) -> Result<Expr, QueryError> {
    let Bson::Document(d) = arg else {
        return Ok(Expr::Cond(Box::new(exactly::<3>(
            "$cond",
            operands(arg, depth)?,
        )?)));
    };
    let mut parts: [Option<Expr>; 3] = [None, None, None];
    for (key, value) in d {
        let slot = match key.as_str() {
            "if" => 0,
            "then" => 1,
            "else" => 2,
            other => return Err(location!(17083, "Unrecognized parameter to $cond: {other}")),
        };
        parts[slot] = Some(Expr::parse(value, depth + 1)?);
    }
    let [c, t, e] = parts;
    let c = c.ok_or_else(|| location!(17080, "Missing 'if' parameter to $cond"))?;
    let t = t.ok_or_else(|| location!(17081, "Missing 'then' parameter to $cond"))?;
    let e = e.ok_or_else(|| location!(17082, "Missing 'else' parameter to $cond"))?;
    Ok(Expr::Cond(Box::new([c, t, e])))
}

/// Whether `name` (with its `$`) is an expression operator MongoDB knows.
pub(crate) fn is_expression_name(name: &str) -> bool {
    matches!(
        name,
        "$literal"
            | "$ifNull"
            | "$cond"
            | "$eq"
            | "$ne"
            | "$gt"
            | "$gte"
            | "$lt"
            | "$lte"
            | "$cmp"
            | "$and"
            | "$or"
            | "$not"
    ) || names::is_expression_name(name)
}
