//! # shoal-raft
//!
//! Raft for Shoal's shards, on openraft 0.9 (`storage-v2`). Each shard of a collection
//! is one Raft group; this crate provides what a group stores:
//!
//! - [`TypeConfig`]: entries carry a [`ShardCommand`] (an upsert or delete of
//!   already-validated points); node ids are `u64`.
//! - [`LogStore`]: the group's log, vote and pointers in `shoal-storage`'s Raft
//!   keyspace. Appends return at once and are acknowledged to openraft by the node's
//!   flusher thread after the fsync that covers them — one fsync for every group that
//!   appended meanwhile (group commit).
//! - [`ShardStateMachine`]: applies committed entries to a `shoal_shard::Shard` at
//!   their log index, writing the points and the applied log id and membership in one
//!   atomic batch without an fsync of its own (the log is the source of truth;
//!   re-applying after a crash is harmless). Snapshots are the shard's points, in
//!   files of frames (module `snapshot_file`) that openraft sends in chunks.
//!
//! Networking, the multi-raft registry and routing come later (`shoal-cluster`).
//! This crate must never validate requests (they arrive validated) nor know wire
//! formats of the public API.

mod error;
mod log_store;
mod meta;
pub mod network;
mod snapshot_file;
mod state_machine;

use serde::{Deserialize, Serialize};
use shoal_core::{CollectionConfig, Point, PointId};

pub use error::RaftStoreError;
pub use log_store::LogStore;
pub use meta::{ClusterState, CollectionMeta, META_GROUP, MetaStateMachine, group_of, place};
pub use state_machine::ShardStateMachine;

/// A write to one shard, as replicated in its Raft log. Points are validated and
/// prepared (normalised for COSINE) before they are proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardCommand {
    Upsert(Vec<Point>),
    Delete(Vec<PointId>),
}

/// A change to the cluster's metadata, as replicated in the metadata group's log.
/// Configurations are validated before they are proposed; the state machine still
/// rejects (deterministically, on every replica) what the current state forbids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates a collection; the state machine assigns its id and places its replicas.
    CreateCollection(CollectionConfig),
    DeleteCollection(String),
}

/// An entry of any group: shard groups carry [`Command::Shard`], the metadata group
/// [`Command::Meta`]. A state machine given the other kind rejects it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Shard(ShardCommand),
    Meta(MetaCommand),
}

/// What applying an entry returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReply {
    /// Log index the entry was applied at (the write token for SESSION reads).
    pub applied: u64,
    /// Why the state machine refused the entry, if it did (the entry is still
    /// committed and applied as a no-op on every replica).
    pub rejected: Option<shoal_core::Error>,
}

openraft::declare_raft_types!(
    /// openraft types of every group (shards and metadata).
    pub TypeConfig:
        D = Command,
        R = ShardReply,
        SnapshotData = tokio::fs::File,
);

/// openraft's storage error for our type config.
pub type StorageError = openraft::StorageError<u64>;
