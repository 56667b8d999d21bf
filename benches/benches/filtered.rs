//! Criterion suite of filtered search at the shard level: a seeded clustered
//! 200k × 128 set (the recipe of `servers.py --datasets clustered`) whose points carry
//! integer payloads `s1`, `s10`, `s50`, so that `s1 = 0`, `s10 = 0`, `s50 = 0` match
//! about 1%, 10% and 50% of the points.
//!
//! - `filtered/shard/<field>/ef<ef>`: `Shard::search` with the filter (the shard picks
//!   its strategy from the payload index), 100 queries per iteration; the recall@10
//!   against the exact filtered answer is printed beside it.
//! - `filtered/strategy/<field>/{exact,graph-ef<ef>}`: the two strategies the shard
//!   chooses between, on an index of the same points: an exact scan of the matched
//!   ids, and graph search with the filter checked by a bitmap lookup.
//! - `filtered/per-point-evaluation/<field>`: evaluating the filter against every
//!   payload (what every filtered search did before the payload index), and
//!   `filtered/payload-index/<field>`: answering it from the index.
//!
//! - `filtered/ranges/1024x20000`: 1,024 range conditions over 20,000 distinct values.
//!
//! The payload index's memory is measured with a counting allocator and printed per
//! point. Data, shards and indexes are built once, lazily, outside any timing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use shoal_benches::{Dataset, build, params};
use shoal_core::{
    CollectionConfig, Condition, Filter, HnswParams, Metric, Payload, Point, PointId,
    SearchRequest, Value,
};
use shoal_index::{Backend, IdFilter, InternalId, VectorIndex};
use shoal_shard::payload_index::Records;
use shoal_shard::{PayloadIndex, Shard, ShardOptions, testing};

/// Counts live heap bytes, to measure the payload index.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 200_000;
const QUERIES: usize = 100;
const DIM: usize = 128;
const K: usize = 10;
const EFS: [usize; 2] = [40, 80];
const FIELDS: [&str; 3] = ["s1", "s10", "s50"];

struct Data {
    set: Dataset,
    payloads: Vec<Payload>,
    /// Per field: the exact filtered top-k of each query, as base ids.
    truth: Vec<Vec<Vec<u32>>>,
}

fn filter(field: &str) -> Filter {
    Filter {
        must: vec![Condition::Integer {
            key: field.into(),
            any: vec![0],
        }],
        ..Filter::default()
    }
}

fn data() -> &'static Data {
    static CELL: OnceLock<Data> = OnceLock::new();
    CELL.get_or_init(|| {
        let start = Instant::now();
        let mut base = shoal_datasets::clustered(N + QUERIES, DIM, 100, 42);
        let queries = base.split_off(N);
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let payloads: Vec<Payload> = (0..N)
            .map(|_| {
                Payload::from([
                    ("s1".to_string(), Value::Integer(rng.random_range(0..100))),
                    ("s10".to_string(), Value::Integer(rng.random_range(0..10))),
                    ("s50".to_string(), Value::Integer(rng.random_range(0..2))),
                ])
            })
            .collect();
        let truth = FIELDS
            .iter()
            .map(|field| {
                let f = filter(field);
                let ids: Vec<u32> = (0..N as u32)
                    .filter(|&i| f.matches(&PointId::Num(i as u64), &payloads[i as usize]))
                    .collect();
                let subset: Vec<Vec<f32>> = ids.iter().map(|&i| base[i as usize].clone()).collect();
                shoal_datasets::ground_truth(&subset, &queries, K, Metric::L2)
                    .into_iter()
                    .map(|row| row.into_iter().map(|j| ids[j as usize]).collect())
                    .collect()
            })
            .collect();
        eprintln!(
            "[filtered] generated {N} × {DIM} with filtered ground truth in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Data {
            set: Dataset {
                name: "clustered-200k".into(),
                metric: Metric::L2,
                base,
                queries,
                truth: Vec::new(),
            },
            payloads,
            truth,
        }
    })
}

