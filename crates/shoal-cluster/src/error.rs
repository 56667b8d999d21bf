//! The one error type of `shoal-cluster`, [`ClusterError`], and its mapping to the
//! domain error (`shoal_core::Error`) at the crate's edge.
//!
//! Errors travel between nodes (an internal call answers `Result<T, ClusterError>`),
//! so they are serializable, and they say which node said what. Callers decide on the
//! variant, never on a message: the router retries exactly the errors that
//! [`ClusterError::is_retryable`] names, and a write distinguishes an entry that was
//! provably never appended ([`ClusterError::NotLeader`], [`ClusterError::NotHosted`])
//! from one whose fate is unknown ([`ClusterError::Timeout`],
//! [`ClusterError::Unreachable`] after the request left).
//!
//! A node whose storage failed answers [`ClusterError::NodeFailed`] at once, never
//! after a timeout; at the edge, a failure caused by a full disk is
//! `RESOURCE_EXHAUSTED` (field `disk`), whatever else the error says.

use serde::{Deserialize, Serialize};
use shoal_meta::NodeId;

/// What went wrong in the cluster layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ClusterError {
    /// The request is wrong, or names something missing or already there: decided by
    /// validation or by a state machine, the same on every node. Never retried.
    #[error(transparent)]
    Request(#[from] shoal_core::Error),
    /// `node` does not lead `group`; `leader` is the leader it knows of, if any.
    /// Nothing was appended to any log.
    #[error("node {node} does not lead group {group}{}", leader_hint(*leader))]
    NotLeader {
        node: NodeId,
        group: u64,
        leader: Option<NodeId>,
    },
    /// `node` lost the leadership of `group` while the entry was in flight: it may have
    /// been appended and may still commit (the outcome is unknown); `leader` is the
    /// leader it knows of now. Retrying the same write is safe.
    #[error("node {node} lost the leadership of group {group} while the write was in flight{}", leader_hint(*leader))]
    LeaderChanged {
        node: NodeId,
        group: u64,
        leader: Option<NodeId>,
    },
    /// `node` has no open replica of `group` (not placed there, or not open yet).
    /// Nothing was appended.
    #[error("node {node}: group {group} is not open here")]
    NotHosted { node: NodeId, group: u64 },
    /// A replica had not applied `index` (a SESSION read's token) in time.
    #[error(
        "node {node}: the replica of group {group} has not applied index {index} within {waited_ms} ms"
    )]
    Behind {
        node: NodeId,
        group: u64,
        index: u64,
        waited_ms: u64,
    },
    /// `what` did not complete within `waited_ms` on `node`. For a proposal the entry
    /// may have been appended, and may still commit: the outcome is unknown.
    #[error("node {node}: {what} did not complete within {waited_ms} ms")]
    Timeout {
        node: NodeId,
        group: u64,
        what: String,
        waited_ms: u64,
    },
    /// The call to `node` failed in transport (no connection, or no reply).
    /// `never_sent`: the connection was refused, so the request provably never
    /// reached the node; otherwise it may have.
    #[error("node {node} ({addr}): {reason}")]
    Unreachable {
        node: NodeId,
        addr: String,
        reason: String,
        never_sent: bool,
    },
    /// `node`'s Raft group `group` refused for a reason of Raft's own (shutting down,
    /// a membership change in progress, a fatal storage error).
    #[error("node {node}: group {group}: {reason}")]
    Raft {
        node: NodeId,
        group: u64,
        reason: String,
    },
    /// The metadata does not name this node.
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(NodeId),
    /// No metadata leader has committed the cluster's first membership yet.
    #[error(
        "the cluster has not formed yet: no metadata leader was elected; are the other nodes of --peers running?"
    )]
    NotFormed,
    /// This node has not applied the metadata up to `index` in time.
    #[error("node {node} has not applied metadata index {index} within {waited_ms} ms")]
    MetadataBehind {
        node: NodeId,
        index: u64,
        waited_ms: u64,
    },
    /// Retries of one operation on one group ran out of time; `last` is the error of
    /// the last attempt. `maybe_applied`: some attempt may have appended the write to
    /// a log (see [`ClusterError::maybe_applied`]), so its outcome is unknown;
    /// otherwise no attempt did and it was provably not written.
    #[error("{}", gave_up(*op, *timeout_ms, *maybe_applied, last))]
    GaveUp {
        op: Op,
        timeout_ms: u64,
        last: Box<ClusterError>,
        maybe_applied: bool,
    },
    /// A write to several shards that some did not commit (shards are separate Raft
    /// groups: those listed in `committed` did; of the others, each says whether it
    /// was provably not written or its outcome is unknown).
    #[error(
        "the write was committed on {} of {} shards ({}); {}. Retrying the whole write is safe",
        committed.len(), failed.len() + committed.len(), committed_list(committed), describe_failed(failed)
    )]
    PartialWrite {
        committed: Vec<u32>,
        failed: Vec<(u32, ClusterError)>,
    },
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A bug, or a peer speaking another version of the internal protocol.
    #[error("internal: {0}")]
    Internal(String),
    /// This node was removed from the cluster (drained, or replaced after being down
    /// longer than the dead-node timeout); its replicas were deleted.
    #[error(
        "node {0} was removed from the cluster (drained, or replaced after being down longer than --dead-node-timeout) and its replicas were deleted; to add this machine again, empty its data directory and start it with --join <a node of the cluster>"
    )]
    Removed(NodeId),
    /// `group` is a shard being split (sealed: it refused the write, which was not
    /// applied) or already split and gone: the request is routed again by the
    /// collection's next routing version.
    #[error("group {group} is being split or was split: the request must be routed again")]
    Resharded { group: u64 },
    /// `node` failed (see `crate::failure`): its storage takes no more writes
    /// (`disk_full`: the disk holding its data directory is full) or its replica of
    /// `group` stopped; `reason` says which. `in_flight`: the failure met the request
    /// after it was handed to Raft, so the write may have been appended (and sent to
    /// the other replicas) and may still commit; otherwise it was refused before
    /// anything was appended, and the router tries the group's other replicas.
    #[error("node {node} failed: {reason}{}", if *in_flight { " (while the write was in flight)" } else { "" })]
    NodeFailed {
        node: NodeId,
        group: u64,
        disk_full: bool,
        reason: String,
        in_flight: bool,
    },
}

