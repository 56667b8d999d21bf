//! The shard state machine: committed entries applied to a `shoal_shard::Shard`.
//!
//! **Sequence numbers.** The shard's applied sequence is the Raft log index plus one
//! (openraft's first entry has index 0, a fresh shard has applied nothing: 0).
//!
//! **Atomicity.** Each entry is applied with `Shard::apply_at`, which writes the
//! points, the sequence number and the encoded `ShardApplied` state (last applied log id
//! and membership) in one atomic batch, without fsync: after a crash the shard is at
//! some applied index and openraft re-applies the log from there; entries at or below
//! it are skipped.
//!
//! **Snapshots** are the shard's points, consistent with the applied state they were
//! taken at, written in frames to a file in the node's snapshot directory
//! (`snapshot_file`); openraft reads that file in chunks to send it. The last built
//! snapshot's file is kept (and replaced by the next); after a restart or an install
//! `get_current_snapshot` builds a fresh one on demand (its log id is never behind
//! anything the log has purged, because purging follows snapshots).
//!
//! **Defensive apply.** Writes are validated before they are proposed, but a committed
//! entry is re-checked against the shard's configuration as it is applied
//! (`Shard::apply_at` checks before it stores anything): one that fails is refused ([`Rejection::Invalid`]) — applied as a
//! no-op at its index on every replica alike, so digests stay equal and the group and
//! the node keep running.
//!
//! **Sealing and splitting.** A [`Command::Seal`] entry marks the shard sealed (kept
//! in `ShardApplied`): every later shard write is refused with [`Rejection::Sealed`],
//! identically on every replica, so the sealed shard's points are the same on each
//! of them and never change again. Each replica then builds the split's two children
//! from its own copy ([`ShardStateMachine::build_child`]): a child holds the points
//! of its half of the hash range, applied "at log index 0" with the child group's
//! membership, exactly as if that index were a snapshot. Every replica builds the same
//! state, so the child group elects a leader without being initialized, and a replica
//! that has no copy gets one as a snapshot (the log before index 1 is purged). A
//! snapshot of a sealed shard says so in its id (suffix `-sealed`), so a follower
//! that installs it stays sealed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};
use shoal_core::routing;
use shoal_shard::{Shard, ShardError, ShardSnapshot, SplitCopy};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::error::storage_error;
use crate::log_store::{blocking, decode, encode};
use crate::snapshot_file::{CHUNK, FrameWriter, read_points, unnamed};
use crate::{Command, RaftStoreError, Rejection, Reply, StorageError, TypeConfig};

/// One child of a split: its shard number and the part of the parent's id-hash range
/// it takes (`first..=last`, see `shoal_core::routing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildSpec {
    pub shard: u32,
    pub first: u64,
    pub last: u64,
}

impl ChildSpec {
    /// Whether point `id` belongs to this child.
    pub fn keeps(&self, id: &shoal_core::PointId) -> bool {
        (self.first..=self.last).contains(&routing::id_hash(id))
    }
}

/// What a state machine has applied: the metadata group's, persisted with its state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) membership: StoredMembership<u64, BasicNode>,
}

/// What a shard's state machine has applied, stored atomically with the shard's points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ShardApplied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// Set by [`Command::Seal`]: shard writes are refused from then on.
    sealed: bool,
}

impl ShardApplied {
    /// Decodes it, or an [`Applied`] stored before sealing existed.
    fn decode(b: &[u8]) -> Result<ShardApplied, RaftStoreError> {
        match decode::<ShardApplied>(b) {
            Ok(a) => Ok(a),
            Err(e) => match decode::<Applied>(b) {
                Ok(v1) => Ok(ShardApplied {
                    last_applied: v1.last_applied,
                    membership: v1.membership,
                    sealed: false,
                }),
                Err(_) => Err(e),
            },
        }
    }
}

/// Marks the id of a sealed shard's snapshot (see the module doc).
const SEALED_SUFFIX: &str = "-sealed";

/// A built snapshot: its metadata and its file (deleted when dropped).
type Built = (SnapshotMeta<u64, BasicNode>, Arc<tempfile::TempPath>);

/// The state machine of one shard group. Cheap to clone (clones share the shard).
#[derive(Clone)]
pub struct ShardStateMachine {
    shard: Shard,
    dir: PathBuf,
    current: Arc<Mutex<Option<Built>>>,
    snapshots_built: Arc<AtomicU64>,
    /// Mirrors `ShardApplied::sealed`, for readers that must not touch storage.
    sealed: Arc<AtomicBool>,
}

fn sm_err(e: RaftStoreError) -> StorageError {
    storage_error::read_state_machine(e.any())
}

