//! Backups end to end: a three-node cluster backed up while a writer goes on, the
//! backup downloaded with the CLI, the cluster destroyed, and the backup restored
//! into a fresh single node (CLI upload) and a fresh three-node cluster (gRPC
//! upload, and by name from a node's backup directory); restored contents equal the
//! backup's, every write acknowledged before the backup began is in it, and fixed
//! queries answer the same. Damaged backups are refused naming the file, with
//! nothing left visible.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use shoal_proto::v1::{self as pb, backups_client::BackupsClient};
use shoal_tests::Node;
use tonic::transport::Channel;

use crate::cluster::{Cluster, ONE_AT_A_TIME, create_collection, points, strong, vector};
use crate::*;

fn shoal(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("--addr")
        .arg(url)
        .args(args)
        .output()
        .expect("run shoal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn backups(node: &Node) -> BackupsClient<Channel> {
    BackupsClient::new(node.channel().await)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// Every point of `collection` read through `node` (STRONG), by id: (vector, payload).
async fn contents(node: &Node, collection: &str) -> BTreeMap<u64, (Vec<f32>, String)> {
    let mut pts = points(node).await;
    let mut out = BTreeMap::new();
    let mut offset = None;
    loop {
        let r = pts
            .scroll(pb::ScrollRequest {
                collection: collection.into(),
                offset,
                limit: Some(1000),
                with_payload: true,
                with_vector: true,
                read: strong(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for p in r.points {
            let payload: BTreeMap<_, _> = p
                .payload
                .iter()
                .map(|(k, v)| (k.clone(), format!("{v:?}")))
                .collect();
            out.insert(id_of(&p.id), (p.vector, format!("{payload:?}")));
        }
        match r.next_offset {
            Some(o) => offset = Some(o),
            None => return out,
        }
    }
}

/// Exact answers (ef covering every point) to fixed queries, as (id, score) lists.
async fn answers(node: &Node, collection: &str) -> Vec<Vec<(u64, String)>> {
    let queries = (0..12u64)
        .map(|q| pb::SearchRequest {
            collection: collection.into(),
            vector: vector(q * 977 % 5000),
            top_k: 10,
            ef: Some(8000),
            ..Default::default()
        })
        .collect();
    let r = points(node)
        .await
        .search_batch(pb::SearchBatchRequest {
            collection: collection.into(),
            searches: queries,
            read: strong(),
        })
        .await
        .unwrap()
        .into_inner();
    r.responses
        .iter()
        .map(|s| {
            s.results
                .iter()
                .map(|h| (id_of(&h.id), format!("{:.4}", h.score)))
                .collect()
        })
        .collect()
}

/// The points a backup archive holds, per collection, read with the backup crate.
fn archive_contents(tar: &[u8]) -> BTreeMap<String, BTreeMap<u64, Vec<f32>>> {
    let dir = tempfile::tempdir().unwrap();
    let store = shoal_backup::BackupStore::open(dir.path()).unwrap();
    let b = store.receive(tar).unwrap();
    let mut out = BTreeMap::new();
    for c in &b.manifest().collections {
        let mut pts = BTreeMap::new();
        for s in &c.shards {
            for frame in b.points(s).unwrap() {
                for p in frame.unwrap() {
                    let shoal_core::PointId::Num(id) = p.id else {
                        panic!("numeric ids only")
                    };
                    pts.insert(id, p.vector);
                }
            }
        }
        out.insert(c.config.name.clone(), pts);
    }
    out
}

async fn upsert(node: &Node, collection: &str, ids: std::ops::Range<u64>) {
    let mut pts = points(node).await;
    let all: Vec<pb::Point> = ids
        .map(|i| {
            point(
                i,
                vector(i),
                &[
                    ("tag", string(&format!("t{}", i % 7))),
                    ("n", int(i as i64)),
                ],
            )
        })
        .collect();
    for chunk in all.chunks(500) {
        pts.upsert(pb::UpsertRequest {
            collection: collection.into(),
            points: chunk.to_vec(),
        })
        .await
        .unwrap();
    }
}

async fn upload(
    node: &Node,
    tar: &[u8],
    options: pb::RestoreOptions,
) -> Result<pb::RestoreBackupResponse, tonic::Status> {
    let mut msgs = vec![pb::RestoreBackupRequest {
        part: Some(pb::restore_backup_request::Part::Options(options)),
    }];
    msgs.extend(tar.chunks(300_000).map(|c| pb::RestoreBackupRequest {
        part: Some(pb::restore_backup_request::Part::Chunk(c.to_vec())),
    }));
    backups(node)
        .await
        .restore(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

async fn names(node: &Node) -> BTreeSet<String> {
    let (mut cols, _) = node.clients().await;
    cols.list(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .collections
        .into_iter()
        .filter_map(|c| c.config.map(|c| c.name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_backed_up_under_writes_restores_anywhere() {
    let _one = ONE_AT_A_TIME.lock().await;
    let work = tempfile::tempdir().unwrap();
    let tar_path = work.path().join("full.tar");

    // 1. A three-node cluster with two collections.
    let cluster = Cluster::start(&[]);
    create_collection(&cluster.nodes[0], "docs", 3, 2).await;
    create_collection(&cluster.nodes[0], "tags", 1, 3).await;
    upsert(&cluster.nodes[1], "docs", 0..3000).await;
    upsert(&cluster.nodes[2], "tags", 0..400).await;
    let tags_answers = answers(&cluster.nodes[0], "tags").await;
    let tags_contents = contents(&cluster.nodes[0], "tags").await;

    // 2. A writer goes on through node 2 while node 1 backs up.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let mut pts = points(&cluster.nodes[1]).await;
        tokio::spawn(async move {
            for i in 0..400u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = 10_000 + i;
                let r = pts
                    .upsert(pb::UpsertRequest {
                        collection: "docs".into(),
                        points: vec![point(id, vector(id), &[("n", int(id as i64))])],
                    })
                    .await;
                if r.is_ok() {
                    acked.lock().push((id, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    let info = backups(&cluster.nodes[0])
        .await
        .create(pb::CreateBackupRequest {
            name: "full".into(),
            collections: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let before: BTreeSet<u64> = acked
        .lock()
        .iter()
        .filter(|(_, t)| *t < began)
        .map(|(id, _)| *id)
        .collect();
    let after_count = acked.lock().iter().filter(|(_, t)| *t > began).count();
    assert!(!before.is_empty(), "the writer wrote before the backup");
    assert!(
        after_count > 0,
        "the writer kept writing after the backup began"
    );
    assert_eq!(info.name, "full");
    assert_eq!(info.node, 1);
    let by_name: BTreeMap<&str, &pb::BackupCollection> = info
        .collections
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        ["docs", "tags"]
    );
    assert_eq!(by_name["docs"].shards.len(), 3);
    assert_eq!(by_name["tags"].points, 400);
    assert!(by_name["docs"].points >= 3000 + before.len() as u64);
    assert!(
        by_name["docs"]
            .shards
            .iter()
            .all(|s| s.applied_index > 0 && s.sha256.len() == 64)
    );

    // 3. Listed, downloaded with the CLI, then the cluster is destroyed.
    let (ok, out, err) = shoal(&cluster.nodes[0].url, &["backup", "list"]);
    assert!(
        ok && out.contains("full: ") && out.contains("docs ("),
        "{out}{err}"
    );
    let (ok, out, err) = shoal(
        &cluster.nodes[0].url,
        &[
            "backup",
            "download",
            "full",
            "--out",
            tar_path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let tar = std::fs::read(&tar_path).unwrap();
    let backed = archive_contents(&tar);
    // Every write acknowledged before the backup began is in it, nothing else
    // than what was written.
    let docs_ids: BTreeSet<u64> = backed["docs"].keys().copied().collect();
    assert!((0..3000).all(|i| docs_ids.contains(&i)));
    assert!(
        before.is_subset(&docs_ids),
        "acknowledged before the backup, missing from it"
    );
    assert!(
        docs_ids
            .iter()
            .all(|i| *i < 3000 || (10_000..10_400).contains(i))
    );
    assert_eq!(docs_ids.len() as u64, by_name["docs"].points);
    assert!(backed["docs"].iter().all(|(id, v)| *v == vector(*id)));
    drop(cluster);

    // 4. Into a fresh single node, by the CLI (rf capped at 1 by itself).
    let single_dir = tempfile::tempdir().unwrap();
    let single = Node::start(binary(), &single_dir.path().join("data"), &[]);
    let (ok, out, err) = shoal(
        &single.url,
        &["snapshot", "restore", tar_path.to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("restored docs:") && out.contains("restored tags: 400 points"),
        "{out}"
    );
    let single_docs = contents(&single, "docs").await;
    assert_eq!(
        single_docs.keys().copied().collect::<BTreeSet<_>>(),
        docs_ids,
        "the single node holds exactly the backup's points"
    );
    assert!(single_docs.iter().all(|(id, (v, _))| *v == vector(*id)));
    assert_eq!(contents(&single, "tags").await, tags_contents);
    assert_eq!(answers(&single, "tags").await, tags_answers);

    // 5. Into a fresh three-node cluster, uploaded over gRPC; and by name from the
    // node's backup directory under another name.
    let fresh = Cluster::start(&[]);
    let r = upload(&fresh.nodes[2], &tar, pb::RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(r.collections.len(), 2);
    assert_eq!(contents(&fresh.nodes[0], "docs").await, single_docs);
    assert_eq!(contents(&fresh.nodes[1], "tags").await, tags_contents);
    assert_eq!(answers(&fresh.nodes[0], "tags").await, tags_answers);
    assert_eq!(
        answers(&fresh.nodes[1], "docs").await,
        answers(&single, "docs").await
    );
    let (mut cols, _) = fresh.nodes[0].clients().await;
    let docs = cols
        .get(pb::GetCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let cfg = docs.config.unwrap();
    assert_eq!((cfg.shard_count, cfg.replication_factor), (3, 2));
    let b = backups(&fresh.nodes[0])
        .await
        .create(pb::CreateBackupRequest {
            name: "again".into(),
            collections: vec!["tags".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.points, 400);
    let r = upload(
        &fresh.nodes[0],
        &[],
        pb::RestoreOptions {
            backup: "again".into(),
            rename: "tags2".into(),
            replication_factor: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.collections[0].name, "tags2");
    assert_eq!(contents(&fresh.nodes[1], "tags2").await, tags_contents);

    // 6. Damaged backups: refused naming the bad file; nothing is created.
    let visible = names(&fresh.nodes[0]).await;
    let mut flipped = tar.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    let e = upload(
        &fresh.nodes[0],
        &flipped,
        pb::RestoreOptions {
            collections: vec!["docs".into()],
            rename: "docs_copy".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("collections/") && e.message().contains(".points"),
        "{}",
        e.message()
    );
    let e = upload(
        &fresh.nodes[0],
        &tar[..tar.len() * 2 / 3],
        pb::RestoreOptions {
            rename: "x".into(),
            collections: vec!["docs".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("truncated") || e.message().contains("missing"),
        "{}",
        e.message()
    );
    // A restore onto an existing name is refused before anything is written.
    let e = upload(&fresh.nodes[0], &tar, pb::RestoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert_eq!(names(&fresh.nodes[0]).await, visible);
    assert_eq!(names(&fresh.nodes[2]).await, visible);
}
