//! What a node tells its monitoring: the gauges of its replicas, its metadata group,
//! its store and its process ([`record_gauges`], through the `metrics` facade), and
//! whether it is ready to serve ([`readiness`], for `/readyz`).
//!
//! Counters and histograms of events (requests, fsyncs, checkpoints, snapshots, leader
//! changes, search fan-out, coalesced batches) are recorded where the events happen;
//! this module samples state. Label values are collection names, shard numbers and
//! node ids only — bounded by what the metadata holds, never a point id or a vector.
//!
//! It must never install an exporter (that is `shoal-server`'s), never wait on a
//! shard's writer lock (a checkpoint holds it for seconds: it reads
//! `Shard::gauges`), and never be called on an async worker: sampling reads files
//! (`/proc/self`, the data directory), so callers run it on a blocking thread.

use std::sync::Arc;

use metrics::{counter, gauge};
use openraft::ServerState;
use shoal_meta::{ClusterState, NodeId};

use crate::host::Host;
use crate::load;

/// One Raft group as readiness sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupView {
    /// `metadata`, or `collection/shard`.
    pub name: String,
    /// Why the group stopped, if it did.
    pub stopped: Option<String>,
    pub state: ServerState,
    pub leader: Option<NodeId>,
    pub last_log: u64,
    pub applied: u64,
    /// On a leader: milliseconds since a quorum last acknowledged it, if known.
    pub quorum_ack_ms: Option<u64>,
}

impl GroupView {
    fn of(name: String, raft: &openraft::Raft<shoal_raft::TypeConfig>) -> GroupView {
        let m = raft.metrics().borrow().clone();
        GroupView {
            name,
            stopped: m.running_state.as_ref().err().map(|e| e.to_string()),
            state: m.state,
            leader: m.current_leader,
            last_log: m.last_log_index.unwrap_or(0),
            applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            quorum_ack_ms: m.millis_since_quorum_ack,
        }
    }
}

/// What readiness demands of every group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bounds {
    /// Most log entries a group may hold unapplied.
    pub max_lag: u64,
    /// Longest a leader may go without a quorum's acknowledgement (a leader cut off
    /// from its followers still believes it leads).
    pub max_quorum_silence_ms: u64,
}

/// Why a node is not ready, from what it knows (empty: ready). `failure`: the
/// node's failure (`Host::failure`: its storage failed or groups stopped), listed
/// first; the stopped groups are not listed again. `placed` are the
/// shard groups the metadata places on this node, by name, with the view of the
/// replica if it is open. A group is fine when it runs, knows a leader (as leader:
/// heard from a quorum within the bound), and has applied its log up to at most
/// `max_lag` entries.
pub(crate) fn not_ready(
    node: NodeId,
    state: &ClusterState,
    failure: Option<&crate::failure::Failure>,
    meta: &GroupView,
    placed: &[(String, Option<GroupView>)],
    bounds: Bounds,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(f) = failure {
        reasons.push(format!(
            "this node failed and takes no writes until it restarts: {f}"
        ));
    }
    if !state.nodes.contains_key(&node) {
        reasons.push(format!(
            "the applied metadata does not list node {node} yet (not joined)"
        ));
    }
    check_group(meta, bounds, &mut reasons);
    for (name, view) in placed {
        match view {
            None => reasons.push(format!("replica {name} is not open yet")),
            Some(v) => check_group(v, bounds, &mut reasons),
        }
    }
    reasons
}

fn check_group(g: &GroupView, bounds: Bounds, reasons: &mut Vec<String>) {
    let max_lag = bounds.max_lag;
    let silent = g
        .quorum_ack_ms
        .filter(|ms| *ms > bounds.max_quorum_silence_ms);
    if g.stopped.is_some() {
        // Part of the node's failure, listed first.
    } else if g.state == ServerState::Shutdown {
        reasons.push(format!("group {} is shut down", g.name));
    } else if g.leader.is_none() {
        reasons.push(format!("group {} has no leader", g.name));
    } else if let (ServerState::Leader, Some(ms)) = (g.state, silent) {
        reasons.push(format!(
            "group {} leads without a quorum: none acknowledged it for {ms} ms",
            g.name
        ));
    } else if g.last_log.saturating_sub(g.applied) > max_lag {
        reasons.push(format!(
            "group {} is behind: applied {} of {} log entries (more than {max_lag} behind)",
            g.name, g.applied, g.last_log
        ));
    }
}

