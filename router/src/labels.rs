//! Error labels and code names as mongod gives them, for the errors the
//! router answers itself (its own checks, its `failCommand` fail point, a
//! transaction it aborted): drivers decide what to retry by the labels.
//! - `TransientTransactionError`: inside a transaction (or its commit or
//!   abort), for an error after which the whole transaction may succeed;
//! - `RetryableWriteError`: for a retryable write (or a commit or abort),
//!   on an error a retry may get past;
//! - `UnknownTransactionCommitResult`: a `commitTransaction` whose outcome
//!   the error leaves unknown.

use bson::{Bson, Document, RawDocument};

/// Codes after which a retry may succeed (mongod's `RetriableError`).
const RETRYABLE: [i32; 13] = [
    6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// Codes after which the transaction may succeed if run again.
const TRANSIENT: [i32; 9] = [24, 63, 112, 150, 239, 246, 249, 267, 13388];

/// Codes of a time limit running out.
const TIME_LIMIT: [i32; 3] = [50, 202, 262];

/// What the labels of an error depend on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Context {
    /// A statement of a transaction (`autocommit: false`), or its commit
    /// or abort.
    pub in_txn: bool,
    /// `commitTransaction` or `abortTransaction`.
    pub commit_or_abort: bool,
    /// `commitTransaction`.
    pub commit: bool,
    /// A retryable write (or a commit or abort).
    pub retryable_write: bool,
}

impl Context {
    /// The context of a command `name` with `body`.
    pub(crate) fn of(name: &str, body: &RawDocument) -> Context {
        let commit_or_abort = matches!(name, "commitTransaction" | "abortTransaction");
        let in_txn = body.get_bool("autocommit").is_ok() || commit_or_abort;
        let writes = matches!(
            name,
            "insert" | "update" | "delete" | "findAndModify" | "findandmodify" | "bulkWrite"
        );
        Context {
            in_txn,
            commit_or_abort,
            commit: name == "commitTransaction",
            retryable_write: (writes && body.get_i64("txnNumber").is_ok() && !in_txn)
                || commit_or_abort,
        }
    }
}

/// Whether a statement's error leaves the transaction worth running again.
pub(crate) fn is_transient(code: i32) -> bool {
    TRANSIENT.contains(&code) || code == 251
}

/// The labels mongod adds to an error `code` (a `writeConcernError`'s
/// code in `wce`).
pub(crate) fn labels(code: i32, wce: Option<i32>, ctx: Context) -> Vec<&'static str> {
    let mut out = Vec::new();
    let transient =
        TRANSIENT.contains(&code) || (code == 251 && (!ctx.commit_or_abort || wce.is_none()));
    if ctx.in_txn && transient {
        out.push("TransientTransactionError");
    }
    let retryable = RETRYABLE.contains(&code) || wce.is_some_and(|w| RETRYABLE.contains(&w));
    if ctx.retryable_write && retryable {
        out.push("RetryableWriteError");
    }
    if ctx.commit && (RETRYABLE.contains(&code) || TIME_LIMIT.contains(&code) || code == 64) {
        out.push("UnknownTransactionCommitResult");
    }
    out
}

/// An error reply with the labels it must carry in `ctx`: those a shard
/// gave, less `RetryableWriteError` outside a retryable write, plus the
/// ones mongod adds.
pub(crate) fn relabel(reply: &mut Document, ctx: Context) {
    let code = reply.get_i32("code").unwrap_or(0);
    let wce = reply
        .get_document("writeConcernError")
        .ok()
        .and_then(|w| w.get_i32("code").ok());
    let mut kept: Vec<Bson> = reply
        .get_array("errorLabels")
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| ctx.retryable_write || l.as_str() != Some("RetryableWriteError"))
        .collect();
    for l in labels(code, wce, ctx) {
        if !kept.iter().any(|k| k.as_str() == Some(l)) {
            kept.push(Bson::from(l));
        }
    }
    if kept.is_empty() {
        reply.remove("errorLabels");
    } else {
        reply.insert("errorLabels", kept);
    }
}

