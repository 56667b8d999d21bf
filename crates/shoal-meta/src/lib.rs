//! # shoal-meta
//!
//! The cluster's metadata, as data: which nodes form the cluster, which collections
//! exist, how each collection's 64-bit id-hash space is cut into shards, and on which
//! nodes each shard's replicas live — plus the one function that changes it,
//! [`ClusterState::apply`].
//!
//! Every node holds a copy, replicated by the metadata Raft group (`shoal-raft`
//! persists it; `shoal-cluster` reads it to route requests and proposes commands to
//! change it). Decisions that need judgement — which nodes get a new collection's
//! replicas, when a replica moves — are the cluster layer's *policy*: they reach this
//! crate as explicit commands ([`MetaCommand`]) that `apply` only checks against the
//! state. So `apply` is deterministic: every replica of the metadata group applies the
//! same commands to the same state and reaches the same state and the same
//! rejections.
//!
//! **Shards and ranges.** A shard owns a contiguous, inclusive range of the id hash
//! ([`HashRange`]); the shards of a collection cover the whole space without overlap.
//! A collection created with `n` shards gets the `n` equal ranges that
//! `shoal_core::routing::shard_of` describes, so routing by range and by
//! `shard_of` agree. Shard ids are never reused within a collection and name the
//! shard's Raft group ([`group_of`]).
//!
//! This crate must never do IO, spawn threads or tasks, or read clocks: the state it
//! computes must depend only on the commands applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_core::{CollectionConfig, PointId, routing};

mod error;
pub use error::MetaError;

/// A node's id: a positive integer, unique in the cluster, never reused.
pub type NodeId = u64;

/// Group id of the metadata group. Shard groups are numbered by [`group_of`].
pub const META_GROUP: u64 = 0;

/// Shard ids of one collection must fit in this many bits of a group id.
const SHARD_BITS: u32 = 20;

/// The Raft group id of shard `shard` of the collection with id `collection_id`
/// (collection ids start at 1, so no shard group is [`META_GROUP`]).
pub fn group_of(collection_id: u64, shard: u32) -> u64 {
    (collection_id << SHARD_BITS) | u64::from(shard)
}

/// The collection id and shard id a shard group id names (inverse of [`group_of`]).
pub fn location_of(group: u64) -> (u64, u32) {
    (
        group >> SHARD_BITS,
        (group & ((1 << SHARD_BITS) - 1)) as u32,
    )
}

/// A contiguous range of the 64-bit id hash, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HashRange {
    pub first: u64,
    pub last: u64,
}

impl HashRange {
    /// The whole hash space.
    pub const FULL: HashRange = HashRange {
        first: 0,
        last: u64::MAX,
    };

    /// The `n` ranges `shoal_core::routing::shard_of(_, n)` maps to shards `0..n`:
    /// shard `s` holds the hashes `h` with `floor(h * n / 2^64) == s`.
    pub fn even(n: u32) -> Vec<HashRange> {
        let n = u128::from(n.max(1));
        // First hash of shard s: ceil(s * 2^64 / n).
        let start = |s: u128| -> u128 { (s << 64).div_ceil(n) };
        (0..n)
            .map(|s| HashRange {
                first: start(s) as u64,
                last: (start(s + 1) - 1) as u64,
            })
            .collect()
    }

    /// True if `hash` falls in the range.
    pub fn contains(&self, hash: u64) -> bool {
        self.first <= hash && hash <= self.last
    }
}

/// Whether a node takes new replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Serves and takes replicas.
    Active,
    /// Being emptied: keeps serving what it holds, takes no new replicas.
    Draining,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Its internal (Raft and node-to-node) address, `host:port`.
    pub addr: String,
    pub state: NodeState,
}

/// One shard of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Unique within the collection, never reused; names the shard's Raft group.
    pub id: u32,
    /// The id hashes whose points this shard holds.
    pub range: HashRange,
    /// The nodes holding a replica, preferred leader first.
    pub replicas: Vec<NodeId>,
}

/// A collection as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// Cluster-wide id, never reused; names the collection's shard groups.
    pub id: u64,
    /// Its configuration; `shard_count` is the number of shards it has now.
    pub config: CollectionConfig,
    /// Its shards, in hash order: together their ranges cover the whole hash space.
    pub shards: Vec<ShardMeta>,
}

impl CollectionMeta {
    /// The shard holding `id`.
    pub fn shard_for(&self, id: &PointId) -> &ShardMeta {
        let h = routing::id_hash(id);
        // Shards are sorted by range and cover the space: the last one starting at
        // or before `h` holds it.
        let i = self.shards.partition_point(|s| s.range.first <= h);
        &self.shards[i.saturating_sub(1)]
    }

