//! Cluster status: every node's health and every shard replica's role, applied index
//! and content digest, as reported by the node holding it.
//!
//! A digest is xxh3-64 over the replica's points (id, vector, payload; postcard) in id
//! order, taken from a consistent snapshot together with the applied index it
//! reflects: replicas at the same applied index agree exactly when their digests are
//! equal.
//!
//! Every node is asked at once, each with its own deadline: a node that does not
//! report within [`REPORT_TIMEOUT`] (or the request timeout, if shorter) is reported
//! unreachable with the reason, and never holds up the answer longer than that. With
//! digests (which read every point), each node is asked twice at the same time: the
//! short report decides whether it is reachable, and only for a node that answered it
//! is the digest report awaited, within the request timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::future::{join_all, try_join};
use shoal_meta::{ClusterState, OpKind};

use crate::load::NodeLoad;
use crate::router::Router;
use crate::scheduler::describe;
use crate::wire::{NodeReport, ReplicaReport};

/// How long a node may take to report without digests before it is reported
/// unreachable (at most the request timeout).
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// A node as seen by the node answering.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    pub id: u64,
    pub address: String,
    pub reachable: bool,
    /// Why it is unreachable; for a reachable node asked for digests, why its
    /// digests are missing.
    pub error: Option<String>,
    /// `active` or `draining`.
    pub state: String,
    /// Votes in the metadata group, as the answering node knows it.
    pub voter: bool,
    /// What the node reported of its load, if it answered.
    pub load: Option<NodeLoad>,
    /// Why the node failed, if it answered that it did: its storage takes no more
    /// writes or a Raft group of its stopped (see `crate::failure`).
    pub failure: Option<String>,
}

/// An operation in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStatus {
    pub id: u64,
    pub description: String,
    pub progress: String,
}

/// One replica of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    pub node: u64,
    /// `None` if its node did not answer (or has not opened it yet).
    pub report: Option<ReplicaReport>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShardStatus {
    pub shard: u32,
    /// The id hashes it holds, both ends inclusive.
    pub range: shoal_meta::HashRange,
    pub leader: Option<u64>,
    pub replicas: Vec<ReplicaStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CollectionStatus {
    pub name: String,
    pub id: u64,
    /// Bumped by every split: requests routed by an older version are routed again.
    pub routing_version: u64,
    pub shards: Vec<ShardStatus>,
}

/// The whole cluster, as gathered by one node.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    pub node_id: u64,
    pub metadata_leader: Option<u64>,
    pub nodes: Vec<NodeHealth>,
    pub collections: Vec<CollectionStatus>,
    pub operations: Vec<OperationStatus>,
}

/// Gathers the status of every node and replica, as `router`'s node sees it.
/// Unreachable nodes are reported, not errors.
pub(crate) async fn gather(router: &Router, digests: bool) -> ClusterStatus {
    let host = router.host();
    let state = host.state();
    let voters: std::collections::BTreeSet<u64> = host
        .meta
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let nodes: Vec<u64> = state.nodes.keys().copied().collect();
    let reports = join_all(nodes.iter().map(|id| ask(router, *id, digests))).await;
    let mut by_group: BTreeMap<(u64, u64), ReplicaReport> = BTreeMap::new();
    let mut health = Vec::new();
    for (id, r) in nodes.into_iter().zip(reports) {
        let meta = &state.nodes[&id];
        let mut h = NodeHealth {
            id,
            address: meta.addr.clone(),
            reachable: false,
            error: None,
            state: meta.state.to_string(),
            voter: voters.contains(&id),
            load: None,
            failure: None,
        };
        match r {
            Ok((report, digest_error)) => {
                for rep in report.replicas {
                    by_group.insert((rep.group, id), rep);
                }
                h.reachable = true;
                h.load = Some(report.load);
                h.failure = report.failure.map(|f| f.to_string());
                h.error = digest_error;
            }
            Err(e) => h.error = Some(e),
        }
        health.push(h);
    }
    let collections = state
        .collections
        .values()
        .map(|cm| CollectionStatus {
            name: cm.config.name.clone(),
            id: cm.id,
            routing_version: cm.routing_version,
            shards: cm
                .shards
                .iter()
                .map(|shard| {
                    let group = cm.group(shard.id);
                    let replicas: Vec<ReplicaStatus> = shard
                        .replicas
                        .iter()
                        .map(|n| ReplicaStatus {
                            node: *n,
                            report: by_group.get(&(group, *n)).cloned(),
                        })
                        .collect();
                    let leader = leader_of(&replicas);
                    ShardStatus {
                        shard: shard.id,
                        range: shard.range,
                        leader,
                        replicas,
                    }
                })
                .collect(),
        })
        .collect();
    let operations = state
        .operations
        .values()
        .map(|op| OperationStatus {
            id: op.id,
            description: describe(&op.kind, &state),
            progress: progress(&op.kind, &state, &by_group),
        })
        .collect();
    ClusterStatus {
        node_id: host.id,
        metadata_leader: host.leader_hint(shoal_meta::META_GROUP),
        nodes: health,
        collections,
        operations,
    }
}

