//! The one error type of `shoal-datasets`.

use std::path::PathBuf;

/// What can go wrong reading or writing a data set. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record of an `.fvecs` / `.ivecs` file is malformed. `record` counts from 0,
    /// like the row ids of ground-truth files.
    #[error("{}: record {record}: {reason}", path.display())]
    Record {
        path: PathBuf,
        record: usize,
        reason: String,
    },
    /// A line of a JSON-lines file is malformed. `line` counts from 1, like editors.
    #[error("{}: line {line}: {reason}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The data handed to a writer cannot be represented in the file format.
    #[error("{}: cannot write: {reason}", path.display())]
    Unwritable { path: PathBuf, reason: String },
}

impl DatasetError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
