//! The shipped image layout runs Shoal, from an image built from local parts (a Debian
//! base made with debootstrap, the binary under test): one container keeps an
//! acknowledged write across a SIGKILL; three containers on a user-defined network
//! form the cluster of `docker-compose.yml`, keep serving with one node stopped, and
//! converge again when it returns; a fourth container started as the compose file's
//! `shoal-extra` service joins that cluster, takes its share of the replicas, and
//! leaves it again when drained. Skipped, with a message, where no Docker engine
//! runs.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_datasets::{read_fvecs, read_ivecs, recall_at_k};
use shoal_proto::v1 as pb;
use tonic::transport::Channel;

use crate::*;

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's container, volume and image whatever happens.
struct Cleanup {
    container: String,
    volume: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        let _ = docker(&["volume", "rm", "-f", &self.volume]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

/// Connects to the container's published port, waiting until it serves.
async fn connect(container: &str) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let port = docker(&["port", container, "7470/tcp"]);
        let addr = String::from_utf8_lossy(&port.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if !addr.is_empty()
            && let Ok(ch) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
        {
            let mut cols = pb::collections_client::CollectionsClient::new(ch.clone());
            if cols.list(pb::ListCollectionsRequest {}).await.is_ok() {
                return ch;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the container did not serve within 60 s; logs:\n{}",
            String::from_utf8_lossy(&docker(&["logs", container]).stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// True if a Docker engine answers; otherwise prints why `test` is skipped.
fn docker_available(test: &str) -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED {test}: no Docker engine (`docker info` failed)");
    }
    ok
}

/// Builds `tag` from local parts: the debootstrap base image (built once by
/// `tests/docker/base-image.sh`), `tests/docker/Dockerfile.local` and the binary under
/// test.
fn build_image(tag: &str) {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker");
    let base = Command::new("bash")
        .arg(here.join("base-image.sh"))
        .output()
        .expect("run base-image.sh");
    assert!(
        base.status.success(),
        "base image: {}{}",
        String::from_utf8_lossy(&base.stdout),
        String::from_utf8_lossy(&base.stderr)
    );
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(binary(), ctx.path().join("shoal")).unwrap();
    std::fs::copy(here.join("Dockerfile.local"), ctx.path().join("Dockerfile")).unwrap();
    docker_ok(&["build", "-q", "-t", tag, &ctx.path().to_string_lossy()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn container_keeps_acknowledged_writes_across_sigkill() {
    if !docker_available("container_keeps_acknowledged_writes_across_sigkill") {
        return;
    }
    let id = std::process::id();
    let guard = Cleanup {
        container: format!("shoal-test-{id}"),
        volume: format!("shoal-test-{id}-data"),
        image: format!("shoal-test:{id}"),
    };
    build_image(&guard.image);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &guard.container,
        "-v",
        &format!("{}:/data", guard.volume),
        "-p",
        "127.0.0.1::7470",
        &guard.image,
    ]);

    let ch = connect(&guard.container).await;
    let mut pts = pb::points_client::PointsClient::new(ch.clone());
    pb::collections_client::CollectionsClient::new(ch)
        .create(create("docs", 3, pb::Metric::Cosine, 2))
        .await
        .unwrap();
    let points = (0..50)
        .map(|i| point(i, vec![1.0, i as f32, 0.5], &[("n", int(i as i64))]))
        .collect();
    pts.upsert(pb::UpsertRequest {
        collection: "docs".into(),
        points,
    })
    .await
    .unwrap();

    docker_ok(&["kill", "--signal", "KILL", &guard.container]);
    docker_ok(&["start", &guard.container]);
    let mut pts = pb::points_client::PointsClient::new(connect(&guard.container).await);
    let n = count_all(&mut pts, "docs").await;
    assert_eq!(
        n, 50,
        "acknowledged points survive SIGKILL of the container"
    );
    let got = pts
        .get(pb::GetPointsRequest {
            read: None,
            collection: "docs".into(),
            ids: vec![num(49).unwrap()],
            with_payload: true,
            with_vector: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.points[0].payload.get("n"), Some(&int(49)));
    drop(guard);
}

/// Removes a cluster test's containers (with their anonymous volumes), named volumes,
/// network and image whatever happens.
struct ClusterCleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
    /// The volume holding the cluster secret (docker-compose.yml's `cluster-secret`).
    secret: String,
    network: String,
    image: String,
}

impl ClusterCleanup {
    /// Names for the cluster test `tag` of this process: `containers` containers, the
    /// first three (nodes 1..=3) with a named volume each.
    fn new(tag: &str, containers: usize) -> Self {
        let id = std::process::id();
        ClusterCleanup {
            containers: (1..=containers)
                .map(|i| format!("shoal-test-{id}-{tag}-n{i}"))
                .collect(),
            volumes: (1..=3)
                .map(|i| format!("shoal-test-{id}-{tag}-n{i}-data"))
                .collect(),
            secret: format!("shoal-test-{id}-{tag}-secret"),
            network: format!("shoal-test-{id}-{tag}-net"),
            image: format!("shoal-test:{id}-{tag}"),
        }
    }
}

impl Drop for ClusterCleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for c in &self.containers {
                let logs = docker(&["logs", "--tail", "40", c]);
                eprintln!(
                    "--- last log lines of {c}:\n{}",
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
        let mut rm = vec!["rm", "-f", "-v"];
        rm.extend(self.containers.iter().map(String::as_str));
        let _ = docker(&rm);
        let mut rm = vec!["volume", "rm", "-f", &self.secret];
        rm.extend(self.volumes.iter().map(String::as_str));
        let _ = docker(&rm);
        let _ = docker(&["network", "rm", &self.network]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

/// The peers list of docker-compose.yml: node i is `shoal<i>` on the network.
const PEERS: &str = "1=shoal1:7471,2=shoal2:7471,3=shoal3:7471";

/// `docker run -d --name NAME` of the test image on the test network with `opts`, the
/// public port published (on a free loopback port here), the Raft port not.
fn run_container(g: &ClusterCleanup, name: &str, opts: &[String]) {
    let mut args: Vec<&str> = vec!["run", "-d", "--name", name, "--network", &g.network];
    args.extend(opts.iter().map(String::as_str));
    args.extend(["-p", "127.0.0.1::7470", &g.image]);
    docker_ok(&args);
}

/// Where docker-compose.yml's nodes serve their metrics (inside the network).
const METRICS_ENV: (&str, &str) = ("SHOAL_METRICS_LISTEN", "0.0.0.0:9470");

/// Where docker-compose.yml mounts the cluster secret, and the variable naming it.
const SECRET_MOUNT: &str = "/secrets";
const SECRET_ENV: (&str, &str) = ("SHOAL_CLUSTER_SECRET_FILE", "/secrets/cluster-secret");

/// Writes a cluster secret into the secret volume as docker-compose.yml's
/// `cluster-secret` service does (its command, from [`compose_secret_command`]).
fn make_secret(g: &ClusterCleanup) {
    let mount = format!("{}:{SECRET_MOUNT}", g.secret);
    let mut args = vec!["run", "--rm", "-v", &mount, &g.image];
    let command = compose_secret_command();
    args.extend(command.iter().map(String::as_str));
    docker_ok(&args);
}

/// The read-only mount of the secret volume and [`SECRET_ENV`], as `docker run` options.
fn secret_opts(g: &ClusterCleanup) -> [String; 4] {
    [
        "-v".into(),
        format!("{}:{SECRET_MOUNT}:ro", g.secret),
        "-e".into(),
        format!("{}={}", SECRET_ENV.0, SECRET_ENV.1),
    ]
}

/// Starts node `i` (1-based) of the cluster as docker-compose.yml does: its own volume,
/// the secret volume read-only, SHOAL_NODE_ID, SHOAL_PEERS, SHOAL_RAFT_LISTEN,
/// SHOAL_CLUSTER_SECRET_FILE, SHOAL_METRICS_LISTEN, the public port published, the
/// Raft port not.
fn run_node(g: &ClusterCleanup, i: usize) {
    let alias = format!("shoal{i}");
    let [v, secret_mount, e, secret_env] = secret_opts(g);
    let opts = [
        "--hostname",
        &alias,
        "--network-alias",
        &alias,
        &v,
        &secret_mount,
        &e,
        &secret_env,
        "-v",
        &format!("{}:/data", g.volumes[i - 1]),
        "-e",
        &format!("SHOAL_NODE_ID={i}"),
        "-e",
        &format!("SHOAL_PEERS={PEERS}"),
        "-e",
        "SHOAL_RAFT_LISTEN=0.0.0.0:7471",
        "-e",
        &format!("{}={}", METRICS_ENV.0, METRICS_ENV.1),
        // Hold the HNSW graphs (not the exact scan of small shards) to the recall
        // target, as the recall tests do.
        "-e",
        "SHOAL_EXACT_THRESHOLD=0",
    ];
    run_container(g, &g.containers[i - 1], &opts.map(String::from));
}

/// Builds the image, creates the network and starts nodes 1..=3 (see [`run_node`]);
/// returns a channel to each node's public port once all three serve.
async fn start_three_nodes(g: &ClusterCleanup, lap: &dyn Fn(&str)) -> Vec<Channel> {
    build_image(&g.image);
    lap("image built");
    docker_ok(&["network", "create", &g.network]);
    make_secret(g);
    for i in 1..=3 {
        run_node(g, i);
    }
    let mut nodes = Vec::new();
    for c in &g.containers[..3] {
        nodes.push(connect(c).await);
    }
    lap("three nodes serve");
    nodes
}

/// Calls `f` every half second until it returns `Ok`, for up to `secs`; panics with
/// the last error after that.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let why = match f().await {
            Ok(t) => return t,
            Err(why) => why,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s; last: {why}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Retries `f` while it fails with UNAVAILABLE (no leader yet), up to `secs`.
async fn retry_unavailable<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    for attempt in 1.. {
        match f().await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                eprintln!("{what}: attempt {attempt}: {}; retrying", s.message());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(s) => panic!("{what}: {s:?}"),
        }
    }
    unreachable!()
}

fn read(consistency: pb::Consistency, token: Option<pb::WriteToken>) -> Option<pb::ReadOptions> {
    Some(pb::ReadOptions {
        consistency: consistency as i32,
        token,
    })
}

/// Merges write tokens: per shard, the larger index.
fn merge(into: &mut Option<pb::WriteToken>, t: Option<pb::WriteToken>) {
    let Some(t) = t else { return };
    let Some(m) = into else {
        *into = Some(t);
        return;
    };
    for s in t.shards {
        match m.shards.iter_mut().find(|x| x.shard == s.shard) {
            Some(x) => x.index = x.index.max(s.index),
            None => m.shards.push(s),
        }
    }
}

/// Recall@10 of the siftsmall queries searched through `pts`.
async fn recall(
    pts: &mut pb::points_client::PointsClient<Channel>,
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
    read_opts: Option<pb::ReadOptions>,
) -> f64 {
    let resp = pts
        .search_batch(pb::SearchBatchRequest {
            read: read_opts,
            collection: "sift".into(),
            searches: queries
                .iter()
                .map(|q| search("sift", q.clone(), 10))
                .collect(),
        })
        .await
        .expect("search batch")
        .into_inner();
    let found: Vec<Vec<u32>> = resp
        .responses
        .iter()
        .map(|r| r.results.iter().map(|h| id_of(&h.id) as u32).collect())
        .collect();
    recall_at_k(&found, truth, 10)
}

/// Why the cluster has not converged yet (None once every node is reachable and every
/// shard of `collection` has `replicas` replicas at one applied index with equal
/// digests).
fn not_converged(s: &pb::ClusterStatus, collection: &str, replicas: usize) -> Option<String> {
    if let Some(n) = s.nodes.iter().find(|n| !n.reachable) {
        return Some(format!("node {} unreachable: {}", n.id, n.error));
    }
    let c = s.collections.iter().find(|c| c.name == collection)?;
    for sh in &c.shards {
        let r = &sh.replicas;
        if r.len() != replicas {
            return Some(format!("shard {}: {} replicas", sh.shard, r.len()));
        }
        if r.iter().any(|x| {
            x.state == "unreachable"
                || x.applied_index != r[0].applied_index
                || x.digest.is_none()
                || x.digest != r[0].digest
        }) {
            let each: Vec<String> = r
                .iter()
                .map(|x| {
                    format!(
                        "node {} {} @{} {}",
                        x.node,
                        x.state,
                        x.applied_index,
                        x.digest.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            return Some(format!("shard {}: {}", sh.shard, each.join(", ")));
        }
    }
    None
}

/// The `shoal` CLI with `args` against a container's public port; it must exit 0.
/// Returns what it printed.
fn cli(container: &str, args: &[&str]) -> String {
    let url = format!("http://{}", docker_ok(&["port", container, "7470/tcp"]));
    let out = Command::new(binary())
        .args(["--addr", &url])
        .args(args)
        .output()
        .expect("run shoal");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "shoal {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `shoal cluster status --digests` against a container's public port; it must
/// exit 0.
fn cli_status(container: &str) -> String {
    cli(container, &["cluster", "status", "--digests"])
}

#[tokio::test(flavor = "multi_thread")]
async fn three_node_cluster_survives_a_stopped_node_and_converges() {
    const TEST: &str = "three_node_cluster_survives_a_stopped_node_and_converges";
    if !docker_available(TEST) {
        return;
    }
    let started = Instant::now();
    let lap = |what: &str| eprintln!("[{:6.1}s] {what}", started.elapsed().as_secs_f64());
    let dir = siftsmall();
    let base = read_fvecs(&dir.join("siftsmall_base.fvecs")).unwrap();
    let queries = read_fvecs(&dir.join("siftsmall_query.fvecs")).unwrap();
    let truth = read_ivecs(&dir.join("siftsmall_groundtruth.ivecs")).unwrap();

    let g = ClusterCleanup::new("cluster", 3);
    let nodes = start_three_nodes(&g, &lap).await;
    let (n1, n2) = (nodes[0].clone(), nodes[1].clone());

    // A collection replicated on all three nodes, created through node 1.
    let cols1 = pb::collections_client::CollectionsClient::new(n1.clone());
    let mut req = create("sift", 128, pb::Metric::L2, 3);
    req.replication_factor = Some(3);
    retry_unavailable("create", 60, || {
        let (mut c, req) = (cols1.clone(), req.clone());
        async move { c.create(req).await }
    })
    .await;
    lap("collection created (3 shards x 3 replicas)");

    // Import siftsmall through node 1, 1,000 points per request.
    let mut pts1 =
        pb::points_client::PointsClient::new(n1.clone()).max_encoding_message_size(64 << 20);
    let mut token = None;
    let import = Instant::now();
    for (c, chunk) in base.chunks(1000).enumerate() {
        let points: Vec<pb::Point> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| point((c * 1000 + i) as u64, v.clone(), &[]))
            .collect();
        let r = retry_unavailable("upsert", 60, || {
            let (mut c, points) = (pts1.clone(), points.clone());
            async move {
                c.upsert(pb::UpsertRequest {
                    collection: "sift".into(),
                    points,
                })
                .await
            }
        })
        .await;
        assert_eq!(r.count, chunk.len() as u64);
        merge(&mut token, r.token);
    }
    lap(&format!(
        "imported {} points through node 1 ({:.0} points/s)",
        base.len(),
        base.len() as f64 / import.elapsed().as_secs_f64()
    ));

    // Search through node 2, seeing every write (session token of the imports).
    let mut pts2 = pb::points_client::PointsClient::new(n2.clone());
    let r = recall(
        &mut pts2,
        &queries,
        &truth,
        read(pb::Consistency::Session, token.clone()),
    )
    .await;
    lap(&format!("recall@10 through node 2 = {r:.4}"));
    assert!(r >= 0.95, "recall@10 through node 2 = {r}");

    // Stop node 3: writes through node 1 and reads through node 2 keep working.
    docker_ok(&["stop", "-t", "30", &g.containers[2]]);
    lap("node 3 stopped");
    let extra = 500;
    for b in 0..10u64 {
        let points: Vec<pb::Point> = (0..extra / 10)
            .map(|i| {
                let n = 10_000 + b * (extra / 10) + i;
                // Far from every query (SIFT components are 0..255): the ground
                // truth stays right.
                let v = base[n as usize % base.len()].iter().map(|x| x + 1000.0);
                point(n, v.collect(), &[("extra", int(1))])
            })
            .collect();
        let t = Instant::now();
        let r = pts1
            .upsert(pb::UpsertRequest {
                collection: "sift".into(),
                points,
            })
            .await
            .unwrap_or_else(|s| panic!("upsert batch {b} with node 3 down: {s:?}"))
            .into_inner();
        merge(&mut token, r.token);
        let w = t.elapsed();
        let t = Instant::now();
        let hits = pts2
            .search(search("sift", queries[b as usize].clone(), 10))
            .await
            .unwrap_or_else(|s| panic!("search {b} with node 3 down: {s:?}"))
            .into_inner();
        assert_eq!(hits.results.len(), 10);
        if b == 0 {
            eprintln!(
                "first write after the stop: {w:?}; first search: {:?}",
                t.elapsed()
            );
        }
    }
    let total = base.len() as u64 + extra;
    let n = pts2
        .count(pb::CountRequest {
            collection: "sift".into(),
            filter: None,
            read: read(pb::Consistency::Strong, None),
        })
        .await
        .expect("strong count through node 2 with node 3 down")
        .into_inner()
        .count;
    assert_eq!(n, total);
    let r = recall(
        &mut pts2,
        &queries,
        &truth,
        read(pb::Consistency::Eventual, None),
    )
    .await;
    lap(&format!(
        "{extra} more points written through node 1, searched through node 2 (recall {r:.4}), node 3 down"
    ));
    assert!(r >= 0.95, "recall@10 through node 2 with node 3 down = {r}");
    let text = cli_status(&g.containers[0]);
    eprintln!("shoal cluster status --digests, node 3 down:\n{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l
                .starts_with("still catching up in 3 of 3 shards: sift/0 (node 3 unreachable)")),
        "{text}"
    );

    // Node 3 returns and catches up: every shard's replicas reach one applied index
    // with equal digests.
    docker_ok(&["start", &g.containers[2]]);
    let n3 = connect(&g.containers[2]).await;
    lap("node 3 started");
    let cluster = pb::cluster_client::ClusterClient::new(n1.clone());
    let status = eventually(60, "replicas converge after node 3 returned", || {
        let mut cluster = cluster.clone();
        async move {
            let s = cluster
                .status(pb::ClusterStatusRequest { digests: true })
                .await
                .map_err(|s| format!("status: {s:?}"))?
                .into_inner();
            match not_converged(&s, "sift", 3) {
                None => Ok(s),
                Some(why) => Err(why),
            }
        }
    })
    .await;
    let points: u64 = status.collections[0]
        .shards
        .iter()
        .map(|s| s.replicas[0].points)
        .sum();
    assert_eq!(points, total, "the shards' points add up: {status:?}");
    lap("all replicas at one applied index with equal digests");

    // What `shoal cluster status --digests` says of it.
    let text = cli_status(&g.containers[0]);
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("replica digests agree for every shard (3 shards)")),
        "{text}"
    );
    assert_eq!(text.matches(" reachable").count(), 3, "{text}");

    // Node 3 answers with every point, strongly and from its own replicas.
    let mut pts3 = pb::points_client::PointsClient::new(n3);
    for consistency in [pb::Consistency::Strong, pb::Consistency::Eventual] {
        let n = pts3
            .count(pb::CountRequest {
                collection: "sift".into(),
                filter: None,
                read: read(consistency, None),
            })
            .await
            .expect("count through node 3")
            .into_inner()
            .count;
        assert_eq!(n, total, "{consistency:?} count through node 3");
    }
    let got = pts3
        .get(pb::GetPointsRequest {
            collection: "sift".into(),
            ids: vec![num(total - 1).unwrap()],
            with_payload: true,
            with_vector: false,
            read: read(pb::Consistency::Eventual, None),
        })
        .await
        .expect("get through node 3")
        .into_inner();
    assert_eq!(
        got.points.first().and_then(|p| p.payload.get("extra")),
        Some(&int(1)),
        "node 3's replica holds a point written while it was down"
    );
    lap("node 3 counts every point (STRONG and EVENTUAL)");
    drop(g);
    lap("cleaned up");
}

/// The environment of docker-compose.yml's `shoal-extra` service: a node that joins
/// through shoal1, with neither node id nor peers. [`compose_extra_service`] checks
/// that the file says the same.
const EXTRA_ENV: [(&str, &str); 6] = [
    SECRET_ENV,
    ("SHOAL_DATA_DIR", "/data"),
    ("SHOAL_JOIN", "shoal1:7471"),
    ("SHOAL_LISTEN", "0.0.0.0:7470"),
    METRICS_ENV,
    ("SHOAL_RAFT_LISTEN", "0.0.0.0:7471"),
];

/// Starts a container as docker-compose.yml's `shoal-extra` service: no host name
/// and no network alias (it advertises its default host name, the short container
/// id), no named volume (the image's `VOLUME /data` gives it an anonymous one),
/// [`EXTRA_ENV`], the secret volume read-only, the public port published on a free
/// port, the Raft port not.
fn run_extra(g: &ClusterCleanup, name: &str) {
    let mut opts: Vec<String> = EXTRA_ENV
        .iter()
        .flat_map(|(k, v)| ["-e".to_string(), format!("{k}={v}")])
        .collect();
    let [v, mount, ..] = secret_opts(g);
    opts.extend([v, mount]);
    run_container(g, name, &opts);
}

/// The command of docker-compose.yml's `cluster-secret` service (the arguments after
/// the image's `shoal` entry point), read from the file itself.
fn compose_secret_command() -> Vec<String> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker-compose.yml");
    let text = std::fs::read_to_string(file).expect("read docker-compose.yml");
    let service: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "  cluster-secret:")
        .take_while(|l| !l.is_empty())
        .collect();
    let line = service
        .iter()
        .find_map(|l| l.trim().strip_prefix("command: "))
        .expect("a one-line command in the cluster-secret service of docker-compose.yml");
    line.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|w| w.trim().trim_matches('"').to_string())
        .collect()
}

/// The lines of `service` in the output of `docker-compose config` (its name's line
/// excluded).
fn compose_service<'a>(config: &'a str, service: &str) -> Vec<&'a str> {
    let head = format!("  {service}:");
    config
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect()
}

/// The lines of `key` (indented by four, as a service's keys are) in a service's
/// lines, up to the next key.
fn compose_key<'a>(service: &[&'a str], key: &str) -> Vec<&'a str> {
    let head = format!("    {key}:");
    service
        .iter()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .take_while(|l| l.starts_with("     ") || l.starts_with("    -"))
        .copied()
        .collect()
}

