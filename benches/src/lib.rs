//! Shared helpers for Shoal benchmarks: where the data sets are, loading them, and
//! building and scoring indexes the same way in every suite.
//!
//! Helpers here may read files and panic with a clear message on bad data (they
//! serve benchmarks only); they must never be a dependency of a shipped crate.

use std::path::{Path, PathBuf};

use shoal_core::Metric;
use shoal_datasets::{read_fvecs, read_ivecs, recall_at_k};
use shoal_index::{Backend, IndexParams, InternalId, VectorIndex, new_index};

/// The workspace root (the parent of the `benches` package).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits inside the workspace")
}

/// The siftsmall directory: `$SHOAL_SIFTSMALL` if set, else
/// `../shared/data/siftsmall` relative to the workspace root. `None` (with a message
/// on stderr) when its base file is missing.
pub fn siftsmall_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SHOAL_SIFTSMALL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data/siftsmall"));
    if dir.join("siftsmall_base.fvecs").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "siftsmall not found at {}: skipping its benchmarks",
            dir.display()
        );
        None
    }
}

/// A base set, its queries and the exact neighbours of each query.
pub struct Dataset {
    pub name: String,
    pub metric: Metric,
    pub base: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    /// Row `i` lists base ids nearest to query `i`, nearest first.
    pub truth: Vec<Vec<u32>>,
}

impl Dataset {
    pub fn dim(&self) -> usize {
        self.base.first().map_or(0, Vec::len)
    }
}

/// siftsmall (10k × 128, 100 queries, L2), if present.
pub fn siftsmall() -> Option<Dataset> {
    let dir = siftsmall_dir()?;
    let load = |name: &str| dir.join(name);
    Some(Dataset {
        name: "siftsmall".into(),
        metric: Metric::L2,
        base: read_fvecs(&load("siftsmall_base.fvecs")).expect("siftsmall base"),
        queries: read_fvecs(&load("siftsmall_query.fvecs")).expect("siftsmall queries"),
        truth: read_ivecs(&load("siftsmall_groundtruth.ivecs")).expect("siftsmall ground truth"),
    })
}

/// A data set written as `base.fvecs`, `query.fvecs` and `groundtruth.ivecs` in `dir`
/// (L2), named after the directory. Panics with the path on a missing or bad file.
pub fn from_dir(dir: &Path) -> Dataset {
    let load = |name: &str| dir.join(name);
    let name = dir
        .file_name()
        .map_or_else(|| "data".to_string(), |n| n.to_string_lossy().into_owned());
    let base = read_fvecs(&load("base.fvecs"))
        .unwrap_or_else(|e| panic!("{}: {e}", load("base.fvecs").display()));
    let queries = read_fvecs(&load("query.fvecs"))
        .unwrap_or_else(|e| panic!("{}: {e}", load("query.fvecs").display()));
    let truth = read_ivecs(&load("groundtruth.ivecs"))
        .unwrap_or_else(|e| panic!("{}: {e}", load("groundtruth.ivecs").display()));
    assert_eq!(queries.len(), truth.len(), "one ground-truth row per query");
    Dataset {
        name,
        metric: Metric::L2,
        base,
        queries,
        truth,
    }
}

/// A seeded clustered set of `n` base vectors and `queries` queries drawn from the
/// same blobs, with exact top-`k` ground truth (L2).
pub fn clustered(
    n: usize,
    queries: usize,
    dim: usize,
    clusters: usize,
    seed: u64,
    k: usize,
) -> Dataset {
    let mut base = shoal_datasets::clustered(n + queries, dim, clusters, seed);
    let queries = base.split_off(n);
    let truth = shoal_datasets::ground_truth(&base, &queries, k, Metric::L2);
    Dataset {
        name: format!("clustered-{}k", n / 1000),
        metric: Metric::L2,
        base,
        queries,
        truth,
    }
}

/// The HNSW parameters every suite uses unless it says otherwise.
pub fn params(data: &Dataset) -> IndexParams {
    IndexParams {
        dim: data.dim(),
        metric: data.metric,
        m: 16,
        ef_construction: 200,
        capacity_hint: data.base.len(),
    }
}

/// How benchmark tables name Shoal with `backend`.
pub fn system_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Native => "shoal (native backend)",
        Backend::HnswRs => "shoal (hnsw_rs backend)",
    }
}

/// Short name of a backend in benchmark ids: `native` or `hnsw_rs`.
pub fn backend_tag(backend: Backend) -> &'static str {
    match backend {
        Backend::Native => "native",
        Backend::HnswRs => "hnsw_rs",
    }
}

/// Builds an index over `base` (ids are row numbers), in parallel on the current
/// rayon pool.
pub fn build(backend: Backend, params: IndexParams, base: &[Vec<f32>]) -> Box<dyn VectorIndex> {
    let index = new_index(backend, params);
    let items: Vec<(InternalId, &[f32])> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (i as InternalId, v.as_slice()))
        .collect();
    index
        .insert(&items)
        .expect("benchmark vectors fit the index");
    index
}

/// Recall@k of graph searches at `ef` against the data set's ground truth.
pub fn recall(index: &dyn VectorIndex, data: &Dataset, k: usize, ef: usize) -> f64 {
    let found: Vec<Vec<u32>> = data
        .queries
        .iter()
        .map(|q| index.search(q, k, ef, None).iter().map(|h| h.id).collect())
        .collect();
    recall_at_k(&found, &data.truth, k)
}

/// This process's resident set size (VmRSS), in bytes, from `/proc/self/status`;
/// `None` where that is not available.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) this process has used so far, in seconds, from
/// `/proc/self/stat` (10 ms resolution); `None` where that is not available. Batch
/// benchmarks divide it by wall time to show how many cores they actually got.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at "state".
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name;
    // the kernel counts them in USER_HZ, 100 on every Linux platform.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}
