//! Collections: their configuration and its defaults.

use serde::{Deserialize, Serialize};

/// How two vectors are compared.
///
/// Scores returned by search: `L2` gives the Euclidean distance (smaller is nearer);
/// `COSINE` gives the cosine similarity in `[-1, 1]` and `DOT` the inner product
/// (larger is nearer). Vectors of a `COSINE` collection are normalised to unit length
/// when they are written, and are returned normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    Cosine,
    Dot,
    L2,
}

impl Metric {
    /// Turns an index distance (smaller is nearer, see `shoal-index`) into the score
    /// users see.
    pub fn score_from_distance(self, distance: f32) -> f32 {
        match self {
            Metric::L2 => distance.max(0.0).sqrt(),
            Metric::Cosine => 1.0 - distance,
            Metric::Dot => -distance,
        }
    }

    /// True when a larger score means nearer.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::Cosine => "COSINE",
            Metric::Dot => "DOT",
            Metric::L2 => "L2",
        })
    }
}

impl std::str::FromStr for Metric {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "COSINE" => Ok(Metric::Cosine),
            "DOT" => Ok(Metric::Dot),
            "L2" | "EUCLID" | "EUCLIDEAN" => Ok(Metric::L2),
            other => Err(crate::Error::invalid(
                "metric",
                format!("unknown metric {other:?}; expected COSINE, DOT or L2"),
            )),
        }
    }
}

/// HNSW graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node on the upper layers (twice this on layer 0).
    pub m: u32,
    /// Candidate list size while building.
    pub ef_construction: u32,
}

impl HnswParams {
    pub const DEFAULT_M: u32 = 16;
    pub const DEFAULT_EF_CONSTRUCTION: u32 = 200;
    pub const MAX_M: u32 = 128;
    pub const MAX_EF_CONSTRUCTION: u32 = 4096;
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: Self::DEFAULT_M,
            ef_construction: Self::DEFAULT_EF_CONSTRUCTION,
        }
    }
}

/// Everything that defines a collection. Immutable once created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    pub name: String,
    pub dim: u32,
    pub metric: Metric,
    /// Number of shards points are spread over by a stable hash of their id.
    pub shard_count: u32,
    /// Copies of each shard (stored now; used by the replicated cluster).
    pub replication_factor: u32,
    pub hnsw: HnswParams,
}

impl CollectionConfig {
    pub const DEFAULT_SHARD_COUNT: u32 = 1;
    pub const DEFAULT_REPLICATION_FACTOR: u32 = 1;
    pub const MAX_SHARD_COUNT: u32 = 256;
    pub const MAX_REPLICATION_FACTOR: u32 = 7;
    pub const MAX_NAME_LEN: usize = 64;
}
