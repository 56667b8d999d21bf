//! Authentication and authorization of the public API.
//!
//! Owns: who a caller is (an API key with a role, or a JWT with a role or
//! per-collection grants: [`Principal`]), the access each RPC needs ([`table`]), the
//! tower layer that checks every call's credential before tonic decodes it
//! ([`AuthLayer`]), the checks the services make once they know a request's collection
//! ([`Authorized::collection`]), and re-reading the keys files when they change.
//!
//! A credential is sent as `authorization: Bearer <key or token>` (or `api-key:
//! <key>`). With no key and no JWT key configured, the API is open: every call gets
//! the admin role, as before authentication existed. Health and reflection never need
//! a credential.
//!
//! Must never: put a key, a token, a secret or a private key into a status message, a
//! log line or a `Debug` output; tell a caller whether a collection it may not read
//! exists (access is checked before the collection is looked up); or let a request
//! reach a service without an [`Authorized`] (the services refuse such a request).

pub mod jwt;
pub mod keys;
pub mod table;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use http::HeaderMap;
use tonic::Status;

use crate::error::{self, Error};
use crate::reload::Watch;
use table::{Access, Lookup, Rpc};

/// A role, given to an API key (or to a token for every collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Role {
    /// Reads points and collections (`Get`, `Search`, `Scroll`, `Count`, …).
    ReadOnly = 1,
    /// Reads, and writes points (`Upsert`, `Delete`).
    ReadWrite = 2,
    /// Everything: collections created, changed and deleted, and the cluster's
    /// administration (drain, moves, rebalance, full status).
    Admin = 3,
}

impl Role {
    /// The role's name in flags, files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::ReadWrite => "read-write",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read-only" => Some(Role::ReadOnly),
            "read-write" => Some(Role::ReadWrite),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    fn from_code(code: u8) -> Role {
        match code {
            3 => Role::Admin,
            2 => Role::ReadWrite,
            _ => Role::ReadOnly,
        }
    }
}

/// Access to one collection granted by a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `r`: read its points and its description.
    Read,
    /// `rw`: read and write its points.
    ReadWrite,
}

/// What a credential may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A role over every collection.
    Role(Role),
    /// Access to the listed collections only (never admin).
    Collections(BTreeMap<String, Level>),
}

/// The caller, as its credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub grant: Grant,
}

/// A collection name as messages quote it: at most 64 bytes.
fn quoted(name: &str) -> String {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &name[..end])
}

impl Principal {
    pub fn admin() -> Principal {
        Principal {
            grant: Grant::Role(Role::Admin),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.grant == Grant::Role(Role::Admin)
    }

    /// Whether the caller may read `collection`.
    pub fn may_read(&self, collection: &str) -> bool {
        match &self.grant {
            Grant::Role(_) => true,
            Grant::Collections(g) => g.contains_key(collection),
        }
    }

    /// Whether the caller sees every collection (a role, not a list of grants).
    pub fn sees_everything(&self) -> bool {
        matches!(self.grant, Grant::Role(_))
    }

    /// `Ok` if the caller may make `rpc` on `collection` (`None`: before the request is
    /// decoded, when only a grant that allows it on no collection at all is refused).
    pub fn check(&self, rpc: &Rpc, collection: Option<&str>) -> Result<(), Status> {
        let call = table::short_name(rpc.path).replace('/', ".");
        let denied = |m: String| Err(Status::permission_denied(format!("{call}: {m}")));
        match (&self.grant, rpc.access) {
            (_, Access::Any) => Ok(()),
            (Grant::Role(Role::Admin), _) => Ok(()),
            (Grant::Role(r), Access::Admin) => denied(format!(
                "needs the admin role; this credential is {}",
                r.name()
            )),
            (Grant::Collections(_), Access::Admin) => denied(
                "needs the admin role; this token grants access to some collections only".into(),
            ),
            (Grant::Role(Role::ReadOnly), Access::Write) => denied(
                "writes points and needs the read-write or admin role (or a token with \"rw\" \
                 on the collection); this credential is read-only"
                    .into(),
            ),
            (Grant::Role(_), _) => Ok(()),
            (Grant::Collections(g), need) => {
                let wanted = if need == Access::Write {
                    Level::ReadWrite
                } else {
                    Level::Read
                };
                let word = if wanted == Level::ReadWrite {
                    "rw"
                } else {
                    "r"
                };
                match collection {
                    None if g.values().any(|l| *l >= wanted) => Ok(()),
                    None => denied(format!(
                        "needs \"{word}\" access to the collection; this token has \"r\" only"
                    )),
                    Some(c) => match g.get(c) {
                        Some(l) if *l >= wanted => Ok(()),
                        Some(_) => denied(format!(
                            "needs \"{word}\" access to collection {}; this token has \"r\"",
                            quoted(c)
                        )),
                        None => denied(format!(
                            "needs \"{word}\" access to collection {}; this token has none",
                            quoted(c)
                        )),
                    },
                }
            }
        }
    }
}

/// A secret given on the command line or in the environment: never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Secret, String> {
        Ok(Secret(s.trim().to_string()))
    }
}