/// mongod's name of an error code.
pub(crate) fn code_name(code: i32) -> &'static str {
    match code {
        1 => "InternalError",
        2 => "BadValue",
        6 => "HostUnreachable",
        7 => "HostNotFound",
        8 => "UnknownError",
        9 => "FailedToParse",
        11 => "UserNotFound",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        18 => "AuthenticationFailed",
        20 => "IllegalOperation",
        24 => "LockTimeout",
        26 => "NamespaceNotFound",
        43 => "CursorNotFound",
        48 => "NamespaceExists",
        50 => "MaxTimeMSExpired",
        59 => "CommandNotFound",
        63 => "StaleShardVersion",
        64 => "WriteConcernFailed",
        72 => "InvalidOptions",
        79 => "UnknownReplWriteConcern",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        96 => "OperationFailed",
        100 => "UnsatisfiableWriteConcern",
        112 => "WriteConflict",
        121 => "DocumentValidationFailure",
        134 => "ReadConcernMajorityNotAvailableYet",
        150 => "StaleEpoch",
        189 => "PrimarySteppedDown",
        202 => "NetworkInterfaceExceededTimeLimit",
        225 => "TransactionTooOld",
        239 => "SnapshotTooOld",
        244 => "TransactionAborted",
        246 => "SnapshotUnavailable",
        249 => "StaleDbVersion",
        251 => "NoSuchTransaction",
        256 => "TransactionCommitted",
        257 => "TransactionTooLarge",
        262 => "ExceededTimeLimit",
        263 => "OperationNotSupportedInTransaction",
        267 => "PreparedTransactionInProgress",
        9001 => "SocketException",
        10107 => "NotWritablePrimary",
        11000 => "DuplicateKey",
        11600 => "InterruptedAtShutdown",
        11601 => "Interrupted",
        11602 => "InterruptedDueToReplStateChange",
        13388 => "StaleConfig",
        13435 => "NotPrimaryNoSecondaryOk",
        13436 => "NotPrimaryOrSecondary",
        _ => "UnknownError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(name: &str, body: bson::Document) -> Context {
        Context::of(name, &bson::RawDocumentBuf::try_from(&body).unwrap())
    }

    #[test]
    fn labels_follow_mongod() {
        let txn = ctx(
            "insert",
            bson::doc! {"txnNumber": 1i64, "autocommit": false},
        );
        assert_eq!(labels(251, None, txn), ["TransientTransactionError"]);
        assert_eq!(labels(112, None, txn), ["TransientTransactionError"]);
        assert!(labels(11000, None, txn).is_empty());
        let commit = ctx(
            "commitTransaction",
            bson::doc! {"txnNumber": 1i64, "autocommit": false},
        );
        assert_eq!(labels(251, None, commit), ["TransientTransactionError"]);
        assert!(labels(251, Some(64), commit).is_empty());
        assert_eq!(
            labels(91, None, commit),
            ["RetryableWriteError", "UnknownTransactionCommitResult"]
        );
        assert_eq!(labels(50, None, commit), ["UnknownTransactionCommitResult"]);
        let retryable = ctx("insert", bson::doc! {"txnNumber": 1i64});
        assert_eq!(labels(10107, None, retryable), ["RetryableWriteError"]);
        assert_eq!(labels(0, Some(91), retryable), ["RetryableWriteError"]);
        let plain = ctx("insert", bson::doc! {});
        assert!(labels(10107, None, plain).is_empty());
        assert!(labels(251, None, plain).is_empty());
        let mut reply = bson::doc! {"ok": 0.0, "code": 6, "errorLabels": ["RetryableWriteError"]};
        relabel(&mut reply, plain);
        assert!(!reply.contains_key("errorLabels"), "{reply}");
        assert_eq!(code_name(11601), "Interrupted");
    }
}
