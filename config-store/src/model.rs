//! The metadata documents, shaped as the `config` database of a real cluster
//! so the `config` view can show them as they are.

use serde::{Deserialize, Serialize};

/// A shard (`config.shards`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardType {
    /// The shard's name (`_id`).
    #[serde(rename = "_id")]
    pub id: String,
    /// Connection string: `host:port` or `rsName/host1:port,host2:port`.
    pub host: String,
    /// Zones this shard serves.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Set while `removeShard` drains the shard.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Always 1 (ShardAware), as on a real cluster.
    #[serde(default = "one")]
    pub state: i32,
}

fn one() -> i32 {
    1
}

impl ShardType {
    /// A new shard entry.
    pub fn new(id: impl Into<String>, host: impl Into<String>) -> ShardType {
        ShardType {
            id: id.into(),
            host: host.into(),
            tags: Vec::new(),
            draining: false,
            state: 1,
        }
    }

    /// The `host:port` addresses of the connection string.
    pub fn addresses(&self) -> Vec<String> {
        let hosts = self
            .host
            .split_once('/')
            .map_or(self.host.as_str(), |(_, h)| h);
        hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_connection_strings() {
        assert_eq!(ShardType::new("a", "h:1").addresses(), vec!["h:1"]);
        assert_eq!(
            ShardType::new("a", "rs0/h:1, h:2").addresses(),
            vec!["h:1", "h:2"]
        );
    }
}
