//! # The nemesis and the watchdog
//!
//! [`nemesis`] injects faults one at a time, in a seeded random order that goes
//! through every kind before repeating one: kill -9 of a shard leader, of any node,
//! of all nodes (then restart), a SIGSTOP pause, a partition of one node or of the
//! metadata leader from its peers (nftables drops in its namespace, both ways), a
//! full disk (the node with the small disk has it filled but for a few hundred KiB:
//! its store fails, it reports NOT_SERVING and, once the disk is freed, exits to be
//! restarted — by the watchdog, as a supervisor would), each undone after a seeded
//! random time, then a probe measures how long the hit nodes take to serve again (a
//! STRONG read and a write through each). [`watchdog`] asks
//! every running node's gRPC health service every second; a node the nemesis has
//! neither killed nor paused that answers nothing for longer than the limit is a
//! hang: its threads are dumped with gdb into the output directory, and it is
//! killed and restarted so the run goes on. A node that exits by itself is counted
//! (an unexpected exit) and started again, unless its disk was just filled.
//!
//! Owns the faults and their records. Must never: leave a fault in place at its end
//! (the run's end restores every node), hold a node's lock across an `.await`, or
//! wait without a bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use shoal_proto::v1 as pb;
use shoal_proto::v1::cluster_client::ClusterClient;

use super::cluster::NodeState;
use super::history::*;
use super::workload::{self, MULTI, Shared, bounded, request};

/// Cluster.Status through node `i` (no digests), within a few seconds.
pub async fn status(
    shared: &Shared,
    i: usize,
    digests: bool,
    timeout: Duration,
) -> Option<pb::ClusterStatus> {
    bounded(
        timeout,
        ClusterClient::new(shared.channel(i))
            .max_decoding_message_size(64 << 20)
            .status(request(pb::ClusterStatusRequest { digests }, timeout)),
    )
    .await?
    .ok()
}

fn up_nodes(shared: &Shared) -> Vec<usize> {
    (1..=shared.cluster.len())
        .filter(|&i| matches!(shared.cluster.node(i).state, NodeState::Up { .. }))
        .collect()
}

/// A node leading some shard (of a random collection), as a node reports it.
async fn some_leader(shared: &Shared, rng: &mut StdRng, meta: bool) -> Option<usize> {
    let mut nodes = up_nodes(shared);
    nodes.shuffle(rng);
    for i in nodes {
        let Some(s) = status(shared, i, false, Duration::from_secs(3)).await else {
            continue;
        };
        if meta {
            if let Some(l) = s.metadata_leader {
                return Some(l as usize);
            }
            continue;
        }
        let leaders: Vec<usize> = s
            .collections
            .iter()
            .flat_map(|c| c.shards.iter().filter_map(|sh| sh.leader))
            .map(|l| l as usize)
            .collect();
        if let Some(&l) = leaders.choose(rng) {
            return Some(l);
        }
    }
    None
}

/// The nemesis's timing (seconds, inclusive ranges).
#[derive(Clone, Debug)]
pub struct Timing {
    /// Quiet time before each fault.
    pub quiet: (f64, f64),
    /// A killed node stays down this long.
    pub down: (f64, f64),
    pub pause: (f64, f64),
    pub partition: (f64, f64),
    /// A disk stays full this long.
    pub disk_full: (f64, f64),
    /// Longest wait for the hit nodes to serve after a fault is undone.
    pub serve_bound: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            quiet: (2.0, 5.0),
            down: (1.0, 5.0),
            pause: (3.0, 8.0),
            partition: (5.0, 15.0),
            disk_full: (3.0, 8.0),
            serve_bound: Duration::from_secs(60),
        }
    }
}

fn secs(rng: &mut StdRng, (lo, hi): (f64, f64)) -> Duration {
    Duration::from_secs_f64(rng.random_range(lo..=hi))
}