/// What node `id` reports, with why its digests are missing if they are; or why it
/// did not report. See the module doc.
async fn ask(
    router: &Router,
    id: u64,
    digests: bool,
) -> Result<(NodeReport, Option<String>), String> {
    let short = REPORT_TIMEOUT.min(router.timeout());
    let quick = within(short, router.report_of(id, false, short));
    if !digests {
        return quick.await.map(|r| (r, None));
    }
    let full = within(
        router.timeout(),
        router.report_of(id, true, router.timeout()),
    );
    // A failed short report ends both at once; a failed digest report keeps the
    // short one.
    let (quick, full) = try_join(quick, async { Ok(full.await) }).await?;
    Ok(match full {
        Ok(full) => (full, None),
        Err(e) => (quick, Some(format!("no digests: {e}"))),
    })
}

/// `report`, given up after `deadline` however it waits (the call's own deadline
/// does not cover waiting for a connection to the node).
async fn within(
    deadline: Duration,
    report: impl Future<Output = crate::error::Result<NodeReport>>,
) -> Result<NodeReport, String> {
    match tokio::time::timeout(deadline, report).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no report within {} ms", deadline.as_millis())),
    }
}

/// How far an operation got, from the replicas' reports.
fn progress(
    kind: &OpKind,
    state: &ClusterState,
    reports: &BTreeMap<(u64, u64), ReplicaReport>,
) -> String {
    match kind {
        OpKind::Move {
            collection,
            shard,
            to: Some(to),
            ..
        } => {
            let group = shoal_meta::group_of(*collection, *shard);
            let leader_applied = state
                .replicas_of(group)
                .unwrap_or_default()
                .iter()
                .filter_map(|n| reports.get(&(group, *n)))
                .map(|r| r.applied)
                .max()
                .unwrap_or(0);
            match reports.get(&(group, *to)) {
                None => format!("node {to} has not opened its replica yet"),
                Some(r) if r.applied >= leader_applied => {
                    format!(
                        "node {to} caught up (applied {}); changing the voters",
                        r.applied
                    )
                }
                Some(r) => format!(
                    "node {to} catching up: applied {} of {leader_applied}",
                    r.applied
                ),
            }
        }
        OpKind::Move { .. } => "removing the replica from its group".into(),
        OpKind::Split { .. } => "splitting".into(),
    }
}

