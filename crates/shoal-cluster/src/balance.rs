//! Leader balancing: every shard group's leadership goes back to its preferred node
//! (the first replica of its placement) once that node is up and caught up, so that
//! after a failover the writes again load every node.
//!
//! openraft 0.9 has no leader transfer, so the leader performs one itself, in the
//! manner of etcd's:
//!
//! 1. It stops starting new proposals for the group (a [`Gate`](crate::gate::Gate); proposals wait, they
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
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::error::{ClusterError, Result};
use crate::gate::Reopen;
use crate::host::{Host, Replica};
use crate::router::Router;

/// Entries a preferred node may lag behind the leader and still be asked to take
/// over: it catches up the rest while the gate is closed.
const CATCH_UP_SLACK: u64 = 256;
/// How long the leader waits, gate closed, for the preferred node to match its log.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// Hands groups this node leads back to their preferred leaders; see the module doc.
pub(crate) struct Balancer {
    host: Arc<Host>,
    router: Arc<Router>,
}

impl Balancer {
    pub fn new(router: Arc<Router>) -> Balancer {
        Balancer {
            host: router.host().clone(),
            router,
        }
    }

    /// Hands the leadership of `group`, which this node leads, to member `to` (see the
    /// module doc); the elasticity operator does this before removing the leader's
    /// replica.
    pub async fn hand_over(&self, group: u64, to: u64) -> Result<Duration> {
        let replica = self.host.replica(group).ok_or(ClusterError::NotHosted {
            node: self.host.id,
            group,
        })?;
        let m = replica.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(ClusterError::NotLeader {
                node: self.host.id,
                group,
                leader: m.current_leader,
            });
        }
        self.transfer(group, &replica, to).await
    }

    /// Runs a balancer every `every` while `router` lives (the node holds it).
    pub fn spawn(router: &Arc<Router>, every: Duration) {
        let weak: Weak<Router> = Arc::downgrade(router);
        tokio::spawn(async move {
            let mut led_before = HashSet::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(router) = weak.upgrade() else { break };
                let balancer = Balancer {
                    host: router.host().clone(),
                    router,
                };
                led_before = balancer.balance_once(&led_before).await;
            }
        });
    }

    /// One round: hands every group this node has led since the previous round, and
    /// whose preferred leader is another node that is caught up, over to that node.
    /// Returns the groups this node led at the start of the round.
    async fn balance_once(&self, led_before: &HashSet<u64>) -> HashSet<u64> {
        let state = self.host.state();
        let replicas = self.host.local_replicas();
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
            if preferred == self.host.id || !m.membership_config.voter_ids().any(|v| v == preferred)
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
            return Err(ClusterError::Timeout {
                node: to,
                group,
                what: "matching the leader's log".into(),
                waited_ms: CATCH_UP_WAIT.as_millis() as u64,
            });
        }
        self.router.elect(to, group, CATCH_UP_WAIT).await?;
        let wait = Duration::from_millis(2 * self.host.timing.election_max_ms);
        let handed = replica
            .raft
            .wait(Some(wait))
            .metrics(
                |m| m.current_leader == Some(to) && m.state != ServerState::Leader,
                "the target leads",
            )
            .await;
        match handed {
            Ok(_) => Ok(started.elapsed()),
            Err(_) => Err(ClusterError::Timeout {
                node: to,
                group,
                what: "winning the election".into(),
                waited_ms: wait.as_millis() as u64,
            }),
        }
    }
}
