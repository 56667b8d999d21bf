//! A node finding out that the cluster removed it.
//!
//! The cluster removes a node when a drain of it finished, or when it stayed down
//! longer than the dead-node timeout and its replicas were re-created elsewhere.
//! A removed node no longer receives the metadata (it left the metadata group), so it
//! cannot learn of its removal from its own copy: while something looks wrong from
//! here — no metadata leader known, this node missing from the metadata group's
//! membership or from the metadata, or listed as removed — and now and then anyway
//! (a returning node's stale view can look fine), it asks the other nodes it knows for
//! their copy of the metadata (any replica's applied copy will do: the set
//! of removed nodes only grows, and a node never returns to it). Once one of them
//! lists this node as removed, the node deletes every local replica (their groups
//! have replaced it; serving them again would resurrect old data), stops its metadata
//! group, records the removal in its data directory (it then refuses to start over
//! it, with a message saying how to add the machine again) and tells
//! [`Node::removed`](crate::Node::removed) so that the server stops serving.
//!
//! This must never evict on this node's own belief alone: only a peer's committed
//! metadata decides.

use std::sync::{Arc, Weak};
use std::time::Duration;

use shoal_meta::{META_GROUP, NodeId, NodeState};
use tokio::sync::watch;

use crate::Consistency;
use crate::host::Host;
use crate::router::{Rpc, call_at};
use crate::wire::{ReadCall, ReadOp, ReadResult, encode};

/// How the node left the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A drain of it finished: everything it held lives on other nodes.
    Drained(NodeId),
    /// It was down longer than the dead-node timeout (or removed by an operator) and
    /// replaced.
    Replaced(NodeId),
}

impl std::fmt::Display for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Removal::Drained(n) => write!(
                f,
                "node {n} was drained and removed from the cluster; its replicas live on \
                 the other nodes. It can be stopped"
            ),
            Removal::Replaced(n) => write!(
                f,
                "node {n} was removed from the cluster while it was down (its replicas \
                 were re-created on other nodes) and its stale replicas were deleted; to \
                 add this machine again, empty its data directory and start it with \
                 --join <a node of the cluster>"
            ),
        }
    }
}

/// A node that looks fine asks its peers every this many ticks.
const ROUTINE_EVERY_TICKS: u64 = 5;

/// Watches for this node's removal every `every`, while the host lives; sends it on
/// `tx` once.
/// `seeds` are addresses to ask besides the nodes of this node's metadata (its
/// `--peers` and `--join`): a node that returns may not have applied any metadata.
pub(crate) fn spawn(
    host: &Arc<Host>,
    seeds: Vec<(NodeId, String)>,
    every: Duration,
    tx: watch::Sender<Option<Removal>>,
) {
    let weak: Weak<Host> = Arc::downgrade(host);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut suspicious_ticks = 0u32;
        let mut ticks = 0u64;
        let mut was_draining = false;
        let Some(mut states) = weak.upgrade().map(|h| h.subscribe()) else {
            return;
        };
        loop {
            // Every state applied counts: a drain can finish between two ticks.
            tokio::select! {
                _ = tick.tick() => {}
                changed = states.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = states.borrow_and_update().clone();
                    if let Some(host) = weak.upgrade()
                        && let Some(meta) = state.nodes.get(&host.id)
                    {
                        was_draining = meta.state == NodeState::Draining;
                    }
                    continue;
                }
            }
            let Some(host) = weak.upgrade() else { break };
            if host.is_evicted() {
                break;
            }
            ticks += 1;
            if suspicious(&host) {
                suspicious_ticks += 1;
            } else {
                suspicious_ticks = 0;
            }
            // One tick of doubt is normal (an election, a node that just joined); a
            // node that looks fine asks anyway now and then, since a returning node's
            // stale view can look fine (see `suspicious`).
            let ask = suspicious_ticks >= 2 || ticks % ROUTINE_EVERY_TICKS == 1;
            if !ask {
                continue;
            }
            let Some(drained) = removed_per_peers(&host, &seeds, every).await else {
                continue;
            };
            let removal = if was_draining || drained {
                Removal::Drained(host.id)
            } else {
                Removal::Replaced(host.id)
            };
            tracing::warn!(node = host.id, "{removal}");
            match host.evict().await {
                Ok(()) => {
                    let _ = tx.send(Some(removal));
                }
                Err(e) => tracing::error!(error = %e, "deleting the replicas of a removed node"),
            }
            break;
        }
    });
}

/// True if this node's own view suggests it may have been removed. A returning node
/// may look fine from here: it restored its last vote (so it names a leader) and its
/// stale membership lists it.
fn suspicious(host: &Host) -> bool {
    let state = host.state();
    if state.removed.contains(&host.id) {
        return true;
    }
    let formed = !state.nodes.is_empty();
    if formed && !state.nodes.contains_key(&host.id) {
        return true;
    }
    let metrics = host.meta.metrics();
    let metrics = metrics.borrow();
    let member = metrics
        .membership_config
        .membership()
        .nodes()
        .any(|(id, _)| *id == host.id);
    formed && (metrics.current_leader.is_none() || !member)
}

/// Asks every other node this node knows (and the seeds) for its metadata: if one
/// lists this node as removed, whether it was drained (`Some(true)`) or replaced.
async fn removed_per_peers(
    host: &Host,
    seeds: &[(NodeId, String)],
    timeout: Duration,
) -> Option<bool> {
    let state = host.state();
    let mut ask: Vec<(NodeId, String)> = state
        .nodes
        .iter()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    for (id, addr) in seeds {
        if !ask.iter().any(|(_, a)| a == addr) {
            ask.push((*id, addr.clone()));
        }
    }
    let Ok(req) = encode(&ReadCall {
        consistency: Consistency::Eventual,
        min_applied: 0,
        op: ReadOp::ClusterState,
    }) else {
        return None;
    };
    for (id, addr) in ask {
        if id == host.id {
            continue;
        }
        let answer = call_at::<ReadResult>(
            &host.peers,
            &addr,
            id,
            Rpc::Read,
            META_GROUP,
            req.clone(),
            timeout,
        )
        .await;
        if let Ok(ReadResult::ClusterState(theirs)) = answer
            && theirs.removed.contains(&host.id)
        {
            return Some(theirs.drained.contains(&host.id));
        }
    }
    None
}
