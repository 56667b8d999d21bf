//! The nemesis suite's short form (issue 14): three `shoal` processes, each in a
//! network namespace of its own, under a workload of inserts, registers, SESSION
//! reads and deletes through random nodes, while a seeded nemesis kills shard
//! leaders, single nodes and all nodes with SIGKILL, pauses nodes with SIGSTOP and
//! cuts a node (or the metadata leader) off from its peers with nftables drops.
//! After a heal and a settle, the checkers must find nothing: no acknowledged write
//! lost, no acknowledged delete undone, no write answered "not written" observed,
//! every register linearizable (a Wing–Gong/Lowe search), no SESSION
//! read-your-writes violation, equal replica digests and counts, and no node silent
//! for more than 15 s while it should have answered (a hang; its threads are dumped
//! with gdb). Stall and heal figures are printed, not asserted.
//!
//! Needs root (network namespaces, nftables); without it the test says why and
//! skips. The long soak is the `shoal-nemesis` binary (BENCHMARKS.md).

use std::time::Duration;

use shoal_tests::nemesis::{self, Config, RunError};

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