/// What a [`ClusterError::GaveUp`] gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Write,
    Read,
}

fn leader_hint(leader: Option<NodeId>) -> String {
    match leader {
        Some(l) => format!(" (node {l} does)"),
        None => " (no leader known)".into(),
    }
}

fn list(shards: &[u32]) -> String {
    shards
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn committed_list(shards: &[u32]) -> String {
    if shards.is_empty() {
        "none".into()
    } else {
        format!("shards {}", list(shards))
    }
}

fn describe_failed(failed: &[(u32, ClusterError)]) -> String {
    failed
        .iter()
        .map(|(s, e)| {
            let what = if e.maybe_applied() {
                "outcome unknown"
            } else {
                "not written"
            };
            format!("shard {s}: {what} ({e})")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn gave_up(op: Op, timeout_ms: u64, maybe_applied: bool, last: &ClusterError) -> String {
    match (op, maybe_applied) {
        (Op::Read, _) => format!("no replica could serve the read within {timeout_ms} ms ({last})"),
        (Op::Write, false) => {
            format!("not written: no leader took the write within {timeout_ms} ms ({last})")
        }
        (Op::Write, true) => format!(
            "not known to be committed within {timeout_ms} ms: a leader may have appended it, so it may be committed or still commit ({last})"
        ),
    }
}

impl ClusterError {
    /// True when trying again (elsewhere, or later) may succeed: leadership moves,
    /// replicas open and catch up, peers come back. The rest are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClusterError::NotLeader { .. }
            | ClusterError::LeaderChanged { .. }
            | ClusterError::NotHosted { .. }
            | ClusterError::Behind { .. }
            | ClusterError::Timeout { .. }
            | ClusterError::Unreachable { .. }
            | ClusterError::Raft { .. }
            | ClusterError::UnknownNode(_)
            | ClusterError::NotFormed
            | ClusterError::MetadataBehind { .. } => true,
            // Refused before appending: another replica may take it.
            ClusterError::NodeFailed { in_flight, .. } => !in_flight,
            ClusterError::Request(_)
            | ClusterError::GaveUp { .. }
            | ClusterError::PartialWrite { .. }
            | ClusterError::Storage(_)
            | ClusterError::Internal(_)
            | ClusterError::Removed(_)
            | ClusterError::Resharded { .. } => false,
        }
    }

    /// Whether a write that failed with this error may have been appended to a log,
    /// and so may be (or become) committed: its outcome is unknown. False only where
    /// the write provably reached no log: refused by a node that does not lead or host
    /// the group, a connection refused, a request or routing error decided before
    /// proposing, or a deterministic refusal on apply (nothing applied).
    pub fn maybe_applied(&self) -> bool {
        match self {
            ClusterError::NotLeader { .. }
            | ClusterError::NotHosted { .. }
            | ClusterError::Request(_)
            | ClusterError::Resharded { .. }
            | ClusterError::UnknownNode(_)
            | ClusterError::NotFormed
            | ClusterError::MetadataBehind { .. }
            | ClusterError::Removed(_)
            | ClusterError::Behind { .. } => false,
            ClusterError::Unreachable { never_sent, .. } => !never_sent,
            ClusterError::NodeFailed { in_flight, .. } => *in_flight,
            ClusterError::GaveUp { maybe_applied, .. } => *maybe_applied,
            ClusterError::PartialWrite { failed, .. } => {
                failed.iter().any(|(_, e)| e.maybe_applied())
            }
            ClusterError::LeaderChanged { .. }
            | ClusterError::Timeout { .. }
            | ClusterError::Raft { .. }
            | ClusterError::Storage(_)
            | ClusterError::Internal(_) => true,
        }
    }

    /// Whether a node's full disk is (part of) the cause: the error itself, the last
    /// attempt of a [`ClusterError::GaveUp`], or a shard of a
    /// [`ClusterError::PartialWrite`].
    pub fn disk_full(&self) -> bool {
        match self {
            ClusterError::NodeFailed { disk_full, .. } => *disk_full,
            ClusterError::GaveUp { last, .. } => last.disk_full(),
            ClusterError::PartialWrite { failed, .. } => failed.iter().any(|(_, e)| e.disk_full()),
            _ => false,
        }
    }

    /// The leader an error names, if it names one: the next node to try.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ClusterError::NotLeader { leader, .. } | ClusterError::LeaderChanged { leader, .. } => {
                *leader
            }
            _ => None,
        }
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> ClusterError {
        ClusterError::Internal(e.to_string())
    }
}

