//! Elasticity with real processes: nodes join a running three-node cluster with
//! `--join` and take their share under a writer and a searcher, are drained back
//! out, and replica moves survive `kill -9` of their participants.
//!
//! Like the other cluster tests, these run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_proto::v1::{self as pb, cluster_client::ClusterClient};
use shoal_tests::Node;
use tonic::transport::Channel;

use crate::cluster::{
    Cluster, ONE_AT_A_TIME, TIMING, create_collection, points, status, strong, strong_get, vector,
    wait_replicas_agree,
};
use crate::*;

/// Starts a node that joins through `via` (an internal address).
fn join(dir: &std::path::Path, via: &str, extra: &[&str]) -> Node {
    join_with_env(dir, via, extra, &[])
}

/// [`join`] with extra environment variables (kept over restarts).
fn join_with_env(dir: &std::path::Path, via: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let mut args = vec!["--join", via];
    args.extend_from_slice(TIMING);
    args.extend_from_slice(extra);
    Node::start_with_env(binary(), dir, &args, env)
}

/// Upserts the points `ids` into collection `c` through `node`.
async fn upsert_c(node: &Node, ids: &[u64]) -> Result<(), tonic::Status> {
    points(node)
        .await
        .upsert(pb::UpsertRequest {
            collection: "c".into(),
            points: ids.iter().map(|i| point(*i, vector(*i), &[])).collect(),
        })
        .await
        .map(drop)
}

/// Writes points `0..batches * 250` into `c` through `node`, 250 at a time.
async fn seed_c(node: &Node, batches: u64) -> Vec<u64> {
    let mut acked = Vec::new();
    for b in 0..batches {
        let ids: Vec<u64> = (b * 250..(b + 1) * 250).collect();
        upsert_c(node, &ids).await.unwrap();
        acked.extend(ids);
    }
    acked
}

/// Node `id` of the moves' tests: one of the cluster's three, or the fourth, joined.
fn participant<'a>(cluster: &'a mut Cluster, four: &'a mut Node, id: u64) -> &'a mut Node {
    if id == 4 { four } else { cluster.node(id) }
}

