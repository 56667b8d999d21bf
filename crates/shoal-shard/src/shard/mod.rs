//! One shard: the [`Shard`] type, its options and counters. Its work is split by job:
//!
//! - `state.rs`: the derived state (index, id map, records, payload index) and the
//!   writer's bookkeeping;
//! - `open.rs`: opening, from a checkpoint reconciled with storage or from storage;
//! - `write.rs`: applying writes at a sequence number, snapshots and their install;
//! - `read.rs`: searches and their strategy, gets, scrolls, counts;
//! - `background.rs`: checkpoint and rebuild threads.
//!
//! Requests are validated before they are proposed (`shoal-core`); a shard only
//! re-checks what it stores against its collection's dimension and metric and the
//! fixed bounds every replica shares ([`Shard::check`]): it refuses such a write before
//! storing anything, and opening quarantines a stored record that fails the check (or
//! does not decode) instead of failing — one bad record never costs the shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use shoal_core::{CollectionConfig, Point, Write};
use shoal_index::Backend;
use shoal_storage::ShardStore;

mod background;
mod open;
mod read;
mod state;
mod write;

use state::{State, Writer};
pub use write::ShardSnapshot;

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

/// A shard's parts, shared by its clones and its background threads.
struct Inner {
    config: Arc<CollectionConfig>,
    /// Where index inserts run in parallel. Locks are never held by jobs on this pool
    /// across a rayon join, so a pool thread can never wait on a lock its own stack
    /// holds (see [`Shard::apply_at`]).
    pool: Arc<rayon::ThreadPool>,
    shard_no: u32,
    store: ShardStore,
    options: ShardOptions,
    writer: Mutex<Writer>,
    state: RwLock<State>,
    /// Records quarantined in storage (counted when the shard opened), plus points
    /// left out of snapshots installed since.
    quarantined: AtomicU64,
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

    /// Live points, tombstones and applied sequence number.
    pub fn stats(&self) -> ShardStats {
        let applied_seq = self.inner.writer.lock().applied_seq;
        let st = self.inner.state.read();
        ShardStats {
            points: st.ids.len() as u64,
            tombstones: st.index.tombstones() as u64,
            applied_seq,
            quarantined: self.inner.quarantined.load(Ordering::Relaxed),
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
