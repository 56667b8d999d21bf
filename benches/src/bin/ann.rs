//! Single-threaded ANN run of Shoal's index on siftsmall, for the side-by-side
//! comparison in `benches/peers.py`: for each backend, builds the index on a one-thread
//! pool (M=16, ef_construction=200), then for each `ef` measures recall@10 and QPS over
//! every query (the best of three timings of five passes), printing one JSON object
//! per line.
//!
//! Usage: `cargo run --release -p shoal-benches --bin ann -- [ef,ef,...] [native,hnsw_rs]`
//! (default: both backends, native first).

use std::time::Instant;

use shoal_index::Backend;

const K: usize = 10;
const PASSES: usize = 5;
/// QPS is the best of this many timings of `PASSES` passes (as in `peers.py`).
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
    let Some(data) = shoal_benches::siftsmall() else {
        std::process::exit(2);
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    for backend in backends {
        let started = Instant::now();
        let index = pool
            .install(|| shoal_benches::build(backend, shoal_benches::params(&data), &data.base));
        let build_seconds = started.elapsed().as_secs_f64();
        for &ef in &efs {
            let recall = shoal_benches::recall(&*index, &data, K, ef);
            let mut qps: f64 = 0.0;
            for _ in 0..REPEATS {
                let started = Instant::now();
                for _ in 0..PASSES {
                    for q in &data.queries {
                        std::hint::black_box(index.search(q, K, ef, None));
                    }
                }
                qps =
                    qps.max((PASSES * data.queries.len()) as f64 / started.elapsed().as_secs_f64());
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
                })
            );
        }
    }
}
