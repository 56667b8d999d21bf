//! # shoal-core
//!
//! The vocabulary every other Shoal crate speaks: collections, points, payload values,
//! filters, search requests, and the rules that make each of them valid.
//!
//! This crate owns *validation*. Everything that reaches a Raft log and a shard (a
//! [`Write`]) has passed through [`validate`] first, so a bad request is refused at
//! the edge with an [`Error`] that names the offending field, and can never poison
//! storage or crash replay.
//!
//! It must never do IO, spawn threads, or depend on async runtimes, storage engines or
//! wire formats: those live in the crates above it (`shoal-storage`, `shoal-proto`, …).

pub mod collection;
pub mod error;
pub mod filter;
pub mod limits;
pub mod point;
pub mod routing;
pub mod search;
pub mod validate;
pub mod vector;
pub mod write;

pub use collection::{CollectionConfig, HnswParams, Metric};
pub use error::{Error, Result};
pub use filter::{Condition, Filter};
pub use limits::Limits;
pub use point::{Payload, Point, PointId, Value};
pub use search::{RetrievedPoint, ScoredPoint, SearchRequest};
pub use write::Write;
