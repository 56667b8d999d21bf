//! What the public port admits, so that no client can hold a node's memory or
//! tasks without bound: at most `--max-connections` connections (one more is
//! closed as it is accepted), at most `--max-concurrent-requests` calls in flight
//! (one more is answered RESOURCE_EXHAUSTED at once, naming the flag; health checks
//! are always admitted), and at most `--max-streams-per-connection` HTTP/2 streams on
//! one connection (the server's SETTINGS, enforced by the HTTP/2 layer). A
//! connection with no call open for `--idle-connection-timeout-s` is closed (its
//! reading side ends, so the HTTP/2 layer closes it), which frees its permit: a call
//! is open from its request until its response body has been sent, so a long
//! download keeps its connection. Clients reconnect on their next call.
//!
//! Replies of points (`Get`, `Search`, `SearchBatch`, `Scroll`) hold at most
//! `--max-pending-reply-bytes` at once from when they are ready until their body has
//! been sent: a client that never reads its replies holds that budget, not the
//! node's memory, and one more reply that does not fit is refused RESOURCE_EXHAUSTED.
//! A call counts under `--max-concurrent-requests` until its body has been sent too,
//! and bodies reach the HTTP/2 layer in 16 KiB pieces only as its stream may send
//! them, so what that layer buffers is bounded per call (its send buffer, 400 KiB).
//!
//! Above `--memory-watermark-bytes` of resident memory (by default 90% of the
//! container's memory limit, where there is one), calls that need memory — writes,
//! searches, reads of points, collection creation, backups and restores — are
//! answered RESOURCE_EXHAUSTED at once, so the node refuses work instead of being
//! killed; deletes, status, listing and health checks still pass, so an operator can
//! free memory and see the node. Resident memory is sampled every 2 s.
//!
//! It must never queue: a node at its limits answers at once, and the client decides
//! whether to retry.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::transport::server::Connected;

/// Resident memory above which calls that need memory are refused.
#[derive(Clone)]
pub struct MemoryWatermark {
    pub bytes: u64,
    /// The process's resident memory now.
    pub rss: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for MemoryWatermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryWatermark")
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Whether a call needs memory in proportion to what it asks (see the module doc).
pub fn needs_memory(path: &str) -> bool {
    matches!(
        path,
        "/shoal.v1.Points/Upsert"
            | "/shoal.v1.Points/Get"
            | "/shoal.v1.Points/Search"
            | "/shoal.v1.Points/SearchBatch"
            | "/shoal.v1.Points/Scroll"
            | "/shoal.v1.Points/Count"
            | "/shoal.v1.Collections/Create"
            | "/shoal.v1.Backups/Create"
            | "/shoal.v1.Backups/Restore"
    )
}

/// 90% of this process's cgroup memory limit (v2 `memory.max`, or v1), if it has one.
pub fn default_watermark() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let limit = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?
        .trim()
        .parse::<u64>()
        .ok()?;
    // cgroup v1 says "no limit" with a number near i64::MAX.
    (limit < 1 << 60).then_some(limit / 10 * 9)
}

/// Gives every call a permit of a shared count; see the module doc.
#[derive(Debug, Clone)]
pub struct InFlightLayer {
    permits: Arc<Semaphore>,
    max: usize,
    memory: Option<MemoryWatermark>,
}

