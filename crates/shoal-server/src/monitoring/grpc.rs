//! Requests of the public gRPC API, counted per RPC and status code and timed per RPC:
//! a tower layer around every public service (`shoal_grpc_requests_total{method,
//! code}`, `shoal_grpc_request_duration_seconds{method}`).
//!
//! The status is where gRPC puts it: in the response headers of a trailers-only
//! response (every error tonic or a handler answers before a body), else in the
//! trailers after the body, which the layer watches for by wrapping the body. A
//! request is recorded once, when its status is known; a body dropped before its
//! trailers (the client went away) counts as `CANCELLED`, one that ended without
//! them as `UNKNOWN`. The time is from the request's arrival to its status.
//!
//! Labels are fixed strings only: the method's name from the access table
//! (`auth::table`), `Health` / `ServerReflection` for those services, and `unknown`
//! for any other path — never a path a client made up. It must never change a
//! response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::Frame;

use crate::auth::table::{self, Lookup};

/// The gRPC status codes by number, as gRPC names them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code named by a `grpc-status` header or trailer, if there is one (`UNKNOWN`
/// for a value that is not a code).
pub fn status_code(headers: &HeaderMap) -> Option<&'static str> {
    let v = headers.get("grpc-status")?;
    Some(
        v.to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .and_then(|n| CODES.get(n).copied())
            .unwrap_or("UNKNOWN"),
    )
}

/// The `method` label of a request path (see the module doc).
pub fn method_label(path: &str) -> &'static str {
    match table::lookup(path) {
        Lookup::Rpc(rpc) => table::short_name(rpc.path),
        Lookup::Exempt => table::EXEMPT_SERVICES
            .iter()
            .find(|s| path.strip_prefix('/').is_some_and(|p| p.starts_with(*s)))
            .map(|s| s.rsplit_once('.').map_or(*s, |(_, name)| name))
            .unwrap_or("unknown"),
        Lookup::Unknown => "unknown",
    }
}

/// One request being answered: recorded once, with its status.
struct Call {
    method: &'static str,
    started: Instant,
}

impl Call {
    fn record(self, code: &'static str) {
        metrics::counter!("shoal_grpc_requests_total", "method" => self.method, "code" => code)
            .increment(1);
        metrics::histogram!("shoal_grpc_request_duration_seconds", "method" => self.method)
            .record(self.started.elapsed());
    }
}

