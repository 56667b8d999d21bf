//! Monitoring with the real thing: a three-node cluster on loopback, each node with
//! `--metrics-listen`, scraped every second by a real Prometheus server (Debian's
//! `prometheus` package: `.ci/run` installs it). Traffic is driven over gRPC and the
//! assertions go through Prometheus's HTTP query API: requests counted per RPC and
//! code, a leader change after the leader of a shard is killed with SIGKILL, a
//! follower's replication lag growing while it is down and dropping to 0 once it is
//! back, and every panel query of the Grafana dashboard (`deploy/grafana/shoal.json`)
//! returning data. `/healthz` and `/readyz` are checked on the nodes directly.
//!
//! Without a `prometheus` binary on the PATH the test says so and returns.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_proto::v1 as pb;

use crate::cluster::{
    Cluster, ONE_AT_A_TIME, create_collection, free_port, points, status, vector,
};
use crate::*;

/// A GET over HTTP/1.0 (the connection closes after the answer): the status code and
/// the body. `None` if the server cannot be reached or answers nothing readable.
fn http_get(addr: &str, path_and_query: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Percent-encodes a query parameter's value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's result: each series' labels and value.
type Series = Vec<(BTreeMap<String, String>, f64)>;

/// A Prometheus server of the test's own: its own directory, a free port, a scrape
/// config naming the nodes' metrics endpoints. Killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    /// The binary, if installed.
    fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    }

    fn start(binary: &Path, dir: &Path, targets: &[String]) -> Prometheus {
        let config = dir.join("prometheus.yml");
        let targets = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: shoal\n    static_configs:\n      \
                 - targets: [{targets}]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, log }
    }

    /// The result vector of an instant query (each element: labels and value), or
    /// why there is none.
    fn query(&self, expr: &str) -> Result<Series, String> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (code, body) = http_get(&self.addr, &path).ok_or("prometheus unreachable")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {body}: {e}"))?;
        if v["status"] != "success" {
            return Err(format!("{expr}: {body}"));
        }
        let result = &v["data"]["result"];
        let series = match v["data"]["resultType"].as_str() {
            Some("vector") => result.as_array().cloned().unwrap_or_default(),
            Some("scalar") => vec![serde_json::json!({"metric": {}, "value": result})],
            other => return Err(format!("{expr}: result type {other:?}")),
        };
        Ok(series
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = s["value"][1].as_str().and_then(|x| x.parse().ok());
                (labels, value.unwrap_or(f64::NAN))
            })
            .collect())
    }

    /// Waits (at most `secs`) until `check` accepts the result of `expr`; returns it.
    async fn wait_for(
        &self,
        secs: u64,
        what: &str,
        expr: &str,
        check: impl Fn(&[(BTreeMap<String, String>, f64)]) -> bool,
    ) -> Series {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let last = self.query(expr);
            if let Some(r) = last.as_ref().ok().filter(|r| check(r)) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s; `{expr}` gives {last:?}; prometheus log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps a replica's series only while it leads its shard (a former leader's lag
/// gauges linger until they expire).
const LEADING: &str = "and on (instance, collection, shard) (shoal_raft_is_leader == 1)";

/// The value of the one series in `r` (0 if there is none).
fn scalar(r: &[(BTreeMap<String, String>, f64)]) -> f64 {
    r.first().map(|(_, v)| *v).unwrap_or(0.0)
}

/// Every `expr` of the dashboard's panels (rows' nested panels included).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A dashboard query with its variables replaced as Grafana would with "All"
/// selected and a short rate interval.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "20s")
        .replace("$instance", ".*")
        .replace("$collection", ".*")
}

async fn upsert_range(node: &shoal_tests::Node, ids: std::ops::Range<u64>) {
    let mut pts = points(node).await;
    for chunk in ids.collect::<Vec<_>>().chunks(100) {
        pts.upsert(pb::UpsertRequest {
            collection: "m".into(),
            points: chunk.iter().map(|i| point(*i, vector(*i), &[])).collect(),
        })
        .await
        .expect("upsert");
    }
}

