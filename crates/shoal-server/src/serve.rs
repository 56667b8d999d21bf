//! `shoal serve`: configuration, engine start-up, and the gRPC server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use shoal_core::Limits;
use shoal_engine::{Engine, EngineOptions};
use shoal_proto::v1::{collections_server::CollectionsServer, points_server::PointsServer};
use shoal_shard::ShardOptions;

use crate::service::{CollectionsService, PointsService};

/// Options of `shoal serve`. Every flag can also be set by its environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address the gRPC API listens on (port 0 picks a free port; the chosen address is
    /// printed on stdout as `listening on ADDR`).
    #[arg(long, env = "SHOAL_LISTEN", default_value = "127.0.0.1:7470")]
    pub listen: SocketAddr,
    /// Directory holding the node's data; created if missing.
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "./shoal-data")]
    pub data_dir: PathBuf,
    /// Threads for searches and index builds (0: one per core).
    #[arg(long, env = "SHOAL_SEARCH_THREADS", default_value_t = 0)]
    pub search_threads: usize,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "SHOAL_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Largest vector dimension of a collection.
    #[arg(long, env = "SHOAL_MAX_DIM", default_value_t = Limits::default().max_dim)]
    pub max_dim: u32,
    /// Largest `top_k` of a search.
    #[arg(long, env = "SHOAL_MAX_TOP_K", default_value_t = Limits::default().max_top_k)]
    pub max_top_k: u32,
    /// Largest `ef` of a search.
    #[arg(long, env = "SHOAL_MAX_EF", default_value_t = Limits::default().max_ef)]
    pub max_ef: u32,
    /// Most points in one upsert (and ids in one delete or get).
    #[arg(long, env = "SHOAL_MAX_BATCH_POINTS", default_value_t = Limits::default().max_batch_points)]
    pub max_batch_points: usize,
    /// Most queries in one SearchBatch.
    #[arg(long, env = "SHOAL_MAX_SEARCH_BATCH", default_value_t = Limits::default().max_search_batch)]
    pub max_search_batch: usize,
    /// Largest payload of one point, in bytes.
    #[arg(long, env = "SHOAL_MAX_PAYLOAD_BYTES", default_value_t = Limits::default().max_payload_bytes)]
    pub max_payload_bytes: usize,
    /// Save a shard's index checkpoint after this many writes since the last one (0:
    /// only at shutdown). Checkpoints make restarts skip rebuilding the graph.
    #[arg(long, env = "SHOAL_CHECKPOINT_EVERY", default_value_t = ShardOptions::default().checkpoint_every)]
    pub checkpoint_every: usize,
    /// Shards with at most this many points are searched exactly.
    #[arg(long, env = "SHOAL_EXACT_THRESHOLD", default_value_t = ShardOptions::default().exact_threshold)]
    pub exact_threshold: usize,
}

impl ServeArgs {
    fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            data_dir: self.data_dir.clone(),
            limits: Limits {
                max_dim: self.max_dim,
                max_top_k: self.max_top_k,
                max_ef: self.max_ef,
                max_batch_points: self.max_batch_points,
                max_search_batch: self.max_search_batch,
                max_payload_bytes: self.max_payload_bytes,
                ..Limits::default()
            },
            shard: ShardOptions {
                exact_threshold: self.exact_threshold,
                checkpoint_every: self.checkpoint_every,
                ..ShardOptions::default()
            },
            search_threads: self.search_threads,
        }
    }
}

/// Opens the engine and serves until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = args.engine_options();
    tracing::info!(data_dir = %args.data_dir.display(), "opening engine");
    let engine = Arc::new(
        tokio::task::spawn_blocking(move || Engine::open(options))
            .await?
            .with_context(|| format!("opening data directory {}", args.data_dir.display()))?,
    );

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CollectionsServer<CollectionsService>>()
        .await;
    health_reporter
        .set_serving::<PointsServer<PointsService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shoal_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let max = args.max_message_bytes;
    let collections = CollectionsServer::new(CollectionsService::new(engine.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let points = PointsServer::new(PointsService::new(engine.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving gRPC");
    println!("listening on {addr}");

    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            crate::early_status::remap::<tonic::body::Body>,
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(collections)
        .add_service(points)
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: small replies must not wait for Nagle's algorithm
            // (a ~40 ms stall at the tail under concurrency otherwise).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown_signal(),
        )
        .await?;
    tracing::info!("saving index checkpoints before exit");
    tokio::task::spawn_blocking(move || engine.checkpoint_all())
        .await?
        .context("saving index checkpoints")?;
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
