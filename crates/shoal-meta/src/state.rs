//! The metadata itself: nodes, collections, shards and operations in flight, with the
//! read-only questions the cluster layer asks of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_core::{CollectionConfig, PointId, routing};

use crate::{HashRange, NodeId, group_of, location_of};

/// Whether a node takes new replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Serves and takes replicas.
    Active,
    /// Being emptied (`shoal cluster drain`): keeps serving what it holds while its
    /// replicas move away, takes no new ones, and leaves the cluster once empty.
    Draining,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
        })
    }
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Its internal (Raft and node-to-node) address, `host:port`.
    pub addr: String,
    pub state: NodeState,
    /// The identity a node that joined by `--join` keeps in its data directory, so a
    /// repeated join of the same node gets the same id. Empty for nodes of the
    /// initial `--peers` list.
    pub uuid: String,
}

/// How a shard came to be, which decides who may initialize its Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Created with its collection: its first replicas initialize its group.
    Created,
    /// Split off shard `parent`: its group starts from the parent's state on each of
    /// the parent's replicas and is never initialized.
    Split { parent: u32 },
}

/// One shard of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Unique within the collection, never reused; names the shard's Raft group.
    pub id: u32,
    /// The id hashes whose points this shard holds.
    pub range: HashRange,
    /// The nodes holding a voting replica, preferred leader first.
    pub replicas: Vec<NodeId>,
    pub origin: Origin,
    /// How many replica moves have finished on this shard. A shard group may be
    /// initialized only while this is 0 and its origin is `Created`: after a move, a
    /// replica that lost its Raft state must catch up from the others, never start
    /// a group of its own.
    pub epoch: u64,
}

impl ShardMeta {
    /// True if this node may initialize the shard's Raft group (see `epoch`).
    pub fn may_initialize(&self) -> bool {
        self.origin == Origin::Created && self.epoch == 0
    }
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
    /// The id the next shard (of a split) gets.
    pub next_shard_id: u32,
    /// Bumped whenever the shards' ranges change (a split): a request routed with an
    /// older version is routed again.
    pub routing_version: u64,
    /// Created by a restore that has not finished: hidden from clients (as if it did
    /// not exist, but its name is taken) until [`crate::MetaCommand::FinishRestore`].
    #[serde(default)]
    pub restoring: bool,
}

impl CollectionMeta {
    /// The shard holding `id`.
    pub fn shard_for(&self, id: &PointId) -> &ShardMeta {
        self.shard_for_hash(routing::id_hash(id))
    }

    /// The shard holding id hash `h`.
    pub fn shard_for_hash(&self, h: u64) -> &ShardMeta {
        // Shards are sorted by range and cover the space: the last one starting at
        // or before `h` holds it.
        let i = self.shards.partition_point(|s| s.range.first <= h);
        &self.shards[i.saturating_sub(1)]
    }

    /// The shard with id `shard`.
    pub fn shard(&self, shard: u32) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.id == shard)
    }

    pub(crate) fn shard_mut(&mut self, shard: u32) -> Option<&mut ShardMeta> {
        self.shards.iter_mut().find(|s| s.id == shard)
    }

    /// The Raft group of shard `shard`.
    pub fn group(&self, shard: u32) -> u64 {
        group_of(self.id, shard)
    }
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// Moves one replica of a shard from `from` to `to`. Without `from` it adds a
    /// replica (a replication factor raised, or restored); without `to` it removes
    /// one. Steps: `to` joins the shard's group as a learner and catches up, the
    /// group's voters change from `from` to `to` (joint consensus), then the state
    /// records the new replicas and `from` deletes its copy.
    Move {
        collection: u64,
        shard: u32,
        from: Option<NodeId>,
        to: Option<NodeId>,
    },
    /// Splits a shard's range in two at `at` (the first hash of the upper half):
    /// the parent's group is sealed (it takes no more writes), every replica of the
    /// parent builds both children from its own sealed copy, then the state replaces
    /// the parent by the children (on the parent's nodes) and bumps the routing
    /// version. If the collection then has fewer shards than `target`, finishing
    /// starts the next splits (a `shoal collection reshard`).
    Split {
        collection: u64,
        shard: u32,
        at: u64,
        children: [u32; 2],
        target: u32,
    },
}

/// An operation in flight. See the crate doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: u64,
    pub kind: OpKind,
    /// The metadata log index it started at.
    pub started: u64,
}

impl Operation {
    /// The collection and shard it works on.
    pub fn shard(&self) -> (u64, u32) {
        match self.kind {
            OpKind::Move {
                collection, shard, ..
            }
            | OpKind::Split {
                collection, shard, ..
            } => (collection, shard),
        }
    }

    /// The nodes it copies data from or to (a throttle counts these).
    pub fn nodes(&self) -> Vec<NodeId> {
        match self.kind {
            OpKind::Move { from, to, .. } => from.into_iter().chain(to).collect(),
            OpKind::Split { .. } => Vec::new(),
        }
    }
}

