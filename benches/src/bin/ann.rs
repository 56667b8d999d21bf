//! Single-threaded ANN run of Shoal's index, for the side-by-side comparison in
//! `benches/peers.py`: for each backend, builds the index on a one-thread pool (M=16,
//! ef_construction=200), then for each `ef` measures recall@10 and QPS over every
//! query (the best of three timings of passes over the queries, at least 500 queries
//! per timing), printing one JSON object per line. Each line also carries the resident
//! memory the build added to the process (VmRSS after minus before), per vector.
//!
//! Usage: `cargo run --release -p shoal-benches --bin ann -- [ef,ef,...] [native,hnsw_rs] [DIR]`
//! (default: both backends, native first; siftsmall). `DIR` holds `base.fvecs`,
//! `query.fvecs` and `groundtruth.ivecs` (what `peers.py --dataset clustered` writes).

use std::time::Instant;

use shoal_index::Backend;

const K: usize = 10;
/// Each timing runs whole passes over the queries, at least this many queries.
const MIN_QUERIES_PER_TIMING: usize = 500;
/// QPS is the best of this many timings (as in `peers.py`).
const REPEATS: usize = 3;

fn main() {
    let efs: Vec<usize> = match std::env::args().nth(1) {
        Some(list) => list
            .split(',')
            .map(|x| x.trim().parse().unwrap_or_else(|_| panic!("bad ef {x:?}")))
            .collect(),
        None => vec![10, 20, 40, 80, 160],
    };
    let backends: Vec<Backend> = match std::env::args().nth(2) {
        Some(list) => list
            .split(',')
            .map(|b| match b.trim() {
                "native" => Backend::Native,
                "hnsw_rs" => Backend::HnswRs,
                other => panic!("unknown backend {other:?} (native or hnsw_rs)"),
            })
            .collect(),
        None => vec![Backend::Native, Backend::HnswRs],
    };
    let data = match std::env::args().nth(3) {
        Some(dir) => shoal_benches::from_dir(std::path::Path::new(&dir)),
        None => match shoal_benches::siftsmall() {
            Some(data) => data,
            None => std::process::exit(2),
        },
    };
    let passes = MIN_QUERIES_PER_TIMING.div_ceil(data.queries.len().max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    for backend in backends {
        let rss_before = shoal_benches::resident_bytes();
        let started = Instant::now();
        let index = pool
            .install(|| shoal_benches::build(backend, shoal_benches::params(&data), &data.base));
        let build_seconds = started.elapsed().as_secs_f64();
        let bytes_per_vector = match (rss_before, shoal_benches::resident_bytes()) {
            (Some(before), Some(after)) => {
                Some(after.saturating_sub(before) as f64 / data.base.len() as f64)
            }
            _ => None,
        };
        for &ef in &efs {
            let recall = shoal_benches::recall(&*index, &data, K, ef);
            let mut qps: f64 = 0.0;
            for _ in 0..REPEATS {
                let started = Instant::now();
                for _ in 0..passes {
                    for q in &data.queries {
                        std::hint::black_box(index.search(q, K, ef, None));
                    }
                }
                qps =
                    qps.max((passes * data.queries.len()) as f64 / started.elapsed().as_secs_f64());
            }
            println!(
                "{}",
                serde_json::json!({
                    "system": shoal_benches::system_name(backend),
                    "dataset": data.name,
                    "ef": ef,
                    "recall": recall,
                    "qps": qps,
                    "build_seconds": build_seconds,
                    "n": data.base.len(),
                    "rss_bytes_per_vector": bytes_per_vector,
                })
            );
        }
    }
}
