//! The cluster credential: the shared secret that every node-to-node call carries and
//! every node's internal port checks.
//!
//! A node started with a [`ClusterSecret`] sends its first secret as
//! `authorization: Bearer <secret>` on every Raft, Propose, Read, Elect, Join, ... call
//! ([`Credential`], a client interceptor), and refuses every internal call that does not
//! carry one of its secrets with `UNAUTHENTICATED` ([`Gate`], a server interceptor) —
//! before the call is decoded, so nothing an outsider sends reaches a Raft group. A
//! node may accept several secrets (the lines of its secret file) and sends the
//! first: a rotation adds the new secret as a second line on every node, then makes
//! it the first, then drops the old one, one rolling restart each.
//!
//! The secret authenticates; it does not encrypt. [`InternalTls`] adds mutual TLS: each
//! node serves its internal port with its certificate and requires a client certificate
//! signed by the cluster's CA, and connects to peers the same way, so the traffic is
//! encrypted and only holders of a CA-signed certificate get in (with or without a
//! secret besides). [`InternalSecurity`] is both, as a node is configured.
//!
//! This module must never log or return a secret, and compares secrets only in
//! constant time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Fewest characters of a cluster secret (a guessable secret protects nothing).
pub const MIN_SECRET_LEN: usize = 16;

/// Most characters of one cluster secret.
pub const MAX_SECRET_LEN: usize = 1024;

const HEADER: &str = "authorization";
const SCHEME: &str = "Bearer ";

/// Why a cluster secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the cluster secret is empty")]
    Empty,
    #[error(
        "a cluster secret must be at least {MIN_SECRET_LEN} characters long (this one has {0}); \
         `shoal cluster-secret` prints a random one"
    )]
    TooShort(usize),
    #[error("a cluster secret must be at most {MAX_SECRET_LEN} characters long")]
    TooLong,
    #[error(
        "a cluster secret may hold only printable ASCII characters without spaces \
         (line {0} of the secret does not)"
    )]
    Characters(usize),
}

/// The secrets a node accepts on its internal port; the first is the one it sends.
#[derive(Clone)]
pub struct ClusterSecret {
    accepted: Arc<Vec<Vec<u8>>>,
    header: AsciiMetadataValue,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        write!(f, "ClusterSecret({} accepted)", self.accepted.len())
    }
}

impl ClusterSecret {
    /// The secrets in `text`: one per line, blank lines and lines starting with `#`
    /// ignored, surrounding whitespace trimmed. The first is sent, all are accepted.
    pub fn parse(text: &str) -> Result<ClusterSecret, SecretError> {
        let mut accepted = Vec::new();
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() > MAX_SECRET_LEN {
                return Err(SecretError::TooLong);
            }
            if !line.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(SecretError::Characters(no + 1));
            }
            if line.len() < MIN_SECRET_LEN {
                return Err(SecretError::TooShort(line.len()));
            }
            accepted.push(line.as_bytes().to_vec());
        }
        let first = accepted.first().ok_or(SecretError::Empty)?;
        let header = format!("{SCHEME}{}", String::from_utf8_lossy(first))
            .parse()
            .map_err(|_| SecretError::Characters(1))?;
        Ok(ClusterSecret {
            accepted: Arc::new(accepted),
            header,
        })
    }

    /// Whether `presented` is one of the accepted secrets (constant time per secret).
    fn accepts(&self, presented: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for s in self.accepted.iter() {
            ok |= s.as_slice().ct_eq(presented);
        }
        ok.into()
    }
}

/// Mutual TLS on the internal port: this node's certificate and key and the cluster CA
/// that signs every node's certificate (PEM). Peers are verified against the CA and
/// against `server_name` when given, else against the host of their address.
#[derive(Clone)]
pub struct InternalTls {
    identity: tonic::transport::Identity,
    ca: tonic::transport::Certificate,
    server_name: Option<String>,
}

impl std::fmt::Debug for InternalTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "InternalTls(server name {:?})", self.server_name)
    }
}

impl InternalTls {
    /// From PEM bytes; checks that both sides of a connection can be configured with
    /// them (the certificates and key parse).
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        server_name: Option<String>,
    ) -> Result<InternalTls, tonic::transport::Error> {
        let tls = InternalTls {
            identity: tonic::transport::Identity::from_pem(cert_pem, key_pem),
            ca: tonic::transport::Certificate::from_pem(ca_pem),
            server_name,
        };
        tonic::transport::Server::builder().tls_config(tls.server_config())?;
        tonic::transport::Endpoint::from_static("https://localhost:1")
            .tls_config(tls.client_config("localhost"))?;
        Ok(tls)
    }

    /// The internal server's TLS: this node's identity, client certificates required
    /// and verified against the cluster CA.
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// The TLS of a connection to the peer at `host`: the cluster CA, this node's
    /// identity as the client certificate, the peer's name to verify.
    pub fn client_config(&self, host: &str) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(self.server_name.as_deref().unwrap_or(host))
    }
}

