//! The scheduler: compares the placement with its goals and plans the operations
//! that move it there (in the manner of TiKV's placement driver and CockroachDB's
//! allocator). Pure: it decides from the metadata and from what the operator
//! observed of the nodes, and returns metadata commands; the operator proposes them
//! and drives the operations they start.
//!
//! Goals, in order of priority:
//! 1. no replica on a node that is draining or dead (moved to a live node);
//! 2. every shard at its collection's replication factor, on distinct nodes;
//! 3. replica counts of the active nodes within one of each other — or, with
//!    [`BalanceBy::Points`], the points they hold as even as whole replicas allow (a
//!    move is planned only when it narrows the gap between the fullest and the
//!    emptiest node by at least 5% of a node's average);
//! 4. preferred leaders (which the leader balancer hands leaderships to) spread the
//!    same way;
//! 5. drained and dead nodes, once empty, removed from the cluster.
//!
//! It never plans two operations on one shard, never more than
//! [`Policy::max_moves_per_node`] operations involving one live node (a dead source
//! does no work and is not counted), and never a target that is not active and alive.
//! It must never do IO.

use std::collections::{BTreeMap, BTreeSet};

use shoal_meta::{ClusterState, MetaCommand, NodeId, NodeState, OpKind, ShardMeta};

/// What the operator saw of the nodes this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Nodes that answered recently.
    pub alive: BTreeSet<NodeId>,
    /// Nodes silent for longer than the dead-node timeout.
    pub dead: BTreeSet<NodeId>,
    /// Points of each shard group, the most any replica that answered reported.
    pub points: BTreeMap<u64, u64>,
}

/// What goal 3 evens out over the nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BalanceBy {
    /// Replica counts, within one of each other.
    #[default]
    Replicas,
    /// Points held (each replica counting its shard's points as observed), so that
    /// shards of very different sizes do not leave one node with most of the data.
    Points,
}

/// How eagerly the scheduler acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Most operations in flight that involve one node (as source or target).
    pub max_moves_per_node: usize,
    /// Even out replica counts and preferred leaders (goals 3 and 4); repairs
    /// (goals 1, 2, 5) run regardless.
    pub balance: bool,
    /// What goal 3 evens out.
    pub balance_by: BalanceBy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_moves_per_node: 1,
            balance: true,
            balance_by: BalanceBy::Replicas,
        }
    }
}

/// One planned command, what it does and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub command: MetaCommand,
    /// For people: e.g. "move docs/2 from node 3 to node 4".
    pub description: String,
    /// e.g. "node 3 is draining".
    pub reason: String,
}

/// A readable line for a planned command.
fn describe_command(cmd: &MetaCommand, state: &ClusterState) -> String {
    let name = |cid: u64| {
        state
            .collection_by_id(cid)
            .map(|c| c.config.name.clone())
            .unwrap_or_else(|| format!("#{cid}"))
    };
    match cmd {
        MetaCommand::StartMove {
            collection,
            shard,
            from,
            to,
        } => describe(
            &OpKind::Move {
                collection: *collection,
                shard: *shard,
                from: *from,
                to: *to,
            },
            state,
        ),
        MetaCommand::SetPreferredLeader {
            collection,
            shard,
            node,
        } => format!(
            "make node {node} the preferred leader of {}/{shard}",
            name(*collection)
        ),
        MetaCommand::RemoveNode(n) => format!("remove node {n} from the cluster"),
        other => format!("{other:?}"),
    }
}

/// The plan's bookkeeping while it is made.
struct Plan<'a> {
    state: &'a ClusterState,
    observed: &'a Observed,
    policy: &'a Policy,
    /// Operations per node, existing and planned.
    busy: BTreeMap<NodeId, usize>,
    /// Shards with an operation, existing or planned.
    busy_shards: BTreeSet<(u64, u32)>,
    /// Replicas per node, with planned moves applied.
    load: BTreeMap<NodeId, i64>,
    /// Points per node ([`BalanceBy::Points`]), with planned moves applied.
    points: BTreeMap<NodeId, i64>,
    out: Vec<Planned>,
}

