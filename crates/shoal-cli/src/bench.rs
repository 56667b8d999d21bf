//! `shoal bench`: the load generator. Against a running node it creates a collection,
//! ingests a data set (an fvecs file, or a seeded synthetic one), then runs searches
//! for each `ef` at each concurrency level — every level bounded in time and in count —
//! and reports ingest points/s, QPS, latency percentiles and recall@k against exact
//! ground truth (read from a file, or computed by brute force). Queries go one per
//! `Search` request, or `--batch-size` per `SearchBatch` request; `--plot` draws the
//! QPS/recall chart (module `plot`).
//!
//! With `--existing` it only searches: the collection was created and filled
//! elsewhere (`shoal import`, another client, `benches/servers.py`), the queries and
//! their exact ground truth come from files, and `--filter` puts the same payload
//! filter on every search (the ground truth must then be the filtered one). Nothing
//! is created, written or deleted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Conn, ReadConsistency};
use anyhow::{Context, bail};
use serde::Serialize;
use shoal_core::{Metric, PointId};
use shoal_proto::v1::{
    self as pb, collections_client::CollectionsClient, points_client::PointsClient,
};
use shoal_server::convert;

use crate::client::{numeric_ids, status_err, upload};
use crate::filter_json;

/// Synthetic data shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Synthetic {
    /// Components uniform in [-1, 1).
    Uniform,
    /// Gaussian blobs around 100 random centres.
    Clustered,
}

/// Options of `shoal bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Collection to create for the run (must not exist), or with --existing the
    /// collection to search.
    #[arg(long, default_value = "shoal-bench")]
    pub collection: String,
    /// Only search --collection, which already holds the data: no create, ingest or
    /// delete. Needs --queries and --ground-truth.
    #[arg(long, conflicts_with_all = ["data", "keep"])]
    pub existing: bool,
    /// Base vectors (fvecs). Without it, a synthetic set is generated.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Query vectors (fvecs); required with --data and with --existing.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Exact top-k ids per query (ivecs); computed by brute force when omitted
    /// (required with --existing).
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// With --existing: a payload filter (JSON, as for `shoal search --filter`) on
    /// every search; --ground-truth must then hold the exact filtered top-k.
    #[arg(long, requires = "existing")]
    pub filter: Option<String>,
    /// Read consistency of the searches: eventual (nearest replica), session (like
    /// eventual without a write token) or strong (linearizable, through each shard's
    /// leader).
    #[arg(long, value_enum, default_value_t = ReadConsistency::Eventual)]
    pub consistency: ReadConsistency,
    /// Shape of the synthetic set.
    #[arg(long, value_enum, default_value = "clustered")]
    pub synthetic: Synthetic,
    /// Synthetic: number of base vectors.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Synthetic: dimension.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Synthetic: number of queries.
    #[arg(long, default_value_t = 1_000)]
    pub n_queries: usize,
    /// Synthetic: random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// COSINE, DOT or L2.
    #[arg(long, default_value = "L2")]
    pub metric: String,
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Replicas of every shard (at most the number of nodes in the cluster).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u32,
    #[arg(long, default_value_t = 16)]
    pub m: u32,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: u32,
    #[arg(long, default_value_t = 10)]
    pub top_k: u32,
    /// Search `ef` values to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    pub ef: Vec<u32>,
    /// Concurrent clients per level, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
    /// Time per level, in seconds (each level also runs every query at least once).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Most searches per level.
    #[arg(long, default_value_t = 200_000)]
    pub max_queries: usize,
    /// Points per Upsert while ingesting.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Upserts in flight while ingesting.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Queries per request: 1 sends `Search` requests; more sends `SearchBatch`
    /// requests of this many queries (QPS counts queries, latencies are per request).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Write results here: `.json`, or `.csv` for one row per level.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw QPS (log scale) against recall@k, one series per concurrency level and one
    /// point per `ef`, into this PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Keep the collection afterwards (deleted by default).
    #[arg(long)]
    pub keep: bool,
}

/// One (ef, concurrency) level.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub ef: u32,
    pub concurrency: usize,
    /// Queries per request.
    pub batch_size: u32,
    pub queries: usize,
    pub qps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub recall: f64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub n: usize,
    pub dim: usize,
    pub metric: String,
    pub shards: u32,
    pub replication_factor: u32,
    pub m: u32,
    pub ef_construction: u32,
    pub top_k: u32,
    /// The `--filter` on every search (`--existing` runs only).
    pub filter: Option<String>,
    /// Absent for `--existing` runs, which ingest nothing.
    pub ingest_seconds: Option<f64>,
    pub ingest_points_per_second: Option<f64>,
    pub levels: Vec<Level>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs one level: `concurrency` clients cycle through the queries until the time is up
