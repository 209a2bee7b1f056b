//! `hello` / `isMaster`: the router presents itself as a mongos.

use bson::{Document, RawDocument};
use shardgate_wire::{Compressor, MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE};

use super::Session;

/// Wire version 25 is MongoDB 8.0, which current drivers accept.
pub(crate) const MAX_WIRE_VERSION: i32 = 25;

/// Builds the `hello` reply (without `ok`) and records the compressors the
/// client asked for that shardgate supports. `legacy` answers `isMaster`.
pub(crate) fn hello(session: &mut Session, body: &RawDocument, legacy: bool) -> Document {
    let mut d = Document::new();
    d.insert(
        if legacy {
            "ismaster"
        } else {
            "isWritablePrimary"
        },
        true,
    );
    d.insert("msg", "isdbgrid");
    d.insert("maxBsonObjectSize", MAX_BSON_OBJECT_SIZE as i32);
    d.insert("maxMessageSizeBytes", MAX_MESSAGE_SIZE as i32);
    d.insert("maxWriteBatchSize", 100_000i32);
    d.insert("localTime", bson::DateTime::now());
    d.insert("logicalSessionTimeoutMinutes", 30i32);
    d.insert("connectionId", session.connection_id);
    d.insert("minWireVersion", 0i32);
    d.insert("maxWireVersion", MAX_WIRE_VERSION);
    d.insert("readOnly", false);
    if let Ok(app) = body
        .get_document("client")
        .and_then(|c| c.get_document("application"))
        .and_then(|a| a.get_str("name"))
    {
        session.slot.set_app_name(app);
    }
    if let Ok(requested) = body.get_array("compression") {
        session.compressors = requested
            .into_iter()
            .filter_map(|v| {
                v.ok()
                    .and_then(|v| v.as_str())
                    .and_then(Compressor::from_name)
            })
            .collect();
        let names: Vec<&str> = session.compressors.iter().map(|c| c.name()).collect();
        d.insert("compression", names);
    }
    if body.get_bool("helloOk").unwrap_or(false) {
        d.insert("helloOk", true);
    }
    d
}
