//! # shoal-storage
//!
//! The only crate that knows the storage engine. Everything Shoal persists goes
//! through here: the catalogue of collections ([`Store`]) and every shard's points
//! ([`ShardStore`]), in one fjall database per node.
//!
//! ## Layout on disk
//! `<data dir>/db/` is the fjall database; `<data dir>/index/<shard>/` holds files a
//! shard derives from its points (see [`ShardStore::derived_dir`]). In the database:
//! - keyspace `meta`: `collection/<name>` → [`CollectionRecord`], and the counter
//!   `next_collection_id`;
//! - keyspace `raft`: every Raft group's log entries, vote and log pointers, keyed by
//!   group id ([`RaftLog`], under `shoal-raft`'s log store);
//! - one keyspace per shard, named `c<collection id>-s<shard>`: `p<point id key>` →
//!   the point's vector and payload; `m/applied` → the sequence number of the last
//!   write batch applied to the shard (its Raft log index + 1); `m/meta` → what the
//!   shard's state machine stored with that batch.
//!
//! Collection ids are never reused, so a collection deleted and created again under the
//! same name can never see the old one's points.
//!
//! ## Durability
//! A write batch is atomic (fjall write batch across the shard's points and its applied
//! counter) and is made durable by [`Store::sync`]/[`ShardStore::sync`], which fsyncs the
//! journal. Syncs are *group commits*: a caller waiting for its batch to be durable
//! shares one fsync with every batch committed before that fsync started (see
//! [`sync::GroupSync`]). Callers must not acknowledge a write before `sync` returns:
//! a client's write is acknowledged once a majority synced the log entry holding it;
//! the shard batches applying it need no sync of their own (the log is replayed).
//!
//! ## Failures
//! A failed write (a full disk, an IO error) poisons the engine: it takes no more
//! writes until the node restarts. The first such failure is recorded ([`Fault`],
//! module `fault`) and every later write error carries it
//! ([`StorageError::Fault`]); [`Store::fault`] tells the layers above, and
//! [`Store::has_room`] whether the data directory could take writes again.
//!
//! This crate must never interpret vectors or payloads beyond encoding them, and never
//! touch the index.

mod error;
mod fault;
mod raft_log;
mod store;
pub mod sync;

pub use error::StorageError;
pub use fault::{Fault, ROOM_BYTES};
pub use raft_log::RaftLog;
pub use store::{
    CollectionRecord, DiskUsage, Quarantined, ShardStore, Store, SyncCallback, Ticket, WriteOp,
};