/// (and every query ran once), or `max` searches were made; each request carries
/// `--batch-size` queries.
async fn level(
    points: &PointsClient<Conn>,
    a: &BenchArgs,
    queries: &Arc<Vec<Vec<f32>>>,
    truth: &[Vec<u32>],
    ef: u32,
    concurrency: usize,
    filter: Option<pb::Filter>,
) -> anyhow::Result<Level> {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let batch = a.batch_size.max(1) as usize;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (mut client, queries, next) = (points.clone(), queries.clone(), next.clone());
        let (collection, top_k, max) = (a.collection.clone(), a.top_k, a.max_queries);
        let filter = filter.clone();
        let read = a.consistency.read_options();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut answered = 0usize;
            let mut first: Vec<(usize, Vec<u32>)> = Vec::new();
            let search = |q: usize| pb::SearchRequest {
                collection: collection.clone(),
                vector: queries[q].clone(),
                top_k,
                ef: Some(ef),
                filter: filter.clone(),
                read: read.clone(),
                ..Default::default()
            };
            loop {
                let i = next.fetch_add(batch, Ordering::Relaxed);
                if i >= max || (i >= queries.len() && Instant::now() >= deadline) {
                    break;
                }
                let n = batch.min(max - i);
                let t = Instant::now();
                let responses = if batch == 1 {
                    let q = i % queries.len();
                    vec![
                        client
                            .search(search(q))
                            .await
                            .map_err(status_err)?
                            .into_inner(),
                    ]
                } else {
                    client
                        .search_batch(pb::SearchBatchRequest {
                            collection: collection.clone(),
                            searches: (i..i + n).map(|j| search(j % queries.len())).collect(),
                            read: read.clone(),
                        })
                        .await
                        .map_err(status_err)?
                        .into_inner()
                        .responses
                };
                latencies.push(t.elapsed());
                answered += responses.len();
                for (j, resp) in (i..).zip(&responses) {
                    if j < queries.len() {
                        first.push((j, numeric_ids(resp)));
                    }
                }
            }
            anyhow::Ok((latencies, answered, first))
        }));
    }
    let mut latencies = Vec::new();
    let mut total = 0;
    let mut answered: Vec<(usize, Vec<u32>)> = Vec::new();
    for t in tasks {
        let (l, n, f) = t.await??;
        latencies.extend(l);
        total += n;
        answered.extend(f);
    }
    // Recall over the queries that ran (all of them, unless --max-queries cut the level
    // short): an unanswered query is not a miss.
    let (found, expected): (Vec<Vec<u32>>, Vec<Vec<u32>>) = answered
        .into_iter()
        .map(|(q, ids)| (ids, truth[q].clone()))
        .unzip();
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok(Level {
        ef,
        concurrency,
        batch_size: batch as u32,
        queries: total,
        qps: total as f64 / secs,
        p50_ms: percentile(&latencies, 0.50),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        recall: shoal_datasets::recall_at_k(&found, &expected, a.top_k as usize),
    })
}

