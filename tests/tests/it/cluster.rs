//! Three `shoal` processes on loopback forming one cluster: leaders killed with
//! SIGKILL under a writer, a node catching up through a snapshot, read-your-writes
//! across nodes, and searches through any node equal to a single node's.
//!
//! Cluster tests run one at a time (each starts three processes on two cores).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_proto::v1::{self as pb, cluster_client::ClusterClient, points_client::PointsClient};
use shoal_tests::Node;
use tonic::transport::Channel;

use crate::*;

pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Timing for tests: faster than the defaults, still well above a loaded machine's
/// scheduling hiccups.
pub(crate) const TIMING: &[&str] = &[
    "--raft-heartbeat-ms",
    "200",
    "--raft-election-min-ms",
    "1000",
    "--raft-election-max-ms",
    "2000",
    "--request-timeout-ms",
    "15000",
];

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    /// The internal (Raft) address of each node.
    pub(crate) raft: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn start(extra: &[&str]) -> Cluster {
        Cluster::start_with_env(extra, &[])
    }

    /// [`Cluster::start`] with extra environment variables for every node.
    pub(crate) fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..3)
            .map(|i| {
                let id = (i + 1).to_string();
                let raft = format!("127.0.0.1:{}", ports[i]);
                let mut args = vec!["--node-id", &id, "--raft-listen", &raft, "--peers", &peers];
                args.extend_from_slice(TIMING);
                args.extend_from_slice(extra);
                Node::start_with_env(
                    binary(),
                    &dir.path().join(format!("n{}", i + 1)),
                    &args,
                    env,
                )
            })
            .collect();
        let raft = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        Cluster {
            nodes,
            raft,
            _dir: dir,
        }
    }

    /// Node `id` (1-based).
    pub(crate) fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }
}

async fn channel(node: &Node) -> Channel {
    node.channel().await
}

