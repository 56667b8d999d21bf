//! Whether this node failed: the one place that decides it ([`decide`], through
//! `Host::failure`).
//!
//! A node has *failed* when its store recorded a write failure
//! (`shoal_storage::Fault`: a full disk, an IO error — the engine then takes no more
//! writes until the process restarts), or when one of its Raft groups (the metadata
//! group or a shard replica) stopped: openraft stops a group for good when its
//! storage fails (or it panics). Nothing here heals in place. A failed node
//!
//! - stops all its Raft groups once its store failed (`Host::stop_groups`): a
//!   leader that cannot append would otherwise go on heartbeating, and its
//!   followers would never elect another;
//! - refuses writes to a stopped group, or to any group once its store failed, at
//!   once with `ClusterError::NodeFailed` (routers then try the other replicas;
//!   a full disk is `RESOURCE_EXHAUSTED` to clients), and STRONG reads there too;
//! - still serves EVENTUAL and SESSION reads of its replicas, last (routers prefer
//!   healthy replicas);
//! - reports itself: NOT_SERVING in the gRPC health service, not ready on
//!   `/readyz` (`telemetry::readiness` lists the failure first), and the failure
//!   (node and replicas) in `Cluster.Status`;
//! - once its data directory has room again (`Store::has_room`), resolves
//!   `Node::must_restart`: `shoal serve` then stops serving, answering the calls in
//!   flight, and exits with an error so that its supervisor starts it again.
//!   Reopening the store is what clears a poisoned engine; the restarted node
//!   replays its log and catches up from its peers. Nothing acknowledged is lost: an
//!   acknowledged write is in the fsynced logs of a majority.

use serde::{Deserialize, Serialize};
use shoal_storage::Fault;

/// Why this node failed (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The store's first write failure, if it failed.
    pub storage: Option<String>,
    /// The disk holding the data directory is full.
    pub disk_full: bool,
    /// Raft groups that stopped, by name (`metadata`, `collection/shard`), with why.
    pub stopped: Vec<(String, String)>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = &self.storage {
            write!(f, "{s}")?;
        }
        if !self.stopped.is_empty() {
            if self.storage.is_some() {
                write!(f, "; ")?;
            }
            // After a storage failure every group stops of it: their names suffice.
            let groups: Vec<String> = self
                .stopped
                .iter()
                .map(|(name, why)| match self.storage {
                    Some(_) => name.clone(),
                    None => format!("{name} ({why})"),
                })
                .collect();
            write!(f, "Raft groups stopped: {}", groups.join(", "))?;
        }
        Ok(())
    }
}

/// This node's failure, if it failed, from its store's recorded fault and its Raft
/// groups as `(name, why it stopped of a failure)` (`None`: running, or stopped on
/// purpose: a replica closed, the node shutting down).
pub(crate) fn decide(
    fault: Option<&Fault>,
    groups: &[(String, Option<String>)],
) -> Option<Failure> {
    let stopped: Vec<(String, String)> = groups
        .iter()
        .filter_map(|(name, why)| why.clone().map(|w| (name.clone(), w)))
        .collect();
    if fault.is_none() && stopped.is_empty() {
        return None;
    }
    Some(Failure {
        storage: fault.map(|f| f.to_string()),
        disk_full: fault.is_some_and(|f| f.disk_full),
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_fails_by_its_store_or_a_stopped_group_and_says_which() {
        let running = [("metadata".to_string(), None), ("c/0".to_string(), None)];
        assert_eq!(decide(None, &running), None);

        let stopped = [
            ("metadata".to_string(), None),
            (
                "c/0".to_string(),
                Some("when Write Logs: poisoned".to_string()),
            ),
        ];
        let f = decide(None, &stopped).unwrap();
        assert!(!f.disk_full);
        assert_eq!(
            f.to_string(),
            "Raft groups stopped: c/0 (when Write Logs: poisoned)"
        );

        let fault = Fault {
            dir: "/data".into(),
            disk_full: true,
            available: Some(0),
            cause: "No space left on device (os error 28)".into(),
        };
        let f = decide(Some(&fault), &stopped).unwrap();
        assert!(f.disk_full);
        let text = f.to_string();
        assert!(
            text.starts_with("the disk holding data directory /data is full"),
            "{text}"
        );
        assert!(text.ends_with("; Raft groups stopped: c/0"), "{text}");
        // A store that failed before any group noticed is a failure already.
        assert!(decide(Some(&fault), &running).unwrap().disk_full);
    }
}
