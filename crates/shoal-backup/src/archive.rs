//! A backup as one tar stream (what clients download and upload): the manifest
//! first, then the shard files in the manifest's order. Unpacking accepts only the
//! paths this layout uses, as regular files, so an upload cannot write outside its
//! directory.

use std::io::{Read, Write};
use std::path::Path;

use crate::{BackupError, MANIFEST, Manifest, Result};

/// Writes the backup in `dir` to `out` as a tar stream.
pub fn pack(dir: &Path, out: impl Write) -> Result<()> {
    let text = std::fs::read(dir.join(MANIFEST)).map_err(BackupError::io(format!(
        "reading {}",
        dir.join(MANIFEST).display()
    )))?;
    let manifest = Manifest::parse(&text)?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let archive_err = |e: std::io::Error| BackupError::Archive(e.to_string());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, MANIFEST, &text[..])
        .map_err(archive_err)?;
    for s in manifest.collections.iter().flat_map(|c| &c.shards) {
        let mut f = std::fs::File::open(dir.join(&s.file))
            .map_err(|e| BackupError::corrupt(&s.file, format!("cannot open: {e}")))?;
        tar.append_file(&s.file, &mut f).map_err(archive_err)?;
    }
    tar.into_inner()
        .map_err(archive_err)?
        .flush()
        .map_err(archive_err)
}

/// Whether `path` is one this layout uses: the manifest or a shard file.
fn allowed(path: &str) -> bool {
    if path == MANIFEST {
        return true;
    }
    let parts: Vec<&str> = path.split('/').collect();
    matches!(parts.as_slice(), ["collections", c, f]
        if shoal_core::validate::collection_name(c).is_ok()
            && f.strip_prefix("shard-")
                .and_then(|r| r.strip_suffix(".points"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.len() <= 10))
}

/// Unpacks a tar stream written by [`pack`] into `dest` (an empty directory).
pub(crate) fn unpack(input: impl Read, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| BackupError::Archive(e.to_string()))?;
    let mut any = false;
    for entry in entries {
        let mut entry = entry.map_err(|e| BackupError::Archive(format!("{e} (truncated?)")))?;
        let path = entry
            .path()
            .map_err(|e| BackupError::Archive(e.to_string()))?
            .to_string_lossy()
            .to_string();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() || !allowed(&path) {
            return Err(BackupError::Archive(format!(
                "unexpected entry {:?}: a Shoal backup holds only {MANIFEST} and collections/<name>/shard-<n>.points",
                path.chars().take(128).collect::<String>()
            )));
        }
        let target = dest.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(BackupError::io(format!("creating {}", parent.display())))?;
        }
        let mut out = std::fs::File::create(&target)
            .map_err(BackupError::io(format!("creating {}", target.display())))?;
        let size = entry.header().size().unwrap_or(0);
        let copied = std::io::copy(&mut entry, &mut out)
            .map_err(|e| BackupError::Archive(format!("{path}: {e} (the archive ends early?)")))?;
        if copied != size {
            return Err(BackupError::Archive(format!(
                "{path}: the archive ends inside it ({copied} of {size} bytes): truncated"
            )));
        }
        any = true;
    }
    if !any {
        return Err(BackupError::Archive("the archive is empty".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_layouts_paths_are_allowed() {
        assert!(allowed("manifest.json"));
        assert!(allowed("collections/docs_1/shard-0.points"));
        assert!(!allowed("collections/../shard-0.points"));
        assert!(!allowed("/etc/passwd"));
        assert!(!allowed("collections/docs/shard-.points"));
        assert!(!allowed("collections/docs/shard-1.points/x"));
        assert!(!allowed("collections/do cs/shard-1.points"));
        assert!(!allowed("../manifest.json"));
    }
}
