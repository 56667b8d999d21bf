//! Why the metadata state refused a command: the one error type of `shoal-meta`.

use serde::{Deserialize, Serialize};

/// A command the state forbids. Decided by the state alone, so every replica of the
/// metadata group refuses the same commands the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetaError {
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    #[error("collection {0:?} does not exist")]
    NoSuchCollection(String),
    /// More replicas per shard than the cluster has active nodes.
    #[error("{replicas} replicas need as many nodes; the cluster has {nodes}")]
    TooFewNodes { replicas: u32, nodes: usize },
    /// The proposer placed a shard against a view of the nodes that changed since
    /// (a node left or stopped taking replicas): place again and retry.
    #[error("shard {shard} was placed on nodes that are no longer distinct active nodes")]
    StalePlacement { shard: u32 },
}

impl From<MetaError> for shoal_core::Error {
    fn from(e: MetaError) -> Self {
        use shoal_core::Error;
        match e {
            MetaError::CollectionExists(name) => {
                Error::AlreadyExists(format!("collection {name:?}"))
            }
            MetaError::NoSuchCollection(name) => Error::NotFound(format!("collection {name:?}")),
            e @ MetaError::TooFewNodes { .. } => {
                Error::invalid("replication_factor", e.to_string())
            }
            e @ MetaError::StalePlacement { .. } => {
                Error::Unavailable(format!("{e}; retrying is safe"))
            }
        }
    }
}
