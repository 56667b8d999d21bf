//! Routing: proposals to a group's leader and reads from one of its replicas, local
//! or through a peer, with retries while leadership moves.
//!
//! **Writes** go to the leader this node believes in (its own replica's view, else
//! the preferred leader). A node that does not lead answers with the leader it knows;
//! the write follows that hint. While no leader is known (an election), the write
//! waits and tries the group's replicas in turn until the request timeout, then
//! fails with `UNAVAILABLE`. Retrying is safe: upserts and deletes are idempotent, so
//! an entry committed twice (a retry after a lost reply) leaves the same state.
//!
//! **Reads** go, for `EVENTUAL` and `SESSION`, to this node's own replica if it has
//! one, else to the others in an order rotated by group (spreading load); for
//! `STRONG`, to the leader, which confirms its leadership (openraft's read index)
//! before reading. A replica that cannot serve (not open yet, not caught up within
//! the timeout, not leader) is skipped for the next.

use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use rayon::prelude::*;
use shoal_core::{Error, Result};
use shoal_proto::internal::v1::{GroupCall, cluster_internal_client::ClusterInternalClient};
use shoal_raft::network::MAX_RAFT_MESSAGE;
use shoal_raft::{Command, META_GROUP, ShardReply};

use crate::Consistency;
use crate::node::Node;
use crate::wire::{ReadCall, ReadOp, ReadResult, Refusal, ReplicaReport, decode, encode};

/// What confirming leadership for a read returned, within a timeout.
type Confirmed = Result<
    std::result::Result<
        Option<openraft::LogId<u64>>,
        RaftError<u64, CheckIsLeaderError<u64, openraft::BasicNode>>,
    >,
    tokio::time::error::Elapsed,
>;

const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// A lone search that would scan more vectors than this exactly goes to the search
/// pool even when it could run inline (~1 ms of distance computations at most).
const INLINE_SCAN_MAX: usize = 10_000;

#[derive(Clone, Copy)]
pub(crate) enum Rpc {
    Propose,
    Read,
    Status,
    Elect,
}

impl Node {
    /// The leader of `group` as this node's replica sees it.
    fn leader_hint(&self, group: u64) -> Option<u64> {
        let raft = if group == META_GROUP {
            self.inner.meta.clone()
        } else {
            self.replica(group)?.raft.clone()
        };
        raft.metrics().borrow().current_leader
    }

