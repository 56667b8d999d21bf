//! A full disk on one node of three: the write that meets it is answered
//! `RESOURCE_EXHAUSTED` at once (not after the request timeout), the node reports
//! NOT_SERVING and its failure in `Cluster.Status`, the other nodes keep taking
//! writes and every node keeps serving reads; once space is freed the node exits with
//! a clear message (for its supervisor), and started again it serves, catches up, and
//! every acknowledged write is there.
//!
//! Node 3's data directory is a small tmpfs in a mount namespace of its own
//! (`shoal_tests::SmallDisk`), so this needs root; without it the test says so and
//! skips.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shoal_proto::v1 as pb;
use shoal_tests::{Node, SmallDisk};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::cluster::{
    ONE_AT_A_TIME, TIMING, free_port, points, status, strong, wait_replicas_agree,
};
use crate::*;

/// Node 3's disk, and how much of it is left free before the writes fill it.
const DISK_BYTES: u64 = 192 << 20;
const LEFT_FREE: u64 = 12 << 20;
/// Dimension of the points written: 1 KiB vectors fill the disk in a few hundred
/// batches.
const DIM: usize = 256;
/// The request timeout of `TIMING` is 15 s; a refusal must come well before.
const QUICK: Duration = Duration::from_secs(3);

fn vector(id: u64) -> Vec<f32> {
    (0..DIM)
        .map(|i| ((id * 31 + i as u64) % 97) as f32)
        .collect()
}

fn batch(collection: &str, ids: &[u64]) -> pb::UpsertRequest {
    pb::UpsertRequest {
        collection: collection.into(),
        points: ids.iter().map(|i| point(*i, vector(*i), &[])).collect(),
    }
}

