//! Turning a `--config-store` URL into a store.

use std::path::PathBuf;
use std::sync::Arc;

use crate::embedded::EmbeddedStore;
use crate::error::{Result, StoreError};
use crate::etcd::{valid_prefix, EtcdStore};
use crate::store::ConfigStore;

/// A parsed `--config-store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `embedded:PATH`: the embedded store in directory PATH.
    Embedded(PathBuf),
    /// `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`: an etcd cluster reached
    /// through any of `endpoints` (`host:port` each), with every key under
    /// `/PREFIX/`.
    Etcd {
        /// The members' client addresses, `host:port`.
        endpoints: Vec<String>,
        /// The key prefix, without slashes around it (`shardgate`, `prod/eu`).
        prefix: String,
    },
}

impl StoreUrl {
    /// Parses `embedded:PATH` or `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`.
    pub fn parse(url: &str) -> Result<StoreUrl> {
        let bad = || StoreError::BadUrl(url.to_owned());
        if let Some(rest) = url.strip_prefix("etcd://") {
            let (hosts, prefix) = rest.split_once('/').ok_or_else(bad)?;
            let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
            if !valid_prefix(prefix) {
                return Err(bad());
            }
            let endpoints = hosts
                .split(',')
                .map(|h| valid_endpoint(h).then(|| h.to_owned()))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(bad)?;
            return Ok(StoreUrl::Etcd {
                endpoints,
                prefix: prefix.to_owned(),
            });
        }
        match url.split_once(':') {
            Some(("embedded", path)) if !path.is_empty() => {
                Ok(StoreUrl::Embedded(PathBuf::from(path)))
            }
            _ => Err(bad()),
        }
    }
}

/// Whether `ep` is `host:port` (or `[v6]:port`) with a non-zero port and a
/// host of DNS-name or address characters (no scheme, no credentials).
fn valid_endpoint(ep: &str) -> bool {
    let Some((host, port)) = ep.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// Opens the store a URL names. For etcd this connects and checks that
/// the cluster answers.
pub async fn open(url: &str) -> Result<Arc<dyn ConfigStore>> {
    match StoreUrl::parse(url)? {
        StoreUrl::Embedded(path) => Ok(Arc::new(EmbeddedStore::open(path)?)),
        StoreUrl::Etcd { endpoints, prefix } => {
            Ok(Arc::new(EtcdStore::connect(&endpoints, &prefix).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            StoreUrl::parse("embedded:./data").unwrap(),
            StoreUrl::Embedded("./data".into())
        );
        assert!(StoreUrl::parse("embedded:").is_err());
        assert!(StoreUrl::parse("etcd://x").is_err());
        assert!(StoreUrl::parse("nonsense").is_err());
    }

    #[test]
    fn parses_etcd_urls() {
        assert_eq!(
            StoreUrl::parse("etcd://127.0.0.1:2379,etcd-2.local:2379,[::1]:2379/prod/eu-1/")
                .unwrap(),
            StoreUrl::Etcd {
                endpoints: vec![
                    "127.0.0.1:2379".into(),
                    "etcd-2.local:2379".into(),
                    "[::1]:2379".into()
                ],
                prefix: "prod/eu-1".into(),
            }
        );
        for bad in [
            "etcd://",
            "etcd://127.0.0.1:2379",
            "etcd://127.0.0.1:2379/",
            "etcd:///pfx",
            "etcd://127.0.0.1/pfx",
            "etcd://127.0.0.1:0/pfx",
            "etcd://127.0.0.1:99999/pfx",
            "etcd://127.0.0.1:2379,/pfx",
            "etcd://user:pw@127.0.0.1:2379/pfx",
            "etcd://http://127.0.0.1:2379/pfx",
            "etcd://127.0.0.1:2379/a//b",
            "etcd://127.0.0.1:2379/pfx?x=1",
        ] {
            let err = StoreUrl::parse(bad).expect_err(bad);
            assert!(matches!(err, StoreError::BadUrl(_)), "{bad}: {err}");
        }
    }
}