impl<'a> Plan<'a> {
    fn new(state: &'a ClusterState, observed: &'a Observed, policy: &'a Policy) -> Plan<'a> {
        let mut busy: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut busy_shards = BTreeSet::new();
        for op in state.operations.values() {
            busy_shards.insert(op.shard());
            for n in op.nodes() {
                *busy.entry(n).or_default() += 1;
            }
        }
        let load = state
            .replica_counts()
            .into_iter()
            .map(|(n, c)| (n, c as i64))
            .collect();
        let mut points: BTreeMap<NodeId, i64> = BTreeMap::new();
        for cm in state.collections.values() {
            for shard in &cm.shards {
                let p = Self::points_of(observed, cm.id, shard);
                for n in &shard.replicas {
                    *points.entry(*n).or_default() += p;
                }
            }
        }
        Plan {
            state,
            observed,
            policy,
            busy,
            busy_shards,
            load,
            points,
            out: Vec::new(),
        }
    }

    /// The points of `shard` of collection `collection` as observed (0 if unknown).
    fn points_of(observed: &Observed, collection: u64, shard: &ShardMeta) -> i64 {
        let group = shoal_meta::group_of(collection, shard.id);
        observed.points.get(&group).copied().unwrap_or(0) as i64
    }

    fn push(&mut self, command: MetaCommand, reason: String) {
        let description = describe_command(&command, self.state);
        self.out.push(Planned {
            command,
            description,
            reason,
        });
    }

    /// A node that should hold no replicas: draining, dead, or gone.
    fn leaving(&self, node: NodeId) -> bool {
        self.observed.dead.contains(&node)
            || self
                .state
                .nodes
                .get(&node)
                .is_none_or(|n| n.state != NodeState::Active)
    }

    /// A node that may take a replica now.
    fn usable(&self, node: NodeId) -> bool {
        !self.leaving(node) && self.observed.alive.contains(&node)
    }

    /// Every node that may take a replica now, by id.
    fn usable_nodes(&self) -> Vec<NodeId> {
        self.state
            .nodes
            .keys()
            .copied()
            .filter(|n| self.usable(*n))
            .collect()
    }

    fn has_room(&self, node: NodeId) -> bool {
        self.busy.get(&node).copied().unwrap_or(0) < self.policy.max_moves_per_node
    }

    /// A source may act if it has room, or is dead (it does no work).
    fn source_ok(&self, node: NodeId) -> bool {
        self.observed.dead.contains(&node) || self.has_room(node)
    }

    /// The best new home for a replica of `shard`: usable, not holding one, with
    /// room, least loaded (by replicas or points, as balanced; ties by id).
    fn target_for(&self, shard: &ShardMeta) -> Option<NodeId> {
        let load = match self.policy.balance_by {
            BalanceBy::Replicas => &self.load,
            BalanceBy::Points => &self.points,
        };
        self.state
            .nodes
            .keys()
            .copied()
            .filter(|n| self.usable(*n) && self.has_room(*n) && !shard.replicas.contains(n))
            .min_by_key(|n| (load.get(n).copied().unwrap_or(0), *n))
    }

    fn start_move(
        &mut self,
        collection: u64,
        shard: &ShardMeta,
        from: Option<NodeId>,
        to: Option<NodeId>,
        reason: String,
    ) {
        for n in from.iter().chain(to.iter()) {
            *self.busy.entry(*n).or_default() += 1;
        }
        let points = Self::points_of(self.observed, collection, shard);
        if let Some(f) = from {
            *self.load.entry(f).or_default() -= 1;
            *self.points.entry(f).or_default() -= points;
        }
        if let Some(t) = to {
            *self.load.entry(t).or_default() += 1;
            *self.points.entry(t).or_default() += points;
        }
        self.busy_shards.insert((collection, shard.id));
        self.push(
            MetaCommand::StartMove {
                collection,
                shard: shard.id,
                from,
                to,
            },
            reason,
        );
    }

    /// Goals 1 and 2: replicas off leaving nodes, shards at their replication factor.
    fn repair(&mut self) {
        for cm in self.state.collections.values() {
            let rf = cm.config.replication_factor as usize;
            for shard in &cm.shards {
                if self.busy_shards.contains(&(cm.id, shard.id)) {
                    continue;
                }
                let leaving: Vec<NodeId> = shard
                    .replicas
                    .iter()
                    .copied()
                    .filter(|n| self.leaving(*n))
                    .collect();
                let staying = shard.replicas.len() - leaving.len();
                if let Some(&from) = leaving.first() {
                    if !self.source_ok(from) {
                        continue;
                    }
                    let why = if self.observed.dead.contains(&from) {
                        format!("node {from} is dead")
                    } else {
                        format!("node {from} is draining")
                    };
                    if staying >= rf && staying > 0 {
                        self.start_move(cm.id, shard, Some(from), None, why);
                    } else if let Some(to) = self.target_for(shard) {
                        self.start_move(cm.id, shard, Some(from), Some(to), why);
                    }
                    continue;
                }
                if shard.replicas.len() < rf {
                    if let Some(to) = self.target_for(shard) {
                        let why = format!("{} of {rf} replicas", shard.replicas.len());
                        self.start_move(cm.id, shard, None, Some(to), why);
                    }
                } else if shard.replicas.len() > rf {
                    // Drop the most loaded replica that is not the preferred leader.
                    let from = shard
                        .replicas
                        .iter()
                        .skip(1)
                        .copied()
                        .filter(|n| self.has_room(*n))
                        .max_by_key(|n| (self.load.get(n).copied().unwrap_or(0), *n));
                    if let Some(from) = from {
                        let why = format!("{} replicas, {rf} wanted", shard.replicas.len());
                        self.start_move(cm.id, shard, Some(from), None, why);
                    }
                }
            }
        }
    }

    /// Goal 3 with [`BalanceBy::Points`]: while some usable node holds a replica whose
    /// move to the emptiest node narrows the gap between the two by at least 5% of the
    /// average node's points, make the move that narrows a gap most. Each such move
    /// lowers the sum of squares of the nodes' points, so the moves come to an end.
    fn balance_points(&mut self) {
        loop {
            let usable = self.usable_nodes();
            if usable.len() < 2 {
                return;
            }
            let held = |n: &NodeId| self.points.get(n).copied().unwrap_or(0);
            let total: i64 = usable.iter().map(held).sum();
            let Some(&min) = usable.iter().min_by_key(|n| (held(n), **n)) else {
                return;
            };
            let least_gain = (total / usable.len() as i64 / 20).max(1);
            if !self.has_room(min) {
                return;
            }
            // For every fuller node with room, the replica whose move narrows its gap
            // to `min` most (the one nearest half the gap); the best of those.
            let mut candidate: Option<(i64, NodeId, u64, &ShardMeta)> = None;
            for &from in &usable {
                let gap = held(&from) - held(&min);
                if gap < least_gain || !self.has_room(from) {
                    continue;
                }
                for cm in self.state.collections.values() {
                    for s in &cm.shards {
                        if self.busy_shards.contains(&(cm.id, s.id))
                            || !s.replicas.contains(&from)
                            || s.replicas.contains(&min)
                        {
                            continue;
                        }
                        let p = Self::points_of(self.observed, cm.id, s);
                        let gain = gap - (gap - 2 * p).abs();
                        if gain >= least_gain && candidate.is_none_or(|(g, ..)| gain > g) {
                            candidate = Some((gain, from, cm.id, s));
                        }
                    }
                }
            }
            let Some((_, from, cid, shard)) = candidate else {
                return;
            };
            let why = format!(
                "balance by points: node {from} holds {} points, node {min} {}",
                held(&from),
                held(&min)
            );
            self.start_move(cid, shard, Some(from), Some(min), why);
        }
    }

    /// Goal 3: replica counts of usable nodes within one of each other.
    fn balance_replicas(&mut self) {
        loop {
            let usable = self.usable_nodes();
            let load = |n: &NodeId| self.load.get(n).copied().unwrap_or(0);
            let Some(&max) = usable
                .iter()
                .max_by_key(|n| (load(n), std::cmp::Reverse(**n)))
            else {
                return;
            };
            let Some(&min) = usable.iter().min_by_key(|n| (load(n), **n)) else {
                return;
            };
            if load(&max) - load(&min) <= 1 || !self.has_room(max) || !self.has_room(min) {
                return;
            }
            // A shard on the fullest node and not on the emptiest, preferably one
            // it does not lead (no leadership to hand over).
            let candidate = self
                .state
                .collections
                .values()
                .flat_map(|cm| cm.shards.iter().map(move |s| (cm.id, s)))
                .filter(|(cid, s)| {
                    !self.busy_shards.contains(&(*cid, s.id))
                        && s.replicas.contains(&max)
                        && !s.replicas.contains(&min)
                })
                .min_by_key(|(_, s)| s.replicas.first() == Some(&max));
            let Some((cid, shard)) = candidate else {
                return;
            };
            let why = format!(
                "balance: node {max} holds {} replicas, node {min} {}",
                load(&max),
                load(&min)
            );
            self.start_move(cid, shard, Some(max), Some(min), why);
        }
    }

    /// Goal 4: preferred leaders spread like replicas (one change per round; the
    /// leader balancer then moves the leadership).
    fn balance_leaders(&mut self) {
        let usable: BTreeSet<NodeId> = self
            .state
            .nodes
            .keys()
            .copied()
            .filter(|n| self.usable(*n))
            .collect();
        if usable.len() < 2 {
            return;
        }
        let mut preferred: BTreeMap<NodeId, i64> = usable.iter().map(|n| (*n, 0)).collect();
        for cm in self.state.collections.values() {
            for s in &cm.shards {
                if let Some(c) = s.replicas.first().and_then(|p| preferred.get_mut(p)) {
                    *c += 1;
                }
            }
        }
        let Some((&max, &cmax)) = preferred
            .iter()
            .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))
        else {
            return;
        };
        // The least-preferred node that holds a replica of one of max's shards.
        let mut best: Option<(i64, NodeId, u64, u32)> = None;
        for cm in self.state.collections.values() {
            for s in &cm.shards {
                if s.replicas.first() != Some(&max) || self.busy_shards.contains(&(cm.id, s.id)) {
                    continue;
                }
                for n in s.replicas.iter().skip(1) {
                    if let Some(&c) = preferred.get(n)
                        && cmax - c > 1
                        && best.is_none_or(|(bc, bn, _, _)| (c, *n) < (bc, bn))
                    {
                        best = Some((c, *n, cm.id, s.id));
                    }
                }
            }
        }
        if let Some((c, node, collection, shard)) = best {
            self.busy_shards.insert((collection, shard));
            self.push(
                MetaCommand::SetPreferredLeader {
                    collection,
                    shard,
                    node,
                },
                format!("leaders: node {max} is preferred for {cmax} shards, node {node} for {c}"),
            );
        }
    }

    /// Goal 5: empty leaving nodes leave.
    fn remove_empty(&mut self) {
        let state = self.state;
        for (&node, meta) in &state.nodes {
            let leaving = meta.state == NodeState::Draining || self.observed.dead.contains(&node);
            if leaving && self.state.is_empty_node(node) {
                let why = if meta.state == NodeState::Draining {
                    format!("node {node} is drained")
                } else {
                    format!("node {node} is dead and holds nothing")
                };
                self.push(MetaCommand::RemoveNode(node), why);
            }
        }
    }
}