/// Checks docker-compose.yml with `docker-compose config`: valid without and with the
/// `elastic` profile, and its `shoal-extra` service is what [`run_extra`] starts (in
/// the `elastic` profile; [`EXTRA_ENV`]; no host name, named volume or fixed host
/// port; port 7471 not published). Returns false, with a message, where docker-compose
/// is missing.
fn check_compose_extra_service(test: &str) -> bool {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker-compose.yml");
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .arg("-f")
            .arg(&file)
            .args(args)
            .output()
    };
    let Ok(version) = compose(&["version", "--short"]) else {
        eprintln!("{test}: docker-compose is missing: docker-compose.yml not checked");
        return false;
    };
    eprintln!(
        "docker-compose {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    let plain = compose(&["config", "-q"]).unwrap();
    assert!(
        plain.status.success(),
        "docker-compose.yml is invalid: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let monitoring = compose(&["--profile", "monitoring", "config", "-q"]).unwrap();
    assert!(
        monitoring.status.success(),
        "docker-compose.yml with --profile monitoring is invalid: {}",
        String::from_utf8_lossy(&monitoring.stderr)
    );
    let out = compose(&["--profile", "elastic", "config"]).unwrap();
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker-compose.yml with --profile elastic is invalid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extra = compose_service(&config, "shoal-extra");
    assert!(
        !extra.is_empty(),
        "no shoal-extra service in docker-compose config:\n{config}"
    );
    let shown = extra.join("\n");
    let env: BTreeMap<&str, &str> = compose_key(&extra, "environment")
        .iter()
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, v)| (k, v.trim_matches(|c| c == '\'' || c == '"')))
        .collect();
    assert_eq!(
        env,
        BTreeMap::from(EXTRA_ENV),
        "shoal-extra's environment in docker-compose.yml is not what the test runs:\n{shown}"
    );
    assert!(
        compose_key(&extra, "profiles")
            .iter()
            .any(|l| l.trim().trim_start_matches("- ") == "elastic"),
        "shoal-extra is not in the elastic profile:\n{shown}"
    );
    for key in ["hostname", "container_name"] {
        assert!(
            !extra.iter().any(|l| l.starts_with(&format!("    {key}:"))),
            "shoal-extra sets {key}, which breaks scaling or joining:\n{shown}"
        );
    }
    // Its one volume is the shared, read-only secret: a named data volume would be
    // shared by every scaled container.
    let volumes: Vec<&str> = compose_key(&extra, "volumes")
        .iter()
        .map(|l| l.trim().trim_start_matches("- "))
        .collect();
    assert_eq!(
        volumes,
        [format!("cluster-secret:{SECRET_MOUNT}:ro")],
        "shoal-extra's volumes:\n{shown}"
    );
    let ports = compose_key(&extra, "ports").join("\n");
    assert!(
        ports.contains("7470"),
        "shoal-extra does not publish its public port 7470:\n{shown}"
    );
    assert!(
        !ports.contains("7471"),
        "shoal-extra publishes the internal port 7471:\n{shown}"
    );
    assert!(
        !ports
            .lines()
            .any(|l| l.contains("published") && l.contains(|c: char| c.is_ascii_digit())),
        "shoal-extra publishes a fixed host port (scaling would conflict):\n{shown}"
    );
    true
}

