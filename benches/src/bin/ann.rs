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
//!
//! With `SHOAL_ANN_INDEX_CACHE=DIR`, each backend's built index is dumped into
//! `DIR/<backend>` and loaded from there on later runs instead of being rebuilt, so two
//! builds of this binary (before and after a change to search) can be timed on the very
//! same graph; rows of a loaded index carry `"loaded": true` and the load time as
//! `build_seconds`. Delete the directory after changing the data or how graphs are built.

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
        let cache = std::env::var_os("SHOAL_ANN_INDEX_CACHE")
            .map(|dir| std::path::Path::new(&dir).join(shoal_benches::backend_tag(backend)));
        let cached = cache.as_deref().filter(|dir| dir.exists()).map(|dir| {
            shoal_index::load(dir)
                .unwrap_or_else(|e| panic!("loading the cached index {}: {e}", dir.display()))
        });
        let loaded = cached.is_some();
        let index = cached.unwrap_or_else(|| {
            pool.install(|| shoal_benches::build(backend, shoal_benches::params(&data), &data.base))
        });
        let build_seconds = started.elapsed().as_secs_f64();
        if let (Some(dir), false) = (&cache, loaded) {
            std::fs::create_dir_all(dir).expect("creating the index cache directory");
            index.dump(dir).expect("dumping the index into the cache");
        }
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
                    "loaded": loaded,
                })
            );
        }
    }
}