/// Where the node's credentials come from (`shoal serve`'s flags).
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    pub admin_keys: Vec<Secret>,
    pub read_write_keys: Vec<Secret>,
    pub read_only_keys: Vec<Secret>,
    /// One `ROLE KEY` per line; re-read when it changes.
    pub keys_file: Option<PathBuf>,
    pub jwt_secret: Option<Secret>,
    /// Re-read when it changes.
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM, RSA or EC; re-read when it changes.
    pub jwt_public_key: Option<PathBuf>,
}

impl AuthOptions {
    /// Whether any credential source is configured (else the API is open).
    pub fn enabled(&self) -> bool {
        !self.admin_keys.is_empty()
            || !self.read_write_keys.is_empty()
            || !self.read_only_keys.is_empty()
            || self.keys_file.is_some()
            || self.jwt_secret.is_some()
            || self.jwt_secret_file.is_some()
            || self.jwt_public_key.is_some()
    }

    fn files(&self) -> Vec<PathBuf> {
        [&self.keys_file, &self.jwt_secret_file, &self.jwt_public_key]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// The credentials in force.
#[derive(Debug)]
struct Credentials {
    keys: keys::KeySet,
    jwt: Option<jwt::Verifier>,
}

impl Credentials {
    fn load(o: &AuthOptions) -> Result<Credentials, Error> {
        let mut keys = keys::KeySet::default();
        for (list, role, flag) in [
            (&o.admin_keys, Role::Admin, "--admin-api-key"),
            (&o.read_write_keys, Role::ReadWrite, "--read-write-api-key"),
            (&o.read_only_keys, Role::ReadOnly, "--read-only-api-key"),
        ] {
            let n = list.len();
            for (i, k) in list.iter().enumerate() {
                let origin = if n > 1 {
                    format!("{flag} (key {} of {n})", i + 1)
                } else {
                    flag.to_string()
                };
                keys.add(k.expose(), role, &origin)?;
            }
        }
        if let Some(path) = &o.keys_file {
            let text = String::from_utf8(error::read(path)?).map_err(|_| {
                Error::invalid(format!("--api-keys-file {}", path.display()), "not UTF-8")
            })?;
            keys::parse_file(&text, &path.display().to_string(), &mut keys)?;
        }
        let file_secret = match &o.jwt_secret_file {
            Some(p) => {
                let mut s = error::read(p)?;
                while s.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    s.pop();
                }
                Some((s, format!("--jwt-secret-file {}", p.display())))
            }
            None => None,
        };
        let secret = match (&o.jwt_secret, &file_secret) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "--jwt-secret and --jwt-secret-file",
                    "give one of them",
                ));
            }
            (Some(s), None) => Some((s.expose().as_bytes().to_vec(), "--jwt-secret".to_string())),
            (None, f) => f.clone(),
        };
        let public = match &o.jwt_public_key {
            Some(p) => Some((error::read(p)?, format!("--jwt-public-key {}", p.display()))),
            None => None,
        };
        let jwt = if secret.is_some() || public.is_some() {
            Some(jwt::Verifier::new(
                secret.as_ref().map(|(s, o)| (s.as_slice(), o.as_str())),
                public.as_ref().map(|(s, o)| (s.as_slice(), o.as_str())),
            )?)
        } else {
            None
        };
        Ok(Credentials { keys, jwt })
    }
}

