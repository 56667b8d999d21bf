//! openraft's storage conformance suite against our log store and shard state machine,
//! and a state machine that applies real point writes.

use openraft::testing::{StoreBuilder, Suite};
use shoal_core::{CollectionConfig, HnswParams, Metric};
use shoal_raft::{ChildSpec, LogStore, ShardStateMachine, StorageError, TypeConfig};
use shoal_shard::{Shard, ShardOptions};
use shoal_storage::Store;

struct Builder;

fn config() -> CollectionConfig {
    CollectionConfig {
        name: "t".into(),
        dim: 2,
        metric: Metric::L2,
        shard_count: 1,
        replication_factor: 3,
        hnsw: HnswParams::default(),
    }
}

fn open(dir: &std::path::Path) -> (Store, Shard) {
    let store = Store::open(dir).unwrap();
    let shard = shoal_shard::testing::open_in(&store, config(), ShardOptions::default());
    (store, shard)
}

impl StoreBuilder<TypeConfig, LogStore, ShardStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, ShardStateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (store, shard) = open(dir.path());
        let snapshots = dir.path().join("snapshots");
        Ok((
            dir,
            LogStore::new(store.raft_log(7)),
            ShardStateMachine::new(shard, snapshots),
        ))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn entry(index: u64, cmd: shoal_core::Write) -> openraft::Entry<TypeConfig> {
    openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(shoal_raft::Command::Shard(cmd)),
    }
}

fn point(id: u64, x: f32) -> shoal_core::Point {
    shoal_core::Point {
        id: shoal_core::PointId::Num(id),
        vector: vec![x, 0.0],
        payload: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_shard_refuses_writes_and_its_children_hold_their_halves() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use shoal_core::{PointId, Write};
    use shoal_raft::{Command, Rejection};
    use std::collections::BTreeMap;

    let (dir, low_dir, high_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_store, shard) = open(dir.path());
    let mut sm = ShardStateMachine::new(shard.clone(), dir.path().join("snapshots"));
    let seal = openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 2),
        payload: openraft::EntryPayload::Normal(Command::Seal),
    };
    let replies = sm
        .apply(vec![
            entry(
                1,
                Write::Upsert((0..200).map(|i| point(i, i as f32)).collect()),
            ),
            seal,
            entry(3, Write::Delete(vec![PointId::Num(5)])),
        ])
        .await
        .unwrap();
    assert_eq!(replies[2].rejected, Some(Rejection::Sealed));
    assert!(ShardStateMachine::is_sealed(&shard).unwrap());
    assert_eq!(
        shard.count(None),
        200,
        "the write after the seal was not applied"
    );
    // A follower that installs the sealed shard's snapshot is sealed too.
    let snap = sm.build_snapshot().await.unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_fs, follower) = open(follower_dir.path());
    let mut fsm = ShardStateMachine::new(follower.clone(), follower_dir.path().join("s"));
    fsm.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert!(ShardStateMachine::is_sealed(&follower).unwrap());
    // The children split the points by id hash, nothing lost, nothing twice.
    let at = 1u64 << 63;
    let voters: BTreeMap<u64, openraft::BasicNode> = (1..=3)
        .map(|n| (n, openraft::BasicNode::new(format!("n{n}"))))
        .collect();
    let empty = |dir: &std::path::Path| {
        let store = Store::open(dir).unwrap();
        let record = store.create_collection(config()).unwrap();
        let shard = store.shard(&record, 0).unwrap();
        (store, shard)
    };
    let (_ls, low_store) = empty(low_dir.path());
    let (_hs, high_store) = empty(high_dir.path());
    let child = |first, last| ChildSpec {
        shard: 0,
        first,
        last,
    };
    let low =
        ShardStateMachine::build_child(&shard, low_store, child(0, at - 1), None, voters.clone())
            .unwrap();
    let high = ShardStateMachine::build_child(
        &shard,
        high_store,
        child(at, u64::MAX),
        None,
        voters.clone(),
    )
    .unwrap();
    let (n_low, n_high) = (low.stats().points, high.stats().points);
    assert_eq!(n_low + n_high, 200);
    assert!(n_low > 50 && n_high > 50, "{n_low} / {n_high}");
    for (child, range) in [(&low, 0..=at - 1), (&high, at..=u64::MAX)] {
        let ids: Vec<PointId> = (0..200).map(PointId::Num).collect();
        for p in child.get(&ids, false, false) {
            assert!(range.contains(&shoal_core::routing::id_hash(&p.id)));
        }
        // A child starts at log index 0 with the group's voters, not sealed.
        let mut csm = ShardStateMachine::new(child.clone(), low_dir.path().join("s"));
        let (applied, membership) = csm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(0));
        assert_eq!(
            membership.membership().voter_ids().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(!ShardStateMachine::is_sealed(child).unwrap());
    }
    // Only a sealed shard can be split.
    let (other_dir, unsealed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_us, unsealed) = open(unsealed_dir.path());
    let (_os, other) = empty(other_dir.path());
    assert!(ShardStateMachine::build_child(&unsealed, other, child(0, 10), None, voters).is_err());
}

