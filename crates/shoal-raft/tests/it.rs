//! openraft's storage conformance suite against our log store and shard state machine,
//! and a state machine that applies real point writes.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use shoal_core::{CollectionConfig, HnswParams, Metric};
use shoal_raft::{LogStore, ShardStateMachine, StorageError, TypeConfig};
use shoal_shard::{Shard, ShardOptions};
use shoal_storage::Store;

struct Builder;

fn open(dir: &std::path::Path) -> (Store, Shard) {
    let store = Store::open(dir).unwrap();
    let config = CollectionConfig {
        name: "t".into(),
        dim: 2,
        metric: Metric::L2,
        shard_count: 1,
        replication_factor: 3,
        hnsw: HnswParams::default(),
    };
    let record = match store.collections().unwrap().pop() {
        Some(r) => r,
        None => store.create_collection(config.clone()).unwrap(),
    };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let shard = Shard::open(
        Arc::new(config),
        0,
        store.shard(&record, 0).unwrap(),
        ShardOptions::default(),
        pool,
    )
    .unwrap();
    (store, shard)
}

impl StoreBuilder<TypeConfig, LogStore, ShardStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, ShardStateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (store, shard) = open(dir.path());
        Ok((
            dir,
            LogStore::new(store.raft_log(7)),
            ShardStateMachine::new(shard),
        ))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn entry(index: u64, cmd: shoal_raft::ShardCommand) -> openraft::Entry<TypeConfig> {
    openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(cmd),
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
async fn applies_point_writes_idempotently_and_ships_them_by_snapshot() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use shoal_core::PointId;
    use shoal_raft::ShardCommand;

    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let entries = vec![
        entry(
            1,
            ShardCommand::Upsert((0..50).map(|i| point(i, i as f32)).collect()),
        ),
        entry(2, ShardCommand::Delete(vec![PointId::Num(3)])),
        entry(3, ShardCommand::Upsert(vec![point(3, 3.5)])),
    ];
    {
        let (_store, shard) = open(a_dir.path());
        let mut sm = ShardStateMachine::new(shard);
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
    let mut sm = ShardStateMachine::new(shard);
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
    let mut sm_b = ShardStateMachine::new(shard_b);
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
    sm_b.apply(vec![entry(4, ShardCommand::Delete(vec![PointId::Num(0)]))])
        .await
        .unwrap();
    assert_eq!(sm_b.shard().count(None), 49);
}
