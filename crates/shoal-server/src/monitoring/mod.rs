//! The metrics endpoint (`--metrics-listen`): plain HTTP, apart from the gRPC ports,
//! serving
//! - `/metrics`: Prometheus text, rendered by `metrics-exporter-prometheus` from
//!   everything the process records through the `metrics` facade (this crate's
//!   [`grpc`] layer, the cluster, Raft, shard and storage crates, and the gauges a
//!   collector task samples every [`COLLECT_EVERY`] with `Node::record_gauges`);
//! - `/healthz`: `200 ok` while the process runs (liveness);
//! - `/readyz`: `200 ready` when the node serves (`Node::readiness`: storage
//!   writable, every local replica's Raft group running with a leader and applied
//!   within `--ready-max-lag` entries of its log, the metadata applied and listing
//!   this node), else `503` with the reasons, one a line; `503 starting` while the
//!   node opens.
//!
//! This module owns the process's one metrics recorder: it is installed only when
//! the endpoint is on (otherwise the facade's calls do nothing). It must never
//! authenticate or serve the API (the port is unauthenticated: keep it on loopback
//! or a private network), never block an async worker (sampling runs on a blocking
//! thread), and never label a series with anything unbounded (point ids, vectors,
//! paths a client chose).

pub mod grpc;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use shoal_cluster::Node;

use crate::error::Error;

/// How often the collector samples the node's gauges.
pub const COLLECT_EVERY: Duration = Duration::from_secs(2);

/// A gauge not set for this long disappears from `/metrics`: a replica that moved
/// away, the followers' lag on a replica that no longer leads (several collection
/// rounds, so a slow round does not make live gauges blink).
const GAUGE_IDLE: Duration = Duration::from_secs(15);

/// Most reasons `/readyz` lists.
const MAX_REASONS: usize = 20;

/// Bucket bounds, in seconds, of the latency histograms (every metric ending in
/// `_seconds`): 100 µs to 60 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Bucket bounds of the size histograms (shards per search, searches per batch).
const SIZES: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0,
];

/// The endpoint's shared state.
pub struct Monitor {
    handle: PrometheusHandle,
    node: OnceLock<Node>,
    max_lag: u64,
}

impl Monitor {
    /// A monitor rendering `handle`'s metrics, judging readiness with `max_lag`.
    pub fn new(handle: PrometheusHandle, max_lag: u64) -> Arc<Monitor> {
        Arc::new(Monitor {
            handle,
            node: OnceLock::new(),
            max_lag,
        })
    }

