//! JWT bearer tokens: the keys that verify them, and the claims that say what a token
//! may do.
//!
//! A token is signed with HS256 by a shared secret (`--jwt-secret`), or with RS256 or
//! ES256 by the private key whose public half is `--jwt-public-key` (PEM); both may be
//! configured, and the token's `alg` chooses the key (an HMAC secret never verifies an
//! RSA or EC token, nor the reverse). Claims:
//!
//! - `exp` (required): expiry, seconds since the Unix epoch; an expired token is
//!   refused (30 s of clock skew allowed);
//! - `access` (required): `"r"`, `"rw"` or `"admin"` for every collection (the
//!   read-only, read-write and admin roles), or a list of per-collection grants
//!   `[{"collection": "docs", "access": "r"}, {"collection": "notes", "access": "rw"}]`;
//! - `nbf` is checked when present; `sub`, `iat` and others are ignored.
//!
//! Nothing here ever quotes a token or a key: a refusal says what is wrong with it.

use std::collections::BTreeMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use tonic::Status;

use super::{Grant, Level, Role};
use crate::error::Error;

/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SECRET_LEN: usize = 32;
/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The keys that verify tokens.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    public: Option<(DecodingKey, Vec<Algorithm>)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("public", &self.public.as_ref().map(|p| p.1.clone()))
            .finish()
    }
}

impl Verifier {
    /// A verifier with an HS256 `secret` and/or a PEM `public_key` (RSA or EC). `origin`
    /// strings name the settings in errors.
    pub fn new(
        secret: Option<(&[u8], &str)>,
        public_key: Option<(&[u8], &str)>,
    ) -> Result<Verifier, Error> {
        let hmac = match secret {
            None => None,
            Some((s, origin)) => {
                if s.len() < MIN_SECRET_LEN {
                    return Err(Error::invalid(
                        origin,
                        format!(
                            "a JWT secret must be at least {MIN_SECRET_LEN} bytes (this one has {})",
                            s.len()
                        ),
                    ));
                }
                Some(DecodingKey::from_secret(s))
            }
        };
        let public = match public_key {
            None => None,
            Some((pem, origin)) => {
                if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                    Some((
                        k,
                        vec![
                            Algorithm::RS256,
                            Algorithm::RS384,
                            Algorithm::RS512,
                            Algorithm::PS256,
                            Algorithm::PS384,
                            Algorithm::PS512,
                        ],
                    ))
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                    Some((k, vec![Algorithm::ES256, Algorithm::ES384]))
                } else {
                    return Err(Error::invalid(
                        origin,
                        "not a PEM RSA or EC public key (-----BEGIN PUBLIC KEY-----)",
                    ));
                }
            }
        };
        Ok(Verifier { hmac, public })
    }

    /// What `token` grants, or why it is refused (always `UNAUTHENTICATED`).
    pub fn verify(&self, token: &str) -> Result<Grant, Status> {
        let refuse = |why: &str| Status::unauthenticated(format!("invalid token: {why}"));
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| refuse("not a well-formed JWT"))?;
        let key = match (&self.hmac, &self.public) {
            (Some(k), _) if header.alg == Algorithm::HS256 => k,
            (_, Some((k, algs))) if algs.contains(&header.alg) => k,
            _ => {
                return Err(refuse(&format!(
                    "this server does not accept {:?}-signed tokens (it takes {})",
                    header.alg,
                    self.accepted()
                )));
            }
        };
        let mut v = Validation::new(header.alg);
        v.set_required_spec_claims(&["exp"]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.leeway = LEEWAY_SECS;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, key, &v).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => {
                        Status::unauthenticated("the token expired (its `exp` has passed)")
                    }
                    ErrorKind::ImmatureSignature => {
                        refuse("not valid yet (its `nbf` is in the future)")
                    }
                    ErrorKind::MissingRequiredClaim(c) => refuse(&format!(
                        "the `{c}` claim is required (a number of seconds)"
                    )),
                    ErrorKind::InvalidSignature => refuse("the signature does not verify"),
                    _ => refuse("not a well-formed JWT"),
                }
            })?;
        grant_of(&data.claims).map_err(|why| refuse(&why))
    }

    fn accepted(&self) -> String {
        let mut out = Vec::new();
        if self.hmac.is_some() {
            out.push("HS256".to_string());
        }
        if let Some((_, algs)) = &self.public {
            out.extend(algs.iter().map(|a| format!("{a:?}")));
        }
        out.join(", ")
    }
}

