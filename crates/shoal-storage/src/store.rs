//! The node's fjall database: the collection catalogue and one keyspace per shard.

use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};
use shoal_core::{CollectionConfig, Payload, Point, PointId};

use crate::fault::Faults;
use crate::sync::GroupSync;
use crate::{Fault, StorageError};

const META: &str = "meta";
const RAFT: &str = "raft";

/// Memtable size per keyspace. fjall's default (64 MiB) let the shard keyspaces and
/// the Raft log each hold up to that much of the recent writes in memory on top of
/// the index; 16 MiB keeps a node's resident memory close to its index while still
/// flushing in large runs.
const MEMTABLE_BYTES: u64 = 16 << 20;

fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
}

/// Subdirectory of the data directory holding the fjall database.
const DB_DIR: &str = "db";
/// Subdirectory of the data directory holding shards' derived files (index
/// checkpoints), one subdirectory per shard named like its keyspace.
const DERIVED_DIR: &str = "index";
const COLLECTION_PREFIX: &str = "collection/";
const NEXT_ID_KEY: &str = "next_collection_id";
const BLOB_PREFIX: &str = "blob/";
const APPLIED_KEY: &[u8] = b"m/applied";
/// Opaque metadata written atomically with a batch (the Raft state machine keeps its
/// last applied log id and membership here).
const META_KEY: &[u8] = b"m/meta";
const POINT_PREFIX: u8 = b'p';
/// Records moved aside by [`ShardStore::points_checked`]: the point's key after this
/// prefix, the reason and the original bytes as the value.
const QUARANTINE_PREFIX: u8 = b'q';

/// A stored record that [`ShardStore::points_checked`] moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The point's id, or a description of its undecodable key.
    pub record: String,
    /// Why it was moved aside.
    pub reason: String,
}

/// A position in the node's commit order; pass it to `sync` to wait for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub(crate) u64);

/// Called by the flusher thread once a ticket is durable (or the fsync failed).
pub type SyncCallback = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// A collection as stored: its immutable id and configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// Unique for the lifetime of the node's data directory; never reused.
    pub id: u64,
    pub config: CollectionConfig,
}

/// One change to a shard's points.
#[derive(Debug, Clone, Copy)]
pub enum WriteOp<'a> {
    Upsert(&'a Point),
    Delete(PointId),
}

#[derive(Serialize, Deserialize)]
struct StoredPoint<'a> {
    #[serde(borrow)]
    vector: std::borrow::Cow<'a, [f32]>,
    payload: std::borrow::Cow<'a, Payload>,
}

fn corrupt(what: impl Into<String>, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        what: what.into(),
        reason: e.to_string(),
    }
}

fn shard_keyspace_name(collection_id: u64, shard: u32) -> String {
    format!("c{collection_id}-s{shard}")
}

/// The collection id a shard keyspace's name carries (inverse of
/// [`shard_keyspace_name`]).
fn collection_of_keyspace(name: &str) -> Option<u64> {
    let (c, s) = name.strip_prefix('c')?.split_once("-s")?;
    s.parse::<u32>().ok()?;
    c.parse().ok()
}

pub(crate) struct Inner {
    /// The node's data directory.
    dir: std::path::PathBuf,
    pub(crate) db: Database,
    meta: Keyspace,
    /// Keyspace of every Raft group's log (see `raft_log.rs`).
    raft: Keyspace,
    sync: Arc<GroupSync>,
    /// Serialises catalogue changes (id allocation, create/delete).
    catalogue: parking_lot::Mutex<()>,
    flusher: Flusher,
    /// The first write failure (see the `fault` module).
    pub(crate) faults: Arc<Faults>,
}

impl Inner {
    pub(crate) fn sync(&self, ticket: Ticket) -> Result<(), StorageError> {
        self.faults.check(
            self.sync
                .sync(ticket.0, || self.db.persist(PersistMode::SyncAll)),
        )
    }

    /// `r` of a write to the engine, its failure recorded (see [`Faults::check`]).
    pub(crate) fn check<T>(&self, r: Result<T, fjall::Error>) -> Result<T, StorageError> {
        self.faults.check(r)
    }

