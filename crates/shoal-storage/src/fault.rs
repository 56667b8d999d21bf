//! Why a node's database takes no more writes, and whether its data directory has
//! room again.
//!
//! fjall *poisons* its database after any failed journal write, journal fsync or
//! background flush (a full disk, an IO error): every later write fails with
//! `Poisoned` until the database is opened again, because what reached the disk is no
//! longer known. A poisoned store never heals in place; the node must restart.
//!
//! [`Faults`] records the first such failure of a store as a [`Fault`], once, for the
//! life of the process: what failed, in which data directory, and whether its file
//! system is full — from the IO error when the failure was ours (`ENOSPC`, `EDQUOT`),
//! or, when only `Poisoned` reached us (a background flush failed), from the space
//! left: less than [`ROOM_BYTES`] available counts as full. Every write path of the
//! crate reports its engine errors here ([`Faults::check`]), and callers get
//! `StorageError::Fault` with the recorded cause instead of a bare `Poisoned`.

use std::path::{Path, PathBuf};

use crate::StorageError;

/// Space a data directory's file system must have available to count as having room:
/// below it, a poisoned database counts as failed by a full disk, and a failed node
/// does not restart (its memtables, 16 MiB per keyspace, and journal must fit when it
/// opens and catches up).
pub const ROOM_BYTES: u64 = 64 << 20;

/// The first write failure of a store: it takes no more writes until the node
/// restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The node's data directory.
    pub dir: PathBuf,
    /// The file system holding `dir` is full (or over quota).
    pub disk_full: bool,
    /// Bytes available on that file system when the failure was recorded, if known.
    pub available: Option<u64>,
    /// The engine's error.
    pub cause: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.dir.display();
        if self.disk_full {
            write!(f, "the disk holding data directory {dir} is full")?;
            if let Some(a) = self.available {
                write!(f, " ({} available)", mib(a))?;
            }
            write!(f, ": the database failed to write ({})", self.cause)
        } else {
            write!(
                f,
                "the database in data directory {dir} failed to write ({})",
                self.cause
            )
        }
    }
}

/// `bytes` in MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The fault slot of one store, shared by its writers and its flusher thread.
#[derive(Debug)]
pub(crate) struct Faults {
    dir: PathBuf,
    first: parking_lot::Mutex<Option<Fault>>,
}

impl Faults {
    pub(crate) fn new(dir: &Path) -> Faults {
        Faults {
            dir: dir.to_path_buf(),
            first: parking_lot::Mutex::new(None),
        }
    }

    /// The recorded fault, if a write failed.
    pub(crate) fn get(&self) -> Option<Fault> {
        self.first.lock().clone()
    }

    /// `r` of a write to the engine: an error that poisons the database is recorded
    /// (the first one only) and returned as `StorageError::Fault` carrying the first
    /// recorded cause; other errors pass as they are.
    pub(crate) fn check<T>(&self, r: Result<T, fjall::Error>) -> Result<T, StorageError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) if poisons(&e) => Err(StorageError::Fault(self.record(&e))),
            Err(e) => Err(StorageError::Engine(e)),
        }
    }

    /// Records `e` unless a fault is recorded already; returns the recorded one.
    fn record(&self, e: &fjall::Error) -> Fault {
        let mut first = self.first.lock();
        if let Some(f) = &*first {
            return f.clone();
        }
        let available = available_bytes(&self.dir);
        let full_error = io_cause(e).is_some_and(is_full);
        let fault = Fault {
            dir: self.dir.clone(),
            disk_full: full_error || available.is_some_and(|a| a < ROOM_BYTES),
            available,
            cause: cause_of(e),
        };
        tracing::error!(
            fault = %fault,
            "the database takes no more writes until the node restarts"
        );
        *first = Some(fault.clone());
        fault
    }

    /// Whether `dir` has room: at least [`ROOM_BYTES`] available, and a small file
    /// can be created, written and removed in it.
    pub(crate) fn has_room(&self) -> Result<(), StorageError> {
        let available = available_bytes(&self.dir);
        if let Some(a) = available.filter(|a| *a < ROOM_BYTES) {
            return Err(StorageError::Unwritable(format!(
                "the disk holding {} has {} available, less than the {} a restart needs",
                self.dir.display(),
                mib(a),
                mib(ROOM_BYTES)
            )));
        }
        probe(&self.dir)
    }
}