/// The leader of a shard as its replicas report it: the replica that says it leads in
/// the newest term (a restarted former leader says so too until it hears of a newer
/// term), else the leader the replica in the newest term follows.
fn leader_of(replicas: &[ReplicaStatus]) -> Option<u64> {
    let reports = || {
        replicas
            .iter()
            .filter_map(|r| Some((r.node, r.report.as_ref()?)))
    };
    let newest = reports().map(|(_, r)| r.term).max()?;
    reports()
        .find(|(_, r)| r.state == "leader" && r.term == newest)
        .map(|(node, _)| node)
        .or_else(|| {
            reports()
                .filter(|(_, r)| r.term == newest)
                .find_map(|(_, r)| r.leader)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{TestCluster, config, eventually, points};

    /// Node `id`'s health in `status`.
    fn health(status: &ClusterStatus, id: u64) -> &NodeHealth {
        status.nodes.iter().find(|n| n.id == id).expect("listed")
    }

    /// The digests node `node`'s replicas reported, by shard.
    fn digests_of(status: &ClusterStatus, node: u64) -> Vec<Option<u64>> {
        status.collections[0]
            .shards
            .iter()
            .map(|s| {
                s.replicas
                    .iter()
                    .find(|r| r.node == node)
                    .and_then(|r| r.report.as_ref()?.digest)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_answers_and_names_a_node_that_does_not_answer() {
        let mut cluster = TestCluster::start(3).await;
        cluster
            .node(1)
            .create_collection(config("c", 2, 3))
            .await
            .unwrap();
        cluster.node(1).upsert("c", points(0..50)).await.unwrap();
        eventually(30, "every replica reports", || async {
            let s = cluster.node(1).status(true).await.unwrap();
            match (1..=3).all(|n| digests_of(&s, n).iter().all(Option::is_some)) {
                true => Ok(()),
                false => Err(format!("{s:?}")),
            }
        })
        .await;

        // Node 3 stopped (its port refuses connections), then silenced (its port
        // accepts and never answers, as a paused or cut-off node): either way, with or
        // without digests, node 1 answers, names node 3 unreachable with a reason,
        // and still reports the others in full.
        for silent in [false, true] {
            if silent {
                cluster.silence(3).await;
            } else {
                cluster.stop(3).await;
            }
            for digests in [false, true] {
                let s = cluster.node(1).status(digests).await.unwrap();
                let what = format!("silent {silent}, digests {digests}: {s:?}");
                let h3 = health(&s, 3);
                assert!(!h3.reachable, "{what}");
                assert!(h3.error.is_some(), "{what}");
                assert!(h3.load.is_none(), "{what}");
                assert_eq!(digests_of(&s, 3), [None, None], "{what}");
                for n in [1, 2] {
                    let h = health(&s, n);
                    assert!(h.reachable && h.error.is_none(), "{what}");
                    assert!(
                        digests_of(&s, n).iter().all(|d| d.is_some() == digests),
                        "{what}"
                    );
                }
            }
        }
        // Back: reachable again.
        cluster.restart(3).await;
        eventually(30, "node 3 reachable again", || async {
            let s = cluster.node(1).status(false).await.unwrap();
            match health(&s, 3).reachable {
                true => Ok(()),
                false => Err(format!("{:?}", health(&s, 3))),
            }
        })
        .await;
    }

    fn rep(node: u64, state: &str, term: u64, leader: Option<u64>) -> ReplicaStatus {
        ReplicaStatus {
            node,
            report: Some(ReplicaReport {
                group: 1,
                state: state.into(),
                failure: None,
                leader,
                term,
                applied: 0,
                points: 0,
                digest: None,
                quarantined: 0,
            }),
        }
    }

    #[test]
    fn the_leader_is_the_one_in_the_newest_term() {
        // Node 1 restarted after leading term 3; node 2 leads term 4.
        let r = [
            rep(1, "leader", 3, Some(1)),
            rep(2, "leader", 4, Some(2)),
            rep(3, "follower", 4, Some(2)),
        ];
        assert_eq!(leader_of(&r), Some(2));
        // The leader unreachable: its followers in the newest term name it.
        let r = [
            rep(1, "leader", 3, Some(1)),
            ReplicaStatus {
                node: 2,
                report: None,
            },
            rep(3, "follower", 4, Some(2)),
        ];
        assert_eq!(leader_of(&r), Some(2));
        // An election under way: nobody leads.
        let r = [rep(1, "candidate", 5, None), rep(2, "follower", 5, None)];
        assert_eq!(leader_of(&r), None);
        let none: [ReplicaStatus; 0] = [];
        assert_eq!(leader_of(&none), None);
    }
}
