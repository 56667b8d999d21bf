//! What nodes send each other over `shoal.internal.v1.ClusterInternal`, postcard-
//! encoded: requests ([`ReadCall`], `shoal_raft::Command` for proposals) and replies,
//! which are always `Result<T, ClusterError>` so a refusal keeps its kind across the
//! wire. Internal: nodes of one release speak it; nothing here is public API.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_core::{Filter, PointId, RetrievedPoint, ScoredPoint, SearchRequest};
use shoal_shard::ShardStats;

use crate::Consistency;
use crate::error::ClusterError;

/// A read of one shard replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReadCall {
    pub consistency: Consistency,
    /// SESSION: the log index the replica must have applied first.
    pub min_applied: u64,
    pub op: ReadOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
/// Requests and filters are shared, not copied, between the shards of one request
/// (a `has_id` filter may hold millions of ids); on the wire they encode as the
/// values themselves.
pub(crate) enum ReadOp {
    Search(std::sync::Arc<Vec<SearchRequest>>),
    Get {
        ids: Vec<PointId>,
        with_payload: bool,
        with_vector: bool,
    },
    Scroll {
        offset: Option<PointId>,
        limit: usize,
        filter: Option<std::sync::Arc<Filter>>,
        with_payload: bool,
        with_vector: bool,
    },
    Count(Option<std::sync::Arc<Filter>>),
    Stats,
    /// Of the metadata group: its state, read linearizably at its leader.
    ClusterState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ReadResult {
    Search(Vec<Vec<ScoredPoint>>),
    Points(Vec<RetrievedPoint>),
    Count(u64),
    Stats(ShardStats),
    ClusterState(shoal_meta::ClusterState),
}

/// A split's child as the operator asks a parent replica to build it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SplitChild {
    /// The child's shard id.
    pub shard: u32,
    /// Its half of the parent's hash range, both ends inclusive.
    pub first: u64,
    pub last: u64,
}

impl SplitChild {
    /// The child as the state machine builds it.
    pub fn spec(&self) -> shoal_raft::ChildSpec {
        shoal_raft::ChildSpec {
            shard: self.shard,
            first: self.first,
            last: self.last,
        }
    }
}

/// Build (if not built) and open a split's children from the receiver's replica of
/// the sealed parent (`GroupCall::group`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SplitCall {
    pub children: [SplitChild; 2],
    /// The children groups' voters (the parent's replicas) and their addresses.
    pub voters: Vec<(u64, String)>,
}

/// A parent replica's answer to a [`SplitCall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SplitProgress {
    /// Its replica of the parent has not applied the seal yet.
    NotSealed,
    /// Not sealed, and its replica of the parent is compacting its index (a child of
    /// an earlier split) or saving a checkpoint for the children to start from: the
    /// split waits, so that the shard's writes do not wait for that work after the
    /// seal.
    Compacting,
    /// Not sealed, and copying the children from its replica of the parent ahead of
    /// the seal (`shoal_shard::Shard::split_ahead`): the split waits for the copies,
    /// so that the pause after the seal only brings them up to date.
    Copying,
    /// Building the children.
    Building,
    /// Both children are open here; the leader each knows of.
    Open { leaders: [Option<u64>; 2] },
}

/// What a node reports of itself: its replicas and its load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub replicas: Vec<ReplicaReport>,
    pub load: crate::load::NodeLoad,
    /// Why the node failed, if it did (see the `failure` module).
    pub failure: Option<crate::failure::Failure>,
}

/// One replica as its node reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub group: u64,
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown`, or `failed` (its
    /// group stopped: see `failure`).
    pub state: String,
    /// Why the replica's Raft group stopped, if it did.
    pub failure: Option<String>,
    pub leader: Option<u64>,
    /// The Raft term the replica is in.
    pub term: u64,
    pub applied: u64,
    pub points: u64,
    pub digest: Option<u64>,
    /// Stored records the replica quarantined as invalid (`shoal_shard::ShardStats`).
    pub quarantined: u64,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ClusterError> {
    postcard::to_stdvec(v).map_err(|e| ClusterError::Internal(format!("encoding: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, ClusterError> {
    postcard::from_bytes(b)
        .map_err(|e| ClusterError::Internal(format!("decoding a peer's message: {e}")))
}

/// A change of a group's membership, made by its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    /// Nothing: just describe the membership.
    Describe,
    /// Add `node`, reachable at `addr`, as a learner (no-op if it is a member).
    AddLearner { node: u64, addr: String },
    /// Make exactly these nodes the voters (joint consensus); members left out are
    /// removed from the group. No-op if they are the voters already.
    SetVoters {
        voters: std::collections::BTreeSet<u64>,
    },
    /// Remove `node` if it is a learner of the group.
    RemoveLearner { node: u64 },
}

/// A group's membership as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MembershipView {
    pub leader: u64,
    pub voters: std::collections::BTreeSet<u64>,
    pub learners: std::collections::BTreeSet<u64>,
    /// A joint configuration (a voter change half done) is in force.
    pub joint: bool,
    /// The leader's last log index.
    pub last_index: u64,
    /// Per member, the last log index the leader knows it holds.
    pub matched: std::collections::BTreeMap<u64, Option<u64>>,
}

impl MembershipView {
    /// True if `node` holds the log up to `slack` entries behind the leader.
    pub fn caught_up(&self, node: u64, slack: u64) -> bool {
        node == self.leader
            || self
                .matched
                .get(&node)
                .copied()
                .flatten()
                .is_some_and(|m| m + slack >= self.last_index)
    }
}

/// A node asking to join the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    /// Its internal address.
    pub addr: String,
    /// The identity it keeps in its data directory.
    pub uuid: String,
    /// The id it got when it joined before (it rejoins, perhaps at a new address).
    pub id: Option<u64>,
}
