//! # shoal-datasets
//!
//! Vector data sets for tools, tests and benchmarks:
//! - [`vecs`]: the TEXMEX `.fvecs` / `.ivecs` files (SIFT, GIST, …);
//! - [`jsonl`]: JSON lines of points, one `{"id", "vector", "payload"}` object per line;
//! - [`synthetic`]: seeded uniform and clustered sets, identical for the same seed;
//! - [`truth`]: exact brute-force ground truth and recall.
//!
//! This crate reads and writes only the files it is pointed at. It must never be a
//! dependency of the server's request path: nothing here validates input the way
//! `shoal-core` does, and ground truth is brute force.

mod error;
pub mod jsonl;
pub mod synthetic;
pub mod truth;
pub mod vecs;

pub use error::DatasetError;
pub use jsonl::{JsonlPoint, read_jsonl};
pub use synthetic::{clustered, uniform};
pub use truth::{ground_truth, recall_at_k};
pub use vecs::{
    read_fvecs, read_fvecs_limit, read_ivecs, read_ivecs_limit, write_fvecs, write_ivecs,
};
