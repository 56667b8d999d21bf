//! The manifest: what a backup holds, as JSON (`manifest.json`).

use serde::{Deserialize, Serialize};
use shoal_core::CollectionConfig;

use crate::{BackupError, Result};

/// The manifest's `format` field.
pub const FORMAT: &str = "shoal-backup";
/// The newest layout this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name inside a backup.
pub const MANIFEST: &str = "manifest.json";

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub format_version: u32,
    /// The version of the Shoal that wrote it.
    pub shoal_version: String,
    pub name: String,
    /// When it was started, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// How long writing it took.
    pub duration_ms: u64,
    pub collections: Vec<CollectionEntry>,
}

/// One collection of a backup: the metadata needed to create it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionEntry {
    pub config: CollectionConfig,
    /// The collection's routing version (bumped by every split) when it was copied.
    pub routing_version: u64,
    /// Its shards, in hash order: their ranges cover the whole hash space.
    pub shards: Vec<ShardEntry>,
}

/// One shard's copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub shard: u32,
    /// The id hashes it holds, both ends inclusive.
    pub hash_first: u64,
    pub hash_last: u64,
    /// The shard's Raft log index the copy was taken at (every write committed at or
    /// before it is in the copy, none after).
    pub applied_index: u64,
    pub points: u64,
    /// Its file's path inside the backup.
    pub file: String,
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

impl Manifest {
    /// Points in all collections.
    pub fn points(&self) -> u64 {
        self.collections.iter().map(CollectionEntry::points).sum()
    }

    /// Bytes of all shard files.
    pub fn bytes(&self) -> u64 {
        self.collections
            .iter()
            .flat_map(|c| &c.shards)
            .map(|s| s.bytes)
            .sum()
    }

    /// The collection named `name`.
    pub fn collection(&self, name: &str) -> Option<&CollectionEntry> {
        self.collections.iter().find(|c| c.config.name == name)
    }

    /// Parses and checks a manifest's text: the format, the version, and that every
    /// file it names is where this layout puts it (so nothing outside the backup's
    /// directory is ever opened).
    pub fn parse(text: &[u8]) -> Result<Manifest> {
        let head: serde_json::Value = serde_json::from_slice(text)
            .map_err(|e| BackupError::corrupt(crate::MANIFEST, e.to_string()))?;
        if head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(BackupError::Unsupported(format!(
                "{} does not say format \"{FORMAT}\"",
                crate::MANIFEST
            )));
        }
        match head.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v >= 1 && v <= FORMAT_VERSION as u64 => {}
            v => {
                return Err(BackupError::Unsupported(format!(
                    "format_version {v:?}; this Shoal reads 1 to {FORMAT_VERSION}"
                )));
            }
        }
        let m: Manifest = serde_json::from_value(head)
            .map_err(|e| BackupError::corrupt(crate::MANIFEST, e.to_string()))?;
        for c in &m.collections {
            shoal_core::validate::collection_name(&c.config.name).map_err(|e| {
                BackupError::corrupt(crate::MANIFEST, format!("collection name: {e}"))
            })?;
            let mut names = std::collections::BTreeSet::new();
            for s in &c.shards {
                let want = crate::shard_file_name(&c.config.name, s.shard);
                if s.file != want {
                    return Err(BackupError::corrupt(
                        crate::MANIFEST,
                        format!(
                            "shard {} of {:?} names file {:?}",
                            s.shard, c.config.name, s.file
                        ),
                    ));
                }
                if !names.insert(s.shard) {
                    return Err(BackupError::corrupt(
                        crate::MANIFEST,
                        format!("shard {} of {:?} listed twice", s.shard, c.config.name),
                    ));
                }
            }
        }
        Ok(m)
    }
}

impl CollectionEntry {
    /// Points in all its shards.
    pub fn points(&self) -> u64 {
        self.shards.iter().map(|s| s.points).sum()
    }
}
