//! The backend-neutral interface every index implements.

use std::path::Path;

use shoal_core::Metric;

use crate::IndexError;

/// Dense id of a vector inside one index, assigned by the shard. An id is never
/// reused within one index: an updated point gets a fresh id.
pub type InternalId = u32;

/// One result: an internal id and its distance to the query (smaller is nearer; see
/// the crate docs for the distance of each metric).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: InternalId,
    pub distance: f32,
}

/// A predicate over internal ids, evaluated *during* search so that filtered searches
/// return only accepted ids. Closures `Fn(InternalId) -> bool + Sync` implement it.
pub trait IdFilter: Sync {
    fn accept(&self, id: InternalId) -> bool;
}

impl<F: Fn(InternalId) -> bool + Sync> IdFilter for F {
    fn accept(&self, id: InternalId) -> bool {
        self(id)
    }
}

/// What an index is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    pub dim: usize,
    pub metric: Metric,
    /// HNSW links per node.
    pub m: usize,
    pub ef_construction: usize,
    /// Expected number of vectors (a hint for pre-allocation, not a limit).
    pub capacity_hint: usize,
}

/// Which implementation backs an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The `hnsw_rs` crate (kept selectable for comparison). Only with the cargo
    /// feature `hnsw-rs` (on by default).
    #[cfg(feature = "hnsw-rs")]
    HnswRs,
    /// Shoal's own HNSW ([`crate::NativeIndex`]): the default.
    #[default]
    Native,
}

/// A vector index over one shard's live vectors.
///
/// All methods take `&self` and are safe to call concurrently: searches run while
/// other threads insert or delete. Vectors handed in are already validated and
/// prepared by `shoal-core` (right `dim`, finite, unit length for `COSINE`).
pub trait VectorIndex: Send + Sync {
    /// The parameters the index was built with.
    fn params(&self) -> &IndexParams;

    /// Adds vectors under fresh ids. Large batches are inserted in parallel on the
    /// calling thread's rayon pool. Errors: a wrong dimension, or an id already used.
    fn insert(&self, items: &[(InternalId, &[f32])]) -> Result<(), IndexError>;

    /// Removes `id` from all future results. Returns false if the id is unknown or was
    /// already deleted.
    fn delete(&self, id: InternalId) -> bool;

    /// Approximate k nearest live neighbours accepted by `filter`, nearest first.
    /// `ef` (at least `k`) is the candidate list size of the graph search.
    fn search(&self, query: &[f32], k: usize, ef: usize, filter: Option<&dyn IdFilter>)
    -> Vec<Hit>;

    /// Exact k nearest live neighbours accepted by `filter`, nearest first (ties broken
    /// by lower id).
    fn exact_search(&self, query: &[f32], k: usize, filter: Option<&dyn IdFilter>) -> Vec<Hit>;

    /// Exact k nearest among the given ids (unknown or deleted ids are skipped),
    /// nearest first.
    fn exact_search_among(&self, query: &[f32], k: usize, ids: &[InternalId]) -> Vec<Hit>;

    /// A copy of a live vector.
    fn vector(&self, id: InternalId) -> Option<Vec<f32>>;

    /// Number of live (searchable) vectors.
    fn len(&self) -> usize;

    /// True when no vector is live.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of deleted vectors that still occupy memory or graph slots. The shard
    /// rebuilds the index when this grows too large relative to [`VectorIndex::len`].
    fn tombstones(&self) -> usize;

    /// Estimated memory the index holds, in bytes: every slot (live or tombstone) with
    /// its vector, its layer-0 neighbour list (`2 m` ids), its share of the upper
    /// layers' lists and a fixed per-node overhead. An estimate for monitoring, not an
    /// accounting of allocations.
    fn memory_bytes(&self) -> usize {
        let p = self.params();
        let per_node = p.dim * 4 + (2 * p.m + p.m / 2) * 4 + 16;
        (self.len() + self.tombstones()) * per_node
    }

    /// Writes the whole index (vectors, graph, deletions) into the directory `dir`,
    /// which exists and is empty. [`load`](crate::load) restores it exactly.
    fn dump(&self, dir: &Path) -> Result<(), IndexError>;
}