impl ShardStateMachine {
    /// The state machine over `shard`, writing snapshot files into `snapshot_dir`.
    pub fn new(shard: Shard, snapshot_dir: impl Into<PathBuf>) -> ShardStateMachine {
        let sealed = Self::is_sealed(&shard).unwrap_or(false);
        ShardStateMachine {
            sealed: Arc::new(AtomicBool::new(sealed)),
            shard,
            dir: snapshot_dir.into(),
            current: Arc::default(),
            snapshots_built: Arc::default(),
        }
    }

    /// The shard it applies to.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// A flag that is true once the shard is sealed (see the module doc).
    pub fn sealed_flag(&self) -> Arc<AtomicBool> {
        self.sealed.clone()
    }

    fn applied(shard: &Shard) -> Result<ShardApplied, RaftStoreError> {
        match shard.meta()? {
            Some(b) if !b.is_empty() => ShardApplied::decode(&b),
            _ => Ok(ShardApplied::default()),
        }
    }

    /// True once the shard applied a [`Command::Seal`].
    pub fn is_sealed(shard: &Shard) -> Result<bool, RaftStoreError> {
        Ok(Self::applied(shard)?.sealed)
    }

    /// Builds one child of a split, shard `child_no` in the empty `store`, from the
    /// sealed shard `parent`: the parent's points whose id hash is in `first..=last`,
    /// applied at log index 0 with `voters` as the child group's membership (see the
    /// module doc), its index started from the parent's (`Shard::split_off`).
    /// With `copy` (from [`ShardStateMachine::copy_child`], same range), only what the
    /// parent's writes changed since the copy is applied to it (`Shard::finish_split`);
    /// a copy gone stale is dropped and the child built as without one.
    /// Blocking; durable on return.
    pub fn build_child(
        parent: &Shard,
        store: shoal_storage::ShardStore,
        child: ChildSpec,
        copy: Option<SplitCopy>,
        voters: BTreeMap<u64, BasicNode>,
    ) -> Result<Shard, RaftStoreError> {
        if !Self::is_sealed(parent)? {
            return Err(RaftStoreError::NotSealed);
        }
        let origin = LogId::new(CommittedLeaderId::new(0, 0), 0);
        let ids: BTreeSet<u64> = voters.keys().copied().collect();
        let applied = ShardApplied {
            last_applied: Some(origin),
            membership: StoredMembership::new(Some(origin), Membership::new(vec![ids], voters)),
            sealed: false,
        };
        let meta = encode(&applied)?;
        if let Some(copy) = copy {
            match parent.finish_split(copy, |id| child.keeps(id), 1, &meta) {
                Err(ShardError::StaleSplitCopy) => {
                    tracing::info!(
                        shard = child.shard,
                        "the split's child copied ahead is stale; splitting it off afresh"
                    );
                }
                done => return Ok(done?),
            }
        }
        Ok(parent.split_off(store, child.shard, |id| child.keeps(id), 1, &meta)?)
    }

    /// Copies one child of a split (shard `child.shard` into the empty `store`) from
    /// `parent` before the parent is sealed (`Shard::split_ahead`), for
    /// [`ShardStateMachine::build_child`] to finish at the seal. Blocking.
    pub fn copy_child(
        parent: &Shard,
        store: shoal_storage::ShardStore,
        child: ChildSpec,
    ) -> Result<SplitCopy, RaftStoreError> {
        Ok(parent.split_ahead(store, child.shard, |id| child.keeps(id))?)
    }

    fn cached(&self) -> Option<Built> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn cache(&self, built: Built) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(built);
    }

    async fn build(&self) -> Result<Built, RaftStoreError> {
        let (shard, dir) = (self.shard.clone(), self.dir.clone());
        let (path, applied, points) = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let file = tempfile::Builder::new()
                .prefix(&format!("shard-{}-", shard.shard_no()))
                .suffix(".snap")
                .tempfile_in(&dir)?;
            let (file, path) = file.into_parts();
            let mut out = FrameWriter::new(file);
            let (_seq, meta, points) =
                shard.snapshot_chunks::<RaftStoreError>(CHUNK, |c| out.write(c))?;
            out.finish()?.sync_all()?;
            let applied = match meta {
                Some(b) if !b.is_empty() => ShardApplied::decode(&b)?,
                _ => ShardApplied::default(),
            };
            Ok((path, applied, points))
        })
        .await?;
        tracing::debug!(shard = self.shard.shard_no(), points, "built snapshot");
        let n = self.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let mut snapshot_id = match applied.last_applied {
            Some(l) => format!(
                "{}-{}-{}-{n}",
                l.leader_id.term, l.leader_id.node_id, l.index
            ),
            None => format!("none-{n}"),
        };
        if applied.sealed {
            snapshot_id.push_str(SEALED_SUFFIX);
        }
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        };
        Ok((meta, Arc::new(path)))
    }
}