/// The commands that move the cluster toward the goals (see the module doc).
pub fn plan(state: &ClusterState, observed: &Observed, policy: &Policy) -> Vec<Planned> {
    let mut p = Plan::new(state, observed, policy);
    p.repair();
    if policy.balance {
        match policy.balance_by {
            BalanceBy::Replicas => p.balance_replicas(),
            BalanceBy::Points => p.balance_points(),
        }
        p.balance_leaders();
    }
    p.remove_empty();
    p.out
}

/// A readable line for an operation (status and logs).
pub fn describe(kind: &OpKind, state: &ClusterState) -> String {
    let name = |cid: u64| {
        state
            .collection_by_id(cid)
            .map(|c| c.config.name.clone())
            .unwrap_or_else(|| format!("#{cid}"))
    };
    match kind {
        OpKind::Move {
            collection,
            shard,
            from,
            to,
        } => match (from, to) {
            (Some(f), Some(t)) => format!(
                "move {}/{shard} from node {f} to node {t}",
                name(*collection)
            ),
            (None, Some(t)) => {
                format!("add a replica of {}/{shard} on node {t}", name(*collection))
            }
            (Some(f), None) => format!(
                "remove the replica of {}/{shard} from node {f}",
                name(*collection)
            ),
            (None, None) => format!("no-op on {}/{shard}", name(*collection)),
        },
        OpKind::Split {
            collection,
            shard,
            children,
            ..
        } => format!(
            "split {}/{shard} into shards {} and {}",
            name(*collection),
            children[0],
            children[1]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::CollectionConfig;

    fn state(nodes: u64) -> ClusterState {
        let mut s = ClusterState::default();
        let addrs: Vec<(u64, String)> = (1..=nodes).map(|i| (i, format!("n{i}:1"))).collect();
        s.observe_members(addrs.iter().map(|(i, a)| (*i, a.as_str())));
        s
    }

    fn create(s: &mut ClusterState, name: &str, rf: u32, placement: Vec<Vec<u64>>) {
        s.apply(MetaCommand::CreateCollection {
            config: CollectionConfig {
                name: name.into(),
                dim: 2,
                metric: shoal_core::Metric::L2,
                shard_count: placement.len() as u32,
                replication_factor: rf,
                hnsw: Default::default(),
            },
            placement,
        })
        .unwrap();
    }

    fn all_alive(s: &ClusterState) -> Observed {
        Observed {
            alive: s.nodes.keys().copied().collect(),
            dead: BTreeSet::new(),
            points: Default::default(),
        }
    }

    /// Runs the scheduler to a fixpoint, finishing every operation it starts at once.
    fn settle(s: &mut ClusterState, observed: &Observed, policy: &Policy) -> usize {
        let mut rounds = 0;
        loop {
            let planned = plan(s, observed, policy);
            if planned.is_empty() {
                return rounds;
            }
            rounds += 1;
            assert!(rounds < 200, "the scheduler does not converge: {planned:?}");
            for p in planned {
                s.apply(p.command.clone())
                    .unwrap_or_else(|e| panic!("{p:?} refused: {e}"));
            }
            let ops: Vec<u64> = s.operations.keys().copied().collect();
            for op in ops {
                s.apply(MetaCommand::FinishOperation(op)).unwrap();
            }
        }
    }

    fn counts(s: &ClusterState) -> Vec<usize> {
        s.replica_counts().values().copied().collect()
    }

    #[test]
    fn balancing_by_points_evens_out_data_where_replica_counts_are_already_even() {
        // Three nodes with two replicas each (even by count), but node 1 holds the two
        // big shards: 1.1M of the 1.3M points.
        let mut s = state(3);
        create(
            &mut s,
            "big",
            1,
            vec![vec![1], vec![1], vec![2], vec![2], vec![3], vec![3]],
        );
        let cid = s.collections["big"].id;
        let mut observed = all_alive(&s);
        for (shard, points) in [(0, 600_000), (1, 500_000), (2, 50_000), (3, 50_000)] {
            observed
                .points
                .insert(shoal_meta::group_of(cid, shard), points);
        }
        for shard in [4, 5] {
            observed
                .points
                .insert(shoal_meta::group_of(cid, shard), 50_000);
        }
        let by_replicas = Policy::default();
        assert!(plan(&s, &observed, &by_replicas).is_empty());
        let by_points = Policy {
            balance_by: BalanceBy::Points,
            ..Policy::default()
        };
        let planned = plan(&s, &observed, &by_points);
        assert_eq!(planned.len(), 1, "{planned:?}");
        assert!(
            planned[0].reason.contains("balance by points"),
            "{planned:?}"
        );
        settle(&mut s, &observed, &by_points);
        let per_node = |s: &ClusterState| -> Vec<u64> {
            let mut held = BTreeMap::<u64, u64>::new();
            for sh in &s.collections["big"].shards {
                for n in &sh.replicas {
                    *held.entry(*n).or_default() +=
                        observed.points[&shoal_meta::group_of(cid, sh.id)];
                }
            }
            held.values().copied().collect()
        };
        let held = per_node(&s);
        // The two big shards end on different nodes, the small ones go to the third.
        let (max, min) = (*held.iter().max().unwrap(), *held.iter().min().unwrap());
        assert!(max <= 600_000 && min >= 200_000, "{held:?}");
        // Settled: nothing more to plan.
        assert!(plan(&s, &observed, &by_points).is_empty());
    }

    #[test]
    fn a_new_node_gets_its_share_of_replicas_and_leaders() {
        let mut s = state(3);
        create(
            &mut s,
            "a",
            3,
            vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]],
        );
        create(
            &mut s,
            "b",
            2,
            vec![vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 2]],
        );
        s.observe_members([(4, "n4:1")]);
        let policy = Policy::default();
        let observed = all_alive(&s);
        settle(&mut s, &observed, &policy);
        let c = counts(&s);
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "{c:?}"
        );
        assert!(c[3] >= 4, "node 4 took replicas: {c:?}");
        for cm in s.collections.values() {
            for sh in &cm.shards {
                let mut r = sh.replicas.clone();
                r.sort();
                r.dedup();
                assert_eq!(r.len(), cm.config.replication_factor as usize);
            }
        }
        let mut preferred = BTreeMap::new();
        for cm in s.collections.values() {
            for sh in &cm.shards {
                *preferred.entry(sh.replicas[0]).or_insert(0) += 1;
            }
        }
        assert_eq!(
            preferred.len(),
            4,
            "every node is preferred for some: {preferred:?}"
        );
        assert!(preferred.values().max().unwrap() - preferred.values().min().unwrap() <= 1);
    }

    #[test]
    fn a_draining_node_is_emptied_then_removed() {
        let mut s = state(4);
        create(
            &mut s,
            "a",
            3,
            vec![vec![1, 2, 3], vec![2, 3, 4], vec![4, 1, 2]],
        );
        s.apply(MetaCommand::SetNodeState {
            node: 4,
            state: NodeState::Draining,
        })
        .unwrap();
        let observed = all_alive(&s);
        settle(&mut s, &observed, &Policy::default());
        assert!(!s.nodes.contains_key(&4), "node 4 left");
        assert!(s.removed.contains(&4));
        for sh in &s.collections["a"].shards {
            assert_eq!(sh.replicas.len(), 3);
            assert!(!sh.replicas.contains(&4));
        }
    }

    #[test]
    fn a_dead_node_is_replaced_and_throttles_apply_to_the_living() {
        let mut s = state(4);
        create(
            &mut s,
            "a",
            2,
            vec![vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 3]],
        );
        let observed = Observed {
            alive: [1, 2, 3].into(),
            dead: [4].into(),
            points: Default::default(),
        };
        // Nothing on node 4: it is removed, nothing else moves (balanced already).
        let planned = plan(&s, &observed, &Policy::default());
        assert_eq!(
            planned
                .iter()
                .map(|p| p.command.clone())
                .collect::<Vec<_>>(),
            vec![MetaCommand::RemoveNode(4)]
        );
        // Now node 3 dies while holding three replicas: each is re-created on a
        // live node, one move per live node per round.
        let observed = Observed {
            alive: [1, 2, 4].into(),
            dead: [3].into(),
            points: Default::default(),
        };
        let first = plan(&s, &observed, &Policy::default());
        let moves: Vec<_> = first
            .iter()
            .filter(|p| matches!(p.command, MetaCommand::StartMove { .. }))
            .collect();
        assert_eq!(moves.len(), 2, "two live targets, one move each: {first:?}");
        settle(&mut s, &observed, &Policy::default());
        for sh in &s.collections["a"].shards {
            assert_eq!(sh.replicas.len(), 2);
            assert!(!sh.replicas.contains(&3), "{sh:?}");
        }
        assert!(!s.nodes.contains_key(&3));
    }

    #[test]
    fn replication_factor_changes_add_and_remove_replicas() {
        let mut s = state(3);
        create(&mut s, "a", 1, vec![vec![1], vec![2], vec![3]]);
        s.apply(MetaCommand::SetReplicationFactor {
            collection: "a".into(),
            replication_factor: 3,
        })
        .unwrap();
        let observed = all_alive(&s);
        settle(&mut s, &observed, &Policy::default());
        assert!(
            s.collections["a"]
                .shards
                .iter()
                .all(|sh| sh.replicas.len() == 3)
        );
        s.apply(MetaCommand::SetReplicationFactor {
            collection: "a".into(),
            replication_factor: 2,
        })
        .unwrap();
        let observed = all_alive(&s);
        settle(&mut s, &observed, &Policy::default());
        assert!(
            s.collections["a"]
                .shards
                .iter()
                .all(|sh| sh.replicas.len() == 2)
        );
        assert_eq!(counts(&s), vec![2, 2, 2]);
    }

    #[test]
    fn nothing_to_do_plans_nothing_and_an_unreachable_node_is_no_target() {
        let mut s = state(3);
        create(
            &mut s,
            "a",
            3,
            vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]],
        );
        assert!(plan(&s, &all_alive(&s), &Policy::default()).is_empty());
        s.observe_members([(4, "n4:1")]);
        let unreachable = Observed {
            alive: [1, 2, 3].into(),
            dead: BTreeSet::new(),
            points: Default::default(),
        };
        assert!(plan(&s, &unreachable, &Policy::default()).is_empty());
    }
}
