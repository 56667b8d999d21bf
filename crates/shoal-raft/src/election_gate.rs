//! # The election gate: no election without a majority in reach
//!
//! openraft 0.9 has no pre-vote. A follower cut off from its peers stands for
//! election every election timeout and raises its term each time; when the network
//! heals, the first AppendEntries its leader sends it is answered with that higher
//! term, the leader steps down, and the group has no leader for another election or
//! more (measured before this gate: a healed node caught up 4–6 s after the heal,
//! BENCHMARKS "Healing a partition"). A pre-vote would have asked the peers first.
//!
//! [`ElectionGate`] is the stand-in: a replica may stand for election only while this
//! node can reach a majority of the group's voters (itself counted; in a joint
//! configuration, a majority of each). Every [`GateTiming::probe_every`] the node
//! pings each peer that is a voter of a group it hosts ([`Peers::ping`], over the
//! channel the groups share), and a peer is *in reach* while its last answer is
//! younger than [`GateTiming::reach_window`] — short enough that a node cut off
//! closes its gates before its first election could start (openraft waits the
//! leader lease plus an election timeout after the last heartbeat). A closed gate
//! opens again only once a majority has been in reach for
//! [`GateTiming::reopen_after`]: long enough for the leaders' own connections to
//! find the node again, so that their heartbeats, not an election, greet it (its
//! election timer, disabled meanwhile, would otherwise fire at once: its last
//! heartbeat is old). A peer never heard from yet counts as in reach (a node starting
//! while its peers are down behaves as without the gate).
//!
//! The gate only withholds elections (openraft's runtime `elect` switch): a gated
//! replica still votes, follows a leader and appends, so safety is untouched. It
//! never withholds one from a group with a majority in reach for `reopen_after`,
//! and never gates a single-voter group. A false "out of reach" (a peer whose
//! answers were late past the window) only delays this replica's elections.
//!
//! Must never: block the runtime (probes are tasks of their own, each bounded by
//! [`GateTiming::probe_timeout`]), nor touch a group's log or vote.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::network::{Peers, Registry};

/// The gate's clock, derived from the Raft timing (see [`GateTiming::from_raft`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateTiming {
    /// How often peers are pinged and the gates decided.
    pub probe_every: Duration,
    /// How long one ping may take.
    pub probe_timeout: Duration,
    /// A peer is in reach while its last answer is younger than this.
    pub reach_window: Duration,
    /// A closed gate opens once a majority has been in reach this long.
    pub reopen_after: Duration,
}

impl GateTiming {
    /// The timing for a group with these Raft settings (milliseconds): pings every
    /// heartbeat; in reach for the mean election timeout after an answer, so that a
    /// node cut off closes its gates well before the earliest election openraft
    /// could start (leader lease = maximum timeout, plus the minimum timeout, after
    /// the last heartbeat); open again after twice the maximum timeout.
    pub fn from_raft(heartbeat_ms: u64, election_min_ms: u64, election_max_ms: u64) -> GateTiming {
        GateTiming {
            probe_every: Duration::from_millis(heartbeat_ms.max(20)),
            probe_timeout: Duration::from_millis(election_max_ms.max(100)),
            reach_window: Duration::from_millis((election_min_ms + election_max_ms) / 2),
            reopen_after: Duration::from_millis(2 * election_max_ms),
        }
    }
}

/// What the gate knows of one peer.
#[derive(Debug, Clone)]
struct Reach {
    /// When the peer last answered a ping; `None`: never yet.
    answered: Option<Instant>,
    /// Since when the peer has been in reach without a break.
    streak_since: Instant,
    /// A ping to it is under way.
    in_flight: bool,
}

impl Reach {
    fn new(now: Instant) -> Reach {
        Reach {
            answered: None,
            streak_since: now,
            in_flight: false,
        }
    }

    fn in_reach(&self, now: Instant, t: &GateTiming) -> bool {
        self.answered
            .is_none_or(|a| now.saturating_duration_since(a) <= t.reach_window)
    }

    /// In reach for `reopen_after` without a break (a peer never heard from: yes).
    fn steady(&self, now: Instant, t: &GateTiming) -> bool {
        self.in_reach(now, t)
            && (self.answered.is_none()
                || now.saturating_duration_since(self.streak_since) >= t.reopen_after)
    }

