//! Request limits. The server fills these from its configuration; validation enforces
//! them with `RESOURCE_EXHAUSTED` (size limits) or `INVALID_ARGUMENT` (out-of-range
//! parameters).

/// Bounds on what one request may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest `dim` a collection may have.
    pub max_dim: u32,
    /// Largest `top_k` of a search.
    pub max_top_k: u32,
    /// Largest `ef` of a search.
    pub max_ef: u32,
    /// Most points in one `Upsert`, ids in one `Delete`/`Get`.
    pub max_batch_points: usize,
    /// Most queries in one `SearchBatch`.
    pub max_search_batch: usize,
    /// Most results one `SearchBatch` may ask for: the sum of its queries' `top_k`
    /// (what its reply and its merge hold in memory grows with it).
    pub max_batch_results: usize,
    /// Largest encoded payload of one point, in bytes.
    pub max_payload_bytes: usize,
    /// Largest `limit` of a `Scroll`.
    pub max_scroll_limit: u32,
    /// Most collections on a node.
    pub max_collections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_dim: 65_536,
            max_top_k: 10_000,
            max_ef: 10_000,
            max_batch_points: 10_000,
            max_search_batch: 1_024,
            max_batch_results: 100_000,
            max_payload_bytes: 64 * 1024,
            max_scroll_limit: 10_000,
            max_collections: 1_000,
        }
    }
}
