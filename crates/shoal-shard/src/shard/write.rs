//! Changing a shard: applying a [`Write`] at a sequence number, taking a consistent
//! snapshot, installing one, and waiting for durability.
//!
//! Every change holds the shard's writer lock on the caller's thread; only the
//! lock-free index inserts run on the shard's pool, so no pool job ever waits on that
//! lock (the pool-deadlock rule of ARCHITECTURE.md). Nothing here fsyncs: durability is
//! asked for with [`Shard::sync`].

use std::sync::atomic::Ordering;

use std::time::Instant;

use shoal_core::{Point, PointId, Write};
use shoal_index::InternalId;
use shoal_storage::{Ticket, WriteOp};

use super::Shard;
use super::state::{State, Writer, allocate, insert_vectors};
use crate::ShardError;

/// A consistent copy of a shard's contents (see [`Shard::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSnapshot {
    /// Sequence number of the last write included.
    pub seq: u64,
    /// The metadata stored with that write.
    pub meta: Option<Vec<u8>>,
    /// Every point, in id order.
    pub points: Vec<Point>,
}

impl Shard {
    /// Whether the leader may propose `write`: refuses an upsert that would take the
    /// shard past [`super::ShardOptions::max_payload_keys`] distinct payload key
    /// paths (`TooManyPayloadKeys`). Decided on this replica's state before anything
    /// is appended, so a refused write is provably not written; a bound, not an
    /// invariant: writes proposed at the same time may pass it together, and keys an
    /// upsert stops holding are not subtracted.
    pub fn admit(&self, write: &Write) -> Result<(), ShardError> {
        let limit = self.inner.options.max_payload_keys;
        let Write::Upsert(points) = write else {
            return Ok(());
        };
        if limit == 0 {
            return Ok(());
        }
        let (held, new) = self.inner.state.read().payload_keys(points);
        if new > 0 && held + new > limit {
            return Err(ShardError::TooManyPayloadKeys { held, new, limit });
        }
        Ok(())
    }

    /// Applies `write` (or nothing, for entries that only advance the sequence) as the
    /// write with sequence number `seq` — a Raft log index — and stores `meta` in the
    /// same atomic batch. The change is committed to storage and visible to searches on
    /// return, but durable only after [`Shard::sync`] with the returned ticket. A `seq`
    /// at or below the last applied one is skipped and returns `None`, so re-applying a
    /// log after a crash is harmless.
    ///
    /// Must not be called from a thread of the shard's pool: it holds the shard's
    /// writer lock while the pool inserts the vectors, and a pool thread waiting inside
    /// that insert may pick up any queued pool job — which must never be one that
    /// wants this lock.
    pub fn apply_at(
        &self,
        seq: u64,
        write: Option<Write>,
        meta: &[u8],
    ) -> Result<Option<Ticket>, ShardError> {
        let mut w = self.inner.writer.lock();
        if seq <= w.applied_seq {
            return Ok(None);
        }
        let ticket = match write {
            Some(write) => self.write_locked(&mut w, seq, write, Some(meta))?,
            None => {
                let t = self.inner.store.write_with_meta(&[], seq, Some(meta))?;
                w.applied_seq = seq;
                self.inner.applied.store(seq, Ordering::Release);
                t
            }
        };
        Ok(Some(ticket))
    }

    /// Applies `write` at the next sequence number, leaving the stored metadata as it
    /// is: a shard written to without a Raft log, for tests (`crate::testing`). Same
    /// threading rule as [`Shard::apply_at`].
    #[cfg(feature = "testing")]
    pub(crate) fn apply_next(&self, write: Write) -> Result<Ticket, ShardError> {
        let mut w = self.inner.writer.lock();
        let seq = w.applied_seq + 1;
        self.write_locked(&mut w, seq, write, None)
    }

    fn write_locked(
        &self,
        w: &mut Writer,
        seq: u64,
        write: Write,
        meta: Option<&[u8]>,
    ) -> Result<Ticket, ShardError> {
        // Nothing is stored before it is checked: a point the index would refuse must
        // not reach the disk, where every reopen would meet it again.
        self.check(&write).map_err(ShardError::Invalid)?;
        match write {
            Write::Upsert(points) => self.upsert_locked(w, seq, points, meta),
            Write::Delete(ids) => self.delete_locked(w, seq, ids, meta),
        }
    }

    fn upsert_locked(
        &self,
        w: &mut Writer,
        seq: u64,
        points: Vec<Point>,
        meta: Option<&[u8]>,
    ) -> Result<Ticket, ShardError> {
        let inner = &*self.inner;
        let ops: Vec<WriteOp<'_>> = points.iter().map(WriteOp::Upsert).collect();
        let ticket = inner.store.write_with_meta(&ops, seq, meta)?;
        drop(ops);
        w.applied_seq = seq;
        inner.applied.store(seq, Ordering::Release);
        let base = allocate(&mut w.next_internal, points.len())?;
        let index = inner.state.read().index.clone();
        insert_vectors(&inner.pools.foreground, &*index, base, &points)?;
        let items_len = points.len();
        if let Some(dirty) = inner.split.lock().dirty.as_mut() {
            dirty.extend(points.iter().map(|p| p.id));
        }
        let logged = w.rebuild_log.as_ref().map(|_| points.clone());
        inner
            .state
            .write()
            .publish_upserts(base, points.into_iter().map(|p| (p.id, p.payload)));
        if let (Some(log), Some(points)) = (w.rebuild_log.as_mut(), logged) {
            log.push(Write::Upsert(points));
        }
        w.since_checkpoint += items_len;
        w.last_write = Instant::now();
        self.maybe_start_rebuild(w);
        self.maybe_start_checkpoint(w);
        Ok(ticket)
    }