    /// The shard with id `shard`.
    pub fn shard(&self, shard: u32) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.id == shard)
    }

    /// The Raft group of shard `shard`.
    pub fn group(&self, shard: u32) -> u64 {
        group_of(self.id, shard)
    }
}

/// A change to the metadata, as replicated in the metadata group's log.
///
/// Configurations are validated (`shoal_core::validate`) and placements decided (the
/// cluster layer's placement policy) before they are proposed; [`ClusterState::apply`]
/// still rejects, identically on every replica, what the state forbids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates a collection with the given replicas per shard (shard `s` of
    /// `placement[s]`, preferred leader first); the state assigns its id.
    CreateCollection {
        config: CollectionConfig,
        placement: Vec<Vec<NodeId>>,
    },
    /// Deletes the collection with this name.
    DeleteCollection(String),
}

/// The cluster's metadata, as of some applied index of the metadata group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Every node of the cluster, by id.
    pub nodes: BTreeMap<NodeId, NodeMeta>,
    /// Every collection, by name.
    pub collections: BTreeMap<String, CollectionMeta>,
    /// The id the next collection gets.
    pub next_collection_id: u64,
    /// Log index of the last entry applied (0 before any).
    pub applied: u64,
}

impl ClusterState {
    /// The collection with id `id`.
    pub fn collection_by_id(&self, id: u64) -> Option<&CollectionMeta> {
        self.collections.values().find(|c| c.id == id)
    }

    /// The shard a shard group id names.
    pub fn shard_of_group(&self, group: u64) -> Option<(&CollectionMeta, &ShardMeta)> {
        let (cid, shard) = location_of(group);
        let cm = self.collection_by_id(cid)?;
        Some((cm, cm.shard(shard)?))
    }

    /// The nodes holding the replicas of shard group `group`, preferred leader first.
    pub fn replicas_of(&self, group: u64) -> Option<&[NodeId]> {
        self.shard_of_group(group)
            .map(|(_, s)| s.replicas.as_slice())
    }

    /// The node that should lead shard group `group`: the first of its placement.
    pub fn preferred_leader(&self, group: u64) -> Option<NodeId> {
        self.replicas_of(group)?.first().copied()
    }