/// Checks credentials against the node's keys; shared by every connection.
#[derive(Debug)]
pub struct Authenticator {
    options: AuthOptions,
    enabled: bool,
    current: RwLock<Arc<Credentials>>,
    watch: Watch,
    open: Arc<Principal>,
}

impl Authenticator {
    /// Reads every configured key; an unusable one is an error naming it.
    pub fn new(options: AuthOptions) -> Result<Authenticator, Error> {
        let watch = Watch::new(options.files());
        let creds = Credentials::load(&options)?;
        Ok(Authenticator {
            enabled: options.enabled(),
            options,
            current: RwLock::new(Arc::new(creds)),
            watch,
            open: Arc::new(Principal::admin()),
        })
    }

    /// True when calls need a credential.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How many API keys are in force, and whether tokens are accepted (for the
    /// start-up log line).
    pub fn summary(&self) -> (usize, bool) {
        let c = self.credentials();
        (c.keys.len(), c.jwt.is_some())
    }

    fn credentials(&self) -> Arc<Credentials> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the keys file and JWT key files if they changed (or if `force`).
    /// Unusable new contents are logged and the keys in force kept. Returns whether
    /// new credentials took effect.
    pub fn reload(&self, force: bool) -> bool {
        if self.watch.is_empty() || (!self.watch.changed() && !force) {
            return false;
        }
        match Credentials::load(&self.options) {
            Ok(c) => {
                let (keys, jwt) = (c.keys.len(), c.jwt.is_some());
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
                tracing::info!(api_keys = keys, jwt, "reloaded the API keys and JWT keys");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed API-key or JWT key files are unusable; keeping the keys in force");
                false
            }
        }
    }

    /// Who presents `headers`, or why they are refused (`UNAUTHENTICATED`).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, Status> {
        if !self.enabled {
            return Ok(self.open.clone());
        }
        let presented = credential(headers)?.ok_or_else(|| {
            Status::unauthenticated(
                "this server requires a credential: send `authorization: Bearer <API key or JWT>`",
            )
        })?;
        let creds = self.credentials();
        if let Some(role) = creds.keys.find(presented) {
            return Ok(Arc::new(Principal {
                grant: Grant::Role(role),
            }));
        }
        match &creds.jwt {
            Some(v) if presented.bytes().filter(|b| *b == b'.').count() == 2 => v
                .verify(presented)
                .map(|grant| Arc::new(Principal { grant })),
            _ => Err(Status::unauthenticated(
                "invalid credential: not an API key of this server (nor a JWT)",
            )),
        }
    }

    /// The decision for a call to `path`: `Ok(None)` for exempt services, the caller
    /// and its RPC otherwise.
    pub fn authorize(&self, path: &str, headers: &HeaderMap) -> Result<Option<Authorized>, Status> {
        let rpc = match table::lookup(path) {
            Lookup::Exempt => return Ok(None),
            Lookup::Rpc(rpc) => rpc,
            Lookup::Unknown => &UNKNOWN,
        };
        let principal = self.authenticate(headers)?;
        principal.check(rpc, None)?;
        Ok(Some(Authorized { principal, rpc }))
    }
}

/// A path that is no method of this server: any valid credential, then tonic's
/// `UNIMPLEMENTED`.
static UNKNOWN: Rpc = Rpc {
    path: "unknown",
    access: Access::Any,
    scope: table::Scope::Credential,
    note: "",
};

/// The credential a request presents: `authorization: Bearer X` (the scheme in any
/// case), else `api-key: X`. A malformed `authorization` is refused.
fn credential(headers: &HeaderMap) -> Result<Option<&str>, Status> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| bad_authorization())?.trim();
        let (scheme, rest) = v.split_once(' ').ok_or_else(bad_authorization)?;
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(bad_authorization());
        }
        return Ok(Some(rest.trim()));
    }
    if let Some(v) = headers.get("api-key") {
        let v = v
            .to_str()
            .map_err(|_| Status::unauthenticated("the api-key header is not printable ASCII"))?
            .trim();
        return Ok((!v.is_empty()).then_some(v));
    }
    Ok(None)
}

fn bad_authorization() -> Status {
    Status::unauthenticated("the authorization header must be `Bearer <API key or JWT>`")
}

