//! One shard: the [`Shard`] type, its options and counters. Its work is split by job:
//!
//! - `state.rs`: the derived state (index, id map, records, payload index) and the
//!   writer's bookkeeping;
//! - `open.rs`: opening, from a checkpoint reconciled with storage or from storage;
//! - `write.rs`: applying writes at a sequence number, snapshots and their install;
//! - `split.rs`: a split's children, copied ahead of the seal or split off in it;
//! - `read.rs`: searches and their strategy, gets, scrolls, counts;
//! - `background.rs`: checkpoint and rebuild threads.
//!
//! Requests are validated before they are proposed (`shoal-core`); a shard only
//! re-checks what it stores against its collection's dimension and metric and the
//! fixed bounds every replica shares ([`Shard::check`]): it refuses such a write before
//! storing anything, and opening quarantines a stored record that fails the check (or
//! does not decode) instead of failing — one bad record never costs the shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use shoal_core::{CollectionConfig, Point, Write};
use shoal_index::Backend;
use shoal_storage::ShardStore;

mod background;
mod open;
mod read;
mod split;
mod state;
mod write;

pub use background::{BackgroundWork, background_work};
pub use split::SplitCopy;
use state::{SplitTrack, State, Writer};
pub use write::ShardSnapshot;

/// The thread pools a shard's work runs on (usually every shard of a process shares
/// one set).
///
/// Rayon workers take new jobs from outside only once their own queues are empty, so
/// a whole-graph build on the pool that searches and writes use would hold every one
/// of them for the build's seconds: on a two-core node, a split's children
/// compacting their graphs timed out the node's writes (BENCHMARKS.md
/// "Resharding"). Builds therefore run on pools of their own, whose threads the
/// operating system schedules beside the foreground's; compactions, which nothing
/// waits for, on one whose threads the builder of the pools may give a lower priority.
#[derive(Clone)]
pub struct Pools {
    /// Work a request waits for: searches and the index inserts of writes.
    pub foreground: Arc<rayon::ThreadPool>,
    /// Graph builds something waits for: opening (without a checkpoint, or
    /// reconciling one, a split's children included) and a snapshot install.
    pub build: Arc<rayon::ThreadPool>,
    /// Graph builds nothing waits for: the rebuild once tombstones pile up.
    pub compaction: Arc<rayon::ThreadPool>,
}

impl From<Arc<rayon::ThreadPool>> for Pools {
    /// One pool for both kinds of work (tests, tools).
    fn from(pool: Arc<rayon::ThreadPool>) -> Pools {
        Pools {
            foreground: pool.clone(),
            build: pool.clone(),
            compaction: pool,
        }
    }
}

/// Tuning knobs of a shard.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Index implementation.
    pub backend: Backend,
    /// Shards with at most this many live points are searched exactly.
    pub exact_threshold: usize,
    /// Filtered searches whose filter matches at most this fraction of the shard scan
    /// the matches exactly instead of searching the graph.
    pub filter_exact_fraction: f64,
    /// Rebuild the index once tombstones exceed this fraction of live points...
    pub rebuild_tombstone_ratio: f64,
    /// ...and number at least this many.
    pub rebuild_min_tombstones: usize,
    /// Save an index checkpoint in the background once the points written since the
    /// last one reach this many, or a tenth of the shard if that is more (0: only on
    /// demand). A restart re-inserts at most that many points per shard.
    pub checkpoint_every: usize,
    /// A shard with points written since its last checkpoint and no write for this
    /// long saves one when asked ([`Shard::checkpoint_if_idle`]), so a node killed
    /// after a burst of writes restarts as fast as after a graceful stop. Ignored when
    /// `checkpoint_every` is 0.
    pub checkpoint_idle: Duration,
    /// Most distinct payload key paths (`a`, `a.b`, …) a shard indexes: each costs
    /// memory for as long as a point holds it, so an upsert that would add keys
    /// past this is refused before it is proposed ([`Shard::admit`]). 0: no limit.
    pub max_payload_keys: usize,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            backend: Backend::default(),
            // Measured with the hnsw_rs backend (BENCHMARKS in the README): an exact scan
            // of 10k 128-d vectors takes ~160 µs, a graph search at ef 64 ~340 µs.
            // Native HNSW at ef 64 beats an exact scan well below this size; below it
            // the scan is about as fast and exact.
            exact_threshold: 1_000,
            filter_exact_fraction: 0.05,
            rebuild_tombstone_ratio: 0.5,
            rebuild_min_tombstones: 1_000,
            checkpoint_every: 10_000,
            checkpoint_idle: Duration::from_secs(5),
            // ~1.3 KB of index per key path (issue 17: 1M paths took 1.3 GB), so at
            // most ~13 MB a shard; far more keys than a payload schema has.
            max_payload_keys: 10_000,
        }
    }
}