/// The reasons this node does not serve (empty: it serves). Reads the store (a small
/// file written and removed): call it on a blocking thread.
pub(crate) fn readiness(host: &Host, max_lag: u64) -> Vec<String> {
    let state = host.state();
    let meta = GroupView::of("metadata".into(), &host.meta);
    let placed: Vec<(String, Option<GroupView>)> = state
        .collections
        .values()
        .flat_map(|cm| {
            cm.shards
                .iter()
                .filter(|s| s.replicas.contains(&host.id))
                .map(|s| {
                    let name = format!("{}/{}", cm.config.name, s.id);
                    let view = host
                        .replica(cm.group(s.id))
                        .map(|r| GroupView::of(name.clone(), &r.raft));
                    (name, view)
                })
        })
        .collect();
    let bounds = Bounds {
        max_lag,
        max_quorum_silence_ms: 2 * host.timing.election_max_ms,
    };
    // Asks the engine too, so that a failure no write met yet (a background flush)
    // counts.
    let writable = host.store().check_writable();
    let failure = host.failure();
    let mut reasons = not_ready(host.id, &state, failure.as_ref(), &meta, &placed, bounds);
    match writable {
        // The store's failure is the node's, listed already.
        Err(shoal_storage::StorageError::Fault(_)) => {}
        Err(e) => reasons.push(e.to_string()),
        Ok(()) => {}
    }
    reasons
}

/// Sets every gauge of this node: its replicas, its metadata group, its store, its
/// background work and its process. Reads files: call it on a blocking thread.
pub(crate) fn record_gauges(host: &Host) {
    let state: Arc<ClusterState> = host.state();
    gauge!("shoal_node_info", "node" => host.id.to_string()).set(1.0);

    let meta = host.meta.metrics().borrow().clone();
    let leads = |s: ServerState| if s == ServerState::Leader { 1.0 } else { 0.0 };
    gauge!("shoal_metadata_is_leader").set(leads(meta.state));
    gauge!("shoal_metadata_term").set(meta.current_term as f64);
    gauge!("shoal_metadata_applied_index")
        .set(meta.last_applied.map(|l| l.index).unwrap_or(0) as f64);
    if let Some(replication) = &meta.replication {
        let last = meta.last_log_index.unwrap_or(0);
        for (follower, matched) in replication {
            if *follower != host.id {
                let lag = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
                gauge!("shoal_metadata_replication_lag_entries", "follower" => follower.to_string())
                    .set(lag as f64);
            }
        }
    }

    let mut leaders = 0u64;
    let replicas = host.local_replicas();
    for (_, r) in &replicas {
        let m = r.raft.metrics().borrow().clone();
        let collection = r.shard.config().name.clone();
        let shard = r.shard.shard_no().to_string();
        let labels = [("collection", collection), ("shard", shard)];
        // Counters of events that may not have happened yet, shown at 0 until then.
        counter!("shoal_raft_snapshot_installs_total", &labels).increment(0);
        counter!("shoal_raft_snapshot_sends_total", &labels).increment(0);
        let g = r.shard.gauges();
        gauge!("shoal_shard_points", &labels).set(g.points as f64);
        gauge!("shoal_shard_tombstones", &labels).set(g.tombstones as f64);
        gauge!("shoal_shard_index_memory_bytes", &labels).set(g.index_bytes as f64);
        if let Some(age) = g.checkpoint_age_secs {
            gauge!("shoal_shard_checkpoint_age_seconds", &labels).set(age);
        }
        let is_leader = m.state == ServerState::Leader;
        leaders += u64::from(is_leader);
        gauge!("shoal_raft_is_leader", &labels).set(leads(m.state));
        gauge!("shoal_raft_term", &labels).set(m.current_term as f64);
        gauge!("shoal_raft_applied_index", &labels)
            .set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
        gauge!("shoal_raft_last_log_index", &labels).set(m.last_log_index.unwrap_or(0) as f64);
        if let Some(replication) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            for (follower, matched) in replication {
                if *follower == host.id {
                    continue;
                }
                let lag = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
                let [(_, c), (_, s)] = &labels;
                gauge!(
                    "shoal_raft_replication_lag_entries",
                    "collection" => c.clone(),
                    "shard" => s.clone(),
                    "follower" => follower.to_string(),
                )
                .set(lag as f64);
            }
        }
    }
    gauge!("shoal_node_replicas").set(replicas.len() as f64);
    gauge!("shoal_node_leaders").set(leaders as f64);
    gauge!("shoal_collections").set(state.collections.len() as f64);
    gauge!("shoal_cluster_nodes").set(state.nodes.len() as f64);

    for name in [
        "shoal_checkpoints_total",
        "shoal_index_rebuilds_total",
        "shoal_storage_fsyncs_total",
        "shoal_storage_fsync_errors_total",
    ] {
        counter!(name).increment(0);
    }
    let work = shoal_shard::background_work();
    gauge!("shoal_checkpoints_running").set(work.checkpoints as f64);
    gauge!("shoal_index_rebuilds_running").set(work.rebuilds as f64);

    let disk = host.store().disk_usage();
    gauge!("shoal_storage_disk_bytes", "part" => "database").set(disk.database as f64);
    gauge!("shoal_storage_disk_bytes", "part" => "index_checkpoints").set(disk.derived as f64);

    gauge!("process_resident_memory_bytes").set(load::rss_bytes() as f64);
    // A gauge: the facade's counters count whole numbers.
    gauge!("process_cpu_seconds_total").set(load::cpu_seconds());
    if let Some(n) = open_fds() {
        gauge!("process_open_fds").set(n as f64);
    }
    if let Some(n) = max_fds() {
        gauge!("process_max_fds").set(n as f64);
    }
}