/// A call's checked caller, put in the request's extensions by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authorized {
    pub principal: Arc<Principal>,
    pub rpc: &'static Rpc,
}

impl Authorized {
    /// The request's [`Authorized`]; a request that did not pass [`AuthLayer`] is
    /// refused (fail closed).
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Authorized, Status> {
        req.extensions()
            .get::<Authorized>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("this call was not authenticated"))
    }

    /// `Ok` if the caller may make this call on `collection`.
    pub fn collection(&self, collection: &str) -> Result<(), Status> {
        self.principal.check(self.rpc, Some(collection))
    }
}

/// Checks every call's credential (see the module docs) and puts an [`Authorized`]
/// into its extensions; a refused call is answered at once.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.auth.authorize(req.uri().path(), req.headers()) {
            Ok(None) => Box::pin(self.inner.call(req)),
            Ok(Some(a)) => {
                req.extensions_mut().insert(a);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-key-0123456789";
    const RW: &str = "write-key-0123456789";
    const RO: &str = "read-key-01234567890";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn auth() -> Authenticator {
        Authenticator::new(AuthOptions {
            admin_keys: vec![ADMIN.parse().unwrap()],
            read_write_keys: vec![RW.parse().unwrap()],
            read_only_keys: vec![RO.parse().unwrap()],
            jwt_secret: Some(SECRET.parse().unwrap()),
            ..Default::default()
        })
        .unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn without_keys_everything_is_open_as_admin() {
        let a = Authenticator::new(AuthOptions::default()).unwrap();
        assert!(!a.enabled());
        let z = a
            .authorize("/shoal.v1.Cluster/Drain", &HeaderMap::new())
            .unwrap()
            .unwrap();
        assert!(z.principal.is_admin());
    }

    #[test]
    fn credentials_are_read_from_bearer_or_api_key_headers() {
        let a = auth();
        let role = |h: HeaderMap| a.authenticate(&h).map(|p| p.grant.clone());
        let bearer = format!("Bearer {ADMIN}");
        assert_eq!(
            role(headers(&[("authorization", &bearer)])).unwrap(),
            Grant::Role(Role::Admin)
        );
        let lower = format!("bearer   {RO} ");
        assert_eq!(
            role(headers(&[("authorization", &lower)])).unwrap(),
            Grant::Role(Role::ReadOnly)
        );
        assert_eq!(
            role(headers(&[("api-key", RW)])).unwrap(),
            Grant::Role(Role::ReadWrite)
        );
        for h in [
            HeaderMap::new(),
            headers(&[("authorization", &format!("Basic {ADMIN}"))]),
            headers(&[("authorization", ADMIN)]),
            headers(&[("authorization", "Bearer wrong-key-0123456789")]),
            headers(&[("api-key", "wrong-key-0123456789")]),
            headers(&[("authorization", "Bearer ")]),
        ] {
            let s = role(h).unwrap_err();
            assert_eq!(s.code(), tonic::Code::Unauthenticated);
            assert!(!s.message().contains("0123456789"), "{}", s.message());
        }
    }

    #[test]
    fn roles_meet_the_table() {
        let a = auth();
        let call = |key: &str, path: &str| {
            a.authorize(
                path,
                &headers(&[("authorization", &format!("Bearer {key}"))]),
            )
            .map(|_| ())
            .map_err(|s| s.code())
        };
        for r in table::RPCS {
            assert_eq!(call(ADMIN, r.path), Ok(()), "{}", r.path);
            let rw = call(RW, r.path);
            let ro = call(RO, r.path);
            match r.access {
                Access::Admin => {
                    assert_eq!(rw, Err(tonic::Code::PermissionDenied), "{}", r.path);
                    assert_eq!(ro, Err(tonic::Code::PermissionDenied), "{}", r.path);
                }
                Access::Write => {
                    assert_eq!(rw, Ok(()), "{}", r.path);
                    assert_eq!(ro, Err(tonic::Code::PermissionDenied), "{}", r.path);
                }
                Access::Read | Access::Any => {
                    assert_eq!(rw, Ok(()), "{}", r.path);
                    assert_eq!(ro, Ok(()), "{}", r.path);
                }
            }
        }
        // Health needs nothing; an unknown method needs a valid credential.
        assert!(
            a.authorize("/grpc.health.v1.Health/Check", &HeaderMap::new())
                .unwrap()
                .is_none()
        );
        assert_eq!(
            a.authorize("/shoal.v1.Points/Nope", &HeaderMap::new())
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        let m = call(RO, "/shoal.v1.Points/Upsert");
        assert!(m.is_err());
        let s = a
            .authorize("/shoal.v1.Cluster/Drain", &headers(&[("api-key", RW)]))
            .unwrap_err();
        assert_eq!(
            s.message(),
            "Cluster.Drain: needs the admin role; this credential is read-write"
        );
    }

    #[test]
    fn collection_scoped_tokens_reach_their_collections_only() {
        let a = auth();
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let t = token(serde_json::json!({"exp": exp, "access": [
            {"collection": "docs", "access": "r"},
            {"collection": "notes", "access": "rw"},
        ]}));
        let h = headers(&[("authorization", &format!("Bearer {t}"))]);
        let z = |path: &str| a.authorize(path, &h);
        // Admin calls: refused before decoding.
        let s = z("/shoal.v1.Collections/Create").unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("admin role"), "{}", s.message());
        // Reads and writes: refused by collection.
        let search = z("/shoal.v1.Points/Search").unwrap().unwrap();
        assert!(search.collection("docs").is_ok());
        assert!(search.collection("notes").is_ok());
        let s = search.collection("secret").unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            s.message(),
            "Points.Search: needs \"r\" access to collection \"secret\"; this token has none"
        );
        let upsert = z("/shoal.v1.Points/Upsert").unwrap().unwrap();
        assert!(upsert.collection("notes").is_ok());
        let s = upsert.collection("docs").unwrap_err();
        assert!(
            s.message().contains("this token has \"r\""),
            "{}",
            s.message()
        );
        assert!(upsert.collection("secret").is_err());
        assert!(search.principal.may_read("docs"));
        assert!(!search.principal.may_read("secret"));
        assert!(!search.principal.sees_everything());

        // A token that reads only cannot write anywhere: refused before decoding.
        let t = token(
            serde_json::json!({"exp": exp, "access": [{"collection": "docs", "access": "r"}]}),
        );
        let h = headers(&[("authorization", &format!("Bearer {t}"))]);
        let s = a.authorize("/shoal.v1.Points/Delete", &h).unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);

        // Expired: unauthenticated, whatever it grants.
        let t = token(serde_json::json!({"exp": exp - 7200, "access": "admin"}));
        let h = headers(&[("authorization", &format!("Bearer {t}"))]);
        let s = a.authorize("/shoal.v1.Points/Count", &h).unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        assert!(s.message().contains("expired"));
    }

    #[test]
    fn the_keys_file_is_reloaded_and_a_broken_one_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, format!("# keys\nread-only {RO}\n")).unwrap();
        let a = Authenticator::new(AuthOptions {
            keys_file: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        assert!(a.enabled());
        let ok = |key: &str| a.authenticate(&headers(&[("api-key", key)])).is_ok();
        assert!(ok(RO) && !ok(RW));
        assert!(!a.reload(false));
        // Rotation: a new key added, then the old one removed.
        std::fs::write(&file, format!("read-only {RO}\nread-write {RW}\n")).unwrap();
        assert!(a.reload(false));
        assert!(ok(RO) && ok(RW));
        std::fs::write(&file, format!("read-write {RW}\n")).unwrap();
        assert!(a.reload(false));
        assert!(!ok(RO) && ok(RW));
        // Broken: the keys in force stay.
        std::fs::write(&file, "read-write short\n").unwrap();
        assert!(!a.reload(false));
        assert!(ok(RW));
        // A broken file at start is an error naming the file and line.
        let e = Authenticator::new(AuthOptions {
            keys_file: Some(file.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("keys line 1"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let a = auth();
        let text = format!(
            "{a:?} {:?}",
            AuthOptions {
                admin_keys: vec![ADMIN.parse().unwrap()],
                jwt_secret: Some(SECRET.parse().unwrap()),
                ..Default::default()
            }
        );
        assert!(!text.contains(ADMIN) && !text.contains(SECRET), "{text}");
    }
}