/// The gRPC health of the whole server (service "").
async fn health(node: &Node) -> Option<ServingStatus> {
    let mut h = tonic_health::pb::health_client::HealthClient::new(node.channel().await);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

/// Polls `f` every 200 ms until it returns `Some`, up to `limit`.
async fn within<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bytes available on the file system holding `path`.
fn available(path: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs writes only into the zeroed struct; `c` outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Every id of `ids` read through `node` with `read` (STRONG if `None`).
async fn present(
    node: &Node,
    collection: &str,
    ids: &[u64],
    read: Option<pb::ReadOptions>,
) -> BTreeSet<u64> {
    let mut c = points(node).await;
    let mut found = BTreeSet::new();
    for chunk in ids.chunks(2_000) {
        let r = c
            .get(pb::GetPointsRequest {
                collection: collection.into(),
                ids: chunk.iter().filter_map(|i| num(*i)).collect(),
                with_vector: true,
                read: read.clone().or_else(strong),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("get through {}: {e}", node.url))
            .into_inner();
        for p in r.points {
            let id = id_of(&p.id);
            assert_eq!(p.vector, vector(id), "point {id} has the vector written");
            found.insert(id);
        }
    }
    found
}

fn eventual() -> Option<pb::ReadOptions> {
    Some(pb::ReadOptions {
        consistency: pb::Consistency::Eventual as i32,
        token: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_is_refused_at_once_reported_and_healed_by_a_restart() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipped: a full disk needs root (a small tmpfs is mounted over node 3's data \
             directory in a mount namespace of its own)"
        );
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let n3_dir = dir.path().join("n3");
    // Declared before the nodes: dropped after them (the namespace ends with both).
    let disk = SmallDisk::mount(&n3_dir, DISK_BYTES).expect("a small disk for node 3");

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let args: Vec<Vec<String>> = (0..3)
        .map(|i| {
            let mut a: Vec<String> = [
                "--node-id".to_string(),
                (i + 1).to_string(),
                "--raft-listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--peers".into(),
                peers.clone(),
            ]
            .into();
            a.extend(TIMING.iter().map(|s| s.to_string()));
            a
        })
        .collect();
    let refs = |i: usize| args[i].iter().map(String::as_str).collect::<Vec<_>>();
    let mut nodes = vec![
        Node::start(binary(), &dir.path().join("n1"), &refs(0)),
        Node::start(binary(), &dir.path().join("n2"), &refs(1)),
        Node::start_wrapped(&disk.wrapper(), binary(), &n3_dir, &refs(2)),
    ];

    // "d": 3 shards × 3 replicas (every node holds all of it); "solo": one shard,
    // one replica, which the rotation places on node 3 (collection id 2).
    let (mut cols, _) = nodes[0].clients().await;
    for (name, shards, rf) in [("d", 3, 3), ("solo", 1, 1)] {
        cols.create(pb::CreateCollectionRequest {
            replication_factor: Some(rf),
            ..create(name, DIM as u32, pb::Metric::L2, shards)
        })
        .await
        .unwrap();
    }
    let s = within(
        Duration::from_secs(60),
        "every shard has a leader",
        || async {
            let s = status(&nodes[0], false).await;
            s.collections
                .iter()
                .all(|c| c.shards.iter().all(|sh| sh.leader.is_some()))
                .then_some(s)
        },
    )
    .await;
    let solo = s.collections.iter().find(|c| c.name == "solo").unwrap();
    assert_eq!(
        solo.shards[0]
            .replicas
            .iter()
            .map(|r| r.node)
            .collect::<Vec<_>>(),
        vec![3],
        "solo's one replica is on node 3"
    );

    // Leave LEFT_FREE bytes on node 3's disk.
    let filler = disk.outside(&n3_dir.join("filler"));
    let fill = available(&disk.outside(&n3_dir)).saturating_sub(LEFT_FREE);
    std::fs::write(&filler, vec![0u8; fill as usize]).expect("writing the filler");
    eprintln!(
        "node 3's disk: {} MiB free",
        available(&disk.outside(&n3_dir)) >> 20
    );

    // Write 50 points at a time to both collections through nodes 1 and 2 until a
    // write to "solo" (node 3's only) fails.
    let mut acked_d: Vec<u64> = Vec::new();
    let mut acked_solo: Vec<u64> = Vec::new();
    let (mut c1, mut c2) = (points(&nodes[0]).await, points(&nodes[1]).await);
    let mut next = 0u64;
    let started = Instant::now();
    let (refusal, took) = loop {
        assert!(
            started.elapsed() < Duration::from_secs(180) && next < 400_000,
            "node 3's disk did not fill: {} MiB free",
            available(&disk.outside(&n3_dir)) >> 20
        );
        let ids: Vec<u64> = (next..next + 50).collect();
        next += 50;
        let at = Instant::now();
        match c1.upsert(batch("solo", &ids)).await {
            Ok(_) => acked_solo.extend(&ids),
            Err(status) => break (status, at.elapsed()),
        }
        let ids: Vec<u64> = (next..next + 50).collect();
        next += 50;
        // "d" may fail too while node 3 led a shard of it; only what succeeds counts.
        if c2.upsert(batch("d", &ids)).await.is_ok() {
            acked_d.extend(&ids);
        }
    };
    eprintln!(
        "the disk filled after {} solo and {} d points; the refusal came in {took:?}: {}",
        acked_solo.len(),
        acked_d.len(),
        refusal.message()
    );
    assert_eq!(
        refusal.code(),
        tonic::Code::ResourceExhausted,
        "{refusal:?}"
    );
    assert!(took < QUICK, "refused after {took:?}, not at once");
    let m = refusal.message();
    assert!(m.starts_with("disk: "), "{m}");
    assert!(m.contains("is full"), "{m}");
    assert!(
        m.contains(&n3_dir.display().to_string()),
        "names the data directory: {m}"
    );

    // The next write is refused at once too, and provably not written.
    let at = Instant::now();
    let again = c1
        .upsert(batch("solo", &[1_000_000_000]))
        .await
        .expect_err("node 3 takes no writes");
    assert_eq!(again.code(), tonic::Code::ResourceExhausted, "{again:?}");
    assert!(at.elapsed() < QUICK, "refused after {:?}", at.elapsed());
    assert!(
        again.message().contains("not written"),
        "{}",
        again.message()
    );

    // Node 3 says it does not serve: gRPC health and Cluster.Status.
    within(Duration::from_secs(10), "node 3 NOT_SERVING", || async {
        (health(&nodes[2]).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    assert_eq!(health(&nodes[0]).await, Some(ServingStatus::Serving));
    let s = within(
        Duration::from_secs(10),
        "node 3's failure in Cluster.Status",
        || async {
            let s = status(&nodes[0], false).await;
            let n3 = s.nodes.iter().find(|n| n.id == 3)?;
            n3.failure.contains("is full").then_some(s)
        },
    )
    .await;
    let solo_replica = &s
        .collections
        .iter()
        .find(|c| c.name == "solo")
        .unwrap()
        .shards[0]
        .replicas[0];
    assert_eq!(solo_replica.state, "failed", "{solo_replica:?}");
    assert!(!solo_replica.failure.is_empty(), "{solo_replica:?}");

    // The other nodes take writes (through node 3 too: it forwards to the leaders),
    // each in time once the shard node 3 led has elected another leader.
    let mut c3 = points(&nodes[2]).await;
    let writes_from = Instant::now();
    let mut rounds = Vec::new();
    for round in 0..6 {
        let ids: Vec<u64> = (next..next + 50).collect();
        next += 50;
        let c = match round % 3 {
            0 => &mut c1,
            1 => &mut c2,
            _ => &mut c3,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.upsert(batch("d", &ids)).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "round {round}: writes to d still fail: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        acked_d.extend(ids);
        rounds.push(writes_from.elapsed());
    }
    eprintln!("writes to d after the failure succeeded at {rounds:?}");

    // Reads keep working: STRONG through the healthy nodes, EVENTUAL through node 3
    // (the only replica of "solo" is there).
    for n in &nodes[..2] {
        let found = present(n, "d", &acked_d, None).await;
        assert_eq!(found.len(), acked_d.len(), "d through {}", n.url);
    }
    for n in &nodes {
        let found = present(n, "solo", &acked_solo, eventual()).await;
        assert_eq!(found.len(), acked_solo.len(), "solo through {}", n.url);
    }

    // Space freed: node 3 exits by itself, non-zero, saying why.
    std::fs::remove_file(&filler).expect("removing the filler");
    let freed = Instant::now();
    let exited = nodes[2]
        .wait_exit(Duration::from_secs(30))
        .expect("node 3 exits once its disk has room again");
    assert!(!exited.success(), "{exited:?}");
    eprintln!(
        "node 3 exited {:?} after the space was freed: {exited}",
        freed.elapsed()
    );
    let log = nodes[2].log();
    assert!(
        log.contains("exits now that its data directory has room again"),
        "node 3's log:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );

    // Its supervisor starts it again: it serves, catches up, and nothing
    // acknowledged is missing anywhere.
    nodes[2].restart(binary());
    within(Duration::from_secs(60), "node 3 SERVING again", || async {
        (health(&nodes[2]).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    let restarted = Instant::now();
    let s = wait_replicas_agree(&nodes[0]).await;
    eprintln!(
        "node 3 restarted; replicas agree after {:?}",
        restarted.elapsed()
    );
    assert!(s.nodes.iter().all(|n| n.failure.is_empty()), "{s:#?}");
    let mut c3 = points(&nodes[2]).await;
    let ids: Vec<u64> = (next..next + 50).collect();
    c3.upsert(batch("solo", &ids))
        .await
        .expect("solo takes writes again");
    acked_solo.extend(ids);
    for n in &nodes {
        let found = present(n, "d", &acked_d, None).await;
        let missing: Vec<&u64> = acked_d.iter().filter(|i| !found.contains(i)).collect();
        assert!(missing.is_empty(), "d through {}: lost {missing:?}", n.url);
        let found = present(n, "solo", &acked_solo, None).await;
        let missing: Vec<&u64> = acked_solo.iter().filter(|i| !found.contains(i)).collect();
        assert!(
            missing.is_empty(),
            "solo through {}: lost {missing:?}",
            n.url
        );
    }
    drop(nodes);
}