/// File descriptors open in this process (Linux: `/proc/self/fd`).
fn open_fds() -> Option<usize> {
    // The directory's own descriptor, open while it is read, is not counted.
    Some(
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1),
    )
}

/// The process's limit of open files (its soft `RLIMIT_NOFILE`).
fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, leader: Option<u64>, last_log: u64, applied: u64) -> GroupView {
        GroupView {
            name: name.into(),
            stopped: None,
            state: ServerState::Follower,
            leader,
            last_log,
            applied,
            quorum_ack_ms: None,
        }
    }

    const BOUNDS: Bounds = Bounds {
        max_lag: 10,
        max_quorum_silence_ms: 4000,
    };

    fn joined(node: NodeId) -> ClusterState {
        let mut state = ClusterState::default();
        state.nodes.insert(
            node,
            shoal_meta::NodeMeta {
                addr: "a:1".into(),
                state: shoal_meta::NodeState::Active,
                uuid: String::new(),
            },
        );
        state
    }

    #[test]
    fn readiness_names_every_reason_and_is_empty_when_ready() {
        let state = joined(1);
        let meta = view("metadata", Some(1), 10, 10);
        let fine = view("c/0", Some(2), 100, 95);
        assert_eq!(
            not_ready(
                1,
                &state,
                None,
                &meta,
                &[("c/0".into(), Some(fine.clone()))],
                BOUNDS
            ),
            Vec::<String>::new()
        );

        let stopped = GroupView {
            name: "c/3".into(),
            stopped: Some("storage failed".into()),
            ..fine.clone()
        };
        let leader = |ack| GroupView {
            state: ServerState::Leader,
            leader: Some(4),
            quorum_ack_ms: ack,
            ..view("c/4", None, 3, 3)
        };
        let placed = [
            ("c/0".to_string(), Some(view("c/0", None, 5, 5))),
            ("c/1".to_string(), None),
            ("c/2".to_string(), Some(view("c/2", Some(3), 500, 100))),
            ("c/3".to_string(), Some(stopped)),
            ("c/4".to_string(), Some(leader(Some(9000)))),
            // A leader heard from recently, or not known to have a quorum yet: fine.
            (
                "c/5".to_string(),
                Some(GroupView {
                    name: "c/5".into(),
                    ..leader(Some(100))
                }),
            ),
            (
                "c/6".to_string(),
                Some(GroupView {
                    name: "c/6".into(),
                    ..leader(None)
                }),
            ),
        ];
        let failure = crate::failure::decide(
            None,
            &[("c/3".to_string(), Some("storage failed".to_string()))],
        );
        let reasons = not_ready(
            4,
            &state,
            failure.as_ref(),
            &view("metadata", None, 1, 1),
            &placed,
            BOUNDS,
        );
        let all = reasons.join("\n");
        for expected in [
            "this node failed and takes no writes until it restarts: Raft groups stopped: c/3 (storage failed)",
            "does not list node 4",
            "group metadata has no leader",
            "group c/0 has no leader",
            "replica c/1 is not open yet",
            "group c/2 is behind: applied 100 of 500",
            "group c/4 leads without a quorum: none acknowledged it for 9000 ms",
        ] {
            assert!(all.contains(expected), "{expected:?} missing from:\n{all}");
        }
        // The stopped group is named once, in the failure.
        assert_eq!(all.matches("c/3").count(), 1, "{all}");
        assert_eq!(reasons.len(), 7, "{all}");
    }
}
