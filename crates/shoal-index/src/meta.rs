//! The manifest of an index dump, `index.meta`: a few `key value` lines saying which
//! format, machine, backend and parameters wrote the dump, and the length and xxh3
//! checksum of every other file in it.
//!
//! It is written last (through a temporary file and a rename), so a dump without it
//! is incomplete; and [`read`] checks every listed file before any backend parses
//! one, so a backend's loader only ever sees bytes it wrote itself. That matters for
//! `hnsw_rs`, whose loader panics or exits the process on malformed input.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use shoal_core::Metric;
use xxhash_rust::xxh3::Xxh3;

use crate::{Backend, IndexError, IndexParams};

pub(crate) const META_FILE: &str = "index.meta";
const HEADER: &str = "shoal-index-dump 1";

/// What a dump's manifest says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Meta {
    pub backend: Backend,
    pub params: IndexParams,
    /// Names of the files the backend wrote, all verified by [`read`].
    pub files: Vec<String>,
}

impl Meta {
    pub fn has_file(&self, name: &str) -> bool {
        self.files.iter().any(|f| f == name)
    }
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        #[cfg(feature = "hnsw-rs")]
        Backend::HnswRs => "hnsw_rs",
        Backend::Native => "native",
    }
}

fn endian() -> &'static str {
    if cfg!(target_endian = "little") {
        "little"
    } else {
        "big"
    }
}

/// Length and xxh3-64 of a file.
fn checksum(path: &Path) -> Result<(u64, u64), IndexError> {
    let file = File::open(path).map_err(|e| IndexError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| IndexError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.digest()))
}

/// Flushes a file written by someone else (a backend's writer) to stable storage.
pub(crate) fn sync_file(path: &Path) -> Result<(), IndexError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| IndexError::io(path, e))
}

/// Writes the manifest for the files already in `dir` (which must be synced).
pub(crate) fn write(dir: &Path, meta: &Meta) -> Result<(), IndexError> {
    let p = &meta.params;
    let mut text = format!(
        "{HEADER}\nendian {}\npointer_width {}\nbackend {}\ndim {}\nmetric {}\nm {}\nef_construction {}\ncapacity_hint {}\n",
        endian(),
        usize::BITS,
        backend_name(meta.backend),
        p.dim,
        p.metric,
        p.m,
        p.ef_construction,
        p.capacity_hint,
    );
    for name in &meta.files {
        let (len, hash) = checksum(&dir.join(name))?;
        text.push_str(&format!("file {name} {len} {hash:016x}\n"));
    }
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let path = dir.join(META_FILE);
    let mut f = File::create(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| IndexError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| IndexError::io(&path, e))?;
    // Make the rename itself durable.
    sync_file(dir)
}

/// Reads and checks the manifest of `dir`, and verifies every file it lists.
pub(crate) fn read(dir: &Path) -> Result<Meta, IndexError> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| IndexError::io(&path, e))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(IndexError::corrupt(format!(
            "{}: not a dump of this version (expected first line {HEADER:?})",
            path.display()
        )));
    }
    let mut fields = std::collections::HashMap::new();
    let mut files = Vec::new();
    for line in lines {
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| IndexError::corrupt(format!("{META_FILE}: malformed line {line:?}")))?;
        if key == "file" {
            files.push(value.to_string());
        } else if fields.insert(key, value).is_some() {
            return Err(IndexError::corrupt(format!(
                "{META_FILE}: {key} given twice"
            )));
        }
    }
    let mut take = |key: &str| {
        fields
            .remove(key)
            .ok_or_else(|| IndexError::corrupt(format!("{META_FILE}: missing {key}")))
    };
    let expect = |key: &str, got: &str, want: &str| {
        if got == want {
            Ok(())
        } else {
            Err(IndexError::corrupt(format!(
                "written with {key} {got}, this machine has {want}"
            )))
        }
    };
    expect("endian", take("endian")?, endian())?;
    expect(
        "pointer_width",
        take("pointer_width")?,
        &usize::BITS.to_string(),
    )?;
    let backend = match take("backend")? {
        #[cfg(feature = "hnsw-rs")]
        "hnsw_rs" => Backend::HnswRs,
        #[cfg(not(feature = "hnsw-rs"))]
        "hnsw_rs" => {
            return Err(IndexError::Unsupported(
                "index backend \"hnsw_rs\": this build lacks the cargo feature `hnsw-rs`".into(),
            ));
        }
        "native" => Backend::Native,
        other => return Err(IndexError::Unsupported(format!("index backend {other:?}"))),
    };
    let mut number = |key: &str| -> Result<usize, IndexError> {
        let v = take(key)?;
        v.parse()
            .map_err(|_| IndexError::corrupt(format!("{META_FILE}: {key} {v:?} is not a number")))
    };
    let dim = number("dim")?;
    let m = number("m")?;
    let ef_construction = number("ef_construction")?;
    let capacity_hint = number("capacity_hint")?;
    let metric_text = take("metric")?;
    let metric: Metric = metric_text
        .parse()
        .map_err(|_| IndexError::corrupt(format!("{META_FILE}: unknown metric {metric_text:?}")))?;
    if let Some(key) = fields.keys().next() {
        return Err(IndexError::corrupt(format!(
            "{META_FILE}: unknown field {key}"
        )));
    }
    let mut names = Vec::with_capacity(files.len());
    for spec in files {
        let parts: Vec<&str> = spec.split(' ').collect();
        let [name, len, hash] = parts[..] else {
            return Err(IndexError::corrupt(format!(
                "{META_FILE}: malformed file line {spec:?}"
            )));
        };
        if name.is_empty() || name.contains('/') || name.contains('\\') || name == ".." {
            return Err(IndexError::corrupt(format!(
                "{META_FILE}: bad file name {name:?}"
            )));
        }
        let want_len: u64 = len
            .parse()
            .map_err(|_| IndexError::corrupt(format!("{META_FILE}: bad length for {name}")))?;
        let want_hash = u64::from_str_radix(hash, 16)
            .map_err(|_| IndexError::corrupt(format!("{META_FILE}: bad checksum for {name}")))?;
        let (got_len, got_hash) = checksum(&dir.join(name))?;
        if (got_len, got_hash) != (want_len, want_hash) {
            return Err(IndexError::corrupt(format!(
                "{name}: {got_len} bytes with checksum {got_hash:016x}, the manifest says {want_len} bytes with {want_hash:016x}"
            )));
        }
        names.push(name.to_string());
    }
    Ok(Meta {
        backend,
        params: IndexParams {
            dim,
            metric,
            m,
            ef_construction,
            capacity_hint,
        },
        files: names,
    })
}

