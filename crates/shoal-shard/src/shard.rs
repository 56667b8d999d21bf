//! The shard: write application, derived state, searches and background rebuilds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use shoal_core::{
    CollectionConfig, Condition, Filter, Payload, Point, PointId, RetrievedPoint, ScoredPoint,
    SearchRequest, Write,
};
use shoal_index::{Backend, Hit, IdFilter, IndexParams, InternalId, VectorIndex};
use shoal_storage::{ShardStore, Ticket, WriteOp};

use crate::ShardError;
use crate::checkpoint;
use crate::payload_index::{PayloadIndex, Records};

/// Tuning knobs of a shard.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Index implementation.
    pub backend: Backend,
    /// Shards with at most this many live points are searched exactly.
    pub exact_threshold: usize,
    /// Filtered searches whose filter matches at most this fraction of the shard scan
    /// the matches exactly instead of searching the graph.
    pub filter_exact_fraction: f64,
    /// Rebuild the index once tombstones exceed this fraction of live points...
    pub rebuild_tombstone_ratio: f64,
    /// ...and number at least this many.
    pub rebuild_min_tombstones: usize,
    /// Save an index checkpoint in the background once the points written since the
    /// last one reach this many, or a tenth of the shard if that is more (0: only on
    /// demand). A restart re-inserts at most that many points per shard.
    pub checkpoint_every: usize,
    /// A shard with points written since its last checkpoint and no write for this
    /// long saves one when asked ([`Shard::checkpoint_if_idle`]), so a node killed
    /// after a burst of writes restarts as fast as after a graceful stop. Ignored when
    /// `checkpoint_every` is 0.
    pub checkpoint_idle: Duration,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            backend: Backend::default(),
            // Measured with the hnsw_rs backend (BENCHMARKS in the README): an exact scan
            // of 10k 128-d vectors takes ~160 µs, a graph search at ef 64 ~340 µs.
            // Native HNSW at ef 64 beats an exact scan well below this size; below it
            // the scan is about as fast and exact.
            exact_threshold: 1_000,
            filter_exact_fraction: 0.05,
            rebuild_tombstone_ratio: 0.5,
            rebuild_min_tombstones: 1_000,
            checkpoint_every: 10_000,
            checkpoint_idle: Duration::from_secs(5),
        }
    }
}

/// Counters describing a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardStats {
    pub points: u64,
    pub tombstones: u64,
    pub applied_seq: u64,
}

/// A point's in-memory record, by internal id.
struct Record {
    id: PointId,
    payload: Payload,
}

/// Everything derived from the stored points. Replaced wholesale by a rebuild.
struct State {
    index: Arc<dyn VectorIndex>,
    ids: BTreeMap<PointId, InternalId>,
    /// Indexed by internal id; `None` for replaced or deleted versions and for ids
    /// inserted into the index but not yet published.
    records: Vec<Option<Record>>,
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
    fn new(index: Arc<dyn VectorIndex>, capacity: usize) -> State {
        State {
            index,
            ids: BTreeMap::new(),
            records: Vec::with_capacity(capacity),
            payloads: PayloadIndex::new(),
        }
    }

    fn is_live(&self, id: InternalId) -> bool {
        matches!(self.records.get(id as usize), Some(Some(_)))
    }

    fn record(&self, id: InternalId) -> Option<&Record> {
        self.records.get(id as usize).and_then(Option::as_ref)
    }

