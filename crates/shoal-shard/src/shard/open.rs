//! Opening a shard: its derived state from the newest index checkpoint reconciled with
//! the stored points, or built from the stored points alone when there is no usable
//! checkpoint.
//!
//! Opening must never change what the shard contains: the stored points decide, a
//! checkpoint only saves re-inserting the points it already holds. The one exception
//! is a record no valid write could have stored (it does not decode, or fails
//! [`Shard::check`]): it is quarantined — moved aside in storage, logged, counted in
//! the shard's stats — and the shard opens with the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use shoal_core::{CollectionConfig, Point, PointId};
use shoal_index::{InternalId, VectorIndex};
use shoal_storage::{Quarantined, ShardStore};

use super::state::{Record, SplitTrack, State, Writer, allocate, index_params, insert_vectors};
use super::{Inner, Pools, Shard, ShardOptions};
use crate::ShardError;
use crate::checkpoint;

impl Shard {
    /// Opens shard `shard_no` of a collection: loads its points from `store` and
    /// builds the index (in parallel on the build pool of `pools`; index inserts of
    /// later writes use the foreground pool).
    pub fn open(
        config: Arc<CollectionConfig>,
        shard_no: u32,
        store: ShardStore,
        options: ShardOptions,
        pools: impl Into<Pools>,
    ) -> Result<Shard, ShardError> {
        let shard = Self::open_quietly(config, shard_no, store, options, pools.into())?;
        // Save what the open had to rebuild, so the next one need not.
        shard.maybe_start_checkpoint(&mut shard.inner.writer.lock());
        Ok(shard)
    }

    /// [`Shard::open`] without the checkpoint of what differed from the last one.
    pub(super) fn open_quietly(
        config: Arc<CollectionConfig>,
        shard_no: u32,
        store: ShardStore,
        options: ShardOptions,
        pools: Pools,
    ) -> Result<Shard, ShardError> {
        let applied_seq = store.applied_seq()?;
        let params = index_params(&config, 0);
        let check = |p: &Point| Shard::check_point(&config, p);
        let Opened {
            state,
            next_internal,
            diverged,
            quarantined,
        } = match checkpoint::read_latest(store.derived_dir(), &params) {
            Some((index, ids)) => reconcile(&pools.build, Arc::from(index), ids, &store, check)?,
            None => {
                let mut points = Vec::new();
                let bad = store.points_checked(check, |p| {
                    points.push(p);
                    Ok::<_, ShardError>(())
                })?;
                let state = State::build(&config, options.backend, &pools.build, points)?;
                Opened {
                    next_internal: state.records.len() as InternalId,
                    diverged: state.ids.len(),
                    state,
                    quarantined: bad,
                }
            }
        };
        for q in &quarantined {
            tracing::error!(
                collection = %config.name,
                shard = shard_no,
                record = %q.record,
                reason = %q.reason,
                "quarantined an invalid stored record; the shard serves the rest"
            );
        }
        // Counted from storage: records quarantined by an earlier open stay counted.
        let checkpointed_ms = checkpoint::newest_time(store.derived_dir())
            .map(super::unix_ms)
            .unwrap_or(0);
        let store_quarantined = match store.quarantined() {
            Ok(n) => n as u64,
            Err(_) => quarantined.len() as u64,
        };
        let shard = Shard {
            inner: Arc::new(Inner {
                config,
                pools,
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
                split: Mutex::new(SplitTrack::default()),
                applied: AtomicU64::new(applied_seq),
                rebuilding: AtomicBool::new(false),
                state: RwLock::new(state),
                quarantined: AtomicU64::new(store_quarantined),
                checkpointed_ms: AtomicU64::new(checkpointed_ms),
            }),
        };
        Ok(shard)
    }
}

/// What opening derived from storage.
struct Opened {
    state: State,
    /// The next free internal id.
    next_internal: InternalId,
    /// Points that differed from the checkpoint (all of them without one).
    diverged: usize,
    /// Records moved aside.
    quarantined: Vec<Quarantined>,
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
    check: impl Fn(&Point) -> Result<(), String>,
) -> Result<Opened, ShardError> {
    let mut checkpointed: std::collections::HashMap<PointId, InternalId> =
        map.ids.into_iter().collect();
    let mut next = map.next_internal;
    let mut state = State::new(index.clone(), 0);
    state.records.resize_with(next as usize, || None);
    let mut fresh: Vec<Point> = Vec::new();
    let quarantined = store.points_checked(check, |p| {
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
        Ok::<_, ShardError>(())
    })?;
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
    Ok(Opened {
        state,
        next_internal: next,
        diverged,
        quarantined,
    })
}
