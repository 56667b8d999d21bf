//! The nemesis suite's short form (issue 14): three `shoal` processes, each in a
//! network namespace of its own, under a workload of inserts, registers, SESSION
//! reads and deletes through random nodes, while a seeded nemesis kills shard
//! leaders, single nodes and all nodes with SIGKILL, pauses nodes with SIGSTOP,
//! cuts a node (or the metadata leader) off from its peers with nftables drops and
//! fills node 3's disk (a tmpfs of its own) until its writes fail.
//! After a heal and a settle, the checkers must find nothing: no acknowledged write
//! lost, no acknowledged delete undone, no write answered "not written" observed,
//! every register linearizable (a Wing–Gong/Lowe search), no SESSION
//! read-your-writes violation, equal replica digests and counts, and no node silent
//! for more than 15 s while it should have answered (a hang; its threads are dumped
//! with gdb). Stall and heal figures are printed, not asserted.
//!
//! Needs root (network namespaces, nftables); without it the test says why and
//! skips. The long soak is the `shoal-nemesis` binary (BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_tests::nemesis::cluster::NsCluster;
use shoal_tests::nemesis::workload::Shared;
use shoal_tests::nemesis::{self, Config, RunError, faults};

use crate::binary;
use crate::cluster::ONE_AT_A_TIME;

/// The seed of the CI run: the same faults in the same order every time (their
/// effects still depend on timing).
const SEED: u64 = 14;

#[test]
fn a_short_seeded_nemesis_run_loses_nothing_and_stays_linearizable() {
    let _one = ONE_AT_A_TIME.blocking_lock();
    let out = tempfile::Builder::new()
        .prefix("nemesis-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let config = Config::new(
        SEED,
        Duration::from_secs(150),
        binary().to_path_buf(),
        out.path().to_path_buf(),
    );
    let report = match nemesis::run(&config) {
        Ok(report) => report,
        Err(RunError::Skip(why)) => {
            eprintln!("skipped: the nemesis suite {why}");
            return;
        }
        Err(RunError::Failed(e)) => {
            let kept = out.keep();
            panic!("the nemesis run failed: {e} (logs in {})", kept.display());
        }
    };
    println!("{}", report.table());
    let violations = report.violations();
    // Every kind of fault was injected, and the workload got writes through.
    let kinds_missing: Vec<_> = nemesis::FaultKind::ALL
        .iter()
        .filter(|k| !report.faults.contains_key(k))
        .collect();
    let acknowledged = report.acknowledged_points;
    if !violations.is_empty() || !kinds_missing.is_empty() || acknowledged == 0 {
        let kept = out.keep();
        panic!(
            "violations: {violations:#?}; fault kinds never injected: {kinds_missing:?}; \
             acknowledged points: {acknowledged} (history, logs and report kept in {})",
            kept.display()
        );
    }
}

