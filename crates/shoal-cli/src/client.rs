//! The CLI client: subcommands that talk to a running node over gRPC.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use shoal_proto::v1::{
    self as pb, cluster_client::ClusterClient, collections_client::CollectionsClient,
    points_client::PointsClient,
};
use shoal_server::auth::Secret;
use shoal_server::convert;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::filter_json;

/// A progress bar on a terminal; a line per 10% otherwise (logs, CI).
pub(crate) struct Progress {
    bar: ProgressBar,
    tty: bool,
    total: u64,
    done: u64,
    unit: &'static str,
    started: Instant,
}

impl Progress {
    pub(crate) fn new(total: u64, unit: &'static str) -> Progress {
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{bar:40}} {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"
            ))
            .expect("valid template"),
        );
        Progress {
            bar,
            tty,
            total,
            done: 0,
            unit,
            started: Instant::now(),
        }
    }

    pub(crate) fn inc(&mut self, n: u64) {
        let before = self.done * 10 / self.total.max(1);
        self.done += n;
        self.bar.inc(n);
        let after = self.done * 10 / self.total.max(1);
        if !self.tty && after > before {
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!(
                "{}/{} {} ({:.0}%, {:.0}/s)",
                self.done,
                self.total,
                self.unit,
                100.0 * self.done as f64 / self.total.max(1) as f64,
                self.done as f64 / secs.max(1e-9)
            );
        }
    }

    pub(crate) fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// Largest message the client sends or accepts.
pub(crate) const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// How the client commands reach a node: its address, the credential sent with
/// every call, and TLS.
#[derive(Clone, Debug, clap::Args)]
pub struct Target {
    /// Node to talk to: `http://HOST:PORT`, or `https://HOST:PORT` for a node serving
    /// TLS (trusting the system's CAs, or --tls-ca).
    #[arg(
        long,
        global = true,
        env = "SHOAL_ADDR",
        default_value = "http://127.0.0.1:7470"
    )]
    pub addr: String,
    /// API key or JWT sent with every call (`authorization: Bearer ...`). Prefer the
    /// environment variable: flags show in `ps`.
    #[arg(long, global = true, env = "SHOAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// PEM file of the CA(s) to trust for an https:// node, instead of the system's.
    #[arg(long, global = true, env = "SHOAL_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a node that requires one (with --tls-client-key).
    #[arg(long, global = true, env = "SHOAL_TLS_CLIENT_CERT")]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, global = true, env = "SHOAL_TLS_CLIENT_KEY")]
    pub tls_client_key: Option<PathBuf>,
    /// The name the node's certificate must carry, when it is not the address's host
    /// (e.g. connecting by IP address to a certificate for `shoal1`).
    #[arg(long, global = true, env = "SHOAL_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl Target {
    /// A plaintext target without a credential.
    pub fn plain(addr: &str) -> Target {
        Target {
            addr: addr.to_string(),
            api_key: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            tls_server_name: None,
        }
    }

    /// The interceptor that sends the credential.
    pub fn credential(&self) -> anyhow::Result<Credential> {
        let Some(key) = self.api_key.as_ref().filter(|k| !k.expose().is_empty()) else {
            return Ok(Credential(None));
        };
        let mut v = MetadataValue::try_from(format!("Bearer {}", key.expose()))
            .map_err(|_| anyhow::anyhow!("--api-key: not printable ASCII"))?;
        // Kept out of hyper's and h2's debug logs.
        v.set_sensitive(true);
        Ok(Credential(Some(v)))
    }

    fn tls(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let read = |p: &Path, flag: &str| {
            std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))
        };
        let https = self.addr.starts_with("https://");
        if !https {
            if self.tls_ca.is_some()
                || self.tls_client_cert.is_some()
                || self.tls_client_key.is_some()
                || self.tls_server_name.is_some()
            {
                bail!(
                    "TLS options need an https:// address (--addr {})",
                    self.addr
                );
            }
            return Ok(None);
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls_ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?)),
            None => tls.with_native_roots(),
        };
        match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(c), Some(k)) => {
                tls = tls.identity(Identity::from_pem(
                    read(c, "--tls-client-cert")?,
                    read(k, "--tls-client-key")?,
                ))
            }
            (None, None) => {}
            _ => bail!("--tls-client-cert and --tls-client-key go together"),
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }
}

