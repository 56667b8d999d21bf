//! TLS on the public port, with certificates reloaded without a restart.
//!
//! Owns: reading the PEM certificate chain, private key and optional client CA
//! (`--tls-cert`, `--tls-key`, `--tls-client-ca`) into a rustls configuration (ring,
//! TLS 1.2 and 1.3, ALPN `h2`), replacing it when the files change ([`ServerTls::reload`],
//! called every `--reload-secs` and on SIGHUP), and the accept loop that hands tonic
//! the connections whose handshake succeeded ([`incoming`]). Each new connection uses
//! the configuration in force when it is accepted; established ones keep theirs.
//! A plaintext client's connection fails its handshake and is closed.
//!
//! Must never: serve a half-updated configuration (new files that do not load, or a
//! key that does not match its certificate, are logged and the configuration in force
//! kept), log or quote a private key, or let a slow handshake hold up other
//! connections (each runs in its own task, within [`HANDSHAKE_TIMEOUT`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::{self, Error};
use crate::reload::Watch;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of the public port's TLS.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificates of the CAs client certificates must chain to; with it, every
    /// client must present a valid certificate.
    pub client_ca: Option<PathBuf>,
}

impl TlsOptions {
    fn files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.cert.clone(), self.key.clone()];
        v.extend(self.client_ca.clone());
        v
    }
}

fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = error::read(path)?;
    let what = || format!("{flag} {}", path.display());
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(what(), format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(
            what(),
            "no certificate in it (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// A rustls configuration from `o`'s files.
pub fn load(o: &TlsOptions) -> Result<ServerConfig, Error> {
    // ring: aws-lc-rs, rustls' preferred provider (with post-quantum key exchange),
    // needs cmake and a C toolchain to build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&o.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_slice(&error::read(&o.key)?).map_err(|_| {
        Error::invalid(
            format!("--tls-key {}", o.key.display()),
            "no PEM private key in it (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid("TLS", e.to_string()))?;
    let builder = match &o.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(path, "--tls-client-ca")? {
                roots.add(c).map_err(|e| {
                    Error::invalid(format!("--tls-client-ca {}", path.display()), e.to_string())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    Error::invalid(format!("--tls-client-ca {}", path.display()), e.to_string())
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        Error::invalid(
            format!(
                "--tls-cert {} and --tls-key {}",
                o.cert.display(),
                o.key.display()
            ),
            e.to_string(),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The public port's TLS configuration in force, replaced when its files change.
#[derive(Debug)]
pub struct ServerTls {
    options: TlsOptions,
    current: RwLock<Arc<ServerConfig>>,
    watch: Watch,
}

impl ServerTls {
    pub fn new(options: TlsOptions) -> Result<ServerTls, Error> {
        let watch = Watch::new(options.files());
        let config = load(&options)?;
        Ok(ServerTls {
            options,
            current: RwLock::new(Arc::new(config)),
            watch,
        })
    }

    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// Loads the files again if they changed (or if `force`); new connections use the
    /// new configuration. Unusable files are logged and the configuration in force
    /// kept. Returns whether a new configuration took effect.
    pub fn reload(&self, force: bool) -> bool {
        if !self.watch.changed() && !force {
            return false;
        }
        match load(&self.options) {
            Ok(c) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
                tracing::info!(cert = %self.options.cert.display(), "reloaded the TLS certificate");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed TLS files are unusable; keeping the certificate in force");
                false
            }
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The TLS connections accepted on `listener`, for tonic's `serve_with_incoming`.
/// Ends when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection on the public port");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Small replies must not wait for Nagle's algorithm.
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    #[test]
    fn loads_reloads_and_refuses_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (c1, k1) = self_signed("one.test");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let tls = ServerTls::new(TlsOptions {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        })
        .unwrap();
        let first = tls.current.read().unwrap().clone();
        assert_eq!(first.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!tls.reload(false));

        // A new certificate whose key is not written yet: refused, the old one kept.
        let (c2, k2) = self_signed("two.test");
        std::fs::write(&cert, &c2).unwrap();
        assert!(!tls.reload(false));
        assert!(Arc::ptr_eq(&first, &tls.current.read().unwrap()));
        std::fs::write(&key, &k2).unwrap();
        assert!(tls.reload(false));
        assert!(!Arc::ptr_eq(&first, &tls.current.read().unwrap()));

        // Errors name the flag and file, never the key's content.
        std::fs::write(&key, "garbage").unwrap();
        let e = load(tls.options()).unwrap_err().to_string();
        assert!(
            e.starts_with("--tls-key ") && e.contains("no PEM private key"),
            "{e}"
        );
        std::fs::write(&key, &k1).unwrap();
        let e = load(tls.options()).unwrap_err().to_string();
        assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");
        assert!(!e.contains("PRIVATE KEY"), "{e}");
        std::fs::write(&cert, "nothing").unwrap();
        let e = load(tls.options()).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
        let e = ServerTls::new(TlsOptions {
            cert: dir.path().join("missing.pem"),
            key,
            client_ca: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
