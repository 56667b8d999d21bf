//! The one error type of `shoal-storage`.

/// Failures of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage engine failed (IO error, full disk, corruption it detected, …).
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// A record could not be decoded: the data on disk is not what this version wrote.
    #[error("corrupt record {what}: {reason}")]
    Corrupt { what: String, reason: String },
    /// A collection of that name exists already.
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    /// An fsync requested through the flusher failed, or the flusher is gone.
    #[error("flush: {0}")]
    Flush(String),
    /// The store cannot take writes now (a failed fsync, a read-only or full file
    /// system): what readiness reports.
    #[error("storage not writable: {0}")]
    Unwritable(String),
    /// No collection of that name exists.
    #[error("collection {0:?} not found")]
    CollectionNotFound(String),
    /// A write to the database failed (a full disk, an IO error) and the engine takes
    /// no more writes until the node restarts: the first such failure.
    #[error("{0}")]
    Fault(crate::Fault),
}

impl From<StorageError> for shoal_core::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::CollectionExists(name) => {
                shoal_core::Error::AlreadyExists(format!("collection {name:?}"))
            }
            StorageError::CollectionNotFound(name) => {
                shoal_core::Error::NotFound(format!("collection {name:?}"))
            }
            StorageError::Fault(f) if f.disk_full => {
                shoal_core::Error::exhausted("disk", f.to_string())
            }
            other => shoal_core::Error::Internal(other.to_string()),
        }
    }
}
