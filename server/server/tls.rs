//! TLS on the gRPC port, with certificates that can change while the
//! server runs.
//!
//! agentd does the handshake itself (tokio-rustls, ring) instead of handing
//! a fixed configuration to tonic: each new connection takes the
//! configuration in force when it arrives, and [`Tls::reload`] swaps in a
//! new one when the certificate, key or client CA files change (a
//! certificate renewed by cert-manager or certbot). Connections already
//! open keep the session they negotiated; nothing is dropped.
//!
//! Handshakes run in their own tasks, bounded by [`HANDSHAKE_TIMEOUT`], so a
//! slow or silent client never holds up the accept loop; a failed one
//! (plaintext on the TLS port, no client certificate under mTLS) is logged
//! at debug level and closed.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, ensure};
use futures::Stream;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// Longest a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted but not yet handed to the server.
const ACCEPT_QUEUE: usize = 128;

/// The files' contents, to tell whether they changed.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// The TLS configuration in force, from its files.
pub struct Tls {
    files: TlsConfig,
    current: RwLock<(Contents, Arc<ServerConfig>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the TLS {what} {}", path.display()))
}

impl Contents {
    fn read(files: &TlsConfig) -> anyhow::Result<Contents> {
        Ok(Contents {
            cert: read(&files.cert, "certificate")?,
            key: read(&files.key, "key")?,
            client_ca: files
                .client_ca
                .as_deref()
                .map(|p| read(p, "client CA"))
                .transpose()?,
        })
    }

    fn server_config(&self, files: &TlsConfig) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing the certificates in {}", files.cert.display()))?;
        ensure!(
            !certs.is_empty(),
            "{} holds no PEM certificate",
            files.cert.display()
        );
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .with_context(|| format!("parsing the private key in {}", files.key.display()))?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions")?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let path = files.client_ca.as_deref().unwrap_or(&files.cert).display();
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.with_context(|| format!("parsing {path}"))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("adding a CA certificate from {path}"))?;
                }
                ensure!(!roots.is_empty(), "{path} holds no PEM certificate");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .with_context(|| format!("building the client verifier from {path}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not go together")?;
        // gRPC is HTTP/2; clients (grpc-go, grpcurl) insist on ALPN saying so.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

impl Tls {
    /// Reads and checks the files; any problem is an error at start-up.
    pub fn load(files: &TlsConfig) -> anyhow::Result<Tls> {
        let contents = Contents::read(files)?;
        let config = contents.server_config(files)?;
        Ok(Tls {
            files: files.clone(),
            current: RwLock::new((contents, Arc::new(config))),
        })
    }

    /// Re-reads the files: `Ok(true)` when they changed and the new
    /// configuration is in force. On an error (a half-written renewal, a
    /// key that does not match) the one in force stays.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let contents = Contents::read(&self.files)?;
        if self.read().0 == contents {
            return Ok(false);
        }
        let config = contents.server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (contents, Arc::new(config));
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Contents, Arc<ServerConfig>)> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.read().1))
    }
}

/// The connections of `listener` that completed a TLS handshake, for
/// tonic's `serve_with_incoming`. Dropping the stream (the server stopped
/// accepting at shutdown) ends the accept loop and closes the listener.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // As for plaintext: small answers must not wait for a delayed ACK.
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
