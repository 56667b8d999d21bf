//! # The history of a nemesis run
//!
//! Everything the workload did (each operation with its invocation time, completion
//! time and outcome) and everything the nemesis did (each fault with its start, end
//! and the time the node served again), in one [`History`] behind a lock. Times are
//! microseconds since the run began ([`Clock`]).
//!
//! Also [`classify_write`]: the outcome class of a write from what the client got,
//! following the API's contract (README "Guarantees", the proto's error
//! conventions). Owns the records; must never judge them (that is `check`).

use std::time::{Duration, Instant};

/// Microseconds since the run began.
#[derive(Clone, Copy, Debug)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
    pub fn at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.0).as_micros() as u64
    }
}

/// What a write's client learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Acknowledged: committed and durable.
    Ok,
    /// Refused, provably never appended (UNAVAILABLE, or RESOURCE_EXHAUSTED for a
    /// full disk, saying "not written" and nothing committed): it must never take
    /// effect.
    NotWritten,
    /// DEADLINE_EXCEEDED, a transport error, a client timeout, a partial multi-shard
    /// write, or any other error: it may or may not take effect, at any later time.
    Unknown,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotWritten => "not-written",
            Outcome::Unknown => "unknown",
        }
    }
}

/// The outcome of a write from the client's result (`None`: the client's own
/// timeout fired). `multi_shard`: the write touched several shards, so an
/// UNAVAILABLE may list some as committed.
pub fn classify_write<T>(result: Option<&Result<T, tonic::Status>>, multi_shard: bool) -> Outcome {
    match result {
        None => Outcome::Unknown,
        Some(Ok(_)) => Outcome::Ok,
        Some(Err(s)) => {
            let m = s.message();
            // The server's own refusal (a transport error is UNAVAILABLE too, but
            // never says "not written"); RESOURCE_EXHAUSTED for a full disk. A multi-shard write it refused may have
            // committed on some shards: only "committed on 0 of" rules that out.
            let refused = matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
            ) && m.contains("not written")
                && !m.contains("outcome unknown")
                && !m.contains("may have been appended");
            let partial = m.contains("committed on") && !m.contains("committed on 0 of");
            if refused && !(multi_shard && partial) {
                Outcome::NotWritten
            } else {
                Outcome::Unknown
            }
        }
    }
}

/// An upsert of new, unique ids.
#[derive(Clone, Debug)]
pub struct InsertOp {
    pub collection: &'static str,
    pub ids: Vec<u64>,
    pub node: usize,
    pub call: u64,
    pub ret: u64,
    pub outcome: Outcome,
    /// The status code and message of a failure.
    pub error: Option<String>,
}

/// A delete of ids inserted (and acknowledged) before.
#[derive(Clone, Debug)]
pub struct DeleteOp {
    pub collection: &'static str,
    pub ids: Vec<u64>,
    pub node: usize,
    pub call: u64,
    pub ret: u64,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// An operation on a register (a point whose payload `v` holds the value).
#[derive(Clone, Debug)]
pub struct RegisterOp {
    pub key: u64,
    pub node: usize,
    pub call: u64,
    pub ret: u64,
    pub kind: RegisterKind,
}

#[derive(Clone, Debug)]
pub enum RegisterKind {
    Write {
        value: u64,
        outcome: Outcome,
    },
    /// A STRONG read that answered: the value seen (`None`: no point).
    Read {
        value: Option<u64>,
    },
}

/// A SESSION read through another node that did not see the session's own write.
#[derive(Clone, Debug)]
pub struct RywViolation {
    pub id: u64,
    pub write_node: usize,
    pub read_node: usize,
    pub at: u64,
}

/// The kinds of fault the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    KillLeader,
    KillNode,
    KillAll,
    Pause,
    Partition,
    PartitionMetaLeader,
    /// The node with the small disk has it filled, then freed.
    DiskFull,
}

