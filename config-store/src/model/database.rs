//! `config.databases`.

use serde::{Deserialize, Serialize};

/// A database's version: a new `uuid` each time it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseVersion {
    /// Identity of this incarnation of the database.
    pub uuid: bson::Uuid,
    /// When it was created.
    pub timestamp: bson::Timestamp,
    /// Bumped when the primary shard changes.
    #[serde(rename = "lastMod")]
    pub last_mod: i32,
}

/// A database and its primary shard (`config.databases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseType {
    /// The database name (`_id`).
    #[serde(rename = "_id")]
    pub name: String,
    /// The shard that holds its unsharded collections.
    pub primary: String,
    /// The database version.
    pub version: DatabaseVersion,
}

impl DatabaseType {
    /// A new database placed on `primary`.
    pub fn new(name: impl Into<String>, primary: impl Into<String>) -> DatabaseType {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        DatabaseType {
            name: name.into(),
            primary: primary.into(),
            version: DatabaseVersion {
                uuid: bson::Uuid::new(),
                timestamp: bson::Timestamp {
                    time: now,
                    increment: 1,
                },
                last_mod: 1,
            },
        }
    }
}
