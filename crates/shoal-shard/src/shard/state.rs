//! What a shard derives from its stored points ([`State`]: the index, the id map, the
//! records and the payload index) and what its single writer owns ([`Writer`]), with
//! the helpers that build and extend the derived state.
//!
//! `State` is read under the shard's state lock and replaced wholesale by a rebuild or
//! a snapshot install. It must never be changed by anyone not holding the writer lock,
//! and a record is published or retired together with its payload-index entries, in
//! one state write.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use roaring::RoaringBitmap;
use shoal_core::{
    CollectionConfig, Condition, Filter, Payload, Point, PointId, RetrievedPoint, Write,
};
use shoal_index::{Backend, IndexParams, InternalId, VectorIndex};

use crate::ShardError;
use crate::payload_index::{PayloadIndex, Records};

/// A point's in-memory record, by internal id.
pub(super) struct Record {
    pub(super) id: PointId,
    pub(super) payload: Payload,
}

/// Everything derived from the stored points. Replaced wholesale by a rebuild.
pub(super) struct State {
    pub(super) index: Arc<dyn VectorIndex>,
    pub(super) ids: BTreeMap<PointId, InternalId>,
    /// Indexed by internal id; `None` for replaced or deleted versions and for ids
    /// inserted into the index but not yet published.
    pub(super) records: Vec<Option<Record>>,
    /// The published records' payloads, indexed for filters.
    payloads: PayloadIndex,
}

impl Records for State {
    fn internal_id(&self, id: &PointId) -> Option<InternalId> {
        self.ids.get(id).copied()
    }

    fn matches(&self, iid: InternalId, condition: &Condition) -> bool {
        self.record(iid)
            .is_some_and(|r| condition.matches(&r.id, &r.payload))
    }
}

impl State {
    /// The distinct payload key paths indexed, and how many of `points`' are not.
    pub(super) fn payload_keys(&self, points: &[Point]) -> (usize, usize) {
        (
            self.payloads.key_count(),
            self.payloads.unseen_keys(points.iter().map(|p| &p.payload)),
        )
    }

    pub(super) fn new(index: Arc<dyn VectorIndex>, capacity: usize) -> State {
        State {
            index,
            ids: BTreeMap::new(),
            records: Vec::with_capacity(capacity),
            payloads: PayloadIndex::new(),
        }
    }

    /// Builds fresh derived state over `points` with dense internal ids `0..n`.
    /// Inserts in parallel on `pool`.
    pub(super) fn build(
        config: &CollectionConfig,
        backend: Backend,
        pool: &rayon::ThreadPool,
        points: Vec<Point>,
    ) -> Result<State, ShardError> {
        let index: Arc<dyn VectorIndex> = Arc::from(shoal_index::new_index(
            backend,
            index_params(config, points.len()),
        ));
        insert_vectors(pool, &*index, 0, &points)?;
        let mut state = State::new(index, points.len());
        state.publish_upserts(0, points.into_iter().map(|p| (p.id, p.payload)));
        Ok(state)
    }

    pub(super) fn is_live(&self, id: InternalId) -> bool {
        matches!(self.records.get(id as usize), Some(Some(_)))
    }

    pub(super) fn record(&self, id: InternalId) -> Option<&Record> {
        self.records.get(id as usize).and_then(Option::as_ref)
    }

    /// The live point `id`, if the shard holds it.
    pub(super) fn point(&self, id: &PointId) -> Option<Point> {
        let iid = *self.ids.get(id)?;
        Some(Point {
            id: *id,
            vector: self.index.vector(iid)?,
            payload: self.record(iid)?.payload.clone(),
        })
    }

