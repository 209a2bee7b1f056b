//! Which member a command needs, and whether it may be sent twice. Pure.

use bson::RawDocument;

use super::read_pref::ReadPreference;

/// Commands that only read, and so may go to a secondary when the client
/// asked for it with `$readPreference`, and be retried once.
const READS: [&str; 12] = [
    "find",
    "aggregate",
    "count",
    "distinct",
    "listCollections",
    "listIndexes",
    "listDatabases",
    "dbStats",
    "collStats",
    "dataSize",
    "validate",
    "explain",
];

/// Writes a driver retries (with the same `txnNumber`).
const RETRYABLE_WRITES: [&str; 5] = ["insert", "update", "delete", "findAndModify", "bulkWrite"];

/// Codes of the NotWritablePrimary class: the member stepped down, is not
/// primary, or is shutting down.
const NOT_PRIMARY: [i32; 8] = [10107, 13435, 13436, 189, 91, 11600, 11602, 10058];

/// Where a command goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    /// A cursor's commands go to the member holding it.
    pub cursor: Option<i64>,
    /// `killCursors`: the cursor ends whatever the reply says.
    pub kills: bool,
    /// A read the client let go to other members than the primary.
    pub read: Option<ReadPreference>,
    /// May be sent again after a stepdown.
    pub retryable: bool,
}

impl Route {
    /// The route of a command body.
    pub(crate) fn of(body: &RawDocument) -> Route {
        let name = body
            .iter()
            .next()
            .and_then(|e| e.ok())
            .map(|(k, _)| k.as_str().to_owned())
            .unwrap_or_default();
        let in_txn = body.get("autocommit").ok().flatten().is_some();
        let mut route = Route {
            cursor: None,
            kills: false,
            read: None,
            retryable: false,
        };
        match name.as_str() {
            "getMore" => route.cursor = body.get_i64("getMore").ok(),
            "killCursors" => {
                route.kills = true;
                route.cursor = body
                    .get_array("cursors")
                    .ok()
                    .and_then(|a| a.into_iter().next())
                    .and_then(|v| v.ok())
                    .and_then(|v| v.as_i64());
            }
            n if READS.contains(&n) && !writes_output(body) => {
                route.retryable = !in_txn;
                if !in_txn {
                    route.read = ReadPreference::of(body).filter(|p| !p.is_primary());
                }
            }
            n if RETRYABLE_WRITES.contains(&n) => {
                route.retryable = !in_txn && body.get("txnNumber").ok().flatten().is_some();
            }
            _ => {}
        }
        route
    }
}

/// Whether an `aggregate` writes (`$out`, `$merge`).
fn writes_output(body: &RawDocument) -> bool {
    body.get_array("pipeline").is_ok_and(|p| {
        p.into_iter().flatten().any(|s| {
            s.as_document()
                .and_then(|d| d.iter().next())
                .and_then(|e| e.ok())
                .is_some_and(|(k, _)| k.as_str() == "$out" || k.as_str() == "$merge")
        })
    })
}

/// Whether a reply says the member is not (or no longer) the primary.
pub(crate) fn not_primary(body: &RawDocument) -> bool {
    if crate::reply_ok(body) {
        return false;
    }
    let code = body
        .get("code")
        .ok()
        .flatten()
        .and_then(|v| v.as_i32().or(v.as_i64().map(|n| n as i32)))
        .unwrap_or(0);
    NOT_PRIMARY.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn writes_and_plain_reads_go_to_the_primary() {
        let r = Route::of(&rawdoc! {"insert": "c", "documents": [], "txnNumber": 1i64});
        assert!(r.read.is_none() && r.retryable);
        let r = Route::of(&rawdoc! {"insert": "c", "documents": []});
        assert!(!r.retryable);
        let r = Route::of(&rawdoc! {"find": "c"});
        assert!(r.read.is_none() && r.retryable);
    }

    #[test]
    fn reads_with_a_preference_and_cursors() {
        let r = Route::of(&rawdoc! {"find": "c", "$readPreference": {"mode": "secondary"}});
        assert!(r.read.is_some());
        let r = Route::of(
            &rawdoc! {"aggregate": "c", "pipeline": [{"$out": "x"}], "$readPreference": {"mode": "secondary"}},
        );
        assert!(r.read.is_none() && !r.retryable);
        let r = Route::of(
            &rawdoc! {"find": "c", "autocommit": false, "$readPreference": {"mode": "secondary"}},
        );
        assert!(r.read.is_none() && !r.retryable);
        assert_eq!(
            Route::of(&rawdoc! {"getMore": 42i64, "collection": "c"}).cursor,
            Some(42)
        );
        let k = Route::of(&rawdoc! {"killCursors": "c", "cursors": [7i64]});
        assert!(k.kills && k.cursor == Some(7));
    }

    #[test]
    fn not_primary_codes() {
        assert!(not_primary(&rawdoc! {"ok": 0.0, "code": 10107}));
        assert!(not_primary(&rawdoc! {"ok": 0.0, "code": 189}));
        assert!(!not_primary(&rawdoc! {"ok": 0.0, "code": 11000}));
        assert!(!not_primary(&rawdoc! {"ok": 1.0}));
    }
}
