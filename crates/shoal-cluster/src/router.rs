//! Routing: proposals to a group's leader and reads from one of its replicas, on this
//! node or through a peer, with one retry loop for both.
//!
//! A request for a group goes to a *target*: this node's own replica (served by the
//! [`Host`] directly, nothing encoded) or a peer (one internal gRPC call, the request
//! postcard-encoded once, on the first remote attempt). Targets are tried in an
//! order ([`Targets`]): a refusal that names the leader sends the next attempt there
//! (once per round, so two nodes naming each other cannot loop); when every target of
//! a round failed, the router pauses [`RETRY_PAUSE`] and starts a new round, until the
//! request timeout. Only errors that [`ClusterError::is_retryable`] names are retried;
//! the rest end the request at once. A node that answers
//! [`ClusterError::NodeFailed`] (its storage failed, or its replica's group stopped:
//! that does not heal before it restarts) is not tried again by the request, and
//! when no other target is left the refusal is the answer, at once.
//!
//! **Writes** start at the leader this node believes in (its own replica's view), else
//! the preferred leader. Retrying is safe: upserts and deletes are idempotent, so an
//! entry committed twice (a retry after a lost reply) leaves the same state.
//!
//! **A target that stops leading mid-call** (paused, cut off) would hold the call
//! until keepalive finds its connection dead (seconds after the election that replaced
//! it). When this node hosts a replica of the group, the call is abandoned as soon as
//! that replica learns of a newer leader ([`Host::leader_moved_from`]), as
//! [`ClusterError::LeaderChanged`] (a write's outcome unknown, retried at the new
//! leader).
//!
//! **Reads** go, for `EVENTUAL` and `SESSION`, to this node's own replica if it has
//! one, else to the others in an order rotated by group (spreading load); this
//! node's own replica goes last when this node failed (it serves, but no longer
//! catches up); for `STRONG`, to the leader, which confirms its leadership
//! (openraft's read index) before reading.
//!
//! The router must never serve a request itself (the host does) nor decide what a
//! request means (the database layer does).

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use shoal_meta::{META_GROUP, NodeId};
use shoal_proto::internal::v1::{GroupCall, cluster_internal_client::ClusterInternalClient};
use shoal_raft::network::{MAX_RAFT_MESSAGE, Peers};
use shoal_raft::{Command, Reply};

use crate::Consistency;
use crate::error::{ClusterError, Op, Result};
use crate::export::Export;
use crate::host::Host;
use crate::wire::{
    MembershipChange, MembershipView, NodeReport, ReadCall, ReadResult, decode, encode,
};

/// Pause between two rounds of attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The internal calls a node makes to a peer.
#[derive(Clone, Copy)]
pub(crate) enum Rpc {
    Propose,
    Read,
    Status,
    Elect,
    Membership,
    Transfer,
    Join,
    Split,
}

/// The order in which one request tries nodes. See the module doc.
#[derive(Debug)]
pub(crate) struct Targets {
    order: Vec<NodeId>,
    next: usize,
    /// Nodes that failed (`NodeFailed`): never tried again.
    failed: Vec<NodeId>,
    /// Only the group's leader answers (writes, STRONG reads): a call waiting on a
    /// node that stopped leading is given up (see the module doc).
    leaders: bool,
}

impl Targets {
    pub fn new(order: Vec<NodeId>) -> Targets {
        Targets {
            order,
            next: 0,
            failed: Vec::new(),
            leaders: false,
        }
    }

    /// Targets for a request only the group's leader answers.
    pub fn leaders(order: Vec<NodeId>) -> Targets {
        Targets {
            leaders: true,
            ..Targets::new(order)
        }
    }

    /// Never tries `node` again; false if no target is left.
    fn drop_failed(&mut self, node: NodeId) -> bool {
        if let Some(i) = self.order.iter().position(|t| *t == node) {
            self.order.remove(i);
            if i < self.next {
                self.next -= 1;
            }
        }
        self.failed.push(node);
        !self.order.is_empty()
    }

