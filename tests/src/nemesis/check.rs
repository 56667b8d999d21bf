//! # The checkers of a nemesis run, and its report
//!
//! After the nemesis has restored every node and the cluster has settled,
//! [`check`] reads back everything the workload wrote through every node, STRONG
//! and EVENTUAL, and judges the [`History`]:
//! - every acknowledged insert present, unless a delete of it was acknowledged or
//!   of unknown outcome ("lost" otherwise); every acknowledged delete absent;
//! - no write answered "not written" ever observed (inserts, deletes, register
//!   values);
//! - each register's history linearizable ([`wgl::check_register`], unknown writes
//!   open-ended), with a final STRONG read through every node appended;
//! - SESSION read-your-writes violations seen during the run;
//! - every shard's replicas at the same applied index with equal digests, and
//!   counts equal through every node;
//! - liveness figures (reported, not asserted): per fault kind, the write stall
//!   (from the fault to the completion of the first acknowledged multi-shard batch
//!   begun after it through a node the fault did not hit, any node after a kill of
//!   all) and the time for the hit nodes to serve after the fault was
//!   undone; and the watchdog's hangs (asserted: none).
//!
//! Owns the judgement. Must never: count an operation of unknown outcome against the
//! cluster, or wait without a bound.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use shoal_proto::v1 as pb;

use super::faults::status;
use super::history::*;
use super::wgl::{self, RegKind, RegOp, Verdict};
use super::workload::{self, MULTI, REGISTER_BASE, SINGLE, Shared, bounded, request};

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub duration: Duration,
    pub faults: BTreeMap<FaultKind, usize>,
    /// Per kind of write, per outcome.
    pub writes: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Why writes failed, by status code and the start of the message (digits
    /// left out), with how many.
    pub failure_causes: BTreeMap<String, u64>,
    pub ok_reads: u64,
    pub failed_reads: u64,
    pub acknowledged_points: usize,
    pub lost: Vec<String>,
    pub deleted_back: Vec<String>,
    pub refused_but_applied: Vec<String>,
    pub register_ops: usize,
    pub not_linearizable: Vec<String>,
    pub undecided: Vec<String>,
    pub ryw_checked: u64,
    pub ryw_violations: usize,
    /// Why the replicas' digests differ (`None`: equal).
    pub digests: Option<String>,
    /// Why the counts through the nodes differ (`None`: equal).
    pub counts: Option<String>,
    /// Per fault kind: write stalls, and times to serve after the fault was undone
    /// (`None`: not reached).
    pub stalls: BTreeMap<FaultKind, Vec<Option<Duration>>>,
    pub serve_after: BTreeMap<FaultKind, Vec<Option<Duration>>>,
    pub hangs: Vec<Hang>,
    pub exits: Vec<(usize, u64, String)>,
    /// Errors of the check itself (a node that never answered the final reads...).
    pub check_errors: Vec<String>,
}

