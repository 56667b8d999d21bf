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

/// A gauge not set for this long disappears from `/metrics` (a replica that moved
/// away, a follower removed from a group).
const GAUGE_IDLE: Duration = Duration::from_secs(30);

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

/// Builds the process's Prometheus recorder and installs it as the `metrics`
/// facade's global recorder. Call once, before anything records.
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
