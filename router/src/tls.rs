//! TLS for client connections (rustls): the server certificate and key from
//! PEM files, and with a CA file, client certificates required and checked
//! against it. `mode` says whether plain connections are also accepted:
//! with `allowTLS`/`preferTLS` the first byte of a connection tells a TLS
//! ClientHello (0x16) from a plain MongoDB message.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsConfig, TlsMode};

/// Builds the acceptor, or `None` when TLS is disabled; the error names the
/// file or setting at fault.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<Option<TlsAcceptor>, String> {
    if config.mode == TlsMode::Disabled {
        return Ok(None);
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cert_file = config
        .cert_file
        .as_deref()
        .ok_or("tls.cert_file is required with TLS on")?;
    let key_file = config
        .key_file
        .as_deref()
        .ok_or("tls.key_file is required with TLS on")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("tls.cert_file {cert_file}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert_file {cert_file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls.cert_file {cert_file}: no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("tls.key_file {key_file}: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match config.ca_file.as_deref() {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_file)
                .map_err(|e| format!("tls.ca_file {ca_file}: {e}"))?
            {
                let cert = cert.map_err(|e| format!("tls.ca_file {ca_file}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.ca_file {ca_file}: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("tls.ca_file {ca_file}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert_file/key_file: {e}"))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// A client connection after the TLS decision.
pub(crate) enum Accepted {
    /// Plain TCP.
    Plain(tokio::net::TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// Decides plain or TLS from the first byte, per `mode`; `None` when the
/// connection is refused (a plain client where TLS is required is told why
/// first) or the handshake failed.
pub(crate) async fn accept(
    stream: tokio::net::TcpStream,
    acceptor: Option<&TlsAcceptor>,
    mode: TlsMode,
) -> Option<Accepted> {
    let Some(acceptor) = acceptor else {
        return Some(Accepted::Plain(stream));
    };
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return None,
    }
    // A TLS record starts with the handshake content type, 0x16.
    if first[0] != 0x16 {
        if mode == TlsMode::Require {
            crate::connection::refuse(
                stream,
                "this router requires TLS (tls.mode requireTLS); connect with tls=true".into(),
            )
            .await;
            return None;
        }
        return Some(Accepted::Plain(stream));
    }
    match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Accepted::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            None
        }
    }
}