/// Every point of `shard` among ids `0..n`, with vector and payload, in id order.
fn contents(shard: &Shard, n: u64) -> Vec<shoal_core::RetrievedPoint> {
    let ids: Vec<shoal_core::PointId> = (0..n).map(shoal_core::PointId::Num).collect();
    shard.get(&ids, true, true)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_copied_ahead_of_the_seal_holds_what_one_split_off_at_the_seal_holds() {
    use openraft::storage::RaftStateMachine;
    use shoal_core::{PointId, Write};
    use shoal_raft::Command;
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    let (_store, shard) = open(dir.path());
    let mut sm = ShardStateMachine::new(shard.clone(), dir.path().join("snapshots"));
    sm.apply(vec![entry(
        1,
        Write::Upsert((0..300).map(|i| point(i, i as f32)).collect()),
    )])
    .await
    .unwrap();
    let at = 1u64 << 63;
    let halves = [
        ChildSpec {
            shard: 1,
            first: 0,
            last: at - 1,
        },
        ChildSpec {
            shard: 2,
            first: at,
            last: u64::MAX,
        },
    ];
    let voters: BTreeMap<u64, openraft::BasicNode> = (1..=3)
        .map(|n| (n, openraft::BasicNode::new(format!("n{n}"))))
        .collect();
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = store.create_collection(config()).unwrap();
        let shard = store.shard(&record, 0).unwrap();
        (dir, store, shard)
    };
    let ahead: Vec<_> = halves.iter().map(|_| fresh()).collect();
    let copies: Vec<_> = halves
        .iter()
        .zip(&ahead)
        .map(|(c, (_, _, s))| ShardStateMachine::copy_child(&shard, s.clone(), *c).unwrap())
        .collect();
    assert_eq!(copies.iter().map(|c| c.points()).sum::<u64>(), 300);
    // Writes after the copy: new points, changed ones, deleted ones; then the seal.
    let mut changed: Vec<_> = (0..20).map(|i| point(i, 1000.0 + i as f32)).collect();
    changed.extend((300..340).map(|i| point(i, i as f32)));
    sm.apply(vec![
        entry(2, Write::Upsert(changed)),
        entry(3, Write::Delete((20..40).map(PointId::Num).collect())),
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 4),
            payload: openraft::EntryPayload::Normal(Command::Seal),
        },
    ])
    .await
    .unwrap();
    let mut from_copies = Vec::new();
    for ((c, copy), (_, _, s)) in halves.iter().zip(copies).zip(&ahead) {
        let child =
            ShardStateMachine::build_child(&shard, s.clone(), *c, Some(copy), voters.clone())
                .unwrap();
        from_copies.push(child);
    }
    let at_seal: Vec<_> = halves.iter().map(|_| fresh()).collect();
    for ((c, child), (_, _, s)) in halves.iter().zip(&from_copies).zip(&at_seal) {
        let plain =
            ShardStateMachine::build_child(&shard, s.clone(), *c, None, voters.clone()).unwrap();
        assert_eq!(contents(child, 400), contents(&plain, 400));
        assert_eq!(child.meta().unwrap(), plain.meta().unwrap());
        let mut csm = ShardStateMachine::new(child.clone(), dir.path().join("c"));
        let (applied, _) = csm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(0));
    }
    let all: Vec<_> = from_copies.iter().flat_map(|c| contents(c, 400)).collect();
    assert_eq!(all.len(), 320, "300 + 40 new - 20 deleted");
    assert!(
        all.iter()
            .filter(|p| matches!(p.id, PointId::Num(i) if i < 20))
            .all(|p| p.vector.as_ref().is_some_and(|v| v[0] >= 1000.0)),
        "the copies hold the changed vectors"
    );
    // The children found after a restart hold the same (their stores are synced).
    drop(from_copies);
    for ((_, store, _), c) in ahead.iter().zip(&halves) {
        let reopened = store.shard(&store.collections().unwrap()[0], 0).unwrap();
        assert!(reopened.applied_seq().unwrap() > 0, "child {}", c.shard);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_copied_before_the_parent_installed_a_snapshot_is_split_off_afresh() {
    use openraft::storage::RaftStateMachine;
    use shoal_core::{PointId, Write};
    use shoal_raft::Command;
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    let (_store, shard) = open(dir.path());
    let mut sm = ShardStateMachine::new(shard.clone(), dir.path().join("snapshots"));
    sm.apply(vec![
        entry(
            1,
            Write::Upsert((0..100).map(|i| point(i, i as f32)).collect()),
        ),
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 2),
            payload: openraft::EntryPayload::Normal(Command::Seal),
        },
    ])
    .await
    .unwrap();
    let whole = ChildSpec {
        shard: 1,
        first: 0,
        last: u64::MAX,
    };
    let copy_dir = tempfile::tempdir().unwrap();
    let store = Store::open(copy_dir.path()).unwrap();
    let record = store.create_collection(config()).unwrap();
    let copy =
        ShardStateMachine::copy_child(&shard, store.shard(&record, 0).unwrap(), whole).unwrap();
    // The parent's contents replaced by a snapshot (a lagging replica catching up):
    // the same sealed state without points 0..50.
    let mut snap = shard.snapshot().unwrap();
    snap.points
        .retain(|p| !matches!(p.id, PointId::Num(i) if i < 50));
    shard.sync(shard.install(snap).unwrap()).unwrap();
    let voters: BTreeMap<u64, openraft::BasicNode> = (1..=3)
        .map(|n| (n, openraft::BasicNode::new(format!("n{n}"))))
        .collect();
    let child = ShardStateMachine::build_child(
        &shard,
        store.shard(&record, 0).unwrap(),
        whole,
        Some(copy),
        voters,
    )
    .unwrap();
    assert_eq!(contents(&child, 100), contents(&shard, 100));
    assert_eq!(child.stats().points, 50);
    // A copy made before the record of the writes restarted is stale as well.
    let again_dir = tempfile::tempdir().unwrap();
    let again = Store::open(again_dir.path()).unwrap();
    let record = again.create_collection(config()).unwrap();
    let copy =
        ShardStateMachine::copy_child(&shard, again.shard(&record, 0).unwrap(), whole).unwrap();
    shard.split_restart();
    assert!(matches!(
        shard.finish_split(copy, |_| true, 1, &[]),
        Err(shoal_shard::ShardError::StaleSplitCopy)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn applies_point_writes_idempotently_and_ships_them_by_snapshot() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use shoal_core::{PointId, Write};

    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let entries = vec![
        entry(
            1,
            Write::Upsert((0..50).map(|i| point(i, i as f32)).collect()),
        ),
        entry(2, Write::Delete(vec![PointId::Num(3)])),
        entry(3, Write::Upsert(vec![point(3, 3.5)])),
    ];
    {
        let (_store, shard) = open(a_dir.path());
        let mut sm = ShardStateMachine::new(shard, a_dir.path().join("snapshots"));
        let replies = sm.apply(entries.clone()).await.unwrap();
        assert_eq!(
            replies.iter().map(|r| r.applied).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            sm.applied_state().await.unwrap().0.map(|l| l.index),
            Some(3)
        );
    }
    // After a restart openraft may re-apply entries the state machine already has.
    let (_store, shard) = open(a_dir.path());
    let mut sm = ShardStateMachine::new(shard, a_dir.path().join("snapshots"));
    sm.apply(entries).await.unwrap();
    assert_eq!(sm.shard().count(None), 50);
    let got = sm.shard().get(&[PointId::Num(3)], false, true);
    assert_eq!(
        got[0].vector.as_deref(),
        Some(&[3.5, 0.0][..]),
        "the latest version wins, once"
    );

    // A snapshot carries every point to another replica.
    let snap = sm.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(3));
    let (_store_b, shard_b) = open(b_dir.path());
    let mut sm_b = ShardStateMachine::new(shard_b, b_dir.path().join("snapshots"));
    sm_b.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(
        sm_b.applied_state().await.unwrap().0.map(|l| l.index),
        Some(3)
    );
    assert_eq!(
        sm_b.shard().snapshot().unwrap().points,
        sm.shard().snapshot().unwrap().points
    );
    // The next entry applies on top of the snapshot.
    sm_b.apply(vec![entry(4, Write::Delete(vec![PointId::Num(0)]))])
        .await
        .unwrap();
    assert_eq!(sm_b.shard().count(None), 49);
}

