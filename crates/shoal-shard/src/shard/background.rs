//! A shard's background work: index checkpoints (by count of writes, when idle, or on
//! demand) and index rebuilds once tombstones pile up, each on a thread of its own.
//!
//! Neither may change what the shard answers. A checkpoint reads the state under the
//! writer lock; a rebuild builds a new index from a copy of the live points without
//! any lock, then replays the writes logged meanwhile — in rounds outside the writer
//! lock while many are logged, the last few under it — and swaps it in, unless a
//! snapshot install replaced the shard in between.
//!
//! Rebuilds run one at a time per process ([`REBUILDS`]): many shards due at once (a
//! split's children, each half tombstones) would otherwise build their graphs
//! together and starve the node's Raft and searches. A waiting rebuild keeps logging
//! the shard's writes, as a running one does.
//!
//! How many of each run in the process right now is [`background_work`] (for
//! monitoring); each finished checkpoint and rebuild is counted and timed through the
//! `metrics` facade (`shoal_checkpoints_total`, `shoal_checkpoint_seconds`,
//! `shoal_index_rebuilds_total`, `shoal_index_rebuild_seconds`).

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use shoal_core::{Point, Write};
use shoal_index::InternalId;

use super::Shard;
use super::state::{State, Writer, allocate, insert_vectors};
use crate::ShardError;
use crate::checkpoint;

/// Held by the rebuild that is building (see the module doc).
static REBUILDS: Mutex<()> = Mutex::new(());