    /// Sends one call to node `to` and decodes its `Result<T, Refusal>` reply.
    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        to: u64,
        rpc: Rpc,
        group: u64,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, Refusal> {
        let addr = self
            .inner
            .state
            .borrow()
            .nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| Error::Unavailable(format!("node {to} is not a member")))?;
        let channel = self
            .inner
            .peers
            .channel(&addr)
            .map_err(Error::Unavailable)?;
        let mut client = ClusterInternalClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let mut req = tonic::Request::new(GroupCall { group, payload });
        req.set_timeout(timeout.max(Duration::from_millis(50)));
        let reply = match rpc {
            Rpc::Propose => client.propose(req).await,
            Rpc::Read => client.read(req).await,
            Rpc::Status => client.status(req).await,
            Rpc::Elect => client.elect(req).await,
        }
        .map_err(|s| Error::Unavailable(format!("node {to} ({addr}): {}", s.message())))?;
        let result: Result<T, Refusal> = decode(&reply.into_inner().payload)?;
        result
    }

    /// Commits `cmd` in `group`, whose replicas are on `replicas`, and returns what
    /// applying it returned. A rejection by the state machine is returned as its error.
    pub(crate) async fn propose(
        &self,
        group: u64,
        replicas: &[u64],
        cmd: Command,
    ) -> Result<ShardReply> {
        let deadline = Instant::now() + self.inner.timeout;
        let payload = encode(&cmd)?;
        let mut target = self
            .leader_hint(group)
            .or_else(|| replicas.first().copied())
            .ok_or_else(|| Error::Internal(format!("group {group} has no replicas")))?;
        let mut attempt = 0usize;
        let mut last;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = if target == self.inner.id {
                self.propose_local(group, cmd.clone(), left).await
            } else {
                self.call::<ShardReply>(target, Rpc::Propose, group, payload.clone(), left)
                    .await
            };
            attempt += 1;
            match result {
                Ok(reply) => {
                    return match reply.rejected {
                        Some(e) => Err(e),
                        None => Ok(reply),
                    };
                }
                Err(Refusal::NotLeader(Some(leader))) if leader != target => {
                    last = format!("node {target} forwarded to node {leader}");
                    target = leader;
                    if attempt <= replicas.len() {
                        continue;
                    }
                }
                Err(Refusal::NotLeader(_)) => last = format!("node {target}: no leader elected"),
                Err(Refusal::Error(Error::Unavailable(m))) => last = m,
                Err(Refusal::Error(e)) => return Err(e),
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(Error::Unavailable(format!(
                    "not committed within {:?} ({last}); retrying the same write is safe",
                    self.inner.timeout
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            target = self
                .leader_hint(group)
                .filter(|_| attempt.is_multiple_of(2))
                .unwrap_or(replicas[attempt % replicas.len()]);
        }
    }

    /// Commits `cmd` through this node's replica of `group`, if it leads it.
    pub(crate) async fn propose_local(
        &self,
        group: u64,
        cmd: Command,
        timeout: Duration,
    ) -> Result<ShardReply, Refusal> {
        let raft = self.inner.registry.get(group).ok_or_else(|| {
            Error::Unavailable(format!(
                "node {}: group {group} is not open here",
                self.inner.id
            ))
        })?;
        let started = Instant::now();
        if let Some(replica) = self.replica(group) {
            // Held while the leadership is handed over (see `balance`).
            replica.gate.pass(timeout).await;
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
            Err(_) => Err(Error::Unavailable(format!(
                "node {}: not committed within {timeout:?}",
                self.inner.id
            ))
            .into()),
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Refusal::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => Err(Error::Unavailable(format!("node {}: {e}", self.inner.id)).into()),
        }
    }

    /// Reads `group` (replicas on `replicas`) at the call's consistency.
    pub(crate) async fn read(
        &self,
        group: u64,
        replicas: &[u64],
        call: ReadCall,
    ) -> Result<ReadResult> {
        let deadline = Instant::now() + self.inner.timeout;
        let payload = encode(&call)?;
        let n = replicas.len().max(1);
        let rotated = (0..replicas.len()).map(|i| replicas[(i + group as usize) % n]);
        let mut order: Vec<u64> = match call.consistency {
            Consistency::Strong => {
                let hint = self.leader_hint(group);
                let mut o: Vec<u64> = hint.into_iter().collect();
                o.extend(replicas.iter().filter(|r| Some(**r) != hint));
                o
            }
            _ => {
                let mut o = Vec::new();
                if replicas.contains(&self.inner.id) {
                    o.push(self.inner.id);
                }
                o.extend(rotated.filter(|r| *r != self.inner.id));
                o
            }
        };
        let mut last = String::from("no replica answered");
        let mut rounds = 0;
        loop {
            let mut i = 0;
            while i < order.len() {
                let target = order[i];
                let left = deadline.saturating_duration_since(Instant::now());
                let result = if target == self.inner.id {
                    self.read_local(group, call.clone(), left).await
                } else {
                    self.call::<ReadResult>(target, Rpc::Read, group, payload.clone(), left)
                        .await
                };
                match result {
                    Ok(r) => return Ok(r),
                    Err(Refusal::NotLeader(Some(leader)))
                        if order[..=i].iter().all(|t| *t != leader) =>
                    {
                        last = format!("node {target} is not the leader");
                        order.retain(|t| *t != leader);
                        order.insert(i + 1, leader);
                    }
                    Err(Refusal::NotLeader(_)) => {
                        last = format!("node {target}: no leader elected")
                    }
                    Err(Refusal::Error(Error::Unavailable(m))) => last = m,
                    Err(Refusal::Error(e)) => return Err(e),
                }
                i += 1;
            }
            rounds += 1;
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(Error::Unavailable(format!(
                    "no replica could serve the read within {:?} after {rounds} rounds ({last})",
                    self.inner.timeout
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Serves a read from this node's replica of `group`.
    pub(crate) async fn read_local(
        &self,
        group: u64,
        call: ReadCall,
        timeout: Duration,
    ) -> Result<ReadResult, Refusal> {
        let id = self.inner.id;
        let check_leader = |r: Confirmed| -> Result<(), Refusal> {
            match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    Err(Refusal::NotLeader(f.leader_id))
                }
                Ok(Err(e)) => Err(Error::Unavailable(format!("node {id}: {e}")).into()),
                Err(_) => Err(Error::Unavailable(format!(
                    "node {id}: leadership not confirmed within {timeout:?}"
                ))
                .into()),
            }
        };
        if group == META_GROUP {
            let r = tokio::time::timeout(timeout, self.inner.meta.ensure_linearizable()).await;
            check_leader(r)?;
            return Ok(ReadResult::ClusterState(
                (**self.inner.state.borrow()).clone(),
            ));
        }
        let replica = self.replica(group).ok_or_else(|| {
            Error::Unavailable(format!("node {id}: shard group {group} is not open here"))
        })?;
        match call.consistency {
            Consistency::Strong => {
                let r = tokio::time::timeout(timeout, replica.raft.ensure_linearizable()).await;
                check_leader(r)?;
            }
            Consistency::Session if call.min_applied > 0 => {
                replica
                    .raft
                    .wait(Some(timeout))
                    .applied_index_at_least(Some(call.min_applied), "session read")
                    .await
                    .map_err(|_| {
                        Error::Unavailable(format!(
                            "node {id}: replica has not applied index {} within {timeout:?}",
                            call.min_applied
                        ))
                    })?;
            }
            _ => {}
        }
        if matches!(call.op, ReadOp::ClusterState) {
            return Err(Error::Internal("a metadata read reached a shard group".into()).into());
        }
        let shard = replica.shard.clone();
        let op = call.op;
        // A lone search of a one-shard collection that is light (a graph search, or a
        // small exact scan: `Shard::search_if_light` declines the others before any
        // work) runs here, on the calling task: handing it to the search
        // pool costs two thread wake-ups and the pool threads' spinning while they wait
        // for more work, more CPU than the search itself on this machine (see
        // BENCHMARKS.md, "Where the time goes"). Batches, heavy scans and the shards of
        // a multi-shard collection (which should search in parallel) use the pool.
        let lone = match &op {
            ReadOp::Search(reqs) if shard.config().shard_count == 1 => match reqs.as_slice() {
                [req] => Some(req),
                _ => None,
            },
            _ => None,
        };
        if let Some(req) = lone {
            // Like a pool job, a panic answers INTERNAL and leaves the node up.
            let hits = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                shard.search_if_light(req, INLINE_SCAN_MAX)
            }))
            .map_err(|_| {
                Refusal::Error(Error::Internal(
                    "a search failed; see the server log".into(),
                ))
            })?;
            if let Some(hits) = hits {
                return Ok(ReadResult::Search(vec![hits]));
            }
        }
        self.on_pool(move || match op {
            ReadOp::Search(reqs) => {
                ReadResult::Search(reqs.par_iter().map(|r| shard.search(r)).collect())
            }
            ReadOp::Get {
                ids,
                with_payload,
                with_vector,
            } => ReadResult::Points(shard.get(&ids, with_payload, with_vector)),
            ReadOp::Scroll {
                offset,
                limit,
                filter,
                with_payload,
                with_vector,
            } => ReadResult::Points(shard.scroll(
                offset,
                limit,
                filter.as_ref(),
                with_payload,
                with_vector,
            )),
            ReadOp::Count(filter) => ReadResult::Count(shard.count(filter.as_ref())),
            ReadOp::Stats => ReadResult::Stats(shard.stats()),
            ReadOp::ClusterState => unreachable!("refused above"),
        })
        .await
        .map_err(Refusal::Error)
    }

    /// Runs `f` on the search pool and awaits it.
    pub(crate) async fn on_pool<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.pool.spawn(move || {
            let _ = tx.send(f());
        });
        rx.await
            .map_err(|_| Error::Internal("a search job failed; see the server log".into()))
    }

    /// Reports of every replica on `node`.
    pub(crate) async fn reports_of(&self, node: u64, digests: bool) -> Result<Vec<ReplicaReport>> {
        if node == self.inner.id {
            return self.local_reports(digests).await;
        }
        self.call(node, Rpc::Status, 0, encode(&digests)?, self.inner.timeout)
            .await
            .map_err(|r| match r {
                Refusal::Error(e) => e,
                Refusal::NotLeader(_) => Error::Internal("unexpected refusal".into()),
            })
    }
}
