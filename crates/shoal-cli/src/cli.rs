//! The `shoal` command line: `shoal serve` runs a node; the other subcommands are a
//! client of a running node. `src/main.rs` only calls [`main`].

use std::path::PathBuf;

use crate::client::{self, Format, ReadConsistency, SearchOpts};
use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_proto::v1 as pb;
use shoal_server::serve::{ServeArgs, init_logging, serve};

/// Shoal: a sharded vector database served over gRPC.
// `name` and `about` are those of the package this binary lived in before shoal-cli
// (clap's defaults), so `shoal --version` still prints `shoal-server 0.1.0`
// (benchmark results record that line) and `shoal --help` still opens with this text.
#[derive(Parser)]
#[command(
    name = "shoal-server",
    version,
    about = "The `shoal` binary: gRPC services over a cluster node, configuration, limits, and the CLI client.",
    propagate_version = true
)]
struct Cli {
    /// The node client commands talk to, their credential and TLS.
    #[command(flatten)]
    target: client::Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Create, list, describe or delete collections.
    #[command(subcommand)]
    Collection(CollectionCmd),
    /// Inspect the cluster: nodes, shard replicas, and whether replicas agree.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Back up collections and restore them (into this or another cluster, of any
    /// size): create, list, delete, download, restore.
    #[command(subcommand, visible_alias = "snapshot")]
    Backup(crate::backup::BackupCmd),
    /// Print a random cluster secret (256 bits, hex) for `serve --cluster-secret-file`,
    /// or write it to a file readable by its owner only.
    ClusterSecret {
        /// Write the secret to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --out: keep an existing file as it is (for start-up scripts).
        #[arg(long, requires = "out")]
        if_missing: bool,
    },
    /// Import points from an fvecs or JSON-lines file, in batches, with a progress bar.
    Import {
        collection: String,
        file: PathBuf,
        /// File format (guessed from the extension when omitted).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Points per Upsert request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Upsert requests in flight at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// fvecs only: id of the first row (ids are consecutive).
        #[arg(long, default_value_t = 0)]
        start_id: u64,
        /// Import at most this many points.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Search with one vector, or with every vector of an fvecs file (optionally
    /// scoring recall@k against an ivecs ground truth).
    Search {
        collection: String,
        /// One query, as comma-separated numbers: "0.1,0.2,0.3".
        #[arg(long, conflicts_with = "queries", required_unless_present = "queries")]
        vector: Option<String>,
        /// An fvecs file of queries.
        #[arg(long)]
        queries: Option<PathBuf>,
        /// ivecs ground truth for --queries; prints recall@top-k.
        #[arg(long, requires = "queries")]
        ground_truth: Option<PathBuf>,
        #[arg(long, default_value_t = 10)]
        top_k: u32,
        /// Graph search candidate list (default: the server's, 64).
        #[arg(long)]
        ef: Option<u32>,
        /// Filter as JSON, e.g. '{"must":[{"key":"color","keyword":["red"]}]}'.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        with_payload: bool,
        #[arg(long)]
        with_vector: bool,
        /// Queries per SearchBatch request with --queries.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Read consistency: eventual (nearest replica), session (like eventual
        /// without a write token), or strong (linearizable, through each shard's leader).
        #[arg(long, value_enum, default_value_t = ReadConsistency::Eventual)]
        consistency: ReadConsistency,
    },
    /// Print points by id (as JSON lines).
    Get {
        collection: String,
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        with_vector: bool,
        /// Read consistency: eventual (nearest replica), session (like eventual
        /// without a write token), or strong (linearizable, through each shard's leader).
        #[arg(long, value_enum, default_value_t = ReadConsistency::Eventual)]
        consistency: ReadConsistency,
    },
    /// Delete points by id.
    Delete {
        collection: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Load generator: ingest a data set (fvecs or seeded synthetic), sweep search `ef`
    /// and client concurrency, report points/s, QPS, latency percentiles and recall.
    Bench(crate::bench::BenchArgs),
    /// Count points, optionally matching a JSON filter.
    Count {
        collection: String,
        #[arg(long)]
        filter: Option<String>,
        /// Read consistency: eventual (nearest replica), session (like eventual
        /// without a write token), or strong (linearizable, through each shard's leader).
        #[arg(long, value_enum, default_value_t = ReadConsistency::Eventual)]
        consistency: ReadConsistency,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Nodes and their health, then every shard's leader and replicas (state, applied
    /// index, points, digest), and whether replica digests agree for every shard.
    /// Replicas are compared only at equal applied indexes. Exits 0 whenever the node
    /// answers, whatever the replicas' state.
    Status {
        /// Compute a content digest of every replica (reads every point: slow on
        /// large collections). Without it, contents are not compared.
        #[arg(long)]
        digests: bool,
        /// Print the status as JSON (with a per-shard verdict and the summary).
        #[arg(long)]
        json: bool,
    },
    /// Empty a node before it is stopped: its replicas move to the other nodes (a
    /// few at a time, leaderships handed over first), then it leaves the cluster.
    /// Returns at once; `shoal cluster status` shows the moves, and the node gone
    /// when it is done.
    Drain {
        /// The node's id (see `shoal cluster status`).
        node: u64,
    },
    /// Move one replica of a shard by hand: from a node to another, or add one
    /// (--to only) or remove one (--from only). Returns the operation's id at once.
    Move {
        collection: String,
        shard: u32,
        /// The node giving up its replica.
        #[arg(long)]
        from: Option<u64>,
        /// The node taking a replica.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Restore replication factors, empty draining and dead nodes, and even out
    /// replicas and leaders: what the cluster does by itself unless started with
    /// `--auto-rebalance false`.
    Rebalance {
        /// Only print what would be done.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum CollectionCmd {
    /// Create a collection.
    Create {
        name: String,
        #[arg(long)]
        dim: u32,
        /// COSINE, DOT or L2.
        #[arg(long, default_value = "COSINE")]
        metric: String,
        #[arg(long, default_value_t = 1)]
        shards: u32,
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// HNSW links per node.
        #[arg(long, default_value_t = 16)]
        m: u32,
        #[arg(long, default_value_t = 200)]
        ef_construction: u32,
    },
    /// List collections.
    List,
    /// Describe a collection.
    Get { name: String },
    /// Delete a collection and all its points.
    Delete { name: String },
    /// Change a collection online: its replication factor (replicas are added or
    /// removed in the background; `shoal cluster status` shows them).
    Update {
        name: String,
        #[arg(long)]
        replication_factor: u32,
    },
    /// Split a collection's shards online until it has `--shards` of them (widest
    /// shards first, each in two halves of its hash range). Writes and searches keep
    /// working; a write to a shard in the middle of its split waits for it (about as
    /// long as building the shard's index twice). Shards are never merged.
    Reshard {
        name: String,
        /// The shard count to reach (more than the collection has, at most 256).
        #[arg(long)]
        shards: u32,
        /// Wait until the reshard finished, printing progress.
        #[arg(long)]
        wait: bool,
    },
}

async fn cluster(target: &client::Target, cmd: ClusterCmd) -> anyhow::Result<()> {
    let err = client::status_err;
    match cmd {
        ClusterCmd::Status { digests, json } => client::cluster_status(target, digests, json).await,
        ClusterCmd::Drain { node } => {
            let mut c = client::cluster_client(target).await?;
            c.drain(pb::DrainRequest { node }).await.map_err(err)?;
            println!(
                "draining node {node}: its replicas move away, then it leaves the cluster \
                 (watch `shoal cluster status`)"
            );
            Ok(())
        }
        ClusterCmd::Move {
            collection,
            shard,
            from,
            to,
        } => {
            let mut c = client::cluster_client(target).await?;
            let r = c
                .move_replica(pb::MoveReplicaRequest {
                    collection,
                    shard,
                    from,
                    to,
                })
                .await
                .map_err(err)?
                .into_inner();
            println!(
                "operation {} started (watch `shoal cluster status`)",
                r.operation
            );
            Ok(())
        }
        ClusterCmd::Rebalance { dry_run } => {
            let mut c = client::cluster_client(target).await?;
            let r = c
                .rebalance(pb::RebalanceRequest { dry_run })
                .await
                .map_err(err)?
                .into_inner();
            if r.planned.is_empty() {
                println!("nothing to do: the cluster is balanced");
            }
            let verb = if dry_run { "would" } else { "started:" };
            for p in &r.planned {
                println!("{verb} {} ({})", p.description, p.reason);
            }
            Ok(())
        }
    }
}

/// Prints an error as one line (with its causes) and turns it into an exit code:
/// the CLI's errors are messages for a person, not backtraces.
pub fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses the command line and runs it to completion.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli))
}

/// `shoal cluster-secret`: 32 random bytes from the OS, as hex.
fn cluster_secret(out: Option<PathBuf>, if_missing: bool) -> anyhow::Result<()> {
    use rand::TryRngCore;
    use std::fmt::Write;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .context("reading random bytes from the OS")?;
    let secret = bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let Some(path) = out else {
        println!("{secret}");
        return Ok(());
    };
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match file {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && if_missing => {
            eprintln!("{} exists; kept as it is", path.display());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        Ok(mut f) => {
            writeln!(f, "{secret}")
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote a new cluster secret to {}", path.display());
            Ok(())
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Serve(args) = cli.command {
        if cli.target.api_key.is_some() && !args.auth_options().enabled() {
            // `shoal serve --api-key K` would otherwise serve without authentication.
            anyhow::bail!(
                "`shoal serve` was given --api-key (or SHOAL_API_KEY), the credential client \
                 commands send; a node's keys are --admin-api-key, --read-write-api-key, \
                 --read-only-api-key or --api-keys-file. To serve without authentication, \
                 unset SHOAL_API_KEY"
            );
        }
        init_logging(args.log_format);
        return serve(*args).await;
    }
    if let Command::Cluster(cmd) = cli.command {
        return cluster(&cli.target, cmd).await;
    }
    if let Command::Backup(cmd) = cli.command {
        return crate::backup::run(&cli.target, cmd).await;
    }
    if let Command::ClusterSecret { out, if_missing } = cli.command {
        return cluster_secret(out, if_missing);
    }
    let (mut collections, points) = client::connect(&cli.target).await?;
    let err = client::status_err;
    match cli.command {
        Command::Serve(_)
        | Command::Cluster(_)
        | Command::Backup(_)
        | Command::ClusterSecret { .. } => {
            unreachable!("handled above")
        }
        Command::Collection(cmd) => match cmd {
            CollectionCmd::Update {
                name,
                replication_factor,
            } => {
                let info = collections
                    .update(pb::UpdateCollectionRequest {
                        name,
                        replication_factor: Some(replication_factor),
                        shard_count: None,
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
                client::print_collection(&info);
                println!(
                    "replicas are added or removed in the background (watch `shoal cluster status`)"
                );
            }
            CollectionCmd::Reshard { name, shards, wait } => {
                let started = std::time::Instant::now();
                let info = collections
                    .update(pb::UpdateCollectionRequest {
                        name: name.clone(),
                        replication_factor: None,
                        shard_count: Some(shards),
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
                let mut now = info.config.as_ref().map(|c| c.shard_count).unwrap_or(0);
                println!("resharding {name}: {now} -> {shards} shards");
                if !wait {
                    println!("the shards split in the background (watch `shoal cluster status`)");
                    return Ok(());
                }
                while now < shards {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let info = collections
                        .get(pb::GetCollectionRequest { name: name.clone() })
                        .await
                        .map_err(err)?
                        .into_inner();
                    let next = info.config.as_ref().map(|c| c.shard_count).unwrap_or(0);
                    if next != now {
                        now = next;
                        println!(
                            "{name}: {now} of {shards} shards ({:.1} s)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                println!(
                    "resharded {name} to {shards} shards in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            CollectionCmd::Create {
                name,
                dim,
                metric,
                shards,
                replication_factor,
                m,
                ef_construction,
            } => {
                let metric: shoal_core::Metric =
                    metric.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
                let info = collections
                    .create(pb::CreateCollectionRequest {
                        name,
                        dim,
                        metric: shoal_server::convert::metric_to_pb(metric) as i32,
                        shard_count: Some(shards),
                        replication_factor: Some(replication_factor),
                        m: Some(m),
                        ef_construction: Some(ef_construction),
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
                client::print_collection(&info);
            }
            CollectionCmd::List => {
                let list = collections
                    .list(pb::ListCollectionsRequest {})
                    .await
                    .map_err(err)?
                    .into_inner();
                if list.collections.is_empty() {
                    println!("no collections");
                }
                list.collections.iter().for_each(client::print_collection);
            }
            CollectionCmd::Get { name } => {
                let info = collections
                    .get(pb::GetCollectionRequest { name })
                    .await
                    .map_err(err)?
                    .into_inner();
                client::print_collection(&info);
            }
            CollectionCmd::Delete { name } => {
                collections
                    .delete(pb::DeleteCollectionRequest { name: name.clone() })
                    .await
                    .map_err(err)?;
                println!("deleted collection {name}");
            }
        },
        Command::Import {
            collection,
            file,
            format,
            batch,
            parallel,
            start_id,
            limit,
        } => {
            client::import(
                points,
                client::ImportOpts {
                    collection,
                    file,
                    format,
                    batch,
                    start_id,
                    limit,
                    parallel,
                },
            )
            .await?;
        }
        Command::Search {
            collection,
            vector,
            queries,
            ground_truth,
            top_k,
            ef,
            filter,
            with_payload,
            with_vector,
            batch,
            consistency,
        } => {
            let o = SearchOpts {
                top_k,
                ef,
                filter,
                with_payload,
                with_vector,
                consistency,
            };
            match (vector, queries) {
                (Some(v), _) => {
                    client::search_one(points, &collection, client::parse_vector(&v)?, &o).await?
                }
                (None, Some(q)) => {
                    client::search_file(points, &collection, &q, ground_truth.as_deref(), batch, &o)
                        .await?
                }
                (None, None) => anyhow::bail!("give --vector or --queries"),
            }
        }
        Command::Get {
            collection,
            ids,
            with_vector,
            consistency,
        } => client::get(points, &collection, &ids, with_vector, consistency).await?,
        Command::Delete { collection, ids } => client::delete(points, &collection, &ids).await?,
        Command::Bench(args) => {
            crate::bench::run(collections, points, args).await?;
        }
        Command::Count {
            collection,
            filter,
            consistency,
        } => client::count(points, &collection, &filter, consistency)
            .await
            .context("count")?,
    }
    Ok(())
}