    fn answer(&mut self, now: Instant, t: &GateTiming) {
        match self.answered {
            // The first answer: as steady as a peer never heard from.
            None => self.streak_since = now.checked_sub(t.reopen_after).unwrap_or(now),
            Some(a) if now.saturating_duration_since(a) > t.reach_window => self.streak_since = now,
            Some(_) => {}
        }
        self.answered = Some(now);
    }
}

/// Whether `me` and the voters for which `ok` holds are a majority of every one of
/// `configs` (a joint configuration has two).
fn majority(configs: &[BTreeSet<u64>], me: u64, ok: impl Fn(u64) -> bool) -> bool {
    configs.iter().all(|voters| {
        voters.is_empty() || 2 * voters.iter().filter(|&&v| v == me || ok(v)).count() > voters.len()
    })
}

/// Whether a group's gate is open after a tick, given whether it was: an open gate
/// closes when the voters in reach are no majority; a closed one opens when the
/// steady ones are. A group with a single voter is always open.
fn decide(
    was_open: bool,
    configs: &[BTreeSet<u64>],
    me: u64,
    reach: &HashMap<u64, Reach>,
    now: Instant,
    t: &GateTiming,
) -> bool {
    if configs.iter().all(|c| c.len() <= 1) {
        return true;
    }
    if was_open {
        majority(configs, me, |v| {
            reach.get(&v).is_none_or(|r| r.in_reach(now, t))
        })
    } else {
        majority(configs, me, |v| {
            reach.get(&v).is_none_or(|r| r.steady(now, t))
        })
    }
}

/// The election gates of every group a node hosts (see the module doc). Call
/// [`ElectionGate::tick`] every [`GateTiming::probe_every`] from the node's runtime.
pub struct ElectionGate {
    me: u64,
    registry: Registry,
    peers: Peers,
    timing: GateTiming,
    reach: Arc<Mutex<HashMap<u64, Reach>>>,
    /// Groups whose gate is closed now (absent: open).
    closed: BTreeSet<u64>,
}

impl ElectionGate {
    /// The gates of node `me`'s groups in `registry`, pinging peers through `peers`.
    pub fn new(me: u64, registry: Registry, peers: Peers, timing: GateTiming) -> ElectionGate {
        ElectionGate {
            me,
            registry,
            peers,
            timing,
            reach: Arc::default(),
            closed: BTreeSet::new(),
        }
    }

