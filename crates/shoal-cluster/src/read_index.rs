//! The read index of one Raft group, shared by its STRONG reads.
//!
//! A STRONG read must see every write acknowledged before it was sent. Its leader
//! confirms with a majority, after the read arrived, that it still leads (openraft's
//! `get_read_log_id`: one heartbeat round to the followers), and then waits until it
//! has applied every entry committed before that confirmation began. Done per read,
//! that is one round trip to every follower per read.
//!
//! Here the reads of a group share rounds, as etcd batches its ReadIndex requests: a
//! read that arrives while no round runs starts one; a read that arrives while one
//! runs waits for the *next* round, which starts as soon as the running one ends and
//! serves every read that arrived meanwhile. Each read then waits, within its own
//! deadline, until its replica applied the round's read index.
//!
//! Must never answer a read from a round that started before the read arrived: that
//! round's confirmation could predate a write acknowledged in between (a new leader
//! elsewhere may have committed it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Raft;
use openraft::error::{CheckIsLeaderError, RaftError};
use parking_lot::Mutex;
use shoal_meta::NodeId;
use shoal_raft::TypeConfig;
use tokio::sync::watch;

use crate::error::{ClusterError, Result};

/// The shared read index of one group (see the module doc).
pub(crate) struct ReadIndex {
    node: NodeId,
    group: u64,
    rounds: Mutex<Rounds>,
    /// The newest finished round and its outcome.
    finished: watch::Sender<Finished>,
}

#[derive(Default)]
struct Rounds {
    /// The number of the newest round started (0: none yet).
    started: u64,
    /// Whether a round is running.
    running: bool,
    /// Whether a read arrived while it ran: another round follows it.
    wanted: bool,
}

#[derive(Clone)]
struct Finished {
    round: u64,
    /// The index to apply up to before answering (`None`: nothing to wait for).
    outcome: Result<Option<u64>>,
}

impl ReadIndex {
    pub(crate) fn new(node: NodeId, group: u64) -> Arc<ReadIndex> {
        Arc::new(ReadIndex {
            node,
            group,
            rounds: Mutex::default(),
            finished: watch::Sender::new(Finished {
                round: 0,
                outcome: Ok(None),
            }),
        })
    }

    /// Returns once `raft` has confirmed, after this call began, that it leads the
    /// group, and has applied everything committed before that confirmation; or the
    /// error that stopped it (`NotLeader`, `Timeout`, ...), within `timeout`.
    pub(crate) async fn confirm(
        self: &Arc<Self>,
        raft: &Raft<TypeConfig>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut finished = self.finished.subscribe();
        let round = {
            let mut r = self.rounds.lock();
            if r.running {
                r.wanted = true;
                r.started + 1
            } else {
                r.running = true;
                r.started += 1;
                tokio::spawn(self.clone().drive(raft.clone(), timeout));
                r.started
            }
        };
        let timed_out = |what: &str| ClusterError::Timeout {
            node: self.node,
            group: self.group,
            what: what.into(),
            waited_ms: timeout.as_millis() as u64,
        };
        let outcome =
            match tokio::time::timeout_at(deadline.into(), finished.wait_for(|f| f.round >= round))
                .await
            {
                Ok(Ok(f)) => f.outcome.clone(),
                // The sender lives as long as `self`.
                Ok(Err(_)) => Err(ClusterError::Internal("read index gone".into())),
                Err(_) => Err(timed_out("confirming the leadership")),
            };
        let Some(index) = outcome? else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        raft.wait(Some(left))
            .applied_index_at_least(Some(index), "strong read")
            .await
            .map(|_| ())
            .map_err(|_| timed_out("applying up to the read index"))
    }

    /// How many rounds have started.
    #[cfg(test)]
    fn rounds_started(&self) -> u64 {
        self.rounds.lock().started
    }

    /// Runs rounds while reads want them.
    async fn drive(self: Arc<Self>, raft: Raft<TypeConfig>, timeout: Duration) {
        loop {
            let round = self.rounds.lock().started;
            let outcome = self.one_round(&raft, timeout).await;
            self.finished.send_replace(Finished { round, outcome });
            let mut r = self.rounds.lock();
            if r.wanted {
                r.wanted = false;
                r.started += 1;
            } else {
                r.running = false;
                return;
            }
        }
    }

    /// One confirmation: openraft's read index, bounded by `timeout`.
    async fn one_round(&self, raft: &Raft<TypeConfig>, timeout: Duration) -> Result<Option<u64>> {
        let (node, group) = (self.node, self.group);
        match tokio::time::timeout(timeout, raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => Ok(read.map(|l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ClusterError::NotLeader {
                    node,
                    group,
                    leader: f.leader_id.filter(|l| *l != node),
                })
            }
            Ok(Err(e)) => Err(ClusterError::Raft {
                node,
                group,
                reason: e.to_string(),
            }),
            Err(_) => Err(ClusterError::Timeout {
                node,
                group,
                what: "confirming the leadership".into(),
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::ServerState;

    use crate::testing::{TestCluster, config, points, strong};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_strong_reads_share_rounds_and_see_every_acknowledged_write() {
        let cluster = TestCluster::start(3).await;
        cluster
            .node(1)
            .create_collection(config("c", 1, 3))
            .await
            .unwrap();
        cluster.node(1).upsert("c", points(0..10)).await.unwrap();
        let mut leader = None;
        let mut follower = None;
        for id in 1..=3 {
            let host = cluster.node(id).database().router.host().clone();
            let (_, replica) = host.local_replicas().pop().expect("one replica");
            if replica.raft.metrics().borrow().state == ServerState::Leader {
                leader = Some(replica);
            } else {
                follower = Some(replica);
            }
        }
        let (leader, follower) = (leader.expect("a leader"), follower.expect("a follower"));
        let before = leader.read_index.rounds_started();
        // 64 reads at once: far fewer rounds than reads.
        let reads: Vec<_> = (0..64)
            .map(|_| {
                let r = leader.clone();
                tokio::spawn(
                    async move { r.read_index.confirm(&r.raft, Duration::from_secs(10)).await },
                )
            })
            .collect();
        for r in reads {
            r.await.unwrap().expect("a confirmed read");
        }
        let rounds = leader.read_index.rounds_started() - before;
        assert!((1..=8).contains(&rounds), "{rounds} rounds for 64 reads");
        // A follower's replica refuses: it does not lead.
        let err = follower
            .read_index
            .confirm(&follower.raft, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, crate::ClusterError::NotLeader { .. }),
            "{err:?}"
        );
        // Reads interleaved with writes through every node: each STRONG count sees
        // every write acknowledged before it was sent.
        let mut acked = 10u64;
        for round in 0..20u64 {
            let node = cluster.node(round % 3 + 1);
            node.upsert("c", points(100 + round * 5..105 + round * 5))
                .await
                .unwrap();
            acked += 5;
            let counts = futures::future::join_all(
                (1..=3).map(|id| cluster.node(id).count("c", None, strong())),
            )
            .await;
            for c in counts {
                assert_eq!(c.unwrap(), acked, "round {round}");
            }
        }
    }
}
