//! # shoal-cluster
//!
//! A Shoal node as a member of a cluster: it hosts shard replicas, routes every
//! request to the replicas that can serve it, and answers with one domain error
//! vocabulary (`shoal_core::Error`). The parts, each a type with one job:
//!
//! - [`Node`] (module `node`): starts the others, bootstraps the cluster, runs the
//!   background tasks, and is the crate's edge (errors become `shoal_core::Error`
//!   there, and nowhere else).
//! - `Host` (module `host`): the Raft groups and shard replicas on this node — the
//!   metadata group (group 0 over every node, holding `shoal_meta::ClusterState`) and
//!   one openraft group per shard replica — opened and closed by reconciling against
//!   the metadata, and serving what reaches them locally.
//! - `Router` (module `router`): sends a proposal to a group's leader, or a read to
//!   one of its replicas at the request's [`Consistency`], on this node or through a
//!   peer, with one retry loop for both.
//! - `Database` (module `database`): what a request means — collections through the
//!   metadata group, writes validated and split by shard, reads scattered over one
//!   replica per shard and merged.
//! - placement (module `placement`): the policy that places a new collection's
//!   replicas ([`Placement`]); the metadata state only checks what it proposes.
//! - leader balancing (module `balance`, with its `gate`): hands groups back to their
//!   preferred nodes once those are up and caught up.
//! - coalescing (modules `coalesce`, `search_coalesce`): concurrent single searches
//!   of one collection answered as batches ([`SearchCoalescer`]), a lone search at
//!   once.
//! - status (module `status`): every replica's role, applied index and digest,
//!   gathered from every node.
//! - telemetry (module `telemetry`): the gauges a node's monitoring samples
//!   ([`Node::record_gauges`], through the `metrics` facade; the exporter is
//!   `shoal-server`'s) and whether it is ready to serve ([`Node::readiness`]).
//! - elasticity: `admin` records intentions (a node joins or drains, a replica
//!   moves, a replication factor changes); `operator`, on the metadata leader,
//!   observes the nodes, keeps the metadata group's membership in line and drives
//!   operations step by step; `scheduler` plans the operations that restore
//!   replication factors, empty draining and dead nodes and even out the load;
//!   `identity` keeps a node's id in its data directory; `eviction` notices that the
//!   cluster removed this node and deletes its stale replicas.
//!
//! Errors inside the crate are [`ClusterError`] (typed, serializable: they cross the
//! wire between nodes), mapped to `shoal_core::Error` once, at [`Node`]'s methods.
//!
//! A node started without peers is a cluster of one: the same code paths, with
//! majorities of one.
//!
//! This crate must never validate wire formats of the public API (that is
//! `shoal-server`'s) nor let an unvalidated request reach a Raft log: every write is
//! validated by `shoal_core::validate` before it is proposed.

mod admin;
mod backup;
mod balance;
mod coalesce;
mod database;
mod error;
mod eviction;
mod export;
mod failpoints;
mod failure;
mod gate;
mod host;
mod identity;
mod load;
mod node;
mod operator;
mod options;
mod placement;
mod read_index;
mod router;
mod scheduler;
mod search_coalesce;
mod service;
mod status;
mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod wire;

use serde::{Deserialize, Serialize};

pub use backup::{RestoreOptions, Restored, backup_error};
pub use coalesce::{CoalesceOptions, CoalesceStats};
pub use database::{CollectionInfo, ReadOptions, WriteOutcome, WriteToken};
pub use error::ClusterError;
pub use eviction::Removal;
pub use failure::Failure;
pub use load::NodeLoad;
pub use node::Node;
pub use options::{Elasticity, NodeOptions, RaftTiming};
pub use placement::{Placement, Rotation};
pub use scheduler::{BalanceBy, Planned};
pub use search_coalesce::SearchCoalescer;
pub use shoal_index::Backend as IndexBackend;
pub use shoal_raft::auth::{ClusterSecret, InternalSecurity, InternalTls, SecretError};
pub use shoal_raft::network::{internal_incoming, internal_server};
pub use shoal_shard::ShardOptions;
pub use status::OperationStatus;
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
