//! Router errors and the MongoDB-shaped error reply every client gets.

use std::borrow::Cow;

use bson::doc;
use shardgate_config_store::StoreError;
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
    /// A shard could not be reached or the connection broke.
    #[error("shard {shard} ({host}) unreachable: {reason}")]
    ShardUnreachable {
        /// The shard's name.
        shard: String,
        /// The address tried.
        host: String,
        /// The I/O error.
        reason: String,
    },
    /// Waiting for a shard (connection or reply) took too long.
    #[error("timed out waiting for shard {shard}: {reason}")]
    ShardTimeout {
        /// The shard's name.
        shard: String,
        /// What timed out.
        reason: String,
    },
    /// The shard answered with something that is not a valid reply.
    #[error("shard {shard} sent an invalid reply: {reason}")]
    ShardProtocol {
        /// The shard's name.
        shard: String,
        /// What was wrong.
        reason: String,
    },
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

    /// A shard's `{ok: 0}` reply as an error that keeps its code.
    pub fn from_shard_reply(shard: &str, body: &bson::RawDocument) -> RouterError {
        let code = body.get_i32("code").unwrap_or(1);
        let code_name = body
            .get_str("codeName")
            .unwrap_or("UnknownError")
            .to_owned();
        let message = body.get_str("errmsg").unwrap_or("unknown error");
        RouterError::command(code, code_name, format!("shard {shard}: {message}"))
    }

    /// The MongoDB error code and code name.
    pub fn code(&self) -> (i32, &str) {
        match self {
            RouterError::Command {
                code, code_name, ..
            } => (*code, code_name.as_ref()),
            RouterError::ShardUnreachable { .. } => (6, "HostUnreachable"),
            RouterError::ShardTimeout { .. } => (89, "NetworkTimeout"),
            RouterError::ShardProtocol { .. } => (1, "InternalError"),
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
            RouterError::ShardUnreachable { .. }
            | RouterError::ShardTimeout { .. }
            | RouterError::ShardProtocol { .. } => Blame::Shard,
            RouterError::Store(StoreError::Rejected { .. } | StoreError::Invariant(_)) => {
                Blame::Client
            }
            RouterError::Store(_) => Blame::ConfigStore,
        }
    }

    /// Whether the same request may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            RouterError::ShardUnreachable { .. } | RouterError::ShardTimeout { .. } => true,
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
        // StaleConfig from a held write is safe to retry: nothing was sent.
        if (matches!(self.blame(), Blame::Shard) && self.is_retryable()) || code == 13388 {
            d.insert("errorLabels", vec!["RetryableWriteError"]);
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
