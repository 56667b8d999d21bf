//! The metadata group's state machine: which nodes form the cluster, which
//! collections exist, and on which nodes each shard's replicas live.
//!
//! **State.** [`ClusterState`] is small (a few records per collection), so it is kept
//! whole in memory and written whole, with the applied log id and membership, as one
//! blob in the node's store after every applied batch — without an fsync: the
//! metadata group's log is the source of truth and openraft re-applies it after a
//! crash. Snapshots are the same blob.
//!
//! **Determinism.** Every replica applies the same entries to the same state and must
//! reach the same decision: collection ids come from a counter in the state, replica
//! placement is a pure function of the voters and the collection id ([`place`]), and
//! a command the state forbids (a duplicate name, a replication factor above the
//! number of nodes) is rejected identically everywhere.
//!
//! **Publishing.** Every change is published on a `tokio::sync::watch` channel; the
//! node reconciles its local shard replicas against it. This module never opens
//! shards or starts groups itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use shoal_core::{CollectionConfig, Error};
use shoal_storage::Store;
use tokio::sync::watch;

use crate::error::storage_error;
use crate::log_store::{decode, encode};
use crate::state_machine::Applied;
use crate::{Command, MetaCommand, RaftStoreError, ShardReply, StorageError, TypeConfig};

/// Group id of the metadata group. Shard groups are numbered by [`group_of`].
pub const META_GROUP: u64 = 0;

/// Most shards a collection can have and still get a distinct group id.
const SHARD_BITS: u32 = 20;

/// The Raft group id of shard `shard` of the collection with id `collection_id`
/// (collection ids start at 1, so no shard group is [`META_GROUP`]).
pub fn group_of(collection_id: u64, shard: u32) -> u64 {
    (collection_id << SHARD_BITS) | u64::from(shard)
}

/// Places the replicas of every shard of a collection: shard `s` goes to
/// `replication_factor` consecutive nodes (in id order) starting at
/// `(collection_id + s) mod n`, so replicas of a shard are on distinct nodes and the
/// first replica of each shard — the one that starts its group's first election, its
/// preferred leader — rotates over the nodes.
pub fn place(nodes: &[u64], collection_id: u64, shard_count: u32, rf: u32) -> Vec<Vec<u64>> {
    let n = nodes.len();
    if n == 0 {
        return vec![Vec::new(); shard_count as usize];
    }
    (0..shard_count)
        .map(|s| {
            let start = (collection_id as usize + s as usize) % n;
            (0..(rf as usize).min(n))
                .map(|r| nodes[(start + r) % n])
                .collect()
        })
        .collect()
}

/// A collection as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// Cluster-wide id, never reused; names the collection's shard groups.
    pub id: u64,
    pub config: CollectionConfig,
    /// Per shard, the nodes holding a replica; the first is the preferred leader.
    pub replicas: Vec<Vec<u64>>,
}

/// The cluster's metadata, as of some applied index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Voters of the metadata group: node id → Raft address.
    pub nodes: BTreeMap<u64, String>,
    pub collections: BTreeMap<String, CollectionMeta>,
    /// The id the next collection gets.
    pub next_collection_id: u64,
    /// Log index of the last entry applied (0 before any).
    pub applied: u64,
}

impl ClusterState {
    /// The nodes holding the replicas of shard group `group`, preferred leader first.
    pub fn replicas_of(&self, group: u64) -> Option<&[u64]> {
        let (id, shard) = (group >> SHARD_BITS, group & ((1 << SHARD_BITS) - 1));
        let cm = self.collections.values().find(|c| c.id == id)?;
        cm.replicas.get(shard as usize).map(Vec::as_slice)
    }

    /// The node that should lead shard group `group`: the first of its placement.
    pub fn preferred_leader(&self, group: u64) -> Option<u64> {
        self.replicas_of(group)?.first().copied()
    }

