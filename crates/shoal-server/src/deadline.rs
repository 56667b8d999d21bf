//! A client's deadline answered with `DEADLINE_EXCEEDED`.
//!
//! tonic enforces the `grpc-timeout` header itself, outside every layer a server can
//! add, and answers an expired one with `CANCELLED: Timeout expired`, which tells a
//! client "someone gave up", not "your deadline passed". This layer runs inside
//! tonic's and reads the same header; it gives up on the request a millisecond
//! earlier (tokio's timers tick in milliseconds, so tonic's timer, started a moment
//! before this one, could otherwise fire in an earlier tick) and answers
//! `DEADLINE_EXCEEDED`. A request whose deadline leaves less than that margin is
//! answered at once, without running. Dropping the handler's future is all the
//! cancellation it gets (work already handed to the search pool finishes there).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};

/// How much earlier than the client's deadline a request is given up.
const MARGIN: Duration = Duration::from_millis(1);

/// Wraps a service in [`Deadline`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

/// The `grpc-timeout` header's duration (gRPC over HTTP/2: up to 8 digits and a unit
/// of `H`, `M`, `S`, `m`, `u` or `n`); `None` if absent or malformed (tonic ignores
/// a malformed one too).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn expired<B: Default>() -> Response<B> {
    tonic::Status::deadline_exceeded("the request's deadline (grpc-timeout) passed").into_http()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Deadline<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(timeout) = grpc_timeout(req.headers()) else {
            return Box::pin(self.inner.call(req));
        };
        let left = timeout.saturating_sub(MARGIN);
        if left.is_zero() {
            return Box::pin(std::future::ready(Ok(expired())));
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(left, fut).await {
                Ok(r) => r,
                Err(_) => Ok(expired()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    fn request(timeout: Option<&'static str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = timeout {
            r.headers_mut().insert("grpc-timeout", t.parse().unwrap());
        }
        r
    }

    fn status(r: &Response<String>) -> &str {
        r.headers()
            .get("grpc-status")
            .map_or("", |s| s.to_str().unwrap())
    }

    #[test]
    fn parses_every_unit() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(h("3M"), Some(Duration::from_secs(180)));
        assert_eq!(h("4S"), Some(Duration::from_secs(4)));
        assert_eq!(h("5m"), Some(Duration::from_millis(5)));
        assert_eq!(h("6u"), Some(Duration::from_micros(6)));
        assert_eq!(h("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "5", "5x", "-5m", "123456789m", "1.5S"] {
            assert_eq!(h(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_expired_deadline_is_deadline_exceeded() {
        let slow = tower::service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, std::convert::Infallible>(Response::new("late".to_string()))
        });
        let fast = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new("done".to_string()))
        });
        // Past the deadline while running.
        let r = DeadlineLayer
            .layer(slow)
            .oneshot(request(Some("20m")))
            .await
            .unwrap();
        assert_eq!(status(&r), "4");
        // Too short to run at all.
        let r = DeadlineLayer
            .layer(slow)
            .oneshot(request(Some("1n")))
            .await
            .unwrap();
        assert_eq!(status(&r), "4");
        // In time, or without a deadline: the service's own answer.
        for t in [Some("10S"), None] {
            let r = DeadlineLayer.layer(fast).oneshot(request(t)).await.unwrap();
            assert_eq!(r.into_body(), "done");
        }
    }
}
