//! Criterion suite of `shoal-index`: distance kernels, single-query search at
//! several `ef`, batch search on a 2-thread pool, and index builds, on siftsmall
//! (when present) and a seeded clustered 100k × 128 set, for each backend (benchmark
//! names carry `native` or `hnsw_rs`).
//!
//! Data sets and indexes are built once, lazily, outside any timing; each build
//! prints its time and the recall@10 at every `ef` benchmarked, so throughput can be
//! read next to the recall it buys. Search throughput is reported per query
//! (`elements/s` = queries per second).

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use shoal_benches::{Dataset, backend_tag, build, params, recall};
use shoal_index::{Backend, InternalId, VectorIndex, distance};

const K: usize = 10;
const BACKENDS: [Backend; 2] = [Backend::Native, Backend::HnswRs];
const EFS: [usize; 4] = [16, 32, 64, 128];
const CLUSTERED_N: usize = 100_000;
const CLUSTERED_QUERIES: usize = 100;
const CLUSTERED_DIM: usize = 128;
const CLUSTERED_CLUSTERS: usize = 100;
const CLUSTERED_SEED: u64 = 20_240_601;
/// Size of the timed build on the clustered set (a 100k build per sample would
/// take minutes on two cores).
const CLUSTERED_INSERT_N: usize = 20_000;

struct Built {
    data: Dataset,
    index: Box<dyn VectorIndex>,
}

fn build_and_report(backend: Backend, data: Dataset) -> Built {
    let start = Instant::now();
    let index = build(backend, params(&data), &data.base);
    eprintln!(
        "[{} {}] built {} × {} (m 16, ef_construction 200) in {:.2} s on {} rayon threads",
        data.name,
        backend_tag(backend),
        data.base.len(),
        data.dim(),
        start.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    for ef in EFS {
        eprintln!(
            "[{} {}] recall@{K} at ef {ef}: {:.4}",
            data.name,
            backend_tag(backend),
            recall(index.as_ref(), &data, K, ef)
        );
    }
    Built { data, index }
}

/// Whether the siftsmall benchmarks can run (checked before registering them, so
/// nothing is loaded for a filtered-out run).
fn have_siftsmall() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    *CELL.get_or_init(|| shoal_benches::siftsmall_dir().is_some())
}

/// Index of a backend in per-backend caches.
fn slot(backend: Backend) -> usize {
    BACKENDS
        .iter()
        .position(|&b| b == backend)
        .expect("a benchmarked backend")
}

fn siftsmall_data() -> &'static Dataset {
    static CELL: OnceLock<Dataset> = OnceLock::new();
    CELL.get_or_init(|| shoal_benches::siftsmall().expect("siftsmall was found before"))
}

fn siftsmall(backend: Backend) -> &'static Built {
    static CELLS: [OnceLock<Built>; 2] = [OnceLock::new(), OnceLock::new()];
    CELLS[slot(backend)].get_or_init(|| build_and_report(backend, copy(siftsmall_data())))
}

fn copy(d: &Dataset) -> Dataset {
    Dataset {
        name: d.name.clone(),
        metric: d.metric,
        base: d.base.clone(),
        queries: d.queries.clone(),
        truth: d.truth.clone(),
    }
}

fn clustered_data() -> &'static Dataset {
    static CELL: OnceLock<Dataset> = OnceLock::new();
    CELL.get_or_init(|| {
        let start = Instant::now();
        let data = shoal_benches::clustered(
            CLUSTERED_N,
            CLUSTERED_QUERIES,
            CLUSTERED_DIM,
            CLUSTERED_CLUSTERS,
            CLUSTERED_SEED,
            K,
        );
        eprintln!(
            "[{}] generated with ground truth in {:.2} s",
            data.name,
            start.elapsed().as_secs_f64()
        );
        data
    })
}

fn clustered(backend: Backend) -> &'static Built {
    static CELLS: [OnceLock<Built>; 2] = [OnceLock::new(), OnceLock::new()];
    CELLS[slot(backend)].get_or_init(|| build_and_report(backend, copy(clustered_data())))
}

