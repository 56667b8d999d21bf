//! Search requests and results.

use serde::{Deserialize, Serialize};

use crate::{Filter, Payload, PointId};

/// One nearest-neighbour query, validated against its collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// Prepared like stored vectors (normalised for `COSINE`).
    pub vector: Vec<f32>,
    pub top_k: u32,
    /// Candidate list size of the graph search; `None` picks a default from `top_k`.
    pub ef: Option<u32>,
    pub filter: Option<Filter>,
    pub with_payload: bool,
    pub with_vector: bool,
}

impl SearchRequest {
    /// Default `ef` when none is given: generous enough for recall@10 >= 0.95 on SIFT.
    pub const DEFAULT_EF: u32 = 64;

    /// The `ef` to use: the requested one, at least `top_k`.
    pub fn effective_ef(&self) -> usize {
        self.ef.unwrap_or(Self::DEFAULT_EF).max(self.top_k) as usize
    }
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredPoint {
    pub id: PointId,
    /// See [`crate::Metric`] for what the score means per metric.
    pub score: f32,
    pub payload: Option<Payload>,
    pub vector: Option<Vec<f32>>,
}

/// A point as returned by `Get` and `Scroll`: payload and vector only when asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievedPoint {
    pub id: PointId,
    pub payload: Option<Payload>,
    pub vector: Option<Vec<f32>>,
}
