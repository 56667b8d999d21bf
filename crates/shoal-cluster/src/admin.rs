//! Cluster administration from any node: nodes joining, draining a node, moving a
//! replica by hand, changing a collection's replication factor, and asking the
//! scheduler for (or carrying out) a rebalancing plan.
//!
//! [`Admin`] only records intentions in the metadata (a node's state, an operation,
//! a replication factor): the operator on the metadata leader carries them out,
//! step by step. It must never change a group's membership itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_meta::{ClusterState, META_GROUP, MetaCommand, MetaError, NodeId, NodeState};
use shoal_raft::auth::InternalSecurity;
use shoal_raft::network::Peers;
use shoal_raft::{Command, Rejection};

use crate::error::{ClusterError, Result};
use crate::operator::{Memory, Operator};
use crate::options::Elasticity;
use crate::router::{Router, Rpc, call_at};
use crate::scheduler::{self, Planned};
use crate::wire::{JoinRequest, encode};

/// See the module doc.
pub(crate) struct Admin {
    router: Arc<Router>,
    elasticity: Elasticity,
}

impl Admin {
    pub fn new(router: Arc<Router>, elasticity: Elasticity) -> Admin {
        Admin { router, elasticity }
    }

    /// The metadata group's members, once this node knows them.
    async fn voters(&self) -> Result<Vec<NodeId>> {
        Ok(self
            .router
            .host()
            .wait_formed(self.router.timeout())
            .await?
            .nodes
            .keys()
            .copied()
            .collect())
    }

    /// Proposes a metadata command; returns the state once this node applied it.
    async fn propose(&self, cmd: MetaCommand) -> Result<Arc<ClusterState>> {
        let host = self.router.host();
        let voters = self.voters().await?;
        let reply = self
            .router
            .propose(META_GROUP, &voters, Command::Meta(cmd))
            .await?;
        match reply.rejected {
            None => host.wait_state(reply.applied, self.router.timeout()).await,
            Some(Rejection::Meta(e)) => Err(e.into()),
            Some(e) => Err(ClusterError::internal(e)),
        }
    }

    /// Registers a joining node; returns its id (the same id again for the same
    /// `uuid`).
    pub async fn register_node(&self, join: JoinRequest) -> Result<NodeId> {
        if join.uuid.is_empty() {
            return Err(
                shoal_core::Error::invalid("uuid", "a joining node needs an identity").into(),
            );
        }
        if let Some(id) = join.id {
            // A node rejoining: it must be the member it says it is, and not removed.
            let fresh = self.router.read_metadata(&self.voters().await?).await?;
            if fresh.removed.contains(&id) {
                return Err(ClusterError::Removed(id));
            }
            if fresh.node_by_uuid(&join.uuid) != Some(id) {
                return Err(shoal_core::Error::invalid(
                    "node-identity",
                    format!(
                        "node {id} joined with another identity; this data directory does not \
                         belong to this cluster's node {id}"
                    ),
                )
                .into());
            }
            if fresh.nodes.get(&id).is_some_and(|n| n.addr == join.addr) {
                return Ok(id);
            }
        }
        let uuid = join.uuid.clone();
        let state = self
            .propose(MetaCommand::AddNode {
                addr: join.addr,
                uuid,
            })
            .await?;
        let id = state.node_by_uuid(&join.uuid).ok_or_else(|| {
            ClusterError::Internal("the joined node is not in the metadata".into())
        })?;
        tracing::info!(node = id, "a node joined the cluster");
        Ok(id)
    }

    /// Starts draining `node`: its replicas move to other nodes, then it leaves the
    /// cluster. Refused if the nodes left could not hold every collection's
    /// replication factor.
    pub async fn drain(&self, node: NodeId) -> Result<()> {
        let state = self.router.host().state();
        let meta = state
            .nodes
            .get(&node)
            .ok_or(ClusterError::Request(MetaError::NoSuchNode(node).into()))?;
        if meta.state == NodeState::Draining {
            return Ok(());
        }
        let left = state.active_nodes().len().saturating_sub(1);
        if let Some(cm) = state
            .collections
            .values()
            .find(|c| c.config.replication_factor as usize > left)
        {
            return Err(shoal_core::Error::FailedPrecondition(format!(
                "draining node {node} would leave {left} active nodes, fewer than the {} \
                 replicas per shard of collection {:?}; add a node or lower its \
                 replication factor first",
                cm.config.replication_factor, cm.config.name
            ))
            .into());
        }
        self.propose(MetaCommand::SetNodeState {
            node,
            state: NodeState::Draining,
        })
        .await?;
        tracing::info!(node, "draining");
        Ok(())
    }

    /// Moves (adds, removes) one replica of shard `shard` of collection `name`;
    /// returns the operation's id.
    pub async fn move_replica(
        &self,
        name: &str,
        shard: u32,
        from: Option<NodeId>,
        to: Option<NodeId>,
    ) -> Result<u64> {
        let state = self.router.host().state();
        let cm = state
            .collections
            .get(name)
            .ok_or_else(|| MetaError::NoSuchCollection(name.to_string()))?;
        let state = self
            .propose(MetaCommand::StartMove {
                collection: cm.id,
                shard,
                from,
                to,
            })
            .await?;
        state
            .operation_on(cm.id, shard)
            .map(|o| o.id)
            .ok_or_else(|| ClusterError::Internal("the move is not in the metadata".into()))
    }

    /// Sets how many replicas each shard of collection `name` should have; the
    /// scheduler adds or removes them.
    pub async fn set_replication_factor(&self, name: &str, replication_factor: u32) -> Result<()> {
        self.propose(MetaCommand::SetReplicationFactor {
            collection: name.to_string(),
            replication_factor,
        })
        .await?;
        Ok(())
    }

    /// Starts splitting collection `name`'s shards until it has `shards` of them
    /// (see `MetaCommand::Reshard`); the operator drives the splits.
    pub async fn reshard(&self, name: &str, shards: u32) -> Result<()> {
        self.propose(MetaCommand::Reshard {
            collection: name.to_string(),
            shards,
        })
        .await?;
        Ok(())
    }

    /// What the scheduler would do now; unless `dry_run`, does it.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Vec<Planned>> {
        let operator = Operator::new(
            self.router.clone(),
            self.elasticity.clone(),
            Arc::new(Memory::default()),
        );
        let state = self.router.host().state();
        let observed = operator.observe(&state).await;
        let planned = scheduler::plan(&state, &observed, &operator.policy());
        if !dry_run {
            for p in &planned {
                self.propose(p.command.clone()).await?;
            }
        }
        Ok(planned)
    }
}

/// Asks the node at `addr` to register this node (its internal address
/// `advertise`, its identity `uuid`); returns the id the cluster gave it. Retries
/// while the cluster cannot answer, up to `timeout`.
pub(crate) async fn join_cluster(
    addr: &str,
    advertise: &str,
    uuid: &str,
    id: Option<NodeId>,
    security: &InternalSecurity,
    timeout: Duration,
) -> Result<NodeId> {
    let peers = Peers::new(security);
    let deadline = Instant::now() + timeout;
    let req = encode(&JoinRequest {
        addr: advertise.to_string(),
        uuid: uuid.to_string(),
        id,
    })?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match call_at::<NodeId>(&peers, addr, 0, Rpc::Join, 0, req.clone(), left).await {
            Ok(id) => return Ok(id),
            Err(e) if e.is_retryable() && Instant::now() + Duration::from_secs(1) < deadline => {
                tracing::warn!(error = %e, join = addr, "joining: retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