/// Sends the credential with every call.
#[derive(Clone)]
pub struct Credential(Option<MetadataValue<Ascii>>);

impl Interceptor for Credential {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connection to a node that sends the credential.
pub type Conn = InterceptedService<Channel, Credential>;

/// A channel to a node.
pub(crate) async fn channel(t: &Target) -> anyhow::Result<Conn> {
    let addr = &t.addr;
    let mut endpoint = Channel::from_shared(addr.to_string())
        .with_context(|| format!("bad address {addr:?}"))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = t.tls()? {
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    }
    let channel = endpoint.connect().await.with_context(|| {
        format!("cannot reach a shoal node at {addr}; is `shoal serve` running?")
    })?;
    Ok(InterceptedService::new(channel, t.credential()?))
}

/// Connects to a node.
pub async fn connect(
    target: &Target,
) -> anyhow::Result<(CollectionsClient<Conn>, PointsClient<Conn>)> {
    let channel = channel(target).await?;
    Ok((
        CollectionsClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        PointsClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    ))
}

/// A gRPC status as a CLI error.
pub fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

pub fn print_collection(info: &pb::CollectionInfo) {
    let Some(c) = &info.config else { return };
    let metric = pb::Metric::try_from(c.metric)
        .map(|m| m.as_str_name())
        .unwrap_or("?");
    println!(
        "{}: dim={} metric={} shards={} replication_factor={} m={} ef_construction={} points={}",
        c.name,
        c.dim,
        metric,
        c.shard_count,
        c.replication_factor,
        c.m,
        c.ef_construction,
        info.points_count
    );
    for s in &info.shards {
        println!(
            "  shard {}: points={} tombstones={} applied_seq={}",
            s.shard, s.points_count, s.tombstones, s.applied_seq
        );
    }
}

/// Input formats of `shoal import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Binary fvecs (int32 dim, then dim float32 per vector); ids are row numbers
    /// plus --start-id.
    Fvecs,
    /// One JSON object per line: {"id": 1 or "uuid", "vector": [...], "payload": {...}}.
    Jsonl,
}

fn guess_format(path: &Path) -> anyhow::Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("fvecs") => Ok(Format::Fvecs),
        Some("jsonl") | Some("ndjson") | Some("json") => Ok(Format::Jsonl),
        _ => bail!(
            "cannot tell the format of {}; pass --format fvecs|jsonl",
            path.display()
        ),
    }
}

/// What `shoal import` reads and how it sends it.
pub struct ImportOpts {
    pub collection: String,
    pub file: PathBuf,
    pub format: Option<Format>,
    /// Points per Upsert request.
    pub batch: usize,
    /// fvecs only: id of the first row.
    pub start_id: u64,
    pub limit: Option<usize>,
    /// Upsert requests in flight at once.
    pub parallel: usize,
}

/// `shoal import`.
pub async fn import(points: PointsClient<Conn>, o: ImportOpts) -> anyhow::Result<()> {
    let ImportOpts {
        collection,
        file,
        format,
        batch,
        start_id,
        limit,
        parallel,
    } = o;
    let format = match format {
        Some(f) => f,
        None => guess_format(&file)?,
    };
    let all: Vec<pb::Point> = match format {
        Format::Fvecs => shoal_datasets::read_fvecs_limit(&file, limit)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| pb::Point {
                id: Some(convert::point_id_to_pb(shoal_core::PointId::Num(
                    start_id + i as u64,
                ))),
                vector: v,
                payload: Default::default(),
            })
            .collect(),
        Format::Jsonl => {
            let mut ps = shoal_datasets::read_jsonl(&file)?;
            if let Some(l) = limit {
                ps.truncate(l);
            }
            ps.into_iter()
                .map(|p| pb::Point {
                    id: Some(convert::point_id_to_pb(p.id)),
                    vector: p.vector,
                    payload: convert::payload_to_pb(p.payload),
                })
                .collect()
        }
    };
    let total = all.len();
    let secs = upload(points, &collection, all, batch, parallel).await?;
    println!(
        "imported {total} points into {collection} in {secs:.1}s ({:.0} points/s, durable)",
        total as f64 / secs
    );
    Ok(())
}

