//! # The nemesis suite: fault injection with a history and checkers
//!
//! In the spirit of etcd's `tests/robustness` and Jepsen: a cluster of real `shoal`
//! processes, each in its own network namespace ([`cluster`], [`crate::netns`]); a
//! workload recording every operation with its invocation and completion times and
//! outcome ([`workload`], [`history`]); a nemesis injecting faults and a watchdog
//! ([`faults`]); checkers judging the history once the cluster has healed and
//! settled ([`check`], with the linearizability search in [`wgl`]).
//!
//! [`run`] does all of it for a given time and seed and returns the [`Report`]; the
//! short form is the integration test `nemesis`, the long soak the `shoal-nemesis`
//! binary. Owns the run's order (setup, workload and nemesis, restore, check,
//! teardown). Must never leave processes, namespaces or rules behind (they belong to
//! values dropped on every path), nor run without a time bound.

pub mod check;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod wgl;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_proto::v1 as pb;
use shoal_proto::v1::collections_client::CollectionsClient;

pub use check::Report;
pub use history::FaultKind;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// How long the nemesis injects faults (the workload runs as long, plus a few
    /// seconds before; restoring and checking come after).
    pub duration: Duration,
    /// The `shoal` executable.
    pub binary: PathBuf,
    /// Logs, the history, thread dumps (kept).
    pub out: PathBuf,
    /// The nodes' data (a directory of its own; removed at the end unless `keep`).
    pub data: PathBuf,
    pub keep_data: bool,
    /// A node silent longer than this while neither killed nor paused is a hang.
    pub hang_after: Duration,
    /// Deadline of each client call.
    pub timeout: Duration,
    pub kinds: Vec<FaultKind>,
    pub timing: faults::Timing,
    /// Extra `shoal serve` flags of every node.
    pub serve_args: Vec<String>,
    /// The size of node 3's data directory, a tmpfs of its own, which the full-disk
    /// fault fills (`None`: on the output directory's file system like the others;
    /// then no full-disk fault).
    pub small_disk: Option<u64>,
    pub registers: u64,
    /// Plants one violation of each kind in the history before the check (a test
    /// that the checkers can fail; see [`plant_canaries`]).
    pub canaries: bool,
}

impl Config {
    /// The defaults: three nodes, default product timing, every fault kind.
    pub fn new(seed: u64, duration: Duration, binary: PathBuf, out: PathBuf) -> Config {
        Config {
            seed,
            duration,
            binary,
            data: out.join("data"),
            out,
            keep_data: false,
            hang_after: Duration::from_secs(15),
            timeout: Duration::from_secs(8),
            kinds: FaultKind::ALL.to_vec(),
            timing: faults::Timing::default(),
            serve_args: Vec::new(),
            small_disk: Some(SMALL_DISK),
            registers: 3,
            canaries: false,
        }
    }
}

/// Node 3's disk by default: room for a long soak's data (the workload's points are
/// small; fjall's journals and memtables take most), in memory only as used.
pub const SMALL_DISK: u64 = 2 << 30;

/// Why a run did not produce a report.
#[derive(Debug)]
pub enum RunError {
    /// The machine cannot run it (not root, no `ip netns`...): skip.
    Skip(String),
    /// It failed to set up or tear down.
    Failed(String),
}

/// Runs the suite; the report of the checkers (see [`Report::violations`]). The
/// history and the nodes' logs are in `config.out`.
pub fn run(config: &Config) -> Result<Report, RunError> {
    let _ = std::fs::remove_dir_all(&config.data);
    let cluster = cluster::NsCluster::start(
        &config.binary,
        3,
        &config.data,
        &config.out,
        &config.serve_args,
        config
            .small_disk
            .filter(|_| config.kinds.contains(&FaultKind::DiskFull)),
    )
    .map_err(|e| {
        if e.contains("needs root")
            || e.contains("not installed")
            || e.contains("namespaces failed")
        {
            RunError::Skip(e)
        } else {
            RunError::Failed(e)
        }
    })?;
    let runtime = cluster
        .net
        .runtime(3)
        .map_err(|e| RunError::Failed(format!("runtime in the namespace: {e}")))?;
    let config2 = config.clone();
    let result = runtime.block_on(async move {
        tokio::spawn(async move { run_inside(cluster, config2).await })
            .await
            .map_err(|e| RunError::Failed(format!("the run panicked: {e}")))?
    });
    // Workers still blocked on a call end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    if result.is_ok() && !config.keep_data {
        let _ = std::fs::remove_dir_all(&config.data);
    }
    result
}