fn bench_distance(c: &mut Criterion) {
    let mut group = c.benchmark_group("distance");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    eprintln!(
        "[distance] dispatched kernel: {}",
        distance::selected().name
    );
    for dim in [128, 960] {
        let v = shoal_datasets::uniform(2, dim, 1);
        let (a, b) = (&v[0], &v[1]);
        group.bench_function(BenchmarkId::new("l2_sq/dispatched", dim), |bch| {
            bch.iter(|| distance::l2_sq(black_box(a), black_box(b)))
        });
        group.bench_function(BenchmarkId::new("dot/dispatched", dim), |bch| {
            bch.iter(|| distance::dot(black_box(a), black_box(b)))
        });
        for k in distance::available() {
            group.bench_function(BenchmarkId::new(format!("l2_sq/{}", k.name), dim), |bch| {
                bch.iter(|| (k.l2_sq)(black_box(a), black_box(b)))
            });
            group.bench_function(BenchmarkId::new(format!("dot/{}", k.name), dim), |bch| {
                bch.iter(|| (k.dot)(black_box(a), black_box(b)))
            });
        }
    }
    group.finish();
}

fn search_all(index: &dyn VectorIndex, queries: &[Vec<f32>], ef: usize) -> usize {
    queries
        .iter()
        .map(|q| index.search(black_box(q), K, ef, None).len())
        .sum()
}

fn bench_search(c: &mut Criterion) {
    let mut group = c.benchmark_group("search");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(100));
    for backend in BACKENDS {
        let tag = backend_tag(backend);
        for ef in EFS.into_iter().filter(|_| have_siftsmall()) {
            group.bench_function(
                BenchmarkId::new(format!("siftsmall/{tag}"), format!("ef{ef}")),
                |b| {
                    let s = siftsmall(backend);
                    b.iter(|| search_all(s.index.as_ref(), &s.data.queries, ef))
                },
            );
        }
        if have_siftsmall() {
            bench_tombstones(&mut group, backend);
            bench_filter(&mut group, backend);
            group.bench_function(
                BenchmarkId::new(format!("siftsmall-exact-scan/{tag}"), "k10"),
                |b| {
                    let s = siftsmall(backend);
                    b.iter(|| {
                        s.data
                            .queries
                            .iter()
                            .map(|q| s.index.exact_search(black_box(q), K, None).len())
                            .sum::<usize>()
                    })
                },
            );
        }
        for ef in EFS {
            group.bench_function(
                BenchmarkId::new(format!("clustered-100k/{tag}"), format!("ef{ef}")),
                |b| {
                    let s = clustered(backend);
                    b.iter(|| search_all(s.index.as_ref(), &s.data.queries, ef))
                },
            );
        }
    }
    group.finish();
}

/// The cost of tombstones: 10% of siftsmall deleted (hnsw_rs searches wider and
/// drops them; native skips them during traversal).
fn bench_tombstones(group: &mut criterion::BenchmarkGroup<'_, WallTime>, backend: Backend) {
    let tag = backend_tag(backend);
    group.bench_function(
        BenchmarkId::new(format!("siftsmall-10pct-deleted/{tag}"), "ef64"),
        |b| {
            static CELLS: [OnceLock<Box<dyn VectorIndex>>; 2] = [OnceLock::new(), OnceLock::new()];
            let data = siftsmall_data();
            let index = CELLS[slot(backend)].get_or_init(|| {
                let index = build(backend, params(data), &data.base);
                for id in (0..data.base.len() as InternalId).step_by(10) {
                    index.delete(id);
                }
                // Recall against the exact answer over the remaining points.
                let mut hits = 0;
                for q in &data.queries {
                    let exact: Vec<u32> = index
                        .exact_search(q, K, None)
                        .iter()
                        .map(|h| h.id)
                        .collect();
                    hits += index
                        .search(q, K, 64, None)
                        .iter()
                        .filter(|h| exact.contains(&h.id))
                        .count();
                }
                eprintln!(
                    "[siftsmall-10pct-deleted {tag}] recall@{K} at ef 64: {:.4}",
                    hits as f64 / (K * data.queries.len()) as f64
                );
                index
            });
            b.iter(|| search_all(index.as_ref(), &data.queries, 64))
        },
    );
}

