//! API keys: their roles, their checks at start-up, the keys file's format, and the
//! constant-time lookup of a presented key.
//!
//! Keys are kept only as SHA-256 digests, and a presented key is compared with every
//! configured digest in constant time (no early exit, no branch on a match), so
//! neither the time taken nor a memory dump tells a key. Nothing here ever formats a
//! key into a message or a log line: errors say which flag or line is at fault.

use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::Role;
use crate::error::Error;

/// Shortest key accepted (a key is a shared secret: guessable ones are refused).
pub const MIN_KEY_LEN: usize = 16;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 4096;

fn digest(key: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Why `key` cannot be an API key, if it cannot. Keys travel in an HTTP header, so
/// they are visible ASCII without spaces.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "an API key must be at least {MIN_KEY_LEN} characters (this one has {})",
            key.len()
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "an API key must be at most {MAX_KEY_LEN} characters"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an API key must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// The configured keys and their roles.
#[derive(Default)]
pub struct KeySet {
    digests: Vec<[u8; 32]>,
    roles: Vec<Role>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({} keys)", self.digests.len())
    }
}

impl KeySet {
    /// Adds `key` with `role`; `origin` names where it came from in errors. A key given
    /// twice with the same role counts once; with two roles it is an error.
    pub fn add(&mut self, key: &str, role: Role, origin: &str) -> Result<(), Error> {
        check_key(key).map_err(|r| Error::invalid(origin, r))?;
        let d = digest(key.as_bytes());
        if let Some(i) = self.digests.iter().position(|x| *x == d) {
            if self.roles[i] != role {
                return Err(Error::invalid(
                    origin,
                    format!(
                        "the same key is also given as {} key; one key has one role",
                        self.roles[i].name()
                    ),
                ));
            }
            return Ok(());
        }
        self.digests.push(d);
        self.roles.push(role);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The role of `presented`, if it is one of the keys. Takes the same time whichever
    /// key matches, or none.
    pub fn find(&self, presented: &str) -> Option<Role> {
        let d = digest(presented.as_bytes());
        let mut hit = subtle::Choice::from(0);
        let mut code = 0u8;
        for (k, role) in self.digests.iter().zip(&self.roles) {
            let eq = d.ct_eq(k);
            code.conditional_assign(&(*role as u8), eq);
            hit |= eq;
        }
        bool::from(hit).then(|| Role::from_code(code))
    }
}

/// Parses an API-keys file: one `ROLE KEY` per line, `ROLE` one of `admin`,
/// `read-write`, `read-only`; blank lines and lines starting with `#` are skipped.
/// `origin` (the file's name) prefixes errors, which give the line number only.
pub fn parse_file(text: &str, origin: &str, into: &mut KeySet) -> Result<(), Error> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{origin} line {}", i + 1);
        let mut parts = line.split_whitespace();
        let (Some(role), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::invalid(
                at,
                "expected `ROLE KEY` (ROLE: admin, read-write or read-only)",
            ));
        };
        let role = Role::parse(role).ok_or_else(|| {
            Error::invalid(
                &at,
                "the role must be admin, read-write or read-only (then a space and the key)",
            )
        })?;
        into.add(key, role, &at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "admin-key-0123456789";
    const W: &str = "write-key-0123456789";
    const R: &str = "read-key-01234567890";

    #[test]
    fn keys_are_found_with_their_roles_and_others_are_not() {
        let mut k = KeySet::default();
        k.add(A, Role::Admin, "--admin-api-key").unwrap();
        k.add(W, Role::ReadWrite, "--read-write-api-key").unwrap();
        k.add(R, Role::ReadOnly, "--read-only-api-key").unwrap();
        // Rotation: a second admin key.
        k.add("admin-key-second-one", Role::Admin, "--admin-api-key")
            .unwrap();
        assert_eq!(k.find(A), Some(Role::Admin));
        assert_eq!(k.find("admin-key-second-one"), Some(Role::Admin));
        assert_eq!(k.find(W), Some(Role::ReadWrite));
        assert_eq!(k.find(R), Some(Role::ReadOnly));
        for bad in ["", "admin-key-012345678", "admin-key-01234567890", "x"] {
            assert_eq!(k.find(bad), None, "{bad}");
        }
        assert_eq!(KeySet::default().find(A), None);
    }

    #[test]
    fn weak_duplicate_or_malformed_keys_are_refused_without_echoing_them() {
        let mut k = KeySet::default();
        for (bad, why) in [
            ("short", "at least 16"),
            ("has a space in it!!", "without spaces"),
            ("nön-ascii-key-0123456", "printable ASCII"),
        ] {
            let e = k.add(bad, Role::Admin, "--admin-api-key").unwrap_err();
            let m = e.to_string();
            assert!(m.starts_with("--admin-api-key: ") && m.contains(why), "{m}");
            assert!(!m.contains(bad), "{m}");
        }
        k.add(A, Role::Admin, "x").unwrap();
        k.add(A, Role::Admin, "x").unwrap();
        assert_eq!(k.len(), 1);
        let e = k.add(A, Role::ReadOnly, "--read-only-api-key").unwrap_err();
        assert!(e.to_string().contains("also given as admin"), "{e}");
    }

    #[test]
    fn the_keys_file_has_roles_comments_and_line_numbers() {
        let mut k = KeySet::default();
        let text = format!(
            "# keys of the docs cluster\n\nadmin {A}\n  read-write   {W}  \n# old key, until Friday\nread-only {R}\n"
        );
        parse_file(&text, "keys.txt", &mut k).unwrap();
        assert_eq!(k.len(), 3);
        assert_eq!(k.find(W), Some(Role::ReadWrite));
        assert_eq!(k.find(R), Some(Role::ReadOnly));
        for (text, why) in [
            (
                format!("admin {A}\nwriter {W}\n"),
                "line 2: the role must be",
            ),
            (
                format!("\n\nadmin {A} extra\n"),
                "line 3: expected `ROLE KEY`",
            ),
            ("admin\n".to_string(), "line 1: expected"),
            (
                "admin short\n".to_string(),
                "line 1: an API key must be at least",
            ),
        ] {
            let e = parse_file(&text, "keys.txt", &mut KeySet::default())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("keys.txt ") && e.contains(why), "{e}");
            assert!(!e.contains(A) && !e.contains(W), "{e}");
        }
    }
}
