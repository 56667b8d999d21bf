//! Reading a backup: verified as a whole first, then read shard by shard, one frame
//! in memory at a time.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use shoal_core::Point;

use crate::write::hex;
use crate::{BackupError, MANIFEST, Manifest, Result, ShardEntry};

/// A backup whose manifest and files have been checked.
#[derive(Debug)]
pub struct Backup {
    dir: PathBuf,
    manifest: Manifest,
    /// Removed when dropped (an unpacked upload).
    temporary: bool,
}

impl Backup {
    /// Opens the backup in `dir` and verifies it: the manifest, then every shard
    /// file's presence, size and SHA-256. The error names the first bad file.
    pub fn open(dir: &Path) -> Result<Backup> {
        Self::open_as(dir, false)
    }

    pub(crate) fn open_as(dir: &Path, temporary: bool) -> Result<Backup> {
        // Owned from here on, so that a failed check of an upload removes it too.
        let mut backup = Backup {
            dir: dir.to_path_buf(),
            manifest: Manifest {
                format: String::new(),
                format_version: 0,
                shoal_version: String::new(),
                name: String::new(),
                created_unix_ms: 0,
                duration_ms: 0,
                collections: Vec::new(),
            },
            temporary,
        };
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::corrupt(
                    MANIFEST,
                    "missing (not a Shoal backup, or a truncated one)",
                ));
            }
            Err(e) => return Err(BackupError::io(format!("reading {}", path.display()))(e)),
        };
        backup.manifest = Manifest::parse(&text)?;
        for s in backup.manifest.collections.iter().flat_map(|c| &c.shards) {
            verify_file(&dir.join(&s.file), s)?;
        }
        Ok(backup)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The directory it is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The points of one shard, a frame at a time.
    pub fn points(&self, shard: &ShardEntry) -> Result<Frames> {
        let path = self.dir.join(&shard.file);
        let f = File::open(&path)
            .map_err(|e| BackupError::corrupt(&shard.file, format!("cannot open: {e}")))?;
        Ok(Frames {
            input: BufReader::with_capacity(1 << 20, f),
            file: shard.file.clone(),
            expected: shard.points,
            seen: 0,
            done: false,
        })
    }
}

impl Drop for Backup {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn verify_file(path: &Path, s: &ShardEntry) -> Result<()> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::corrupt(&s.file, "missing"));
        }
        Err(e) => return Err(BackupError::corrupt(&s.file, format!("cannot open: {e}"))),
    };
    let len = f
        .metadata()
        .map_err(BackupError::io(format!("reading {}", path.display())))?
        .len();
    if len != s.bytes {
        return Err(BackupError::corrupt(
            &s.file,
            format!("{len} bytes, the manifest says {} (truncated?)", s.bytes),
        ));
    }
    let mut hasher = Sha256::new();
    let mut input = BufReader::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .map_err(BackupError::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let got = hex(&hasher.finalize());
    if got != s.sha256 {
        return Err(BackupError::corrupt(
            &s.file,
            format!("SHA-256 {got}, the manifest says {}", s.sha256),
        ));
    }
    Ok(())
}

/// The frames of a shard file, each a `Vec<Point>`; checks the point count at the
/// end.
pub struct Frames {
    input: BufReader<File>,
    file: String,
    expected: u64,
    seen: u64,
    done: bool,
}

impl Frames {
    fn next_frame(&mut self) -> Result<Option<Vec<Point>>> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                if self.seen != self.expected {
                    return Err(BackupError::corrupt(
                        &self.file,
                        format!("{} points, the manifest says {}", self.seen, self.expected),
                    ));
                }
                return Ok(None);
            }
            Err(e) => return Err(BackupError::corrupt(&self.file, e.to_string())),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > crate::MAX_FRAME {
            return Err(BackupError::corrupt(
                &self.file,
                format!("a frame of {len} bytes"),
            ));
        }
        // Grown with the bytes read, never to a length a header merely claims.
        let mut frame = Vec::new();
        (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut frame)
            .map_err(|e| BackupError::corrupt(&self.file, format!("a frame ends early: {e}")))?;
        if frame.len() != len {
            return Err(BackupError::corrupt(
                &self.file,
                format!("a frame of {len} bytes ends after {}", frame.len()),
            ));
        }
        let points: Vec<Point> = postcard::from_bytes(&frame).map_err(|e| {
            BackupError::corrupt(&self.file, format!("a frame does not decode: {e}"))
        })?;
        self.seen += points.len() as u64;
        Ok(Some(points))
    }
}

impl Iterator for Frames {
    type Item = Result<Vec<Point>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_frame() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
