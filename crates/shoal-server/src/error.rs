//! This crate's one error type: what can go wrong while reading the node's security
//! configuration (API keys, JWT keys, TLS certificates) or setting up its metrics
//! endpoint (`--metrics-listen`). Requests refused for their
//! credentials are `tonic::Status`es, not errors of this type.
//!
//! Messages name the file and the line or setting at fault, never a secret: a key,
//! token or private key's content is never quoted.

use std::path::{Path, PathBuf};

/// A security setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A setting (a flag, an environment variable, or a file's line) is unusable.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Reads a whole file, the error naming it.
pub fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}