/// The grant of a token's (verified) claims.
pub fn grant_of(claims: &serde_json::Value) -> Result<Grant, String> {
    let access = claims
        .get("access")
        .ok_or("the `access` claim is required: \"r\", \"rw\", \"admin\", or a list of {\"collection\", \"access\"}")?;
    match access {
        serde_json::Value::String(s) => match s.as_str() {
            "r" => Ok(Grant::Role(Role::ReadOnly)),
            "rw" => Ok(Grant::Role(Role::ReadWrite)),
            "admin" => Ok(Grant::Role(Role::Admin)),
            _ => Err(
                "`access` must be \"r\", \"rw\" or \"admin\" (or a list of per-collection grants)"
                    .into(),
            ),
        },
        serde_json::Value::Array(list) => {
            if list.is_empty() {
                return Err("`access` is an empty list".into());
            }
            let mut grants = BTreeMap::new();
            for (i, item) in list.iter().enumerate() {
                let collection = item
                    .get("collection")
                    .and_then(|c| c.as_str())
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| format!("access[{i}].collection must be a collection name"))?;
                let level = match item.get("access").and_then(|a| a.as_str()) {
                    Some("r") => Level::Read,
                    Some("rw") => Level::ReadWrite,
                    _ => return Err(format!("access[{i}].access must be \"r\" or \"rw\"")),
                };
                let e = grants.entry(collection.to_string()).or_insert(level);
                *e = (*e).max(level);
            }
            Ok(Grant::Collections(grants))
        }
        _ => Err("`access` must be a string or a list".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(Some((SECRET, "--jwt-secret")), None).unwrap()
    }

    #[test]
    fn roles_and_collection_grants() {
        let v = verifier();
        let exp = now() + 600;
        for (access, role) in [
            ("r", Role::ReadOnly),
            ("rw", Role::ReadWrite),
            ("admin", Role::Admin),
        ] {
            let t = hs(json!({"exp": exp, "access": access, "sub": "svc"}), SECRET);
            assert_eq!(v.verify(&t).unwrap(), Grant::Role(role));
        }
        let t = hs(
            json!({"exp": exp, "access": [
                {"collection": "docs", "access": "r"},
                {"collection": "notes", "access": "rw"},
                {"collection": "docs", "access": "rw"},
            ]}),
            SECRET,
        );
        let Grant::Collections(g) = v.verify(&t).unwrap() else {
            panic!()
        };
        assert_eq!(g.len(), 2);
        assert_eq!(g["docs"], Level::ReadWrite);
        assert_eq!(g["notes"], Level::ReadWrite);
    }

    #[test]
    fn expired_forged_unsigned_or_malformed_tokens_are_unauthenticated() {
        let v = verifier();
        let check = |t: &str, why: &str| {
            let s = v.verify(t).unwrap_err();
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{t}");
            assert!(s.message().contains(why), "{why}: {}", s.message());
            assert!(!s.message().contains(t), "{}", s.message());
        };
        check(
            &hs(json!({"exp": now() - 3600, "access": "admin"}), SECRET),
            "expired",
        );
        check(
            &hs(
                json!({"exp": now() + 600, "access": "admin"}),
                b"another-secret-another-secret-xx",
            ),
            "signature",
        );
        check(&hs(json!({"access": "admin"}), SECRET), "`exp` claim");
        check(
            &hs(json!({"exp": "tomorrow", "access": "admin"}), SECRET),
            "`exp` claim",
        );
        check(
            &hs(
                json!({"exp": now() + 600, "nbf": now() + 3600, "access": "r"}),
                SECRET,
            ),
            "nbf",
        );
        check(&hs(json!({"exp": now() + 600}), SECRET), "`access` claim");
        for access in [
            json!("root"),
            json!([]),
            json!(3),
            json!([{"collection": "a", "access": "admin"}]),
            json!([{"access": "r"}]),
        ] {
            check(
                &hs(json!({"exp": now() + 600, "access": access}), SECRET),
                "access",
            );
        }
        // alg "none", and an RS256 token to a server with only a secret.
        let payload = "eyJleHAiOjk5OTk5OTk5OTksImFjY2VzcyI6ImFkbWluIn0";
        check(&format!("eyJhbGciOiJub25lIn0.{payload}."), "well-formed");
        check(
            &format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"),
            "does not accept RS256",
        );
        check("not-a-token", "well-formed");
        check("a.b.c", "well-formed");
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key_and_never_with_the_secret() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let public = key.public_key_pem();
        let v = Verifier::new(
            Some((SECRET, "--jwt-secret")),
            Some((public.as_bytes(), "--jwt-public-key")),
        )
        .unwrap();
        let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let claims = json!({"exp": now() + 600, "access": "rw"});
        let t = encode(&Header::new(Algorithm::ES256), &claims, &enc).unwrap();
        assert_eq!(v.verify(&t).unwrap(), Grant::Role(Role::ReadWrite));
        // HS256 signed with the public key's PEM as the secret (algorithm confusion).
        let t = hs(claims, public.as_bytes());
        assert_eq!(
            v.verify(&t).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // The secret alone takes no ES256 token.
        let t = encode(
            &Header::new(Algorithm::ES256),
            &json!({"exp": now() + 600, "access": "rw"}),
            &enc,
        )
        .unwrap();
        assert!(verifier().verify(&t).is_err());
    }

    #[test]
    fn weak_secrets_and_bad_keys_are_refused_at_start() {
        let e = Verifier::new(Some((b"short", "--jwt-secret")), None).unwrap_err();
        assert!(e.to_string().contains("at least 32 bytes"), "{e}");
        assert!(!e.to_string().contains("short"), "{e}");
        let e = Verifier::new(None, Some((b"garbage", "--jwt-public-key k.pem"))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--jwt-public-key k.pem: not a PEM"),
            "{e}"
        );
    }
}
