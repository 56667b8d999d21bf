//! A split's children, made from their parent shard.
//!
//! A split seals the parent (it takes no more writes) and opens two children, each
//! holding the parent's points of one half of its hash range. Everything done
//! between the seal and the children's opening is a pause of the shard's writes, so
//! as little as possible happens there:
//!
//! - **Ahead of the seal** ([`Shard::split_ahead`]), while the parent still takes
//!   writes: a child's points are copied into its store (under sequence number 0,
//!   which no reopen takes for a built shard: a restart builds it again) and its index
//!   opened from the parent's newest checkpoint; from that moment on, the parent
//!   records the ids every write touches.
//! - **At the seal** ([`Shard::finish_split`]): only those ids are brought up to date
//!   in the child (upserted as the parent holds them, or deleted), with the child's
//!   sequence number and metadata, in one batch; then synced.
//! - **Without a copy** (none made, or the parent installed a snapshot since, which
//!   makes it stale): [`Shard::split_off`] does it all in the pause.
//!
//! Neither may be called from a thread of the shard's pools (they wait on them).

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use shoal_core::{Point, PointId};
use shoal_storage::{ShardStore, Ticket, WriteOp};

use super::Shard;
use super::state::{allocate, insert_vectors};
use crate::ShardError;
use crate::checkpoint;

/// A split's child copied ahead of its parent's seal ([`Shard::split_ahead`]); made
/// a shard by [`Shard::finish_split`] once the parent is sealed.
pub struct SplitCopy {
    shard: Shard,
    /// The parent's split epoch the copy was taken in.
    epoch: u64,
}

impl std::fmt::Debug for SplitCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitCopy")
            .field("shard", &self.shard.shard_no())
            .field("points", &self.shard.stats().points)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl SplitCopy {
    /// Points the copy holds so far.
    pub fn points(&self) -> u64 {
        self.shard.stats().points
    }
}

impl Shard {
    /// Copies the points of this shard that `keep` selects into the empty `store`
    /// (a split's child numbered `shard_no`) while this shard still takes writes, and
    /// opens the copy's index from this shard's newest checkpoint (see
    /// [`Shard::ready_to_split`]). From now on this shard records which ids its writes
    /// touch, for [`Shard::finish_split`]. The copy's store is not synced: nothing in
    /// it is durable or counts until the finish.
    pub fn split_ahead(
        &self,
        store: ShardStore,
        shard_no: u32,
        keep: impl Fn(&PointId) -> bool,
    ) -> Result<SplitCopy, ShardError> {
        let (points, epoch) = {
            // No write between the copy and the start of the record.
            let _w = self.inner.writer.lock();
            let mut split = self.inner.split.lock();
            split.dirty.get_or_insert_with(HashSet::new);
            let st = self.inner.state.read();
            let points: Vec<Point> = st.points().filter(|p| keep(&p.id)).collect();
            (points, split.epoch)
        };
        let linked = self.link_checkpoint_into(&store);
        store.replace_all(&points, 0, &[])?;
        tracing::debug!(
            linked,
            points = points.len(),
            "copied a split's child ahead of the seal"
        );
        drop(points);
        let shard = self.open_child(shard_no, store)?;
        Ok(SplitCopy { shard, epoch })
    }

    /// Forgets which ids this shard's writes touched since a split's children were
    /// copied: every copy made so far is stale ([`Shard::finish_split`] refuses it),
    /// and the next [`Shard::split_ahead`] starts the record afresh. For copies that
    /// fell too far behind, before copying again.
    pub fn split_restart(&self) {
        let mut split = self.inner.split.lock();
        split.dirty = None;
        split.epoch += 1;
    }

    /// How many ids this shard's writes touched since a split's children were copied
    /// ahead of the seal (what [`Shard::finish_split`] would bring up to date): `None`
    /// without copies. Never waits for the writer lock.
    pub fn split_dirty(&self) -> Option<usize> {
        self.inner.split.lock().dirty.as_ref().map(|d| d.len())
    }

    /// Makes `copy` (from [`Shard::split_ahead`] on this shard, with the same `keep`)
    /// the child: the ids this shard's writes touched since the copy are upserted as
    /// this shard holds them or deleted, stored with sequence number `seq` and
    /// metadata `meta`, and synced. Must be called while this shard takes no writes
    /// (sealed). [`ShardError::StaleSplitCopy`] if this shard's contents were replaced
    /// since (a snapshot install) or [`Shard::split_restart`] was called: the caller
    /// splits off afresh.
    pub fn finish_split(
        &self,
        copy: SplitCopy,
        keep: impl Fn(&PointId) -> bool,
        seq: u64,
        meta: &[u8],
    ) -> Result<Shard, ShardError> {
        let (upserts, deletes) = {
            // Not the writer lock: sealed, the shard takes no writes, and a checkpoint
            // begun before the seal may hold that lock for seconds.
            let split = self.inner.split.lock();
            let dirty = match &split.dirty {
                Some(d) if split.epoch == copy.epoch => d,
                _ => return Err(ShardError::StaleSplitCopy),
            };
            let st = self.inner.state.read();
            let mut upserts = Vec::new();
            let mut deletes = Vec::new();
            for id in dirty.iter().filter(|id| keep(id)) {
                match st.point(id) {
                    Some(p) => upserts.push(p),
                    None => deletes.push(*id),
                }
            }
            (upserts, deletes)
        };
        let child = copy.shard;
        let (changed, removed) = (upserts.len(), deletes.len());
        let ticket = child.apply_delta(seq, upserts, deletes, meta)?;
        child.sync(ticket)?;
        // As for `split_off`: the linked checkpoint serves a reopen; the graph's
        // tombstones go with the background rebuild a later write starts.
        child.inner.writer.lock().since_checkpoint = 0;
        tracing::debug!(
            changed,
            removed,
            "finished a split's child copied ahead of the seal"
        );
        Ok(child)
    }

