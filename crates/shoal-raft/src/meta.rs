//! The metadata group's state machine: persists `shoal_meta::ClusterState` (which
//! nodes form the cluster, which collections exist, and on which nodes each shard's
//! replicas live) and applies committed metadata commands to it.
//!
//! **State.** [`ClusterState`] is small (a few records per collection), so it is kept
//! whole in memory and written whole, with the applied log id and membership, as one
//! blob in the node's store after every applied batch — without an fsync: the
//! metadata group's log is the source of truth and openraft re-applies it after a
//! crash. Snapshots are the same blob.
//!
//! **Determinism.** What a command does is decided by `ClusterState::apply` alone
//! (shoal-meta): collection ids come from a counter in the state, placements arrive
//! decided in the command, and a command the state forbids is rejected identically on
//! every replica. A committed membership of the metadata group adds its members to
//! the state's nodes.
//!
//! **Publishing.** Every change is published on a `tokio::sync::watch` channel; the
//! node reconciles its local shard replicas against it. This module never opens
//! shards or starts groups itself.

use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use shoal_meta::ClusterState;
use shoal_storage::Store;
use tokio::sync::watch;

use crate::error::storage_error;
use crate::log_store::{decode, encode};
use crate::state_machine::Applied;
use crate::{Command, RaftStoreError, Rejection, Reply, StorageError, TypeConfig};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    applied: Applied,
    state: ClusterState,
}

/// The blob the state is kept in. The name carries the format: a data directory
/// written by a Shoal with another metadata format is refused at open, not misread.
const BLOB: &str = "cluster-state-v3";
/// The blobs of earlier formats: the first (before shard ranges and node states) and
/// the second (before collections could be hidden while restored).
const OLD_BLOBS: &[&str] = &["cluster-state", "cluster-state-v2"];

/// The metadata group's state machine. Cheap to clone.
#[derive(Clone)]
pub struct MetaStateMachine {
    store: Store,
    current: Arc<Mutex<Persisted>>,
    tx: Arc<watch::Sender<Arc<ClusterState>>>,
}

impl MetaStateMachine {
    /// The state machine, with the state last written to `store` (empty if none).
    pub fn open(store: Store) -> Result<MetaStateMachine, RaftStoreError> {
        let persisted: Persisted = match store.blob(BLOB)? {
            Some(b) => decode(&b)?,
            None => {
                for old in OLD_BLOBS {
                    if store.blob(old)?.is_some() {
                        return Err(RaftStoreError::Corrupt(
                            "the data directory holds cluster metadata in the format of an \
                             older Shoal; start that version, export the collections, and \
                             import them into a fresh data directory"
                                .into(),
                        ));
                    }
                }
                Persisted::default()
            }
        };
        let (tx, _) = watch::channel(Arc::new(persisted.state.clone()));
        Ok(MetaStateMachine {
            store,
            current: Arc::new(Mutex::new(persisted)),
            tx: Arc::new(tx),
        })
    }

    /// True if nothing was ever applied (a node that never joined a cluster).
    pub fn is_fresh(&self) -> bool {
        self.lock().applied.last_applied.is_none()
    }

    /// The current state, and every change after it.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.tx.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, p: &Persisted) -> Result<(), RaftStoreError> {
        self.store.put_blob(BLOB, &encode(p)?)?;
        self.tx.send_replace(Arc::new(p.state.clone()));
        Ok(())
    }

    fn snapshot_of(p: &Persisted) -> Result<Snapshot<TypeConfig>, RaftStoreError> {
        let data = encode(p)?;
        let id = p
            .applied
            .last_applied
            .map(|l| {
                format!(
                    "meta-{}-{}-{}",
                    l.leader_id.term, l.leader_id.node_id, l.index
                )
            })
            .unwrap_or_else(|| "meta-none".into());
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: p.applied.last_applied,
                last_membership: p.applied.membership.clone(),
                snapshot_id: id,
            },
            snapshot: Box::new(crate::snapshot_file::of_bytes(&data)?),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let p = self.lock().clone();
        Self::snapshot_of(&p).map_err(|e| storage_error::read_state_machine(e.any()))
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotBuilder = MetaStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError> {
        let p = self.lock();
        Ok((p.applied.last_applied, p.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut p = self.lock().clone();
        let mut replies = Vec::new();
        for e in entries {
            let log_id = e.log_id;
            p.applied.last_applied = Some(log_id);
            p.state.applied = log_id.index;
            let rejected = match e.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(Command::Meta(cmd)) => {
                    p.state.apply(cmd).err().map(Rejection::Meta)
                }
                EntryPayload::Normal(_) => Some(Rejection::WrongGroup),
                EntryPayload::Membership(m) => {
                    p.applied.membership = StoredMembership::new(Some(log_id), m);
                    let members = p.applied.membership.membership().nodes();
                    p.state
                        .observe_members(members.map(|(id, n)| (*id, n.addr.as_str())));
                    None
                }
            };
            replies.push(Reply {
                applied: log_id.index,
                rejected,
            });
        }
        self.save(&p)
            .map_err(|e| storage_error::write_state_machine(e.any()))?;
        *self.lock() = p;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> MetaStateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let f = crate::snapshot_file::unnamed(None)
            .map_err(|e| storage_error::write_state_machine(e.any()))?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let err = |e: RaftStoreError| storage_error::read_snapshot(Some(meta.signature()), e.any());
        let bytes = crate::snapshot_file::read_all(*snapshot)
            .await
            .map_err(err)?;
        let p: Persisted = decode(&bytes).map_err(err)?;
        self.save(&p).map_err(err)?;
        *self.lock() = p;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let p = self.lock().clone();
        if p.applied.last_applied.is_none() {
            return Ok(None);
        }
        Self::snapshot_of(&p)
            .map(Some)
            .map_err(|e| storage_error::read_state_machine(e.any()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_of_an_older_format_is_refused_not_misread() {
        for old in OLD_BLOBS {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            store
                .put_blob(old, b"whatever an older Shoal wrote")
                .unwrap();
            let e = MetaStateMachine::open(store).err().expect("refused");
            assert!(e.to_string().contains("older Shoal"), "{old}: {e}");
        }
        // The current format opens (and an empty store is fresh).
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStateMachine::open(Store::open(dir.path()).unwrap()).unwrap();
        assert!(m.is_fresh());
    }
}