fn recall(found: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    shoal_datasets::recall_at_k(found, truth, K)
}

struct ShardFixture {
    shard: Shard,
    _dir: tempfile::TempDir,
}

fn shard() -> &'static ShardFixture {
    static CELL: OnceLock<ShardFixture> = OnceLock::new();
    CELL.get_or_init(|| {
        let d = data();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = shoal_storage::Store::open(dir.path()).expect("store");
        let config = CollectionConfig {
            name: "bench".into(),
            dim: DIM as u32,
            metric: Metric::L2,
            shard_count: 1,
            replication_factor: 1,
            hnsw: HnswParams {
                m: 16,
                ef_construction: 200,
            },
        };
        let shard = testing::open_in(
            &store,
            config,
            ShardOptions {
                checkpoint_every: 0,
                ..ShardOptions::default()
            },
        );
        let start = Instant::now();
        for (c, chunk) in d.set.base.chunks(1_000).enumerate() {
            let points = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let id = c * 1_000 + i;
                    Point {
                        id: PointId::Num(id as u64),
                        vector: v.clone(),
                        payload: d.payloads[id].clone(),
                    }
                })
                .collect();
            testing::upsert(&shard, points).expect("upsert");
        }
        eprintln!(
            "[filtered] shard loaded with {N} points in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        for (fi, field) in FIELDS.iter().enumerate() {
            for ef in EFS {
                let found: Vec<Vec<u32>> = d
                    .set
                    .queries
                    .iter()
                    .map(|q| shard_ids(&shard, q, field, ef))
                    .collect();
                eprintln!(
                    "[filtered shard] {field} = 0 ({} matches): recall@{K} at ef {ef}: {:.4}",
                    shard.count(Some(&filter(field))),
                    recall(&found, &d.truth[fi])
                );
            }
        }
        ShardFixture { shard, _dir: dir }
    })
}

fn shard_ids(shard: &Shard, q: &[f32], field: &str, ef: usize) -> Vec<u32> {
    shard
        .search(&SearchRequest {
            vector: q.to_vec(),
            top_k: K as u32,
            ef: Some(ef as u32),
            filter: Some(filter(field)),
            with_payload: false,
            with_vector: false,
        })
        .into_iter()
        .map(|p| match p.id {
            PointId::Num(n) => n as u32,
            PointId::Uuid(_) => unreachable!(),
        })
        .collect()
}

/// The payload index over the data set's payloads (internal id = base id), and its
/// heap size measured by the counting allocator.
fn payload_index() -> &'static PayloadIndex {
    static CELL: OnceLock<PayloadIndex> = OnceLock::new();
    CELL.get_or_init(|| {
        let d = data();
        let before = ALLOCATED.load(Ordering::Relaxed);
        let mut index = PayloadIndex::new();
        for (i, p) in d.payloads.iter().enumerate() {
            index.insert(i as InternalId, p);
        }
        let bytes = ALLOCATED.load(Ordering::Relaxed).saturating_sub(before);
        eprintln!(
            "[filtered] payload index over {N} points (3 integer fields): {bytes} bytes measured \
             ({:.1} B/point), {} estimated by heap_bytes ({:.1} B/point)",
            bytes as f64 / N as f64,
            index.heap_bytes(),
            index.heap_bytes() as f64 / N as f64
        );
        index
    })
}

/// The bench's points have no per-point fallback needs: every condition is indexed.
struct NoRecords;

impl Records for NoRecords {
    fn internal_id(&self, id: &PointId) -> Option<InternalId> {
        match id {
            PointId::Num(n) if (*n as usize) < N => Some(*n as InternalId),
            _ => None,
        }
    }
    fn matches(&self, _: InternalId, _: &Condition) -> bool {
        false
    }
}

fn index() -> &'static dyn VectorIndex {
    static CELL: OnceLock<Box<dyn VectorIndex>> = OnceLock::new();
    CELL.get_or_init(|| {
        let d = data();
        let start = Instant::now();
        let index = build(Backend::Native, params(&d.set), &d.set.base);
        eprintln!(
            "[filtered] index of {N} built in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        index
    })
    .as_ref()
}

