//! # shoal-index
//!
//! The in-memory vector index of one shard. It knows vectors and dense internal ids,
//! nothing else: point ids, payloads and storage live in `shoal-shard` above it, which
//! maps point ids to [`InternalId`]s and passes filters down as an [`IdFilter`].
//!
//! One backend-neutral trait, [`VectorIndex`], with backends behind it:
//! - `HnswRsIndex` (cargo feature `hnsw-rs`, on by default): the `hnsw_rs` crate. It
//!   cannot delete, so a delete (or the replaced version of an updated point) is a
//!   *tombstone*: still in the graph, skipped by searches. The shard rebuilds the
//!   index once tombstones pile up. Without the feature, [`Backend::HnswRs`] does not
//!   exist and [`load`] refuses its dumps as unsupported.
//! - [`NativeIndex`]: Shoal's own HNSW (`native/`): vectors stored once in aligned
//!   chunks, lock-free reads of the graph, levels drawn from a hash of the id (so
//!   replicas inserting the same ids build the same levels), deletions and filters
//!   checked during traversal, reusable per-thread visited sets.
//! - exact scan ([`VectorIndex::exact_search`]): brute force over live vectors, used
//!   for small shards and very selective filters, and as the test oracle.
//!
//! Distances: every backend returns a *distance*, smaller is nearer: squared L2 for
//! `L2`, `1 - dot` for `COSINE` (vectors arrive normalised), `-dot` for `DOT`.
//! [`shoal_core::Metric::score_from_distance`] turns it into the user's score.
//!
//! Dumps: [`VectorIndex::dump`] writes an index into a directory and [`load`] restores
//! it exactly. A dump is a set of files plus a manifest (`index.meta`) naming the
//! format version, backend, parameters and the checksum of every file; [`load`]
//! verifies all of it before parsing anything.
//!
//! This crate must never do IO other than writing and reading the dump directory it
//! is handed, never spawn threads of its own (parallel work runs on the caller's
//! rayon pool), and nothing above it may name a backend's types beyond choosing a
//! [`Backend`].

mod api;
// The vector arena only the hnsw_rs backend uses.
#[cfg(feature = "hnsw-rs")]
mod arena;
pub mod distance;
mod error;
pub mod exact;
#[cfg(feature = "hnsw-rs")]
mod hnsw_rs_backend;
mod meta;
mod native;

use std::path::Path;

pub use api::{Backend, Hit, IdFilter, IndexParams, InternalId, VectorIndex};
pub use error::IndexError;
#[cfg(feature = "hnsw-rs")]
pub use hnsw_rs_backend::HnswRsIndex;
pub use native::NativeIndex;

/// A new, empty index.
pub fn new_index(backend: Backend, params: IndexParams) -> Box<dyn VectorIndex> {
    match backend {
        #[cfg(feature = "hnsw-rs")]
        Backend::HnswRs => Box::new(HnswRsIndex::new(params)),
        Backend::Native => Box::new(NativeIndex::new(params)),
    }
}

/// Restores an index from a directory written by [`VectorIndex::dump`], whatever its
/// backend. Fails with [`IndexError::Corrupt`] if any file is missing, damaged, or was
/// written by another format version or a machine of another endianness or word size.
pub fn load(dir: &Path) -> Result<Box<dyn VectorIndex>, IndexError> {
    let meta = meta::read(dir)?;
    match meta.backend {
        #[cfg(feature = "hnsw-rs")]
        Backend::HnswRs => Ok(Box::new(HnswRsIndex::load(dir, &meta)?)),
        Backend::Native => Ok(Box::new(NativeIndex::load(dir, &meta)?)),
    }
}
