//! The one error type of this crate.

/// Why a backup could not be written, read or found.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup {0:?} not found")]
    NotFound(String),
    #[error("backup {0:?} already exists")]
    Exists(String),
    #[error("invalid backup name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// A file of the backup is missing, has the wrong size or checksum, or does not
    /// decode: `file` is its path inside the backup.
    #[error("corrupt backup: {file}: {reason}")]
    Corrupt { file: String, reason: String },
    /// A manifest of another format or a newer version.
    #[error("not a backup this version of Shoal can read: {0}")]
    Unsupported(String),
    /// The uploaded tar stream is malformed or ends early.
    #[error("backup archive: {0}")]
    Archive(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl BackupError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
        let context = context.into();
        move |source| BackupError::Io { context, source }
    }

    pub(crate) fn corrupt(file: impl Into<String>, reason: impl Into<String>) -> BackupError {
        BackupError::Corrupt {
            file: file.into(),
            reason: reason.into(),
        }
    }
}