    /// Pings every peer voter not already being pinged, then opens or closes each
    /// group's gate on what the answers so far say. Returns at once.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let mut groups = Vec::new();
        let mut wanted: HashMap<u64, String> = HashMap::new();
        for (group, raft) in self.registry.all() {
            let configs = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                let configs = membership.get_joint_config().clone();
                for (id, node) in membership.nodes() {
                    if *id != self.me && configs.iter().any(|c| c.contains(id)) {
                        wanted
                            .entry(*id)
                            .or_insert_with(|| self.peers.address_of(*id, &node.addr));
                    }
                }
                configs
            };
            groups.push((group, raft, configs));
        }
        let mut reach = self.reach.lock().unwrap_or_else(|p| p.into_inner());
        reach.retain(|id, _| wanted.contains_key(id));
        for (id, addr) in wanted {
            let r = reach.entry(id).or_insert_with(|| Reach::new(now));
            if r.in_flight {
                continue;
            }
            r.in_flight = true;
            let (peers, shared, timing) = (self.peers.clone(), self.reach.clone(), self.timing);
            tokio::spawn(async move {
                let answered = peers.ping(id, &addr, timing.probe_timeout).await;
                let now = Instant::now();
                let mut reach = shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(r) = reach.get_mut(&id) {
                    r.in_flight = false;
                    if answered {
                        r.answer(now, &timing);
                    }
                }
            });
        }
        let hosted: BTreeSet<u64> = groups.iter().map(|(g, _, _)| *g).collect();
        self.closed.retain(|g| hosted.contains(g));
        for (group, raft, configs) in groups {
            let was_open = !self.closed.contains(&group);
            let open = decide(was_open, &configs, self.me, &reach, now, &self.timing);
            if open == was_open {
                continue;
            }
            raft.runtime_config().elect(open);
            let out_of_reach: Vec<u64> = reach
                .iter()
                .filter(|(_, r)| !r.in_reach(now, &self.timing))
                .map(|(id, _)| *id)
                .collect();
            if open {
                self.closed.remove(&group);
                tracing::info!(
                    group,
                    "a majority of the group is in reach again: elections allowed"
                );
            } else {
                self.closed.insert(group);
                tracing::info!(
                    group,
                    ?out_of_reach,
                    "no majority of the group in reach: this replica stands for no election until one is"
                );
            }
        }
        metrics::gauge!("shoal_raft_elections_withheld").set(self.closed.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: GateTiming = GateTiming {
        probe_every: Duration::from_millis(150),
        probe_timeout: Duration::from_millis(1200),
        reach_window: Duration::from_millis(900),
        reopen_after: Duration::from_millis(2400),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn three() -> Vec<BTreeSet<u64>> {
        vec![BTreeSet::from([1, 2, 3])]
    }

    #[test]
    fn the_timing_closes_a_gate_before_the_first_election_could_start() {
        let t = GateTiming::from_raft(150, 600, 1200);
        assert_eq!(t, T);
        // Last answer just before the last heartbeat; the gate decides one probe
        // period after the window at the latest. openraft's earliest election: the
        // lease (maximum timeout) plus the minimum timeout after the last heartbeat.
        assert!(t.probe_every * 2 + t.reach_window < ms(1200 + 600));
    }

    #[test]
    fn peers_never_heard_from_count_as_in_reach() {
        let now = Instant::now();
        let reach = HashMap::from([(2, Reach::new(now)), (3, Reach::new(now))]);
        assert!(decide(true, &three(), 1, &reach, now + ms(5000), &T));
        assert!(decide(false, &three(), 1, &reach, now + ms(5000), &T));
    }

    #[test]
    fn a_node_cut_off_closes_and_opens_only_after_a_steady_majority() {
        let start = Instant::now();
        let mut reach = HashMap::from([(2, Reach::new(start)), (3, Reach::new(start))]);
        for r in reach.values_mut() {
            r.answer(start, &T);
        }
        // Answers within the window: open.
        assert!(decide(true, &three(), 1, &reach, start + ms(900), &T));
        // One peer silent past the window: still a majority (1 and 3).
        reach.get_mut(&3).unwrap().answer(start + ms(800), &T);
        assert!(decide(true, &three(), 1, &reach, start + ms(1000), &T));
        // Both silent: closed.
        assert!(!decide(true, &three(), 1, &reach, start + ms(1800), &T));
        // Peer 2 answers again at 5 s: the gate stays closed until it has been in
        // reach for `reopen_after`, answering all along.
        for at in (5000..=7400).step_by(150) {
            reach.get_mut(&2).unwrap().answer(start + ms(at), &T);
            let open = decide(false, &three(), 1, &reach, start + ms(at), &T);
            assert_eq!(open, at >= 7400, "at {at} ms");
        }
    }

    #[test]
    fn a_break_in_the_answers_restarts_the_streak() {
        let start = Instant::now();
        let mut r = Reach::new(start);
        r.answer(start, &T);
        assert!(r.steady(start, &T), "a first answer is steady at once");
        // Silent past the window, then answering again every probe.
        let back = start + ms(2000);
        r.answer(back, &T);
        assert!(!r.steady(back, &T));
        let mut at = back;
        while at < back + T.reopen_after {
            assert!(!r.steady(at, &T));
            at += T.probe_every;
            r.answer(at, &T);
        }
        assert!(r.steady(at, &T));
        // Silent again: out of reach once the window passes.
        assert!(!r.in_reach(at + T.reach_window + ms(1), &T));
    }

    #[test]
    fn a_joint_configuration_needs_a_majority_of_each() {
        let now = Instant::now();
        let mut reach = HashMap::new();
        for id in [2, 3, 4, 5] {
            let mut r = Reach::new(now);
            r.answer(now, &T);
            reach.insert(id, r);
        }
        reach.get_mut(&2).unwrap().answer(now + ms(2000), &T);
        let at = now + ms(2000);
        // {1,2,3}: 1 and 2 in reach. {3,4,5}: none.
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
        assert!(!decide(true, &joint, 1, &reach, at, &T));
        assert!(decide(true, &joint[..1], 1, &reach, at, &T));
        // A single voter is never gated.
        assert!(decide(false, &[BTreeSet::from([1])], 1, &reach, at, &T));
    }
}