/// Checkpoints being saved and rebuilds building in this process, now.
static CHECKPOINTS_RUNNING: AtomicUsize = AtomicUsize::new(0);
static REBUILDS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Counts itself in one of the counters above while it lives.
struct Running(&'static AtomicUsize);

impl Running {
    fn start(counter: &'static AtomicUsize) -> Running {
        counter.fetch_add(1, Ordering::Relaxed);
        Running(counter)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Background work running in this process now (every shard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackgroundWork {
    /// Index checkpoints being saved.
    pub checkpoints: usize,
    /// Index rebuilds building (at most one: they run one at a time).
    pub rebuilds: usize,
}

/// How many checkpoints and rebuilds run now, over every shard of the process.
pub fn background_work() -> BackgroundWork {
    BackgroundWork {
        checkpoints: CHECKPOINTS_RUNNING.load(Ordering::Relaxed),
        rebuilds: REBUILDS_RUNNING.load(Ordering::Relaxed),
    }
}

impl Shard {
    /// Saves an index checkpoint now (blocking writes to this shard meanwhile), so
    /// the next open skips rebuilding the graph. Skipped when nothing was written since
    /// the last one.
    pub fn checkpoint(&self) -> Result<(), ShardError> {
        let mut w = self.inner.writer.lock();
        if w.since_checkpoint == 0 && self.has_checkpoint() {
            return Ok(());
        }
        self.checkpoint_locked(&mut w)
    }

    /// Whether the newest checkpoint is recent enough for a split to start its
    /// children from it ([`Shard::split_off`] re-inserts what was written since): at
    /// most `max(2_000, live / 20)` points written since, or saved in the last 10 s;
    /// never with as many points written since as the shard holds (a checkpoint of a
    /// graph a rebuild replaced counts as every point written since).
    pub(super) fn checkpoint_fresh(&self, w: &Writer) -> bool {
        let live = self.inner.state.read().ids.len();
        let saved = self.inner.checkpointed_ms.load(Ordering::Relaxed);
        let age_ms = super::unix_ms(std::time::SystemTime::now()).saturating_sub(saved);
        let since = w.since_checkpoint;
        self.has_checkpoint()
            && since < live.max(1)
            && (since <= (live / 20).max(2_000) || (saved > 0 && age_ms < 10_000))
    }

    /// Readies this shard for [`Shard::split_off`] with a short pause: true if its
    /// newest checkpoint is fresh (see above); else starts one in the background
    /// (unless one runs) and returns false, as it does while the writer lock is held:
    /// it never waits for that lock (async callers).
    pub fn ready_to_split(&self) -> bool {
        let Some(mut w) = self.inner.writer.try_lock() else {
            return false;
        };
        if self.checkpoint_fresh(&w) {
            return true;
        }
        if !w.checkpointing {
            self.start_checkpoint(&mut w);
        }
        false
    }

    fn has_checkpoint(&self) -> bool {
        std::fs::read_dir(self.inner.store.derived_dir()).is_ok_and(|mut d| d.next().is_some())
    }

    fn checkpoint_locked(&self, w: &mut Writer) -> Result<(), ShardError> {
        let _running = Running::start(&CHECKPOINTS_RUNNING);
        let started = std::time::Instant::now();
        let st = self.inner.state.read();
        let ids = checkpoint::IdMap {
            next_internal: w.next_internal,
            ids: st.ids.iter().map(|(p, i)| (*p, *i)).collect(),
        };
        let path = checkpoint::write(
            self.inner.store.derived_dir(),
            w.applied_seq,
            &*st.index,
            &ids,
        )
        .map_err(ShardError::Checkpoint)?;
        w.since_checkpoint = 0;
        self.inner.checkpointed_ms.store(
            super::unix_ms(std::time::SystemTime::now()),
            Ordering::Relaxed,
        );
        metrics::counter!("shoal_checkpoints_total").increment(1);
        metrics::histogram!("shoal_checkpoint_seconds").record(started.elapsed());
        tracing::info!(
            checkpoint = %path.display(),
            points = ids.ids.len(),
            secs = started.elapsed().as_secs_f64(),
            "index checkpoint saved"
        );
        Ok(())
    }

    pub(super) fn maybe_start_checkpoint(&self, w: &mut Writer) {
        let every = self.inner.options.checkpoint_every;
        if every == 0 || w.checkpointing || w.since_checkpoint == 0 {
            return;
        }
        let live = self.inner.state.read().ids.len();
        if w.since_checkpoint < every.max(live / 10) {
            return;
        }
        self.start_checkpoint(w);
    }

    /// Starts a background checkpoint if points were written since the last one, the
    /// last write is at least
    /// [`ShardOptions::checkpoint_idle`](super::ShardOptions::checkpoint_idle) old and none is
    /// running. Never waits: a shard busy writing is not idle. Returns whether one
    /// started.
    pub fn checkpoint_if_idle(&self) -> bool {
        let Some(mut w) = self.inner.writer.try_lock() else {
            return false;
        };
        let opts = &self.inner.options;
        if opts.checkpoint_every == 0
            || w.checkpointing
            || w.since_checkpoint == 0
            || w.last_write.elapsed() < opts.checkpoint_idle
        {
            return false;
        }
        self.start_checkpoint(&mut w);
        w.checkpointing
    }

    fn start_checkpoint(&self, w: &mut Writer) {
        w.checkpointing = true;
        let shard = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("checkpoint-{}-{}", self.inner.config.name, self.inner.shard_no))
            .spawn(move || {
                let mut w = shard.inner.writer.lock();
                if let Err(e) = shard.checkpoint_locked(&mut w) {
                    tracing::warn!(error = %e, "index checkpoint failed; will retry after more writes");
                    w.since_checkpoint = 0;
                }
                w.checkpointing = false;
            });
        if spawned.is_err() {
            w.checkpointing = false;
        }
    }

    /// True while a background rebuild is running.
    pub fn is_rebuilding(&self) -> bool {
        self.inner.rebuilding.load(Ordering::Acquire)
    }

    pub(super) fn maybe_start_rebuild(&self, w: &mut Writer) {
        if w.rebuild_log.is_some() {
            return;
        }
        let opts = &self.inner.options;
        let snapshot: Vec<Point> = {
            let st = self.inner.state.read();
            let tombstones = st.index.tombstones();
            if tombstones < opts.rebuild_min_tombstones
                || (tombstones as f64) <= opts.rebuild_tombstone_ratio * st.ids.len() as f64
            {
                return;
            }
            st.points().collect()
        };
        w.rebuild_log = Some(Vec::new());
        self.inner.rebuilding.store(true, Ordering::Release);
        let shard = self.clone();
        let generation = w.generation;
        let spawned = std::thread::Builder::new()
            .name(format!(
                "rebuild-{}-{}",
                self.inner.config.name, self.inner.shard_no
            ))
            .spawn(move || shard.rebuild(snapshot, generation));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start index rebuild");
            w.rebuild_log = None;
            self.inner.rebuilding.store(false, Ordering::Release);
        }
    }

    /// Builds a new index from `snapshot`, replays the writes logged since, and swaps
    /// it in.
    fn rebuild(&self, snapshot: Vec<Point>, generation: u64) {
        let inner = &*self.inner;
        let _one_at_a_time = REBUILDS.lock();
        let _running = Running::start(&REBUILDS_RUNNING);
        let started = std::time::Instant::now();
        let n = snapshot.len();
        let result = State::build(
            &inner.config,
            inner.options.backend,
            &inner.pools.compaction,
            snapshot,
        )
        .and_then(|mut state| {
            let mut next = state.records.len() as InternalId;
            // Catch up with the writes logged meanwhile outside the writer lock, a
            // round at a time (the shard's writes go on and keep logging), so that
            // only the last few are replayed while its writes wait.
            for _ in 0..CATCH_UP_ROUNDS {
                let logged = {
                    let mut w = inner.writer.lock();
                    if w.generation != generation {
                        // A snapshot replaced the shard meanwhile; this build is of
                        // old data.
                        return Ok(());
                    }
                    match w.rebuild_log.as_mut() {
                        Some(log) if weight(log) > LAST_ROUND => std::mem::take(log),
                        _ => break,
                    }
                };
                replay(&inner.pools.compaction, &mut state, &mut next, logged)?;
            }
            let mut w = inner.writer.lock();
            if w.generation != generation {
                return Ok(());
            }
            let rest = w.rebuild_log.take().unwrap_or_default();
            // Under the writer lock, which the shard's writes wait for: on the
            // foreground pool.
            replay(&inner.pools.foreground, &mut state, &mut next, rest)?;
            let live = state.ids.len();
            *inner.state.write() = state;
            w.next_internal = next;
            // Only now: whoever sees the rebuild over sees the new index.
            inner.rebuilding.store(false, Ordering::Release);
            // The saved checkpoint (if any) is of the old graph: as stale as if
            // every point was written since (the next write saves one).
            w.since_checkpoint = w.since_checkpoint.max(live).max(1);
            Ok(())
        });
        match result {
            Ok(()) => {
                metrics::counter!("shoal_index_rebuilds_total").increment(1);
                metrics::histogram!("shoal_index_rebuild_seconds").record(started.elapsed());
                tracing::info!(
                    collection = %inner.config.name,
                    shard = inner.shard_no,
                    points = n,
                    secs = started.elapsed().as_secs_f64(),
                    "index rebuilt"
                )
            }
            Err(e) => {
                inner.writer.lock().rebuild_log = None;
                inner.rebuilding.store(false, Ordering::Release);
                tracing::error!(collection = %inner.config.name, shard = inner.shard_no, error = %e, "index rebuild failed; keeping the old index");
            }
        }
    }
}

/// At most this many rounds of a rebuild's catch-up run outside the writer lock.
const CATCH_UP_ROUNDS: usize = 8;

/// A rebuild replays at most this many logged points and ids under the writer lock,
/// unless its catch-up rounds ran out first.
const LAST_ROUND: usize = 256;

/// Points and ids in `log`.
fn weight(log: &[Write]) -> usize {
    log.iter()
        .map(|w| match w {
            Write::Upsert(points) => points.len(),
            Write::Delete(ids) => ids.len(),
        })
        .sum()
}

/// Applies `writes` to `state`, a rebuilt index not yet swapped in, its inserts in
/// parallel on `pool`; `next` is its next free internal id.
fn replay(
    pool: &rayon::ThreadPool,
    state: &mut State,
    next: &mut InternalId,
    writes: Vec<Write>,
) -> Result<(), ShardError> {
    for write in writes {
        match write {
            Write::Upsert(points) => {
                let base = allocate(next, points.len())?;
                insert_vectors(pool, &*state.index, base, &points)?;
                state.publish_upserts(base, points.into_iter().map(|p| (p.id, p.payload)));
            }
            Write::Delete(ids) => state.publish_deletes(&ids),
        }
    }
    Ok(())
}
