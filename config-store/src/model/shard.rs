//! `config.shards`.

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
