//! # shoal-engine
//!
//! The database as the gRPC layer sees it, on one node: the collections, each split
//! into shards; writes validated by `shoal-core`, routed to shards by a stable hash of
//! the point id, and acknowledged only once durable; searches fanned out to every shard
//! as one parallel job on a dedicated rayon pool and merged into one top-k.
//!
//! Everything is synchronous and may block (fsync, index work): async callers run
//! writes on a blocking thread and searches on [`Engine::pool`].
//!
//! Errors are `shoal_core::Error`, the domain vocabulary that `shoal-server` maps to
//! gRPC statuses in one place.
//!
//! This crate must never validate by hand (it calls `shoal_core::validate`), touch the
//! storage engine directly (only through `shoal-storage`), or know wire types.
//! Replication slots in between this crate and `shoal-shard`.

mod engine;

pub use engine::{CollectionInfo, Engine, EngineOptions};
