//! Why the metadata state refused a command: the one error type of `shoal-meta`.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A command the state forbids. Decided by the state alone, so every replica of the
/// metadata group refuses the same commands the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetaError {
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    #[error("collection {0:?} does not exist")]
    NoSuchCollection(String),
    /// Hidden: a restore is filling it (or one was cut short; deleting it clears it).
    #[error(
        "collection {0:?} is being restored (if no restore is running, one was cut short: delete the collection to clear it)"
    )]
    BeingRestored(String),
    #[error("no collection has id {0}")]
    NoSuchCollectionId(u64),
    #[error("collection {collection} has no shard {shard}")]
    NoSuchShard { collection: u64, shard: u32 },
    /// More replicas per shard than the cluster has active nodes.
    #[error("{replicas} replicas need as many nodes; the cluster has {nodes}")]
    TooFewNodes { replicas: u32, nodes: usize },
    #[error("replication factor {0} is out of range")]
    BadReplicationFactor(u32),
    /// The proposer placed a shard against a view of the nodes that changed since
    /// (a node left or stopped taking replicas): place again and retry.
    #[error("shard {shard} was placed on nodes that are no longer distinct active nodes")]
    StalePlacement { shard: u32 },
    #[error("node {0} is not a member of the cluster")]
    NoSuchNode(NodeId),
    #[error("node {0} is not active (it is draining)")]
    NodeNotActive(NodeId),
    #[error("node {0} still holds replicas or takes part in an operation")]
    NodeNotEmpty(NodeId),
    #[error("a node address must not be empty")]
    BadAddress(String),
    #[error("node {node} holds no replica of shard {shard}")]
    NotAReplica { shard: u32, node: NodeId },
    #[error("node {node} already holds a replica of shard {shard}")]
    AlreadyAReplica { shard: u32, node: NodeId },
    #[error("a move of shard {shard} needs a source or a target, and not the same node")]
    BadMove { shard: u32 },
    #[error("shard {shard} has only one replica left; it cannot be removed")]
    LastReplica { shard: u32 },
    /// Another operation is working on the shard.
    #[error("an operation on shard {shard} is in flight; retry once it ends")]
    Busy { shard: u32 },
    #[error("shard {shard} cannot be split at hash {at:#x}")]
    BadSplit { shard: u32, at: u64 },
    #[error("collection {0} has used up its shard ids")]
    TooManyShards(u64),
    #[error("no operation has id {0}")]
    NoSuchOperation(u64),
    /// A reshard to no more shards than the collection has, or past the maximum.
    #[error(
        "cannot reshard to {shards} shards: the collection has {now}; resharding only adds shards (merging is not supported), up to {max}"
    )]
    BadShardCount { shards: u32, now: u32, max: u32 },
    #[error("collection {0:?} is being resharded already; wait until it ends")]
    Resharding(String),
    /// A collection definition no validated request could propose (`field`: what is
    /// wrong): refused on apply, the same on every node.
    #[error("invalid collection definition: {field}: {reason}")]
    BadConfig { field: String, reason: String },
}

impl From<MetaError> for shoal_core::Error {
    fn from(e: MetaError) -> Self {
        use shoal_core::Error;
        match e {
            MetaError::CollectionExists(name) => {
                Error::AlreadyExists(format!("collection {name:?}"))
            }
            MetaError::NoSuchCollection(name) => Error::NotFound(format!("collection {name:?}")),
            e @ MetaError::BeingRestored(_) => Error::NotFound(e.to_string()),
            MetaError::NoSuchCollectionId(id) => Error::NotFound(format!("collection id {id}")),
            MetaError::NoSuchShard { collection, shard } => {
                Error::NotFound(format!("shard {shard} of collection id {collection}"))
            }
            MetaError::NoSuchNode(node) => Error::NotFound(format!("node {node}")),
            MetaError::NoSuchOperation(op) => Error::NotFound(format!("operation {op}")),
            e @ (MetaError::TooFewNodes { .. } | MetaError::BadReplicationFactor(_)) => {
                Error::invalid("replication_factor", e.to_string())
            }
            e @ (MetaError::StalePlacement { .. } | MetaError::Busy { .. }) => {
                Error::Unavailable(format!("{e}; retrying is safe"))
            }
            e @ MetaError::BadAddress(_) => Error::invalid("address", e.to_string()),
            e @ MetaError::BadShardCount { .. } => Error::invalid("shards", e.to_string()),
            MetaError::BadConfig { field, reason } => Error::invalid(field, reason),
            e @ (MetaError::NodeNotActive(_)
            | MetaError::NodeNotEmpty(_)
            | MetaError::NotAReplica { .. }
            | MetaError::AlreadyAReplica { .. }
            | MetaError::BadMove { .. }
            | MetaError::LastReplica { .. }
            | MetaError::BadSplit { .. }
            | MetaError::TooManyShards(_)
            | MetaError::Resharding(_)) => Error::FailedPrecondition(e.to_string()),
        }
    }
}
