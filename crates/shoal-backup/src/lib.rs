//! Shoal's backup format, and nothing else: how a backup is laid out on disk, written,
//! verified, read back, listed, deleted, and packed into (or unpacked from) the tar
//! stream that clients download and upload.
//!
//! A backup is a directory:
//!
//! ```text
//! <name>/manifest.json                      what is in it (see [`Manifest`])
//! <name>/collections/<collection>/shard-<id>.points
//! ```
//!
//! A shard file is a sequence of frames, each a little-endian `u32` length and a
//! postcard-encoded `Vec<Point>` (points in id order). The manifest records, per
//! collection, its configuration and routing version, and per shard its hash range,
//! the Raft log index its copy was taken at, its point count, and its file's size and
//! SHA-256 (so `sha256sum` can check a downloaded, untarred backup too).
//!
//! **Atomicity.** A backup is written under `<name>.partial` and renamed to `<name>`
//! only after every file and the manifest are fsynced, so a listed backup is always
//! whole; a crash leaves a `.partial` directory that [`BackupStore::open`] removes.
//!
//! **Verification before use.** [`Backup::open`] checks the manifest's format and
//! version, every file's presence, size and checksum before anything is read from
//! it, and names the first bad file in its error. A restore therefore never starts
//! from a corrupted or truncated backup.
//!
//! This crate must never talk to the network or to a cluster: it reads and writes
//! files, and the caller decides where points come from and go to.

mod archive;
mod error;
mod manifest;
mod read;
mod store;
mod write;

pub use archive::pack;
pub use error::BackupError;
pub use manifest::{CollectionEntry, FORMAT, FORMAT_VERSION, MANIFEST, Manifest, ShardEntry};
pub use read::{Backup, Frames};
pub use store::{BackupStore, validate_name};
pub use write::{BackupWriter, ShardFile};

/// This crate's result type.
pub type Result<T, E = BackupError> = std::result::Result<T, E>;

/// A frame larger than this is corrupt (a writer keeps frames far smaller).
pub const MAX_FRAME: usize = 256 << 20;

/// The path of a shard's file inside a backup.
pub fn shard_file_name(collection: &str, shard: u32) -> String {
    format!("collections/{collection}/shard-{shard}.points")
}

#[cfg(test)]
mod tests;