/// Wraps a service in [`GrpcMetrics`]; with `enabled` false (no metrics endpoint) it
/// passes everything through untouched and records nothing.
#[derive(Debug, Clone, Copy)]
pub struct GrpcMetricsLayer {
    pub enabled: bool,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            enabled: self.enabled,
        }
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    enabled: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<tonic::body::Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let call = self.enabled.then(|| Call {
            method: method_label(req.uri().path()),
            started: Instant::now(),
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let Some(call) = call else {
                return Ok(resp.map(tonic::body::Body::new));
            };
            let (parts, body) = resp.into_parts();
            // Trailers-only: the status is in the headers and the body is empty.
            let body = match status_code(&parts.headers) {
                Some(code) => {
                    call.record(code);
                    tonic::body::Body::new(body)
                }
                // Over already, and without a status: not a gRPC answer.
                None if body.is_end_stream() => {
                    call.record("UNKNOWN");
                    tonic::body::Body::new(body)
                }
                None => tonic::body::Body::new(Watched {
                    inner: body,
                    call: Some(call),
                }),
            };
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// A response body that records its call when the trailers pass (or it ends or is
/// dropped without them).
struct Watched<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Watched<B> {
    fn record(&mut self, code: &'static str) {
        if let Some(call) = self.call.take() {
            call.record(code);
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code) {
                    self.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.record("INTERNAL"),
            Poll::Ready(None) => self.record("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.record("CANCELLED");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(status: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static(status));
        h
    }

    #[test]
    fn codes_are_read_from_headers_or_trailers_by_number() {
        assert_eq!(status_code(&HeaderMap::new()), None);
        assert_eq!(status_code(&headers("0")), Some("OK"));
        assert_eq!(status_code(&headers("5")), Some("NOT_FOUND"));
        assert_eq!(status_code(&headers("16")), Some("UNAUTHENTICATED"));
        assert_eq!(status_code(&headers("17")), Some("UNKNOWN"));
        assert_eq!(status_code(&headers("x")), Some("UNKNOWN"));
        // Every code tonic knows has the name gRPC gives it.
        for n in 0..17 {
            let code = tonic::Code::from_i32(n);
            let ours = CODES[n as usize].replace('_', "").to_lowercase();
            assert_eq!(format!("{code:?}").to_lowercase(), ours, "code {n}");
        }
    }

    #[test]
    fn method_labels_are_the_table_s_names_and_nothing_a_client_invents() {
        assert_eq!(method_label("/shoal.v1.Points/Search"), "Points/Search");
        assert_eq!(
            method_label("/shoal.v1.Collections/Create"),
            "Collections/Create"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Health");
        assert_eq!(
            method_label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "ServerReflection"
        );
        for made_up in ["/shoal.v1.Points/Nope", "/x/y", "/", "", "/a.b.C/D?x=1"] {
            assert_eq!(method_label(made_up), "unknown", "{made_up}");
        }
    }

    /// A response with a body and, after it, trailers carrying `trailer_status`.
    fn streamed(trailer_status: &'static str) -> Response<tonic::body::Body> {
        let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(bytes::Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(headers(trailer_status))),
        ];
        let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
        Response::new(tonic::body::Body::new(body))
    }

    /// Runs the layer over one request answered by `answer`; returns what the
    /// recorder saw, rendered as Prometheus text.
    async fn through_layer(
        path: &'static str,
        answer: Response<tonic::body::Body>,
        read_body: bool,
    ) -> String {
        use tower::{Layer, ServiceExt};
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let answer = std::sync::Mutex::new(Some(answer));
        let inner = tower::service_fn(move |_req: Request<()>| {
            let r = answer.lock().unwrap().take().unwrap();
            async move { Ok::<_, std::convert::Infallible>(r) }
        });
        let svc = GrpcMetricsLayer { enabled: true }.layer(inner);
        let req = Request::builder().uri(path).body(()).unwrap();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let resp = svc.oneshot(req).await.unwrap();
        if read_body {
            use http_body_util::BodyExt;
            resp.into_body().collect().await.unwrap();
        } else {
            drop(resp);
        }
        handle.render()
    }

    fn count(text: &str, method: &str, code: &str) -> bool {
        text.lines().any(|l| {
            l.starts_with("shoal_grpc_requests_total{")
                && l.contains(&format!("method=\"{method}\""))
                && l.contains(&format!("code=\"{code}\""))
                && l.ends_with(" 1")
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_layer_records_trailers_only_and_trailer_statuses_once() {
        // Trailers-only (an error answered before any body).
        let early = tonic::Status::not_found("no such collection").into_http();
        let text = through_layer("/shoal.v1.Points/Search", early, true).await;
        assert!(count(&text, "Points/Search", "NOT_FOUND"), "{text}");
        assert!(
            text.contains("shoal_grpc_request_duration_seconds_count{method=\"Points/Search\"} 1"),
            "{text}"
        );
        // The status in the trailers after a body.
        let text = through_layer("/shoal.v1.Points/Upsert", streamed("0"), true).await;
        assert!(count(&text, "Points/Upsert", "OK"), "{text}");
        assert!(!text.contains("CANCELLED"), "{text}");
        // A body dropped before its trailers: the client went away.
        let text = through_layer("/shoal.v1.Points/Get", streamed("0"), false).await;
        assert!(count(&text, "Points/Get", "CANCELLED"), "{text}");
        // An empty answer without any status: not gRPC, counted once as UNKNOWN.
        let empty = Response::new(tonic::body::Body::empty());
        let text = through_layer("/shoal.v1.Points/Count", empty, true).await;
        assert!(count(&text, "Points/Count", "UNKNOWN"), "{text}");
        assert!(!text.contains("CANCELLED"), "{text}");
    }
}