/// A caller filter accepting half the ids, checked during the graph search.
fn bench_filter(group: &mut criterion::BenchmarkGroup<'_, WallTime>, backend: Backend) {
    let tag = backend_tag(backend);
    group.bench_function(
        BenchmarkId::new(format!("siftsmall-filter-50pct/{tag}"), "ef64"),
        |b| {
            static REPORTED: [OnceLock<()>; 2] = [OnceLock::new(), OnceLock::new()];
            let s = siftsmall(backend);
            let even = |id: InternalId| id.is_multiple_of(2);
            REPORTED[slot(backend)].get_or_init(|| {
                let mut hits = 0;
                for q in &s.data.queries {
                    let exact: Vec<u32> = s
                        .index
                        .exact_search(q, K, Some(&even))
                        .iter()
                        .map(|h| h.id)
                        .collect();
                    hits += s
                        .index
                        .search(q, K, 64, Some(&even))
                        .iter()
                        .filter(|h| exact.contains(&h.id))
                        .count();
                }
                eprintln!(
                    "[siftsmall-filter-50pct {tag}] recall@{K} at ef 64: {:.4}",
                    hits as f64 / (K * s.data.queries.len()) as f64
                );
            });
            b.iter(|| {
                s.data
                    .queries
                    .iter()
                    .map(|q| s.index.search(black_box(q), K, 64, Some(&even)).len())
                    .sum::<usize>()
            })
        },
    );
}

/// Times `iters` runs of `run` for criterion and adds the process CPU time they used
/// to `cpu` and their wall time to `wall`.
fn timed_with_cpu(iters: u64, cpu: &mut f64, wall: &mut f64, mut run: impl FnMut()) -> Duration {
    let c0 = shoal_benches::process_cpu_seconds();
    let start = Instant::now();
    for _ in 0..iters {
        run();
    }
    let elapsed = start.elapsed();
    if let (Some(c0), Some(c1)) = (c0, shoal_benches::process_cpu_seconds()) {
        *cpu += c1 - c0;
        *wall += elapsed.as_secs_f64();
    }
    elapsed
}

/// The same 100 queries one after the other on this thread, and spread over a
/// 2-thread pool. Each also reports how many cores it got on average (process CPU
/// time over wall time): on a machine busy with other work, the pool gets less than
/// two, and its speed-up is capped by that rather than by the code.
fn bench_batch_search(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_search");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(100));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a 2-thread pool");
    if !have_siftsmall() {
        return;
    }
    let report = |name: &str, cpu: f64, wall: f64| {
        if wall > 0.0 {
            eprintln!(
                "[batch_search {name}] cores used while timed: {:.2}",
                cpu / wall
            );
        }
    };
    for backend in BACKENDS {
        let tag = backend_tag(backend);
        let (mut cpu, mut wall) = (0.0, 0.0);
        group.bench_function(
            BenchmarkId::new(format!("siftsmall-ef64/{tag}"), "sequential"),
            |b| {
                let s = siftsmall(backend);
                b.iter_custom(|iters| {
                    timed_with_cpu(iters, &mut cpu, &mut wall, || {
                        black_box(search_all(s.index.as_ref(), &s.data.queries, 64));
                    })
                })
            },
        );
        report(&format!("{tag} sequential"), cpu, wall);
        let (mut cpu, mut wall) = (0.0, 0.0);
        group.bench_function(
            BenchmarkId::new(format!("siftsmall-ef64/{tag}"), "par_iter-2-threads"),
            |b| {
                let s = siftsmall(backend);
                b.iter_custom(|iters| {
                    timed_with_cpu(iters, &mut cpu, &mut wall, || {
                        black_box(pool.install(|| {
                            s.data
                                .queries
                                .par_iter()
                                .map(|q| s.index.search(black_box(q), K, 64, None))
                                .collect::<Vec<_>>()
                        }));
                    })
                })
            },
        );
        report(&format!("{tag} par_iter-2-threads"), cpu, wall);
    }
    group.finish();
}

fn bench_insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(20));
    for backend in BACKENDS {
        let tag = backend_tag(backend);
        if have_siftsmall() {
            group.bench_function(BenchmarkId::new(format!("siftsmall/{tag}"), "10k"), |b| {
                let d = siftsmall_data();
                b.iter_with_large_drop(|| build(backend, params(d), &d.base))
            });
        }
        group.bench_function(BenchmarkId::new(format!("clustered/{tag}"), "20k"), |b| {
            let d = clustered_data();
            let base = &d.base[..CLUSTERED_INSERT_N];
            let p = shoal_index::IndexParams {
                capacity_hint: base.len(),
                ..params(d)
            };
            b.iter_with_large_drop(|| build(backend, p, base))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_distance,
    bench_search,
    bench_batch_search,
    bench_insert
);
criterion_main!(benches);