    /// The node has started: readiness asks it from now on, and a collector samples
    /// its gauges every [`COLLECT_EVERY`] until the process ends.
    pub fn attach(self: &Arc<Self>, node: Node) {
        if self.node.set(node.clone()).is_err() {
            return;
        }
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COLLECT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (node, handle) = (node.clone(), handle.clone());
                // One round at a time: the next tick waits for this one.
                let _ = tokio::task::spawn_blocking(move || {
                    node.record_gauges();
                    handle.run_upkeep();
                })
                .await;
            }
        });
    }
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric a node exports: kind, name, labels, help. The README's metric table
/// lists the same names (a test checks it).
#[rustfmt::skip]
pub const METRICS: &[(Kind, &str, &str, &str)] = {
    use Kind::*;
    &[
        (Counter, "shoal_grpc_requests_total", "method, code", "Public gRPC calls answered, by method and status code."),
        (Histogram, "shoal_grpc_request_duration_seconds", "method", "Time from a call's arrival to its status, by method."),
        (Histogram, "shoal_search_fanout_shards", "collection", "Shards one search (or search batch) reads."),
        (Histogram, "shoal_search_coalesced_batch_size", "", "Searches answered by one coalesced batch (1: ran alone)."),
        (Gauge, "shoal_shard_points", "collection, shard", "Live points in this node's replica."),
        (Gauge, "shoal_shard_tombstones", "collection, shard", "Deleted points still in the replica's index."),
        (Gauge, "shoal_shard_index_memory_bytes", "collection, shard", "Estimated memory of the replica's vector index."),
        (Gauge, "shoal_shard_checkpoint_age_seconds", "collection, shard", "Time since the replica's newest index checkpoint."),
        (Gauge, "shoal_raft_is_leader", "collection, shard", "1 if this node's replica leads the shard's group, else 0."),
        (Gauge, "shoal_raft_term", "collection, shard", "The Raft term of this node's replica."),
        (Gauge, "shoal_raft_applied_index", "collection, shard", "The last log index the replica applied."),
        (Gauge, "shoal_raft_last_log_index", "collection, shard", "The last log index the replica holds."),
        (Gauge, "shoal_raft_replication_lag_entries", "collection, shard, follower", "On the leader: its last log index minus what the follower matched."),
        (Counter, "shoal_raft_leader_changes_total", "collection, shard", "New leaders this node's replica saw (its first included)."),
        (Counter, "shoal_raft_snapshot_sends_total", "collection, shard", "Snapshots this node sent to a follower in full."),
        (Counter, "shoal_raft_snapshot_installs_total", "collection, shard", "Snapshots this node's replica installed."),
        (Gauge, "shoal_raft_elections_withheld", "", "Raft groups (shards and metadata) in which this node stands for no election: it reaches no majority of the group's voters."),
        (Gauge, "shoal_metadata_is_leader", "", "1 if this node leads the metadata group."),
        (Gauge, "shoal_metadata_term", "", "The metadata group's Raft term on this node."),
        (Gauge, "shoal_metadata_applied_index", "", "The metadata log index this node applied."),
        (Gauge, "shoal_metadata_replication_lag_entries", "follower", "On the metadata leader: entries each follower lacks."),
        (Counter, "shoal_metadata_leader_changes_total", "", "New metadata leaders this node saw."),
        (Gauge, "shoal_node_info", "node", "1, labelled with this node's id."),
        (Gauge, "shoal_node_replicas", "", "Shard replicas open on this node."),
        (Gauge, "shoal_node_leaders", "", "Shard replicas this node leads."),
        (Gauge, "shoal_collections", "", "Collections in the metadata this node applied."),
        (Gauge, "shoal_cluster_nodes", "", "Nodes in the metadata this node applied."),
        (Counter, "shoal_storage_fsyncs_total", "", "Group-commit fsyncs of the node's database."),
        (Histogram, "shoal_storage_fsync_seconds", "", "Duration of each group-commit fsync."),
        (Counter, "shoal_storage_fsync_errors_total", "", "Failed fsyncs (the node stops being ready)."),
        (Gauge, "shoal_storage_disk_bytes", "part", "Bytes on disk: `database` (fjall) and `index_checkpoints`."),
        (Counter, "shoal_checkpoints_total", "", "Index checkpoints saved."),
        (Histogram, "shoal_checkpoint_seconds", "", "Time to save one index checkpoint."),
        (Gauge, "shoal_checkpoints_running", "", "Index checkpoints being saved now."),
        (Counter, "shoal_index_rebuilds_total", "", "Index rebuilds finished (tombstones cleared)."),
        (Histogram, "shoal_index_rebuild_seconds", "", "Time to rebuild one index."),
        (Gauge, "shoal_index_rebuilds_running", "", "Index rebuilds building now."),
        (Gauge, "process_resident_memory_bytes", "", "Resident memory of the process."),
        (Gauge, "process_cpu_seconds_total", "", "CPU time (user and system) the process used."),
        (Gauge, "process_open_fds", "", "File descriptors the process holds open."),
        (Gauge, "process_max_fds", "", "The process's limit of open files."),
    ]
};