    pub(crate) fn sync_then(&self, ticket: Ticket, callback: SyncCallback) {
        let tx = self.flusher.tx.lock().clone();
        match tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError((_, callback))) =
                    tx.send((ticket.0, callback))
                {
                    callback(Err(StorageError::Flush("the flusher has stopped".into())));
                }
            }
            None => callback(Err(StorageError::Flush("the store is closing".into()))),
        }
    }

    /// A ticket for a batch just committed.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.sync.committed())
    }
}

/// A thread that makes tickets durable and calls back: every request waiting when an
/// fsync starts is answered by that one fsync, whichever group or shard it came from.
struct Flusher {
    tx: parking_lot::Mutex<Option<std::sync::mpsc::Sender<(u64, SyncCallback)>>>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Flusher {
    fn start(
        db: Database,
        sync: Arc<GroupSync>,
        faults: Arc<Faults>,
    ) -> Result<Flusher, StorageError> {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, SyncCallback)>();
        let thread = std::thread::Builder::new()
            .name("shoal-flusher".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let target = waiting.iter().map(|w| w.0).max().unwrap_or(0);
                    let result =
                        faults.check(sync.sync(target, || db.persist(PersistMode::SyncAll)));
                    for (_, callback) in waiting {
                        callback(match &result {
                            Ok(()) => Ok(()),
                            Err(StorageError::Fault(f)) => Err(StorageError::Fault(f.clone())),
                            Err(e) => Err(StorageError::Flush(e.to_string())),
                        });
                    }
                }
            })
            .map_err(|e| StorageError::Flush(format!("cannot start the flusher thread: {e}")))?;
        Ok(Flusher {
            tx: parking_lot::Mutex::new(Some(tx)),
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the flusher after it answered everything queued.
        self.flusher.tx.lock().take();
        if let Some(t) = self.flusher.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// A node's storage. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Deletes everything a store keeps in `dir` (the database and the derived
    /// files), for a node the cluster removed. The store must not be open.
    pub fn destroy(dir: &Path) -> std::io::Result<()> {
        for sub in [DB_DIR, DERIVED_DIR] {
            match std::fs::remove_dir_all(dir.join(sub)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Opens (or creates) the database in `dir`, and removes shard keyspaces that no
    /// collection refers to (left behind by a crash during a collection delete).
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        let db = Database::builder(dir.join(DB_DIR)).open()?;
        let meta = db.keyspace(META, keyspace_options)?;
        let raft = db.keyspace(RAFT, keyspace_options)?;
        let sync = Arc::new(GroupSync::default());
        let faults = Arc::new(Faults::new(dir));
        let flusher = Flusher::start(db.clone(), sync.clone(), faults.clone())?;
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                meta,
                raft,
                sync,
                catalogue: parking_lot::Mutex::new(()),
                flusher,
                faults,
            }),
        };
        store.remove_orphan_keyspaces()?;
        Ok(store)
    }

    fn remove_orphan_keyspaces(&self) -> Result<(), StorageError> {
        let live: std::collections::HashSet<u64> =
            self.collections()?.iter().map(|r| r.id).collect();
        for name in self.inner.db.list_keyspace_names() {
            let name: &str = &name;
            let orphan = collection_of_keyspace(name).is_none_or(|c| !live.contains(&c));
            if name != META && name != RAFT && orphan {
                tracing::warn!(keyspace = name, "removing orphaned shard data");
                let ks = self.inner.db.keyspace(name, keyspace_options)?;
                self.inner.db.delete_keyspace(ks)?;
            }
        }
        Ok(())
    }

    /// Every collection, ordered by name.
    pub fn collections(&self) -> Result<Vec<CollectionRecord>, StorageError> {
        self.inner
            .meta
            .prefix(COLLECTION_PREFIX)
            .map(|kv| {
                let (k, v) = kv.into_inner()?;
                postcard::from_bytes(&v).map_err(|e| corrupt(String::from_utf8_lossy(&k), e))
            })
            .collect()
    }

    /// Durably records a new collection and creates its shards' keyspaces.
    pub fn create_collection(
        &self,
        config: CollectionConfig,
    ) -> Result<CollectionRecord, StorageError> {
        let _guard = self.inner.catalogue.lock();
        let key = format!("{COLLECTION_PREFIX}{}", config.name);
        if self.inner.meta.contains_key(&key)? {
            return Err(StorageError::CollectionExists(config.name));
        }
        let id = match self.inner.meta.get(NEXT_ID_KEY)? {
            Some(v) => u64::from_le_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt(NEXT_ID_KEY, "not 8 bytes"))?,
            ),
            None => 1,
        };
        for shard in 0..config.shard_count {
            self.inner
                .db
                .keyspace(&shard_keyspace_name(id, shard), keyspace_options)?;
        }
        let record = CollectionRecord { id, config };
        let mut batch = self.inner.db.batch();
        batch.insert(&self.inner.meta, NEXT_ID_KEY, (id + 1).to_le_bytes());
        batch.insert(
            &self.inner.meta,
            key,
            postcard::to_stdvec(&record).map_err(|e| corrupt("collection", e))?,
        );
        self.inner.check(batch.commit())?;
        self.inner.sync(self.inner.ticket())?;
        Ok(record)
    }

    /// Records a collection under an id chosen elsewhere (the cluster's metadata group),
    /// creating its shards' keyspaces. Idempotent for the same record; a record of the
    /// same collection (same id) with a changed configuration (a replication factor or
    /// shard count changed online) replaces the stored one; a different collection
    /// under the same name is an error. Not fsynced: the metadata group's log is the
    /// source of truth and replays it after a crash.
    pub fn adopt_collection(&self, record: &CollectionRecord) -> Result<(), StorageError> {
        let _guard = self.inner.catalogue.lock();
        let key = format!("{COLLECTION_PREFIX}{}", record.config.name);
        if let Some(v) = self.inner.meta.get(&key)? {
            let existing: CollectionRecord =
                postcard::from_bytes(&v).map_err(|e| corrupt(key.clone(), e))?;
            if existing == *record {
                return Ok(());
            }
            if existing.id != record.id {
                return Err(StorageError::CollectionExists(record.config.name.clone()));
            }
        }
        // Shard keyspaces are created as the node opens the shards it hosts.
        let value = postcard::to_stdvec(record).map_err(|e| corrupt("collection", e))?;
        self.inner.check(self.inner.meta.insert(key, value))?;
        Ok(())
    }

    /// Stores an opaque blob under `name` in the node's metadata (the cluster state
    /// machine keeps its state here). Not fsynced.
    pub fn put_blob(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        let key = format!("{BLOB_PREFIX}{name}");
        self.inner.check(self.inner.meta.insert(key, value))
    }

    /// The blob stored under `name`, if any.
    pub fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .inner
            .meta
            .get(format!("{BLOB_PREFIX}{name}"))?
            .map(|v| v.to_vec()))
    }

    /// Durably removes a collection and all its points.
    pub fn delete_collection(&self, name: &str) -> Result<(), StorageError> {
        let _guard = self.inner.catalogue.lock();
        let record = self
            .collections()?
            .into_iter()
            .find(|r| r.config.name == name)
            .ok_or_else(|| StorageError::CollectionNotFound(name.to_string()))?;
        let key = format!("{COLLECTION_PREFIX}{name}");
        self.inner.check(self.inner.meta.remove(key))?;
        self.inner.sync(self.inner.ticket())?;
        // The catalogue no longer names them: a crash from here on leaves orphans that
        // the next `open` removes.
        let names: Vec<String> = self
            .inner
            .db
            .list_keyspace_names()
            .into_iter()
            .map(|n| n.to_string())
            .filter(|n| collection_of_keyspace(n) == Some(record.id))
            .collect();
        for name in names {
            let ks = self.inner.db.keyspace(&name, keyspace_options)?;
            self.inner.db.delete_keyspace(ks)?;
            let _ = std::fs::remove_dir_all(self.inner.dir.join(DERIVED_DIR).join(&name));
        }
        Ok(())
    }

    /// Removes one shard of a collection from this node: its points and its derived
    /// files (the collection stays). Used when a replica moves away or a split
    /// parent retires; the caller has stopped the shard first.
    pub fn delete_shard(&self, collection_id: u64, shard: u32) -> Result<(), StorageError> {
        let _guard = self.inner.catalogue.lock();
        let name = shard_keyspace_name(collection_id, shard);
        if self
            .inner
            .db
            .list_keyspace_names()
            .iter()
            .any(|n| **n == *name)
        {
            let ks = self.inner.db.keyspace(&name, keyspace_options)?;
            self.inner.db.delete_keyspace(ks)?;
        }
        let _ = std::fs::remove_dir_all(self.inner.dir.join(DERIVED_DIR).join(&name));
        Ok(())
    }

    /// The store of one shard of a collection.
    pub fn shard(&self, record: &CollectionRecord, shard: u32) -> Result<ShardStore, StorageError> {
        let ks = self
            .inner
            .db
            .keyspace(&shard_keyspace_name(record.id, shard), keyspace_options)?;
        Ok(ShardStore {
            inner: self.inner.clone(),
            derived_dir: self
                .inner
                .dir
                .join(DERIVED_DIR)
                .join(shard_keyspace_name(record.id, shard)),
            ks,
        })
    }

    /// The log of Raft group `group` (created empty on first use).
    pub fn raft_log(&self, group: u64) -> crate::RaftLog {
        crate::RaftLog {
            inner: self.inner.clone(),
            ks: self.inner.raft.clone(),
            group,
        }
    }

    /// Removes the logs of every Raft group with an id in `groups` (durably).
    pub fn destroy_raft_logs(
        &self,
        groups: std::ops::RangeInclusive<u64>,
    ) -> Result<(), StorageError> {
        let mut batch = self.inner.db.batch();
        let (first, last) = (*groups.start(), *groups.end());
        let mut any = false;
        for kv in self.inner.raft.range(first.to_be_bytes().to_vec()..) {
            let key = kv.key()?;
            let group = key
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if group > last {
                break;
            }
            batch.remove(&self.inner.raft, key);
            any = true;
        }
        if any {
            self.inner.check(batch.commit())?;
            self.inner.sync(self.inner.ticket())?;
        }
        Ok(())
    }

    /// Waits until `ticket` (and everything committed before it) is durable.
    pub fn sync(&self, ticket: Ticket) -> Result<(), StorageError> {
        self.inner.sync(ticket)
    }

    /// Returns at once; `callback` runs on the node's flusher thread once `ticket` is
    /// durable. Requests queued while an fsync runs share the next one.
    pub fn sync_then(&self, ticket: Ticket, callback: SyncCallback) {
        self.inner.sync_then(ticket, callback)
    }

    /// Number of fsyncs this store has issued (group commit makes it lower than the
    /// number of write batches under concurrency).
    pub fn fsyncs(&self) -> u64 {
        self.inner.sync.fsyncs()
    }

    /// Whether the store takes writes now: its latest fsync succeeded, and a small
    /// file can be created, written and removed in the data directory (a read-only or
    /// full file system fails that). A few small file operations: call it off the
    /// async workers.
    pub fn check_writable(&self) -> Result<(), StorageError> {
        if let Some(fault) = self.fault() {
            return Err(StorageError::Fault(fault));
        }
        if self.inner.sync.failing() {
            return Err(StorageError::Unwritable(
                "the latest fsync of the database failed".into(),
            ));
        }
        crate::fault::probe(&self.inner.dir)
    }

    /// The first write failure of the database, if one happened: it then takes no
    /// more writes until the node restarts (see the `fault` module). Also asks the
    /// engine, so that a failure no write of ours met yet (a background flush) is
    /// found: a buffer flush of the journal, at most one small write. Call it off
    /// the async workers.
    pub fn fault(&self) -> Option<Fault> {
        if let Some(f) = self.inner.faults.get() {
            return Some(f);
        }
        self.inner
            .check(self.inner.db.persist(PersistMode::Buffer))
            .err()
            .and_then(|_| self.inner.faults.get())
    }

    /// The recorded write failure, if any, without asking the engine: cheap, for the
    /// request path.
    pub fn recorded_fault(&self) -> Option<Fault> {
        self.inner.faults.get()
    }

    /// Whether the data directory could take writes again: its file system has
    /// [`crate::ROOM_BYTES`] available and a small file can be written in it. A
    /// node whose store has a [`Fault`] restarts once it has. Call it off the async
    /// workers.
    pub fn has_room(&self) -> Result<(), StorageError> {
        self.inner.faults.has_room()
    }

    /// Bytes on disk: the database (its journal and every keyspace, as the engine
    /// counts them) and the derived files (index checkpoints), walked. Reads
    /// directories: call it off the async workers.
    pub fn disk_usage(&self) -> DiskUsage {
        DiskUsage {
            database: self.inner.db.disk_space().unwrap_or(0),
            derived: dir_bytes(&self.inner.dir.join(DERIVED_DIR), 8),
        }
    }
}

