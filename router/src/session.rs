//! One client connection's session and one command as handlers see it:
//! [`Session`] (per connection), [`Request`] (the command), [`Reply`], and
//! [`Namespace`], the one way to split `db.collection`.

use bson::RawDocument;
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
    pub auth: crate::auth::AuthState,
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