/// Opens a built snapshot's file for one reader (each gets its own position).
async fn snapshot_of((meta, path): Built) -> Result<Snapshot<TypeConfig>, StorageError> {
    let file = tokio::fs::File::open(&**path)
        .await
        .map_err(|e| sm_err(e.into()))?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(file),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for ShardStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let built = self.build().await.map_err(sm_err)?;
        self.cache(built.clone());
        snapshot_of(built).await
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotBuilder = ShardStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError> {
        let a = Self::applied(&self.shard).map_err(sm_err)?;
        Ok((a.last_applied, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let (shard, sealed) = (self.shard.clone(), self.sealed.clone());
        blocking(move || {
            let mut applied = Self::applied(&shard)?;
            let mut replies = Vec::with_capacity(entries.len());
            for e in entries {
                let log_id = e.log_id;
                applied.last_applied = Some(log_id);
                let mut rejected = None;
                let write = match e.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Normal(Command::Shard(_)) if applied.sealed => {
                        rejected = Some(Rejection::Sealed);
                        None
                    }
                    EntryPayload::Normal(Command::Shard(write)) => Some(write),
                    EntryPayload::Normal(Command::Seal) => {
                        applied.sealed = true;
                        sealed.store(true, Ordering::Release);
                        None
                    }
                    EntryPayload::Normal(Command::Meta(_)) => {
                        rejected = Some(Rejection::WrongGroup);
                        None
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(log_id), m);
                        None
                    }
                };
                let meta = encode(&applied)?;
                match shard.apply_at(log_id.index + 1, write, &meta) {
                    // `Shard::check` refused it before storing anything. Validated
                    // before it was proposed, so this entry came from a bug or a
                    // forger: refused the same way on every replica (a no-op at its
                    // index), and the group goes on.
                    Err(ShardError::Invalid(e)) => {
                        tracing::error!(
                            shard = shard.shard_no(),
                            index = log_id.index,
                            reason = %e,
                            "refused an invalid committed write"
                        );
                        rejected = Some(Rejection::Invalid(e.to_string()));
                        shard.apply_at(log_id.index + 1, None, &meta)?;
                    }
                    r => {
                        r?;
                    }
                }
                replies.push(Reply {
                    applied: log_id.index,
                    rejected,
                });
            }
            Ok(replies)
        })
        .await
        .map_err(|e| storage_error::write_state_machine(e.any()))
    }

    async fn get_snapshot_builder(&mut self) -> ShardStateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let f =
            unnamed(Some(&self.dir)).map_err(|e| storage_error::write_state_machine(e.any()))?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let err = |e: RaftStoreError| storage_error::read_snapshot(Some(meta.signature()), e.any());
        let mut file = snapshot.into_std().await;
        let (points, bytes) = blocking(move || {
            use std::io::Seek;
            file.rewind()?;
            let bytes = file.metadata()?.len();
            Ok((read_points(file)?, bytes))
        })
        .await
        .map_err(err)?;
        let count = points.len();
        let applied = ShardApplied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            sealed: meta.snapshot_id.ends_with(SEALED_SUFFIX),
        };
        let sealed = applied.sealed;
        let snap = ShardSnapshot {
            seq: meta.last_log_id.map(|l| l.index + 1).unwrap_or(0),
            meta: Some(encode(&applied).map_err(err)?),
            points,
        };
        let shard = self.shard.clone();
        blocking(move || {
            let t = shard.install(snap)?;
            Ok(shard.sync(t)?)
        })
        .await
        .map_err(err)?;
        self.sealed.store(sealed, Ordering::Release);
        metrics::counter!(
            "shoal_raft_snapshot_installs_total",
            "collection" => self.shard.config().name.clone(),
            "shard" => self.shard.shard_no().to_string(),
        )
        .increment(1);
        tracing::info!(
            shard = self.shard.shard_no(),
            last_log_index = meta.last_log_id.map(|l| l.index),
            points = count,
            bytes,
            "installed snapshot"
        );
        // The shard now holds exactly the snapshot: the next request builds its own.
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if let Some(built) = self.cached() {
            return snapshot_of(built).await.map(Some);
        }
        let built = self.build().await.map_err(sm_err)?;
        if built.0.last_log_id.is_none() {
            // Nothing applied yet: there is no snapshot to speak of.
            return Ok(None);
        }
        self.cache(built.clone());
        snapshot_of(built).await.map(Some)
    }
}