/// Upserts `all` in batches of `batch`, `parallel` requests in flight, showing
/// progress. Returns the seconds it took (every point durable).
pub async fn upload(
    points: PointsClient<Conn>,
    collection: &str,
    all: Vec<pb::Point>,
    batch: usize,
    parallel: usize,
) -> anyhow::Result<f64> {
    let mut bar = Progress::new(all.len() as u64, "points");
    let started = Instant::now();
    let batches: Vec<Vec<pb::Point>> = {
        let mut it = all.into_iter().peekable();
        let mut out = Vec::new();
        while it.peek().is_some() {
            out.push(it.by_ref().take(batch.max(1)).collect());
        }
        out
    };
    let mut stream = futures::stream::iter(batches.into_iter().map(|b| {
        let mut client = points.clone();
        let collection = collection.to_string();
        async move {
            let n = b.len() as u64;
            client
                .upsert(pb::UpsertRequest {
                    collection,
                    points: b,
                })
                .await
                .map(|_| n)
        }
    }))
    .buffer_unordered(parallel.max(1));
    while let Some(r) = stream.next().await {
        bar.inc(r.map_err(status_err)?);
    }
    bar.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}

/// The numeric ids of a search's results, in rank order (UUID ids and ids above
/// `u32::MAX` are left out: data sets with ground truth number their rows).
pub fn numeric_ids(resp: &pb::SearchResponse) -> Vec<u32> {
    resp.results
        .iter()
        .filter_map(|h| match h.id.as_ref().and_then(|i| i.kind.clone()) {
            Some(pb::point_id::Kind::Num(n)) => u32::try_from(n).ok(),
            _ => None,
        })
        .collect()
}

/// Read consistency of the client's read commands (`--consistency`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadConsistency {
    /// Nearest replica of each shard: fast, may miss a write acknowledged a moment ago.
    #[default]
    Eventual,
    /// Read-your-writes; without a write token (the CLI has none), like eventual.
    Session,
    /// Linearizable: each shard's leader confirms its leadership with a majority.
    Strong,
}

impl ReadConsistency {
    /// The request's `read` field.
    pub fn read_options(self) -> Option<pb::ReadOptions> {
        let consistency = match self {
            ReadConsistency::Eventual => pb::Consistency::Eventual,
            ReadConsistency::Session => pb::Consistency::Session,
            ReadConsistency::Strong => pb::Consistency::Strong,
        };
        Some(pb::ReadOptions {
            consistency: consistency as i32,
            token: None,
        })
    }
}

/// Options shared by the search commands.
pub struct SearchOpts {
    pub top_k: u32,
    pub ef: Option<u32>,
    pub filter: Option<String>,
    pub with_payload: bool,
    pub with_vector: bool,
    pub consistency: ReadConsistency,
}

fn parse_filter(f: &Option<String>) -> anyhow::Result<Option<pb::Filter>> {
    f.as_deref().map(filter_json::parse).transpose()
}

fn request(
    collection: &str,
    vector: Vec<f32>,
    o: &SearchOpts,
    filter: Option<pb::Filter>,
) -> pb::SearchRequest {
    pb::SearchRequest {
        read: o.consistency.read_options(),
        collection: collection.to_string(),
        vector,
        top_k: o.top_k,
        ef: o.ef,
        filter,
        with_payload: o.with_payload,
        with_vector: o.with_vector,
    }
}

fn print_hit(h: &pb::ScoredPoint) {
    let id = h.id.clone().map(|i| {
        convert::point_id("id", Some(i))
            .map(|i| i.to_string())
            .unwrap_or_default()
    });
    let mut line = format!("{}\t{}", id.unwrap_or_default(), h.score);
    if !h.payload.is_empty() {
        let payload = convert::payload(h.payload.clone());
        line.push('\t');
        line.push_str(&filter_json::payload_to_json(&payload).to_string());
    }
    if !h.vector.is_empty() {
        line.push_str(&format!("\t{:?}", h.vector));
    }
    println!("{line}");
}

/// `shoal search --vector`.
pub async fn search_one(
    mut points: PointsClient<Conn>,
    collection: &str,
    vector: Vec<f32>,
    o: &SearchOpts,
) -> anyhow::Result<()> {
    let filter = parse_filter(&o.filter)?;
    let resp = points
        .search(request(collection, vector, o, filter))
        .await
        .map_err(status_err)?
        .into_inner();
    println!("id\tscore");
    resp.results.iter().for_each(print_hit);
    Ok(())
}

