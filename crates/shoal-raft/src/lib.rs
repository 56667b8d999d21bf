//! # shoal-raft
//!
//! Raft for Shoal, on openraft 0.9 (`storage-v2`). Each shard of a collection is one
//! Raft group, and one metadata group spans the nodes; this crate provides what a
//! group stores and how its messages travel:
//!
//! - [`TypeConfig`]: entries carry a [`Command`]: a [`shoal_core::Write`] (an upsert
//!   or delete of already-validated points) for a shard group, a [`MetaCommand`] for
//!   the metadata group; node ids are `u64`.
//! - [`LogStore`]: the group's log, vote and pointers in `shoal-storage`'s Raft
//!   keyspace. Appends return at once and are acknowledged to openraft by the node's
//!   flusher thread after the fsync that covers them — one fsync for every group that
//!   appended meanwhile (group commit).
//! - [`ShardStateMachine`]: applies committed entries to a `shoal_shard::Shard` at
//!   their log index, writing the points and the applied log id and membership in one
//!   atomic batch without an fsync of its own (the log is the source of truth;
//!   re-applying after a crash is harmless). Snapshots are the shard's points, in
//!   files of frames (module `snapshot_file`) that openraft sends in chunks.
//!   A [`Command::Seal`] freezes a shard for a split; the split's children start
//!   from the sealed state (see the state machine's module doc).
//!
//! - `MetaStateMachine`: the metadata group's state machine, persisting
//!   `shoal_meta::ClusterState` and applying [`shoal_meta::MetaCommand`]s to it.
//! - [`network`]: the gRPC Raft transport shared by every group of a node (one
//!   channel per peer) and the node's [`network::Registry`] of groups.
//!
//! - [`election_gate`]: a replica stands for election only while its node reaches a
//!   majority of the group's voters (openraft 0.9 has no pre-vote; a node cut off
//!   would otherwise raise its term and unseat the leader when the network heals).
//! - [`auth`]: the cluster secret that every call between nodes carries and every
//!   internal port checks.
//!
//! Which groups a node hosts, and routing requests to them, is `shoal-cluster`'s.
//! This crate must never validate requests (they arrive validated) nor know wire
//! formats of the public API; it only re-checks committed shard writes against the
//! shard (`Shard::check`) so that no entry can break a replica.

pub mod auth;
pub mod election_gate;
mod error;
mod log_store;
mod meta;
pub mod network;
mod snapshot_file;
mod state_machine;

use serde::{Deserialize, Serialize};
use shoal_core::Write;
use shoal_meta::{MetaCommand, MetaError};

pub use error::RaftStoreError;
pub use log_store::LogStore;
/// How a peer's message and a stored entry are decoded, and how a snapshot's points
/// are read: public for the fuzz targets (`crates/shoal-fuzz`).
pub use log_store::decode;
pub use meta::MetaStateMachine;
pub use snapshot_file::read_points;
pub use state_machine::{ChildSpec, ShardStateMachine};

/// An entry of any group: shard groups carry [`Command::Shard`], the metadata group
/// [`Command::Meta`]. A state machine given the other kind rejects it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A write to one shard; its points were validated and prepared (normalised for
    /// COSINE) before it was proposed.
    Shard(Write),
    Meta(MetaCommand),
    /// Seals a shard group that is being split: every shard write after it is
    /// refused ([`Rejection::Sealed`]), so the shard's points stay exactly as of this
    /// entry on every replica, and each replica can build the split's children from
    /// its own copy (`ShardStateMachine::build_child`).
    Seal,
}

/// Why a state machine refused a committed entry. The entry still counts as applied
/// (a no-op), identically on every replica.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    /// The metadata state forbids the command.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A shard command reached the metadata group, or the reverse.
    #[error("the entry was proposed to the wrong kind of group")]
    WrongGroup,
    /// A write reached a shard that is being split (sealed): it was not applied; the
    /// shard's range moves to the split's children.
    #[error("the shard is being split and takes no more writes")]
    Sealed,
    /// A shard write that no validated request could make (a wrong dimension, a
    /// non-finite component, a malformed payload): nothing of it was applied.
    #[error("the write is invalid and was not applied: {0}")]
    Invalid(String),
}

/// What applying an entry returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Log index the entry was applied at (the write token for SESSION reads).
    pub applied: u64,
    /// Why the state machine refused the entry, if it did.
    pub rejected: Option<Rejection>,
}

openraft::declare_raft_types!(
    /// openraft types of every group (shards and metadata).
    pub TypeConfig:
        D = Command,
        R = Reply,
        SnapshotData = tokio::fs::File,
);

/// openraft's storage error for our type config.
pub type StorageError = openraft::StorageError<u64>;

#[cfg(test)]
mod tests {
    use shoal_core::{PointId, Write};

    use super::Command;

    /// Raft logs on disk hold entries in this encoding: a change to it (to `Command` or
    /// to `shoal_core::Write`) would make existing logs unreadable.
    #[test]
    fn shard_entries_keep_their_log_encoding() {
        let delete = Command::Shard(Write::Delete(vec![PointId::Num(7)]));
        assert_eq!(postcard::to_allocvec(&delete).unwrap(), [0, 1, 1, 0, 7]);
        let upsert = Command::Shard(Write::Upsert(Vec::new()));
        assert_eq!(postcard::to_allocvec(&upsert).unwrap(), [0, 0, 0]);
        assert_eq!(postcard::to_allocvec(&Command::Seal).unwrap(), [2]);
    }
}
