//! Coalescing of concurrent submissions into batches, generic over what is batched
//! ([`Coalescer`]); `search_coalesce` applies it to searches (`shoal serve
//! --search-coalesce-us`).
//!
//! What it owns: a queue per *group* of compatible submissions (for searches: same
//! collection, same read options), and the rule that turns queues into batches.
//!
//! The rule ("the first arrival runs if idle"):
//! - a search whose group has no batch in flight runs at once, alone, on the
//!   caller's task: a lone client never waits for anything;
//! - a search arriving while a batch of its group is in flight queues; the queue is
//!   sent as one batch as soon as the group's last batch in flight finishes, or the
//!   queue holds `max_batch` searches, or its oldest search has waited `window` —
//!   whichever comes first. No search waits in a queue longer than `window` (plus
//!   the wake-up of the clock thread), however long the batch ahead of it takes.
//!
//! A window of zero (or `max_batch` below 2) turns coalescing off: every search runs
//! alone, as before.
//!
//! It must never hold its lock across an `.await`, a rayon join or a batch: the lock
//! guards only queue bookkeeping and is taken by tokio tasks and the clock thread,
//! never by a search-pool job, so it cannot take part in the pool deadlock described
//! in ARCHITECTURE.md. It must never let one search fail another for a reason of its
//! own (each search is validated before it queues; only failures of the read itself,
//! shared by the whole group, reach every member), and never change a result: a
//! batch runs the same per-shard search and merge, per query, as a single search.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

/// How long the clock thread sleeps when no queue is waiting (it is woken earlier
/// whenever a queue starts).
const IDLE_TICK: Duration = Duration::from_millis(200);

/// When concurrent searches are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceOptions {
    /// Longest a queued search waits for its batch to be sent (zero: no coalescing).
    pub window: Duration,
    /// Largest batch; a queue this long is sent at once (below 2: no coalescing).
    pub max_batch: usize,
}

impl CoalesceOptions {
    /// No coalescing: every search runs alone.
    pub const DISABLED: CoalesceOptions = CoalesceOptions {
        window: Duration::ZERO,
        max_batch: 1,
    };

    /// Whether searches are coalesced at all.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero() && self.max_batch > 1
    }
}

impl Default for CoalesceOptions {
    /// 200 µs and 64 searches: a batch of 64 graph searches at ef 64 on 100k points
    /// takes milliseconds, so in practice batches are sent when the previous one
    /// finishes, and the window only caps the wait behind a long batch.
    fn default() -> Self {
        CoalesceOptions {
            window: Duration::from_micros(200),
            max_batch: 64,
        }
    }
}

/// What a batch returns: one result per query, in order.
pub(crate) type BatchFuture<R> = Pin<Box<dyn Future<Output = Vec<R>> + Send>>;
type Runner<K, Q, R> = Box<dyn Fn(K, Vec<Q>) -> BatchFuture<R> + Send + Sync>;

/// Counters of a coalescer since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Batches run, including searches that ran alone.
    pub batches: u64,
    /// Searches answered through batches.
    pub queries: u64,
    /// The largest batch so far.
    pub largest: usize,
}

struct Waiter<Q, R> {
    query: Q,
    reply: oneshot::Sender<R>,
}

struct Group<Q, R> {
    /// Batches of this group running now.
    in_flight: usize,
    queue: Vec<Waiter<Q, R>>,
    /// When the oldest queued search arrived.
    oldest: Option<Instant>,
}

impl<Q, R> Group<Q, R> {
    fn new() -> Self {
        Group {
            in_flight: 0,
            queue: Vec::new(),
            oldest: None,
        }
    }

    /// Takes the queue as a batch about to be sent.
    fn take_batch(&mut self) -> Vec<Waiter<Q, R>> {
        self.in_flight += 1;
        self.oldest = None;
        std::mem::take(&mut self.queue)
    }
}

struct State<K, Q, R> {
    groups: HashMap<K, Group<Q, R>>,
    /// When the clock thread, waiting, will wake next; `None` while it is not waiting
    /// (it looks at every queue before it waits again).
    clock_wake: Option<Instant>,
    closed: bool,
}

struct Shared<K, Q, R> {
    options: CoalesceOptions,
    runner: Runner<K, Q, R>,
    /// Where batches run; `None` (outside a runtime) only when coalescing is off.
    runtime: Option<tokio::runtime::Handle>,
    state: Mutex<State<K, Q, R>>,
    clock: Condvar,
    batches: AtomicU64,
    queries: AtomicU64,
    largest: AtomicUsize,
}