/// `shoal search --queries FILE [--ground-truth FILE]`: runs every query (in
/// SearchBatch requests of `batch`), prints QPS and, with ground truth, recall@k.
pub async fn search_file(
    mut points: PointsClient<Conn>,
    collection: &str,
    queries: &Path,
    ground_truth: Option<&Path>,
    batch: usize,
    o: &SearchOpts,
) -> anyhow::Result<()> {
    let filter = parse_filter(&o.filter)?;
    let qs = shoal_datasets::read_fvecs(queries)?;
    let truth = ground_truth.map(shoal_datasets::read_ivecs).transpose()?;
    if let Some(t) = &truth
        && t.len() < qs.len()
    {
        bail!(
            "{} has {} rows but there are {} queries",
            ground_truth.unwrap().display(),
            t.len(),
            qs.len()
        );
    }
    let mut bar = Progress::new(qs.len() as u64, "queries");
    let started = Instant::now();
    let mut found: Vec<Vec<u32>> = Vec::with_capacity(qs.len());
    for chunk in qs.chunks(batch.max(1)) {
        let resp = points
            .search_batch(pb::SearchBatchRequest {
                read: o.consistency.read_options(),
                collection: collection.to_string(),
                searches: chunk
                    .iter()
                    .map(|q| request(collection, q.clone(), o, filter.clone()))
                    .collect(),
            })
            .await
            .map_err(status_err)?
            .into_inner();
        for r in resp.responses {
            found.push(numeric_ids(&r));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} queries in {secs:.3}s ({:.0} QPS over gRPC, batches of {batch})",
        qs.len(),
        qs.len() as f64 / secs
    );
    match truth {
        Some(t) => {
            let k = o.top_k as usize;
            let recall = shoal_datasets::recall_at_k(&found, &t[..found.len()], k);
            println!("recall@{k} = {recall:.4}");
        }
        None => {
            for (i, ids) in found.iter().enumerate().take(10) {
                println!("query {i}: {ids:?}");
            }
        }
    }
    Ok(())
}

pub fn parse_vector(s: &str) -> anyhow::Result<Vec<f32>> {
    s.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f32>()
                .with_context(|| format!("bad vector component {x:?}"))
        })
        .collect()
}

pub fn parse_ids(ids: &[String]) -> anyhow::Result<Vec<pb::PointId>> {
    ids.iter()
        .map(|s| {
            Ok(convert::point_id_to_pb(
                shoal_core::PointId::parse(s).map_err(|e| anyhow::anyhow!("{e}"))?,
            ))
        })
        .collect()
}