impl From<shoal_meta::MetaError> for ClusterError {
    fn from(e: shoal_meta::MetaError) -> Self {
        ClusterError::Request(e.into())
    }
}

impl From<shoal_shard::ShardError> for ClusterError {
    fn from(e: shoal_shard::ShardError) -> Self {
        ClusterError::Storage(e.to_string())
    }
}

impl From<shoal_storage::StorageError> for ClusterError {
    fn from(e: shoal_storage::StorageError) -> Self {
        ClusterError::Storage(e.to_string())
    }
}

/// The crate's edge: what clients of the node see.
impl From<ClusterError> for shoal_core::Error {
    fn from(e: ClusterError) -> Self {
        use shoal_core::Error;
        match e {
            ClusterError::Request(e) => e,
            // The message says per shard whether the write may have been appended.
            e if e.disk_full() => Error::exhausted(
                "disk",
                match &e {
                    ClusterError::NodeFailed {
                        in_flight: false, ..
                    } => format!("{e}; not written: refused before anything was appended"),
                    ClusterError::NodeFailed {
                        in_flight: true, ..
                    } => format!(
                        "{e}; the write was not acknowledged: it may have been appended \
                         before the failure and may still commit through the other replicas; \
                         retrying the same write is safe"
                    ),
                    _ => e.to_string(),
                },
            ),
            e @ ClusterError::GaveUp { op: Op::Write, .. } => {
                if e.maybe_applied() {
                    Error::OutcomeUnknown(format!("{e}; retrying the same write is safe"))
                } else {
                    Error::Unavailable(format!("{e}; retrying is safe"))
                }
            }
            e @ ClusterError::PartialWrite { .. } => {
                if e.maybe_applied() {
                    Error::OutcomeUnknown(e.to_string())
                } else {
                    Error::Unavailable(e.to_string())
                }
            }
            e @ (ClusterError::Storage(_) | ClusterError::Internal(_)) => {
                Error::Internal(e.to_string())
            }
            e @ ClusterError::Removed(_) => Error::FailedPrecondition(e.to_string()),
            e @ ClusterError::NodeFailed {
                in_flight: true, ..
            } => Error::OutcomeUnknown(format!("{e}; retrying the same write is safe")),
            e => Error::Unavailable(e.to_string()),
        }
    }
}

