//! Config store errors.

use thiserror::Error;

/// A config store failure. The store is to blame, not the client.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process has the embedded store open.
    #[error("config store {path} is in use by another process (only one router may open an embedded store)")]
    InUse {
        /// The file that is locked.
        path: String,
    },
    /// The store could not be reached or answered with an I/O error; a retry may help.
    #[error("config store unavailable: {0}")]
    Unavailable(String),
    /// A stored value does not decode; the store holds something this version cannot read.
    #[error("config store holds an undecodable value at {key}: {reason}")]
    Corrupt {
        /// The key whose value is bad.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// The `--config-store` URL is not one shardgate understands.
    #[error("invalid config store URL {0:?}: expected embedded:PATH or etcd://host:port[,host:port…]/prefix")]
    BadUrl(String),
    /// A watch asked for history the store no longer keeps; scan again.
    #[error("config store history before revision {revision} is compacted")]
    Compacted {
        /// The oldest revision still available.
        revision: u64,
    },
    /// The lease expired or was revoked.
    #[error("config store lease {0} expired")]
    LeaseExpired(i64),
    /// The change breaks a metadata rule the client can fix (for example an
    /// overlapping zone range); carries MongoDB's code for it.
    #[error("{message}")]
    Rejected {
        /// MongoDB error code.
        code: i32,
        /// MongoDB code name.
        code_name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A metadata change would break an invariant (for example leave a gap
    /// between chunks); nothing was written.
    #[error("{0}")]
    Invariant(String),
}

impl StoreError {
    /// A rejection with a MongoDB code.
    pub fn rejected(code: i32, code_name: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Rejected {
            code,
            code_name,
            message: message.into(),
        }
    }

    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;