pub async fn get(
    mut points: PointsClient<Conn>,
    collection: &str,
    ids: &[String],
    with_vector: bool,
    consistency: ReadConsistency,
) -> anyhow::Result<()> {
    let resp = points
        .get(pb::GetPointsRequest {
            read: consistency.read_options(),
            collection: collection.into(),
            ids: parse_ids(ids)?,
            with_payload: true,
            with_vector,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    for p in resp.points {
        let id = convert::point_id("id", p.id).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut obj = serde_json::json!({ "id": id.to_string(), "payload": filter_json::payload_to_json(&convert::payload(p.payload)) });
        if with_vector {
            obj["vector"] = serde_json::json!(p.vector);
        }
        println!("{obj}");
    }
    Ok(())
}

pub async fn delete(
    mut points: PointsClient<Conn>,
    collection: &str,
    ids: &[String],
) -> anyhow::Result<()> {
    let r = points
        .delete(pb::DeletePointsRequest {
            collection: collection.into(),
            ids: parse_ids(ids)?,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    println!("deleted {} ids (durable)", r.count);
    Ok(())
}

pub async fn count(
    mut points: PointsClient<Conn>,
    collection: &str,
    filter: &Option<String>,
    consistency: ReadConsistency,
) -> anyhow::Result<()> {
    let r = points
        .count(pb::CountRequest {
            read: consistency.read_options(),
            collection: collection.into(),
            filter: parse_filter(filter)?,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    println!("{}", r.count);
    Ok(())
}

/// Whether a shard's replicas hold the same points, as `shoal cluster status` judges
/// from their reports: only replicas at the same applied index are comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agreement {
    /// Every replica answered, all at the same applied index with equal digests.
    Agree,
    /// Replicas at the same applied index report different digests: they diverged.
    Differ(String),
    /// A replica is behind the others or did not answer; no divergence seen among
    /// replicas that are comparable.
    CatchingUp(String),
    /// Digests were not requested (or a replica sent none); nothing compared.
    NotChecked,
}

/// Judges one shard's replicas.
pub fn agreement(shard: &pb::ShardStatus) -> Agreement {
    let reachable: Vec<&pb::ReplicaStatus> = shard
        .replicas
        .iter()
        .filter(|r| r.state != "unreachable")
        .collect();
    // Replicas at the same applied index must have equal digests.
    let mut by_index: std::collections::BTreeMap<u64, Vec<&pb::ReplicaStatus>> = Default::default();
    for r in reachable.iter().filter(|r| r.digest.is_some()) {
        by_index.entry(r.applied_index).or_default().push(r);
    }
    let differ: Vec<String> = by_index
        .iter()
        .filter(|(_, rs)| rs.iter().any(|r| r.digest != rs[0].digest))
        .map(|(index, rs)| {
            let who: Vec<String> = rs
                .iter()
                .map(|r| format!("node {} {}", r.node, r.digest.as_deref().unwrap_or("-")))
                .collect();
            format!("at applied index {index}: {}", who.join(", "))
        })
        .collect();
    if !differ.is_empty() {
        return Agreement::Differ(differ.join("; "));
    }
    let unreachable: Vec<String> = shard
        .replicas
        .iter()
        .filter(|r| r.state == "unreachable")
        .map(|r| format!("node {} unreachable", r.node))
        .collect();
    if !unreachable.is_empty() {
        return Agreement::CatchingUp(unreachable.join(", "));
    }
    let top = reachable.iter().map(|r| r.applied_index).max().unwrap_or(0);
    let behind: Vec<String> = reachable
        .iter()
        .filter(|r| r.applied_index < top)
        .map(|r| format!("node {} at {} of {top}", r.node, r.applied_index))
        .collect();
    if !behind.is_empty() {
        return Agreement::CatchingUp(behind.join(", "));
    }
    if reachable.is_empty() || reachable.iter().any(|r| r.digest.is_none()) {
        return Agreement::NotChecked;
    }
    Agreement::Agree
}

/// The last line of `shoal cluster status`: do replica digests agree for every shard?
pub fn agreement_summary(status: &pb::ClusterStatus) -> (bool, String) {
    let mut total = 0;
    let (mut differ, mut behind, mut unchecked) = (Vec::new(), Vec::new(), 0);
    for c in &status.collections {
        for s in &c.shards {
            total += 1;
            match agreement(s) {
                Agreement::Agree => {}
                Agreement::Differ(d) => differ.push(format!("{}/{} ({d})", c.name, s.shard)),
                Agreement::CatchingUp(d) => behind.push(format!("{}/{} ({d})", c.name, s.shard)),
                Agreement::NotChecked => unchecked += 1,
            }
        }
    }
    if total == 0 {
        return (true, "no collections: no shards to compare".into());
    }
    if differ.is_empty() && behind.is_empty() && unchecked == 0 {
        return (
            true,
            format!(
                "replica digests agree for every shard ({total} shard{})",
                if total == 1 { "" } else { "s" }
            ),
        );
    }
    let mut parts = Vec::new();
    if !differ.is_empty() {
        parts.push(format!(
            "replica digests DIFFER in {} of {total} shards: {}",
            differ.len(),
            differ.join("; ")
        ));
    }
    if !behind.is_empty() {
        parts.push(format!(
            "still catching up in {} of {total} shards: {}",
            behind.len(),
            behind.join("; ")
        ));
    }
    if unchecked > 0 {
        parts.push(format!(
            "{unchecked} of {total} shards not compared (no digests; pass --digests)"
        ));
    }
    (false, parts.join("; "))
}

fn status_json(s: &pb::ClusterStatus) -> serde_json::Value {
    let (agree, summary) = agreement_summary(s);
    serde_json::json!({
        "node_id": s.node_id,
        "metadata_leader": s.metadata_leader,
        "nodes": s.nodes.iter().map(|n| serde_json::json!({
            "id": n.id,
            "address": n.address,
            "reachable": n.reachable,
            "error": (!n.error.is_empty()).then_some(&n.error),
            "state": n.state,
            "voter": n.voter,
            "failure": (!n.failure.is_empty()).then_some(&n.failure),
            "load": n.load.as_ref().map(|l| serde_json::json!({
                "cpu_percent": l.cpu_percent,
                "rss_bytes": l.rss_bytes,
                "requests_per_second": l.requests_per_second,
                "points": l.points,
                "replicas": l.replicas,
                "leaders": l.leaders,
            })),
        })).collect::<Vec<_>>(),
        "operations": s.operations.iter().map(|o| serde_json::json!({
            "id": o.id,
            "description": o.description,
            "progress": o.progress,
        })).collect::<Vec<_>>(),
        "collections": s.collections.iter().map(|c| serde_json::json!({
            "name": c.name,
            "id": c.id,
            "routing_version": c.routing_version,
            "shards": c.shards.iter().map(|sh| {
                let (verdict, detail) = match agreement(sh) {
                    Agreement::Agree => ("agree", None),
                    Agreement::Differ(d) => ("differ", Some(d)),
                    Agreement::CatchingUp(d) => ("catching_up", Some(d)),
                    Agreement::NotChecked => ("not_checked", None),
                };
                serde_json::json!({
                    "shard": sh.shard,
                    "hash_range": [sh.hash_first, sh.hash_last],
                    "leader": sh.leader,
                    "replicas": sh.replicas.iter().map(|r| serde_json::json!({
                        "node": r.node,
                        "state": r.state,
                        "applied_index": r.applied_index,
                        "term": r.term,
                        "points": r.points,
                        "digest": r.digest,
                        "quarantined": r.quarantined,
                        "failure": (!r.failure.is_empty()).then_some(&r.failure),
                    })).collect::<Vec<_>>(),
                    "agreement": verdict,
                    "detail": detail,
                })
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "digests_agree": agree,
        "summary": summary,
    })
}

/// `shoal cluster status` as text.
fn status_text(s: &pb::ClusterStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let leader = s
        .metadata_leader
        .map_or("unknown".to_string(), |l| format!("node {l}"));
    let _ = writeln!(
        out,
        "cluster status from node {} (metadata leader: {leader})",
        s.node_id
    );
    let _ = writeln!(out, "nodes:");
    for n in &s.nodes {
        // The error of a reachable node says why its digests are missing.
        let health = match (n.reachable, n.error.is_empty()) {
            (true, true) => "reachable".to_string(),
            (true, false) => format!("reachable ({})", n.error),
            (false, true) => "UNREACHABLE".to_string(),
            (false, false) => format!("UNREACHABLE ({})", n.error),
        };
        let role = if n.voter { "voter" } else { "learner" };
        let load = n.load.as_ref().map_or(String::new(), |l| {
            format!(
                "; {} replicas ({} leading), {} points, cpu {:.0}%, rss {} MiB, {:.0} req/s",
                l.replicas,
                l.leaders,
                l.points,
                l.cpu_percent,
                l.rss_bytes >> 20,
                l.requests_per_second
            )
        });
        let _ = writeln!(
            out,
            "  node {:<3} {:<24} {health}, {}, {role}{load}",
            n.id, n.address, n.state
        );
        if !n.failure.is_empty() {
            let _ = writeln!(out, "      FAILED: {}", n.failure);
        }
    }
    if !s.operations.is_empty() {
        let _ = writeln!(out, "operations in flight:");
        for o in &s.operations {
            let _ = writeln!(out, "  #{} {}: {}", o.id, o.description, o.progress);
        }
    }
    for c in &s.collections {
        let _ = writeln!(
            out,
            "collection {} (id {}), {} shards:",
            c.name,
            c.id,
            c.shards.len()
        );
        for sh in &c.shards {
            let leader = sh
                .leader
                .map_or("none".to_string(), |l| format!("node {l}"));
            let verdict = match agreement(sh) {
                Agreement::Agree => "digests agree".to_string(),
                Agreement::Differ(d) => format!("DIGESTS DIFFER {d}"),
                Agreement::CatchingUp(d) => format!("catching up: {d}"),
                Agreement::NotChecked => "digests not compared".to_string(),
            };
            let _ = writeln!(
                out,
                "  shard {} (hashes {:#018x}..={:#018x}): leader {leader}; {verdict}",
                sh.shard, sh.hash_first, sh.hash_last
            );
            for r in &sh.replicas {
                let _ = writeln!(
                    out,
                    "    node {:<3} {:<11} applied {:<8} points {:<9} digest {}",
                    r.node,
                    r.state,
                    r.applied_index,
                    r.points,
                    r.digest.as_deref().unwrap_or("-")
                );
                if !r.failure.is_empty() {
                    let _ = writeln!(out, "      failed: {}", r.failure);
                }
                if r.quarantined > 0 {
                    let _ = writeln!(
                        out,
                        "      {} invalid stored records quarantined (see node {}'s log)",
                        r.quarantined, r.node
                    );
                }
            }
        }
    }
    if s.collections.is_empty() {
        let _ = writeln!(out, "no collections");
    }
    let _ = writeln!(out, "{}", agreement_summary(s).1);
    out
}

/// A client of the `Cluster` service of the node at `addr`.
pub async fn cluster_client(target: &Target) -> anyhow::Result<ClusterClient<Conn>> {
    Ok(ClusterClient::new(channel(target).await?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// `shoal cluster status`: the cluster as the node at `target` sees it. Succeeds (exit
/// code 0) whatever the replicas' state, when the node answers.
pub async fn cluster_status(target: &Target, digests: bool, json: bool) -> anyhow::Result<()> {
    let mut client = cluster_client(target).await?;
    let s = client
        .status(pb::ClusterStatusRequest { digests })
        .await
        .map_err(status_err)?
        .into_inner();
    let text = if json {
        serde_json::to_string_pretty(&status_json(&s))? + "\n"
    } else {
        status_text(&s)
    };
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `shoal cluster status | head` is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node: u64, state: &str, applied: u64, digest: Option<&str>) -> pb::ReplicaStatus {
        pb::ReplicaStatus {
            node,
            state: state.into(),
            applied_index: applied,
            points: 10,
            digest: digest.map(String::from),
            term: 1,
            quarantined: 0,
            failure: String::new(),
        }
    }

    fn shard(replicas: Vec<pb::ReplicaStatus>) -> pb::ShardStatus {
        pb::ShardStatus {
            shard: 0,
            leader: Some(1),
            replicas,
            hash_first: 0,
            hash_last: u64::MAX,
        }
    }

    #[test]
    fn agreement_compares_only_replicas_at_the_same_index() {
        let agree = shard(vec![
            replica(1, "leader", 7, Some("aa")),
            replica(2, "follower", 7, Some("aa")),
            replica(3, "follower", 7, Some("aa")),
        ]);
        assert_eq!(agreement(&agree), Agreement::Agree);
        let behind = shard(vec![
            replica(1, "leader", 9, Some("bb")),
            replica(2, "follower", 9, Some("bb")),
            replica(3, "follower", 7, Some("aa")),
        ]);
        assert!(
            matches!(agreement(&behind), Agreement::CatchingUp(d) if d.contains("node 3 at 7 of 9"))
        );
        let down = shard(vec![
            replica(1, "leader", 9, Some("bb")),
            replica(2, "follower", 9, Some("bb")),
            replica(3, "unreachable", 0, None),
        ]);
        assert!(
            matches!(agreement(&down), Agreement::CatchingUp(d) if d.contains("node 3 unreachable"))
        );
        let differ = shard(vec![
            replica(1, "leader", 9, Some("bb")),
            replica(2, "follower", 9, Some("cc")),
            replica(3, "follower", 7, Some("aa")),
        ]);
        assert!(
            matches!(agreement(&differ), Agreement::Differ(d) if d.contains("applied index 9"))
        );
        let unchecked = shard(vec![
            replica(1, "leader", 9, None),
            replica(2, "follower", 9, None),
        ]);
        assert_eq!(agreement(&unchecked), Agreement::NotChecked);

        let status = pb::ClusterStatus {
            node_id: 1,
            metadata_leader: Some(1),
            nodes: vec![],
            collections: vec![pb::CollectionStatus {
                routing_version: 0,
                name: "c".into(),
                id: 1,
                shards: vec![agree.clone(), behind],
            }],
            operations: vec![],
        };
        let (ok, line) = agreement_summary(&status);
        assert!(
            !ok && line.contains("catching up in 1 of 2 shards: c/0"),
            "{line}"
        );
        let status = pb::ClusterStatus {
            collections: vec![pb::CollectionStatus {
                routing_version: 0,
                name: "c".into(),
                id: 1,
                shards: vec![agree],
            }],
            ..status
        };
        assert_eq!(
            agreement_summary(&status),
            (
                true,
                "replica digests agree for every shard (1 shard)".into()
            )
        );
    }
}