/// How a node's internal calls are secured: the cluster secret they carry and
/// require, and mutual TLS. Either, both, or neither (a loopback or trusted network).
#[derive(Clone, Debug, Default)]
pub struct InternalSecurity {
    pub secret: Option<ClusterSecret>,
    pub tls: Option<InternalTls>,
}

impl InternalSecurity {
    /// Whether an outsider's call to the internal port is refused.
    pub fn authenticates(&self) -> bool {
        self.secret.is_some() || self.tls.is_some()
    }
}

/// The client side: adds this node's cluster secret to each internal call it makes
/// (nothing when the node has none).
#[derive(Clone, Default, Debug)]
pub struct Credential(Option<ClusterSecret>);

impl Credential {
    pub fn new(secret: Option<ClusterSecret>) -> Credential {
        Credential(secret)
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(s) = &self.0 {
            request.metadata_mut().insert(HEADER, s.header.clone());
        }
        Ok(request)
    }
}

/// The server side: refuses internal calls without an accepted cluster secret (lets
/// every call through when the node has none).
#[derive(Clone, Default, Debug)]
pub struct Gate(Option<ClusterSecret>);

impl Gate {
    pub fn new(secret: Option<ClusterSecret>) -> Gate {
        Gate(secret)
    }

    /// Checks `metadata` against the accepted secrets.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(secret) = &self.0 else {
            return Ok(());
        };
        let presented = metadata
            .get(HEADER)
            .and_then(|v| v.as_bytes().strip_prefix(SCHEME.as_bytes()));
        let refusal = match presented {
            Some(p) if secret.accepts(p) => return Ok(()),
            Some(_) => "the cluster secret presented is not this node's",
            None => "this is a Shoal node's internal port: calls need the cluster secret",
        };
        warn_refused(refusal);
        Err(Status::unauthenticated(refusal))
    }
}

impl Interceptor for Gate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// Logs a refused internal call, at most once every 10 seconds (a flood of forged
/// calls must not flood the log), with how many were refused since.
fn warn_refused(why: &str) {
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
    let refused = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_WARNED.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_WARNED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            refused_so_far = refused,
            "refused an internal call without a valid cluster secret: {why}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef-first";
    const B: &str = "fedcba9876543210-second";

    fn sent(c: &mut Credential) -> MetadataMap {
        c.call(Request::new(())).unwrap().metadata().clone()
    }

    #[test]
    fn secrets_parse_with_reasons() {
        let s = ClusterSecret::parse(&format!("# rotation\n\n {A} \n{B}\n")).unwrap();
        assert_eq!(s.accepted.len(), 2);
        assert!(s.accepts(A.as_bytes()) && s.accepts(B.as_bytes()));
        assert!(!s.accepts(b"0123456789abcdef"));
        assert_eq!(ClusterSecret::parse("# none\n"), Err(SecretError::Empty));
        assert_eq!(ClusterSecret::parse("short"), Err(SecretError::TooShort(5)));
        assert_eq!(
            ClusterSecret::parse(&format!("{A}\nwith a space in it ok")),
            Err(SecretError::Characters(2))
        );
        assert_eq!(
            ClusterSecret::parse(&"x".repeat(MAX_SECRET_LEN + 1)),
            Err(SecretError::TooLong)
        );
        // Debug never shows the secret.
        assert!(!format!("{s:?}").contains("0123"));
    }

    impl PartialEq for ClusterSecret {
        fn eq(&self, o: &Self) -> bool {
            self.accepted == o.accepted
        }
    }

    #[test]
    fn the_gate_lets_in_what_the_credential_sends_and_refuses_the_rest() {
        let secret = ClusterSecret::parse(&format!("{A}\n{B}")).unwrap();
        let gate = Gate::new(Some(secret.clone()));
        // The node's own credential, and a node that already sends the second secret.
        gate.check(&sent(&mut Credential::new(Some(secret))))
            .unwrap();
        let rotated = ClusterSecret::parse(B).unwrap();
        gate.check(&sent(&mut Credential::new(Some(rotated))))
            .unwrap();
        // No credential, a wrong one, a right one without the scheme.
        let none = gate.check(&sent(&mut Credential::default())).unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        assert!(none.message().contains("cluster secret"), "{none:?}");
        let wrong = ClusterSecret::parse("not-the-secret-at-all").unwrap();
        let wrong = gate
            .check(&sent(&mut Credential::new(Some(wrong))))
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(!wrong.message().contains("not-the-secret"), "{wrong:?}");
        let mut bare = MetadataMap::new();
        bare.insert(HEADER, A.parse().unwrap());
        assert_eq!(
            gate.check(&bare).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // A node without a secret lets everything in.
        Gate::default().check(&MetadataMap::new()).unwrap();
    }
}