/// Marks a batch of `key` in flight; when dropped (the batch finished, or its caller
/// gave up on it), sends the group's queue if nothing else of the group is running.
struct InFlight<K: Hash + Eq + Clone + Send + 'static, Q: Send + 'static, R: Send + 'static> {
    shared: Arc<Shared<K, Q, R>>,
    key: Option<K>,
}

impl<K, Q, R> Drop for InFlight<K, Q, R>
where
    K: Hash + Eq + Clone + Send + 'static,
    Q: Send + 'static,
    R: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            Shared::finished(&self.shared, key);
        }
    }
}

impl<K, Q, R> Shared<K, Q, R>
where
    K: Hash + Eq + Clone + Send + 'static,
    Q: Send + 'static,
    R: Send + 'static,
{
    fn record(&self, n: usize) {
        metrics::histogram!("shoal_search_coalesced_batch_size").record(n as f64);
        self.batches.fetch_add(1, Relaxed);
        self.queries.fetch_add(n as u64, Relaxed);
        self.largest.fetch_max(n, Relaxed);
    }

    fn finished(this: &Arc<Self>, key: K) {
        let next = {
            let mut st = this.state.lock();
            let Some(g) = st.groups.get_mut(&key) else {
                return;
            };
            g.in_flight = g.in_flight.saturating_sub(1);
            if g.in_flight > 0 {
                None
            } else if g.queue.is_empty() {
                st.groups.remove(&key);
                None
            } else {
                Some(g.take_batch())
            }
        };
        if let Some(batch) = next {
            Self::spawn_batch(this, key, batch);
        }
    }

    /// Runs `batch` (already counted in flight) on a tokio task of its own, so no
    /// caller's cancellation can stop it.
    fn spawn_batch(this: &Arc<Self>, key: K, batch: Vec<Waiter<Q, R>>) {
        this.record(batch.len());
        let guard = InFlight {
            shared: this.clone(),
            key: Some(key.clone()),
        };
        let Some(runtime) = &this.runtime else {
            // Unreachable: without a runtime nothing is coalesced. Dropping the batch
            // answers its callers INTERNAL.
            return;
        };
        let shared = this.clone();
        runtime.spawn(async move {
            let _guard = guard;
            let (queries, replies): (Vec<Q>, Vec<oneshot::Sender<R>>) =
                batch.into_iter().map(|w| (w.query, w.reply)).unzip();
            let results = (shared.runner)(key, queries).await;
            // A runner that returned too few results drops the remaining senders:
            // those callers see their batch lost and answer INTERNAL.
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
        });
    }

    /// The clock thread: sends every queue whose oldest search has waited `window`,
    /// then sleeps until the next one is due (or a new queue starts).
    fn clock(weak: Weak<Self>) {
        loop {
            let Some(this) = weak.upgrade() else { return };
            let window = this.options.window;
            let mut due = Vec::new();
            {
                let mut st = this.state.lock();
                if st.closed {
                    return;
                }
                let now = Instant::now();
                let mut next = now + IDLE_TICK;
                for (key, g) in st.groups.iter_mut() {
                    // A window too long to add is never due (the flag is capped
                    // far below that; this only keeps the clock from panicking).
                    if let Some(at) = g.oldest.and_then(|since| since.checked_add(window)) {
                        if at <= now {
                            due.push((key.clone(), g.take_batch()));
                        } else {
                            next = next.min(at);
                        }
                    }
                }
                if due.is_empty() {
                    st.clock_wake = Some(next);
                    this.clock.wait_until(&mut st, next);
                    st.clock_wake = None;
                }
            }
            for (key, batch) in due {
                Self::spawn_batch(&this, key, batch);
            }
        }
    }
}

/// Batches concurrent submissions with equal keys (see the module docs). Generic over
/// what is batched, so the rule is tested apart from searches.
pub(crate) struct Coalescer<K, Q, R>
where
    K: Hash + Eq + Clone + Send + 'static,
    Q: Send + 'static,
    R: Send + 'static,
{
    shared: Arc<Shared<K, Q, R>>,
}

