//! # shoal-meta
//!
//! The cluster's metadata, as data: which nodes form the cluster, which collections
//! exist, how each collection's 64-bit id-hash space is cut into shards, on which
//! nodes each shard's replicas live, and which changes of that placement are under
//! way — plus the one function that changes it, [`ClusterState::apply`].
//!
//! Every node holds a copy, replicated by the metadata Raft group (`shoal-raft`
//! persists it; `shoal-cluster` reads it to route requests and proposes commands to
//! change it). Decisions that need judgement — which nodes get a new collection's
//! replicas, which replica moves where, when to split — are the cluster layer's
//! *policy*: they reach this crate as explicit commands ([`MetaCommand`]) that `apply`
//! only checks against the state. So `apply` is deterministic: every replica of the
//! metadata group applies the same commands to the same state and reaches the same
//! state and the same refusals.
//!
//! **Shards and ranges.** A shard owns a contiguous, inclusive range of the id hash
//! ([`HashRange`]); the shards of a collection cover the whole space without overlap.
//! A collection created with `n` shards gets the `n` equal ranges that
//! `shoal_core::routing::shard_of` describes, so routing by range and by
//! `shard_of` agree. Shard ids are never reused within a collection and name the
//! shard's Raft group ([`group_of`]).
//!
//! **Operations.** A change of a shard's replicas or ranges that takes several steps
//! (copying data, changing a Raft group's membership) is recorded as an
//! [`Operation`] when it starts and removed when it finishes or is abandoned, so
//! whichever node leads the metadata group next resumes it. The state never holds two
//! operations on one shard.
//!
//! This crate must never do IO, spawn threads or tasks, or read clocks: the state it
//! computes must depend only on the commands applied.

mod command;
mod error;
mod range;
mod state;

pub use command::MetaCommand;
pub use error::MetaError;
pub use range::HashRange;
pub use state::{
    ClusterState, CollectionMeta, NodeMeta, NodeState, OpKind, Operation, Origin, ShardMeta,
};

/// A node's id: a positive integer, unique in the cluster, never reused.
pub type NodeId = u64;

/// Group id of the metadata group. Shard groups are numbered by [`group_of`].
pub const META_GROUP: u64 = 0;

/// Shard ids of one collection must fit in this many bits of a group id.
const SHARD_BITS: u32 = 20;

/// The largest shard id a collection may use.
pub const MAX_SHARD_ID: u32 = (1 << SHARD_BITS) - 1;

/// The Raft group id of shard `shard` of the collection with id `collection_id`
/// (collection ids start at 1, so no shard group is [`META_GROUP`]).
pub fn group_of(collection_id: u64, shard: u32) -> u64 {
    (collection_id << SHARD_BITS) | u64::from(shard)
}

/// The collection id and shard id a shard group id names (inverse of [`group_of`]).
pub fn location_of(group: u64) -> (u64, u32) {
    (
        group >> SHARD_BITS,
        (group & u64::from(MAX_SHARD_ID)) as u32,
    )
}