pub(crate) async fn points(node: &Node) -> PointsClient<Channel> {
    PointsClient::new(channel(node).await)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

pub(crate) async fn status(node: &Node, digests: bool) -> pb::ClusterStatus {
    ClusterClient::new(channel(node).await)
        .status(pb::ClusterStatusRequest { digests })
        .await
        .unwrap()
        .into_inner()
}

pub(crate) fn strong() -> Option<pb::ReadOptions> {
    Some(pb::ReadOptions {
        consistency: pb::Consistency::Strong as i32,
        token: None,
    })
}

/// Waits until every replica of every shard reports the same applied index and
/// digest; returns the last status.
pub(crate) async fn wait_replicas_agree(node: &Node) -> pb::ClusterStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(node, true).await;
        let agree = s.nodes.iter().all(|n| n.reachable)
            && s.collections.iter().all(|c| {
                c.shards.iter().all(|sh| {
                    let views: BTreeSet<(u64, Option<String>)> = sh
                        .replicas
                        .iter()
                        .map(|r| (r.applied_index, r.digest.clone()))
                        .collect();
                    views.len() == 1 && sh.replicas.iter().all(|r| r.digest.is_some())
                })
            });
        if agree {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge within 60 s: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub(crate) async fn create_collection(node: &Node, name: &str, shards: u32, rf: u32) {
    let (mut cols, _) = node.clients().await;
    cols.create(pb::CreateCollectionRequest {
        replication_factor: Some(rf),
        ..create(name, 4, pb::Metric::L2, shards)
    })
    .await
    .unwrap();
}

pub(crate) fn vector(id: u64) -> Vec<f32> {
    let x = id as f32;
    vec![x, (x * 0.37).sin(), (x * 0.11).cos(), 1.0]
}

/// Gets `ids` with STRONG consistency through `node`; returns the ids found.
pub(crate) async fn strong_get(node: &Node, collection: &str, ids: &[u64]) -> BTreeSet<u64> {
    let mut pts = points(node).await;
    let mut found = BTreeSet::new();
    for chunk in ids.chunks(5_000) {
        let r = pts
            .get(pb::GetPointsRequest {
                collection: collection.into(),
                ids: chunk.iter().filter_map(|i| num(*i)).collect(),
                with_vector: true,
                read: strong(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for p in r.points {
            let id = id_of(&p.id);
            assert_eq!(p.vector, vector(id), "point {id} has the vector written");
            found.insert(id);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_leaders_loses_no_acknowledged_write() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(&[]);
    create_collection(&cluster.nodes[0], "w", 2, 3).await;

    // The writer: batches of 10 unique ids through each live node in turn; every
    // acknowledged id is recorded.
    let urls: Arc<parking_lot::Mutex<Vec<Option<String>>>> = Arc::new(parking_lot::Mutex::new(
        cluster.nodes.iter().map(|n| Some(n.url.clone())).collect(),
    ));
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let writer = {
        let (urls, acked, stop, failures) =
            (urls.clone(), acked.clone(), stop.clone(), failures.clone());
        tokio::spawn(async move {
            let mut next = 0u64;
            let mut turn = 0usize;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                turn += 1;
                let Some(url) = urls.lock()[turn % 3].clone() else {
                    continue;
                };
                let ids: Vec<u64> = (next..next + 10).collect();
                next += 10;
                let req = pb::UpsertRequest {
                    collection: "w".into(),
                    points: ids.iter().map(|i| point(*i, vector(*i), &[])).collect(),
                };
                let ok = async {
                    let ch = Channel::from_shared(url)
                        .ok()?
                        .connect_timeout(Duration::from_secs(1))
                        .connect()
                        .await
                        .ok()?;
                    PointsClient::new(ch).upsert(req).await.ok()
                }
                .await;
                match ok {
                    Some(_) => acked.lock().extend(ids),
                    None => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    };

    // Three times: kill -9 the node leading shard 0, let the others go on, restart it.
    let mut killed = Vec::new();
    let mut resumed = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let s = status(&cluster.nodes[round % 3], false).await;
        let leader = s.collections[0].shards[0]
            .leader
            .unwrap_or_else(|| panic!("round {round}: shard 0 has no leader: {s:#?}"));
        killed.push(leader);
        urls.lock()[leader as usize - 1] = None;
        cluster.node(leader).kill9();
        // Writes resume through the other nodes once the shard elected a new leader
        // (how long that takes is reported, not asserted: this machine is shared).
        let (before, down) = (acked.lock().len(), Instant::now());
        while acked.lock().len() <= before + 10 {
            assert!(
                down.elapsed() < Duration::from_secs(60),
                "round {round}: no write acknowledged in 60 s while node {leader} is down"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        resumed.push(down.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.node(leader).restart(binary());
        urls.lock()[leader as usize - 1] = Some(cluster.node(leader).url.clone());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let acked: Vec<u64> = acked.lock().clone();
    eprintln!(
        "killed leaders {killed:?}; writes resumed after {resumed:?}; {} points acknowledged, \
         {} batches failed",
        acked.len(),
        failures.load(Ordering::Relaxed)
    );
    assert!(acked.len() > 100, "the writer made progress");

    // Every acknowledged point is readable with STRONG through every node.
    for n in &cluster.nodes {
        let found = strong_get(n, "w", &acked).await;
        let missing: Vec<&u64> = acked.iter().filter(|i| !found.contains(i)).collect();
        assert!(missing.is_empty(), "node {}: lost {missing:?}", n.url);
    }
    // Replicas converge on identical contents: nothing is applied on some only.
    let s = wait_replicas_agree(&cluster.nodes[0]).await;
    let total: u64 = s.collections[0]
        .shards
        .iter()
        .map(|sh| sh.replicas[0].points)
        .sum();
    assert!(total >= acked.len() as u64);
    // Unacknowledged batches are all-or-nothing per shard, never partial on a replica:
    // the digests above cover that; and a count through any node matches.
    for n in &cluster.nodes {
        let mut p = points(n).await;
        let c = p
            .count(pb::CountRequest {
                collection: "w".into(),
                read: strong(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .count;
        assert_eq!(c, total, "count through {}", n.url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_a_compacted_log_catches_up_by_snapshot() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(&["--raft-snapshot-every", "40", "--raft-keep-logs", "5"]);
    create_collection(&cluster.nodes[0], "s", 1, 3).await;
    cluster.node(3).kill9();
    let mut pts = points(&cluster.nodes[0]).await;
    for b in 0..150u64 {
        pts.upsert(pb::UpsertRequest {
            collection: "s".into(),
            points: (b * 4..b * 4 + 4)
                .map(|i| point(i, vector(i), &[]))
                .collect(),
        })
        .await
        .unwrap();
    }
    pts.delete(pb::DeletePointsRequest {
        collection: "s".into(),
        ids: (0..20).filter_map(num).collect(),
    })
    .await
    .unwrap();
    cluster.node(3).restart(binary());
    let s = wait_replicas_agree(&cluster.nodes[0]).await;
    assert_eq!(s.collections[0].shards[0].replicas[0].points, 580);
    assert!(
        cluster.node(3).log().contains("installed snapshot"),
        "node 3 caught up through a snapshot"
    );
    let ids: Vec<u64> = (0..600).collect();
    let found = strong_get(&cluster.nodes[2], "s", &ids).await;
    assert_eq!(found, (20..600).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_reads_see_writes_made_through_another_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(&[]);
    create_collection(&cluster.nodes[0], "rw", 3, 3).await;
    let mut a = points(&cluster.nodes[0]).await;
    let mut b = points(&cluster.nodes[1]).await;
    for i in 0..60u64 {
        let w = a
            .upsert(pb::UpsertRequest {
                collection: "rw".into(),
                points: vec![point(i, vector(i), &[("round", int(i as i64))])],
            })
            .await
            .unwrap()
            .into_inner();
        let token = w.token.expect("a write returns a token");
        assert_eq!(token.shards.len(), 1, "one shard written");
        let got = b
            .get(pb::GetPointsRequest {
                collection: "rw".into(),
                ids: num(i).into_iter().collect(),
                with_payload: true,
                read: Some(pb::ReadOptions {
                    consistency: pb::Consistency::Session as i32,
                    token: Some(token),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.points.len(), 1, "write {i} visible through node 2");
        assert_eq!(got.points[0].payload["round"], int(i as i64));
    }
    // A token of another collection is refused by name.
    create_collection(&cluster.nodes[0], "other", 1, 1).await;
    let w = a
        .upsert(pb::UpsertRequest {
            collection: "other".into(),
            points: vec![point(1, vector(1), &[])],
        })
        .await
        .unwrap()
        .into_inner();
    let err = b
        .count(pb::CountRequest {
            collection: "rw".into(),
            read: Some(pb::ReadOptions {
                consistency: pb::Consistency::Session as i32,
                token: w.token,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("read.token"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_through_any_node_equal_a_single_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(&[]);
    let single_dir = tempfile::tempdir().unwrap();
    let single = Node::start(binary(), &single_dir.path().join("data"), &[]);
    create_collection(&cluster.nodes[0], "q", 3, 2).await;
    create_collection(&single, "q", 3, 1).await;
    let all: Vec<pb::Point> = (0..3_000u64)
        .map(|i| point(i, vector(i * 7919 % 3001), &[("even", int((i % 2) as i64))]))
        .collect();
    let mut to_cluster = points(&cluster.nodes[1]).await;
    let mut to_single = points(&single).await;
    for chunk in all.chunks(500) {
        for p in [&mut to_cluster, &mut to_single] {
            p.upsert(pb::UpsertRequest {
                collection: "q".into(),
                points: chunk.to_vec(),
            })
            .await
            .unwrap();
        }
    }
    let filter = pb::Filter {
        must: vec![pb::Condition {
            kind: Some(pb::condition::Kind::Integer(pb::MatchInteger {
                key: "even".into(),
                any: vec![0],
            })),
        }],
        ..Default::default()
    };
    let queries: Vec<pb::SearchRequest> = (0..20u64)
        .map(|q| pb::SearchRequest {
            collection: "q".into(),
            vector: vector(q * 131),
            top_k: 10,
            filter: (q % 2 == 1).then(|| filter.clone()),
            with_payload: true,
            ..Default::default()
        })
        .collect();
    let expected = to_single
        .search_batch(pb::SearchBatchRequest {
            collection: "q".into(),
            searches: queries.clone(),
            read: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(expected.responses.iter().all(|r| r.results.len() == 10));
    for n in &cluster.nodes {
        let got = points(n)
            .await
            .search_batch(pb::SearchBatchRequest {
                collection: "q".into(),
                searches: queries.clone(),
                read: strong(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, expected, "search through {}", n.url);
        // One by one, too.
        let one = points(n)
            .await
            .search(pb::SearchRequest {
                read: strong(),
                ..queries[3].clone()
            })
            .await
            .unwrap()
            .into_inner();
        let by_ids =
            |r: &pb::SearchResponse| r.results.iter().map(|h| id_of(&h.id)).collect::<Vec<_>>();
        assert_eq!(by_ids(&one), by_ids(&expected.responses[3]));
    }
}

/// Shard → leader, for every shard of the first collection, if all have one.
fn leaders(s: &pb::ClusterStatus) -> Option<Vec<u64>> {
    s.collections[0].shards.iter().map(|sh| sh.leader).collect()
}

/// True when every shard is led by its preferred node (the first of its replicas).
fn led_by_preferred(s: &pb::ClusterStatus) -> bool {
    s.collections[0]
        .shards
        .iter()
        .all(|sh| sh.leader.is_some() && sh.leader == sh.replicas.first().map(|r| r.node))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_returns_to_preferred_nodes_after_a_failover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(&["--leader-balance-ms", "4000"]);
    create_collection(&cluster.nodes[0], "b", 3, 3).await;

    // Leaders start spread: each node leads one of the three shards.
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = status(&cluster.nodes[0], false).await;
        if led_by_preferred(&s) {
            break s;
        }
        assert!(Instant::now() < deadline, "leaders never spread: {s:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut spread = leaders(&s).unwrap();
    spread.sort();
    assert_eq!(spread, vec![1, 2, 3], "one shard per node");

    // Kill the leader of shard 0: another node takes the shard over and leads two.
    let victim = s.collections[0].shards[0].leader.unwrap();
    let other = cluster.nodes[(victim as usize) % 3].url.clone();
    cluster.node(victim).kill9();
    let deadline = Instant::now() + Duration::from_secs(60);
    let taker = loop {
        let s = status_at(&other).await;
        if let Some(l) = s.as_ref().and_then(|s| s.collections[0].shards[0].leader)
            && l != victim
        {
            break l;
        }
        assert!(Instant::now() < deadline, "shard 0 elected no new leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    cluster.node(victim).restart(binary());

    // A writer through every node while the leadership is handed back: handing over
    // holds writes for a moment but must fail none.
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut clients = Vec::new();
            for u in &urls {
                let ch = Channel::from_shared(u.clone())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                clients.push(PointsClient::new(ch));
            }
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let started = Instant::now();
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(150) {
                let ids: Vec<u64> = (next..next + 10).collect();
                let c = &mut clients[(next / 10) as usize % 3];
                next += 10;
                let req = pb::UpsertRequest {
                    collection: "b".into(),
                    points: ids.iter().map(|i| point(*i, vector(*i), &[])).collect(),
                };
                match c.upsert(req).await {
                    Ok(_) => acked.extend(ids),
                    Err(e) => failed.push(e.message().to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, failed)
        })
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    let handed_back = loop {
        let s = status(&cluster.nodes[0], false).await;
        if led_by_preferred(&s) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "leadership did not return to the preferred nodes within 120 s: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.await.unwrap();
    eprintln!(
        "leaders after the failover: {:?}; {} points written meanwhile",
        leaders(&handed_back),
        acked.len()
    );
    assert!(
        failed.is_empty(),
        "writes failed during the hand-over: {failed:?}"
    );
    let taker_log = cluster.node(taker).log();
    for line in taker_log
        .lines()
        .filter(|l| l.contains("leadership handed"))
    {
        eprintln!("node {taker}: {line}");
    }
    assert!(
        taker_log.contains("leadership handed to the preferred node"),
        "node {taker} handed shard 0 back by a transfer; logs:\n{}",
        cluster
            .nodes
            .iter()
            .map(|n| n
                .log()
                .lines()
                .filter(|l| l.contains("leader") || l.contains("elect") || l.contains("vote"))
                .collect::<Vec<_>>()
                .join("\n"))
            .collect::<Vec<_>>()
            .join("\n-----\n")
    );
    assert!(!acked.is_empty(), "the writer made progress");
    for n in &cluster.nodes {
        let found = strong_get(n, "b", &acked).await;
        assert_eq!(
            found.len(),
            acked.len(),
            "every write readable through {}",
            n.url
        );
    }
    wait_replicas_agree(&cluster.nodes[0]).await;
}

/// The cluster status through `url`, or `None` if the node does not answer.
async fn status_at(url: &str) -> Option<pb::ClusterStatus> {
    let ch = Channel::from_shared(url.to_string())
        .ok()?
        .connect()
        .await
        .ok()?;
    Some(
        ClusterClient::new(ch)
            .status(pb::ClusterStatusRequest { digests: false })
            .await
            .ok()?
            .into_inner(),
    )
}