mod cluster {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use openraft::{BasicNode, Config, Raft};
    use shoal_core::{PointId, Write};
    use shoal_proto::internal::v1::raft_transport_server::RaftTransportServer;
    use shoal_raft::network::{MAX_RAFT_MESSAGE, Network, Peers, RaftTransportService, Registry};
    use shoal_raft::{LogStore, ShardStateMachine, TypeConfig};

    use super::{open, point};

    const GROUP: u64 = 42;

    struct Node {
        raft: Raft<TypeConfig>,
        sm: ShardStateMachine,
        server: tokio::task::JoinHandle<()>,
        _store: shoal_storage::Store,
        _dir: tempfile::TempDir,
    }

    async fn start(id: u64, listener: tokio::net::TcpListener) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (store, shard) = open(dir.path());
        let registry = Registry::default();
        let service = RaftTransportServer::new(RaftTransportService::new(registry.clone(), id))
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        let config = Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let sm = ShardStateMachine::new(shard, dir.path().join("snapshots"));
        let raft = Raft::new(
            id,
            std::sync::Arc::new(config),
            Network::new(GROUP, Peers::default()),
            LogStore::new(store.raft_log(GROUP)),
            sm.clone(),
        )
        .await
        .unwrap();
        registry.insert(GROUP, raft.clone());
        Node {
            raft,
            sm,
            server,
            _store: store,
            _dir: dir,
        }
    }

    async fn leader_among(nodes: &BTreeMap<u64, Node>, not: Option<u64>) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            for n in nodes.values() {
                let m = n.raft.metrics().borrow().clone();
                if let Some(l) = m.current_leader
                    && Some(l) != not
                    && nodes.contains_key(&l)
                    && m.state == openraft::ServerState::Leader
                {
                    return l;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader elected within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_applied(nodes: &BTreeMap<u64, Node>, index: u64) {
        for n in nodes.values() {
            n.raft
                .wait(Some(Duration::from_secs(20)))
                .metrics(
                    |m| m.last_applied.is_some_and(|l| l.index >= index),
                    "applied",
                )
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn three_nodes_replicate_and_survive_the_leader() {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let members: BTreeMap<u64, BasicNode> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    i as u64 + 1,
                    BasicNode::new(l.local_addr().unwrap().to_string()),
                )
            })
            .collect();
        let mut nodes = BTreeMap::new();
        for (i, l) in listeners.into_iter().enumerate() {
            nodes.insert(i as u64 + 1, start(i as u64 + 1, l).await);
        }
        nodes[&1].raft.initialize(members).await.unwrap();

        // Writes go through the leader and reach every replica's shard.
        let leader = leader_among(&nodes, None).await;
        let resp = nodes[&leader]
            .raft
            .client_write(shoal_raft::Command::Shard(Write::Upsert(
                (0..100).map(|i| point(i, i as f32)).collect(),
            )))
            .await
            .unwrap();
        assert_eq!(resp.data.applied, resp.log_id.index);
        wait_applied(&nodes, resp.log_id.index).await;
        for (id, n) in &nodes {
            assert_eq!(n.sm.shard().count(None), 100, "replica {id}");
        }

        // The leader dies; the other two elect a new one and keep accepting writes.
        let old = nodes.remove(&leader).unwrap();
        old.raft.shutdown().await.unwrap();
        old.server.abort();
        let leader = leader_among(&nodes, Some(leader)).await;
        let resp = nodes[&leader]
            .raft
            .client_write(shoal_raft::Command::Shard(Write::Delete(
                (0..10).map(PointId::Num).collect(),
            )))
            .await
            .unwrap();
        wait_applied(&nodes, resp.log_id.index).await;
        let digests: Vec<_> = nodes
            .values()
            .map(|n| n.sm.shard().snapshot().unwrap().points)
            .collect();
        assert_eq!(digests[0].len(), 90);
        assert_eq!(
            digests[0], digests[1],
            "the surviving replicas agree point for point"
        );
        for n in nodes.values() {
            n.raft.shutdown().await.unwrap();
        }
    }
}