#[cfg(all(test, feature = "hnsw-rs"))]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            backend: Backend::HnswRs,
            params: IndexParams {
                dim: 3,
                metric: Metric::Cosine,
                m: 12,
                ef_construction: 99,
                capacity_hint: 7,
            },
            files: vec!["a.bin".into()],
        }
    }

    #[test]
    fn round_trip_and_checksums() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"hello").unwrap();
        write(dir.path(), &meta()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), meta());
        assert!(!dir.path().join("index.meta.tmp").exists());

        // Same length, different bytes.
        std::fs::write(dir.path().join("a.bin"), b"jello").unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(matches!(e, IndexError::Corrupt(_)), "{e}");
        std::fs::remove_file(dir.path().join("a.bin")).unwrap();
        assert!(matches!(read(dir.path()), Err(IndexError::Io { .. })));
    }

    #[test]
    fn rejects_foreign_and_damaged_manifests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"x").unwrap();
        write(dir.path(), &meta()).unwrap();
        let good = std::fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        let cases = [
            good.replace(HEADER, "shoal-index-dump 2"),
            good.replace("endian little", "endian big")
                .replace("endian big\n", "endian middle\n"),
            good.replace("metric COSINE", "metric MANHATTAN"),
            good.replace("m 12\n", "m twelve\n"),
            good.replace("dim 3\n", ""),
            good.replace("dim 3\n", "dim 3\ndim 3\n"),
            good.replace("dim 3\n", "dim 3\ncolour blue\n"),
            good.replace("file a.bin", "file ../a.bin"),
        ];
        for bad in cases {
            std::fs::write(dir.path().join(META_FILE), &bad).unwrap();
            assert!(
                matches!(read(dir.path()), Err(IndexError::Corrupt(_))),
                "{bad}"
            );
        }
        std::fs::write(
            dir.path().join(META_FILE),
            good.replace("backend hnsw_rs", "backend faiss"),
        )
        .unwrap();
        assert!(matches!(read(dir.path()), Err(IndexError::Unsupported(_))));
    }
}

#[cfg(all(test, not(feature = "hnsw-rs")))]
mod without_hnsw_rs {
    use super::*;

    #[test]
    fn hnsw_rs_dumps_are_unsupported_and_name_the_feature() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta {
            backend: Backend::Native,
            params: IndexParams {
                dim: 3,
                metric: Metric::L2,
                m: 12,
                ef_construction: 99,
                capacity_hint: 7,
            },
            files: vec![],
        };
        write(dir.path(), &meta).unwrap();
        let good = std::fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        std::fs::write(
            dir.path().join(META_FILE),
            good.replace("backend native", "backend hnsw_rs"),
        )
        .unwrap();
        match read(dir.path()) {
            Err(IndexError::Unsupported(why)) => assert!(why.contains("`hnsw-rs`"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
