//! Arguments of `$exists`, `$size`, `$type` and `$mod`.

use bson::Bson;

use crate::number::{as_num, compare_nums, Num};
use crate::QueryError;

/// MongoDB's `trueValue()` of an operand: false for `false`, zero, null and
/// undefined.
pub(super) fn truthy(v: &Bson) -> bool {
    match v {
        Bson::Boolean(b) => *b,
        Bson::Null | Bson::Undefined => false,
        other => match as_num(other) {
            Some(Num::Dec(d)) => !d.is_zero(),
            Some(n) => compare_nums(&n, &Num::Int(0)) != std::cmp::Ordering::Equal,
            None => true,
        },
    }
}

pub(super) fn parse_size(value: &Bson) -> Result<i64, QueryError> {
    let size = match value {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => {
            i32::try_from(*i).map_err(|_| {
                QueryError::BadValue("$size must be representable as a 32-bit integer".to_owned())
            })?;
            *i
        }
        Bson::Double(d) => {
            if d.fract() != 0.0 || !d.is_finite() || d.abs() > f64::from(i32::MAX) {
                return Err(QueryError::BadValue(format!(
                    "Failed to parse $size. Expected an integer, but found {d}"
                )));
            }
            // Integral and within i32 range, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let n = *d as i64;
            n
        }
        _ => {
            return Err(QueryError::BadValue(format!(
                "Failed to parse $size. Expected a number in: $size: {value}"
            )))
        }
    };
    if size < 0 {
        return Err(QueryError::BadValue(format!(
            "Failed to parse $size. Expected a non-negative number in: $size: {value}"
        )));
    }
    Ok(size)
}

/// BSON type codes accepted by `$type`; `number` expands to the four numeric
/// types.
fn type_alias(name: &str) -> Option<&'static [i32]> {
    Some(match name {
        "double" => &[1],
        "string" => &[2],
        "object" => &[3],
        "array" => &[4],
        "binData" => &[5],
        "undefined" => &[6],
        "objectId" => &[7],
        "bool" => &[8],
        "date" => &[9],
        "null" => &[10],
        "regex" => &[11],
        "dbPointer" => &[12],
        "javascript" => &[13],
        "symbol" => &[14],
        "javascriptWithScope" => &[15],
        "int" => &[16],
        "timestamp" => &[17],
        "long" => &[18],
        "decimal" => &[19],
        "minKey" => &[-1],
        "maxKey" => &[127],
        "number" => &[1, 16, 18, 19],
        _ => return None,
    })
}

fn parse_type_one(v: &Bson, out: &mut Vec<i32>) -> Result<(), QueryError> {
    match v {
        Bson::String(s) => {
            let codes = type_alias(s)
                .ok_or_else(|| QueryError::BadValue(format!("Unknown type name alias: {s}")))?;
            out.extend_from_slice(codes);
        }
        other => {
            let n = as_num(other).ok_or_else(|| {
                QueryError::TypeMismatch(
                    "type must be represented as a number or a string".to_owned(),
                )
            })?;
            let code = [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, -1, 127,
            ]
            .into_iter()
            .find(|c| compare_nums(&n, &Num::Int(i64::from(*c))).is_eq())
            .ok_or_else(|| QueryError::BadValue(format!("Invalid numerical type code: {other}")))?;
            out.push(code);
        }
    }
    Ok(())
}

pub(super) fn parse_types(value: &Bson) -> Result<Vec<i32>, QueryError> {
    let mut out = Vec::new();
    match value {
        Bson::Array(items) => {
            for item in items {
                parse_type_one(item, &mut out)?;
            }
        }
        other => parse_type_one(other, &mut out)?,
    }
    Ok(out)
}

pub(super) fn parse_mod(value: &Bson) -> Result<(i64, i64), QueryError> {
    let Bson::Array(items) = value else {
        return Err(QueryError::BadValue(
            "malformed mod, needs to be an array".to_owned(),
        ));
    };
    let (divisor, remainder) = match items.as_slice() {
        [] | [_] => {
            return Err(QueryError::BadValue(
                "malformed mod, not enough elements".to_owned(),
            ))
        }
        [d, r] => (d, r),
        _ => {
            return Err(QueryError::BadValue(
                "malformed mod, too many elements".to_owned(),
            ))
        }
    };
    let num = |v: &Bson, what: &str| -> Result<i64, QueryError> {
        let n = as_num(v)
            .ok_or_else(|| QueryError::BadValue(format!("malformed mod, {what} not a number")))?;
        crate::number::truncate(&n)
            .ok_or_else(|| QueryError::BadValue(format!("malformed mod, {what} value is invalid")))
    };
    let d = num(divisor, "divisor")?;
    let r = num(remainder, "remainder")?;
    if d == 0 {
        return Err(QueryError::BadValue("divisor cannot be 0".to_owned()));
    }
    Ok((d, r))
}
