//! The one error type of `shoal-raft`, and its conversion into openraft's storage
//! error.

/// Failures of the Raft storage layer.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("encoding: {0}")]
    Codec(#[from] postcard::Error),
    #[error(transparent)]
    Storage(#[from] shoal_storage::StorageError),
    #[error(transparent)]
    Shard(#[from] shoal_shard::ShardError),
    #[error("a blocking task failed: {0}")]
    Task(String),
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
    /// A split's child was asked for before its parent shard was sealed.
    #[error("the shard to split is not sealed yet")]
    NotSealed,
}

impl RaftStoreError {
    pub(crate) fn any(&self) -> openraft::AnyError {
        openraft::AnyError::new(self)
    }
}

/// openraft 0.9 builds its `StorageError` from a `StorageIOError`; these shorthands
/// name the failing part the way openraft's constructors do.
pub(crate) mod storage_error {
    use openraft::storage::SnapshotSignature;
    use openraft::{AnyError, StorageIOError};

    use crate::StorageError;

    pub fn read_logs(e: AnyError) -> StorageError {
        StorageIOError::read_logs(e).into()
    }
    pub fn write_logs(e: AnyError) -> StorageError {
        StorageIOError::write_logs(e).into()
    }
    pub fn read_vote(e: AnyError) -> StorageError {
        StorageIOError::read_vote(e).into()
    }
    pub fn write_vote(e: AnyError) -> StorageError {
        StorageIOError::write_vote(e).into()
    }
    pub fn read_state_machine(e: AnyError) -> StorageError {
        StorageIOError::read_state_machine(e).into()
    }
    pub fn write_state_machine(e: AnyError) -> StorageError {
        StorageIOError::write_state_machine(e).into()
    }
    pub fn read_snapshot(sig: Option<SnapshotSignature<u64>>, e: AnyError) -> StorageError {
        StorageIOError::read_snapshot(sig, e).into()
    }
}
