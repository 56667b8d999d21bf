//! # shoal-shard
//!
//! One shard of a collection: the shard's points, durable in `shoal-storage`, and the
//! in-memory state derived from them — the vector index (`shoal-index`), the map from
//! point ids to the index's internal ids, the payloads, and the payload index that
//! answers filters.
//!
//! A [`Shard`] applies *validated* writes ([`shoal_core::Write`]; it never validates:
//! `shoal-core` did that before the write was proposed) and answers searches, gets,
//! scrolls and counts. Every write reaches it from its Raft group's state machine
//! (`shoal-raft`), which applies each committed entry with [`Shard::apply_at`] at the
//! entry's log index; reads come from the cluster layer, on the node's search pool or
//! the calling task.
//!
//! ## Versions and tombstones
//! Every version of a point gets a fresh internal id; the replaced or deleted version
//! is deleted from the index (a tombstone for backends that cannot delete). When
//! tombstones exceed [`ShardOptions::rebuild_tombstone_ratio`] of the live points, a
//! background thread rebuilds the index from the live points with dense ids and swaps
//! it in. Writes that arrive during the rebuild are logged and replayed onto the new
//! index before the swap, so neither searches nor writes wait for the rebuild.
//!
//! ## Checkpoints and restart
//! After [`ShardOptions::checkpoint_every`] points have been written since the last
//! checkpoint, a background thread saves the index and the id map (see
//! `checkpoint.rs`); [`Shard::checkpoint`] does it on demand (the server calls it on
//! shutdown). [`Shard::open`] loads the newest checkpoint and reconciles it with the
//! stored points, re-inserting only what changed since, instead of rebuilding the
//! graph from scratch.
//!
//! ## Search strategy
//! - shards with fewer live points than [`ShardOptions::exact_threshold`]: exact scan;
//! - filtered searches: the filter is answered from the [`PayloadIndex`] as a bitmap of
//!   the matching internal ids (bitmap and / or / and-not, never a pass over every
//!   payload); when few points match (at most [`ShardOptions::filter_exact_fraction`]
//!   of the shard) the matches are scanned exactly; otherwise the graph is searched
//!   with membership in the bitmap checked during traversal, falling back to an exact
//!   scan of the matches if the graph found fewer than `top_k`. A filtered search
//!   therefore returns `top_k` results whenever that many points match. Counts and
//!   scrolls with a filter use the same bitmap.
//!
//! ## Payload index
//! Derived like the vector index: built from the stored points on open (or a
//! checkpoint's reconciliation), updated with every record the shard publishes or
//! retires, under the same state lock, and replaced with the state by a rebuild or a
//! snapshot install. It is never checkpointed.
//!
//! ## Test support
//! With the cargo feature `testing` (enabled by the crates that test with shards, in
//! their `[dev-dependencies]`), the module `testing` opens shards in a directory,
//! writes to them without a Raft log, and holds the proptest strategies the shard's
//! property tests share.
//!
//! This crate must never decode wire formats, read configuration, or fsync on its own
//! schedule: durability is requested from `shoal-storage` per write.

mod checkpoint;
mod error;
pub mod payload_index;
mod shard;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::ShardError;
pub use payload_index::PayloadIndex;
pub use shard::{
    BackgroundWork, Pools, Shard, ShardGauges, ShardOptions, ShardSnapshot, ShardStats, SplitCopy,
    background_work,
};