/// Injects faults until `until`, then restores every node. Each fault's record goes
/// to the history as it ends.
pub async fn nemesis(
    shared: Arc<Shared>,
    seed: u64,
    kinds: Vec<FaultKind>,
    timing: Timing,
    until: Instant,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shared.cluster.len();
    let mut queue: Vec<FaultKind> = Vec::new();
    loop {
        tokio::time::sleep(secs(&mut rng, timing.quiet)).await;
        if Instant::now() >= until {
            break;
        }
        if queue.is_empty() {
            queue = kinds.clone();
            queue.shuffle(&mut rng);
        }
        let kind = queue.pop().expect("kinds");
        let start = shared.clock.now();
        // When the fault was undone and since when the hit nodes are waited for, if
        // not when the match below ends (a freed disk: the node exits and restarts).
        let mut undone = None;
        let mut serve_from = Instant::now();
        let mut confirming = Duration::ZERO;
        let cluster = &shared.cluster;
        let hit: Vec<usize> = match kind {
            FaultKind::KillLeader | FaultKind::KillNode => {
                let target = if kind == FaultKind::KillLeader {
                    some_leader(&shared, &mut rng, false).await
                } else {
                    None
                }
                .unwrap_or_else(|| rng.random_range(1..=n));
                let down = secs(&mut rng, timing.down);
                cluster.kill9(&mut cluster.node(target));
                tokio::time::sleep(down).await;
                let mut node = cluster.node(target);
                if node.state == NodeState::Killed {
                    cluster.launch(&mut node)?;
                }
                vec![target]
            }
            FaultKind::KillAll => {
                for i in 1..=n {
                    cluster.kill9(&mut cluster.node(i));
                }
                tokio::time::sleep(secs(&mut rng, timing.down)).await;
                for i in 1..=n {
                    let mut node = cluster.node(i);
                    if node.state == NodeState::Killed {
                        cluster.launch(&mut node)?;
                    }
                }
                (1..=n).collect()
            }
            FaultKind::Pause => {
                let target = rng.random_range(1..=n);
                let d = secs(&mut rng, timing.pause);
                cluster.pause(&mut cluster.node(target));
                tokio::time::sleep(d).await;
                let mut node = cluster.node(target);
                if node.state == NodeState::Paused {
                    cluster.resume(&mut node);
                }
                vec![target]
            }
            FaultKind::Partition | FaultKind::PartitionMetaLeader => {
                let target = if kind == FaultKind::PartitionMetaLeader {
                    some_leader(&shared, &mut rng, true).await
                } else {
                    None
                }
                .unwrap_or_else(|| rng.random_range(1..=n));
                let d = secs(&mut rng, timing.partition);
                let done = {
                    let mut node = cluster.node(target);
                    matches!(node.state, NodeState::Up { .. })
                        && cluster.partition(&mut node).map(|_| true)?
                };
                tokio::time::sleep(d).await;
                if done {
                    let mut node = cluster.node(target);
                    if let NodeState::Up {
                        partitioned: true, ..
                    } = node.state
                    {
                        cluster.heal(&mut node)?;
                    }
                }
                vec![target]
            }
            FaultKind::DiskFull => {
                let Some(target) = cluster.small_disk() else {
                    return Err("a full-disk fault needs a node with a small disk".into());
                };
                let d = secs(&mut rng, timing.disk_full);
                let filled = {
                    let mut node = cluster.node(target);
                    matches!(node.state, NodeState::Up { .. })
                        && cluster.fill_disk(&mut node).map(|_| true)?
                };
                tokio::time::sleep(d).await;
                if filled {
                    let starts = {
                        let mut node = cluster.node(target);
                        cluster.free_disk(&mut node)?;
                        node.starts
                    };
                    undone = Some(shared.clock.now());
                    let freed = Instant::now();
                    confirming = settle_after_disk(&shared, target, starts).await;
                    serve_from = freed;
                }
                vec![target]
            }
        };
        let end = undone.unwrap_or_else(|| shared.clock.now());
        if undone.is_none() {
            serve_from = Instant::now();
        }
        let waited = serve_from.elapsed().saturating_sub(confirming);
        let serve_after = serve_probe(&shared, &hit, timing.serve_bound)
            .await
            .map(|d| d + waited);
        shared.history.lock().faults.push(Fault {
            kind,
            nodes: hit,
            start,
            end,
            serve_after,
        });
    }
    shared.cluster.restore_all()
}

/// How long a node whose disk was freed must report SERVING without a break before
/// its storage counts as not failed: a write that hit the full disk just before the
/// free fails it a few milliseconds later, after it may already have answered
/// SERVING once (soak run 7 counted that node's exit as unexpected).
const SERVING_SETTLED: Duration = Duration::from_secs(3);

