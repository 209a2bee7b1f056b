//! One client connection's session and one command as handlers see it:
//! [`Session`] (per connection), [`Request`] (the command), [`Reply`], and
//! [`Namespace`], the one way to split `db.collection`.

use bson::RawDocument;
use serde::{Deserialize, Serialize};
use shardgate_shard_client::scram::Conversation;
use shardgate_wire::{Compressor, OpMsg};

/// Per-client-connection state the commands read and update.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// This connection's `connectionId`.
    pub connection_id: i32,
    /// The client's address (`whatsmyuri`).
    pub peer: String,
    /// Compressors negotiated in `hello`, in the client's order.
    pub compressors: Vec<Compressor>,
    /// Who this connection authenticated as.
    pub auth: AuthState,
    /// This connection's slot among the router's operations.
    pub slot: std::sync::Arc<crate::operations::Slot>,
    /// Close the connection without replying (the `failCommand` fail
    /// point's `closeConnection`).
    pub close_now: bool,
}

/// What a command answers.
pub(crate) enum Reply {
    /// A body the router built.
    Body(Vec<u8>),
    /// A shard's reply, passed through (body and document sequences).
    Msg(OpMsg),
}

/// One command as the handlers see it.
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The command name (first key of the body).
    pub name: &'a str,
    /// The `$db` it runs on.
    pub db: &'a str,
    /// The collection the command names, if any (`getMore`'s `collection`).
    pub collection: Option<&'a str>,
    /// The body.
    pub body: &'a RawDocument,
    /// The whole message, for forwarding.
    pub msg: &'a OpMsg,
}

impl<'a> Request<'a> {
    /// The documents of an array field of the body and of any document
    /// sequence of the same name (drivers send either).
    pub(crate) fn documents(&self, field: &str) -> Vec<&'a RawDocument> {
        let mut docs: Vec<&'a RawDocument> = self
            .body
            .get_array(field)
            .map(|a| {
                a.into_iter()
                    .filter_map(|d| d.ok().and_then(|d| d.as_document()))
                    .collect()
            })
            .unwrap_or_default();
        for seq in self.msg.sequences.iter().filter(|s| s.identifier == field) {
            docs.extend(seq.iter());
        }
        docs
    }
}

pub(crate) use shardgate_config_store::model::Namespace;

/// A role granted on a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RoleRef {
    /// Role name.
    pub role: String,
    /// Database it applies to.
    pub db: String,
}

/// A user this connection authenticated as.
#[derive(Debug, Clone)]
pub(crate) struct AuthedUser {
    /// Authentication database.
    pub db: String,
    /// Name.
    pub user: String,
    /// Roles at authentication time.
    pub roles: Vec<RoleRef>,
}

/// A SCRAM conversation in progress.
#[derive(Debug, Clone)]
pub(crate) struct InProgress {
    /// The conversation id.
    pub id: i32,
    /// The authentication database.
    pub db: String,
    /// The SCRAM server side.
    pub conversation: Conversation,
    /// The client's proof was checked; only the empty last step remains.
    pub proven: bool,
    /// The client asked to skip the empty last step.
    pub skip_empty: bool,
}

/// A connection's authentication state.
#[derive(Debug, Default, Clone)]
pub(crate) struct AuthState {
    /// Authenticated users.
    pub users: Vec<AuthedUser>,
    /// A SCRAM conversation in progress.
    pub conversation: Option<InProgress>,
    /// The next conversation id.
    pub next_conversation: i32,
}

/// A numeric field of a raw document as i64 (int32, int64 or double).
pub(crate) fn number_field(doc: &RawDocument, field: &str) -> Option<i64> {
    let v = doc.get(field).ok().flatten()?;
    v.as_i64()
        .or(v.as_i32().map(i64::from))
        .or(v.as_f64().map(|f| f as i64))
}

/// Whether a statement or command uses the simple collation.
pub(crate) fn simple_collation(body: &RawDocument) -> bool {
    match body.get_document("collation") {
        Ok(c) => c.get_str("locale").ok() == Some("simple"),
        Err(_) => true,
    }
}

/// The current time as a BSON timestamp.
pub(crate) fn now_ts() -> bson::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    bson::Timestamp {
        time: secs,
        increment: 1,
    }
}

/// A numeric field value as an integer (0 when absent or not a number).
pub(crate) fn int_of(v: Option<&bson::Bson>) -> i64 {
    match v {
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Int64(n)) => *n,
        Some(bson::Bson::Double(f)) => *f as i64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_split_at_the_first_dot() {
        assert_eq!(
            Namespace::parse("app.orders.2024"),
            Namespace {
                db: "app",
                coll: "orders.2024"
            }
        );
        assert_eq!(
            Namespace::parse("app"),
            Namespace {
                db: "app",
                coll: ""
            }
        );
    }
}
