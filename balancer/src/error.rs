//! `BalancerError`: a refusal with a MongoDB code, or a shard's or the
//! store's failure.

use std::borrow::Cow;

use shardgate_config_store::StoreError;
use shardgate_shard_client::ShardError;
use thiserror::Error;

/// An error of a round or a migration.
#[derive(Debug, Error)]
pub enum BalancerError {
    /// Refused, with a MongoDB code.
    #[error("{message}")]
    Command {
        /// MongoDB error code.
        code: i32,
        /// MongoDB code name.
        code_name: Cow<'static, str>,
        /// What went wrong.
        message: String,
    },
    /// A shard failed.
    #[error("{0}")]
    Shard(#[from] ShardError),
    /// The config store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl BalancerError {
    /// A refusal with a MongoDB code.
    pub fn command(
        code: i32,
        code_name: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> BalancerError {
        BalancerError::Command {
            code,
            code_name: code_name.into(),
            message: message.into(),
        }
    }

    /// BadValue (2).
    pub fn bad_value(message: impl Into<String>) -> BalancerError {
        BalancerError::command(2, "BadValue", message)
    }

    /// The MongoDB error code and code name a client sees.
    pub fn code(&self) -> (i32, &str) {
        match self {
            BalancerError::Command {
                code, code_name, ..
            } => (*code, code_name.as_ref()),
            BalancerError::Shard(e) => e.code(),
            BalancerError::Store(StoreError::Rejected {
                code, code_name, ..
            }) => (*code, code_name),
            BalancerError::Store(StoreError::Invariant(_)) => (20, "IllegalOperation"),
            BalancerError::Store(_) => (1, "InternalError"),
        }
    }
}

/// Result alias for the balancer.
pub type Result<T> = std::result::Result<T, BalancerError>;