impl<K, Q, R> Coalescer<K, Q, R>
where
    K: Hash + Eq + Clone + Send + 'static,
    Q: Send + 'static,
    R: Send + 'static,
{
    /// A coalescer whose batches `runner` answers (one result per query, in order).
    /// Spawns its clock thread; outside a tokio runtime, or if the thread cannot be
    /// started, it does not coalesce.
    pub fn new(
        mut options: CoalesceOptions,
        runner: impl Fn(K, Vec<Q>) -> BatchFuture<R> + Send + Sync + 'static,
    ) -> Self {
        let runtime = tokio::runtime::Handle::try_current().ok();
        if runtime.is_none() {
            options = CoalesceOptions::DISABLED;
        }
        let shared = Arc::new(Shared {
            options,
            runner: Box::new(runner),
            runtime,
            state: Mutex::new(State {
                groups: HashMap::new(),
                clock_wake: None,
                closed: false,
            }),
            clock: Condvar::new(),
            batches: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            largest: AtomicUsize::new(0),
        });
        let mut me = Coalescer { shared };
        if me.shared.options.enabled() {
            let weak = Arc::downgrade(&me.shared);
            let spawned = std::thread::Builder::new()
                .name("shoal-coalesce".into())
                .spawn(move || Shared::clock(weak));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the coalescing clock; searches run alone");
                if let Some(shared) = Arc::get_mut(&mut me.shared) {
                    shared.options = CoalesceOptions::DISABLED;
                }
            }
        }
        me
    }

    /// The options in force.
    pub fn options(&self) -> CoalesceOptions {
        self.shared.options
    }

    /// Counters since start.
    pub fn stats(&self) -> CoalesceStats {
        CoalesceStats {
            batches: self.shared.batches.load(Relaxed),
            queries: self.shared.queries.load(Relaxed),
            largest: self.shared.largest.load(Relaxed),
        }
    }

    /// Answers `query` alone at once if nothing of its group is in flight, else in
    /// the group's next batch. `None` if its batch was lost (the runner panicked or
    /// answered too few queries).
    pub async fn submit(&self, key: K, query: Q) -> Option<R> {
        let shared = &self.shared;
        if !shared.options.enabled() {
            return (shared.runner)(key, vec![query]).await.pop();
        }
        let mut query = Some(query);
        let (rx, full) = {
            let mut st = shared.state.lock();
            let clock_wake = st.clock_wake;
            let g = st.groups.entry(key.clone()).or_insert_with(Group::new);
            if g.in_flight == 0 && g.queue.is_empty() {
                g.in_flight = 1;
                (None, None)
            } else {
                let (tx, rx) = oneshot::channel();
                if let Some(query) = query.take() {
                    g.queue.push(Waiter { query, reply: tx });
                }
                let full = if g.queue.len() >= shared.options.max_batch {
                    Some(g.take_batch())
                } else {
                    if g.queue.len() == 1 {
                        let now = Instant::now();
                        g.oldest = Some(now);
                        let due = now.checked_add(shared.options.window);
                        if clock_wake.is_some_and(|w| due.is_some_and(|d| d < w)) {
                            shared.clock.notify_one();
                        }
                    }
                    None
                };
                (Some(rx), full)
            }
        };
        if let Some(batch) = full {
            Shared::spawn_batch(shared, key.clone(), batch);
        }
        match (rx, query) {
            (Some(rx), _) => rx.await.ok(),
            (None, Some(query)) => {
                shared.record(1);
                let _guard = InFlight {
                    shared: shared.clone(),
                    key: Some(key.clone()),
                };
                (shared.runner)(key, vec![query]).await.pop()
            }
            (None, None) => None,
        }
    }

    #[cfg(test)]
    fn queued(&self, key: &K) -> usize {
        self.shared
            .state
            .lock()
            .groups
            .get(key)
            .map_or(0, |g| g.queue.len())
    }
}