    /// The nodes that take new replicas, in id order.
    pub fn active_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Active)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The id the next collection will get.
    pub fn peek_collection_id(&self) -> u64 {
        self.next_collection_id.max(1)
    }

    /// Records the members of a committed membership of the metadata group: a member
    /// the state does not know yet becomes an active node; a known one keeps its
    /// state and takes the address the membership gives.
    pub fn observe_members<'a>(&mut self, members: impl IntoIterator<Item = (NodeId, &'a str)>) {
        for (id, addr) in members {
            self.nodes
                .entry(id)
                .and_modify(|n| addr.clone_into(&mut n.addr))
                .or_insert_with(|| NodeMeta {
                    addr: addr.to_string(),
                    state: NodeState::Active,
                });
        }
    }

    /// Applies one command. A rejected command leaves the state unchanged and returns
    /// why (the same on every replica).
    pub fn apply(&mut self, cmd: MetaCommand) -> Result<(), MetaError> {
        match cmd {
            MetaCommand::CreateCollection { config, placement } => {
                self.check_new_collection(&config, &placement)?;
                let id = self.peek_collection_id();
                self.next_collection_id = id + 1;
                let shards = HashRange::even(config.shard_count)
                    .into_iter()
                    .zip(placement)
                    .enumerate()
                    .map(|(s, (range, replicas))| ShardMeta {
                        id: s as u32,
                        range,
                        replicas,
                    })
                    .collect();
                self.collections
                    .insert(config.name.clone(), CollectionMeta { id, config, shards });
                Ok(())
            }
            MetaCommand::DeleteCollection(name) => match self.collections.remove(&name) {
                Some(_) => Ok(()),
                None => Err(MetaError::NoSuchCollection(name)),
            },
        }
    }

    fn check_new_collection(
        &self,
        config: &CollectionConfig,
        placement: &[Vec<NodeId>],
    ) -> Result<(), MetaError> {
        if self.collections.contains_key(&config.name) {
            return Err(MetaError::CollectionExists(config.name.clone()));
        }
        let active = self.active_nodes();
        if config.replication_factor as usize > active.len() {
            return Err(MetaError::TooFewNodes {
                replicas: config.replication_factor,
                nodes: active.len(),
            });
        }
        if placement.len() != config.shard_count as usize {
            return Err(MetaError::StalePlacement {
                shard: placement.len().min(config.shard_count as usize) as u32,
            });
        }
        for (s, replicas) in placement.iter().enumerate() {
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if replicas.len() != config.replication_factor as usize
                || distinct.len() != replicas.len()
                || !replicas.iter().all(|n| active.contains(n))
            {
                // The proposer placed against a view of the nodes that changed since.
                return Err(MetaError::StalePlacement { shard: s as u32 });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(name: &str, shards: u32, rf: u32) -> CollectionConfig {
        CollectionConfig {
            name: name.into(),
            dim: 2,
            metric: shoal_core::Metric::L2,
            shard_count: shards,
            replication_factor: rf,
            hnsw: Default::default(),
        }
    }

    fn two_nodes() -> ClusterState {
        let mut s = ClusterState::default();
        s.observe_members([(1, "a:1"), (2, "b:1")]);
        s
    }

    proptest! {
        #[test]
        fn even_ranges_route_like_shard_of(n in 1u32..200, ids in prop::collection::vec(any::<u64>(), 1..50)) {
            let ranges = HashRange::even(n);
            prop_assert_eq!(ranges.first().unwrap().first, 0);
            prop_assert_eq!(ranges.last().unwrap().last, u64::MAX);
            for w in ranges.windows(2) {
                prop_assert_eq!(w[0].last.wrapping_add(1), w[1].first);
            }
            let cm = CollectionMeta {
                id: 1,
                config: config("c", n, 1),
                shards: ranges.iter().enumerate().map(|(s, r)| ShardMeta { id: s as u32, range: *r, replicas: vec![1] }).collect(),
            };
            for id in ids {
                let id = PointId::Num(id);
                prop_assert_eq!(cm.shard_for(&id).id, routing::shard_of(&id, n));
            }
        }
    }

    #[test]
    fn commands_are_decided_by_the_state_alone() {
        let mut s = two_nodes();
        let create =
            |name: &str, rf: u32, placement: Vec<Vec<u64>>| MetaCommand::CreateCollection {
                config: config(name, placement.len() as u32, rf),
                placement,
            };
        assert_eq!(
            s.apply(create("c", 2, vec![vec![1, 2], vec![2, 1]])),
            Ok(())
        );
        let cm = s.collections["c"].clone();
        for shard in &cm.shards {
            let group = group_of(cm.id, shard.id);
            assert_eq!(location_of(group), (cm.id, shard.id));
            assert_eq!(s.replicas_of(group), Some(shard.replicas.as_slice()));
            assert_eq!(s.preferred_leader(group), shard.replicas.first().copied());
        }
        assert_eq!(s.preferred_leader(group_of(cm.id, 2)), None, "no shard 2");
        assert_eq!(s.preferred_leader(group_of(cm.id + 1, 0)), None);
        assert!(matches!(
            s.apply(create("c", 2, vec![vec![1, 2]])),
            Err(MetaError::CollectionExists(_))
        ));
        assert!(matches!(
            s.apply(create("d", 3, vec![vec![1, 2, 3]])),
            Err(MetaError::TooFewNodes {
                replicas: 3,
                nodes: 2
            })
        ));
        // A placement on an unknown node, or twice on one node, is refused.
        assert!(matches!(
            s.apply(create("d", 2, vec![vec![1, 3]])),
            Err(MetaError::StalePlacement { shard: 0 })
        ));
        assert!(matches!(
            s.apply(create("d", 2, vec![vec![1, 1]])),
            Err(MetaError::StalePlacement { shard: 0 })
        ));
        assert_eq!(s.apply(MetaCommand::DeleteCollection("c".into())), Ok(()));
        assert_eq!(s.apply(create("c", 1, vec![vec![2]])), Ok(()));
        assert_eq!(s.collections["c"].id, 2, "ids are never reused");
        assert!(matches!(
            s.apply(MetaCommand::DeleteCollection("x".into())),
            Err(MetaError::NoSuchCollection(_))
        ));
    }

    #[test]
    fn members_are_added_never_dropped() {
        let mut s = two_nodes();
        s.nodes.get_mut(&2).unwrap().state = NodeState::Draining;
        s.observe_members([(2, "b:2"), (3, "c:1")]);
        assert_eq!(s.nodes.len(), 3);
        assert_eq!(s.nodes[&2].addr, "b:2");
        assert_eq!(s.nodes[&2].state, NodeState::Draining);
        assert_eq!(s.active_nodes(), vec![1, 3]);
    }
}