const DOCS_DIM: usize = 8;

/// Points `ids` of the `docs` collection, each with its id as payload `n`.
fn docs_points(ids: std::ops::Range<u64>) -> Vec<pb::Point> {
    ids.map(|i| {
        let v = (0..DOCS_DIM as u64)
            .map(|d| ((i * (d + 3)) % 101) as f32)
            .collect();
        point(i, v, &[("n", int(i as i64))])
    })
    .collect()
}

/// Upserts `docs_points(ids)` through `ch`, 500 per request, retrying while no leader
/// answers.
async fn upsert_docs(ch: &Channel, ids: std::ops::Range<u64>) {
    let pts = pb::points_client::PointsClient::new(ch.clone());
    let all = docs_points(ids);
    for chunk in all.chunks(500) {
        let r = retry_unavailable("upsert", 60, || {
            let (mut pts, points) = (pts.clone(), chunk.to_vec());
            async move {
                pts.upsert(pb::UpsertRequest {
                    collection: "docs".into(),
                    points,
                })
                .await
            }
        })
        .await;
        assert_eq!(r.count, chunk.len() as u64);
    }
}

/// A STRONG count of `docs` through `ch`.
async fn strong_count(ch: &Channel) -> u64 {
    let pts = pb::points_client::PointsClient::new(ch.clone());
    retry_unavailable("strong count", 60, || {
        let mut pts = pts.clone();
        async move {
            pts.count(pb::CountRequest {
                collection: "docs".into(),
                filter: None,
                read: read(pb::Consistency::Strong, None),
            })
            .await
        }
    })
    .await
    .count
}