/// What a store occupies on disk, in bytes ([`Store::disk_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub database: u64,
    pub derived: u64,
}

/// Bytes of the files under `dir`, at most `depth` directories down (links not
/// followed; what cannot be read counts 0).
fn dir_bytes(dir: &Path, depth: usize) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => dir_bytes(&e.path(), depth - 1),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The points of one shard.
#[derive(Clone)]
pub struct ShardStore {
    inner: Arc<Inner>,
    ks: Keyspace,
    derived_dir: std::path::PathBuf,
}

fn point_key(id: &PointId) -> Vec<u8> {
    let mut k = vec![POINT_PREFIX];
    k.extend_from_slice(&id.to_key());
    k
}

impl ShardStore {
    /// Atomically applies `ops` and records `seq` as the shard's last applied sequence
    /// number. Not yet durable: call [`ShardStore::sync`] with the returned ticket
    /// before acknowledging.
    pub fn write(&self, ops: &[WriteOp<'_>], seq: u64) -> Result<Ticket, StorageError> {
        self.write_with_meta(ops, seq, None)
    }

    /// [`ShardStore::write`], also replacing the shard's metadata with `meta` in the
    /// same atomic batch when given.
    pub fn write_with_meta(
        &self,
        ops: &[WriteOp<'_>],
        seq: u64,
        meta: Option<&[u8]>,
    ) -> Result<Ticket, StorageError> {
        let mut batch = self.inner.db.batch();
        if let Some(m) = meta {
            batch.insert(&self.ks, META_KEY, m);
        }
        for op in ops {
            match op {
                WriteOp::Upsert(p) => batch.insert(&self.ks, point_key(&p.id), encode_point(p)?),
                WriteOp::Delete(id) => batch.remove(&self.ks, point_key(id)),
            }
        }
        batch.insert(&self.ks, APPLIED_KEY, seq.to_le_bytes());
        self.inner.check(batch.commit())?;
        Ok(self.inner.ticket())
    }

    /// Waits until the batch of `ticket` (and everything committed before it) is on
    /// disk.
    pub fn sync(&self, ticket: Ticket) -> Result<(), StorageError> {
        self.inner.sync(ticket)
    }

    /// A directory (not yet created) where the shard may keep files derived from its
    /// points, such as index checkpoints. Removed with the collection. Its contents
    /// are not covered by the durability promise: they must be rebuildable.
    pub fn derived_dir(&self) -> &Path {
        &self.derived_dir
    }

    /// The metadata last written by [`ShardStore::write_with_meta`] or
    /// [`ShardStore::replace_all`].
    pub fn meta(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.ks.get(META_KEY)?.map(|v| v.to_vec()))
    }

    /// Atomically replaces every point of the shard with `points`, and sets the
    /// sequence number and metadata (installing a snapshot). Not durable until synced.
    pub fn replace_all(
        &self,
        points: &[Point],
        seq: u64,
        meta: &[u8],
    ) -> Result<Ticket, StorageError> {
        let mut batch = self.inner.db.batch();
        for kv in self.ks.prefix([POINT_PREFIX]) {
            batch.remove(&self.ks, kv.key()?);
        }
        for p in points {
            batch.insert(&self.ks, point_key(&p.id), encode_point(p)?);
        }
        batch.insert(&self.ks, APPLIED_KEY, seq.to_le_bytes());
        batch.insert(&self.ks, META_KEY, meta);
        self.inner.check(batch.commit())?;
        Ok(self.inner.ticket())
    }

    /// Sequence number of the last applied batch (0 for a new shard).
    pub fn applied_seq(&self) -> Result<u64, StorageError> {
        Ok(match self.ks.get(APPLIED_KEY)? {
            Some(v) => u64::from_le_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("applied sequence", "not 8 bytes"))?,
            ),
            None => 0,
        })
    }

    /// One point by id.
    pub fn get(&self, id: &PointId) -> Result<Option<Point>, StorageError> {
        self.ks
            .get(point_key(id))?
            .map(|v| decode_point(*id, &v))
            .transpose()
    }

    /// Every point in id order, from a consistent snapshot.
    pub fn points(&self) -> impl Iterator<Item = Result<Point, StorageError>> + use<> {
        self.points_at(&self.inner.db.snapshot())
    }

    fn points_at(
        &self,
        snapshot: &fjall::Snapshot,
    ) -> impl Iterator<Item = Result<Point, StorageError>> + use<> {
        use fjall::Readable;
        snapshot.prefix(&self.ks, [POINT_PREFIX]).map(|kv| {
            let (k, v) = kv.into_inner()?;
            let id = PointId::from_key(&k[1..]).ok_or_else(|| corrupt("point key", "bad id"))?;
            decode_point(id, &v)
        })
    }

    /// A point-in-time copy of the shard, read without holding off writers: the
    /// sequence number of the last batch it includes and every point in id order,
    /// from one storage snapshot (kept until the iterator is dropped, so keep it
    /// short-lived). Each batch is atomic, so the points match that sequence number.
    #[allow(clippy::type_complexity)]
    pub fn export(
        &self,
    ) -> Result<
        (
            u64,
            impl Iterator<Item = Result<Point, StorageError>> + use<>,
        ),
        StorageError,
    > {
        use fjall::Readable;
        let snapshot = self.inner.db.snapshot();
        let seq = match snapshot.get(&self.ks, APPLIED_KEY)? {
            Some(v) => u64::from_le_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("applied sequence", "not 8 bytes"))?,
            ),
            None => 0,
        };
        Ok((seq, self.points_at(&snapshot)))
    }
}