    /// The next node to try this round.
    fn next(&mut self) -> Option<NodeId> {
        let t = self.order.get(self.next).copied();
        self.next += 1;
        t
    }

    /// Tries `leader` next, unless this round tried it already.
    fn follow(&mut self, leader: NodeId) {
        if self.order[..self.next].contains(&leader) || self.failed.contains(&leader) {
            return;
        }
        self.order.retain(|t| *t != leader);
        self.order.insert(self.next, leader);
    }

    /// Starts a new round, `first` first if given.
    fn restart(&mut self, first: Option<NodeId>) {
        self.next = 0;
        if let Some(f) = first.filter(|f| !self.failed.contains(f)) {
            self.order.retain(|t| *t != f);
            self.order.insert(0, f);
        }
    }
}

/// Sends requests to groups; see the module doc. Cheap to share.
pub(crate) struct Router {
    host: Arc<Host>,
    peers: Peers,
    timeout: Duration,
}

impl Router {
    pub fn new(host: Arc<Host>, timeout: Duration) -> Router {
        Router {
            peers: host.peers.clone(),
            host,
            timeout,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.host.id
    }

    /// How long one request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The host whose replicas the router reaches without the network.
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Sends one call to node `to` and decodes its `Result<T, ClusterError>` reply.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        to: NodeId,
        rpc: Rpc,
        group: u64,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<T> {
        let addr = self
            .host
            .state()
            .nodes
            .get(&to)
            .map(|n| n.addr.clone())
            .ok_or(ClusterError::UnknownNode(to))?;
        call_at(&self.peers, &addr, to, rpc, group, payload, timeout).await
    }

    /// Tries `attempt` on `targets` (with the time left) until one succeeds, an
    /// error is final, or the request timeout passes. The one retry loop of the
    /// router: see the module doc.
    async fn retry<'a, T>(
        &'a self,
        op: Op,
        group: u64,
        mut targets: Targets,
        attempt: impl Fn(NodeId, Duration) -> BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        let mut last = ClusterError::NotHosted {
            node: self.id(),
            group,
        };
        // Whether any attempt may have appended the write (its outcome is unknown).
        let mut maybe_applied = false;
        loop {
            let Some(target) = targets.next() else {
                if Instant::now() + RETRY_PAUSE >= deadline {
                    return Err(ClusterError::GaveUp {
                        op,
                        timeout_ms: self.timeout.as_millis() as u64,
                        last: Box::new(last),
                        maybe_applied,
                    });
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                let state = self.host.state();
                if state.is_retired(group) {
                    // Split meanwhile: the caller routes the request again.
                    return Err(ClusterError::Resharded { group });
                }
                let (collection, _) = shoal_meta::location_of(group);
                if group != META_GROUP && state.collection_by_id(collection).is_none() {
                    // Deleted meanwhile: retrying could only reach a collection created
                    // again under the same name, never this one.
                    return Err(shoal_meta::MetaError::NoSuchCollectionId(collection).into());
                }
                let first = match op {
                    Op::Write => self.host.leader_hint(group),
                    Op::Read => None,
                };
                targets.restart(first);
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = if target == self.id() || !targets.leaders {
                attempt(target, left).await
            } else {
                // A peer that stopped leading while the call waits on it (paused, cut
                // off) is given up as soon as this node's replica sees a new leader.
                tokio::select! {
                    outcome = attempt(target, left) => outcome,
                    leader = self.host.leader_moved_from(group, target) => {
                        Err(ClusterError::LeaderChanged {
                            node: target,
                            group,
                            leader: Some(leader),
                        })
                    }
                }
            };
            match outcome {
                Ok(v) => return Ok(v),
                // Refused before appending by a node that cannot serve the group
                // until it restarts: the others may; with none left, that is the
                // answer now rather than after the timeout.
                Err(
                    e @ ClusterError::NodeFailed {
                        in_flight: false, ..
                    },
                ) => {
                    if !targets.drop_failed(target) {
                        if maybe_applied {
                            return Err(ClusterError::GaveUp {
                                op,
                                timeout_ms: self.timeout.as_millis() as u64,
                                last: Box::new(e),
                                maybe_applied,
                            });
                        }
                        return Err(e);
                    }
                    last = e;
                }
                Err(e) if e.is_retryable() => {
                    if let Some(leader) = e.leader_hint() {
                        targets.follow(leader);
                    }
                    maybe_applied |= op == Op::Write && e.maybe_applied();
                    last = e;
                }
                // A final error after an attempt that may have appended the write
                // must not read as "not written".
                Err(e) if maybe_applied && !e.maybe_applied() => {
                    return Err(ClusterError::GaveUp {
                        op,
                        timeout_ms: self.timeout.as_millis() as u64,
                        last: Box::new(e),
                        maybe_applied,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits `cmd` in `group`, whose replicas are on `replicas`, and returns what
    /// applying it returned (a state machine's rejection included).
    pub async fn propose(&self, group: u64, replicas: &[NodeId], cmd: Command) -> Result<Reply> {
        let hint = self.host.leader_hint(group);
        let mut order: Vec<NodeId> = hint.into_iter().collect();
        order.extend(replicas.iter().filter(|r| Some(**r) != hint));
        if order.is_empty() {
            return Err(ClusterError::Internal(format!(
                "group {group} has no replicas"
            )));
        }
        let (cmd, wire) = (&cmd, OnceLock::new());
        let wire = &wire;
        self.retry(Op::Write, group, Targets::leaders(order), |target, left| {
            Box::pin(async move {
                if target == self.id() {
                    self.host.propose_local(group, cmd.clone(), left).await
                } else {
                    let payload = encoded(wire, cmd)?;
                    self.call(target, Rpc::Propose, group, payload, left).await
                }
            })
        })
        .await
    }

    /// Changes `group`'s membership at its leader (see [`MembershipChange`]) and
    /// returns the membership as the leader sees it afterwards.
    pub async fn membership(
        &self,
        group: u64,
        members: &[NodeId],
        change: MembershipChange,
    ) -> Result<MembershipView> {
        let hint = self.host.leader_hint(group);
        let mut order: Vec<NodeId> = hint.into_iter().collect();
        order.extend(members.iter().filter(|r| Some(**r) != hint));
        let (change, wire) = (&change, OnceLock::new());
        let wire = &wire;
        self.retry(Op::Write, group, Targets::leaders(order), |target, left| {
            Box::pin(async move {
                if target == self.id() {
                    self.host
                        .membership_local(group, change.clone(), left)
                        .await
                } else {
                    let payload = encoded(wire, change)?;
                    self.call(target, Rpc::Membership, group, payload, left)
                        .await
                }
            })
        })
        .await
    }

    /// Reads `group` (replicas on `replicas`) at the call's consistency.
    pub async fn read(
        &self,
        group: u64,
        replicas: &[NodeId],
        call: ReadCall,
    ) -> Result<ReadResult> {
        let me = self.id();
        let order: Vec<NodeId> = match call.consistency {
            Consistency::Strong => {
                let hint = self.host.leader_hint(group);
                let mut o: Vec<NodeId> = hint.into_iter().collect();
                o.extend(replicas.iter().filter(|r| Some(**r) != hint));
                o
            }
            _ => {
                let n = replicas.len().max(1);
                let rotated = (0..replicas.len()).map(|i| replicas[(i + group as usize) % n]);
                let mut o = Vec::new();
                let here = replicas.contains(&me);
                let failed_here = here && self.host.refusal(group).is_some();
                if here && !failed_here {
                    o.push(me);
                }
                o.extend(rotated.filter(|r| *r != me));
                if failed_here {
                    o.push(me);
                }
                o
            }
        };
        let targets = match call.consistency {
            Consistency::Strong => Targets::leaders(order),
            _ => Targets::new(order),
        };
        let (call, wire) = (&call, OnceLock::new());
        let wire = &wire;
        self.retry(Op::Read, group, targets, |target, left| {
            Box::pin(async move {
                if target == me {
                    self.host.read_local(group, call.clone(), left).await
                } else {
                    let payload = encoded(wire, call)?;
                    self.call(target, Rpc::Read, group, payload, left).await
                }
            })
        })
        .await
    }

    /// Starts a point-in-time copy of shard group `group` (replicas on `replicas`)
    /// at its leader: see the `export` module.
    pub async fn export(&self, group: u64, replicas: &[NodeId]) -> Result<Export> {
        let me = self.id();
        let hint = self.host.leader_hint(group);
        let mut order: Vec<NodeId> = hint.into_iter().collect();
        order.extend(replicas.iter().filter(|r| Some(**r) != hint));
        self.retry(Op::Read, group, Targets::leaders(order), |target, left| {
            Box::pin(async move {
                if target == me {
                    return self.host.export_local(group, left).await;
                }
                let addr = self
                    .host
                    .state()
                    .nodes
                    .get(&target)
                    .map(|n| n.addr.clone())
                    .ok_or(ClusterError::UnknownNode(target))?;
                let unreachable = {
                    let addr = addr.clone();
                    move |reason: String| ClusterError::Unreachable {
                        node: target,
                        addr: addr.clone(),
                        reason,
                        never_sent: false,
                    }
                };
                let channel =
                    self.peers
                        .channel(&addr)
                        .map_err(|reason| ClusterError::Unreachable {
                            node: target,
                            addr: addr.clone(),
                            reason,
                            never_sent: true,
                        })?;
                let mut client =
                    ClusterInternalClient::with_interceptor(channel, self.peers.credential())
                        .max_decoding_message_size(MAX_RAFT_MESSAGE)
                        .max_encoding_message_size(MAX_RAFT_MESSAGE);
                let req = tonic::Request::new(GroupCall {
                    group,
                    payload: Vec::new(),
                    to: target,
                });
                let stream = tokio::time::timeout(left, client.export(req))
                    .await
                    .map_err(|_| unreachable("no answer to an export".into()))?
                    .map_err(|s| ClusterError::Unreachable {
                        node: target,
                        addr: addr.clone(),
                        reason: s.message().to_string(),
                        never_sent: Peers::never_sent(&s),
                    })?
                    .into_inner();
                Export::from_wire(target, stream, unreachable).await
            })
        })
        .await
    }

    /// The metadata as its leader has it now (read at the leader, linearizably).
    pub async fn read_metadata(&self, voters: &[NodeId]) -> Result<shoal_meta::ClusterState> {
        let call = ReadCall {
            consistency: Consistency::Strong,
            min_applied: 0,
            op: crate::wire::ReadOp::ClusterState,
        };
        match self.read(META_GROUP, voters, call).await? {
            ReadResult::ClusterState(s) => Ok(s),
            _ => Err(ClusterError::Internal(
                "unexpected reply to a metadata read".into(),
            )),
        }
    }

    /// What `node` reports of itself (its replicas, its load), within `timeout`.
    pub async fn report_of(
        &self,
        node: NodeId,
        digests: bool,
        timeout: Duration,
    ) -> Result<NodeReport> {
        if node == self.id() {
            return self.host.report(digests).await;
        }
        self.call(node, Rpc::Status, 0, encode(&digests)?, timeout)
            .await
    }

    /// Asks `node` to start an election for `group` now (a leader transfer).
    pub async fn elect(&self, node: NodeId, group: u64, timeout: Duration) -> Result<()> {
        self.call(node, Rpc::Elect, group, encode(&())?, timeout)
            .await
    }
}

/// Sends one call to the node at `addr` (`to`: its id, 0 if unknown) and decodes its
/// `Result<T, ClusterError>` reply.
pub(crate) async fn call_at<T: serde::de::DeserializeOwned>(
    peers: &Peers,
    addr: &str,
    to: NodeId,
    rpc: Rpc,
    group: u64,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<T> {
    let unreachable = |reason: String, never_sent: bool| ClusterError::Unreachable {
        node: to,
        addr: addr.to_string(),
        reason,
        never_sent,
    };
    let channel = peers
        .channel(addr)
        .map_err(|reason| unreachable(reason, true))?;
    let mut client = ClusterInternalClient::with_interceptor(channel, peers.credential())
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE);
    let mut req = tonic::Request::new(GroupCall { group, payload, to });
    req.set_timeout(timeout.max(Duration::from_millis(50)));
    let reply = match rpc {
        Rpc::Propose => client.propose(req).await,
        Rpc::Read => client.read(req).await,
        Rpc::Status => client.status(req).await,
        Rpc::Elect => client.elect(req).await,
        Rpc::Membership => client.membership(req).await,
        Rpc::Transfer => client.transfer(req).await,
        Rpc::Join => client.join(req).await,
        Rpc::Split => client.split(req).await,
    }
    .map_err(|s| unreachable(s.message().to_string(), Peers::never_sent(&s)))?;
    decode::<Result<T>>(&reply.into_inner().payload)?
}

/// `value` encoded for the wire, once per request however many peers it visits.
fn encoded<T: serde::Serialize>(cell: &OnceLock<Vec<u8>>, value: &T) -> Result<Vec<u8>> {
    if let Some(b) = cell.get() {
        return Ok(b.clone());
    }
    let b = encode(value)?;
    Ok(cell.get_or_init(|| b).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_hints_once_per_round() {
        let mut t = Targets::new(vec![1, 2, 3]);
        assert_eq!(t.next(), Some(1));
        // Node 1 names node 3: tried next.
        t.follow(3);
        assert_eq!(t.next(), Some(3));
        // Node 3 names node 1, already tried this round: ignored.
        t.follow(1);
        assert_eq!(t.next(), Some(2));
        assert_eq!(t.next(), None);
        // A new round starts with the leader hint.
        t.restart(Some(2));
        assert_eq!(t.next(), Some(2));
        assert_eq!(t.next(), Some(1));
        assert_eq!(t.next(), Some(3));
        assert_eq!(t.next(), None);
        // A hint to a node outside the list is tried too.
        t.restart(None);
        t.follow(9);
        assert_eq!(t.next(), Some(9));
    }

    #[test]
    fn a_failed_node_is_never_tried_again() {
        let mut t = Targets::new(vec![3, 1, 2]);
        assert_eq!(t.next(), Some(3));
        // Node 3 failed: dropped, the round goes on with the others.
        assert!(t.drop_failed(3));
        assert_eq!(t.next(), Some(1));
        // Node 1 still believes node 3 leads: the hint is ignored.
        t.follow(3);
        assert_eq!(t.next(), Some(2));
        assert_eq!(t.next(), None);
        // Nor does a new round start there.
        t.restart(Some(3));
        assert_eq!(t.next(), Some(1));
        assert_eq!(t.next(), Some(2));
        assert_eq!(t.next(), None);
        // With the last node gone, nothing is left to try.
        assert!(t.drop_failed(1));
        assert!(!t.drop_failed(2));
    }

    use std::time::Duration;

    use shoal_core::{Error, PointId, SearchRequest};

    use crate::testing::{TestCluster, config, points, strong};
    use crate::{Node, ReadOptions};

    /// The node that leads shard `shard` of `collection`, as the cluster reports it.
    async fn leader_of(node: &Node, collection: &str, shard: u32) -> u64 {
        for _ in 0..100 {
            let status = node.status(false).await.unwrap();
            let leader = status
                .collections
                .iter()
                .find(|c| c.name == collection)
                .and_then(|c| c.shards.iter().find(|s| s.shard == shard))
                .and_then(|s| s.leader);
            if let Some(l) = leader {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("shard {shard} of {collection} has no leader");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_reach_every_shard_through_any_node() {
        let cluster = TestCluster::start(3).await;
        // One replica per shard: most shards live on another node than the one asked.
        let info = cluster
            .node(1)
            .create_collection(config("c", 3, 1))
            .await
            .unwrap();
        assert_eq!(info.shards.len(), 3);
        let out = cluster.node(1).upsert("c", points(0..300)).await.unwrap();
        assert_eq!(out.count, 300);
        assert_eq!(out.token.shards.len(), 3, "the write touched every shard");
        for id in 1..=3 {
            let node = cluster.node(id);
            assert_eq!(
                node.count("c", None, strong()).await.unwrap(),
                300,
                "node {id}"
            );
            let got = node
                .get(
                    "c",
                    vec![PointId::Num(7), PointId::Num(299), PointId::Num(1000)],
                    false,
                    false,
                    strong(),
                )
                .await
                .unwrap();
            let ids: Vec<PointId> = got.iter().map(|p| p.id).collect();
            assert_eq!(ids, vec![PointId::Num(7), PointId::Num(299)]);
            let hits = node
                .search(
                    "c",
                    SearchRequest {
                        vector: vec![150.2, 1.0],
                        top_k: 3,
                        ef: None,
                        filter: None,
                        with_payload: false,
                        with_vector: false,
                    },
                    ReadOptions::default(),
                )
                .await
                .unwrap();
            let ids: Vec<PointId> = hits.iter().map(|h| h.id).collect();
            assert_eq!(
                ids,
                vec![PointId::Num(150), PointId::Num(151), PointId::Num(149)]
            );
        }
        // Errors keep their kind across nodes.
        assert!(matches!(
            cluster.node(2).upsert("nope", points(0..1)).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            cluster.node(3).create_collection(config("c", 1, 1)).await,
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            cluster.node(3).create_collection(config("d", 1, 4)).await,
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_token_beyond_the_log_is_refused_not_retried() {
        let cluster = TestCluster::start(3).await;
        cluster
            .node(1)
            .create_collection(config("c", 1, 3))
            .await
            .unwrap();
        let written = cluster.node(1).upsert("c", points(0..10)).await.unwrap();
        let session = |token| ReadOptions {
            consistency: crate::Consistency::Session,
            token: Some(token),
        };
        for id in 1..=3 {
            // A token naming an index no write produced: INVALID_ARGUMENT naming the
            // token, through the leader and through followers alike, rather than an
            // UNAVAILABLE that a client would retry forever.
            let mut bogus = written.token.clone();
            bogus.shards.insert(0, 1_000_000_000_000);
            let r = cluster
                .node(id)
                .get("c", vec![PointId::Num(1)], false, false, session(bogus))
                .await;
            match r {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "read.token");
                    assert!(reason.contains("beyond its log"), "{reason}");
                }
                other => panic!("node {id}: {other:?}"),
            }
            // A real token reads its write.
            let got = cluster
                .node(id)
                .get(
                    "c",
                    vec![PointId::Num(1)],
                    false,
                    false,
                    session(written.token.clone()),
                )
                .await
                .unwrap();
            assert_eq!(got.len(), 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_racing_a_collection_delete_get_not_found_never_a_retry() {
        let cluster = TestCluster::start(3).await;
        cluster
            .node(1)
            .create_collection(config("c", 2, 3))
            .await
            .unwrap();
        cluster.node(2).upsert("c", points(0..10)).await.unwrap();
        // Writers through nodes 2 and 3 until the collection is gone; node 1 deletes it
        // while they write. Each write either commits or is NOT_FOUND: never an
        // UNAVAILABLE "retry" (that retry could land in a collection recreated under
        // the same name).
        let writers: Vec<_> = (0..6u64)
            .map(|w| {
                let node = cluster.node(2 + w % 2).clone();
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for i in 0..2_000u64 {
                        let id = 1_000 + w * 10_000 + i;
                        match node.upsert("c", points(id..id + 1)).await {
                            Ok(_) => {}
                            Err(e) => {
                                outcomes.push(e);
                                break;
                            }
                        }
                    }
                    outcomes
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.node(1).delete_collection("c").await.unwrap();
        for w in writers {
            let ended = w.await.unwrap();
            assert_eq!(ended.len(), 1, "every writer meets the delete: {ended:?}");
            assert!(matches!(ended[0], Error::NotFound(_)), "{ended:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_tells_a_call_waiting_on_a_silent_leader_who_leads_now() {
        let mut cluster = TestCluster::start(3).await;
        cluster
            .node(1)
            .create_collection(config("c", 1, 3))
            .await
            .unwrap();
        cluster.node(1).upsert("c", points(0..10)).await.unwrap();
        let leader = leader_of(cluster.node(1), "c", 0).await;
        let group = cluster.node(1).cluster_state().collections["c"].group(0);
        let watcher = (1..=3).find(|i| *i != leader).unwrap();
        let host = cluster.node(watcher).database().router.host().clone();
        let moved = tokio::spawn(async move { host.leader_moved_from(group, leader).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!moved.is_finished(), "the leader is still there");
        // Paused or cut off: connections hang rather than fail.
        cluster.silence(leader).await;
        let now = tokio::time::timeout(Duration::from_secs(30), moved)
            .await
            .expect("a new leader within 30 s")
            .unwrap();
        assert_ne!(now, leader);
        assert!(cluster.running().contains(&now), "{now}");
        // A write through the watcher reaches it.
        cluster
            .node(watcher)
            .upsert("c", points(10..20))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_follow_the_leader_when_it_stops_and_a_lost_majority_gives_up() {
        let mut cluster = TestCluster::start(3).await;
        cluster
            .node(1)
            .create_collection(config("c", 1, 3))
            .await
            .unwrap();
        cluster.node(1).upsert("c", points(0..10)).await.unwrap();
        let leader = leader_of(cluster.node(1), "c", 0).await;
        cluster.stop(leader).await;
        let others = cluster.running();
        // Through either survivor: the write waits for the election and reaches the
        // new leader, wherever it is.
        for (i, id) in others.iter().enumerate() {
            let from = 10 + 10 * i as u64;
            cluster
                .node(*id)
                .upsert("c", points(from..from + 10))
                .await
                .unwrap();
        }
        assert_eq!(
            cluster
                .node(others[0])
                .count("c", None, strong())
                .await
                .unwrap(),
            30
        );
        // The stopped node comes back and catches up.
        cluster.restart(leader).await;
        let mut seen = 0;
        for _ in 0..100 {
            seen = cluster
                .node(leader)
                .count("c", None, ReadOptions::default())
                .await
                .unwrap();
            if seen == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, 30, "the restarted node caught up");
        // With two of three replicas gone no write can commit. Through the shard's
        // leader the entry is appended to its log first: its outcome is unknown (it
        // commits if that log wins the next election), and the error says so — never
        // "not written".
        let leader = leader_of(cluster.node(leader), "c", 0).await;
        for id in cluster.running().into_iter().filter(|i| *i != leader) {
            cluster.stop(id).await;
        }
        match cluster.node(leader).upsert("c", points(100..101)).await {
            Err(Error::OutcomeUnknown(m)) => {
                assert!(m.contains("may be committed or still commit"), "{m}");
                assert!(m.contains("Retrying the whole write is safe"), "{m}");
            }
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
        // Through a follower alone (the others stopped, their ports closed): no leader
        // takes it and no peer is reached, so it is provably not written ...
        let follower = (1..=3).find(|i| *i != leader).unwrap();
        cluster.stop(leader).await;
        cluster.restart(follower).await;
        match cluster.node(follower).upsert("c", points(200..201)).await {
            Err(Error::Unavailable(m)) => {
                assert!(m.contains("not written"), "{m}");
                assert!(!m.contains("outcome unknown"), "{m}");
            }
            other => panic!("expected UNAVAILABLE (not written), got {other:?}"),
        }
        // ... and never shows up once the cluster is whole again.
        for id in (1..=3).filter(|i| *i != follower) {
            cluster.restart(id).await;
        }
        let mut found = None;
        for _ in 0..100 {
            match cluster
                .node(follower)
                .get("c", vec![PointId::Num(200)], false, false, strong())
                .await
            {
                Ok(got) => {
                    found = Some(got.len());
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        assert_eq!(found, Some(0), "a write reported as not written exists");
    }
}