/// The watchdog can fail: a node stopped behind the nemesis's back (SIGSTOP, its
/// state still "up") is counted as a hang once silent past the limit, its threads
/// are dumped with gdb, and it is restarted; the other nodes are not counted.
#[test]
fn the_watchdog_counts_a_silent_node_as_a_hang_and_dumps_its_threads() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the nemesis suite needs root (network namespaces)");
        return;
    }
    let gdb = std::process::Command::new("gdb").arg("--version").output();
    if !gdb.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: the watchdog's thread dumps need gdb");
        return;
    }
    let _one = ONE_AT_A_TIME.blocking_lock();
    let out = tempfile::Builder::new()
        .prefix("watchdog-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = out.path().to_path_buf();
    let Some(cluster) = start_cluster(&dir, &[]) else {
        return;
    };
    let runtime = cluster.net.runtime(2).unwrap();
    let hangs = runtime.block_on(async move {
        tokio::spawn(async move {
            let shared = Arc::new(Shared::new(cluster, Duration::from_secs(5), 1));
            // Every node answers first.
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 1..=3 {
                while !faults::answers_health(shared.channel(i), Duration::from_secs(2)).await {
                    assert!(Instant::now() < deadline, "node {i} never answered");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let pid = shared.cluster.node(2).pid().expect("node 2 runs");
            // SAFETY: a signal to a process of this test.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
            let stop = Arc::new(AtomicBool::new(false));
            let watchdog = tokio::spawn(faults::watchdog(
                shared.clone(),
                Duration::from_secs(4),
                dir,
                stop.clone(),
            ));
            let deadline = Instant::now() + Duration::from_secs(120);
            while shared.history.lock().hangs.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // The restarted node answers again (and is not counted twice).
            while !faults::answers_health(shared.channel(2), Duration::from_secs(2)).await
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, Ordering::Relaxed);
            watchdog.await.unwrap();
            let h = shared.history.lock();
            (h.hangs.clone(), h.exits.clone())
        })
        .await
        .unwrap()
    });
    let (hangs, exits) = hangs;
    assert!(exits.is_empty(), "{exits:?}");
    assert_eq!(hangs.len(), 1, "{hangs:#?}");
    assert_eq!(hangs[0].node, 2);
    assert!(hangs[0].silent > Duration::from_secs(4));
    let dump = std::fs::read_to_string(&hangs[0].dump)
        .unwrap_or_else(|e| panic!("thread dump {}: {e}", hangs[0].dump));
    assert!(
        dump.contains("Thread ") && dump.contains("tokio"),
        "not a thread dump of the node:\n{dump}"
    );
}

/// Three nodes in network namespaces, data and logs under `dir`; `None` (the reason
/// printed) where the machine lacks a tool the namespaces need.
fn start_cluster(dir: &std::path::Path, extra: &[String]) -> Option<NsCluster> {
    match NsCluster::start(binary(), 3, &dir.join("data"), dir, extra, None) {
        Ok(c) => Some(c),
        Err(e) if e.contains("not installed") || e.contains("namespaces failed") => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// The checkers can fail: a run without faults whose history has one planted
/// violation of each kind (an acknowledged insert never sent, a "not written" insert
/// that was written, an acknowledged delete that was not made, a register read of a
/// value never written, a SESSION read that missed its write) reports each of them,
/// against the real cluster's answers.
#[test]
fn the_checkers_report_planted_violations() {
    let _one = ONE_AT_A_TIME.blocking_lock();
    let out = tempfile::Builder::new()
        .prefix("canaries-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let mut config = Config::new(
        SEED,
        Duration::ZERO,
        binary().to_path_buf(),
        out.path().to_path_buf(),
    );
    config.canaries = true;
    let report = match nemesis::run(&config) {
        Ok(report) => report,
        Err(RunError::Skip(why)) => {
            eprintln!("skipped: the nemesis suite {why}");
            return;
        }
        Err(RunError::Failed(e)) => panic!("the run failed: {e}"),
    };
    println!("{}", report.table());
    // Each planted id, through each of the 3 nodes, STRONG and EVENTUAL.
    assert_eq!(report.lost.len(), 6, "{:#?}", report.lost);
    assert_eq!(report.deleted_back.len(), 6, "{:#?}", report.deleted_back);
    assert_eq!(
        report.refused_but_applied.len(),
        6,
        "{:#?}",
        report.refused_but_applied
    );
    assert_eq!(
        report.not_linearizable.len(),
        1,
        "{:#?}",
        report.not_linearizable
    );
    assert_eq!(report.ryw_violations, 1);
    assert!(report.faults.is_empty());
    assert_eq!(report.digests, None);
    assert_eq!(report.counts, None);
    assert_eq!(report.violations().len(), 5, "{:#?}", report.violations());
}

/// Issue 14, item 2: a node cut off from its peers stands for no election (openraft
/// 0.9 has no pre-vote; `shoal_raft::election_gate` withholds elections without a
/// majority in reach). Without that it raised its term every election timeout, and
/// when the network healed its first answer to a leader carried the higher term: the
/// leader stepped down and the group waited for another election. Here the node that
/// leads fewest shards is cut off for 8 s (four times the first election's delay):
/// its replicas of the shards others lead stay in their term meanwhile, and after the
/// heal those shards keep their leader and term while the node catches up and serves.
#[test]
fn a_node_cut_off_from_its_peers_rejoins_without_unseating_a_leader() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: partitions need root (network namespaces)");
        return;
    }
    let _one = ONE_AT_A_TIME.blocking_lock();
    let out = tempfile::Builder::new()
        .prefix("rejoin-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = out.path().to_path_buf();
    // No leader balancing: a leadership handed back after the heal would change terms.
    let extra = ["--leader-balance-ms".to_string(), "0".to_string()];
    let Some(cluster) = start_cluster(&dir, &extra) else {
        return;
    };
    let runtime = cluster.net.runtime(2).unwrap();
    let result = runtime.block_on(async move {
        tokio::spawn(async move {
            let shared = Arc::new(Shared::new(cluster, Duration::from_secs(5), 1));
            nemesis::create_collections(&shared).await?;
            // (collection, shard) -> (leader, term), as node 1 reports them.
            let leaders = |s: &shoal_proto::v1::ClusterStatus| {
                let mut m = std::collections::BTreeMap::new();
                for c in &s.collections {
                    for sh in &c.shards {
                        let term = sh
                            .replicas
                            .iter()
                            .find(|r| Some(r.node) == sh.leader)
                            .map(|r| r.term);
                        m.insert((c.name.clone(), sh.shard), (sh.leader, term));
                    }
                }
                m
            };
            let before = faults::status(&shared, 1, false, Duration::from_secs(5))
                .await
                .ok_or("no status through node 1")?;
            let before = leaders(&before);
            if before.values().any(|(l, t)| l.is_none() || t.is_none()) {
                return Err(format!("a shard without a leader: {before:?}"));
            }
            let led = |n: u64| before.values().filter(|(l, _)| *l == Some(n)).count();
            let cut = (1..=3u64).min_by_key(|&n| led(n)).unwrap();
            let others: Vec<_> = before
                .iter()
                .filter(|(_, (l, _))| *l != Some(cut))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            assert!(!others.is_empty());
            {
                let mut node = shared.cluster.node(cut as usize);
                shared.cluster.partition(&mut node)?;
            }
            tokio::time::sleep(Duration::from_secs(8)).await;
            // The cut-off node's own view (its public port is reachable).
            let during = faults::status(&shared, cut as usize, false, Duration::from_secs(8))
                .await
                .ok_or("no status through the cut-off node")?;
            {
                let mut node = shared.cluster.node(cut as usize);
                shared.cluster.heal(&mut node)?;
            }
            let mut raised = Vec::new();
            for c in &during.collections {
                for sh in &c.shards {
                    let key = (c.name.clone(), sh.shard);
                    let Some((_, Some(term))) = before.get(&key) else {
                        continue;
                    };
                    if before[&key].0 == Some(cut) {
                        continue;
                    }
                    let mine = sh.replicas.iter().find(|r| r.node == cut);
                    if mine.map(|r| r.term) != Some(*term) {
                        raised.push((key, *term, mine.map(|r| (r.term, r.state.clone()))));
                    }
                }
            }
            // Caught up: every replica of every shard at one applied index, as node 1
            // reports it (bounded).
            let deadline = Instant::now() + Duration::from_secs(60);
            let after = loop {
                let s = faults::status(&shared, 1, false, Duration::from_secs(5)).await;
                if let Some(s) = s {
                    let even = s.collections.iter().flat_map(|c| &c.shards).all(|sh| {
                        sh.replicas.len() == 3
                            && sh.replicas.iter().all(|r| {
                                r.state != "unreachable"
                                    && r.applied_index == sh.replicas[0].applied_index
                            })
                    });
                    if even {
                        break s;
                    }
                }
                if Instant::now() >= deadline {
                    return Err("the healed node never caught up".to_string());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let after = leaders(&after);
            let unseated: Vec<_> = others
                .iter()
                .filter(|(k, v)| after.get(k) != Some(v))
                .map(|(k, v)| (k.clone(), *v, after.get(k).cloned()))
                .collect();
            nemesis::check::wait_serving(&shared, Duration::from_secs(60)).await?;
            Ok::<_, String>((cut, raised, unseated))
        })
        .await
        .unwrap()
    });
    let (cut, raised, unseated) = result.unwrap_or_else(|e| {
        let kept = out.keep();
        panic!("{e} (logs in {})", kept.display())
    });
    assert!(
        raised.is_empty(),
        "node {cut}, cut off, stood for election in shards led by others \
         ((shard, term before, its term and state)): {raised:?}"
    );
    assert!(
        unseated.is_empty(),
        "node {cut}'s return unseated leaders ((shard, leader and term before, after)): \
         {unseated:?}"
    );
}
