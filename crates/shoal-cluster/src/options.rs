//! How a node is started: its identity, peers, data directory, limits and Raft
//! timing. Plain data, read by every part of the node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use shoal_core::Limits;
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
        // Slow heartbeats: dozens of groups per node on two cores must not starve
        // each other into elections; a dead leader is replaced in about 1.5-3 s.
        RaftTiming {
            heartbeat_ms: 300,
            election_min_ms: 1_500,
            election_max_ms: 3_000,
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
}
