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
    #[error("invalid config store URL {0:?}: expected embedded:PATH")]
    BadUrl(String),
}

impl StoreError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;
