//! Leader balancing: every shard group's leadership goes back to its preferred node
//! (the first replica of its placement) once that node is up and caught up, so that
//! after a failover the writes again load every node.
//!
//! openraft 0.9 has no leader transfer, so the leader performs one itself, in the
//! manner of etcd's:
//!
//! 1. It stops starting new proposals for the group (a [`Gate`]; proposals wait, they
//!    are not refused) so that its log stops growing.
//! 2. It waits until the preferred node has matched its whole log.
//! 3. It asks that node (internal `Elect` call) to start an election at once. The
//!    candidate's log is as new as the leader's, and the leader's own vote is older
//!    than its leader lease (it has led for a whole balancing round), so the leader
//!    grants the vote and steps down; with its own vote the candidate has a majority.
//!    The third replica refuses (its lease from the old leader still runs), which is
//!    harmless.
//! 4. It reopens the gate. Waiting proposals find that it no longer leads and follow
//!    the hint to the new leader, as after any leadership change.
//!
//! A transfer that does not complete in time leaves the gate open again; the worst
//! outcome is an ordinary election. The balancer must never transfer the metadata
//! group (its leader serves only collection changes) nor a group whose preferred
//! node is behind: that would stall writes until it caught up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use shoal_core::{Error, Result};
use tokio::sync::Notify;

use crate::node::{Node, Replica};
use crate::route::Rpc;
use crate::wire::{Refusal, encode};

/// Entries a preferred node may lag behind the leader and still be asked to take
/// over: it catches up the rest while the gate is closed.
const CATCH_UP_SLACK: u64 = 256;
/// How long the leader waits, gate closed, for the preferred node to match its log.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// Holds proposals to one group while its leadership is being handed over.
#[derive(Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    opened: Notify,
}

impl Gate {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Returns when the gate is open, or after `timeout`.
    pub(crate) async fn pass(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return;
            }
        }
    }
}

/// Reopens a gate when a transfer ends, however it ends.
struct Reopen<'a>(&'a Gate);

impl Drop for Reopen<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

impl Node {
    /// Runs the balancer every `every` until the node is dropped.
    pub(crate) fn spawn_balancer(&self, every: Duration) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut led_before = HashSet::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let node = Node { inner };
                led_before = node.balance_once(&led_before).await;
            }
        });
    }

    /// One round: hands every group this node has led since the previous round, and
    /// whose preferred leader is another node that is caught up, over to that node.
    /// Returns the groups this node led at the start of the round.
    async fn balance_once(&self, led_before: &HashSet<u64>) -> HashSet<u64> {
        let state = self.cluster_state();
        let replicas = self.local_replicas();
        let mut led_now = HashSet::new();
        for (group, replica) in replicas {
            let m = replica.raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                continue;
            }
            led_now.insert(group);
            // Leading since the previous round at least: our vote is older than the
            // leader lease, so we will grant the preferred node's vote request.
            if !led_before.contains(&group) {
                continue;
            }
            let Some(preferred) = state.preferred_leader(group) else {
                continue;
            };
            if preferred == self.inner.id
                || !m.membership_config.voter_ids().any(|v| v == preferred)
            {
                continue;
            }
            let last = m.last_log_index.unwrap_or(0);
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&preferred).cloned().flatten())
                .map(|l| l.index);
            match matched {
                Some(i) if i + CATCH_UP_SLACK >= last => {}
                _ => continue,
            }
            match self.transfer(group, &replica, preferred).await {
                Ok(took) => tracing::info!(
                    group,
                    to = preferred,
                    ms = took.as_millis() as u64,
                    "leadership handed to the preferred node"
                ),
                Err(e) => {
                    tracing::warn!(group, to = preferred, error = %e, "leader transfer failed")
                }
            }
        }
        led_now
    }

    /// Hands the leadership of `group` to node `to`; see the module doc.
    async fn transfer(&self, group: u64, replica: &Replica, to: u64) -> Result<Duration> {
        let started = Instant::now();
        replica.gate.close();
        let _reopen = Reopen(&replica.gate);
        let me = self.inner.id;
        let caught_up = replica
            .raft
            .wait(Some(CATCH_UP_WAIT))
            .metrics(
                |m| {
                    let last = m.last_log_index.unwrap_or(0);
                    m.state == ServerState::Leader
                        && m.replication
                            .as_ref()
                            .and_then(|r| r.get(&to).cloned().flatten())
                            .is_some_and(|l| l.index >= last)
                },
                "preferred node matched the log",
            )
            .await;
        if caught_up.is_err() {
            return Err(Error::Unavailable(format!(
                "node {to} did not match the log within {CATCH_UP_WAIT:?}"
            )));
        }
        self.call::<()>(to, Rpc::Elect, group, encode(&())?, CATCH_UP_WAIT)
            .await
            .map_err(|r| match r {
                Refusal::Error(e) => e,
                Refusal::NotLeader(_) => Error::Unavailable(format!("node {to} refused")),
            })?;
        let handed = replica
            .raft
            .wait(Some(Duration::from_millis(
                2 * self.inner.timing.election_max_ms,
            )))
            .metrics(|m| m.current_leader != Some(me), "stepped down")
            .await;
        match handed {
            Ok(_) => Ok(started.elapsed()),
            Err(_) => Err(Error::Unavailable(format!(
                "node {to} did not win the election"
            ))),
        }
    }

    /// The receiving end of a transfer: start an election for `group` now.
    pub(crate) async fn elect_local(&self, group: u64) -> Result<(), Refusal> {
        let replica = self.replica(group).ok_or_else(|| {
            Error::Unavailable(format!(
                "node {}: group {group} is not open here",
                self.inner.id
            ))
        })?;
        if replica.raft.metrics().borrow().state != ServerState::Follower {
            return Err(Error::Unavailable(format!(
                "node {}: not a follower of group {group}",
                self.inner.id
            ))
            .into());
        }
        replica
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", self.inner.id)).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_closed_gate_holds_until_opened_or_timeout() {
        let gate = Arc::new(Gate::default());
        // Open: passes at once.
        tokio::time::timeout(
            Duration::from_millis(500),
            gate.pass(Duration::from_secs(60)),
        )
        .await
        .expect("an open gate passes");
        // Closed: holds until opened.
        gate.close();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.pass(Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a closed gate holds");
        gate.open();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("opening releases the waiter")
            .unwrap();
        // Closed and never opened: released by the timeout.
        gate.close();
        tokio::time::timeout(Duration::from_secs(5), gate.pass(Duration::from_millis(20)))
            .await
            .expect("the timeout releases");
    }
}
