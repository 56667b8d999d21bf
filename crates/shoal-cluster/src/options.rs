//! How a node is started: its identity, peers, data directory, limits and Raft
//! timing. Plain data, read by every part of the node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use shoal_core::Limits;
use shoal_raft::auth::InternalSecurity;
use shoal_shard::ShardOptions;

/// Raft timing and log compaction, shared by every group of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTiming {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an
    /// election.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// How often a node hands the leadership of shard groups it leads back to their
    /// preferred nodes (0: never). At least twice `election_max_ms` (a transfer
    /// needs the leader's vote to be older than its lease).
    pub balance_ms: u64,
    /// Build a snapshot (and compact the log behind it) every this many entries.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot, so briefly lagging followers catch up from the
    /// log rather than by snapshot.
    pub keep_logs: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        // A follower stands for election once it heard nothing for openraft's leader
        // lease (the election maximum) plus its own timeout (drawn once per process
        // from [min, max)): 1.8-2.4 s after the last heartbeat; measured, a shard
        // whose leader was killed or paused took writes again after 2.1 s (median,
        // benches/failover.sh). Eight heartbeats fit in the lease, so a busy node's
        // late heartbeats do not depose its leaders.
        RaftTiming {
            heartbeat_ms: 150,
            election_min_ms: 600,
            election_max_ms: 1_200,
            balance_ms: 10_000,
            snapshot_every: 20_000,
            keep_logs: 1_000,
        }
    }
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub node_id: u64,
    /// The internal (Raft) address other nodes reach this node at.
    pub advertise: String,
    /// The initial voters, id → internal address, this node included. Empty: a
    /// cluster of this node alone.
    pub peers: BTreeMap<u64, String>,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub shard: ShardOptions,
    /// Threads of the search pool (0: one per core).
    pub search_threads: usize,
    pub timing: RaftTiming,
    /// How long a write may wait for a leader to commit it, and a read for a replica.
    pub request_timeout: Duration,
    /// Join the cluster through the node at this internal address (a node id is
    /// assigned and kept in the data directory); `peers` is then empty.
    pub join: Option<String>,
    /// Growing and shrinking: the operator and the scheduler.
    pub elasticity: Elasticity,
    /// How internal calls are secured: the cluster secret sent on every call to a peer
    /// and required of every call to this node's internal port, and mutual TLS. The
    /// default (neither) lets every internal call in: a loopback or trusted network.
    pub internal: InternalSecurity,
}

/// How the cluster changes its own shape: see `operator` and `scheduler`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elasticity {
    /// How often the metadata leader observes the nodes and drives operations.
    pub interval: Duration,
    /// A node silent this long is dead: its replicas are re-created elsewhere and it
    /// is removed from the cluster.
    pub dead_node_timeout: Duration,
    /// Most voters of the metadata group (the other nodes are learners).
    pub max_voters: usize,
    /// Most replica moves in flight that involve one node.
    pub max_moves_per_node: usize,
    /// Plan moves without being asked: restore replication factors, empty draining
    /// and dead nodes, even out replicas and leaders. Off: only `rebalance` requests
    /// and moves by hand are carried out.
    pub auto_rebalance: bool,
    /// What rebalancing evens out over the nodes: replica counts or points held.
    pub balance_by: crate::scheduler::BalanceBy,
    /// Split a shard by itself once one of its replicas holds more points than this
    /// (one split per collection at a time). `None`: only `reshard` requests split.
    pub split_points: Option<u64>,
}

impl Default for Elasticity {
    fn default() -> Self {
        Elasticity {
            interval: Duration::from_secs(1),
            dead_node_timeout: Duration::from_secs(300),
            max_voters: 5,
            max_moves_per_node: 1,
            auto_rebalance: true,
            balance_by: Default::default(),
            split_points: None,
        }
    }
}