    /// Every live point, in id order.
    pub(super) fn points(&self) -> impl Iterator<Item = Point> + '_ {
        self.ids.iter().filter_map(|(id, iid)| {
            Some(Point {
                id: *id,
                vector: self.index.vector(*iid)?,
                payload: self.record(*iid)?.payload.clone(),
            })
        })
    }

    /// Publishes points already inserted into the index under `base..`, retiring the
    /// versions they replace.
    pub(super) fn publish_upserts(
        &mut self,
        base: InternalId,
        points: impl IntoIterator<Item = (PointId, Payload)>,
    ) {
        for (i, (id, payload)) in points.into_iter().enumerate() {
            let new = base + i as InternalId;
            if let Some(old) = self.ids.insert(id, new) {
                self.retire(old);
            }
            self.put(new, Record { id, payload });
        }
    }

    /// Stores the record of internal id `iid` (already in `ids`) and indexes it.
    pub(super) fn put(&mut self, iid: InternalId, record: Record) {
        let slot = iid as usize;
        if self.records.len() <= slot {
            self.records.resize_with(slot + 1, || None);
        }
        if let Some(old) = self.records[slot].take() {
            self.payloads.remove(iid, &old.payload);
        }
        self.payloads.insert(iid, &record.payload);
        self.records[slot] = Some(record);
    }

    pub(super) fn publish_deletes(&mut self, ids: &[PointId]) {
        for id in ids {
            if let Some(old) = self.ids.remove(id) {
                self.retire(old);
            }
        }
    }

    fn retire(&mut self, old: InternalId) {
        self.index.delete(old);
        if let Some(rec) = self.records.get_mut(old as usize).and_then(Option::take) {
            self.payloads.remove(old, &rec.payload);
        }
    }

    pub(super) fn retrieved(
        &self,
        iid: InternalId,
        with_payload: bool,
        with_vector: bool,
    ) -> Option<RetrievedPoint> {
        let rec = self.record(iid)?;
        Some(RetrievedPoint {
            id: rec.id,
            payload: with_payload.then(|| rec.payload.clone()),
            vector: if with_vector {
                self.index.vector(iid)
            } else {
                None
            },
        })
    }

    /// The live points matching `filter`, from the payload index.
    pub(super) fn matching(&self, filter: &Filter) -> std::borrow::Cow<'_, RoaringBitmap> {
        self.payloads.evaluate(filter, self)
    }
}

/// State owned by the (single) writer of a shard.
pub(super) struct Writer {
    pub(super) applied_seq: u64,
    pub(super) next_internal: InternalId,
    /// Writes applied since the running rebuild took its snapshot.
    pub(super) rebuild_log: Option<Vec<Write>>,
    /// Points written since the last checkpoint.
    pub(super) since_checkpoint: usize,
    /// A background checkpoint is running.
    pub(super) checkpointing: bool,
    /// When the last write was applied (or the shard opened).
    pub(super) last_write: Instant,
    /// Bumped when a snapshot replaces the shard's contents: a rebuild that started
    /// from an older generation must not swap its result in.
    pub(super) generation: u64,
}

/// Which ids a shard's writes touched since a split's children were copied ahead of
/// the seal ([`super::Shard::split_ahead`]). Behind a lock of its own, taken inside
/// the writer lock by writes and alone by the split's finish, which must not wait for
/// a checkpoint that holds the writer lock.
#[derive(Default)]
pub(super) struct SplitTrack {
    /// What the copies still need; `None` before any copy.
    pub(super) dirty: Option<HashSet<PointId>>,
    /// Bumped whenever `dirty` starts over (a snapshot install, or
    /// [`super::Shard::split_restart`]): copies of an older epoch are stale.
    pub(super) epoch: u64,
}

pub(super) fn index_params(config: &CollectionConfig, capacity_hint: usize) -> IndexParams {
    IndexParams {
        dim: config.dim as usize,
        metric: config.metric,
        m: config.hnsw.m as usize,
        ef_construction: config.hnsw.ef_construction as usize,
        capacity_hint,
    }
}

/// Inserts the points' vectors into `index` under ids `base, base + 1, …`, in
/// parallel on `pool`.
pub(super) fn insert_vectors(
    pool: &rayon::ThreadPool,
    index: &dyn VectorIndex,
    base: InternalId,
    points: &[Point],
) -> Result<(), ShardError> {
    let items: Vec<(InternalId, &[f32])> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (base + i as InternalId, p.vector.as_slice()))
        .collect();
    Ok(pool.install(|| index.insert(&items))?)
}

/// Reserves `n` internal ids from `next`; returns the first.
pub(super) fn allocate(next: &mut InternalId, n: usize) -> Result<InternalId, ShardError> {
    let base = *next;
    *next = base
        .checked_add(n as InternalId)
        .filter(|_| n <= InternalId::MAX as usize)
        .ok_or_else(|| {
            ShardError::Index(shoal_index::IndexError::Unsupported(
                "internal id space exhausted; the shard's index must be rebuilt".into(),
            ))
        })?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_refuses_to_run_past_the_id_space() {
        let mut next: InternalId = 5;
        assert_eq!(allocate(&mut next, 3).unwrap(), 5);
        assert_eq!(next, 8);
        assert_eq!(allocate(&mut next, 0).unwrap(), 8);
        let mut next = InternalId::MAX - 1;
        assert!(allocate(&mut next, 2).is_err());
        assert_eq!(allocate(&mut next, 1).unwrap(), InternalId::MAX - 1);
    }
}