    fn apply(&mut self, cmd: MetaCommand) -> Option<Error> {
        match cmd {
            MetaCommand::CreateCollection(config) => {
                if self.collections.contains_key(&config.name) {
                    return Some(Error::AlreadyExists(format!(
                        "collection {:?}",
                        config.name
                    )));
                }
                let nodes: Vec<u64> = self.nodes.keys().copied().collect();
                if config.replication_factor as usize > nodes.len() {
                    return Some(Error::invalid(
                        "replication_factor",
                        format!(
                            "{} replicas need as many nodes; the cluster has {}",
                            config.replication_factor,
                            nodes.len()
                        ),
                    ));
                }
                let id = self.next_collection_id.max(1);
                self.next_collection_id = id + 1;
                let replicas = place(&nodes, id, config.shard_count, config.replication_factor);
                self.collections.insert(
                    config.name.clone(),
                    CollectionMeta {
                        id,
                        config,
                        replicas,
                    },
                );
                None
            }
            MetaCommand::DeleteCollection(name) => match self.collections.remove(&name) {
                Some(_) => None,
                None => Some(Error::NotFound(format!("collection {name:?}"))),
            },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    applied: Applied,
    state: ClusterState,
}

const BLOB: &str = "cluster-state";

/// The metadata group's state machine. Cheap to clone.
#[derive(Clone)]
pub struct MetaStateMachine {
    store: Store,
    current: Arc<Mutex<Persisted>>,
    tx: Arc<watch::Sender<Arc<ClusterState>>>,
}

fn nodes_of(m: &StoredMembership<u64, BasicNode>) -> BTreeMap<u64, String> {
    m.membership()
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect()
}

impl MetaStateMachine {
    /// The state machine, with the state last written to `store` (empty if none).
    pub fn open(store: Store) -> Result<MetaStateMachine, RaftStoreError> {
        let persisted: Persisted = match store.blob(BLOB)? {
            Some(b) => decode(&b)?,
            None => Persisted::default(),
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ShardReply>, StorageError>
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
                EntryPayload::Normal(Command::Meta(cmd)) => p.state.apply(cmd),
                EntryPayload::Normal(Command::Shard(_)) => Some(Error::Internal(
                    "a shard command reached the metadata group".into(),
                )),
                EntryPayload::Membership(m) => {
                    p.applied.membership = StoredMembership::new(Some(log_id), m);
                    p.state.nodes = nodes_of(&p.applied.membership);
                    None
                }
            };
            replies.push(ShardReply {
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
    fn placement_spreads_replicas_and_preferred_leaders() {
        let nodes = [1, 2, 3];
        let p = place(&nodes, 1, 3, 3);
        for replicas in &p {
            let mut r = replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "replicas on distinct nodes: {replicas:?}");
        }
        let mut leaders: Vec<u64> = p.iter().map(|r| r[0]).collect();
        leaders.sort();
        assert_eq!(
            leaders,
            vec![1, 2, 3],
            "each node leads one of three shards"
        );
        let p = place(&nodes, 7, 6, 1);
        let mut count = BTreeMap::new();
        for r in &p {
            *count.entry(r[0]).or_insert(0) += 1;
        }
        assert!(count.values().all(|c| *c == 2), "{count:?}");
    }

    #[test]
    fn commands_are_decided_by_the_state_alone() {
        let mut s = ClusterState::default();
        s.nodes.insert(1, "a".into());
        s.nodes.insert(2, "b".into());
        let config = CollectionConfig {
            name: "c".into(),
            dim: 2,
            metric: shoal_core::Metric::L2,
            shard_count: 2,
            replication_factor: 2,
            hnsw: Default::default(),
        };
        assert_eq!(s.apply(MetaCommand::CreateCollection(config.clone())), None);
        let id = s.collections["c"].id;
        for shard in 0..2 {
            let group = group_of(id, shard);
            assert_eq!(
                s.replicas_of(group),
                Some(s.collections["c"].replicas[shard as usize].as_slice())
            );
            assert_eq!(
                s.preferred_leader(group),
                Some(s.collections["c"].replicas[shard as usize][0])
            );
        }
        assert_eq!(s.preferred_leader(group_of(id, 2)), None, "no shard 2");
        assert_eq!(
            s.preferred_leader(group_of(id + 1, 0)),
            None,
            "no such collection"
        );
        assert!(matches!(
            s.apply(MetaCommand::CreateCollection(config.clone())),
            Some(Error::AlreadyExists(_))
        ));
        let too_many = CollectionConfig {
            name: "d".into(),
            replication_factor: 3,
            ..config.clone()
        };
        assert!(matches!(
            s.apply(MetaCommand::CreateCollection(too_many)),
            Some(Error::InvalidArgument { .. })
        ));
        assert_eq!(s.apply(MetaCommand::DeleteCollection("c".into())), None);
        assert_eq!(s.apply(MetaCommand::CreateCollection(config)), None);
        assert_eq!(s.collections["c"].id, 2, "ids are never reused");
        assert!(matches!(
            s.apply(MetaCommand::DeleteCollection("x".into())),
            Some(Error::NotFound(_))
        ));
    }
}