/// Creates, writes and removes a small file in `dir`.
pub(crate) fn probe(dir: &Path) -> Result<(), StorageError> {
    // A name of its own per call: concurrent checks must not remove each other's.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = dir.join(format!(".write-probe-{}-{n}", std::process::id()));
    let attempt = std::fs::write(&file, b"probe").and_then(|()| std::fs::remove_file(&file));
    attempt.map_err(|e| StorageError::Unwritable(format!("cannot write in {}: {e}", dir.display())))
}

/// Whether an engine error leaves the database poisoned (or reports that it is): a
/// failed write, fsync or flush. A refusal such as a deleted keyspace does not.
fn poisons(e: &fjall::Error) -> bool {
    matches!(
        e,
        fjall::Error::Io(_) | fjall::Error::Storage(_) | fjall::Error::Poisoned
    )
}

/// The engine's error in a sentence (fjall's `Display` is its `Debug`).
fn cause_of(e: &fjall::Error) -> String {
    match (e, io_cause(e)) {
        (_, Some(io)) => io.to_string(),
        (fjall::Error::Poisoned, None) => {
            "an earlier write, fsync or background flush failed and the engine refuses \
             writes since (see the log)"
                .into()
        }
        (e, None) => e.to_string(),
    }
}

/// The IO error at the root of `e`, if any.
fn io_cause(e: &fjall::Error) -> Option<&std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// A full file system, or a full quota.
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Bytes available to this process on the file system holding `dir`.
pub(crate) fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` only writes into the zeroed struct it is given; `path` is a
    // valid NUL-terminated string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enospc() -> fjall::Error {
        fjall::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    #[test]
    fn the_first_failure_is_kept_and_later_poisoned_errors_carry_it() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new(dir.path());
        assert_eq!(faults.get(), None);
        // A refusal that does not poison the database is no fault.
        let e = faults.check::<()>(Err(fjall::Error::KeyspaceDeleted));
        assert!(matches!(e, Err(StorageError::Engine(_))), "{e:?}");
        assert_eq!(faults.get(), None);

        let first = match faults.check::<()>(Err(enospc())) {
            Err(StorageError::Fault(f)) => f,
            other => panic!("{other:?}"),
        };
        assert!(first.disk_full, "{first:?}");
        assert_eq!(first.dir, dir.path());
        let text = first.to_string();
        assert!(text.contains("is full"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        // What fjall answers afterwards names the first cause, not `Poisoned`.
        match faults.check::<()>(Err(fjall::Error::Poisoned)) {
            Err(StorageError::Fault(f)) => assert_eq!(f, first),
            other => panic!("{other:?}"),
        }
        assert_eq!(faults.get(), Some(first));
    }

    #[test]
    fn an_io_error_with_room_left_is_not_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new(dir.path());
        let room = available_bytes(dir.path()).unwrap_or(0) >= ROOM_BYTES;
        let eio = fjall::Error::Io(std::io::Error::from_raw_os_error(libc::EIO));
        match faults.check::<()>(Err(eio)) {
            Err(StorageError::Fault(f)) => {
                // Only decidable where the test's own disk has room.
                if room {
                    assert!(!f.disk_full, "{f:?}");
                    assert!(f.to_string().contains("failed to write"), "{f}");
                }
            }
            other => panic!("{other:?}"),
        }
        if room {
            faults.has_room().unwrap();
        }
    }

    #[test]
    fn full_errors_are_recognised() {
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_full(&std::io::Error::from_raw_os_error(libc::EIO)));
    }
}
