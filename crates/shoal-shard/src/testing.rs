//! Test support for the crates whose tests use shards (cargo feature `testing`, which
//! they enable in their `[dev-dependencies]`): opening a shard in a directory, writing
//! to it without a Raft log, waiting out a background rebuild, and the proptest
//! strategies and brute-force helpers the shard's property tests share.
//!
//! No shipped crate may enable it in its `[dependencies]`: writes through here are not
//! backed by a Raft log. Helpers panic on setup failures, which only a test wants.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use shoal_core::{CollectionConfig, HnswParams, Metric, Point, PointId, Write};
use shoal_storage::{Store, Ticket};

use crate::{Shard, ShardError, ShardOptions};

/// Dimensions of the vectors [`small_vector`] generates.
pub const DIM: usize = 4;

/// The test collection: `t`, `dim` dimensions, L2, one shard of one replica, a small
/// graph (m 8, ef_construction 64).
pub fn config(dim: usize) -> CollectionConfig {
    CollectionConfig {
        name: "t".into(),
        dim: dim as u32,
        metric: Metric::L2,
        shard_count: 1,
        replication_factor: 1,
        hnsw: HnswParams {
            m: 8,
            ef_construction: 64,
        },
    }
}

/// Opens shard 0 of the collection of `config` in `store` (created the first time,
/// found again on a reopen), with a pool of two threads of its own.
pub fn open_in(store: &Store, config: CollectionConfig, options: ShardOptions) -> Shard {
    let record = match store.collections().expect("collections").pop() {
        Some(r) => r,
        None => store
            .create_collection(config.clone())
            .expect("create the collection"),
    };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("shard pool"),
    );
    Shard::open(
        Arc::new(config),
        0,
        store.shard(&record, 0).expect("shard store"),
        options,
        pool,
    )
    .expect("open the shard")
}

/// Opens (or reopens) the shard of [`config`]`(dim)` stored in `dir`.
pub fn open(dir: &Path, dim: usize, options: ShardOptions) -> Shard {
    open_in(
        &Store::open(dir).expect("open the store"),
        config(dim),
        options,
    )
}

/// Upserts `points` as the shard's next write, leaving its stored metadata as it is.
/// Durable after [`Shard::sync`] with the ticket.
pub fn upsert(shard: &Shard, points: Vec<Point>) -> Result<Ticket, ShardError> {
    shard.apply_next(Write::Upsert(points))
}

/// Deletes `ids` as the shard's next write, leaving its stored metadata as it is.
/// Durable after [`Shard::sync`] with the ticket.
pub fn delete(shard: &Shard, ids: Vec<PointId>) -> Result<Ticket, ShardError> {
    shard.apply_next(Write::Delete(ids))
}

/// Returns once no background rebuild is running.
pub fn wait_for_rebuild(shard: &Shard) {
    while shard.is_rebuilding() {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Squared Euclidean distance (the shard's L2 score is its square root).
pub fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// A vector of small integers: distance ties are common, and the exact answer is easy
/// to compute.
pub fn small_vector() -> impl Strategy<Value = [i8; DIM]> {
    prop::array::uniform4(-20i8..20)
}

/// The vector a [`small_vector`] stands for.
pub fn vector(v: &[i8; DIM]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// An upsert batch of 1 to 19 points `(id, vector, payload)`, ids drawn from `ids` and
/// distinct, as validation guarantees (one version per id per batch).
pub fn batch<P: std::fmt::Debug>(
    ids: Range<u64>,
    payload: impl Strategy<Value = P>,
) -> impl Strategy<Value = Vec<(u64, [i8; DIM], P)>> {
    prop::collection::vec((ids, small_vector(), payload), 1..20).prop_map(|mut points| {
        let mut seen = std::collections::HashSet::new();
        points.retain(|p| seen.insert(p.0));
        points
    })
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    #[test]
    fn batches_never_repeat_an_id() {
        let mut runner = TestRunner::deterministic();
        let strategy = batch(0..5, 0i64..3);
        for _ in 0..100 {
            let points = strategy.new_tree(&mut runner).unwrap().current();
            let mut ids: Vec<u64> = points.iter().map(|p| p.0).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), points.len());
            assert!(!points.is_empty() && points.len() < 20);
        }
    }

    #[test]
    fn writes_take_the_next_sequence_numbers_and_keep_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path(), DIM, ShardOptions::default());
        let p = |id| Point {
            id: PointId::Num(id),
            vector: vec![id as f32; DIM],
            payload: Default::default(),
        };
        shard
            .sync(
                shard
                    .apply_at(3, Some(Write::Upsert(vec![p(1)])), b"three")
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
        shard
            .sync(upsert(&shard, vec![p(2), p(3)]).unwrap())
            .unwrap();
        shard
            .sync(delete(&shard, vec![PointId::Num(1)]).unwrap())
            .unwrap();
        assert_eq!(shard.stats().applied_seq, 5);
        assert_eq!(shard.count(None), 2);
        assert_eq!(shard.meta().unwrap().as_deref(), Some(&b"three"[..]));
    }
}