/// Counters describing a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardStats {
    pub points: u64,
    pub tombstones: u64,
    pub applied_seq: u64,
    /// Stored records moved aside because they were invalid (see the module doc).
    pub quarantined: u64,
}

/// `t` in milliseconds since the Unix epoch (0 before it).
fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A shard's parts, shared by its clones and its background threads.
struct Inner {
    config: Arc<CollectionConfig>,
    /// Where index inserts run in parallel (see [`Pools`]). Locks are never held by
    /// jobs on these pools across a rayon join, so a pool thread can never wait on a
    /// lock its own stack holds (see [`Shard::apply_at`]).
    pools: Pools,
    shard_no: u32,
    store: ShardStore,
    options: ShardOptions,
    writer: Mutex<Writer>,
    /// Taken inside `writer` when both are (see [`SplitTrack`]).
    split: Mutex<SplitTrack>,
    /// `Writer::applied_seq` and whether a rebuild is logging writes, mirrored for
    /// readers that must never wait for the writer lock, which a checkpoint, a
    /// snapshot or a snapshot install holds for seconds ([`Shard::stats`],
    /// [`Shard::is_rebuilding`]: async callers, whose runtime threads would stall).
    applied: AtomicU64,
    rebuilding: AtomicBool,
    state: RwLock<State>,
    /// Records quarantined in storage (counted when the shard opened), plus points
    /// left out of snapshots installed since.
    quarantined: AtomicU64,
    /// When the newest index checkpoint was saved, in milliseconds since the Unix
    /// epoch (0: none yet). Read by [`Shard::gauges`] without the writer lock.
    checkpointed_ms: AtomicU64,
}

/// What monitoring reads of a shard ([`Shard::gauges`]): never waits for the writer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardGauges {
    pub points: u64,
    pub tombstones: u64,
    /// Estimated bytes of the vector index ([`shoal_index::VectorIndex::memory_bytes`]).
    pub index_bytes: u64,
    /// Seconds since the newest index checkpoint was saved; `None` without one.
    pub checkpoint_age_secs: Option<f64>,
}

/// One shard. Cheap to clone; all clones are the same shard.
#[derive(Clone)]
pub struct Shard {
    inner: Arc<Inner>,
}

impl Shard {
    /// The shard's number within its collection.
    pub fn shard_no(&self) -> u32 {
        self.inner.shard_no
    }

    /// The configuration of the shard's collection.
    pub fn config(&self) -> &CollectionConfig {
        &self.inner.config
    }

    /// Live points, tombstones and applied sequence number. Never waits for the
    /// writer lock.
    pub fn stats(&self) -> ShardStats {
        let applied_seq = self.inner.applied.load(Ordering::Acquire);
        let st = self.inner.state.read();
        ShardStats {
            points: st.ids.len() as u64,
            tombstones: st.index.tombstones() as u64,
            applied_seq,
            quarantined: self.inner.quarantined.load(Ordering::Relaxed),
        }
    }

    /// Counts for monitoring, read under the state's read lock only: a checkpoint or
    /// a write in progress does not hold them up.
    pub fn gauges(&self) -> ShardGauges {
        let (points, tombstones, index_bytes) = {
            let st = self.inner.state.read();
            (
                st.ids.len() as u64,
                st.index.tombstones() as u64,
                st.index.memory_bytes() as u64,
            )
        };
        let saved = self.inner.checkpointed_ms.load(Ordering::Relaxed);
        let checkpoint_age_secs = (saved > 0).then(|| {
            let now = unix_ms(std::time::SystemTime::now());
            now.saturating_sub(saved) as f64 / 1000.0
        });
        ShardGauges {
            points,
            tombstones,
            index_bytes,
            checkpoint_age_secs,
        }
    }

    /// Whether the shard would store `write`: every point has the collection's
    /// dimension, finite components in range and a well-formed payload within the fixed
    /// bounds (`shoal_core::validate::stored_write`). Deterministic: every replica of
    /// the shard decides the same way, whatever its flags.
    pub fn check(&self, write: &Write) -> Result<(), shoal_core::Error> {
        shoal_core::validate::stored_write(&self.inner.config, write)
    }

    /// [`Shard::check`] for one point, as a reason.
    fn check_point(config: &CollectionConfig, p: &Point) -> Result<(), String> {
        shoal_core::validate::stored_point(config, "point", p).map_err(|e| e.to_string())
    }
}