/// Waits until the move on shard 0 of `c` finished (resumed) or was abandoned (rolled
/// back) — either way three distinct replicas and no operation — and the replicas
/// agree; asserts that they hold `acked` points, each once.
async fn wait_move_settled(via: &Node, acked: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (replicas, ops) = shard0(via).await;
        let distinct: BTreeSet<u64> = replicas.iter().copied().collect();
        if ops == 0 && replicas.len() == 3 && distinct.len() == 3 {
            eprintln!("{what}: replicas now {replicas:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the move neither finished nor rolled back: replicas {replicas:?}, \
             {ops} operations"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = wait_replicas_agree(via).await;
    assert_eq!(
        s.collections[0].shards[0].replicas[0].points, acked as u64,
        "{what}: every acknowledged point, once"
    );
}

async fn cluster_client(node: &Node) -> ClusterClient<Channel> {
    ClusterClient::new(node.channel().await)
}

/// Waits until the cluster has exactly `nodes`, no operation in flight, every node
/// reachable and replica counts within ±1 of each other (every node holding some).
async fn wait_balanced(via: &Node, nodes: &[u64], what: &str) -> pb::ClusterStatus {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = status(via, false).await;
        let counts = replica_counts(&s);
        let ids: Vec<u64> = counts.keys().copied().collect();
        let (min, max) = (
            counts.values().min().copied().unwrap_or(0),
            counts.values().max().copied().unwrap_or(0),
        );
        if ids == nodes
            && s.operations.is_empty()
            && s.nodes.iter().all(|n| n.reachable)
            && min >= 1
            && max - min <= 1
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not balanced within 180 s; counts {counts:?}, operations {:?}",
            s.operations
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Top-10 ids of fixed queries on collection `fixed`, read STRONG through `node`.
async fn answers(node: &Node) -> Vec<Vec<u64>> {
    let mut pts = points(node).await;
    let mut all = Vec::new();
    for q in 0..10u64 {
        let hits = pts
            .search(pb::SearchRequest {
                read: strong(),
                ..search("fixed", vector(q * 37 + 5), 10)
            })
            .await
            .expect("search")
            .into_inner()
            .results;
        all.push(hits.iter().map(|h| id_of(&h.id)).collect());
    }
    all
}

/// Load through the three original nodes: a writer of unique ids (each batch retried
/// on UNAVAILABLE, which the server only answers when retrying is safe) and a
/// searcher. Both bounded in time.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<parking_lot::Mutex<Vec<u64>>>,
    failed_writes: Arc<AtomicU64>,
    failed_searches: Arc<AtomicU64>,
    searches: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(urls: Vec<String>) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            acked: Default::default(),
            failed_writes: Default::default(),
            failed_searches: Default::default(),
            searches: Default::default(),
            tasks: Vec::new(),
        };
        let writer = {
            let (urls, stop, acked, failed) = (
                urls.clone(),
                load.stop.clone(),
                load.acked.clone(),
                load.failed_writes.clone(),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let mut next = 1_000_000u64;
                let mut turn = 0;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600)
                {
                    turn += 1;
                    let ids: Vec<u64> = (next..next + 5).collect();
                    next += 5;
                    let req = pb::UpsertRequest {
                        collection: "w".into(),
                        points: ids.iter().map(|i| point(*i, vector(*i), &[])).collect(),
                    };
                    let mut ok = false;
                    for attempt in 0..5 {
                        let url = urls[(turn + attempt) % urls.len()].clone();
                        let Ok(ch) = Channel::from_shared(url).unwrap().connect().await else {
                            continue;
                        };
                        match pb::points_client::PointsClient::new(ch)
                            .upsert(req.clone())
                            .await
                        {
                            Ok(_) => {
                                ok = true;
                                break;
                            }
                            Err(s) if s.code() == tonic::Code::Unavailable => {
                                eprintln!("write retried: {}", s.message());
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Err(s) => panic!("write refused: {s:?}"),
                        }
                    }
                    if ok {
                        acked.lock().extend(ids);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let searcher = {
            let (stop, failed, done) = (
                load.stop.clone(),
                load.failed_searches.clone(),
                load.searches.clone(),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let mut turn = 0;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600)
                {
                    turn += 1;
                    let url = urls[turn % urls.len()].clone();
                    let r = async {
                        let ch = Channel::from_shared(url).unwrap().connect().await?;
                        pb::points_client::PointsClient::new(ch)
                            .search(search("w", vector(turn as u64), 5))
                            .await
                            .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
                    }
                    .await;
                    match r {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("search failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Load {
            tasks: vec![writer, searcher],
            ..load
        }
    }

    async fn stop(self) -> (Vec<u64>, u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let acked = self.acked.lock().clone();
        (
            acked,
            self.failed_writes.load(Ordering::Relaxed),
            self.failed_searches.load(Ordering::Relaxed),
            self.searches.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_grow_to_five_and_drain_back_under_load() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(&[]);
    let joined_dir = tempfile::tempdir().unwrap();
    create_collection(&cluster.nodes[0], "w", 4, 2).await;
    create_collection(&cluster.nodes[0], "fixed", 2, 3).await;
    let mut pts = points(&cluster.nodes[0]).await;
    pts.upsert(pb::UpsertRequest {
        collection: "fixed".into(),
        points: (0..400).map(|i| point(i, vector(i), &[])).collect(),
    })
    .await
    .unwrap();
    let before = answers(&cluster.nodes[0]).await;
    let load = Load::start(cluster.nodes.iter().map(|n| n.url.clone()).collect());

    // 3 → 4 → 5: each new node gets an id from the cluster and its share.
    let via = cluster.raft[0].clone();
    let four = join(&joined_dir.path().join("a"), &via, &[]);
    wait_balanced(&cluster.nodes[0], &[1, 2, 3, 4], "after node 4 joined").await;
    let five = join(&joined_dir.path().join("b"), &via, &[]);
    wait_balanced(&cluster.nodes[0], &[1, 2, 3, 4, 5], "after node 5 joined").await;
    assert_eq!(answers(&four).await, before, "node 4 answers as before");

    // Drain both back out through the public API.
    let mut admin = cluster_client(&cluster.nodes[1]).await;
    admin
        .drain(pb::DrainRequest { node: 5 })
        .await
        .expect("drain node 5");
    wait_balanced(&cluster.nodes[0], &[1, 2, 3, 4], "after node 5 drained").await;
    admin
        .drain(pb::DrainRequest { node: 4 })
        .await
        .expect("drain node 4");
    let settled = wait_balanced(&cluster.nodes[0], &[1, 2, 3], "after node 4 drained").await;
    let (acked, failed_writes, failed_searches, searches) = load.stop().await;
    eprintln!(
        "{} points acknowledged, {failed_writes} writes and {failed_searches} of {searches} \
         searches failed",
        acked.len()
    );
    assert!(acked.len() > 50, "the writer made progress");
    assert_eq!(failed_writes, 0, "no write failed (after bounded retries)");
    assert_eq!(failed_searches, 0, "no search failed");

    // Drained nodes found out, deleted what they held and stopped serving.
    for (n, node) in [(4, &four), (5, &five)] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !node
            .log()
            .contains("was drained and removed from the cluster")
        {
            assert!(
                Instant::now() < deadline,
                "node {n} did not notice it was drained:\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let ids: BTreeSet<u64> = settled.nodes.iter().map(|n| n.id).collect();
    assert_eq!(ids, [1, 2, 3].into());

    // Nothing lost, replicas identical, answers unchanged through every node.
    for n in &cluster.nodes {
        let found = strong_get(n, "w", &acked).await;
        let missing: Vec<&u64> = acked.iter().filter(|i| !found.contains(i)).collect();
        assert!(missing.is_empty(), "node {}: lost {missing:?}", n.url);
        assert_eq!(answers(n).await, before, "answers through {}", n.url);
    }
    wait_replicas_agree(&cluster.nodes[0]).await;
    // Leaders are spread: no node leads most shards.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&cluster.nodes[0], false).await;
        let mut leads: BTreeMap<u64, usize> = BTreeMap::new();
        for sh in s.collections.iter().flat_map(|c| &c.shards) {
            if let Some(l) = sh.leader {
                *leads.entry(l).or_default() += 1;
            }
        }
        if leads.len() == 3 && leads.values().all(|n| *n <= 3) {
            break;
        }
        assert!(Instant::now() < deadline, "leaders not spread: {leads:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The replicas of shard 0 of `c` in the metadata, and the operations in flight.
async fn shard0(via: &Node) -> (Vec<u64>, usize) {
    let s = status(via, false).await;
    let c = s.collections.iter().find(|c| c.name == "c").expect("c");
    (
        c.shards[0].replicas.iter().map(|r| r.node).collect(),
        s.operations.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_survives_kill_9_of_its_source_its_target_and_the_metadata_leader() {
    let _one = ONE_AT_A_TIME.lock().await;
    // No automatic moves: the test makes them by hand.
    let mut cluster = Cluster::start(&["--auto-rebalance", "false"]);
    let joined_dir = tempfile::tempdir().unwrap();
    create_collection(&cluster.nodes[0], "c", 1, 3).await;
    let mut acked = seed_c(&cluster.nodes[0], 40).await;
    let mut four = join(
        &joined_dir.path().join("a"),
        &cluster.raft[0],
        &["--auto-rebalance", "false"],
    );
    let mut admin = cluster_client(&cluster.nodes[0]).await;

    // Which participant dies, in turn: the source, the target, the metadata leader.
    for round in 0..3 {
        let (replicas, _) = shard0(&cluster.nodes[0]).await;
        let (from, to) = if replicas.contains(&4) {
            (
                4,
                *[1, 2, 3].iter().find(|n| !replicas.contains(n)).unwrap(),
            )
        } else {
            (replicas[0], 4)
        };
        let s = status(&cluster.nodes[0], false).await;
        let meta_leader = s.metadata_leader.expect("a metadata leader");
        let victim = match round {
            0 => from,
            1 => to,
            _ => meta_leader,
        };
        eprintln!("round {round}: move from {from} to {to}, kill -9 node {victim}");
        admin
            .move_replica(pb::MoveReplicaRequest {
                collection: "c".into(),
                shard: 0,
                from: Some(from),
                to: Some(to),
            })
            .await
            .expect("start the move");
        tokio::time::sleep(Duration::from_millis(300)).await;
        participant(&mut cluster, &mut four, victim).kill9();
        // Writes go on meanwhile.
        let ids: Vec<u64> = (100_000 + round * 100..100_000 + round * 100 + 100).collect();
        let survivor = [1u64, 2, 3].into_iter().find(|n| *n != victim).unwrap();
        upsert_c(cluster.node(survivor), &ids)
            .await
            .expect("a write while a participant is down");
        acked.extend(ids);
        tokio::time::sleep(Duration::from_secs(2)).await;
        participant(&mut cluster, &mut four, victim).restart(binary());
        wait_move_settled(
            cluster.node(survivor),
            acked.len(),
            &format!("round {round}"),
        )
        .await;
    }
    let found = strong_get(&four, "c", &acked).await;
    assert_eq!(found.len(), acked.len(), "nothing lost");
}

/// Shard counts of `names` as `via` reports them, and the operations in flight.
async fn shard_counts(via: &Node, names: &[&str]) -> (Vec<usize>, usize) {
    let s = status(via, false).await;
    let counts = names
        .iter()
        .map(|n| {
            s.collections
                .iter()
                .find(|c| c.name == *n)
                .map_or(0, |c| c.shards.len())
        })
        .collect();
    (counts, s.operations.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshard_from_one_to_four_shards_under_load_survives_a_kill_9() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(&[]);
    create_collection(&cluster.nodes[0], "w", 1, 3).await;
    create_collection(&cluster.nodes[0], "fixed", 1, 3).await;
    let mut pts = points(&cluster.nodes[0]).await;
    pts.upsert(pb::UpsertRequest {
        collection: "fixed".into(),
        points: (0..400).map(|i| point(i, vector(i), &[])).collect(),
    })
    .await
    .unwrap();
    // One shard of 400 points is scanned exactly: the exact answer.
    let before = answers(&cluster.nodes[0]).await;
    // Load through nodes 1 and 2; node 3 dies in the middle of the reshard.
    let load = Load::start(cluster.nodes[..2].iter().map(|n| n.url.clone()).collect());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut collections, _) = cluster.nodes[0].clients().await;
    for name in ["w", "fixed"] {
        let info = collections
            .update(pb::UpdateCollectionRequest {
                name: name.into(),
                replication_factor: None,
                shard_count: Some(4),
            })
            .await
            .expect("start the reshard")
            .into_inner();
        assert_eq!(
            info.config.unwrap().shard_count,
            1,
            "recorded, not done yet"
        );
    }
    cluster.node(3).kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.node(3).restart(binary());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (counts, ops) = shard_counts(&cluster.nodes[0], &["w", "fixed"]).await;
        if counts == [4, 4] && ops == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reshard did not finish: shards {counts:?}, {ops} operations"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Shrinking is refused, and names its field.
    let refused = collections
        .update(pb::UpdateCollectionRequest {
            name: "w".into(),
            replication_factor: None,
            shard_count: Some(2),
        })
        .await
        .expect_err("merging shards is not supported");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("shards"),
        "{}",
        refused.message()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, failed_writes, failed_searches, searches) = load.stop().await;
    eprintln!(
        "{} points acknowledged, {failed_writes} writes and {failed_searches} of {searches} \
         searches failed",
        acked.len()
    );
    assert!(acked.len() > 50, "the writer made progress");
    assert_eq!(failed_writes, 0, "no write failed (after bounded retries)");
    assert_eq!(failed_searches, 0, "no search failed");
    let s = wait_replicas_agree(&cluster.nodes[0]).await;
    for c in &s.collections {
        let ranges: Vec<(u64, u64)> = c
            .shards
            .iter()
            .map(|sh| (sh.hash_first, sh.hash_last))
            .collect();
        assert_eq!(
            ranges.first().map(|r| r.0),
            Some(0),
            "{}: {ranges:?}",
            c.name
        );
        assert_eq!(
            ranges.last().map(|r| r.1),
            Some(u64::MAX),
            "{}: {ranges:?}",
            c.name
        );
        for w in ranges.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0, "{}: ranges {ranges:?}", c.name);
        }
        let points: u64 = c.shards.iter().map(|sh| sh.replicas[0].points).sum();
        let expected = if c.name == "w" {
            acked.len() as u64
        } else {
            400
        };
        assert_eq!(points, expected, "{}: every point once", c.name);
    }
    for n in &cluster.nodes {
        let found = strong_get(n, "w", &acked).await;
        let missing: Vec<&u64> = acked.iter().filter(|i| !found.contains(i)).collect();
        assert!(missing.is_empty(), "node {}: lost {missing:?}", n.url);
        assert_eq!(answers(n).await, before, "answers through {}", n.url);
    }
}

/// The failpoints a move can be held at (`shoal_cluster`'s `failpoints` module), in
/// the order a move passes them.
const MOVE_STEPS: [&str; 4] = [
    "move-learner-added",
    "move-caught-up",
    "move-leader-handed",
    "move-voters-changed",
];

/// How many times the nodes logged that an operation was held at `step`.
fn holds(nodes: &[&Node], step: &str) -> usize {
    nodes
        .iter()
        .map(|n| {
            n.log()
                .lines()
                .filter(|l| l.contains("held at a failpoint") && l.contains(step))
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_survives_kill_9_between_every_two_of_its_steps() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Every node holds a move at each step while the file of that name exists in
    // `hold` (the test node binary has failpoints compiled in).
    let hold = tempfile::tempdir().unwrap();
    let failpoints = MOVE_STEPS
        .iter()
        .map(|s| format!("{s}=return({})", hold.path().display()))
        .collect::<Vec<_>>()
        .join(";");
    let env = [("FAILPOINTS", failpoints.as_str())];
    let mut cluster = Cluster::start_with_env(&["--auto-rebalance", "false"], &env);
    let joined_dir = tempfile::tempdir().unwrap();
    create_collection(&cluster.nodes[0], "c", 1, 3).await;
    let mut acked = seed_c(&cluster.nodes[0], 20).await;
    let mut four = join_with_env(
        &joined_dir.path().join("a"),
        &cluster.raft[0],
        &["--auto-rebalance", "false"],
        &env,
    );
    let mut next_id = 100_000u64;

    // Three moves; in each, a participant is killed -9 while the move is held after
    // each of its steps, the role rotating so that every step sees each of the
    // source, the target and the metadata leader die.
    for m in 0..3usize {
        let s = status(&cluster.nodes[0], false).await;
        let shard = &s.collections.iter().find(|c| c.name == "c").unwrap().shards[0];
        let replicas: Vec<u64> = shard.replicas.iter().map(|r| r.node).collect();
        // From the leader, so that the move hands its leadership over.
        let from = shard.leader.expect("shard 0 has a leader");
        let to = *[1u64, 2, 3, 4]
            .iter()
            .find(|n| !replicas.contains(n))
            .unwrap();
        std::fs::write(hold.path().join(MOVE_STEPS[0]), b"").unwrap();
        let held_before: Vec<usize> = {
            let all: Vec<&Node> = cluster.nodes.iter().chain([&four]).collect();
            MOVE_STEPS.iter().map(|s| holds(&all, s)).collect()
        };
        eprintln!("move {m}: shard 0 from node {from} to node {to}");
        // A new client each time: a restarted node listens on a new port.
        cluster_client(&cluster.nodes[0])
            .await
            .move_replica(pb::MoveReplicaRequest {
                collection: "c".into(),
                shard: 0,
                from: Some(from),
                to: Some(to),
            })
            .await
            .expect("start the move");
        for (k, step) in MOVE_STEPS.iter().enumerate() {
            // The move reaches the step and stays there.
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let all: Vec<&Node> = cluster.nodes.iter().chain([&four]).collect();
                if holds(&all, step) > held_before[k] {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "move {m}: never held at {step} (status: {:?})",
                    status(&cluster.nodes[0], false).await.operations
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let alive = if from == 1 || to == 1 { 2 } else { 1 };
            let meta_leader = status(cluster.node(alive), false)
                .await
                .metadata_leader
                .expect("a metadata leader");
            let (role, victim) = match (m + k) % 3 {
                0 => ("source", from),
                1 => ("target", to),
                _ => ("metadata leader", meta_leader),
            };
            eprintln!("move {m}: held at {step}: kill -9 the {role}, node {victim}");
            participant(&mut cluster, &mut four, victim).kill9();
            // Writes go on while it is down.
            let ids: Vec<u64> = (next_id..next_id + 50).collect();
            next_id += 50;
            let survivor = [1u64, 2, 3].into_iter().find(|n| *n != victim).unwrap();
            upsert_c(cluster.node(survivor), &ids)
                .await
                .unwrap_or_else(|e| {
                    panic!("move {m}, {step}: a write while node {victim} is down: {e}")
                });
            acked.extend(ids);
            tokio::time::sleep(Duration::from_secs(1)).await;
            participant(&mut cluster, &mut four, victim).restart(binary());
            // On to the next step.
            std::fs::remove_file(hold.path().join(step)).unwrap();
            if let Some(next) = MOVE_STEPS.get(k + 1) {
                std::fs::write(hold.path().join(next), b"").unwrap();
            }
        }
        wait_move_settled(&cluster.nodes[0], acked.len(), &format!("move {m}")).await;
    }
    let found = strong_get(&four, "c", &acked).await;
    assert_eq!(found.len(), acked.len(), "nothing lost");
}
