//! The query that selects a chunk range on a shard.

use bson::{doc, Bson, Document};

use super::KeyKind;

/// A query filter for shard-key tuples in `[min, max)`, lexicographic over
/// the key fields (descending fields compare the other way).
pub fn range_filter(fields: &[(&str, KeyKind)], min: &Document, max: &Document) -> Document {
    doc! {"$and": [bound_filter(fields, min, true), bound_filter(fields, max, false)]}
}

fn bound_filter(fields: &[(&str, KeyKind)], bound: &Document, lower: bool) -> Document {
    let Some(((field, kind), rest)) = fields.split_first() else {
        return Document::new();
    };
    let value = bound.get(*field).cloned().unwrap_or(Bson::Null);
    let ascending = *kind != KeyKind::Descending;
    // The key-space extreme on this side constrains nothing.
    let unbounded = match (lower, ascending) {
        (true, true) | (false, false) => value == Bson::MinKey,
        (true, false) | (false, true) => value == Bson::MaxKey,
    };
    if unbounded {
        return Document::new();
    }
    let strict = if lower == ascending { "$gt" } else { "$lt" };
    if rest.is_empty() {
        let last = match (lower, ascending) {
            (true, true) => "$gte",
            (true, false) => "$lte",
            (false, _) => strict,
        };
        return doc! {*field: {last: value}};
    }
    doc! {"$or": [
        {*field: {strict: value.clone()}},
        {"$and": [{*field: value}, bound_filter(rest, bound, lower)]},
    ]}
}