/// The `--plot` chart of a run: one series per concurrency level, in the order given.
fn plot(path: &std::path::Path, r: &Report) -> anyhow::Result<()> {
    let mut series: Vec<crate::plot::Series> = Vec::new();
    for l in &r.levels {
        let batch = if l.batch_size > 1 {
            format!(" x {}", l.batch_size)
        } else {
            String::new()
        };
        let label = format!(
            "{} client{}{batch}",
            l.concurrency,
            if l.concurrency == 1 { "" } else { "s" }
        );
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((l.recall, l.qps)),
            None => series.push(crate::plot::Series {
                label,
                points: vec![(l.recall, l.qps)],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let name = r.dataset.rsplit('/').next().unwrap_or(&r.dataset);
    let title = format!("{name}, {} shard(s): QPS vs recall@{}", r.shards, r.top_k);
    crate::plot::write_png(path, &title, &format!("recall@{}", r.top_k), &series)
}

/// `shoal bench`.
pub async fn run(
    cols: CollectionsClient<Conn>,
    points: PointsClient<Conn>,
    a: BenchArgs,
) -> anyhow::Result<Report> {
    let report = if a.existing {
        search_existing(cols, points, &a).await?
    } else {
        ingest_and_search(cols, points, &a).await?
    };
    if let Some(out) = &a.out {
        write_report(out, &report)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(path) = &a.plot {
        plot(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report)
}

/// Reads `--ground-truth`, or computes it from `base` when there is one, and checks
/// that it covers every query with at least `--top-k` ids.
fn truth_for(
    a: &BenchArgs,
    base: Option<&[Vec<f32>]>,
    queries: &[Vec<f32>],
    metric: Metric,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let k = a.top_k as usize;
    let truth = match (&a.ground_truth, base) {
        (Some(p), _) => shoal_datasets::read_ivecs(p)?,
        (None, Some(base)) => {
            eprintln!(
                "computing exact top-{k} of {} queries by brute force",
                queries.len()
            );
            shoal_datasets::ground_truth(base, queries, k, metric)
        }
        (None, None) => bail!("--ground-truth is required with --existing"),
    };
    if truth.len() < queries.len() || truth.iter().any(|t| t.len() < k) {
        bail!(
            "the ground truth must have at least {k} ids for each of the {} queries",
            queries.len()
        );
    }
    Ok(truth)
}

/// Every (ef, concurrency) level, printed as it finishes.
async fn sweep(
    points: &PointsClient<Conn>,
    a: &BenchArgs,
    queries: Vec<Vec<f32>>,
    truth: &[Vec<u32>],
    filter: Option<pb::Filter>,
) -> anyhow::Result<Vec<Level>> {
    let queries = Arc::new(queries);
    let mut levels = Vec::new();
    if a.batch_size > 1 {
        eprintln!(
            "sending queries in SearchBatch requests of {} (latencies are per request)",
            a.batch_size
        );
    }
    println!(
        "{:>6} {:>6} {:>9} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "ef", "conc", "queries", "QPS", "p50 ms", "p95 ms", "p99 ms", "recall"
    );
    for &ef in &a.ef {
        for &c in &a.concurrency {
            let l = level(points, a, &queries, truth, ef, c, filter.clone()).await?;
            println!(
                "{:>6} {:>6} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>8.4}",
                l.ef, l.concurrency, l.queries, l.qps, l.p50_ms, l.p95_ms, l.p99_ms, l.recall
            );
            levels.push(l);
        }
    }
    Ok(levels)
}

/// `--existing`: searches a collection as it is; its configuration and size are read
/// from the node.
async fn search_existing(
    mut cols: CollectionsClient<Conn>,
    points: PointsClient<Conn>,
    a: &BenchArgs,
) -> anyhow::Result<Report> {
    let path = a
        .queries
        .as_ref()
        .context("--queries is required with --existing")?;
    let queries = shoal_datasets::read_fvecs(path)?;
    if queries.is_empty() {
        bail!("{} holds no queries", path.display());
    }
    let info = cols
        .get(pb::GetCollectionRequest {
            name: a.collection.clone(),
        })
        .await
        .map_err(status_err)
        .with_context(|| format!("reading collection {:?}", a.collection))?
        .into_inner();
    let config = info.config.unwrap_or_default();
    let metric = convert::metric("metric", config.metric).map_err(|e| anyhow::anyhow!("{e}"))?;
    let truth = truth_for(a, None, &queries, metric)?;
    let filter = a.filter.as_deref().map(filter_json::parse).transpose()?;
    let dim = queries[0].len();
    eprintln!(
        "searching {:?} as it is: {} points, dim {}, {} shard(s){}",
        a.collection,
        info.points_count,
        config.dim,
        config.shard_count,
        a.filter
            .as_deref()
            .map(|f| format!(", filter {f}"))
            .unwrap_or_default()
    );
    let levels = sweep(&points, a, queries, &truth, filter).await?;
    Ok(Report {
        dataset: a.collection.clone(),
        n: info.points_count as usize,
        dim,
        metric: metric.to_string(),
        shards: config.shard_count,
        replication_factor: config.replication_factor,
        m: config.m,
        ef_construction: config.ef_construction,
        top_k: a.top_k,
        filter: a.filter.clone(),
        ingest_seconds: None,
        ingest_points_per_second: None,
        levels,
    })
}

/// The default run: create the collection, ingest, search, delete (unless `--keep`).
async fn ingest_and_search(
    mut cols: CollectionsClient<Conn>,
    points: PointsClient<Conn>,
    a: &BenchArgs,
) -> anyhow::Result<Report> {
    let metric: Metric = a.metric.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (dataset, base, queries) = match &a.data {
        Some(path) => {
            let q = a
                .queries
                .as_ref()
                .context("--queries is required with --data")?;
            (
                path.display().to_string(),
                shoal_datasets::read_fvecs(path)?,
                shoal_datasets::read_fvecs(q)?,
            )
        }
        None => {
            if a.queries.is_some() {
                bail!("--queries needs --data (or --existing)");
            }
            eprintln!(
                "generating {} {:?} vectors of dim {} (seed {})",
                a.n + a.n_queries,
                a.synthetic,
                a.dim,
                a.seed
            );
            // Queries come from the same generator call, so they share its distribution.
            let mut all = match a.synthetic {
                Synthetic::Uniform => shoal_datasets::uniform(a.n + a.n_queries, a.dim, a.seed),
                Synthetic::Clustered => {
                    shoal_datasets::clustered(a.n + a.n_queries, a.dim, 100, a.seed)
                }
            };
            let queries = all.split_off(a.n);
            (
                format!("{:?}-{}x{}-seed{}", a.synthetic, a.n, a.dim, a.seed).to_lowercase(),
                all,
                queries,
            )
        }
    };
    if base.is_empty() || queries.is_empty() {
        bail!("the data set has no base vectors or no queries");
    }
    let truth = truth_for(a, Some(&base), &queries, metric)?;
    let (n, dim) = (base.len(), base[0].len());
    cols.create(pb::CreateCollectionRequest {
        name: a.collection.clone(),
        dim: dim as u32,
        metric: convert::metric_to_pb(metric) as i32,
        shard_count: Some(a.shards),
        replication_factor: Some(a.replication_factor),
        m: Some(a.m),
        ef_construction: Some(a.ef_construction),
    })
    .await
    .map_err(status_err)
    .with_context(|| {
        format!(
            "creating collection {:?} (pick another with --collection)",
            a.collection
        )
    })?;
    let result = async {
        let all: Vec<pb::Point> = base
            .into_iter()
            .enumerate()
            .map(|(i, v)| pb::Point {
                id: Some(convert::point_id_to_pb(PointId::Num(i as u64))),
                vector: v,
                payload: Default::default(),
            })
            .collect();
        let ingest = upload(points.clone(), &a.collection, all, a.batch, a.parallel).await?;
        eprintln!(
            "ingested {n} points in {ingest:.1}s ({:.0} points/s, durable)",
            n as f64 / ingest
        );
        let levels = sweep(&points, a, queries, &truth, None).await?;
        anyhow::Ok(Report {
            dataset,
            n,
            dim,
            metric: metric.to_string(),
            shards: a.shards,
            replication_factor: a.replication_factor,
            m: a.m,
            ef_construction: a.ef_construction,
            top_k: a.top_k,
            filter: None,
            ingest_seconds: Some(ingest),
            ingest_points_per_second: Some(n as f64 / ingest),
            levels,
        })
    }
    .await;
    if !a.keep {
        let _ = cols
            .delete(pb::DeleteCollectionRequest {
                name: a.collection.clone(),
            })
            .await;
    }
    result
}

fn write_report(path: &std::path::Path, r: &Report) -> anyhow::Result<()> {
    let text = if path.extension().is_some_and(|e| e == "csv") {
        let mut s = String::from(
            "dataset,n,dim,metric,shards,replication_factor,m,ef_construction,top_k,ingest_points_per_second,ef,concurrency,batch_size,queries,qps,p50_ms,p95_ms,p99_ms,recall\n",
        );
        for l in &r.levels {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{:.4},{:.4},{:.4},{:.4}\n",
                r.dataset,
                r.n,
                r.dim,
                r.metric,
                r.shards,
                r.replication_factor,
                r.m,
                r.ef_construction,
                r.top_k,
                r.ingest_points_per_second
                    .map(|x| format!("{x:.1}"))
                    .unwrap_or_default(),
                l.ef,
                l.concurrency,
                l.batch_size,
                l.queries,
                l.qps,
                l.p50_ms,
                l.p95_ms,
                l.p99_ms,
                l.recall
            ));
        }
        s
    } else {
        serde_json::to_string_pretty(r)?
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