/// The leader of shard 0 of the first collection, once one is known (at most 60 s).
async fn leader_of_shard0(node: &shoal_tests::Node) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(node, false).await;
        if let Some(l) = s.collections.first().and_then(|c| c.shards[0].leader) {
            return l;
        }
        assert!(Instant::now() < deadline, "shard 0 has no leader: {s:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_sees_requests_leader_changes_lag_and_every_dashboard_query() {
    let Some(prometheus_bin) = Prometheus::binary() else {
        eprintln!(
            "SKIPPED prometheus_sees_requests_leader_changes_lag_and_every_dashboard_query: \
             no `prometheus` binary on the PATH (Debian: apt-get install prometheus; \
             .ci/run installs it)"
        );
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--checkpoint-idle-ms",
        "500",
    ]);
    let metrics: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.metrics_addr.clone().expect("metrics listening on"))
        .collect();

    // Liveness at once; readiness once the cluster formed and its groups elected.
    for m in &metrics {
        assert_eq!(http_get(m, "/healthz").map(|r| r.0), Some(200), "{m}");
    }
    create_collection(&cluster.nodes[0], "m", 3, 3).await;
    for m in &metrics {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = http_get(m, "/readyz");
            if r.as_ref().is_some_and(|r| r.0 == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "{m} not ready: {r:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(&prometheus_bin, dir.path(), &metrics);
    prom.wait_for(60, "all three nodes scraped", "up", |r| {
        r.len() == 3 && r.iter().all(|(_, v)| *v == 1.0)
    })
    .await;
    let instance = |node: usize| metrics[node - 1].clone();

    // Traffic: upserts through node 1, searches through every node, one search of a
    // collection that does not exist.
    upsert_range(&cluster.nodes[0], 0..1000).await;
    for n in &cluster.nodes {
        let mut pts = points(n).await;
        for i in 0..20 {
            pts.search(search("m", vector(i), 5)).await.expect("search");
        }
    }
    let mut pts = points(&cluster.nodes[1]).await;
    let missing = pts.search(search("nope", vector(1), 5)).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    prom.wait_for(
        60,
        "ten upserts counted",
        r#"sum(shoal_grpc_requests_total{method="Points/Upsert",code="OK"})"#,
        |r| scalar(r) >= 10.0,
    )
    .await;
    prom.wait_for(
        60,
        "sixty searches counted, twenty per node",
        r#"shoal_grpc_requests_total{method="Points/Search",code="OK"}"#,
        |r| r.len() == 3 && r.iter().all(|(_, v)| *v >= 20.0),
    )
    .await;
    prom.wait_for(
        60,
        "the failed search counted with its code on node 2",
        r#"shoal_grpc_requests_total{method="Points/Search",code="NOT_FOUND"}"#,
        |r| r.len() == 1 && r[0].0["instance"] == instance(2) && r[0].1 == 1.0,
    )
    .await;
    prom.wait_for(
        60,
        "every replica's points gauge shows the thousand points",
        r#"sum by (instance) (shoal_shard_points{collection="m"})"#,
        |r| r.len() == 3 && r.iter().all(|(_, v)| *v == 1000.0),
    )
    .await;
    prom.wait_for(
        60,
        "replication lag 0 everywhere after the writes",
        &format!(r#"max(shoal_raft_replication_lag_entries{{collection="m"}} {LEADING})"#),
        |r| r.len() == 1 && scalar(r) == 0.0,
    )
    .await;

    // Kill the leader of shard 0: a survivor sees a new leader, and its counter of
    // leader changes moves.
    let leader = leader_of_shard0(&cluster.nodes[0]).await;
    let changes = r#"shoal_raft_leader_changes_total{collection="m",shard="0"}"#;
    let before: BTreeMap<String, f64> = prom
        .query(changes)
        .unwrap()
        .into_iter()
        .map(|(l, v)| (l["instance"].clone(), v))
        .collect();
    cluster.node(leader).kill9();
    let survivor = if leader == 1 { 2 } else { 1 };
    let new_leader = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let l = leader_of_shard0(cluster.node(survivor)).await;
            if l != leader {
                break l;
            }
            assert!(Instant::now() < deadline, "no new leader of shard 0");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    prom.wait_for(60, "a survivor counted the leader change", changes, |r| {
        r.iter().any(|(l, v)| {
            l["instance"] != instance(leader as usize)
                && *v > before.get(&l["instance"]).copied().unwrap_or(0.0)
        })
    })
    .await;
    prom.wait_for(
        60,
        "the new leader reports itself leader of shard 0",
        r#"shoal_raft_is_leader{collection="m",shard="0"} == 1"#,
        |r| {
            r.iter()
                .any(|(l, _)| l["instance"] == instance(new_leader as usize))
        },
    )
    .await;

    // Writes while it is down: its lag on the leaders grows, then drops to 0 once it
    // is back.
    upsert_range(cluster.node(survivor), 1000..1500).await;
    let lag = format!(
        r#"max(shoal_raft_replication_lag_entries{{collection="m",follower="{leader}"}} {LEADING})"#
    );
    prom.wait_for(60, "the killed node's lag grows", &lag, |r| scalar(r) > 0.0)
        .await;
    cluster.node(leader).restart(binary());
    prom.wait_for(90, "the returned node's lag drops to 0", &lag, |r| {
        r.len() == 1 && scalar(r) == 0.0
    })
    .await;

    // Every panel of the dashboard has data (more traffic first, so that rates over
    // the last seconds are not empty).
    for n in [survivor, new_leader] {
        let mut pts = points(cluster.node(n)).await;
        for i in 0..20 {
            pts.search(search("m", vector(i), 5)).await.expect("search");
        }
        let _ = pts.search(search("nope", vector(1), 5)).await;
    }
    upsert_range(cluster.node(survivor), 1500..1600).await;
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/shoal.json"),
        )
        .expect("deploy/grafana/shoal.json"),
    )
    .expect("the dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    for (title, expr) in &queries {
        let expr = substitute(expr);
        assert!(!expr.contains('$'), "{title}: a variable left in {expr}");
        prom.wait_for(60, &format!("panel {title:?} has data"), &expr, |r| {
            !r.is_empty() && r.iter().any(|(_, v)| v.is_finite())
        })
        .await;
    }
    // Every series the nodes export is a metric the README lists
    // (`shoal_server::monitoring::METRICS`), histograms with their three suffixes.
    let known: std::collections::BTreeSet<&str> = shoal_server::monitoring::METRICS
        .iter()
        .map(|m| m.1)
        .collect();
    let exported = prom
        .query(r#"count by (__name__) ({job="shoal"})"#)
        .unwrap();
    assert!(exported.len() > 20, "{exported:?}");
    for (labels, _) in &exported {
        let name = labels["__name__"].as_str();
        let listed = known.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|b| known.contains(b)));
        let prometheus_own = name == "up" || name.starts_with("scrape_");
        assert!(
            listed || prometheus_own,
            "{name} is exported but not listed"
        );
    }

    // The dashboard's variables list values too.
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            let (metric, label) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.split_once(", "))
                .expect("label_values(metric, label)");
            let r = prom
                .query(&format!("count by ({label}) ({metric})"))
                .unwrap();
            assert!(!r.is_empty(), "variable {q} has no values");
        }
    }

    // Readiness: with both other nodes gone, the survivor's groups lose their leaders
    // (or lead without a quorum) and it says so; it stays alive.
    for n in 1..=3u64 {
        if n != survivor {
            cluster.node(n).kill9();
        }
    }
    let m = instance(survivor as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http_get(&m, "/readyz").expect("the survivor answers /readyz");
        if r.0 == 503 && (r.1.contains("has no leader") || r.1.contains("without a quorum")) {
            break;
        }
        assert!(Instant::now() < deadline, "{m} still ready alone: {r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(http_get(&m, "/healthz").map(|r| r.0), Some(200));
}