/// After node `i`'s disk was freed: waits (at most 30 s) until it either reports
/// SERVING throughout [`SERVING_SETTLED`] (its storage never failed) or exited and
/// was started again by the watchdog (a failed node exits once it has room, for its
/// supervisor to restart it); from then on an exit of it counts again. Returns the
/// time spent only confirming that SERVING lasted, which is not the node's to serve.
async fn settle_after_disk(shared: &Shared, i: usize, starts: u32) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut serving_since: Option<Instant> = None;
    let mut confirming = Duration::ZERO;
    while Instant::now() < deadline {
        if shared.cluster.node(i).starts > starts {
            break;
        }
        if serving(shared.channel(i), Duration::from_secs(2)).await == Some(true) {
            let since = *serving_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SERVING_SETTLED {
                confirming = since.elapsed();
                break;
            }
        } else {
            serving_since = None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.cluster.node(i).expect_exit = false;
    confirming
}

/// Whether the node behind `channel` reports SERVING (`None`: no answer within
/// `timeout`).
pub async fn serving(channel: tonic::transport::Channel, timeout: Duration) -> Option<bool> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let req = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let r = bounded(timeout, client.check(request(req, timeout)))
        .await?
        .ok()?;
    Some(r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}

/// How long until every node of `nodes` has answered a STRONG read of a register and
/// acknowledged a write (a new point, recorded as an insert) through itself, trying
/// every 200 ms; `None` past `bound`.
pub async fn serve_probe(shared: &Shared, nodes: &[usize], bound: Duration) -> Option<Duration> {
    let from = Instant::now();
    let mut read_ok = vec![false; nodes.len()];
    let mut write_ok = vec![false; nodes.len()];
    let short = Duration::from_secs(3);
    while from.elapsed() < bound {
        for (k, &i) in nodes.iter().enumerate() {
            if !read_ok[k] {
                let req = pb::GetPointsRequest {
                    collection: MULTI.into(),
                    ids: vec![workload::num(workload::REGISTER_BASE)],
                    with_payload: false,
                    with_vector: false,
                    read: Some(workload::read_options(pb::Consistency::Strong, None)),
                };
                read_ok[k] = matches!(
                    bounded(short, shared.points(i).get(request(req, short))).await,
                    Some(Ok(_))
                );
            }
            if !write_ok[k] {
                let ids = shared.ids(1);
                write_ok[k] = workload::insert(shared, MULTI, ids, i, false).await.0 == Outcome::Ok;
            }
        }
        if read_ok.iter().chain(&write_ok).all(|&b| b) {
            return Some(from.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Dumps every thread of process `pid` with gdb into `path` (bounded to 60 s).
pub fn thread_dump(pid: u32, path: &Path) -> String {
    let out = std::process::Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch"])
        .args(["-ex", "thread apply all bt"])
        .output();
    match out {
        Ok(o) => {
            let mut text = o.stdout;
            text.extend_from_slice(&o.stderr);
            match std::fs::write(path, text) {
                Ok(()) => path.display().to_string(),
                Err(e) => format!("writing {}: {e}", path.display()),
            }
        }
        Err(e) => format!("gdb did not run: {e}"),
    }
}

/// Whether the node behind `channel` answers a gRPC health check (SERVING or not:
/// any answer shows the process is alive) within `timeout`.
pub async fn answers_health(channel: tonic::transport::Channel, timeout: Duration) -> bool {
    serving(channel, timeout).await.is_some()
}

/// Watches every node until `stop`: a health check per node every second. See the
/// module's documentation.
pub async fn watchdog(
    shared: Arc<Shared>,
    hang_after: Duration,
    out: PathBuf,
    stop: Arc<AtomicBool>,
) {
    let n = shared.cluster.len();
    let mut last_ok = vec![Instant::now(); n];
    let short = Duration::from_secs(2);
    while !stop.load(Ordering::Relaxed) {
        let checks = (1..=n).map(|i| answers_health(shared.channel(i), short));
        let answers = futures_join_all(checks).await;
        let now = Instant::now();
        for (k, answered) in answers.into_iter().enumerate() {
            let i = k + 1;
            let mut node = shared.cluster.node(i);
            if let Some(status) = node.exited() {
                // Exited by itself while up or paused: record it (unless its disk
                // was filled: then it exits to be restarted) and start it again.
                if node.state != NodeState::Killed {
                    if !node.expect_exit {
                        shared.history.lock().exits.push((
                            i,
                            shared.clock.now(),
                            status.to_string(),
                        ));
                    }
                    node.state = NodeState::Killed;
                    let _ = shared.cluster.launch(&mut node);
                    last_ok[k] = now;
                }
                continue;
            }
            let NodeState::Up { since, .. } = node.state else {
                continue;
            };
            if answered {
                last_ok[k] = now;
                continue;
            }
            let silent = now.duration_since(last_ok[k].max(since));
            if silent > hang_after {
                let at = shared.clock.now();
                let dump = match node.pid() {
                    Some(pid) => thread_dump(pid, &out.join(format!("hang-n{i}-{at}.txt"))),
                    None => "no process".into(),
                };
                shared.history.lock().hangs.push(Hang {
                    node: i,
                    at,
                    silent,
                    dump,
                });
                shared.cluster.kill9(&mut node);
                let _ = shared.cluster.launch(&mut node);
                last_ok[k] = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Awaits every future (all polled concurrently).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("health check task"));
    }
    out
}
