//! The TLS connector for connections to shards, built (and its files
//! checked) once when the pools are made.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::TlsConnector;

use crate::config::ShardTls;

/// The connector for `config`; the error names the file at fault.
pub(crate) fn connector(config: &ShardTls) -> Result<TlsConnector, String> {
    let bad = |what: &str, e: String| format!("pool.tls.{what}: {e}");
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(&config.ca_file).map_err(|e| bad("ca_file", e.to_string()))?
    {
        roots
            .add(cert.map_err(|e| bad("ca_file", e.to_string()))?)
            .map_err(|e| bad("ca_file", e.to_string()))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol", e.to_string()))?
        .with_root_certificates(roots);
    let client = match &config.cert_key_file {
        Some(file) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .map_err(|e| bad("cert_key_file", e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad("cert_key_file", e.to_string()))?;
            let key = PrivateKeyDer::from_pem_file(file)
                .map_err(|e| bad("cert_key_file", e.to_string()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("cert_key_file", e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(client)))
}