impl InFlightLayer {
    pub fn new(max: usize, memory: Option<MemoryWatermark>) -> InFlightLayer {
        InFlightLayer {
            permits: Arc::new(Semaphore::new(max)),
            max,
            memory,
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
        let path = req.uri().path();
        if path.starts_with("/grpc.health.v1.Health/") {
            return Box::pin(self.inner.call(req));
        }
        if let Some(m) = &self.layer.memory
            && needs_memory(path)
        {
            let rss = (m.rss)();
            if rss > m.bytes {
                let status = Status::resource_exhausted(format!(
                    "the node's resident memory ({} MiB) is above its watermark \
                     (--memory-watermark-bytes, {} MiB): writes, searches and reads of \
                     points are refused until it drops (deletes still pass)",
                    rss >> 20,
                    m.bytes >> 20
                ));
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        match self.layer.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    // Held until the response body has been sent: it rides in the
                    // response's extensions, and `TrackCallsLayer` moves it into the
                    // body (without that layer it goes with the headers).
                    let mut r = fut.await;
                    if let Ok(response) = &mut r {
                        response
                            .extensions_mut()
                            .insert(CallPermit(Arc::new(permit)));
                    }
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
/// soon as it is accepted (logged at most every 10 s). With `idle_timeout`, an
/// admitted connection with no call open for that long is closed.
pub fn limit_connections<IO, E>(
    incoming: impl Stream<Item = Result<IO, E>> + Send + 'static,
    max: usize,
    idle_timeout: Option<Duration>,
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
                Ok(permit) => Some(Ok(Admitted::new(io, permit, idle_timeout))),
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

/// The calls open on one connection, and since when it has had none: what its idle
/// timer goes by.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    /// When the last call ended (or the connection opened), in milliseconds after
    /// `born`.
    quiet_since_ms: AtomicU64,
    born: tokio::time::Instant,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
        })
    }

    /// Counts a call open until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> CallGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }

    /// How long the connection has had no call open; `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.quiet_since_ms.load(Ordering::Acquire));
        Some(self.born.elapsed().saturating_sub(since))
    }
}

/// One open call of a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.quiet_since_ms
            .store(a.born.elapsed().as_millis() as u64, Ordering::Release);
        a.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an admitted connection gives the calls on it (tonic's `ConnectInfo`, in every
/// request's extensions): its [`Activity`], which [`TrackCallsLayer`] keeps.
#[derive(Debug, Clone)]
pub struct ConnActivity(pub Arc<Activity>);

/// A connection that holds one of the port's connection permits while it is open,
/// and ends its reading side once it has been idle for its timeout.
pub struct Admitted<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    activity: Arc<Activity>,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl<IO> Admitted<IO> {
    fn new(io: IO, permit: OwnedSemaphorePermit, idle_timeout: Option<Duration>) -> Self {
        Admitted {
            io,
            _permit: permit,
            activity: Activity::new(),
            idle: idle_timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
        }
    }

    /// True once the connection has been idle for its timeout; otherwise sets the
    /// timer to wake `cx` when it may be.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((timeout, timer)) = &mut self.idle else {
            return false;
        };
        while timer.as_mut().poll(cx).is_ready() {
            let left = match self.activity.idle_for() {
                Some(idle) if idle >= *timeout => return true,
                Some(idle) => *timeout - idle,
                None => *timeout,
            };
            timer.as_mut().reset(tokio::time::Instant::now() + left);
        }
        false
    }
}

impl<IO> Connected for Admitted<IO> {
    type ConnectInfo = ConnActivity;
    fn connect_info(&self) -> ConnActivity {
        ConnActivity(self.activity.clone())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle_expired(cx) {
            tracing::debug!("closing a connection idle for --idle-connection-timeout-s");
            // The end of the stream: the HTTP/2 layer closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

/// The bytes of replies ready and not yet sent, bounded (see the module doc).
#[derive(Debug, Clone)]
pub struct ReplyBudget {
    kib: Arc<Semaphore>,
    max_bytes: u64,
}

impl ReplyBudget {
    pub fn new(max_bytes: u64) -> ReplyBudget {
        let kib = usize::try_from(max_bytes.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        ReplyBudget {
            kib: Arc::new(Semaphore::new(kib)),
            max_bytes,
        }
    }

    /// Reserves `len` bytes for a reply until its body has been sent or dropped (the
    /// permit rides in the response's extensions; [`TrackCallsLayer`] moves it into
    /// the body). Refuses at once when the replies pending hold too much.
    pub fn reserve(&self, len: usize) -> Result<ReplyPermit, Status> {
        let kib = u32::try_from((len as u64).div_ceil(1024)).unwrap_or(u32::MAX);
        match self.kib.clone().try_acquire_many_owned(kib) {
            Ok(permit) => Ok(ReplyPermit(Arc::new(permit))),
            Err(_) => Err(Status::resource_exhausted(format!(
                "reply: replies not yet read by their clients hold too much of this node's                  --max-pending-reply-bytes ({} MiB) for this one ({} KiB): retry later, or                  ask for fewer results",
                self.max_bytes >> 20,
                kib
            ))),
        }
    }
}

/// A call's place under `--max-concurrent-requests`, returned when dropped.
#[derive(Debug, Clone)]
pub struct CallPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// A reply's share of the [`ReplyBudget`], returned when dropped.
#[derive(Debug, Clone)]
pub struct ReplyPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Counts every call open on its connection (its [`ConnActivity`]) from its request
/// until its response body has been sent or dropped, and keeps a reply's
/// [`ReplyPermit`] as long.
#[derive(Debug, Clone, Default)]
pub struct TrackCallsLayer;

impl<S> tower::Layer<S> for TrackCallsLayer {
    type Service = TrackCalls<S>;
    fn layer(&self, inner: S) -> TrackCalls<S> {
        TrackCalls { inner }
    }
}

/// See [`TrackCallsLayer`].
#[derive(Debug, Clone)]
pub struct TrackCalls<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TrackCalls<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<tonic::body::Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = req.extensions().get::<ConnActivity>().map(|c| c.0.begin());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            let held = Held {
                _open: guard,
                _call: response.extensions_mut().remove::<CallPermit>(),
                _reply: response.extensions_mut().remove::<ReplyPermit>(),
            };
            Ok(response.map(|body| {
                tonic::body::Body::new(GuardedBody {
                    body,
                    pending: bytes::Bytes::new(),
                    _held: held,
                })
            }))
        })
    }
}

