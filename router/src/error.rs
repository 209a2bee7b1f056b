//! Router errors and the MongoDB-shaped error reply every client gets.

use std::borrow::Cow;

use bson::doc;
use shardgate_config_store::StoreError;
use shardgate_shard_client::ShardError;
use shardgate_wire::WireError;
use thiserror::Error;

/// Who is to blame for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something wrong.
    Client,
    /// A shard failed or could not be reached.
    Shard,
    /// The config store failed.
    ConfigStore,
    /// A bug or resource problem in the router.
    Internal,
}

/// An error the router answers a command with.
#[derive(Debug, Error)]
pub enum RouterError {
    /// The command is wrong; `code` is the MongoDB error code.
    #[error("{message}")]
    Command {
        /// MongoDB error code.
        code: i32,
        /// MongoDB code name.
        code_name: Cow<'static, str>,
        /// What went wrong.
        message: String,
    },
    /// A shard failed: its own `{ok: 0}` (code, code name and labels kept),
    /// or it could not be reached, answered too slowly or spoke garbage.
    #[error("{0}")]
    Shard(#[from] ShardError),
    /// The config store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The client's message could not be decoded.
    #[error("{0}")]
    Wire(#[from] WireError),
}

impl RouterError {
    /// A client error with a MongoDB code.
    pub fn command(
        code: i32,
        code_name: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> RouterError {
        RouterError::Command {
            code,
            code_name: code_name.into(),
            message: message.into(),
        }
    }

    /// BadValue (2).
    pub fn bad_value(message: impl Into<String>) -> RouterError {
        RouterError::command(2, "BadValue", message)
    }

    /// CommandNotFound (59).
    pub fn command_not_found(name: &str) -> RouterError {
        RouterError::command(59, "CommandNotFound", format!("no such command: '{name}'"))
    }

    /// A shard's `{ok: 0}` reply as an error that keeps its code, code
    /// name and labels.
    pub fn from_shard_reply(shard: &str, body: &bson::RawDocument) -> RouterError {
        RouterError::Shard(ShardError::from_reply(shard, body))
    }

    /// The MongoDB error code and code name.
    pub fn code(&self) -> (i32, &str) {
        match self {
            RouterError::Command {
                code, code_name, ..
            } => (*code, code_name.as_ref()),
            RouterError::Shard(e) => e.code(),
            RouterError::Store(StoreError::Rejected {
                code, code_name, ..
            }) => (*code, code_name),
            RouterError::Store(StoreError::Invariant(_)) => (20, "IllegalOperation"),
            RouterError::Store(e) if e.is_retryable() => (133, "FailedToSatisfyReadPreference"),
            RouterError::Store(_) => (1, "InternalError"),
            RouterError::Wire(e) => e.code(),
        }
    }

    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        match self {
            RouterError::Command { .. } | RouterError::Wire(_) => Blame::Client,
            RouterError::Shard(_) => Blame::Shard,
            RouterError::Store(StoreError::Rejected { .. } | StoreError::Invariant(_)) => {
                Blame::Client
            }
            RouterError::Store(_) => Blame::ConfigStore,
        }
    }

    /// Whether the same request may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            RouterError::Shard(e) => e.is_retryable(),
            RouterError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// The reply document: `{ok: 0, errmsg, code, codeName}`.
    pub fn to_reply(&self) -> Vec<u8> {
        let (code, code_name) = self.code();
        let mut d = doc! {
            "ok": 0.0,
            "errmsg": self.to_string(),
            "code": code,
            "codeName": code_name,
        };
        let mut labels = match self {
            RouterError::Shard(e) => e.labels(),
            _ => Vec::new(),
        };
        // StaleConfig from a held write is safe to retry: nothing was sent.
        if code == 13388 && !labels.iter().any(|l| l == "RetryableWriteError") {
            labels.push("RetryableWriteError".to_owned());
        }
        if !labels.is_empty() {
            d.insert("errorLabels", labels);
        }
        d.to_vec().unwrap_or_default()
    }
}

/// Result alias for command handling.
pub type Result<T> = std::result::Result<T, RouterError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_mongodb_shaped() {
        let e = RouterError::command_not_found("frobnicate");
        let d = bson::Document::from_reader(&e.to_reply()[..]).unwrap();
        assert_eq!(d.get_f64("ok").unwrap(), 0.0);
        assert_eq!(d.get_i32("code").unwrap(), 59);
        assert_eq!(d.get_str("codeName").unwrap(), "CommandNotFound");
        assert!(d.get_str("errmsg").unwrap().contains("frobnicate"));
    }
}
