//! Turning a `--config-store` URL into a store.

use std::path::PathBuf;
use std::sync::Arc;

use crate::embedded::EmbeddedStore;
use crate::error::{Result, StoreError};
use crate::store::ConfigStore;

/// A parsed `--config-store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `embedded:PATH`: the embedded store in directory PATH.
    Embedded(PathBuf),
}

impl StoreUrl {
    /// Parses `embedded:PATH`.
    pub fn parse(url: &str) -> Result<StoreUrl> {
        match url.split_once(':') {
            Some(("embedded", path)) if !path.is_empty() => {
                Ok(StoreUrl::Embedded(PathBuf::from(path)))
            }
            _ => Err(StoreError::BadUrl(url.to_owned())),
        }
    }
}

/// Opens the store a URL names.
pub async fn open(url: &str) -> Result<Arc<dyn ConfigStore>> {
    match StoreUrl::parse(url)? {
        StoreUrl::Embedded(path) => Ok(Arc::new(EmbeddedStore::open(path)?)),
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
}
