//! Settings: serde defaults, then the TOML file, then flags, then `validate()`.

use std::path::Path;

use shardgate_router::RouterConfig;

/// Flag values that override the file (each `None` when not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--config-store`.
    pub config_store: Option<String>,
    /// `--pool-max-size`.
    pub pool_max_size: Option<usize>,
    /// `--enable-test-commands`.
    pub enable_test_commands: bool,
    /// `--shutdown-deadline-secs`.
    pub shutdown_deadline_secs: Option<u64>,
    /// `--tls-mode`.
    pub tls_mode: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<String>,
    /// `--tls-key`.
    pub tls_key: Option<String>,
    /// `--tls-ca`.
    pub tls_ca: Option<String>,
    /// `--auth`.
    pub auth: bool,
    /// `--metrics-listen`.
    pub metrics_listen: Option<String>,
}

/// Builds the router configuration; the error is one line.
pub fn load(
    file: Option<&Path>,
    flags: Overrides,
    argv: Vec<String>,
) -> anyhow::Result<RouterConfig> {
    let mut config = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
            toml::from_str::<RouterConfig>(&text).map_err(|e| {
                anyhow::anyhow!(
                    "invalid config file {}: {}",
                    path.display(),
                    e.to_string().replace('\n', " ")
                )
            })?
        }
        None => RouterConfig::default(),
    };
    if let Some(l) = flags.listen {
        config.listen = l;
    }
    if let Some(s) = flags.config_store {
        config.config_store = s;
    }
    if let Some(n) = flags.pool_max_size {
        config.pool.max_size = n;
    }
    if flags.enable_test_commands {
        config.enable_test_commands = true;
    }
    if let Some(d) = flags.shutdown_deadline_secs {
        config.shutdown_deadline_secs = d;
    }
    if flags.tls_cert.is_some() {
        config.tls.cert_file = flags.tls_cert;
        if config.tls.mode == shardgate_router::TlsMode::Disabled {
            config.tls.mode = shardgate_router::TlsMode::Require;
        }
    }
    if flags.tls_key.is_some() {
        config.tls.key_file = flags.tls_key;
    }
    if flags.tls_ca.is_some() {
        config.tls.ca_file = flags.tls_ca;
    }
    if let Some(mode) = flags.tls_mode {
        config.tls.mode = match mode.as_str() {
            "disabled" => shardgate_router::TlsMode::Disabled,
            "allowTLS" => shardgate_router::TlsMode::Allow,
            "preferTLS" => shardgate_router::TlsMode::Prefer,
            "requireTLS" => shardgate_router::TlsMode::Require,
            other => anyhow::bail!(
                "invalid configuration: --tls-mode must be disabled, allowTLS, preferTLS or requireTLS, got {other:?}"
            ),
        };
    }
    if flags.auth {
        config.auth = true;
    }
    if flags.metrics_listen.is_some() {
        config.metrics_listen = flags.metrics_listen;
    }
    config.argv = argv;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_then_validate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sg.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:4000\"\n[pool]\nmax_size = 8\n").unwrap();
        let c = load(Some(&path), Overrides::default(), vec![]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:4000");
        assert_eq!(c.pool.max_size, 8);
        let flags = Overrides {
            pool_max_size: Some(3),
            ..Overrides::default()
        };
        assert_eq!(load(Some(&path), flags, vec![]).unwrap().pool.max_size, 3);

        std::fs::write(&path, "listn = \"x\"\n").unwrap();
        let err = load(Some(&path), Overrides::default(), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
        assert!(!err.contains('\n'));
        let flags = Overrides {
            pool_max_size: Some(0),
            ..Overrides::default()
        };
        let err = load(None, flags, vec![]).unwrap_err().to_string();
        assert!(err.contains("pool.max_size"), "{err}");
    }
}