    /// Publishes points already inserted into the index under `base..`, retiring the
    /// versions they replace.
    fn publish_upserts(
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
    fn put(&mut self, iid: InternalId, record: Record) {
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

    fn publish_deletes(&mut self, ids: &[PointId]) {
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

    fn retrieved(
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
    fn matching(&self, filter: &Filter) -> std::borrow::Cow<'_, RoaringBitmap> {
        self.payloads.evaluate(filter, self)
    }
}

/// State owned by the (single) writer of a shard.
struct Writer {
    applied_seq: u64,
    next_internal: InternalId,
    /// Writes applied since the running rebuild took its snapshot.
    rebuild_log: Option<Vec<Write>>,
    /// Points written since the last checkpoint.
    since_checkpoint: usize,
    /// A background checkpoint is running.
    checkpointing: bool,
    /// When the last write was applied (or the shard opened).
    last_write: Instant,
    /// Bumped when a snapshot replaces the shard's contents: a rebuild that started
    /// from an older generation must not swap its result in.
    generation: u64,
}

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

struct Inner {
    config: Arc<CollectionConfig>,
    /// Where index inserts run in parallel. Locks are never held by jobs on this pool
    /// across a rayon join, so a pool thread can never wait on a lock its own stack
    /// holds (see [`Shard::apply_at`]).
    pool: Arc<rayon::ThreadPool>,
    shard_no: u32,
    store: ShardStore,
    options: ShardOptions,
    writer: Mutex<Writer>,
    state: RwLock<State>,
}

/// One shard. Cheap to clone; all clones are the same shard.
#[derive(Clone)]
pub struct Shard {
    inner: Arc<Inner>,
}

fn index_params(config: &CollectionConfig, capacity_hint: usize) -> IndexParams {
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
fn insert_vectors(
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

/// Builds fresh derived state over `points` with dense internal ids `0..n`. Inserts
/// in parallel on `pool`.
fn build_state(
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

/// Derived state from a checkpointed index and id map, brought up to date with the
/// points in storage: unchanged points keep their graph node, changed and new ones are
/// inserted under fresh ids, and nodes of points no longer stored are deleted.
/// Returns the state, the next free internal id, and how many points differed from
/// the checkpoint.
fn reconcile(
    pool: &rayon::ThreadPool,
    index: Arc<dyn VectorIndex>,
    map: checkpoint::IdMap,
    store: &ShardStore,
) -> Result<(State, (InternalId, usize)), ShardError> {
    let mut checkpointed: std::collections::HashMap<PointId, InternalId> =
        map.ids.into_iter().collect();
    let mut next = map.next_internal;
    let mut state = State::new(index.clone(), 0);
    state.records.resize_with(next as usize, || None);
    let mut fresh: Vec<Point> = Vec::new();
    for p in store.points() {
        let p = p?;
        match checkpointed.remove(&p.id) {
            Some(iid)
                if (iid as usize) < state.records.len()
                    && index.vector(iid).as_deref() == Some(&p.vector[..]) =>
            {
                state.ids.insert(p.id, iid);
                state.put(
                    iid,
                    Record {
                        id: p.id,
                        payload: p.payload,
                    },
                );
            }
            Some(iid) => {
                index.delete(iid);
                fresh.push(p);
            }
            None => fresh.push(p),
        }
    }
    let stale = checkpointed.len();
    for iid in checkpointed.into_values() {
        index.delete(iid);
    }
    let base = allocate(&mut next, fresh.len())?;
    insert_vectors(pool, &*index, base, &fresh)?;
    tracing::info!(
        kept = state.ids.len(),
        reinserted = fresh.len(),
        removed = stale,
        "checkpoint reconciled with storage"
    );
    let diverged = fresh.len() + stale;
    state.publish_upserts(base, fresh.into_iter().map(|p| (p.id, p.payload)));
    Ok((state, (next, diverged)))
}

fn allocate(next: &mut InternalId, n: usize) -> Result<InternalId, ShardError> {
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

impl Shard {
    /// Opens shard `shard_no` of a collection: loads its points from `store` and
    /// builds the index (in parallel on `pool`, which index inserts of later writes
    /// use too).
    pub fn open(
        config: Arc<CollectionConfig>,
        shard_no: u32,
        store: ShardStore,
        options: ShardOptions,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Shard, ShardError> {
        let applied_seq = store.applied_seq()?;
        let params = index_params(&config, 0);
        let (state, next_internal) = match checkpoint::read_latest(store.derived_dir(), &params) {
            Some((index, ids)) => reconcile(&pool, Arc::from(index), ids, &store)?,
            None => {
                let points: Vec<Point> = store.points().collect::<Result<_, _>>()?;
                let state = build_state(&config, options.backend, &pool, points)?;
                let next = state.records.len() as InternalId;
                let all = state.ids.len();
                (state, (next, all))
            }
        };
        let (next_internal, diverged) = next_internal;
        let shard = Shard {
            inner: Arc::new(Inner {
                config,
                pool,
                shard_no,
                store,
                options,
                writer: Mutex::new(Writer {
                    applied_seq,
                    next_internal,
                    rebuild_log: None,
                    since_checkpoint: diverged,
                    checkpointing: false,
                    last_write: Instant::now(),
                    generation: 0,
                }),
                state: RwLock::new(state),
            }),
        };
        // Save what the open had to rebuild, so the next one need not.
        shard.maybe_start_checkpoint(&mut shard.inner.writer.lock());
        Ok(shard)
    }

    /// The shard's number within its collection.
    pub fn shard_no(&self) -> u32 {
        self.inner.shard_no
    }

    /// The configuration of the shard's collection.
    pub fn config(&self) -> &CollectionConfig {
        &self.inner.config
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
        let base = allocate(&mut w.next_internal, points.len())?;
        let index = inner.state.read().index.clone();
        insert_vectors(&inner.pool, &*index, base, &points)?;
        let items_len = points.len();
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
        w.last_write = Instant::now();
        inner.state.write().publish_deletes(&ids);
        if let Some(log) = w.rebuild_log.as_mut() {
            log.push(Write::Delete(ids));
        }
        self.maybe_start_rebuild(w);
        Ok(ticket)
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
        match write {
            Write::Upsert(points) => self.upsert_locked(w, seq, points, meta),
            Write::Delete(ids) => self.delete_locked(w, seq, ids, meta),
        }
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
        let points = st
            .ids
            .iter()
            .filter_map(|(id, iid)| {
                Some(Point {
                    id: *id,
                    vector: st.index.vector(*iid)?,
                    payload: st.record(*iid)?.payload.clone(),
                })
            })
            .collect();
        Ok(ShardSnapshot {
            seq: w.applied_seq,
            meta: self.inner.store.meta()?,
            points,
        })
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
        for (id, iid) in st.ids.iter() {
            let (Some(vector), Some(record)) = (st.index.vector(*iid), st.record(*iid)) else {
                continue;
            };
            buf.push(Point {
                id: *id,
                vector,
                payload: record.payload.clone(),
            });
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
        let ticket = inner
            .store
            .replace_all(&snapshot.points, snapshot.seq, &meta)?;
        let state = build_state(
            &inner.config,
            inner.options.backend,
            &inner.pool,
            snapshot.points,
        )?;
        w.next_internal = state.records.len() as InternalId;
        w.since_checkpoint = state.ids.len();
        *inner.state.write() = state;
        w.applied_seq = snapshot.seq;
        w.rebuild_log = None;
        w.generation += 1;
        Ok(ticket)
    }

    /// Waits until the write of `ticket` is durable.
    pub fn sync(&self, ticket: Ticket) -> Result<(), ShardError> {
        Ok(self.inner.store.sync(ticket)?)
    }

    /// Nearest neighbours of a validated query within this shard, nearest first.
    pub fn search(&self, req: &SearchRequest) -> Vec<ScoredPoint> {
        // With no bound on the scan, every strategy is light: never `None`.
        self.search_if_light(req, usize::MAX).unwrap_or_default()
    }

    /// [`Shard::search`] if it is a bounded amount of work — a graph search (its cost
    /// bounded by `ef`) or an exact scan of at most `max_scan` vectors — else `None`,
    /// decided before any distance is computed (declined: an exact scan of more than
    /// `max_scan` vectors in a shard larger than the exact threshold). Callers use it
    /// to run light searches on their own thread and hand the others to a pool.
    pub fn search_if_light(
        &self,
        req: &SearchRequest,
        max_scan: usize,
    ) -> Option<Vec<ScoredPoint>> {
        let st = self.inner.state.read();
        let opts = &self.inner.options;
        let k = req.top_k as usize;
        let ef = req.effective_ef();
        let q = req.vector.as_slice();
        let live_count = st.ids.len();
        let hits: Vec<Hit> = match &req.filter {
            None => {
                let live = |id: InternalId| st.is_live(id);
                if live_count <= opts.exact_threshold {
                    st.index.exact_search(q, k, Some(&live))
                } else {
                    // Unfiltered graph search (a filter makes backends take a slower
                    // path). Hits not yet published by a concurrent write are dropped;
                    // only if that leaves fewer than k is the search redone with the
                    // liveness check in the loop.
                    let mut hits = st.index.search(q, k, ef, None);
                    hits.retain(|h| st.is_live(h.id));
                    if hits.len() < k.min(live_count) {
                        hits = st.index.search(q, k, ef, Some(&live));
                    }
                    hits
                }
            }
            Some(filter) => {
                let matches = st.matching(filter);
                let count = matches.len() as usize;
                let among = || matches.iter().collect::<Vec<InternalId>>();
                let small = count <= k
                    || live_count <= opts.exact_threshold
                    || (count as f64) <= opts.filter_exact_fraction * live_count as f64;
                if small {
                    // A shard within the exact threshold is always cheap to scan.
                    if count > max_scan && live_count > opts.exact_threshold.max(max_scan) {
                        return None;
                    }
                    st.index.exact_search_among(q, k, &among())
                } else {
                    let accept = |id: InternalId| matches.contains(id);
                    let hits = st.index.search(q, k, ef, Some(&accept as &dyn IdFilter));
                    if hits.len() < k.min(count) {
                        st.index.exact_search_among(q, k, &among())
                    } else {
                        hits
                    }
                }
            }
        };
        let metric = self.inner.config.metric;
        Some(
            hits.into_iter()
                .filter_map(|h| {
                    let rec = st.record(h.id)?;
                    Some(ScoredPoint {
                        id: rec.id,
                        score: metric.score_from_distance(h.distance),
                        payload: req.with_payload.then(|| rec.payload.clone()),
                        vector: if req.with_vector {
                            st.index.vector(h.id)
                        } else {
                            None
                        },
                    })
                })
                .collect(),
        )
    }

    /// The points with these ids that exist here, in the order asked.
    pub fn get(
        &self,
        ids: &[PointId],
        with_payload: bool,
        with_vector: bool,
    ) -> Vec<RetrievedPoint> {
        let st = self.inner.state.read();
        ids.iter()
            .filter_map(|id| st.retrieved(*st.ids.get(id)?, with_payload, with_vector))
            .collect()
    }

    /// Up to `limit` points with id `>= offset` matching `filter`, in id order.
    pub fn scroll(
        &self,
        offset: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
        with_payload: bool,
        with_vector: bool,
    ) -> Vec<RetrievedPoint> {
        let st = self.inner.state.read();
        let range = match offset {
            Some(o) => st.ids.range(o..),
            None => st.ids.range(..),
        };
        let matches = filter.map(|f| st.matching(f));
        range
            .filter(|(_, iid)| matches.as_ref().is_none_or(|m| m.contains(**iid)))
            .take(limit)
            .filter_map(|(_, iid)| st.retrieved(*iid, with_payload, with_vector))
            .collect()
    }

    /// Number of points, or of points matching `filter`.
    pub fn count(&self, filter: Option<&Filter>) -> u64 {
        let st = self.inner.state.read();
        match filter {
            None => st.ids.len() as u64,
            Some(f) => st.matching(f).len(),
        }
    }

    /// Live points, tombstones and applied sequence number.
    pub fn stats(&self) -> ShardStats {
        let applied_seq = self.inner.writer.lock().applied_seq;
        let st = self.inner.state.read();
        ShardStats {
            points: st.ids.len() as u64,
            tombstones: st.index.tombstones() as u64,
            applied_seq,
        }
    }

    /// Saves an index checkpoint now (blocking writes to this shard meanwhile), so
    /// the next open skips rebuilding the graph. Skipped when nothing was written since
    /// the last one.
    pub fn checkpoint(&self) -> Result<(), ShardError> {
        let mut w = self.inner.writer.lock();
        if w.since_checkpoint == 0 && self.has_checkpoint() {
            return Ok(());
        }
        self.checkpoint_locked(&mut w)
    }

    fn has_checkpoint(&self) -> bool {
        std::fs::read_dir(self.inner.store.derived_dir()).is_ok_and(|mut d| d.next().is_some())
    }

    fn checkpoint_locked(&self, w: &mut Writer) -> Result<(), ShardError> {
        let started = std::time::Instant::now();
        let st = self.inner.state.read();
        let ids = checkpoint::IdMap {
            next_internal: w.next_internal,
            ids: st.ids.iter().map(|(p, i)| (*p, *i)).collect(),
        };
        let path = checkpoint::write(
            self.inner.store.derived_dir(),
            w.applied_seq,
            &*st.index,
            &ids,
        )
        .map_err(ShardError::Checkpoint)?;
        w.since_checkpoint = 0;
        tracing::info!(
            checkpoint = %path.display(),
            points = ids.ids.len(),
            secs = started.elapsed().as_secs_f64(),
            "index checkpoint saved"
        );
        Ok(())
    }

    fn maybe_start_checkpoint(&self, w: &mut Writer) {
        let every = self.inner.options.checkpoint_every;
        if every == 0 || w.checkpointing || w.since_checkpoint == 0 {
            return;
        }
        let live = self.inner.state.read().ids.len();
        if w.since_checkpoint < every.max(live / 10) {
            return;
        }
        self.start_checkpoint(w);
    }

    /// Starts a background checkpoint if points were written since the last one, the
    /// last write is at least [`ShardOptions::checkpoint_idle`] old and none is
    /// running. Never waits: a shard busy writing is not idle. Returns whether one
    /// started.
    pub fn checkpoint_if_idle(&self) -> bool {
        let Some(mut w) = self.inner.writer.try_lock() else {
            return false;
        };
        let opts = &self.inner.options;
        if opts.checkpoint_every == 0
            || w.checkpointing
            || w.since_checkpoint == 0
            || w.last_write.elapsed() < opts.checkpoint_idle
        {
            return false;
        }
        self.start_checkpoint(&mut w);
        w.checkpointing
    }

    fn start_checkpoint(&self, w: &mut Writer) {
        w.checkpointing = true;
        let shard = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("checkpoint-{}-{}", self.inner.config.name, self.inner.shard_no))
            .spawn(move || {
                let mut w = shard.inner.writer.lock();
                if let Err(e) = shard.checkpoint_locked(&mut w) {
                    tracing::warn!(error = %e, "index checkpoint failed; will retry after more writes");
                    w.since_checkpoint = 0;
                }
                w.checkpointing = false;
            });
        if spawned.is_err() {
            w.checkpointing = false;
        }
    }

    /// True while a background rebuild is running.
    pub fn is_rebuilding(&self) -> bool {
        self.inner.writer.lock().rebuild_log.is_some()
    }

    fn maybe_start_rebuild(&self, w: &mut Writer) {
        if w.rebuild_log.is_some() {
            return;
        }
        let opts = &self.inner.options;
        let snapshot: Vec<Point> = {
            let st = self.inner.state.read();
            let tombstones = st.index.tombstones();
            if tombstones < opts.rebuild_min_tombstones
                || (tombstones as f64) <= opts.rebuild_tombstone_ratio * st.ids.len() as f64
            {
                return;
            }
            st.ids
                .iter()
                .filter_map(|(id, iid)| {
                    Some(Point {
                        id: *id,
                        vector: st.index.vector(*iid)?,
                        payload: st.record(*iid)?.payload.clone(),
                    })
                })
                .collect()
        };
        w.rebuild_log = Some(Vec::new());
        let shard = self.clone();
        let generation = w.generation;
        let spawned = std::thread::Builder::new()
            .name(format!(
                "rebuild-{}-{}",
                self.inner.config.name, self.inner.shard_no
            ))
            .spawn(move || shard.rebuild(snapshot, generation));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start index rebuild");
            w.rebuild_log = None;
        }
    }

    /// Builds a new index from `snapshot`, replays the writes logged since, and swaps
    /// it in.
    fn rebuild(&self, snapshot: Vec<Point>, generation: u64) {
        let inner = &*self.inner;
        let started = std::time::Instant::now();
        let n = snapshot.len();
        let result = build_state(&inner.config, inner.options.backend, &inner.pool, snapshot)
            .and_then(|mut state| {
                let mut w = inner.writer.lock();
                if w.generation != generation {
                    // A snapshot replaced the shard meanwhile; this build is of old data.
                    return Ok(());
                }
                let mut next = state.records.len() as InternalId;
                for write in w.rebuild_log.take().unwrap_or_default() {
                    match write {
                        Write::Upsert(points) => {
                            let base = allocate(&mut next, points.len())?;
                            insert_vectors(&inner.pool, &*state.index, base, &points)?;
                            state.publish_upserts(
                                base,
                                points.into_iter().map(|p| (p.id, p.payload)),
                            );
                        }
                        Write::Delete(ids) => state.publish_deletes(&ids),
                    }
                }
                *inner.state.write() = state;
                w.next_internal = next;
                Ok(())
            });
        match result {
            Ok(()) => tracing::info!(
                collection = %inner.config.name,
                shard = inner.shard_no,
                points = n,
                secs = started.elapsed().as_secs_f64(),
                "index rebuilt"
            ),
            Err(e) => {
                inner.writer.lock().rebuild_log = None;
                tracing::error!(collection = %inner.config.name, shard = inner.shard_no, error = %e, "index rebuild failed; keeping the old index");
            }
        }
    }
}
