//! `ShardError`: what went wrong talking to a shard, always blamed on the
//! shard, with the shard's own code, code name and error labels when it
//! answered `{ok: 0}`.

use thiserror::Error;

/// An error from one shard.
#[derive(Debug, Clone, Error)]
pub enum ShardError {
    /// The shard answered `{ok: 0}`.
    #[error("shard {shard}: {message}")]
    Reply {
        /// The shard's name.
        shard: String,
        /// The shard's error code.
        code: i32,
        /// The shard's code name.
        code_name: String,
        /// The shard's `errmsg`.
        message: String,
        /// The shard's `errorLabels` (e.g. `RetryableWriteError`).
        labels: Vec<String>,
    },
    /// The shard could not be reached or the connection broke.
    #[error("shard {shard} ({host}) unreachable: {reason}")]
    Unreachable {
        /// The shard's name.
        shard: String,
        /// The address tried.
        host: String,
        /// The I/O error.
        reason: String,
    },
    /// Waiting for the shard (a connection or a reply) took too long.
    #[error("timed out waiting for shard {shard}: {reason}")]
    Timeout {
        /// The shard's name.
        shard: String,
        /// What timed out.
        reason: String,
    },
    /// The shard sent something that is not a valid reply.
    #[error("shard {shard} sent an invalid reply: {reason}")]
    Protocol {
        /// The shard's name.
        shard: String,
        /// What was wrong.
        reason: String,
    },
}

impl ShardError {
    /// The `{ok: 0}` reply `body` of `shard` as an error.
    pub fn from_reply(shard: &str, body: &bson::RawDocument) -> ShardError {
        let labels = body
            .get_array("errorLabels")
            .map(|a| {
                a.into_iter()
                    .filter_map(|v| v.ok().and_then(|v| v.as_str().map(str::to_owned)))
                    .collect()
            })
            .unwrap_or_default();
        let code = match body.get("code") {
            Ok(Some(v)) => v
                .as_i32()
                .or(v.as_i64().and_then(|n| i32::try_from(n).ok()))
                .or(v.as_f64().map(|f| f as i32))
                .unwrap_or(1),
            _ => 1,
        };
        ShardError::Reply {
            shard: shard.to_owned(),
            code,
            code_name: body
                .get_str("codeName")
                .unwrap_or("UnknownError")
                .to_owned(),
            message: body.get_str("errmsg").unwrap_or("unknown error").to_owned(),
            labels,
        }
    }

    /// A reply that is not what the protocol promises.
    pub fn protocol(shard: &str, reason: impl std::fmt::Display) -> ShardError {
        ShardError::Protocol {
            shard: shard.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// The MongoDB error code and code name a client sees.
    pub fn code(&self) -> (i32, &str) {
        match self {
            ShardError::Reply {
                code, code_name, ..
            } => (*code, code_name),
            ShardError::Unreachable { .. } => (6, "HostUnreachable"),
            ShardError::Timeout { .. } => (89, "NetworkTimeout"),
            ShardError::Protocol { .. } => (1, "InternalError"),
        }
    }

    /// The error labels the client gets: the shard's own for a reply;
    /// `RetryableWriteError` for a network failure (nothing may have been
    /// applied, and a retryable write is applied once however often sent).
    pub fn labels(&self) -> Vec<String> {
        match self {
            ShardError::Reply { labels, .. } => labels.clone(),
            ShardError::Unreachable { .. } | ShardError::Timeout { .. } => {
                vec!["RetryableWriteError".to_owned()]
            }
            ShardError::Protocol { .. } => Vec::new(),
        }
    }

    /// Whether the same request may succeed when sent again: the shard
    /// was unreachable or slow (a shard's own `{ok: 0}` says so only
    /// through its labels, which are passed on as they are).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ShardError::Unreachable { .. } | ShardError::Timeout { .. }
        )
    }

    /// The shard's name.
    pub fn shard(&self) -> &str {
        match self {
            ShardError::Reply { shard, .. }
            | ShardError::Unreachable { shard, .. }
            | ShardError::Timeout { shard, .. }
            | ShardError::Protocol { shard, .. } => shard,
        }
    }
}

/// Result alias for shard calls.
pub type Result<T> = std::result::Result<T, ShardError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_keeps_its_code_and_labels() {
        let body = bson::rawdoc! {
            "ok": 0.0, "code": 91, "codeName": "ShutdownInProgress",
            "errmsg": "going away", "errorLabels": ["RetryableWriteError"],
        };
        let e = ShardError::from_reply("s0", &body);
        assert_eq!(e.code(), (91, "ShutdownInProgress"));
        assert_eq!(e.labels(), vec!["RetryableWriteError".to_owned()]);
        assert_eq!(e.to_string(), "shard s0: going away");
        assert!(!e.is_retryable());
    }
}