/// What a call holds until its response body has been sent or dropped.
struct Held {
    _open: Option<CallGuard>,
    _call: Option<CallPermit>,
    _reply: Option<ReplyPermit>,
}

/// Largest piece of a response body handed to the HTTP/2 layer at once. The layer
/// asks for the next piece only when the stream may send (its flow-control window
/// and send buffer), so a reply a client does not read stays here, under its
/// permits, rather than whole in the layer's send buffer.
const PIECE: usize = 16 * 1024;

/// A response body that keeps what its call holds ([`Held`]) until it is sent or
/// dropped, and hands its data over in pieces of at most [`PIECE`] bytes.
struct GuardedBody {
    body: tonic::body::Body,
    /// The rest of a data frame larger than a piece.
    pending: bytes::Bytes,
    _held: Held,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let n = this.pending.len().min(PIECE);
            return Poll::Ready(Some(Ok(http_body::Frame::data(this.pending.split_to(n)))));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() > PIECE {
                        this.pending = data.split_off(PIECE);
                    }
                    Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.body.size_hint();
        let p = self.pending.len() as u64;
        hint.set_lower(hint.lower() + p);
        if let Some(u) = hint.upper() {
            hint.set_upper(u + p);
        }
        hint
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
        let admitted: Vec<_> = limit_connections(conns, 2, None).collect().await;
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
        let mut s = Box::pin(limit_connections(rx, 1, None));
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

    #[tokio::test(start_paused = true)]
    async fn a_connection_ends_once_idle_for_its_timeout_never_while_a_call_is_open() {
        use tokio::io::AsyncReadExt;
        let (_client, server) = tokio::io::duplex(64);
        let permits = Arc::new(Semaphore::new(1));
        let permit = permits.clone().try_acquire_owned().unwrap();
        let mut conn = Admitted::new(server, permit, Some(Duration::from_secs(10)));
        async fn read(
            c: &mut Admitted<tokio::io::DuplexStream>,
            secs: u64,
        ) -> Result<io::Result<usize>, tokio::time::error::Elapsed> {
            let mut buf = [0u8; 8];
            tokio::time::timeout(Duration::from_secs(secs), c.read(&mut buf)).await
        }
        // A call open for three timeouts: the connection stays.
        let call = conn.activity.begin();
        assert!(read(&mut conn, 30).await.is_err(), "closed during a call");
        // The call ends; just short of the timeout later the connection is still open,
        // and then it ends (end of stream), giving its permit back once dropped.
        drop(call);
        assert!(
            read(&mut conn, 9).await.is_err(),
            "closed before its timeout"
        );
        let n = read(&mut conn, 5).await.expect("not closed once idle");
        assert_eq!(n.unwrap(), 0);
        assert_eq!(permits.available_permits(), 0);
        drop(conn);
        assert_eq!(permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn above_the_watermark_only_calls_that_need_memory_are_refused() {
        use tower::{Layer, Service, ServiceExt};
        let rss = Arc::new(AtomicU64::new(100));
        let r = rss.clone();
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
        let memory = MemoryWatermark {
            bytes: 1000,
            rss: Arc::new(move || r.load(Ordering::Relaxed)),
        };
        let mut svc = InFlightLayer::new(8, Some(memory)).layer(inner);
        let code = |resp: http::Response<String>| {
            Status::from_header_map(resp.headers()).map(|s| s.code())
        };
        let call = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        let search = "/shoal.v1.Points/Search";
        assert_eq!(
            code(svc.ready().await.unwrap().call(call(search)).await.unwrap()),
            None
        );
        rss.store(2000, Ordering::Relaxed);
        let refused = svc.ready().await.unwrap().call(call(search)).await.unwrap();
        let status = Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("--memory-watermark-bytes"));
        for path in [
            "/shoal.v1.Points/Delete",
            "/shoal.v1.Cluster/Status",
            "/shoal.v1.Collections/List",
            "/shoal.v1.Collections/Delete",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(
                code(svc.ready().await.unwrap().call(call(path)).await.unwrap()),
                None,
                "{path}"
            );
        }
        rss.store(999, Ordering::Relaxed);
        assert_eq!(
            code(svc.ready().await.unwrap().call(call(search)).await.unwrap()),
            None
        );
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
        let mut svc = InFlightLayer::new(1, None).layer(inner);
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
