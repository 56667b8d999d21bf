//! Writing a backup: shard files streamed frame by frame (one frame in memory at a
//! time), then the manifest, then the rename that makes it visible.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use shoal_core::{CollectionConfig, Point};

use crate::{
    BackupError, BackupStore, CollectionEntry, FORMAT, FORMAT_VERSION, MANIFEST, Manifest, Result,
    ShardEntry,
};

/// A backup being written. Dropped without [`BackupWriter::finish`], it removes what
/// it wrote.
pub struct BackupWriter {
    name: String,
    partial: PathBuf,
    target: PathBuf,
    started: Instant,
    created_unix_ms: u64,
    collections: Vec<CollectionEntry>,
    done: bool,
}

impl BackupWriter {
    /// Starts backup `name` in `store`; refuses a name already taken.
    pub fn begin(store: &BackupStore, name: &str) -> Result<BackupWriter> {
        crate::validate_name(name)?;
        let target = store.path(name);
        if target.exists() {
            return Err(BackupError::Exists(name.to_string()));
        }
        let partial = store.dir().join(format!("{name}.partial"));
        if partial.exists() {
            // Another writer of the same name is at work, or one died: only one
            // at a time (the store removes stale ones when it opens).
            return Err(BackupError::Exists(name.to_string()));
        }
        std::fs::create_dir_all(partial.join("collections"))
            .map_err(BackupError::io(format!("creating {}", partial.display())))?;
        Ok(BackupWriter {
            name: name.to_string(),
            partial,
            target,
            started: Instant::now(),
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            collections: Vec::new(),
            done: false,
        })
    }

    /// Adds a collection; its shards follow with [`BackupWriter::shard`].
    pub fn collection(&mut self, config: CollectionConfig, routing_version: u64) -> Result<()> {
        let dir = self.partial.join("collections").join(&config.name);
        std::fs::create_dir_all(&dir)
            .map_err(BackupError::io(format!("creating {}", dir.display())))?;
        self.collections.push(CollectionEntry {
            config,
            routing_version,
            shards: Vec::new(),
        });
        Ok(())
    }

    /// Opens the file of a shard of the collection added last.
    pub fn shard(&self, shard: u32, hash_first: u64, hash_last: u64) -> Result<ShardFile> {
        let c = self
            .collections
            .last()
            .ok_or_else(|| BackupError::corrupt(MANIFEST, "a shard before any collection"))?;
        let file = crate::shard_file_name(&c.config.name, shard);
        let path = self.partial.join(&file);
        let out =
            File::create(&path).map_err(BackupError::io(format!("creating {}", path.display())))?;
        Ok(ShardFile {
            out: BufWriter::with_capacity(1 << 20, out),
            hasher: Sha256::new(),
            path,
            entry: ShardEntry {
                shard,
                hash_first,
                hash_last,
                applied_index: 0,
                points: 0,
                file,
                bytes: 0,
                sha256: String::new(),
            },
        })
    }

    /// Records a finished shard file (of the collection added last).
    pub fn add(&mut self, entry: ShardEntry) -> Result<()> {
        let c = self
            .collections
            .last_mut()
            .ok_or_else(|| BackupError::corrupt(MANIFEST, "a shard before any collection"))?;
        c.shards.push(entry);
        Ok(())
    }

    /// Writes the manifest and makes the backup visible under its name.
    pub fn finish(mut self, shoal_version: &str) -> Result<Manifest> {
        let manifest = Manifest {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            shoal_version: shoal_version.to_string(),
            name: self.name.clone(),
            created_unix_ms: self.created_unix_ms,
            duration_ms: self.started.elapsed().as_millis() as u64,
            collections: std::mem::take(&mut self.collections),
        };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BackupError::corrupt(MANIFEST, e.to_string()))?;
        let path = self.partial.join(MANIFEST);
        let mut f =
            File::create(&path).map_err(BackupError::io(format!("creating {}", path.display())))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(BackupError::io(format!("writing {}", path.display())))?;
        for dir in [self.partial.join("collections"), self.partial.clone()]
            .into_iter()
            .chain(
                manifest
                    .collections
                    .iter()
                    .map(|c| self.partial.join("collections").join(&c.config.name)),
            )
        {
            sync_dir(&dir)?;
        }
        if self.target.exists() {
            return Err(BackupError::Exists(self.name.clone()));
        }
        std::fs::rename(&self.partial, &self.target).map_err(BackupError::io(format!(
            "renaming {}",
            self.partial.display()
        )))?;
        if let Some(parent) = self.target.parent() {
            sync_dir(parent)?;
        }
        self.done = true;
        Ok(manifest)
    }
}

impl Drop for BackupWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.partial);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BackupError::io(format!("syncing {}", dir.display())))
}

/// One shard's file being written.
pub struct ShardFile {
    out: BufWriter<File>,
    hasher: Sha256,
    path: PathBuf,
    entry: ShardEntry,
}

impl ShardFile {
    /// Appends a frame of points (in id order, continuing the previous frame's).
    pub fn write(&mut self, points: &[Point]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let frame = postcard::to_stdvec(points)
            .map_err(|e| BackupError::corrupt(&self.entry.file, e.to_string()))?;
        if frame.len() > crate::MAX_FRAME {
            return Err(BackupError::corrupt(
                &self.entry.file,
                format!("a frame of {} bytes", frame.len()),
            ));
        }
        let len = (frame.len() as u32).to_le_bytes();
        for part in [&len[..], &frame[..]] {
            self.hasher.update(part);
            self.out
                .write_all(part)
                .map_err(BackupError::io(format!("writing {}", self.path.display())))?;
        }
        self.entry.bytes += (len.len() + frame.len()) as u64;
        self.entry.points += points.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs the file; returns its manifest entry, taken at log index
    /// `applied_index`.
    pub fn finish(self, applied_index: u64) -> Result<ShardEntry> {
        let ShardFile {
            out,
            hasher,
            path,
            mut entry,
        } = self;
        let f = out
            .into_inner()
            .map_err(|e| BackupError::io(format!("writing {}", path.display()))(e.into_error()))?;
        f.sync_all()
            .map_err(BackupError::io(format!("syncing {}", path.display())))?;
        entry.applied_index = applied_index;
        entry.sha256 = hex(&hasher.finalize());
        Ok(entry)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
