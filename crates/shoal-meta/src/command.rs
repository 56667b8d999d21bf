//! Commands that change the metadata, and [`ClusterState::apply`]: the one function
//! that applies them, deterministically.

use serde::{Deserialize, Serialize};
use shoal_core::CollectionConfig;

use crate::state::{ClusterState, CollectionMeta, NodeMeta, NodeState, OpKind, Operation, Origin};
use crate::{HashRange, MAX_SHARD_ID, MetaError, NodeId, ShardMeta};

/// A change to the metadata, as replicated in the metadata group's log.
///
/// Configurations are validated (`shoal_core::validate`) and placements decided (the
/// cluster layer's policies) before they are proposed; [`ClusterState::apply`] still
/// refuses, identically on every replica, what the state forbids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates a collection with the given replicas per shard (shard `s` of
    /// `placement[s]`, preferred leader first); the state assigns its id.
    CreateCollection {
        config: CollectionConfig,
        placement: Vec<Vec<NodeId>>,
    },
    /// Deletes the collection with this name, and abandons its operations.
    DeleteCollection(String),
    /// A node joins the cluster at `addr`: it gets the next node id, or the id it got
    /// when it joined before with the same `uuid`.
    AddNode { addr: String, uuid: String },
    /// Marks a node draining (or active again).
    SetNodeState { node: NodeId, state: NodeState },
    /// Removes a node that holds no replica and takes part in no operation.
    RemoveNode(NodeId),
    /// Changes how many replicas each shard of a collection should have; the
    /// cluster's scheduler then adds or removes replicas one at a time.
    SetReplicationFactor {
        collection: String,
        replication_factor: u32,
    },
    /// Makes `node`, which holds a replica of the shard, its preferred leader.
    SetPreferredLeader {
        collection: u64,
        shard: u32,
        node: NodeId,
    },
    /// Starts moving (adding, removing) one replica of a shard.
    StartMove {
        collection: u64,
        shard: u32,
        from: Option<NodeId>,
        to: Option<NodeId>,
    },
    /// Starts splitting a shard at hash `at` (the first hash of the upper half).
    StartSplit {
        collection: u64,
        shard: u32,
        at: u64,
    },
    /// Records that an operation completed (see [`OpKind`] for what each does).
    FinishOperation(u64),
    /// Forgets an operation that did not complete and left nothing to undo.
    AbandonOperation(u64),
    /// Splits shards of a collection until it has `shards` shards: the widest shards
    /// first, each at the middle of its range, splits of different shards at once.
    /// Only growing is supported (merging shards is not).
    Reshard { collection: String, shards: u32 },
    /// Creates a collection like `CreateCollection`, hidden from clients until
    /// `FinishRestore` (a restore fills it first).
    RestoreCollection {
        config: CollectionConfig,
        placement: Vec<Vec<NodeId>>,
    },
    /// Makes a restored collection visible.
    FinishRestore(String),
}