impl ShardStore {
    /// Streams every point that decodes and passes `check` to `each`, in id order, from
    /// a consistent snapshot; moves every record that does not aside (out of the
    /// shard's points, kept under a quarantine prefix with the reason) in one durable
    /// batch after the scan, and returns them. A record written by a bug, a forged
    /// entry or a damaged disk then costs one point, not the shard.
    pub fn points_checked<E: From<StorageError>>(
        &self,
        check: impl Fn(&Point) -> Result<(), String>,
        mut each: impl FnMut(Point) -> Result<(), E>,
    ) -> Result<Vec<Quarantined>, E> {
        let mut bad: Vec<(Vec<u8>, Vec<u8>, Quarantined)> = Vec::new();
        for kv in self.ks.prefix([POINT_PREFIX]) {
            let (k, v) = kv.into_inner().map_err(StorageError::from)?;
            let decoded = match PointId::from_key(&k[1..]) {
                None => Err((format!("key {:02x?}", &k[1..]), "bad id".to_string())),
                Some(id) => match decode_point(id, &v) {
                    Err(e) => Err((id.to_string(), e.to_string())),
                    Ok(p) => match check(&p) {
                        Err(why) => Err((id.to_string(), why)),
                        Ok(()) => Ok(p),
                    },
                },
            };
            match decoded {
                Ok(p) => each(p)?,
                Err((record, reason)) => {
                    bad.push((k.to_vec(), v.to_vec(), Quarantined { record, reason }))
                }
            }
        }
        if bad.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = self.inner.db.batch();
        for (k, v, q) in &bad {
            let mut qk = vec![QUARANTINE_PREFIX];
            qk.extend_from_slice(&k[1..]);
            let record = postcard::to_stdvec(&(&q.reason, v))
                .map_err(|e| corrupt("quarantine record", e))?;
            batch.insert(&self.ks, qk, record);
            batch.remove(&self.ks, k.clone());
        }
        self.inner.check(batch.commit())?;
        self.sync(self.inner.ticket())?;
        Ok(bad.into_iter().map(|(_, _, q)| q).collect())
    }