    /// Stores `upserts` and `deletes` in one batch at `seq` with `meta`, and brings
    /// the index up to date (on the build pool: the pause waits for it). Starts no
    /// rebuild or checkpoint.
    fn apply_delta(
        &self,
        seq: u64,
        upserts: Vec<Point>,
        deletes: Vec<PointId>,
        meta: &[u8],
    ) -> Result<Ticket, ShardError> {
        let inner = &*self.inner;
        let mut w = inner.writer.lock();
        let mut ops: Vec<WriteOp<'_>> = upserts.iter().map(WriteOp::Upsert).collect();
        ops.extend(deletes.iter().map(|id| WriteOp::Delete(*id)));
        let ticket = inner.store.write_with_meta(&ops, seq, Some(meta))?;
        drop(ops);
        w.applied_seq = seq;
        inner.applied.store(seq, Ordering::Release);
        let base = allocate(&mut w.next_internal, upserts.len())?;
        let index = inner.state.read().index.clone();
        insert_vectors(&inner.pools.build, &*index, base, &upserts)?;
        let mut st = inner.state.write();
        st.publish_upserts(base, upserts.into_iter().map(|p| (p.id, p.payload)));
        st.publish_deletes(&deletes);
        Ok(ticket)
    }
}

impl Shard {
    /// Creates a new shard in the empty `store` holding the points of this shard that
    /// `keep` selects, stored with sequence number `seq` and metadata `meta` (a split's
    /// child). Starts from this shard's index: its newest checkpoint (saved now unless
    /// fresh, see [`Shard::ready_to_split`]) is linked into the new shard's checkpoint
    /// directory, and opening reconciles it with the stored
    /// points (the others' graph nodes deleted, nothing re-inserted), so no graph is
    /// built; the tombstones go with the background rebuild its first write starts
    /// ([`Shard::is_rebuilding`] tells while it runs). Must be called
    /// while this shard takes no writes (sealed), from outside its pool.
    pub fn split_off(
        &self,
        store: ShardStore,
        shard_no: u32,
        keep: impl Fn(&PointId) -> bool,
        seq: u64,
        meta: &[u8],
    ) -> Result<Shard, ShardError> {
        // A fresh checkpoint (see `ready_to_split`, which the split asks for before
        // the seal) serves as it is: the new shard re-inserts the few points written
        // since, instead of this pause dumping the whole graph. A checkpoint failure
        // only costs time: the new shard then builds its graph.
        let fresh = self.checkpoint_fresh(&self.inner.writer.lock());
        if !fresh && let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "no checkpoint to split off from; building the graph");
        }
        let linked = self.link_checkpoint_into(&store);
        let points: Vec<Point> = {
            let st = self.inner.state.read();
            st.points().filter(|p| keep(&p.id)).collect()
        };
        store.sync(store.replace_all(&points, seq, meta)?)?;
        tracing::debug!(linked, points = points.len(), "split off a shard");
        drop(points);
        let shard = self.open_child(shard_no, store)?;
        // The linked checkpoint serves a reopen (reconciled again, cheaply): no
        // checkpoint now, which would hold the new shard's writes while it dumps. Its
        // graph is compacted by the background rebuild its first write starts (not at
        // once: every replica's children compacting while the split is still in
        // flight starved a shared machine, BENCHMARKS.md "Resharding").
        shard.inner.writer.lock().since_checkpoint = 0;
        Ok(shard)
    }
}

impl Shard {
    /// Hard-links this shard's newest index checkpoint into `store`'s checkpoint
    /// directory, for a split's child to start its index from. A failure only costs
    /// time (the child then builds its graph): logged, and false.
    fn link_checkpoint_into(&self, store: &ShardStore) -> bool {
        checkpoint::link_latest(self.inner.store.derived_dir(), store.derived_dir()).unwrap_or_else(
            |e| {
                tracing::warn!(error = %e, "linking the checkpoint failed; building the graph");
                false
            },
        )
    }

    /// Opens the split's child `shard_no` in `store` with this shard's collection,
    /// options and pools, saving no checkpoint.
    fn open_child(&self, shard_no: u32, store: ShardStore) -> Result<Shard, ShardError> {
        Shard::open_quietly(
            self.inner.config.clone(),
            shard_no,
            store,
            self.inner.options.clone(),
            self.inner.pools.clone(),
        )
    }
}