/// Creates the workload's collections (3 shards and 1 shard, replication factor 3)
/// through any node, and waits until every node serves STRONG reads of both.
pub async fn create_collections(shared: &workload::Shared) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for (name, shards) in [(workload::MULTI, 3), (workload::SINGLE, 1)] {
        for attempt in 0.. {
            let node = 1 + attempt % shared.cluster.len();
            let req = pb::CreateCollectionRequest {
                name: name.into(),
                dim: workload::DIM as u32,
                metric: pb::Metric::L2 as i32,
                shard_count: Some(shards),
                replication_factor: Some(3),
                ..Default::default()
            };
            let t = Duration::from_secs(10);
            let r = workload::bounded(
                t,
                CollectionsClient::new(shared.channel(node)).create(workload::request(req, t)),
            )
            .await;
            match r {
                Some(Ok(_)) => break,
                Some(Err(s)) if s.code() == tonic::Code::AlreadyExists => break,
                other => {
                    if Instant::now() >= deadline {
                        return Err(format!("creating {name}: {other:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    check::wait_serving(shared, Duration::from_secs(120)).await
}

async fn run_inside(cluster: cluster::NsCluster, config: Config) -> Result<Report, RunError> {
    let shared = Arc::new(workload::Shared::new(
        cluster,
        config.timeout,
        config.registers,
    ));
    create_collections(&shared)
        .await
        .map_err(|e| RunError::Failed(format!("setup: {e}")))?;
    let stop_watchdog = Arc::new(AtomicBool::new(false));
    let watchdog = tokio::spawn(faults::watchdog(
        shared.clone(),
        config.hang_after,
        config.out.clone(),
        stop_watchdog.clone(),
    ));
    let clients = workload::spawn_all(&shared, config.seed);
    let started = Instant::now();
    let nemesis = faults::nemesis(
        shared.clone(),
        config.seed,
        config.kinds.clone(),
        config.timing.clone(),
        started + config.duration,
    )
    .await;
    // A few seconds of workload on the healed cluster, then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        // Each client's call is bounded by its deadline.
        let _ = tokio::time::timeout(config.timeout * 2, c).await;
    }
    let ran = started.elapsed();
    if config.canaries {
        plant_canaries(&shared);
    }
    let nemesis_result = nemesis.map_err(RunError::Failed);
    let report = check::check(&shared, config.seed, ran).await;
    stop_watchdog.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), watchdog).await;
    let _ = shared.history.lock().write(&config.out.join("history.txt"));
    let _ = std::fs::write(config.out.join("report.txt"), report.table());
    nemesis_result?;
    Ok(report)
}

/// Plants in the history, as if the cluster had misbehaved: an acknowledged insert
/// of an id never sent (lost), an insert answered "not written" of an id that was
/// written (observed), an acknowledged delete of an id that was not deleted (back),
/// a STRONG read of a value never written (not linearizable) and a SESSION read that
/// missed its write. Each must show in the report.
pub fn plant_canaries(shared: &workload::Shared) {
    use history::*;
    let never_sent = shared.ids(1);
    let now = shared.clock.now();
    let mut h = shared.history.lock();
    let deleted: std::collections::HashSet<u64> = h
        .deletes
        .iter()
        .flat_map(|d| d.ids.iter().copied())
        .collect();
    // Two acknowledged, never deleted inserts of `nem`.
    let mut acked = h
        .inserts
        .iter()
        .filter(|op| op.collection == workload::MULTI && op.outcome == Outcome::Ok)
        .flat_map(|op| op.ids.iter().copied())
        .filter(|id| !deleted.contains(id));
    let (written, kept) = (acked.next(), acked.next());
    let fake = |ids: Vec<u64>, outcome| InsertOp {
        collection: workload::MULTI,
        ids,
        node: 1,
        call: now,
        ret: now,
        outcome,
        error: Some("canary".into()),
    };
    h.inserts.push(fake(never_sent.clone(), Outcome::Ok));
    if let Some(id) = written {
        h.inserts.push(fake(vec![id], Outcome::NotWritten));
    }
    if let Some(id) = kept {
        h.deletes.push(DeleteOp {
            collection: workload::MULTI,
            ids: vec![id],
            node: 1,
            call: now,
            ret: now,
            outcome: Outcome::Ok,
            error: None,
        });
    }
    h.registers.push(RegisterOp {
        key: 0,
        node: 1,
        call: now,
        ret: now + 1,
        kind: RegisterKind::Read {
            value: Some(u64::MAX - 1),
        },
    });
    h.ryw_violations.push(RywViolation {
        id: never_sent[0],
        write_node: 1,
        read_node: 2,
        at: now,
    });
}