/// `Result` with [`ClusterError`].
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_the_wire_and_keep_their_kind() {
        let e = ClusterError::NotLeader {
            node: 2,
            group: 7,
            leader: Some(3),
        };
        let bytes = postcard::to_stdvec(&e).unwrap();
        let back: ClusterError = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, e);
        assert!(back.is_retryable());
        assert_eq!(
            back.to_string(),
            "node 2 does not lead group 7 (node 3 does)"
        );
    }

    #[test]
    fn the_edge_keeps_domain_errors_and_says_what_is_safe() {
        let nf = shoal_core::Error::NotFound("collection \"x\"".into());
        assert_eq!(
            shoal_core::Error::from(ClusterError::Request(nf.clone())),
            nf
        );
        // Every attempt refused without appending: provably not written.
        let not_written = ClusterError::GaveUp {
            op: Op::Write,
            timeout_ms: 10,
            last: Box::new(ClusterError::NotFormed),
            maybe_applied: false,
        };
        assert!(!not_written.is_retryable() && !not_written.maybe_applied());
        match shoal_core::Error::from(not_written) {
            shoal_core::Error::Unavailable(m) => {
                assert!(
                    m.starts_with("not written: no leader took the write within 10 ms"),
                    "{m}"
                );
                assert!(m.ends_with("retrying is safe"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // An attempt may have appended it: the outcome is unknown, never "not written".
        let unknown = ClusterError::GaveUp {
            op: Op::Write,
            timeout_ms: 10,
            last: Box::new(ClusterError::NotFormed),
            maybe_applied: true,
        };
        match shoal_core::Error::from(unknown) {
            shoal_core::Error::OutcomeUnknown(m) => {
                assert!(m.contains("may be committed or still commit"), "{m}");
                assert!(!m.contains("not written"), "{m}");
                assert!(m.ends_with("retrying the same write is safe"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // Which errors leave the outcome open.
        let refused = ClusterError::Unreachable {
            node: 2,
            addr: "a:1".into(),
            reason: "connection refused".into(),
            never_sent: true,
        };
        let lost = ClusterError::Unreachable {
            node: 2,
            addr: "a:1".into(),
            reason: "connection reset".into(),
            never_sent: false,
        };
        assert!(!refused.maybe_applied() && lost.maybe_applied());
        let timeout = ClusterError::Timeout {
            node: 1,
            group: 7,
            what: "commit".into(),
            waited_ms: 10,
        };
        assert!(timeout.maybe_applied());
        // Per shard: committed, not written, unknown.
        let partial = ClusterError::PartialWrite {
            committed: vec![0, 2],
            failed: vec![(1, refused.clone()), (3, timeout)],
        };
        let m = partial.to_string();
        assert!(
            m.contains("committed on 2 of 4 shards (shards 0, 2)"),
            "{m}"
        );
        assert!(m.contains("shard 1: not written"), "{m}");
        assert!(m.contains("shard 3: outcome unknown"), "{m}");
        assert!(matches!(
            shoal_core::Error::from(partial),
            shoal_core::Error::OutcomeUnknown(_)
        ));
        let partial = ClusterError::PartialWrite {
            committed: vec![0],
            failed: vec![(1, refused)],
        };
        assert!(matches!(
            shoal_core::Error::from(partial),
            shoal_core::Error::Unavailable(_)
        ));
    }

    fn failed(disk_full: bool, in_flight: bool) -> ClusterError {
        ClusterError::NodeFailed {
            node: 3,
            group: 7,
            disk_full,
            reason: if disk_full {
                "the disk holding data directory /data is full".into()
            } else {
                "the database in data directory /data failed to write (EIO)".into()
            },
            in_flight,
        }
    }

    #[test]
    fn a_failed_node_refuses_at_once_and_a_full_disk_is_resource_exhausted() {
        // Refused before appending: not written, and another replica may take it.
        let refused = failed(true, false);
        assert!(refused.is_retryable() && !refused.maybe_applied());
        let bytes = postcard::to_stdvec(&refused).unwrap();
        assert_eq!(
            postcard::from_bytes::<ClusterError>(&bytes).unwrap(),
            refused
        );
        match shoal_core::Error::from(refused) {
            shoal_core::Error::ResourceExhausted { field, reason } => {
                assert_eq!(field, "disk");
                assert!(reason.contains("/data is full"), "{reason}");
                assert!(reason.contains("not written"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Met in flight: final, and never "not written".
        let in_flight = failed(true, true);
        assert!(!in_flight.is_retryable() && in_flight.maybe_applied());
        match shoal_core::Error::from(in_flight.clone()) {
            shoal_core::Error::ResourceExhausted { field, reason } => {
                assert_eq!(field, "disk");
                assert!(reason.contains("not acknowledged"), "{reason}");
                assert!(reason.contains("may still commit"), "{reason}");
                assert!(!reason.contains("not written"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Inside a write's per-shard outcome, or the router's last attempt.
        let partial = ClusterError::PartialWrite {
            committed: vec![0, 1],
            failed: vec![(2, in_flight)],
        };
        assert!(partial.disk_full());
        match shoal_core::Error::from(partial) {
            shoal_core::Error::ResourceExhausted { field, reason } => {
                assert_eq!(field, "disk");
                assert!(reason.contains("committed on 2 of 3 shards"), "{reason}");
                assert!(reason.contains("shard 2: outcome unknown"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let gave_up = ClusterError::GaveUp {
            op: Op::Write,
            timeout_ms: 10,
            last: Box::new(failed(true, false)),
            maybe_applied: false,
        };
        assert!(matches!(
            shoal_core::Error::from(gave_up),
            shoal_core::Error::ResourceExhausted { .. }
        ));
        // Other storage failures keep the outcome statuses: provably not written is
        // UNAVAILABLE, unknown is DEADLINE_EXCEEDED; both name the cause.
        match shoal_core::Error::from(failed(false, false)) {
            shoal_core::Error::Unavailable(m) => assert!(m.contains("EIO"), "{m}"),
            other => panic!("{other:?}"),
        }
        match shoal_core::Error::from(failed(false, true)) {
            shoal_core::Error::OutcomeUnknown(m) => {
                assert!(m.contains("EIO") && m.contains("in flight"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let partial = ClusterError::PartialWrite {
            committed: vec![],
            failed: vec![(0, failed(false, true))],
        };
        assert!(!partial.disk_full());
        assert!(matches!(
            shoal_core::Error::from(partial),
            shoal_core::Error::OutcomeUnknown(_)
        ));
    }
}