/// Gives every metric of [`METRICS`] its help text.
fn describe() {
    for (kind, name, _, help) in METRICS {
        let unit = if name.ends_with("_seconds") || name.ends_with("_seconds_total") {
            Some(metrics::Unit::Seconds)
        } else if name.ends_with("_bytes") {
            Some(metrics::Unit::Bytes)
        } else {
            None
        };
        let help = metrics::SharedString::const_str(help);
        match (kind, unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(*name, u, help),
            (Kind::Counter, None) => metrics::describe_counter!(*name, help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(*name, u, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(*name, help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(*name, u, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(*name, help),
        }
    }
}

/// Builds the process's Prometheus recorder and installs it as the `metrics`
/// facade's global recorder, with every metric's help text. Call once, before
/// anything records.
pub fn install_recorder() -> Result<PrometheusHandle, Error> {
    let invalid = |e: metrics_exporter_prometheus::BuildError| {
        Error::invalid("--metrics-listen", format!("the metrics recorder: {e}"))
    };
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_shards".into()), SIZES))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), SIZES))
        .map_err(invalid)?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()
        .map_err(invalid)
        .inspect(|_| describe())
}

/// The endpoint's routes.
pub fn router(monitor: Arc<Monitor>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(monitor)
}

/// Serves [`router`] on `listener` until the process ends.
pub fn spawn(listener: tokio::net::TcpListener, monitor: Arc<Monitor>) {
    let app = router(monitor);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
}

/// Binds `addr` for the endpoint (`--metrics-listen`).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::invalid(format!("--metrics-listen {addr}"), e.to_string()))
}

async fn metrics(
    axum::extract::State(monitor): axum::extract::State<Arc<Monitor>>,
) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        monitor.handle.render(),
    )
}

async fn ready(
    axum::extract::State(monitor): axum::extract::State<Arc<Monitor>>,
) -> (StatusCode, String) {
    let reasons = match monitor.node.get() {
        None => vec!["starting: the node is opening its data and replicas".to_string()],
        Some(node) => node.readiness(monitor.max_lag).await,
    };
    readiness_response(&reasons)
}

/// `/readyz`'s answer to `reasons` (empty: ready).
fn readiness_response(reasons: &[String]) -> (StatusCode, String) {
    if reasons.is_empty() {
        return (StatusCode::OK, "ready\n".into());
    }
    let mut text = String::from("not ready:\n");
    for r in reasons.iter().take(MAX_REASONS) {
        text.push_str(r);
        text.push('\n');
    }
    if reasons.len() > MAX_REASONS {
        text.push_str(&format!("... and {} more\n", reasons.len() - MAX_REASONS));
    }
    (StatusCode::SERVICE_UNAVAILABLE, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(app: axum::Router, path: &str) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn endpoints_answer_before_the_node_started() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("shoal_test_total", "method" => "Points/Search").increment(3)
        });
        let app = router(Monitor::new(handle, 1000));
        assert_eq!(
            get(app.clone(), "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        let (status, text) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("starting"), "{text}");
        let (status, text) = get(app.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("shoal_test_total{method=\"Points/Search\"} 3"),
            "{text}"
        );
        assert_eq!(get(app, "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_readme_lists_every_metric_and_the_names_carry_their_units() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        for (kind, name, _, _) in METRICS {
            assert!(
                readme.contains(&format!("`{name}`")),
                "README lacks `{name}`"
            );
            if *kind == Kind::Counter {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
        let names: std::collections::BTreeSet<_> = METRICS.iter().map(|m| m.1).collect();
        assert_eq!(names.len(), METRICS.len(), "a metric is listed twice");
    }

    #[test]
    fn readiness_lists_its_reasons_and_caps_them() {
        assert_eq!(readiness_response(&[]), (StatusCode::OK, "ready\n".into()));
        let (status, text) = readiness_response(&["group c/0 has no leader".into()]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text, "not ready:\ngroup c/0 has no leader\n");
        let many: Vec<String> = (0..25).map(|i| format!("reason {i}")).collect();
        let (_, text) = readiness_response(&many);
        assert!(
            text.contains("reason 19\n") && !text.contains("reason 20\n"),
            "{text}"
        );
        assert!(text.ends_with("... and 5 more\n"), "{text}");
    }
}