impl FaultKind {
    /// The kind's name on the `shoal-nemesis` command line.
    pub fn flag(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillNode => "kill-node",
            FaultKind::KillAll => "kill-all",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::PartitionMetaLeader => "partition-meta-leader",
            FaultKind::DiskFull => "disk-full",
        }
    }

    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillLeader,
        FaultKind::KillNode,
        FaultKind::KillAll,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::PartitionMetaLeader,
        FaultKind::DiskFull,
    ];
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill -9 shard leader",
            FaultKind::KillNode => "kill -9 node",
            FaultKind::KillAll => "kill -9 all",
            FaultKind::Pause => "pause (SIGSTOP)",
            FaultKind::Partition => "partition node",
            FaultKind::PartitionMetaLeader => "partition meta leader",
            FaultKind::DiskFull => "full disk",
        }
    }
}

/// One fault.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    /// The nodes it hit.
    pub nodes: Vec<usize>,
    pub start: u64,
    /// When it was undone (restart, resume, heal).
    pub end: u64,
    /// How long after `end` the hit nodes all served a STRONG read and a write
    /// (`None`: not within the bound).
    pub serve_after: Option<Duration>,
}

/// A node that answered no health check for too long while it should have.
#[derive(Clone, Debug)]
pub struct Hang {
    pub node: usize,
    pub at: u64,
    pub silent: Duration,
    /// Where its thread dump went.
    pub dump: String,
}

/// Everything recorded during a run.
#[derive(Default, Debug)]
pub struct History {
    pub inserts: Vec<InsertOp>,
    pub deletes: Vec<DeleteOp>,
    pub registers: Vec<RegisterOp>,
    pub ryw_checked: u64,
    pub ryw_violations: Vec<RywViolation>,
    pub faults: Vec<Fault>,
    pub hangs: Vec<Hang>,
    /// Nodes that exited by themselves (node, time, status).
    pub exits: Vec<(usize, u64, String)>,
    /// Reads that failed (they observed nothing), by kind.
    pub failed_reads: u64,
    pub ok_reads: u64,
}

impl History {
    /// Writes the history as text lines (one operation or fault a line) to `path`.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let mut s = String::new();
        for op in &self.inserts {
            let _ = writeln!(
                s,
                "insert {} n{} {}..{} {} ids={:?} {}",
                op.collection,
                op.node,
                op.call,
                op.ret,
                op.outcome.name(),
                op.ids,
                op.error.as_deref().unwrap_or("")
            );
        }
        for op in &self.deletes {
            let _ = writeln!(
                s,
                "delete {} n{} {}..{} {} ids={:?} {}",
                op.collection,
                op.node,
                op.call,
                op.ret,
                op.outcome.name(),
                op.ids,
                op.error.as_deref().unwrap_or("")
            );
        }
        for op in &self.registers {
            let _ = writeln!(
                s,
                "register k{} n{} {}..{} {:?}",
                op.key, op.node, op.call, op.ret, op.kind
            );
        }
        for f in &self.faults {
            let _ = writeln!(s, "fault {f:?}");
        }
        for h in &self.hangs {
            let _ = writeln!(s, "hang {h:?}");
        }
        for v in &self.ryw_violations {
            let _ = writeln!(s, "ryw-violation {v:?}");
        }
        std::fs::write(path, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_outcomes_follow_the_contract() {
        let ok: Result<(), tonic::Status> = Ok(());
        assert_eq!(classify_write(Some(&ok), false), Outcome::Ok);
        assert_eq!(classify_write::<()>(None, false), Outcome::Unknown);
        let refused: Result<(), _> = Err(tonic::Status::unavailable(
            "not written: no leader took the write within 10 ms (x)",
        ));
        assert_eq!(classify_write(Some(&refused), false), Outcome::NotWritten);
        let transport: Result<(), _> = Err(tonic::Status::unavailable("tcp connect error"));
        assert_eq!(classify_write(Some(&transport), false), Outcome::Unknown);
        let deadline: Result<(), _> = Err(tonic::Status::deadline_exceeded("not known"));
        assert_eq!(classify_write(Some(&deadline), false), Outcome::Unknown);
        let partial: Result<(), _> = Err(tonic::Status::unavailable(
            "the write was committed on 1 of 3 shards (shards 0); shard 1: not written (x)",
        ));
        assert_eq!(classify_write(Some(&partial), true), Outcome::Unknown);
        let none: Result<(), _> = Err(tonic::Status::unavailable(
            "the write was committed on 0 of 3 shards (none); shard 1: not written (x)",
        ));
        assert_eq!(classify_write(Some(&none), true), Outcome::NotWritten);
    }
}