impl Report {
    /// Every violation, one line each; empty when the run passed.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut list = |what: &str, items: &[String]| {
            if !items.is_empty() {
                v.push(format!(
                    "{} {what}: {}",
                    items.len(),
                    items
                        .iter()
                        .take(10)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        };
        list("acknowledged points lost", &self.lost);
        list("acknowledged deletes undone", &self.deleted_back);
        list(
            "writes answered \"not written\" observed",
            &self.refused_but_applied,
        );
        list("registers not linearizable", &self.not_linearizable);
        list("registers the checker could not decide", &self.undecided);
        list("check errors", &self.check_errors);
        if self.ryw_violations > 0 {
            v.push(format!(
                "{} SESSION read-your-writes violations",
                self.ryw_violations
            ));
        }
        if let Some(e) = &self.digests {
            v.push(format!("replica digests: {e}"));
        }
        if let Some(e) = &self.counts {
            v.push(format!("counts: {e}"));
        }
        for h in &self.hangs {
            v.push(format!(
                "node {} silent for {:.1} s at {:.1} s (thread dump: {})",
                h.node,
                h.silent.as_secs_f64(),
                h.at as f64 / 1e6,
                h.dump
            ));
        }
        for (node, at, status) in &self.exits {
            v.push(format!(
                "node {node} exited by itself at {:.1} s: {status}",
                *at as f64 / 1e6
            ));
        }
        v
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let total: usize = self.faults.values().sum();
        let _ = writeln!(
            s,
            "nemesis run: seed {}, {:.0} s, {total} faults",
            self.seed,
            self.duration.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "{:<24} {:>6} {:>12} {:>12} {:>14} {:>14}",
            "fault", "count", "stall med s", "stall max s", "serve med s", "serve max s"
        );
        for (kind, count) in &self.faults {
            let (sm, sx) = med_max(self.stalls.get(kind));
            let (vm, vx) = med_max(self.serve_after.get(kind));
            let _ = writeln!(
                s,
                "{:<24} {count:>6} {sm:>12} {sx:>12} {vm:>14} {vx:>14}",
                kind.name()
            );
        }
        let _ = writeln!(
            s,
            "{:<24} {:>8} {:>12} {:>8}",
            "writes", "ok", "not-written", "unknown"
        );
        for (what, by) in &self.writes {
            let g = |k: &str| by.get(k).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "{what:<24} {:>8} {:>12} {:>8}",
                g("ok"),
                g("not-written"),
                g("unknown")
            );
        }
        if !self.failure_causes.is_empty() {
            let _ = writeln!(s, "failed writes by cause:");
            let mut causes: Vec<_> = self.failure_causes.iter().collect();
            causes.sort_by(|a, b| b.1.cmp(a.1));
            for (cause, n) in causes.iter().take(12) {
                let _ = writeln!(s, "  {n:>7}  {cause}");
            }
        }
        let _ = writeln!(
            s,
            "reads: {} answered, {} failed; SESSION reads checked: {}",
            self.ok_reads, self.failed_reads, self.ryw_checked
        );
        let _ = writeln!(
            s,
            "acknowledged points: {}; lost: {}; deletes undone: {}; not-written observed: {}",
            self.acknowledged_points,
            self.lost.len(),
            self.deleted_back.len(),
            self.refused_but_applied.len()
        );
        let _ = writeln!(
            s,
            "register ops: {}; keys not linearizable: {}, undecided: {}; RYW violations: {}",
            self.register_ops,
            self.not_linearizable.len(),
            self.undecided.len(),
            self.ryw_violations
        );
        let _ = writeln!(
            s,
            "digests: {}; counts: {}; hangs: {}; unexpected exits: {}",
            self.digests.as_deref().unwrap_or("equal"),
            self.counts.as_deref().unwrap_or("equal"),
            self.hangs.len(),
            self.exits.len()
        );
        let violations = self.violations();
        if violations.is_empty() {
            let _ = writeln!(s, "violations: none");
        } else {
            let _ = writeln!(s, "VIOLATIONS:");
            for v in violations {
                let _ = writeln!(s, "  {v}");
            }
        }
        s
    }
}

fn med_max(v: Option<&Vec<Option<Duration>>>) -> (String, String) {
    let Some(v) = v else {
        return ("-".into(), "-".into());
    };
    // A missing value (never served / no write) counts as the worst.
    let mut d: Vec<f64> = v
        .iter()
        .map(|x| x.map(|d| d.as_secs_f64()).unwrap_or(f64::INFINITY))
        .collect();
    if d.is_empty() {
        return ("-".into(), "-".into());
    }
    d.sort_by(|a, b| a.total_cmp(b));
    let f = |x: f64| {
        if x.is_finite() {
            format!("{x:.2}")
        } else {
            "never".into()
        }
    };
    (f(d[(d.len() - 1) / 2]), f(d[d.len() - 1]))
}

/// An error's class: its first 70 characters, digits left out.
fn cause(e: &str) -> String {
    e.chars().filter(|c| !c.is_ascii_digit()).take(70).collect()
}