impl ClusterState {
    /// Applies one command. A refused command leaves the state unchanged and returns
    /// why (the same on every replica).
    pub fn apply(&mut self, cmd: MetaCommand) -> Result<(), MetaError> {
        match cmd {
            MetaCommand::RestoreCollection { config, placement } => {
                let name = config.name.clone();
                self.apply(MetaCommand::CreateCollection { config, placement })?;
                if let Some(c) = self.collections.get_mut(&name) {
                    c.restoring = true;
                }
                Ok(())
            }
            MetaCommand::FinishRestore(name) => {
                let c = self
                    .collections
                    .get_mut(&name)
                    .ok_or(MetaError::NoSuchCollection(name))?;
                c.restoring = false;
                Ok(())
            }
            MetaCommand::CreateCollection { config, placement } => {
                self.check_new_collection(&config, &placement)?;
                let id = self.peek_collection_id();
                self.next_collection_id = id + 1;
                let shards: Vec<ShardMeta> = HashRange::even(config.shard_count)
                    .into_iter()
                    .zip(placement)
                    .enumerate()
                    .map(|(s, (range, replicas))| ShardMeta {
                        id: s as u32,
                        range,
                        replicas,
                        origin: Origin::Created,
                        epoch: 0,
                    })
                    .collect();
                let next_shard_id = shards.len() as u32;
                self.collections.insert(
                    config.name.clone(),
                    CollectionMeta {
                        id,
                        config,
                        shards,
                        next_shard_id,
                        routing_version: 0,
                        restoring: false,
                    },
                );
                Ok(())
            }
            MetaCommand::DeleteCollection(name) => {
                let cm = self
                    .collections
                    .remove(&name)
                    .ok_or(MetaError::NoSuchCollection(name))?;
                self.operations.retain(|_, o| o.shard().0 != cm.id);
                Ok(())
            }
            MetaCommand::AddNode { addr, uuid } => {
                if addr.is_empty() {
                    return Err(MetaError::BadAddress(addr));
                }
                if let Some(id) = self.node_by_uuid(&uuid) {
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.addr = addr;
                    }
                    return Ok(());
                }
                let id = self.next_node_id();
                self.nodes.insert(
                    id,
                    NodeMeta {
                        addr,
                        state: NodeState::Active,
                        uuid,
                    },
                );
                Ok(())
            }
            MetaCommand::SetNodeState { node, state } => {
                let n = self
                    .nodes
                    .get_mut(&node)
                    .ok_or(MetaError::NoSuchNode(node))?;
                n.state = state;
                Ok(())
            }
            MetaCommand::RemoveNode(node) => {
                if !self.nodes.contains_key(&node) {
                    return Err(MetaError::NoSuchNode(node));
                }
                if !self.is_empty_node(node) {
                    return Err(MetaError::NodeNotEmpty(node));
                }
                if let Some(n) = self.nodes.remove(&node)
                    && n.state == NodeState::Draining
                {
                    self.drained.insert(node);
                }
                self.removed.insert(node);
                Ok(())
            }
            MetaCommand::SetReplicationFactor {
                collection,
                replication_factor,
            } => {
                let active = self.active_nodes().len();
                let cm = self
                    .collections
                    .get_mut(&collection)
                    .ok_or(MetaError::NoSuchCollection(collection))?;
                if replication_factor == 0
                    || replication_factor > CollectionConfig::MAX_REPLICATION_FACTOR
                {
                    return Err(MetaError::BadReplicationFactor(replication_factor));
                }
                if replication_factor as usize > active {
                    return Err(MetaError::TooFewNodes {
                        replicas: replication_factor,
                        nodes: active,
                    });
                }
                cm.config.replication_factor = replication_factor;
                Ok(())
            }
            MetaCommand::SetPreferredLeader {
                collection,
                shard,
                node,
            } => {
                let cm = self
                    .collection_by_id_mut(collection)
                    .ok_or(MetaError::NoSuchCollectionId(collection))?;
                let s = cm
                    .shard_mut(shard)
                    .ok_or(MetaError::NoSuchShard { collection, shard })?;
                let pos = s
                    .replicas
                    .iter()
                    .position(|n| *n == node)
                    .ok_or(MetaError::NotAReplica { shard, node })?;
                let n = s.replicas.remove(pos);
                s.replicas.insert(0, n);
                Ok(())
            }
            MetaCommand::StartMove {
                collection,
                shard,
                from,
                to,
            } => {
                self.check_move(collection, shard, from, to)?;
                self.start(OpKind::Move {
                    collection,
                    shard,
                    from,
                    to,
                });
                Ok(())
            }
            MetaCommand::StartSplit {
                collection,
                shard,
                at,
            } => self.start_split(collection, shard, at, 0),
            MetaCommand::Reshard { collection, shards } => {
                let cm = self
                    .collections
                    .get(&collection)
                    .ok_or_else(|| MetaError::NoSuchCollection(collection.clone()))?;
                let (id, now) = (cm.id, cm.shards.len() as u32);
                let first_shard = cm.shards.first().map(|s| s.id).unwrap_or(0);
                if shards <= now || shards > CollectionConfig::MAX_SHARD_COUNT {
                    return Err(MetaError::BadShardCount {
                        shards,
                        now,
                        max: CollectionConfig::MAX_SHARD_COUNT,
                    });
                }
                if self
                    .operations
                    .values()
                    .any(|o| matches!(o.kind, OpKind::Split { collection: c, .. } if c == id))
                {
                    return Err(MetaError::Resharding(collection));
                }
                if self.continue_reshard(id, shards) == 0 {
                    // Every shard is busy (moving): nothing was started.
                    return Err(MetaError::Busy { shard: first_shard });
                }
                Ok(())
            }
            MetaCommand::FinishOperation(id) => {
                let op = self
                    .operations
                    .remove(&id)
                    .ok_or(MetaError::NoSuchOperation(id))?;
                // Finishing may start operations (the next splits of a reshard), which
                // must not count this one as in flight; a refusal changes nothing.
                self.finish(&op).inspect_err(|_| {
                    self.operations.insert(id, op.clone());
                })
            }
            MetaCommand::AbandonOperation(id) => match self.operations.remove(&id) {
                Some(_) => Ok(()),
                None => Err(MetaError::NoSuchOperation(id)),
            },
        }
    }

    fn start_split(
        &mut self,
        collection: u64,
        shard: u32,
        at: u64,
        target: u32,
    ) -> Result<(), MetaError> {
        if self.operation_on(collection, shard).is_some() {
            return Err(MetaError::Busy { shard });
        }
        let cm = self
            .collection_by_id_mut(collection)
            .ok_or(MetaError::NoSuchCollectionId(collection))?;
        let s = cm
            .shard(shard)
            .ok_or(MetaError::NoSuchShard { collection, shard })?;
        if at <= s.range.first || at > s.range.last {
            return Err(MetaError::BadSplit { shard, at });
        }
        let first = cm.next_shard_id;
        if first >= MAX_SHARD_ID {
            return Err(MetaError::TooManyShards(collection));
        }
        cm.next_shard_id = first + 2;
        self.start(OpKind::Split {
            collection,
            shard,
            at,
            children: [first, first + 1],
            target,
        });
        Ok(())
    }

    /// Starts splits of collection `id` toward `target` shards, counting splits in
    /// flight: the widest idle shards first, each at its middle. Returns how many it
    /// started.
    fn continue_reshard(&mut self, id: u64, target: u32) -> u32 {
        let Some(cm) = self.collection_by_id(id) else {
            return 0;
        };
        let splitting = self
            .operations
            .values()
            .filter(|o| matches!(o.kind, OpKind::Split { collection: c, .. } if c == id))
            .count() as u32;
        let wanted = target.saturating_sub(cm.shards.len() as u32 + splitting);
        let mut idle: Vec<(u64, u64, u32)> = cm
            .shards
            .iter()
            .filter(|s| s.range.first < s.range.last && self.operation_on(id, s.id).is_none())
            .map(|s| (s.range.span(), s.range.first, s.id))
            .collect();
        // Widest first; equal spans in hash order.
        idle.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut started = 0;
        for (_, _, shard) in idle.into_iter().take(wanted as usize) {
            let at = self
                .collection_by_id(id)
                .and_then(|c| c.shard(shard))
                .and_then(|s| s.range.halves())
                .map(|(_, upper)| upper.first);
            if let Some(at) = at
                && self.start_split(id, shard, at, target).is_ok()
            {
                started += 1;
            }
        }
        started
    }

    fn start(&mut self, kind: OpKind) {
        let id = self.next_operation_id.max(1);
        self.next_operation_id = id + 1;
        let started = self.applied;
        self.operations.insert(id, Operation { id, kind, started });
    }

    fn check_move(
        &self,
        collection: u64,
        shard: u32,
        from: Option<NodeId>,
        to: Option<NodeId>,
    ) -> Result<(), MetaError> {
        let cm = self
            .collection_by_id(collection)
            .ok_or(MetaError::NoSuchCollectionId(collection))?;
        let s = cm
            .shard(shard)
            .ok_or(MetaError::NoSuchShard { collection, shard })?;
        if self.operation_on(collection, shard).is_some() {
            return Err(MetaError::Busy { shard });
        }
        if from.is_none() && to.is_none() || from == to {
            return Err(MetaError::BadMove { shard });
        }
        if let Some(f) = from
            && !s.replicas.contains(&f)
        {
            return Err(MetaError::NotAReplica { shard, node: f });
        }
        match to {
            Some(t) => {
                let node = self.nodes.get(&t).ok_or(MetaError::NoSuchNode(t))?;
                if node.state != NodeState::Active {
                    return Err(MetaError::NodeNotActive(t));
                }
                if s.replicas.contains(&t) {
                    return Err(MetaError::AlreadyAReplica { shard, node: t });
                }
            }
            None if s.replicas.len() <= 1 => return Err(MetaError::LastReplica { shard }),
            None => {}
        }
        Ok(())
    }

    fn finish(&mut self, op: &Operation) -> Result<(), MetaError> {
        match op.kind {
            OpKind::Move {
                collection,
                shard,
                from,
                to,
            } => {
                let cm = self
                    .collection_by_id_mut(collection)
                    .ok_or(MetaError::NoSuchCollectionId(collection))?;
                let s = cm
                    .shard_mut(shard)
                    .ok_or(MetaError::NoSuchShard { collection, shard })?;
                let at = from.and_then(|f| s.replicas.iter().position(|n| *n == f));
                match (at, to) {
                    (Some(i), Some(t)) => s.replicas[i] = t,
                    (Some(i), None) => {
                        s.replicas.remove(i);
                    }
                    (None, Some(t)) => s.replicas.push(t),
                    (None, None) => {}
                }
                s.epoch += 1;
                Ok(())
            }
            OpKind::Split {
                collection,
                shard,
                at,
                children,
                target,
            } => {
                let cm = self
                    .collection_by_id_mut(collection)
                    .ok_or(MetaError::NoSuchCollectionId(collection))?;
                let pos = cm
                    .shards
                    .iter()
                    .position(|s| s.id == shard)
                    .ok_or(MetaError::NoSuchShard { collection, shard })?;
                let parent = cm.shards.remove(pos);
                let halves = [
                    HashRange {
                        first: parent.range.first,
                        last: at - 1,
                    },
                    HashRange {
                        first: at,
                        last: parent.range.last,
                    },
                ];
                for (i, (id, range)) in children.into_iter().zip(halves).enumerate() {
                    cm.shards.insert(
                        pos + i,
                        ShardMeta {
                            id,
                            range,
                            replicas: parent.replicas.clone(),
                            origin: Origin::Split { parent: shard },
                            epoch: 0,
                        },
                    );
                }
                cm.config.shard_count = cm.shards.len() as u32;
                cm.routing_version += 1;
                self.continue_reshard(collection, target);
                Ok(())
            }
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
        // Validated before it was proposed; checked again against fixed bounds (not a
        // node's flags) so that a forged or buggy entry cannot create a collection no
        // shard can serve (a shard count of 0, a dimension of 0).
        let bounds = shoal_core::Limits {
            max_dim: shoal_core::vector::MAX_DIM,
            ..shoal_core::Limits::default()
        };
        if let Err(e) = shoal_core::validate::collection_config(config, &bounds) {
            let (field, reason) = match e {
                shoal_core::Error::InvalidArgument { field, reason }
                | shoal_core::Error::ResourceExhausted { field, reason } => (field, reason),
                other => ("config".to_string(), other.to_string()),
            };
            return Err(MetaError::BadConfig { field, reason });
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
    use crate::{group_of, location_of};
    use proptest::prelude::*;
    use shoal_core::{PointId, routing};

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

    fn nodes(n: u64) -> ClusterState {
        let mut s = ClusterState::default();
        let addrs: Vec<(u64, String)> = (1..=n).map(|i| (i, format!("n{i}:1"))).collect();
        s.observe_members(addrs.iter().map(|(i, a)| (*i, a.as_str())));
        s
    }

    fn create(name: &str, rf: u32, placement: Vec<Vec<u64>>) -> MetaCommand {
        MetaCommand::CreateCollection {
            config: config(name, placement.len() as u32, rf),
            placement,
        }
    }

    #[test]
    fn an_impossible_collection_definition_is_refused_on_apply() {
        let mut s = nodes(1);
        let e = s.apply(create("c", 1, vec![])).unwrap_err();
        assert!(
            matches!(e, MetaError::BadConfig { ref field, .. } if field == "shard_count"),
            "{e}"
        );
        let mut zero_dim = create("d", 1, vec![vec![1]]);
        if let MetaCommand::CreateCollection { config, .. } = &mut zero_dim {
            config.dim = 0;
        }
        assert!(matches!(
            s.apply(zero_dim).unwrap_err(),
            MetaError::BadConfig { ref field, .. } if field == "dim"
        ));
        assert!(s.collections.is_empty());
        s.apply(create("c", 1, vec![vec![1]])).unwrap();
    }

    #[test]
    fn a_restored_collection_is_hidden_until_its_restore_finishes() {
        let mut s = nodes(2);
        s.apply(MetaCommand::RestoreCollection {
            config: config("r", 2, 1),
            placement: vec![vec![1], vec![2]],
        })
        .unwrap();
        assert!(s.collections["r"].restoring);
        assert_eq!(s.collections["r"].shards.len(), 2);
        // Its name is taken meanwhile.
        assert_eq!(
            s.apply(create("r", 1, vec![vec![1]])).unwrap_err(),
            MetaError::CollectionExists("r".into())
        );
        s.apply(MetaCommand::FinishRestore("r".into())).unwrap();
        assert!(!s.collections["r"].restoring);
        assert_eq!(
            s.apply(MetaCommand::FinishRestore("gone".into()))
                .unwrap_err(),
            MetaError::NoSuchCollection("gone".into())
        );
        // An ordinary create is visible at once.
        s.apply(create("c", 1, vec![vec![1]])).unwrap();
        assert!(!s.collections["c"].restoring);
    }

    proptest! {
        #[test]
        fn even_ranges_route_like_shard_of(n in 1u32..200, ids in prop::collection::vec(any::<u64>(), 1..50)) {
            let mut s = nodes(1);
            s.apply(create("c", 1, vec![vec![1]; n as usize])).unwrap();
            let cm = &s.collections["c"];
            prop_assert_eq!(cm.shards.first().unwrap().range.first, 0);
            prop_assert_eq!(cm.shards.last().unwrap().range.last, u64::MAX);
            for w in cm.shards.windows(2) {
                prop_assert_eq!(w[0].range.last.wrapping_add(1), w[1].range.first);
            }
            for id in ids {
                let id = PointId::Num(id);
                prop_assert_eq!(cm.shard_for(&id).id, routing::shard_of(&id, n));
            }
        }

        #[test]
        fn splits_keep_the_ranges_a_partition(cuts in prop::collection::vec(any::<u64>(), 1..12), ids in prop::collection::vec(any::<u64>(), 1..50)) {
            let mut s = nodes(1);
            s.apply(create("c", 1, vec![vec![1]; 2])).unwrap();
            let cid = s.collections["c"].id;
            for h in cuts {
                let shard = s.collections["c"].shard_for_hash(h).clone();
                let at = shard.range.first.saturating_add(1).max(h);
                if shard.range.first == shard.range.last || at > shard.range.last {
                    continue;
                }
                s.apply(MetaCommand::StartSplit { collection: cid, shard: shard.id, at }).unwrap();
                let op = *s.operations.keys().next().unwrap();
                s.apply(MetaCommand::FinishOperation(op)).unwrap();
            }
            let cm = &s.collections["c"];
            prop_assert_eq!(cm.config.shard_count as usize, cm.shards.len());
            prop_assert_eq!(cm.shards.first().unwrap().range.first, 0);
            prop_assert_eq!(cm.shards.last().unwrap().range.last, u64::MAX);
            for w in cm.shards.windows(2) {
                prop_assert_eq!(w[0].range.last + 1, w[1].range.first);
            }
            let mut ids_seen: Vec<u32> = cm.shards.iter().map(|s| s.id).collect();
            ids_seen.sort();
            ids_seen.dedup();
            prop_assert_eq!(ids_seen.len(), cm.shards.len(), "shard ids are unique");
            for id in ids {
                let h = routing::id_hash(&PointId::Num(id));
                prop_assert!(cm.shard_for(&PointId::Num(id)).range.contains(h));
            }
        }
    }

    #[test]
    fn collections_are_decided_by_the_state_alone() {
        let mut s = nodes(2);
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
            assert!(shard.may_initialize());
        }
        assert_eq!(s.preferred_leader(group_of(cm.id, 2)), None, "no shard 2");
        assert_eq!(s.preferred_leader(group_of(cm.id + 1, 0)), None);
        assert!(matches!(
            s.apply(create("c", 2, vec![vec![1, 2]])),
            Err(MetaError::CollectionExists(_))
        ));
        assert_eq!(
            s.apply(create("d", 3, vec![vec![1, 2, 3]])),
            Err(MetaError::TooFewNodes {
                replicas: 3,
                nodes: 2
            })
        );
        // A placement on an unknown node, or twice on one node, is refused.
        for bad in [vec![1, 3], vec![1, 1]] {
            assert_eq!(
                s.apply(create("d", 2, vec![bad])),
                Err(MetaError::StalePlacement { shard: 0 })
            );
        }
        assert_eq!(s.apply(MetaCommand::DeleteCollection("c".into())), Ok(()));
        assert_eq!(s.apply(create("c", 1, vec![vec![2]])), Ok(()));
        assert_eq!(s.collections["c"].id, 2, "ids are never reused");
        assert!(matches!(
            s.apply(MetaCommand::DeleteCollection("x".into())),
            Err(MetaError::NoSuchCollection(_))
        ));
    }

    #[test]
    fn members_are_added_never_dropped_and_removed_ids_never_return() {
        let mut s = nodes(2);
        s.apply(MetaCommand::SetNodeState {
            node: 2,
            state: NodeState::Draining,
        })
        .unwrap();
        s.observe_members([(2, "b:2"), (3, "c:1")]);
        assert_eq!(s.nodes.len(), 3);
        assert_eq!(s.nodes[&2].addr, "b:2");
        assert_eq!(s.nodes[&2].state, NodeState::Draining);
        assert_eq!(s.active_nodes(), vec![1, 3]);
        assert_eq!(s.apply(MetaCommand::RemoveNode(3)), Ok(()));
        s.observe_members([(3, "c:1")]);
        assert!(
            !s.nodes.contains_key(&3),
            "a removed node does not come back"
        );
        assert_eq!(s.next_node_id(), 4, "nor does its id");
        // Node 3 was not draining (replaced); node 2 was (drained).
        assert_eq!(s.apply(MetaCommand::RemoveNode(2)), Ok(()));
        assert_eq!(s.drained.iter().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.removed.len(), 2);
    }

    #[test]
    fn joining_twice_keeps_the_first_id() {
        let mut s = nodes(3);
        let add = |addr: &str, uuid: &str| MetaCommand::AddNode {
            addr: addr.into(),
            uuid: uuid.into(),
        };
        s.apply(add("d:1", "u-d")).unwrap();
        assert_eq!(s.node_by_uuid("u-d"), Some(4));
        s.apply(add("d:2", "u-d")).unwrap();
        assert_eq!(s.node_by_uuid("u-d"), Some(4));
        assert_eq!(s.nodes[&4].addr, "d:2");
        s.apply(add("e:1", "u-e")).unwrap();
        assert_eq!(s.node_by_uuid("u-e"), Some(5));
        assert_eq!(
            s.apply(add("", "u-f")),
            Err(MetaError::BadAddress(String::new()))
        );
    }

    #[test]
    fn a_move_replaces_one_replica_in_place_and_blocks_the_shard_meanwhile() {
        let mut s = nodes(4);
        s.apply(create("c", 3, vec![vec![1, 2, 3]])).unwrap();
        let cid = s.collections["c"].id;
        let mv = |from, to| MetaCommand::StartMove {
            collection: cid,
            shard: 0,
            from,
            to,
        };
        // Refused: to a holder, from a non-holder, to an unknown node, nothing at all.
        assert_eq!(
            s.apply(mv(Some(1), Some(2))),
            Err(MetaError::AlreadyAReplica { shard: 0, node: 2 })
        );
        assert_eq!(
            s.apply(mv(Some(4), Some(1))),
            Err(MetaError::NotAReplica { shard: 0, node: 4 })
        );
        assert_eq!(s.apply(mv(Some(1), Some(9))), Err(MetaError::NoSuchNode(9)));
        assert_eq!(
            s.apply(mv(None, None)),
            Err(MetaError::BadMove { shard: 0 })
        );
        // Moving the preferred leader's replica: the new node takes its place.
        s.apply(mv(Some(1), Some(4))).unwrap();
        let op = *s.operations.keys().next().unwrap();
        assert_eq!(
            s.apply(mv(Some(2), None)),
            Err(MetaError::Busy { shard: 0 })
        );
        let hosted: Vec<u32> = s.hosted_by(4).iter().map(|(_, sh)| sh.id).collect();
        assert_eq!(
            hosted,
            vec![0],
            "the target hosts the shard while it catches up"
        );
        assert_eq!(s.replica_counts()[&4], 1);
        assert!(
            !s.is_empty_node(1),
            "the source is busy until the move ends"
        );
        s.apply(MetaCommand::FinishOperation(op)).unwrap();
        let shard = &s.collections["c"].shards[0];
        assert_eq!(shard.replicas, vec![4, 2, 3]);
        assert_eq!(shard.epoch, 1);
        assert!(
            !shard.may_initialize(),
            "after a move nobody initializes the group"
        );
        assert!(s.is_empty_node(1));
        assert_eq!(
            s.apply(MetaCommand::RemoveNode(2)),
            Err(MetaError::NodeNotEmpty(2))
        );
        assert_eq!(s.apply(MetaCommand::RemoveNode(1)), Ok(()));
        // Removing a replica, never the last.
        s.apply(mv(Some(2), None)).unwrap();
        let op = *s.operations.keys().next().unwrap();
        s.apply(MetaCommand::FinishOperation(op)).unwrap();
        s.apply(mv(Some(3), None)).unwrap();
        let op = *s.operations.keys().next().unwrap();
        s.apply(MetaCommand::FinishOperation(op)).unwrap();
        assert_eq!(s.collections["c"].shards[0].replicas, vec![4]);
        assert_eq!(
            s.apply(mv(Some(4), None)),
            Err(MetaError::LastReplica { shard: 0 })
        );
        // Abandoned: nothing changes but the operation is gone.
        s.apply(mv(None, Some(2))).unwrap();
        let op = *s.operations.keys().next().unwrap();
        s.apply(MetaCommand::AbandonOperation(op)).unwrap();
        assert!(s.operations.is_empty());
        assert_eq!(s.collections["c"].shards[0].replicas, vec![4]);
    }

    #[test]
    fn a_split_replaces_the_parent_by_two_children_on_its_replicas() {
        let mut s = nodes(3);
        s.apply(create("c", 2, vec![vec![1, 2], vec![2, 3]]))
            .unwrap();
        let cid = s.collections["c"].id;
        let parent = s.collections["c"].shards[1].clone();
        let at = parent.range.halves().unwrap().1.first;
        assert_eq!(
            s.apply(MetaCommand::StartSplit {
                collection: cid,
                shard: 1,
                at: parent.range.first
            }),
            Err(MetaError::BadSplit {
                shard: 1,
                at: parent.range.first
            })
        );
        s.apply(MetaCommand::StartSplit {
            collection: cid,
            shard: 1,
            at,
        })
        .unwrap();
        let op = s.operations.values().next().unwrap().clone();
        assert_eq!(
            op.kind,
            OpKind::Split {
                collection: cid,
                shard: 1,
                at,
                children: [2, 3],
                target: 0,
            }
        );
        s.apply(MetaCommand::FinishOperation(op.id)).unwrap();
        let cm = &s.collections["c"];
        assert_eq!(cm.config.shard_count, 3);
        assert_eq!(cm.routing_version, 1);
        let ids: Vec<u32> = cm.shards.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![0, 2, 3]);
        for child in &cm.shards[1..] {
            assert_eq!(child.replicas, parent.replicas);
            assert_eq!(child.origin, Origin::Split { parent: 1 });
            assert!(!child.may_initialize());
        }
        assert_eq!(cm.shards[1].range.first, parent.range.first);
        assert_eq!(cm.shards[2].range.last, parent.range.last);
    }

    #[test]
    fn reshard_splits_the_widest_shards_until_the_target() {
        let mut s = nodes(3);
        s.apply(create("c", 3, vec![vec![1, 2, 3]])).unwrap();
        let reshard = |n| MetaCommand::Reshard {
            collection: "c".into(),
            shards: n,
        };
        assert!(matches!(
            s.apply(reshard(1)),
            Err(MetaError::BadShardCount {
                shards: 1,
                now: 1,
                ..
            })
        ));
        assert!(matches!(
            s.apply(reshard(CollectionConfig::MAX_SHARD_COUNT + 1)),
            Err(MetaError::BadShardCount { .. })
        ));
        s.apply(reshard(5)).unwrap();
        assert_eq!(s.apply(reshard(6)), Err(MetaError::Resharding("c".into())));
        // 1 -> 2 -> 4 -> 5: each finished split starts the next ones at once.
        let mut rounds = Vec::new();
        while !s.operations.is_empty() {
            let ops: Vec<u64> = s.operations.keys().copied().collect();
            rounds.push(ops.len());
            for id in ops {
                s.apply(MetaCommand::FinishOperation(id)).unwrap();
            }
        }
        assert_eq!(rounds, vec![1, 2, 1]);
        let cm = &s.collections["c"];
        assert_eq!(cm.shards.len(), 5);
        assert_eq!(cm.config.shard_count, 5);
        assert_eq!(cm.routing_version, 4);
        assert_eq!(cm.shards[0].range.first, 0);
        assert_eq!(cm.shards[4].range.last, u64::MAX);
        for w in cm.shards.windows(2) {
            assert_eq!(w[0].range.last + 1, w[1].range.first);
        }
        for sm in &cm.shards {
            assert_eq!(sm.replicas, vec![1, 2, 3]);
            assert!(matches!(sm.origin, Origin::Split { .. }));
        }
    }

    #[test]
    fn replication_factor_and_preferred_leader() {
        let mut s = nodes(3);
        s.apply(create("c", 2, vec![vec![1, 2]])).unwrap();
        let cid = s.collections["c"].id;
        let set_rf = |rf| MetaCommand::SetReplicationFactor {
            collection: "c".into(),
            replication_factor: rf,
        };
        assert_eq!(s.apply(set_rf(3)), Ok(()));
        assert_eq!(s.collections["c"].config.replication_factor, 3);
        assert_eq!(
            s.apply(set_rf(4)),
            Err(MetaError::TooFewNodes {
                replicas: 4,
                nodes: 3
            })
        );
        assert_eq!(s.apply(set_rf(0)), Err(MetaError::BadReplicationFactor(0)));
        s.apply(MetaCommand::SetPreferredLeader {
            collection: cid,
            shard: 0,
            node: 2,
        })
        .unwrap();
        assert_eq!(s.collections["c"].shards[0].replicas, vec![2, 1]);
        assert_eq!(
            s.apply(MetaCommand::SetPreferredLeader {
                collection: cid,
                shard: 0,
                node: 3
            }),
            Err(MetaError::NotAReplica { shard: 0, node: 3 })
        );
    }
}