fn bench_shard(c: &mut Criterion) {
    let mut group = c.benchmark_group("filtered");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(10);
    group.throughput(Throughput::Elements(QUERIES as u64));
    for field in FIELDS {
        for ef in EFS {
            group.bench_function(format!("shard/{field}/ef{ef}"), |b| {
                let s = &shard().shard;
                let queries = &data().set.queries;
                b.iter(|| {
                    for q in queries {
                        black_box(shard_ids(s, q, field, ef));
                    }
                })
            });
        }
    }
    group.finish();
}

fn bench_strategy(c: &mut Criterion) {
    let mut group = c.benchmark_group("filtered");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(10);
    group.throughput(Throughput::Elements(QUERIES as u64));
    for (fi, field) in FIELDS.iter().enumerate() {
        group.bench_function(format!("strategy/{field}/exact"), |b| {
            let (index, pi, d) = (index(), payload_index(), data());
            let matches = pi.evaluate(&filter(field), &NoRecords);
            b.iter(|| {
                for q in &d.set.queries {
                    let ids: Vec<InternalId> = matches.iter().collect();
                    black_box(index.exact_search_among(q, K, &ids));
                }
            })
        });
        for ef in EFS {
            let mut reported = false;
            group.bench_function(format!("strategy/{field}/graph-ef{ef}"), |b| {
                let (index, pi, d) = (index(), payload_index(), data());
                let matches = pi.evaluate(&filter(field), &NoRecords);
                let accept = |id: InternalId| matches.contains(id);
                if !std::mem::replace(&mut reported, true) {
                    let found: Vec<Vec<u32>> = d
                        .set
                        .queries
                        .iter()
                        .map(|q| {
                            let hits = index.search(q, K, ef, Some(&accept as &dyn IdFilter));
                            hits.iter().map(|h| h.id).collect()
                        })
                        .collect();
                    eprintln!(
                        "[filtered strategy] {field} = 0 graph at ef {ef}: recall@{K} {:.4}",
                        recall(&found, &d.truth[fi])
                    );
                }
                b.iter(|| {
                    for q in &d.set.queries {
                        black_box(index.search(q, K, ef, Some(&accept as &dyn IdFilter)));
                    }
                })
            });
        }
    }
    group.finish();
}

fn bench_evaluation(c: &mut Criterion) {
    let mut group = c.benchmark_group("filtered");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(10);
    for field in FIELDS {
        let f = filter(field);
        group.bench_function(format!("per-point-evaluation/{field}"), |b| {
            let d = data();
            b.iter(|| {
                d.payloads
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| f.matches(&PointId::Num(*i as u64), p))
                    .count()
            })
        });
        group.bench_function(format!("payload-index/{field}"), |b| {
            let pi = payload_index();
            b.iter(|| pi.evaluate(&f, &NoRecords).len())
        });
    }
    group.finish();
}

/// `filtered/ranges/1024x20000`: a filter of 1,024 `range` conditions, each covering
/// all of 20,000 distinct integer values (one point each), answered from the payload
/// index (issue 17's `Count` that cost 10 s of CPU).
fn bench_ranges(c: &mut Criterion) {
    let mut group = c.benchmark_group("filtered");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(10);
    group.bench_function("ranges/1024x20000", |b| {
        let mut pi = PayloadIndex::new();
        for i in 0..20_000u32 {
            pi.insert(i, &[("v".to_string(), Value::Integer(i64::from(i)))].into());
        }
        let range = Condition::Range {
            key: "v".into(),
            gt: None,
            gte: Some(-1.0),
            lt: None,
            lte: Some(1e9),
        };
        let f = Filter {
            must: vec![range; 1024],
            ..Filter::default()
        };
        b.iter(|| black_box(pi.evaluate(&f, &NoRecords).len()))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_evaluation,
    bench_ranges,
    bench_strategy,
    bench_shard
);
criterion_main!(benches);
