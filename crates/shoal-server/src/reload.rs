//! Noticing that configuration files changed, so that TLS certificates, the API-keys
//! file and JWT key files are re-read without a restart.
//!
//! A [`Watch`] remembers each file's modification time, length and inode (a file
//! replaced by a rename has a new inode even when its time and length are the same).
//! It only says whether files changed; what to reload, and keeping the previous
//! configuration when the new one is unusable, is its owner's business. It never reads
//! the files' contents.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// What identifies a version of a file; `None` when it cannot be read.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// A set of files and the versions of them last seen.
#[derive(Debug)]
pub struct Watch {
    paths: Vec<PathBuf>,
    seen: Mutex<Vec<Stamp>>,
}

impl Watch {
    /// Watches `paths`, taking their current versions as seen (call before reading
    /// them, so that a change made while they are read is noticed next time).
    pub fn new(paths: Vec<PathBuf>) -> Watch {
        let seen = paths.iter().map(|p| stamp(p)).collect();
        Watch {
            paths,
            seen: Mutex::new(seen),
        }
    }

    /// True if any file changed since the last call (or since [`Watch::new`]); the
    /// new versions are then taken as seen.
    pub fn changed(&self) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_or_replaced_file_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "one").unwrap();
        let w = Watch::new(vec![a.clone()]);
        assert!(!w.changed());
        std::fs::write(&a, "two!").unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        // Replaced by a rename, same length.
        let b = dir.path().join("b");
        std::fs::write(&b, "tw0!").unwrap();
        std::fs::rename(&b, &a).unwrap();
        assert!(w.changed());
        std::fs::remove_file(&a).unwrap();
        assert!(w.changed());
        assert!(!w.changed());
    }
}
