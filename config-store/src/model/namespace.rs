//! `Namespace`: the one way to split `db.collection`.

/// A `db.collection` name, split at its first dot (a collection name may
/// hold more dots; a name without one is a database alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace<'a> {
    /// The database.
    pub db: &'a str,
    /// The collection (empty for a bare database name).
    pub coll: &'a str,
}

impl<'a> Namespace<'a> {
    /// Splits `ns`.
    pub fn parse(ns: &'a str) -> Namespace<'a> {
        let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
        Namespace { db, coll }
    }
}