/// The status through `cluster` once the cluster settled on exactly the nodes `nodes`:
/// every one reachable, no operation in flight, replicas spread over them within one
/// of each other with each holding at least one, every shard of `docs` with its two
/// replicas at one applied index with equal digests, and `points` points in all.
async fn settled(
    mut cluster: pb::cluster_client::ClusterClient<Channel>,
    nodes: &[u64],
    points: u64,
) -> Result<pb::ClusterStatus, String> {
    let s = cluster
        .status(pb::ClusterStatusRequest { digests: true })
        .await
        .map_err(|s| format!("status: {s:?}"))?
        .into_inner();
    let ids: Vec<u64> = s.nodes.iter().map(|n| n.id).collect();
    if ids != nodes {
        return Err(format!("nodes {ids:?}"));
    }
    if !s.operations.is_empty() {
        let ops: Vec<String> = s
            .operations
            .iter()
            .map(|o| format!("{} ({})", o.description, o.progress))
            .collect();
        return Err(format!("operations in flight: {}", ops.join("; ")));
    }
    let counts = replica_counts(&s);
    let (min, max) = (counts.values().min(), counts.values().max());
    if min == Some(&0) || max.unwrap_or(&0) - min.unwrap_or(&0) > 1 {
        return Err(format!("replicas per node {counts:?}"));
    }
    if let Some(why) = not_converged(&s, "docs", 2) {
        return Err(why);
    }
    let total: u64 = s
        .collections
        .iter()
        .filter(|c| c.name == "docs")
        .flat_map(|c| &c.shards)
        .map(|sh| sh.replicas[0].points)
        .sum();
    if total != points {
        return Err(format!("{total} points in the shards, {points} expected"));
    }
    Ok(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_container_joins_takes_replicas_and_leaves_when_drained() {
    const TEST: &str = "extra_container_joins_takes_replicas_and_leaves_when_drained";
    if !docker_available(TEST) {
        return;
    }
    let started = Instant::now();
    let lap = |what: &str| eprintln!("[{:6.1}s] {what}", started.elapsed().as_secs_f64());
    if check_compose_extra_service(TEST) {
        lap("docker-compose.yml: valid, shoal-extra is what this test starts");
    }

    let g = ClusterCleanup::new("join", 4);
    let nodes = start_three_nodes(&g, &lap).await;
    let n1 = nodes[0].clone();

    // 4 shards x 2 replicas over three nodes (3, 3 and 2 replicas), 2,000 points.
    let cols1 = pb::collections_client::CollectionsClient::new(n1.clone());
    let mut req = create("docs", DOCS_DIM as u32, pb::Metric::L2, 4);
    req.replication_factor = Some(2);
    retry_unavailable("create", 60, || {
        let (mut c, req) = (cols1.clone(), req.clone());
        async move { c.create(req).await }
    })
    .await;
    upsert_docs(&n1, 0..2000).await;
    lap("2000 points written through node 1 (4 shards x 2 replicas)");

    // A fourth container, started as the compose file's shoal-extra service.
    let extra = &g.containers[3];
    run_extra(&g, extra);
    let n4 = connect(extra).await;
    let hostname = docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", extra]);
    lap(&format!("the fourth container ({hostname}) serves"));
    let cluster = pb::cluster_client::ClusterClient::new(n1.clone());
    let s = eventually(
        180,
        "node 4 joins and takes its share of the replicas",
        || settled(cluster.clone(), &[1, 2, 3, 4], 2000),
    )
    .await;
    let four = s.nodes.iter().find(|n| n.id == 4).unwrap();
    assert_eq!(
        four.address,
        format!("{hostname}:7471"),
        "node 4 advertises its container's host name"
    );
    lap(&format!(
        "node 4 joined, replicas per node {:?}, digests agree",
        replica_counts(&s)
    ));

    // It serves the whole API: writes through it, strong reads through it and node 1.
    upsert_docs(&n4, 2000..2500).await;
    assert_eq!(strong_count(&n4).await, 2500, "STRONG count through node 4");
    assert_eq!(strong_count(&n1).await, 2500, "STRONG count through node 1");
    eventually(60, "replicas agree after writes through node 4", || {
        settled(cluster.clone(), &[1, 2, 3, 4], 2500)
    })
    .await;
    lap("500 points written through node 4; 2500 counted through nodes 4 and 1");

    // Drain it with `shoal cluster drain` (Cluster/Drain) through node 1: its
    // replicas move back, then it leaves the cluster.
    let said = cli(&g.containers[0], &["cluster", "drain", "4"]);
    assert!(said.starts_with("draining node 4"), "{said}");
    let s = eventually(180, "node 4 drained and removed", || {
        settled(cluster.clone(), &[1, 2, 3], 2500)
    })
    .await;
    lap(&format!(
        "node 4 drained and removed, replicas per node {:?}, digests agree",
        replica_counts(&s)
    ));
    let n2 = nodes[1].clone();
    assert_eq!(
        strong_count(&n2).await,
        2500,
        "STRONG count through node 2 after the drain"
    );
    let got = pb::points_client::PointsClient::new(n2)
        .get(pb::GetPointsRequest {
            collection: "docs".into(),
            ids: vec![num(0).unwrap(), num(2499).unwrap()],
            with_payload: true,
            with_vector: true,
            read: read(pb::Consistency::Strong, None),
        })
        .await
        .expect("get through node 2")
        .into_inner();
    let want = [docs_points(0..1), docs_points(2499..2500)].concat();
    assert_eq!(got.points.len(), 2, "{got:?}");
    for (p, w) in got.points.iter().zip(&want) {
        assert_eq!(
            (&p.id, &p.vector, &p.payload),
            (&w.id, &w.vector, &w.payload)
        );
    }

    // The drained node says so and stops serving, but its process stays up (a
    // restart policy would only start it again).
    let line = "node 4 was drained and removed from the cluster";
    eventually(60, "node 4 logs its removal", || async move {
        let logs = docker(&["logs", extra]);
        if String::from_utf8_lossy(&logs.stderr).contains(line) {
            Ok(())
        } else {
            Err(format!("no {line:?} in its log yet"))
        }
    })
    .await;
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", extra]),
        "true",
        "the drained node's process stays up"
    );
    let answer = pb::collections_client::CollectionsClient::new(n4)
        .list(pb::ListCollectionsRequest {})
        .await;
    assert!(
        answer.is_err(),
        "the drained node still serves its public API: {answer:?}"
    );
    lap("node 4 logged its removal and stopped serving; its process is up");

    // Stopped, it exits cleanly; started again over its volume, it refuses to serve.
    docker_ok(&["stop", "-t", "30", extra]);
    let state = "{{.State.Running}} {{.State.ExitCode}}";
    assert_eq!(
        docker_ok(&["inspect", "-f", state, extra]),
        "false 0",
        "the drained node exits 0 when stopped"
    );
    docker_ok(&["start", extra]);
    let code = eventually(
        60,
        "the drained node, started again, exits",
        || async move {
            match docker_ok(&["inspect", "-f", state, extra]).split_once(' ') {
                Some(("false", code)) => Ok(code.to_string()),
                other => Err(format!("running, exit code: {other:?}")),
            }
        },
    )
    .await;
    let logs = docker(&["logs", "--tail", "5", extra]);
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(
        code != "0" && logs.contains("node 4 was removed from the cluster"),
        "the drained node, started again, exits with {code} and logs:\n{logs}"
    );
    lap("stopped, it exits 0; started again over its volume, it refuses to serve");

    // Removing its container changes nothing for the others.
    docker_ok(&["rm", "-f", "-v", extra]);
    let s = eventually(60, "the cluster after node 4's container is gone", || {
        settled(cluster.clone(), &[1, 2, 3], 2500)
    })
    .await;
    assert_eq!(s.nodes.len(), 3);
    assert_eq!(strong_count(&n1).await, 2500, "STRONG count through node 1");
    drop(g);
    lap("cleaned up");
}
