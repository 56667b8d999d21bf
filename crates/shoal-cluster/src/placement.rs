//! Placement policy: which nodes hold the replicas of a new collection's shards, and
//! which replica of each shard is its preferred leader.
//!
//! A policy only *proposes*: its answer travels in the `CreateCollection` command, and
//! the metadata state (`shoal_meta::ClusterState::apply`) checks it against the nodes
//! it knows when the command commits. So a policy may be changed, or differ between
//! nodes of one cluster, without any replica deciding differently from another.
//!
//! It must never do IO or wait: it decides from the state it is given.

use shoal_core::CollectionConfig;
use shoal_meta::{ClusterState, MetaError, NodeId};

/// Decides where a new collection's replicas go.
pub trait Placement: Send + Sync {
    /// Per shard, `config.replication_factor` distinct active nodes, preferred leader
    /// first.
    fn place(
        &self,
        state: &ClusterState,
        config: &CollectionConfig,
    ) -> Result<Vec<Vec<NodeId>>, MetaError>;
}

/// Rotation over the active nodes: shard `s` goes to `replication_factor` consecutive
/// nodes (in id order) starting at `(collection id + s) mod n`, so the replicas of a
/// shard are on distinct nodes and the first replica of each shard — its preferred
/// leader — rotates over the nodes, within a collection and across collections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rotation;

impl Placement for Rotation {
    fn place(
        &self,
        state: &ClusterState,
        config: &CollectionConfig,
    ) -> Result<Vec<Vec<NodeId>>, MetaError> {
        let nodes = state.active_nodes();
        let (n, rf) = (nodes.len(), config.replication_factor as usize);
        if rf > n {
            return Err(MetaError::TooFewNodes {
                replicas: config.replication_factor,
                nodes: n,
            });
        }
        let first = state.peek_collection_id() as usize;
        Ok((0..config.shard_count as usize)
            .map(|s| (0..rf).map(|r| nodes[(first + s + r) % n]).collect())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_meta::MetaCommand;

    use super::*;

    fn config(shards: u32, rf: u32) -> CollectionConfig {
        CollectionConfig {
            name: "c".into(),
            dim: 2,
            metric: shoal_core::Metric::L2,
            shard_count: shards,
            replication_factor: rf,
            hnsw: Default::default(),
        }
    }

    fn three_nodes() -> ClusterState {
        let mut s = ClusterState::default();
        s.observe_members([(1, "a:1"), (2, "b:1"), (3, "c:1")]);
        s
    }

    #[test]
    fn rotation_spreads_replicas_and_preferred_leaders() {
        let state = three_nodes();
        let p = Rotation.place(&state, &config(3, 3)).unwrap();
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
        let p = Rotation.place(&state, &config(6, 1)).unwrap();
        let mut count = BTreeMap::new();
        for r in &p {
            *count.entry(r[0]).or_insert(0) += 1;
        }
        assert!(count.values().all(|c| *c == 2), "{count:?}");
        assert_eq!(
            Rotation.place(&state, &config(1, 4)),
            Err(MetaError::TooFewNodes {
                replicas: 4,
                nodes: 3
            })
        );
    }

    #[test]
    fn a_placement_is_accepted_by_the_state_it_was_made_for() {
        let mut state = three_nodes();
        for (i, (shards, rf)) in [(3, 3), (5, 2), (1, 1)].into_iter().enumerate() {
            let mut c = config(shards, rf);
            c.name = format!("c{i}");
            let placement = Rotation.place(&state, &c).unwrap();
            state
                .apply(MetaCommand::CreateCollection {
                    config: c,
                    placement,
                })
                .unwrap();
        }
    }
}
