//! What the public port admits, so that no client can hold a node's memory or
//! tasks without bound: at most `--max-connections` connections (one more is
//! closed as it is accepted), at most `--max-concurrent-requests` calls in flight
//! (one more is answered RESOURCE_EXHAUSTED at once, naming the flag; health checks
//! are always admitted), and at most `--max-streams-per-connection` HTTP/2 streams on
//! one connection (the server's SETTINGS, enforced by the HTTP/2 layer).
//!
//! It must never queue: a node at its limits answers at once, and the client decides
//! whether to retry.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::transport::server::Connected;

/// Gives every call a permit of a shared count; see the module doc.
#[derive(Debug, Clone)]
pub struct InFlightLayer {
    permits: Arc<Semaphore>,
    max: usize,
}

impl InFlightLayer {
    pub fn new(max: usize) -> InFlightLayer {
        InFlightLayer {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;
    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`InFlightLayer`].
#[derive(Debug, Clone)]
pub struct InFlight<S> {
    inner: S,
    layer: InFlightLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, RB> tower::Service<http::Request<B>> for InFlight<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path().starts_with("/grpc.health.v1.Health/") {
            return Box::pin(self.inner.call(req));
        }
        match self.layer.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    // Held until the response (its headers) is ready; a streamed
                    // body is bounded by the streams per connection instead.
                    let r = fut.await;
                    drop(permit);
                    r
                })
            }
            Err(_) => {
                let status = Status::resource_exhausted(format!(
                    "the node has {} calls in flight, its limit (--max-concurrent-requests): \
                     retry later",
                    self.layer.max
                ));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Refusals are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Admits at most `max` connections from `incoming` at once: one more is closed as
/// soon as it is accepted (logged at most every 10 s).
pub fn limit_connections<IO, E>(
    incoming: impl Stream<Item = Result<IO, E>> + Send + 'static,
    max: usize,
) -> impl Stream<Item = Result<Admitted<IO>, E>> + Send + 'static
where
    IO: Send + 'static,
    E: Send + 'static,
{
    use futures::StreamExt;
    let permits = Arc::new(Semaphore::new(max));
    let started = Instant::now();
    let last_log = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    incoming.filter_map(move |conn| {
        let (permits, last_log, refused) = (permits.clone(), last_log.clone(), refused.clone());
        async move {
            let io = match conn {
                Ok(io) => io,
                Err(e) => return Some(Err(e)),
            };
            match permits.try_acquire_owned() {
                Ok(permit) => Some(Ok(Admitted {
                    io,
                    _permit: permit,
                })),
                Err(_) => {
                    let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
                    let now = started.elapsed().as_secs();
                    let last = last_log.load(Ordering::Relaxed);
                    if (now >= last + LOG_EVERY.as_secs() || last == 0)
                        && last_log
                            .compare_exchange(
                                last,
                                now.max(1),
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                    {
                        tracing::warn!(
                            max,
                            refused = n,
                            "public port at its connection limit (--max-connections): \
                             closing new connections"
                        );
                    }
                    None // Dropped: the connection closes.
                }
            }
        }
    })
}

/// A connection that holds one of the port's connection permits while it is open.
pub struct Admitted<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_their_permits_return() {
        let conns = futures::stream::iter((0..5).map(Ok::<u32, ()>));
        let admitted: Vec<_> = limit_connections(conns, 2).collect().await;
        // Two admitted, three dropped while the first two stayed open.
        assert_eq!(admitted.len(), 2);
        assert_eq!(
            admitted
                .iter()
                .map(|a| a.as_ref().unwrap().io)
                .collect::<Vec<_>>(),
            [0, 1]
        );
        // Closing one admits the next.
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<u32, ()>>();
        let mut s = Box::pin(limit_connections(rx, 1));
        tx.unbounded_send(Ok(7)).unwrap();
        let first = s.next().await.unwrap().unwrap();
        tx.unbounded_send(Ok(8)).unwrap();
        // 8 arrives while 7 is open: closed, nothing admitted.
        let none = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
        assert!(none.is_err(), "a connection beyond the limit was admitted");
        drop(first);
        tx.unbounded_send(Ok(9)).unwrap();
        drop(tx);
        let rest: Vec<u32> = s.map(|a| a.unwrap().io).collect().await;
        // 9 arrives after 7 closed: admitted.
        assert_eq!(rest, [9]);
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_get_resource_exhausted_at_once() {
        use tower::{Layer, Service, ServiceExt};
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let inner = tower::service_fn(move |_req: http::Request<()>| {
            let mut rx = release_rx.clone();
            async move {
                let _ = rx.wait_for(|r| *r).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        });
        let mut svc = InFlightLayer::new(1).layer(inner);
        let call = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        let held = svc
            .ready()
            .await
            .unwrap()
            .call(call("/shoal.v1.Points/Search"));
        let refused = svc
            .ready()
            .await
            .unwrap()
            .call(call("/shoal.v1.Points/Search"))
            .await
            .unwrap();
        let status = Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("--max-concurrent-requests"));
        // Health checks pass regardless.
        let health = svc
            .ready()
            .await
            .unwrap()
            .call(call("/grpc.health.v1.Health/Check"));
        release_tx.send(true).unwrap();
        assert!(held.await.unwrap().headers().get("grpc-status").is_none());
        assert!(health.await.unwrap().headers().get("grpc-status").is_none());
        // The permit came back.
        let again = svc
            .ready()
            .await
            .unwrap()
            .call(call("/shoal.v1.Points/Search"))
            .await
            .unwrap();
        assert!(again.headers().get("grpc-status").is_none());
    }
}
