//! The Raft log of one shard group, over `shoal_storage::RaftLog`.
//!
//! Entries, the vote and the log pointers are postcard-encoded. `append` commits the
//! entries and returns; the node's flusher thread acknowledges them to openraft once an
//! fsync covers them, so concurrent groups share fsyncs. Votes are fsynced before
//! `save_vote` returns; truncation is fsynced before `truncate` returns; purging needs
//! no fsync (the purged pointer is written first in the same batch, and re-purging is
//! harmless).

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_storage::RaftLog;

use crate::error::storage_error;
use crate::{RaftStoreError, StorageError, TypeConfig};

/// The log store of one group. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    log: RaftLog,
}

impl LogStore {
    /// The log store over `log` (from `shoal_storage::Store::raft_log(group)`).
    pub fn new(log: RaftLog) -> LogStore {
        LogStore { log }
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, RaftStoreError> {
    Ok(postcard::to_stdvec(v)?)
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, RaftStoreError> {
    Ok(postcard::from_bytes(b)?)
}

/// Runs blocking storage work (fsync) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RaftStoreError> + Send + 'static,
) -> Result<T, RaftStoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RaftStoreError::Task(e.to_string()))?
}

fn read_err(e: RaftStoreError) -> StorageError {
    storage_error::read_logs(e.any())
}

fn write_err(e: RaftStoreError) -> StorageError {
    storage_error::write_logs(e.any())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let raw = self.log.entries(range).map_err(|e| read_err(e.into()))?;
        raw.iter()
            .map(|(_, b)| decode(b))
            .collect::<Result<_, _>>()
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last = match self.log.last().map_err(|e| read_err(e.into()))? {
            Some((_, b)) => Some(decode::<Entry<TypeConfig>>(&b).map_err(read_err)?.log_id),
            None => None,
        };
        let purged: Option<LogId<u64>> = match self.log.purged().map_err(|e| read_err(e.into()))? {
            Some(b) => Some(decode(&b).map_err(read_err)?),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| storage_error::write_vote(e.any()))?;
        let log = self.log.clone();
        blocking(move || Ok(log.save_vote(&bytes)?))
            .await
            .map_err(|e| storage_error::write_vote(e.any()))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        let err = |e: RaftStoreError| storage_error::read_vote(e.any());
        match self.log.vote().map_err(|e| err(e.into()))? {
            Some(b) => Ok(Some(decode(&b).map_err(err)?)),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        let bytes = encode(&committed).map_err(write_err)?;
        self.log
            .save_committed(&bytes)
            .map_err(|e| write_err(e.into()))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        match self.log.committed().map_err(|e| read_err(e.into()))? {
            Some(b) => decode(&b).map_err(read_err),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode(&e)?)))
            .collect::<Result<Vec<(u64, Vec<u8>)>, RaftStoreError>>()
            .map_err(write_err)?;
        let refs: Vec<(u64, &[u8])> = encoded.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        let ticket = self.log.append(&refs).map_err(|e| write_err(e.into()))?;
        self.log.sync_then(
            ticket,
            Box::new(move |result| {
                callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())))
            }),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let log = self.log.clone();
        blocking(move || {
            let t = log.truncate_from(log_id.index)?;
            Ok(log.sync(t)?)
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let bytes = encode(&log_id).map_err(write_err)?;
        self.log
            .purge_upto(log_id.index, &bytes)
            .map(|_| ())
            .map_err(|e| write_err(e.into()))
    }
}