/// The cluster's metadata, as of some applied index of the metadata group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Every node of the cluster, by id.
    pub nodes: BTreeMap<NodeId, NodeMeta>,
    /// Ids of nodes that left the cluster; never given out again.
    pub removed: BTreeSet<NodeId>,
    /// Every collection, by name.
    pub collections: BTreeMap<String, CollectionMeta>,
    /// Operations in flight, by id.
    pub operations: BTreeMap<u64, Operation>,
    /// The id the next collection gets.
    pub next_collection_id: u64,
    /// The id the next operation gets.
    pub next_operation_id: u64,
    /// Log index of the last entry applied (0 before any).
    pub applied: u64,
    /// The removed nodes that were drained (the others were replaced while down): a
    /// removed node that missed its own drain (its metadata replica behind) learns
    /// from a peer which it was.
    #[serde(default)]
    pub drained: BTreeSet<NodeId>,
}

impl ClusterState {
    /// The collection with id `id`.
    pub fn collection_by_id(&self, id: u64) -> Option<&CollectionMeta> {
        self.collections.values().find(|c| c.id == id)
    }

    pub(crate) fn collection_by_id_mut(&mut self, id: u64) -> Option<&mut CollectionMeta> {
        self.collections.values_mut().find(|c| c.id == id)
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

    /// The id the next node to join will get.
    pub fn next_node_id(&self) -> NodeId {
        let known = self.nodes.keys().chain(&self.removed).max().copied();
        known.unwrap_or(0) + 1
    }

    /// The node that joined with `uuid`, if any.
    pub fn node_by_uuid(&self, uuid: &str) -> Option<NodeId> {
        if uuid.is_empty() {
            return None;
        }
        self.nodes
            .iter()
            .find(|(_, n)| n.uuid == uuid)
            .map(|(id, _)| *id)
    }

    /// The operation working on shard `shard` of collection `collection`, if any.
    pub fn operation_on(&self, collection: u64, shard: u32) -> Option<&Operation> {
        self.operations
            .values()
            .find(|o| o.shard() == (collection, shard))
    }

    /// The groups of the children of every split in flight (built by the parent's
    /// replicas before the metadata lists them).
    pub fn splitting_children(&self) -> Vec<u64> {
        self.operations
            .values()
            .filter_map(|o| match o.kind {
                OpKind::Split {
                    collection,
                    children,
                    ..
                } => Some(children.map(|c| group_of(collection, c))),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// True if shard group `group` belonged to a collection that still exists and
    /// no longer has that shard (it was split): a request routed to it must be
    /// routed again. False for groups this state does not know yet.
    pub fn is_retired(&self, group: u64) -> bool {
        let (collection, shard) = location_of(group);
        self.collection_by_id(collection)
            .is_some_and(|cm| shard < cm.next_shard_id && cm.shard(shard).is_none())
            && !self.splitting_children().contains(&group)
    }

    /// The shard groups `node` should host: those it holds a replica of, and those
    /// a move in flight brings to it. Each with its collection and shard.
    pub fn hosted_by(&self, node: NodeId) -> Vec<(&CollectionMeta, &ShardMeta)> {
        let mut out = Vec::new();
        for cm in self.collections.values() {
            for shard in &cm.shards {
                let incoming = matches!(
                    self.operation_on(cm.id, shard.id).map(|o| &o.kind),
                    Some(OpKind::Move { to: Some(t), .. }) if *t == node
                );
                if shard.replicas.contains(&node) || incoming {
                    out.push((cm, shard));
                }
            }
        }
        out
    }

    /// Replicas per node (every node listed, empty ones with 0), moves in flight
    /// counted at their target.
    pub fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for (_, shard) in self
            .collections
            .values()
            .flat_map(|cm| cm.shards.iter().map(move |s| (cm, s)))
        {
            for n in &shard.replicas {
                *counts.entry(*n).or_default() += 1;
            }
        }
        for op in self.operations.values() {
            if let OpKind::Move { to: Some(t), .. } = op.kind {
                *counts.entry(t).or_default() += 1;
            }
        }
        counts
    }

    /// True if `node` holds no replica and no operation involves it.
    pub fn is_empty_node(&self, node: NodeId) -> bool {
        self.hosted_by(node).is_empty()
            && !self.operations.values().any(|o| o.nodes().contains(&node))
    }

    /// Records the members of a committed membership of the metadata group: a member
    /// the state does not know yet (and that never left) becomes an active node; a
    /// known one keeps its state and takes the address the membership gives.
    pub fn observe_members<'a>(&mut self, members: impl IntoIterator<Item = (NodeId, &'a str)>) {
        for (id, addr) in members {
            if self.removed.contains(&id) {
                continue;
            }
            self.nodes
                .entry(id)
                .and_modify(|n| addr.clone_into(&mut n.addr))
                .or_insert_with(|| NodeMeta {
                    addr: addr.to_string(),
                    state: NodeState::Active,
                    uuid: String::new(),
                });
        }
    }
}
