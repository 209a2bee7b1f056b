//! Unit tests of the query engine, in small tables. Expected results follow
//! the MongoDB manual and server source.

mod aggregate;
mod compare;
mod errors;
mod filter;
mod filter_arrays;
mod group;
mod projection;
mod regex;
mod sh_status;
mod sort;

use std::str::FromStr;

use bson::{Bson, Document};

use super::Filter;

/// Whether `filter` matches `doc` (panics on a parse error: tests only).
fn matches(filter: Document, doc: Document) -> bool {
    Filter::parse(&filter).expect("filter parses").matches(&doc)
}

/// The `_id`s of `docs`, in order.
fn ids(docs: &[Document]) -> Vec<Bson> {
    docs.iter()
        .map(|d| d.get("_id").cloned().unwrap_or(Bson::Null))
        .collect()
}

/// A BSON regular expression value.
fn re(pattern: &str, options: &str) -> Bson {
    Bson::RegularExpression(bson::Regex {
        pattern: pattern.try_into().expect("pattern"),
        options: options.try_into().expect("options"),
    })
}

/// A Decimal128 value.
fn dec(s: &str) -> Bson {
    Bson::Decimal128(bson::Decimal128::from_str(s).expect("decimal"))
}

/// The error code a filter parse fails with.
fn filter_error(filter: Document) -> (i32, &'static str) {
    Filter::parse(&filter).expect_err("filter must fail").code()
}