impl<K, Q, R> Drop for Coalescer<K, Q, R>
where
    K: Hash + Eq + Clone + Send + 'static,
    Q: Send + 'static,
    R: Send + 'static,
{
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.clock.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;

    /// Batches as the test runner saw them.
    type Seen = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A coalescer over `u32` queries answered `q * 10`. A batch holding query 1
    /// first waits for a permit of `gate`, so a test holds that one batch in flight
    /// as long as it likes; other batches run freely.
    fn coalescer(
        options: CoalesceOptions,
        gate: Arc<Semaphore>,
    ) -> (Arc<Coalescer<u8, u32, u32>>, Seen) {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let c = Coalescer::new(options, move |_key: u8, batch: Vec<u32>| {
            let (gate, log) = (gate.clone(), log.clone());
            Box::pin(async move {
                log.lock().push(batch.clone());
                if batch.contains(&1) {
                    drop(gate.acquire().await);
                }
                batch.iter().map(|q| q * 10).collect()
            }) as BatchFuture<u32>
        });
        (Arc::new(c), seen)
    }

    fn options(window: Duration, max_batch: usize) -> CoalesceOptions {
        CoalesceOptions { window, max_batch }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Waits (at most a minute, polling) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..60_000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never saw {what}");
    }

    async fn until_queued(c: &Coalescer<u8, u32, u32>, n: usize) {
        until(&format!("{n} queued"), || c.queued(&0) >= n).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_search_runs_at_once_in_a_batch_of_one() {
        // With an hour-long window, a search that queued would hang the test.
        let (c, seen) = coalescer(options(HOUR, 64), Arc::new(Semaphore::new(1)));
        for q in 0..5 {
            assert_eq!(c.submit(0, q).await, Some(q * 10));
        }
        assert_eq!(
            *seen.lock(),
            vec![vec![0], vec![1], vec![2], vec![3], vec![4]]
        );
        assert_eq!(
            c.stats(),
            CoalesceStats {
                batches: 5,
                queries: 5,
                largest: 1
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_arriving_during_a_batch_form_the_next_batch() {
        let gate = Arc::new(Semaphore::new(0));
        let (c, seen) = coalescer(options(HOUR, 64), gate.clone());
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.submit(0, 1).await }
        });
        until("the first batch", || !seen.lock().is_empty()).await;
        let rest: Vec<_> = (2..=4)
            .map(|q| {
                let c = c.clone();
                tokio::spawn(async move { c.submit(0, q).await })
            })
            .collect();
        until_queued(&c, 3).await;
        // Another group is not held back by this one's batch.
        assert_eq!(c.submit(7, 9).await, Some(90));
        assert_eq!(c.queued(&0), 3);
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(10));
        for (q, t) in (2..=4).zip(rest) {
            assert_eq!(t.await.unwrap(), Some(q * 10));
        }
        let mut batches = seen.lock().clone();
        batches.iter_mut().for_each(|b| b.sort());
        assert_eq!(batches, vec![vec![1], vec![9], vec![2, 3, 4]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_sent_without_waiting() {
        let gate = Arc::new(Semaphore::new(0));
        let (c, seen) = coalescer(options(HOUR, 2), gate.clone());
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.submit(0, 1).await }
        });
        until("the first batch", || !seen.lock().is_empty()).await;
        let rest: Vec<_> = (2..=5)
            .map(|q| {
                let c = c.clone();
                tokio::spawn(async move { c.submit(0, q).await })
            })
            .collect();
        // Two full batches run and answer while the first is still held.
        for (q, t) in (2..=5).zip(rest) {
            assert_eq!(t.await.unwrap(), Some(q * 10));
        }
        assert!(!first.is_finished());
        assert!(seen.lock()[1..].iter().all(|b| b.len() == 2));
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(10));
        assert_eq!(c.stats().largest, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_window_sends_a_queue_stuck_behind_a_batch() {
        // The first batch never finishes; the queued search is sent by the clock.
        let gate = Arc::new(Semaphore::new(0));
        let (c, seen) = coalescer(options(Duration::from_micros(500), 64), gate.clone());
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.submit(0, 1).await }
        });
        until("the first batch", || !seen.lock().is_empty()).await;
        let second = tokio::spawn({
            let c = c.clone();
            async move { c.submit(0, 2).await }
        });
        assert_eq!(second.await.unwrap(), Some(20));
        assert!(!first.is_finished());
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_search_does_not_wedge_its_group() {
        let gate = Arc::new(Semaphore::new(0));
        let (c, seen) = coalescer(options(HOUR, 64), gate.clone());
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.submit(0, 1).await }
        });
        until("the first batch", || !seen.lock().is_empty()).await;
        let second = tokio::spawn({
            let c = c.clone();
            async move { c.submit(0, 2).await }
        });
        until_queued(&c, 1).await;
        // The client of the running search goes away: its batch is abandoned, and the
        // queue behind it is sent.
        first.abort();
        assert_eq!(second.await.unwrap(), Some(20));
        assert_eq!(c.submit(0, 3).await, Some(30));
        assert_eq!(c.stats().largest, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn off_runs_every_search_alone() {
        let gate = Arc::new(Semaphore::new(1));
        for off in [options(Duration::ZERO, 64), options(HOUR, 1)] {
            let (c, seen) = coalescer(off, gate.clone());
            assert!(!c.options().enabled());
            let all: Vec<_> = (0..20)
                .map(|q| {
                    let c = c.clone();
                    tokio::spawn(async move { c.submit(0, q).await })
                })
                .collect();
            for (q, t) in (0..20).zip(all) {
                assert_eq!(t.await.unwrap(), Some(q * 10));
            }
            assert!(seen.lock().iter().all(|b| b.len() == 1));
        }
    }
}
