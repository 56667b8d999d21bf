//! The one error type of `shoal-shard`.

/// Failures while applying to or reading from a shard.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Storage(#[from] shoal_storage::StorageError),
    #[error("index: {0}")]
    Index(#[from] shoal_index::IndexError),
    #[error("index checkpoint: {0}")]
    Checkpoint(String),
    /// A write the shard refuses to store: a point that no request validated could
    /// hold (`shoal_core::validate::stored_write`). Nothing of the write was stored.
    #[error("invalid write: {0}")]
    Invalid(shoal_core::Error),
    /// An upsert refused before it was proposed: it would take the shard past its
    /// bound of distinct payload key paths (`ShardOptions::max_payload_keys`).
    #[error(
        "the shard holds {held} distinct payload key paths and this write adds {new} more, \
         past the limit of {limit} (--max-payload-keys); nothing was written"
    )]
    TooManyPayloadKeys {
        held: usize,
        new: usize,
        limit: usize,
    },
    /// A split's child copied ahead of the seal no longer matches its parent (whose
    /// contents a snapshot replaced since): it must be split off afresh.
    #[error("the split's copy of the child is stale; it is split off afresh")]
    StaleSplitCopy,
}

impl From<ShardError> for shoal_core::Error {
    fn from(e: ShardError) -> Self {
        match e {
            ShardError::Storage(s) => s.into(),
            ShardError::Index(i) => shoal_core::Error::Internal(format!("index: {i}")),
            ShardError::Invalid(e) => e,
            e @ ShardError::TooManyPayloadKeys { .. } => {
                shoal_core::Error::exhausted("points[].payload", e.to_string())
            }
            e @ ShardError::StaleSplitCopy => shoal_core::Error::Internal(e.to_string()),
            ShardError::Checkpoint(c) => {
                shoal_core::Error::Internal(format!("index checkpoint: {c}"))
            }
        }
    }
}