/// What the history says of one id.
#[derive(Default, Clone, Copy)]
struct Expect {
    insert: Option<Outcome>,
    delete_ok: bool,
    delete_maybe: bool,
    delete_refused: bool,
}

/// Waits (up to `bound`) until every node answers a STRONG count of both
/// collections.
pub async fn wait_serving(shared: &Shared, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    for i in 1..=shared.cluster.len() {
        for c in [MULTI, SINGLE] {
            loop {
                match count(shared, i, c, pb::Consistency::Strong).await {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!("node {i} does not serve {c}: {e}"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }
    }
    Ok(())
}

async fn count(
    shared: &Shared,
    i: usize,
    c: &str,
    consistency: pb::Consistency,
) -> Result<u64, String> {
    let t = shared.timeout;
    let req = pb::CountRequest {
        collection: c.into(),
        filter: None,
        read: Some(workload::read_options(consistency, None)),
    };
    match bounded(t, shared.points(i).count(request(req, t))).await {
        Some(Ok(r)) => Ok(r.count),
        Some(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        None => Err("client timeout".into()),
    }
}

/// Waits (up to `bound`) until every shard's replicas report the same applied index
/// and equal digests.
pub async fn wait_digests(shared: &Shared, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Some(s) = status(shared, 1, true, Duration::from_secs(20)).await {
            let mut differ = Vec::new();
            for n in &s.nodes {
                if !n.reachable {
                    differ.push(format!("node {} unreachable ({})", n.id, n.error));
                }
            }
            for c in &s.collections {
                for sh in &c.shards {
                    let views: HashSet<(u64, Option<String>)> = sh
                        .replicas
                        .iter()
                        .map(|r| (r.applied_index, r.digest.clone()))
                        .collect();
                    if views.len() != 1 || sh.replicas.iter().any(|r| r.digest.is_none()) {
                        differ.push(format!(
                            "{}/{}: {:?}",
                            c.name,
                            sh.shard,
                            sh.replicas
                                .iter()
                                .map(|r| (r.node, r.applied_index, r.digest.clone()))
                                .collect::<Vec<_>>()
                        ));
                    }
                }
            }
            if differ.is_empty() {
                return Ok(());
            }
            last = differ.join("; ");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("not equal within {} s: {last}", bound.as_secs()))
}

/// The ids of `ids` present in `collection` through node `i`, read in chunks (each
/// tried up to 10 times).
async fn present(
    shared: &Shared,
    i: usize,
    collection: &str,
    ids: &[u64],
    consistency: pb::Consistency,
) -> Result<HashSet<u64>, String> {
    let mut found = HashSet::new();
    let t = shared.timeout;
    for chunk in ids.chunks(1000) {
        let mut attempt = 0;
        loop {
            let req = pb::GetPointsRequest {
                collection: collection.into(),
                ids: chunk.iter().map(|&id| workload::num(id)).collect(),
                with_payload: false,
                with_vector: false,
                read: Some(workload::read_options(consistency, None)),
            };
            match bounded(t, shared.points(i).get(request(req, t))).await {
                Some(Ok(r)) => {
                    found.extend(r.points.iter().filter_map(|p| workload::id_of(&p.id)));
                    break;
                }
                other => {
                    attempt += 1;
                    if attempt >= 10 {
                        return Err(format!(
                            "node {i} {consistency:?} get of {collection}: {:?}",
                            other.map(|r| r.map(|_| ()))
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    Ok(found)
}

/// Settles the cluster (every node serving, digests equal), reads everything back
/// and judges the history. The nemesis must have restored every node.
pub async fn check(shared: &Shared, seed: u64, duration: Duration) -> Report {
    let mut report = Report {
        seed,
        duration,
        ..Default::default()
    };
    if let Err(e) = wait_serving(shared, Duration::from_secs(120)).await {
        report.check_errors.push(e);
    }
    report.digests = wait_digests(shared, Duration::from_secs(120)).await.err();

    // Final STRONG reads of every register through every node, into the history.
    let registers = shared.registers;
    for i in 1..=shared.cluster.len() {
        for key in 0..registers {
            let mut tries = 0;
            while workload::read_register(shared, key, i).await.is_none() && tries < 10 {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    let (expect, faults, reg_ops, multi_ok) = {
        let h = shared.history.lock();
        // Write outcomes.
        let mut writes: BTreeMap<&'static str, BTreeMap<&'static str, u64>> = BTreeMap::new();
        for op in &h.inserts {
            let what = if op.collection == SINGLE {
                "insert (1 shard)"
            } else if op.ids.len() > 1 {
                "insert (3 shards)"
            } else {
                "insert (1 point)"
            };
            *writes
                .entry(what)
                .or_default()
                .entry(op.outcome.name())
                .or_default() += 1;
        }
        for e in h
            .inserts
            .iter()
            .filter_map(|op| op.error.as_ref())
            .chain(h.deletes.iter().filter_map(|op| op.error.as_ref()))
        {
            *report.failure_causes.entry(cause(e)).or_default() += 1;
        }
        for op in &h.deletes {
            *writes
                .entry("delete")
                .or_default()
                .entry(op.outcome.name())
                .or_default() += 1;
        }
        for op in &h.registers {
            if let RegisterKind::Write { outcome, .. } = op.kind {
                *writes
                    .entry("register write")
                    .or_default()
                    .entry(outcome.name())
                    .or_default() += 1;
            }
        }
        report.writes = writes;
        report.ok_reads = h.ok_reads;
        report.failed_reads = h.failed_reads;
        report.ryw_checked = h.ryw_checked;
        report.ryw_violations = h.ryw_violations.len();
        report.hangs = h.hangs.clone();
        report.exits = h.exits.clone();
        report.register_ops = h.registers.len();

        // Expected state per id.
        let mut expect: HashMap<(&'static str, u64), Expect> = HashMap::new();
        for op in &h.inserts {
            for &id in &op.ids {
                expect.entry((op.collection, id)).or_default().insert = Some(op.outcome);
            }
        }
        for op in &h.deletes {
            for &id in &op.ids {
                let e = expect.entry((op.collection, id)).or_default();
                match op.outcome {
                    Outcome::Ok => e.delete_ok = true,
                    Outcome::Unknown => e.delete_maybe = true,
                    Outcome::NotWritten => e.delete_refused = true,
                }
            }
        }
        report.acknowledged_points = expect
            .values()
            .filter(|e| e.insert == Some(Outcome::Ok))
            .count();
        let faults = h.faults.clone();
        let reg_ops = h.registers.clone();
        let multi_ok: Vec<(usize, u64, u64)> = h
            .inserts
            .iter()
            .filter(|op| op.collection == MULTI && op.ids.len() > 1 && op.outcome == Outcome::Ok)
            .map(|op| (op.node, op.call, op.ret))
            .collect();
        (expect, faults, reg_ops, multi_ok)
    };

    for c in [MULTI, SINGLE] {
        let mut ids: Vec<u64> = expect
            .keys()
            .filter(|(col, _)| *col == c)
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable();
        for i in 1..=shared.cluster.len() {
            for consistency in [pb::Consistency::Strong, pb::Consistency::Eventual] {
                let found = match present(shared, i, c, &ids, consistency).await {
                    Ok(f) => f,
                    Err(e) => {
                        report.check_errors.push(e);
                        continue;
                    }
                };
                let via = format!("node {i} {consistency:?}");
                for &id in &ids {
                    let e = expect[&(c, id)];
                    let here = found.contains(&id);
                    if e.insert == Some(Outcome::Ok) && !e.delete_ok && !e.delete_maybe && !here {
                        report.lost.push(format!("{c}/{id} via {via}"));
                    }
                    if e.delete_ok && here {
                        report.deleted_back.push(format!("{c}/{id} via {via}"));
                    }
                    if e.insert == Some(Outcome::NotWritten) && here {
                        report
                            .refused_but_applied
                            .push(format!("insert {c}/{id} seen via {via}"));
                    }
                    if e.delete_refused
                        && !e.delete_ok
                        && !e.delete_maybe
                        && e.insert == Some(Outcome::Ok)
                        && !here
                    {
                        report
                            .refused_but_applied
                            .push(format!("delete {c}/{id} took effect, seen via {via}"));
                    }
                }
            }
        }
    }

    // Counts through every node, STRONG and EVENTUAL (digests are equal by now).
    let mut counts = Vec::new();
    for c in [MULTI, SINGLE] {
        for i in 1..=shared.cluster.len() {
            for consistency in [pb::Consistency::Strong, pb::Consistency::Eventual] {
                counts.push((c, i, consistency, count(shared, i, c, consistency).await));
            }
        }
    }
    report.counts = {
        let mut problems = Vec::new();
        for c in [MULTI, SINGLE] {
            let of: Vec<_> = counts.iter().filter(|x| x.0 == c).collect();
            let values: HashSet<_> = of.iter().filter_map(|x| x.3.clone().ok()).collect();
            if values.len() != 1 || of.iter().any(|x| x.3.is_err()) {
                problems.push(format!(
                    "{c}: {:?}",
                    of.iter()
                        .map(|x| (x.1, x.2, x.3.clone()))
                        .collect::<Vec<_>>()
                ));
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    };

    // Registers.
    let refused_values: HashSet<u64> = reg_ops
        .iter()
        .filter_map(|op| match op.kind {
            RegisterKind::Write {
                value,
                outcome: Outcome::NotWritten,
            } => Some(value),
            _ => None,
        })
        .collect();
    for key in 0..registers {
        let ops: Vec<&RegisterOp> = reg_ops.iter().filter(|op| op.key == key).collect();
        let mut history = Vec::new();
        for op in &ops {
            match op.kind {
                RegisterKind::Write { value, outcome } => match outcome {
                    Outcome::Ok => history.push(RegOp {
                        call: op.call,
                        ret: Some(op.ret),
                        kind: RegKind::Write(value),
                    }),
                    Outcome::Unknown => history.push(RegOp {
                        call: op.call,
                        ret: None,
                        kind: RegKind::Write(value),
                    }),
                    Outcome::NotWritten => {}
                },
                RegisterKind::Read { value } => {
                    if let Some(v) = value
                        && refused_values.contains(&v)
                    {
                        report.refused_but_applied.push(format!(
                                "register {key}: value {v} (answered not written) read through node {} at {:.3} s",
                                op.node,
                                op.call as f64 / 1e6
                            ));
                    }
                    history.push(RegOp {
                        call: op.call,
                        ret: Some(op.ret),
                        kind: RegKind::Read(value),
                    });
                }
            }
        }
        match wgl::check_register(&history, None, 50_000_000) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { stuck_at } => report.not_linearizable.push(format!(
                "register {} ({} ops; look near {:?})",
                REGISTER_BASE + key,
                history.len(),
                history[stuck_at]
            )),
            Verdict::Undecided { steps } => report.undecided.push(format!(
                "register {} ({} ops, {steps} steps)",
                REGISTER_BASE + key,
                history.len()
            )),
        }
    }

    // Liveness figures.
    for f in &faults {
        *report.faults.entry(f.kind).or_default() += 1;
        // Through a node the fault did not hit, when there is one: a client that
        // sent its write to the paused node waits for its own deadline, which says
        // nothing of the cluster.
        let all_hit = f.nodes.len() >= shared.cluster.len();
        let stall = multi_ok
            .iter()
            .filter(|(node, call, _)| *call >= f.start && (all_hit || !f.nodes.contains(node)))
            .map(|(_, _, ret)| *ret)
            .min()
            .map(|ret| Duration::from_micros(ret - f.start));
        report.stalls.entry(f.kind).or_default().push(stall);
        report
            .serve_after
            .entry(f.kind)
            .or_default()
            .push(f.serve_after);
    }
    report
}
