//! # shoal-cluster
//!
//! A Shoal node as a member of a cluster. It owns:
//!
//! - the **metadata group** (Raft group 0 over every node): nodes, collections, and
//!   where each shard's replicas live (`shoal_raft::MetaStateMachine`); collections
//!   are created and deleted by proposing to it from any node;
//! - the node's **shard replicas**: one openraft group per shard, opened and closed by
//!   reconciling against the metadata ([`Node`]; module `node`);
//! - **routing** (module `route`): a write is validated, split by shard and proposed
//!   to each shard's leader, forwarding to the node that leads it and retrying while
//!   a leader is elected; a read goes to one replica of every shard, chosen by the
//!   request's [`Consistency`], and the results are merged;
//! - **leader balancing** (module `balance`): a node hands the groups it leads back
//!   to their preferred nodes once those are up and caught up, so writes load every
//!   node again after a failover;
//! - **coalescing** (module `coalesce`): concurrent single searches of one collection
//!   are answered as batches ([`SearchCoalescer`]), a lone search at once;
//! - **status**: every replica's role, applied index and content digest, gathered
//!   from every node.
//!
//! A node started without peers is a cluster of one: the same code paths, with
//! majorities of one.
//!
//! Errors are `shoal_core::Error`, the domain vocabulary `shoal-server` maps to gRPC
//! statuses. This crate must never validate wire formats of the public API (that is
//! `shoal-server`'s) nor let an unvalidated request reach a Raft log: every write is
//! validated by `shoal_core::validate` before it is proposed.

mod api;
mod balance;
mod coalesce;
mod node;
mod route;
mod service;
mod status;
mod wire;

use serde::{Deserialize, Serialize};

pub use api::{CollectionInfo, ReadOptions, WriteOutcome, WriteToken};
pub use coalesce::{CoalesceOptions, CoalesceStats, SearchCoalescer};
pub use node::{Node, NodeOptions, RaftTiming};
pub use service::ClusterInternalService;
pub use status::{ClusterStatus, CollectionStatus, NodeHealth, ReplicaStatus, ShardStatus};
pub use wire::ReplicaReport;

/// How fresh a read must be. See `proto/shoal/v1/shoal.proto` for the guarantees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// The nearest replica (this node's own if it has one), as it is.
    #[default]
    Eventual,
    /// A replica that has applied the indexes of a write token.
    Session,
    /// The leader, after confirming its leadership with a majority.
    Strong,
}
