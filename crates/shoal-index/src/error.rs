//! The one error type of `shoal-index`.

use std::path::PathBuf;

use crate::InternalId;

/// What can go wrong in an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector does not have the index's dimension.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch { expected: usize, got: usize },
    /// An insert reused an internal id (ids are never reused within one index), or
    /// named the same id twice.
    #[error("internal id {0} is already used")]
    IdInUse(InternalId),
    /// A dump is damaged, incomplete, or was written by an incompatible version,
    /// backend or machine.
    #[error("corrupt or incompatible index dump: {0}")]
    Corrupt(String),
    /// Reading or writing a dump failed.
    #[error("index dump: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The operation or parameter is not supported by this backend.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IndexError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        IndexError::Corrupt(reason.into())
    }
}