    /// How many records are quarantined in this shard.
    pub fn quarantined(&self) -> Result<usize, StorageError> {
        let mut n = 0;
        for kv in self.ks.prefix([QUARANTINE_PREFIX]) {
            kv.into_inner()?;
            n += 1;
        }
        Ok(n)
    }

    /// Stores `bytes` as point `id`'s record as they are (or `p` encoded, when `bytes`
    /// is `None`), unchecked and outside any write: for tests of what reading a damaged
    /// or forged record does.
    #[doc(hidden)]
    pub fn put_unchecked(&self, p: &Point, bytes: Option<&[u8]>) -> Result<(), StorageError> {
        let r = match bytes {
            Some(b) => self.ks.insert(point_key(&p.id), b),
            None => self.ks.insert(point_key(&p.id), encode_point(p)?),
        };
        self.inner.check(r)
    }
}

fn encode_point(p: &Point) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(&StoredPoint {
        vector: std::borrow::Cow::Borrowed(&p.vector),
        payload: std::borrow::Cow::Borrowed(&p.payload),
    })
    .map_err(|e| corrupt(format!("point {}", p.id), e))
}

fn decode_point(id: PointId, bytes: &[u8]) -> Result<Point, StorageError> {
    let sp: StoredPoint<'_> =
        postcard::from_bytes(bytes).map_err(|e| corrupt(format!("point {id}"), e))?;
    Ok(Point {
        id,
        vector: sp.vector.into_owned(),
        payload: sp.payload.into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::{HnswParams, Metric, Value};

    #[test]
    fn a_store_reports_its_bytes_and_whether_it_takes_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.check_writable().unwrap();
        assert!(
            !dir.path().join(".write-probe").exists(),
            "the probe is removed"
        );
        std::fs::create_dir_all(dir.path().join(DERIVED_DIR).join("c1-s0/ckpt-1")).unwrap();
        std::fs::write(
            dir.path().join(DERIVED_DIR).join("c1-s0/ckpt-1/x"),
            [0u8; 1000],
        )
        .unwrap();
        let usage = store.disk_usage();
        assert!(usage.database > 0, "{usage:?}");
        assert_eq!(usage.derived, 1000);
        // A directory that refuses writes (as a read-only file system would): not
        // writable, with the directory named. Root ignores permissions; skip then.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(dir.path().join("root-test"), b"x").is_err() {
            let e = store.check_writable().unwrap_err().to_string();
            assert!(e.contains("not writable"), "{e}");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn config(name: &str, shards: u32) -> CollectionConfig {
        CollectionConfig {
            name: name.into(),
            dim: 2,
            metric: Metric::L2,
            shard_count: shards,
            replication_factor: 1,
            hnsw: HnswParams::default(),
        }
    }

    fn point(id: u64, x: f32) -> Point {
        let mut payload = Payload::new();
        payload.insert("x".into(), Value::Double(x as f64));
        Point {
            id: PointId::Num(id),
            vector: vec![x, -x],
            payload,
        }
    }

    #[test]
    fn points_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let rec = store.create_collection(config("a", 2)).unwrap();
            let shard = store.shard(&rec, 1).unwrap();
            let (p1, p2) = (point(1, 1.0), point(2, 2.0));
            let t = shard
                .write(&[WriteOp::Upsert(&p1), WriteOp::Upsert(&p2)], 1)
                .unwrap();
            shard.sync(t).unwrap();
            let t = shard.write(&[WriteOp::Delete(PointId::Num(1))], 2).unwrap();
            shard.sync(t).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let recs = store.collections().unwrap();
        assert_eq!(recs.len(), 1);
        let shard = store.shard(&recs[0], 1).unwrap();
        assert_eq!(shard.applied_seq().unwrap(), 2);
        let points: Vec<Point> = shard.points().collect::<Result<_, _>>().unwrap();
        assert_eq!(points, vec![point(2, 2.0)]);
        assert_eq!(shard.get(&PointId::Num(2)).unwrap(), Some(point(2, 2.0)));
        assert_eq!(shard.get(&PointId::Num(1)).unwrap(), None);
        assert_eq!(store.shard(&recs[0], 0).unwrap().points().count(), 0);
    }

    #[test]
    fn an_export_is_a_point_in_time_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rec = store.create_collection(config("a", 1)).unwrap();
        let shard = store.shard(&rec, 0).unwrap();
        let (p1, p2, p3) = (point(1, 1.0), point(2, 2.0), point(3, 3.0));
        shard
            .write(&[WriteOp::Upsert(&p1), WriteOp::Upsert(&p2)], 5)
            .unwrap();
        let (seq, points) = shard.export().unwrap();
        // Written after the export began: none of it is in the export.
        shard
            .write(&[WriteOp::Upsert(&p3), WriteOp::Delete(PointId::Num(1))], 6)
            .unwrap();
        shard.write(&[WriteOp::Upsert(&point(2, 9.0))], 7).unwrap();
        let points: Vec<Point> = points.collect::<Result<_, _>>().unwrap();
        assert_eq!(seq, 5);
        assert_eq!(points, vec![p1, p2]);
        let (seq, now) = shard.export().unwrap();
        assert_eq!(seq, 7);
        assert_eq!(now.count(), 2);
    }

    #[test]
    fn catalogue_create_delete_recreate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.create_collection(config("a", 1)).unwrap();
        assert!(matches!(
            store.create_collection(config("a", 1)),
            Err(StorageError::CollectionExists(_))
        ));
        let p = point(7, 1.0);
        let shard = store.shard(&a, 0).unwrap();
        shard
            .sync(shard.write(&[WriteOp::Upsert(&p)], 1).unwrap())
            .unwrap();
        store.delete_collection("a").unwrap();
        assert!(matches!(
            store.delete_collection("a"),
            Err(StorageError::CollectionNotFound(_))
        ));
        let a2 = store.create_collection(config("a", 1)).unwrap();
        assert_ne!(a.id, a2.id, "ids are never reused");
        assert_eq!(store.shard(&a2, 0).unwrap().points().count(), 0);
        drop((store, shard));
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.collections().unwrap(), vec![a2]);
    }

    #[test]
    fn shards_of_any_id_live_and_die_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let rec = CollectionRecord {
            id: 5,
            config: config("a", 2),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store.adopt_collection(&rec).unwrap();
            // Shard ids beyond the shard count (split children) are shards too.
            for s in [0, 1, 7] {
                let shard = store.shard(&rec, s).unwrap();
                let p = point(u64::from(s), 1.0);
                shard
                    .sync(shard.write(&[WriteOp::Upsert(&p)], 1).unwrap())
                    .unwrap();
            }
            store.delete_shard(5, 1).unwrap();
            store.delete_shard(5, 9).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let count = |s| store.shard(&rec, s).unwrap().points().count();
        assert_eq!(
            (count(0), count(1), count(7)),
            (1, 0, 1),
            "only shard 1 went"
        );
        store.delete_collection("a").unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.adopt_collection(&rec).unwrap();
        assert_eq!(store.shard(&rec, 7).unwrap().points().count(), 0);
    }

    #[test]
    fn a_collection_adopted_again_with_a_changed_config_keeps_its_shards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rec = CollectionRecord {
            id: 3,
            config: config("a", 1),
        };
        store.adopt_collection(&rec).unwrap();
        let shard = store.shard(&rec, 0).unwrap();
        let p = point(1, 1.0);
        shard
            .sync(shard.write(&[WriteOp::Upsert(&p)], 1).unwrap())
            .unwrap();
        // Resharded online: the same collection, more shards.
        let grown = CollectionRecord {
            id: 3,
            config: config("a", 4),
        };
        store.adopt_collection(&grown).unwrap();
        assert_eq!(store.collections().unwrap(), vec![grown.clone()]);
        assert_eq!(store.shard(&grown, 0).unwrap().points().count(), 1);
        // Another collection under the name is still refused.
        let other = CollectionRecord {
            id: 4,
            config: config("a", 1),
        };
        assert!(matches!(
            store.adopt_collection(&other),
            Err(StorageError::CollectionExists(_))
        ));
    }
}
