//! The directory a node keeps its backups in: list, look up, delete, and receive
//! uploads.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Backup, BackupError, MANIFEST, Manifest, Result};

/// Longest backup name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a backup name: 1 to 128 of `A-Z a-z 0-9 _ -` (a directory name anywhere).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: String| BackupError::InvalidName {
        name: name.chars().take(64).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it must not be empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!(
            "{} bytes; at most {MAX_NAME_LEN} allowed",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(bad(format!(
            "it contains {c:?}; only A-Z a-z 0-9 _ - are allowed"
        )));
    }
    Ok(())
}

/// A node's backup directory.
#[derive(Debug)]
pub struct BackupStore {
    dir: PathBuf,
    uploads: AtomicU64,
}

const UPLOAD_PREFIX: &str = ".upload-";

impl BackupStore {
    /// Opens (creating) the directory, and removes what writers and uploads that
    /// died left behind.
    pub fn open(dir: &Path) -> Result<BackupStore> {
        std::fs::create_dir_all(dir)
            .map_err(BackupError::io(format!("creating {}", dir.display())))?;
        let entries = std::fs::read_dir(dir)
            .map_err(BackupError::io(format!("reading {}", dir.display())))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".partial") || name.starts_with(UPLOAD_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(BackupStore {
            dir: dir.to_path_buf(),
            uploads: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where backup `name` is (whether or not it exists).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every complete backup's manifest, oldest first. A directory whose manifest
    /// does not parse is skipped (it is not a backup this node wrote).
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(BackupError::io(format!("reading {}", self.dir.display())))?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if validate_name(&name).is_err() {
                continue;
            }
            if let Ok(m) = self.get(&name) {
                out.push(m);
            }
        }
        out.sort_by(|a, b| (a.created_unix_ms, &a.name).cmp(&(b.created_unix_ms, &b.name)));
        Ok(out)
    }

    /// The manifest of backup `name` (its files not verified).
    pub fn get(&self, name: &str) -> Result<Manifest> {
        validate_name(name)?;
        let path = self.path(name).join(MANIFEST);
        match std::fs::read(&path) {
            Ok(text) => Manifest::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(BackupError::NotFound(name.to_string()))
            }
            Err(e) => Err(BackupError::io(format!("reading {}", path.display()))(e)),
        }
    }

    /// Opens backup `name`, verified (see [`Backup::open`]).
    pub fn open_backup(&self, name: &str) -> Result<Backup> {
        self.get(name)?;
        Backup::open(&self.path(name))
    }

    /// Deletes backup `name`.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.get(name)?;
        // Renamed first, so that no one lists or opens a half-deleted backup.
        let doomed = self.dir.join(format!("{name}.partial"));
        let _ = std::fs::remove_dir_all(&doomed);
        std::fs::rename(self.path(name), &doomed)
            .map_err(BackupError::io(format!("deleting {name}")))?;
        std::fs::remove_dir_all(&doomed).map_err(BackupError::io(format!("deleting {name}")))
    }

    /// Unpacks an uploaded tar stream (see [`crate::pack`]) into a temporary
    /// directory of the store and verifies it. The returned backup removes the
    /// directory when dropped; so does a failure here.
    pub fn receive(&self, input: impl Read) -> Result<Backup> {
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .dir
            .join(format!("{UPLOAD_PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(BackupError::io(format!("creating {}", dir.display())))?;
        if let Err(e) = crate::archive::unpack(input, &dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Backup::open_as(&dir, true)
    }
}