    fn delete_locked(
        &self,
        w: &mut Writer,
        seq: u64,
        ids: Vec<PointId>,
        meta: Option<&[u8]>,
    ) -> Result<Ticket, ShardError> {
        let inner = &*self.inner;
        let ops: Vec<WriteOp<'_>> = ids.iter().map(|id| WriteOp::Delete(*id)).collect();
        let ticket = inner.store.write_with_meta(&ops, seq, meta)?;
        w.applied_seq = seq;
        inner.applied.store(seq, Ordering::Release);
        w.last_write = Instant::now();
        inner.state.write().publish_deletes(&ids);
        if let Some(dirty) = inner.split.lock().dirty.as_mut() {
            dirty.extend(ids.iter().copied());
        }
        if let Some(log) = w.rebuild_log.as_mut() {
            log.push(Write::Delete(ids));
        }
        self.maybe_start_rebuild(w);
        Ok(ticket)
    }

    /// The metadata stored with the last [`Shard::apply_at`] or [`Shard::install`].
    pub fn meta(&self) -> Result<Option<Vec<u8>>, ShardError> {
        Ok(self.inner.store.meta()?)
    }

    /// A consistent copy of the shard: its points, sequence number and metadata, taken
    /// with writes held off.
    pub fn snapshot(&self) -> Result<ShardSnapshot, ShardError> {
        let w = self.inner.writer.lock();
        let st = self.inner.state.read();
        let points = st.points().collect();
        Ok(ShardSnapshot {
            seq: w.applied_seq,
            meta: self.inner.store.meta()?,
            points,
        })
    }

    /// A point-in-time copy of the shard for a backup, read from a storage snapshot
    /// without holding off writes: the sequence number it was taken at and its points
    /// in id order (an iterator to stream, never all in memory; drop it soon).
    #[allow(clippy::type_complexity)]
    pub fn export(
        &self,
    ) -> Result<
        (
            u64,
            impl Iterator<Item = Result<Point, ShardError>> + Send + use<>,
        ),
        ShardError,
    > {
        let (seq, points) = self.inner.store.export()?;
        Ok((seq, points.map(|p| p.map_err(ShardError::from))))
    }

    /// Like [`Shard::snapshot`], but hands the points to `sink` in id order, `chunk` at
    /// a time, instead of collecting them: a snapshot of any size needs only one chunk
    /// in memory. Writes wait meanwhile (the points are read under the writer lock so
    /// that they match the returned sequence number and metadata). Returns those and
    /// the number of points.
    pub fn snapshot_chunks<E>(
        &self,
        chunk: usize,
        mut sink: impl FnMut(&[Point]) -> Result<(), E>,
    ) -> Result<(u64, Option<Vec<u8>>, u64), E>
    where
        E: From<ShardError>,
    {
        let w = self.inner.writer.lock();
        let st = self.inner.state.read();
        let mut buf = Vec::with_capacity(chunk.max(1));
        let mut count = 0u64;
        for point in st.points() {
            buf.push(point);
            if buf.len() >= chunk.max(1) {
                count += buf.len() as u64;
                sink(&buf)?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            count += buf.len() as u64;
            sink(&buf)?;
        }
        let meta = self.inner.store.meta().map_err(ShardError::from)?;
        Ok((w.applied_seq, meta, count))
    }

    /// Replaces the shard's whole contents with a snapshot (a follower catching up):
    /// storage atomically, then the index is rebuilt. Durable after [`Shard::sync`].
    pub fn install(&self, snapshot: ShardSnapshot) -> Result<Ticket, ShardError> {
        let inner = &*self.inner;
        let mut w = inner.writer.lock();
        let meta = snapshot.meta.unwrap_or_default();
        let mut points = snapshot.points;
        let before = points.len();
        points.retain(|p| match Self::check_point(&inner.config, p) {
            Ok(()) => true,
            Err(reason) => {
                tracing::error!(
                    shard = inner.shard_no,
                    point = %p.id,
                    %reason,
                    "left an invalid point of a snapshot out"
                );
                false
            }
        });
        let left_out = (before - points.len()) as u64;
        inner.quarantined.fetch_add(left_out, Ordering::Relaxed);
        let ticket = inner.store.replace_all(&points, snapshot.seq, &meta)?;
        let state = State::build(
            &inner.config,
            inner.options.backend,
            &inner.pools.build,
            points,
        )?;
        w.next_internal = state.records.len() as InternalId;
        w.since_checkpoint = state.ids.len();
        *inner.state.write() = state;
        w.applied_seq = snapshot.seq;
        inner.applied.store(snapshot.seq, Ordering::Release);
        w.rebuild_log = None;
        inner.rebuilding.store(false, Ordering::Release);
        // Children copied ahead of a split no longer match: they are built anew.
        {
            let mut split = inner.split.lock();
            split.dirty = None;
            split.epoch += 1;
        }
        w.generation += 1;
        Ok(ticket)
    }

    /// Waits until the write of `ticket` is durable.
    pub fn sync(&self, ticket: Ticket) -> Result<(), ShardError> {
        Ok(self.inner.store.sync(ticket)?)
    }
}
