//! `shoal serve`: configuration, logging, node start-up, and the two gRPC servers —
//! the public API on `--listen`, and the internal Raft and node-to-node services on
//! `--raft-listen`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_cluster::{
    ClusterSecret, CoalesceOptions, Elasticity, InternalSecurity, InternalTls, Node, NodeOptions,
    RaftTiming, ShardOptions,
};
use shoal_core::Limits;

use shoal_proto::v1::{
    backups_server::BackupsServer, cluster_server::ClusterServer,
    collections_server::CollectionsServer, points_server::PointsServer,
};

use crate::admission::{InFlightLayer, ReplyBudget, limit_connections};
use crate::auth::{AuthLayer, AuthOptions, Authenticator, Secret};
use crate::backup::BackupsService;
use crate::service::{ClusterService, CollectionsService, PointsService};
use crate::tls::{ServerTls, TlsOptions};

/// Parses `--peers`: `1=host:port,2=host:port,...`.
fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the node id must be a positive integer"))?;
        if id == 0 {
            return Err(format!("{part:?}: node ids start at 1"));
        }
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("{part:?}: expected HOST:PORT after '='"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    Ok(out)
}

/// `--index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IndexBackend {
    /// Shoal's own HNSW.
    Native,
    /// The hnsw_rs crate (for comparison).
    // Listed in every build; without the cargo feature `hnsw-rs` choosing it fails at
    // start-up with an error naming the feature (`ServeArgs::node_options`).
    HnswRs,
}

/// `--balance-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BalanceByArg {
    /// Replica counts per node within one of each other.
    Replicas,
    /// Points held per node as even as whole replicas allow.
    Points,
}

#[derive(Debug, Clone)]
pub struct Peers(pub BTreeMap<u64, String>);

impl std::str::FromStr for Peers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_peers(s).map(Peers)
    }
}

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
    /// Directory holding the backups this node makes (`shoal backup create`) and
    /// restores from by name; created if missing. Default: `backups` in the data
    /// directory. Copy it elsewhere (or download backups) to survive the disk.
    #[arg(long, env = "SHOAL_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Threads for searches and index builds (0: one per core).
    #[arg(long, env = "SHOAL_SEARCH_THREADS", default_value_t = 0)]
    pub search_threads: usize,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "SHOAL_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Most connections open on the public port at once; one more is closed as it
    /// is accepted.
    #[arg(long, env = "SHOAL_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most calls in flight on the public port at once (health checks aside); one
    /// more is answered RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "SHOAL_MAX_CONCURRENT_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,
    /// Resident memory above which writes, searches and reads of points are refused
    /// with RESOURCE_EXHAUSTED (deletes, status and health checks still pass).
    /// Default: 90% of the container's memory limit (cgroup), if it has one; 0: off.
    #[arg(long, env = "SHOAL_MEMORY_WATERMARK_BYTES")]
    pub memory_watermark_bytes: Option<u64>,
    /// Most bytes of replies of points (Get, Search, SearchBatch, Scroll) ready and
    /// not yet sent at once, e.g. held by clients that do not read them; one more that
    /// does not fit is refused RESOURCE_EXHAUSTED. 0: no limit.
    #[arg(long, env = "SHOAL_MAX_PENDING_REPLY_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_pending_reply_bytes: u64,
    /// Seconds a connection of the public port may stay open without a call before
    /// it is closed (clients reconnect on their next call); 0: never.
    #[arg(long, env = "SHOAL_IDLE_CONNECTION_TIMEOUT_S", default_value_t = 600)]
    pub idle_connection_timeout_s: u64,
    /// Most HTTP/2 streams (calls) open at once on one connection.
    #[arg(long, env = "SHOAL_MAX_STREAMS_PER_CONNECTION", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// Largest vector dimension of a collection (at most 1048576: the range of
    /// vector components accepted keeps every score finite up to that dimension).
    #[arg(long, env = "SHOAL_MAX_DIM", default_value_t = Limits::default().max_dim, value_parser = clap::value_parser!(u32).range(1..=shoal_core::vector::MAX_DIM as i64))]
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
    /// Most results one `SearchBatch` may ask for in all (the sum of its queries'
    /// `top_k`); a bigger batch is refused before any work.
    #[arg(long, env = "SHOAL_MAX_BATCH_RESULTS", default_value_t = Limits::default().max_batch_results)]
    pub max_batch_results: usize,
    /// Largest payload of one point, in bytes (at most 16 MiB).
    #[arg(long, env = "SHOAL_MAX_PAYLOAD_BYTES", default_value_t = Limits::default().max_payload_bytes,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=shoal_core::validate::MAX_STORED_PAYLOAD_BYTES as u64))]
    pub max_payload_bytes: usize,
    /// Largest `limit` (page size) of a Scroll.
    #[arg(long, env = "SHOAL_MAX_SCROLL_LIMIT", default_value_t = Limits::default().max_scroll_limit)]
    pub max_scroll_limit: u32,
    /// Save a shard's index checkpoint after this many writes since the last one (0:
    /// only at shutdown). Checkpoints make restarts skip rebuilding the graph.
    #[arg(long, env = "SHOAL_CHECKPOINT_EVERY", default_value_t = ShardOptions::default().checkpoint_every)]
    pub checkpoint_every: usize,
    /// A shard with unsaved writes and no write for this many milliseconds saves a
    /// checkpoint, so a node killed after a burst of writes restarts without
    /// re-inserting them (0: only after --checkpoint-every writes and at shutdown).
    #[arg(long, env = "SHOAL_CHECKPOINT_IDLE_MS", default_value_t = ShardOptions::default().checkpoint_idle.as_millis() as u64)]
    pub checkpoint_idle_ms: u64,
    /// Most distinct payload key paths (`a`, `a.b`, ...) a shard holds; an upsert
    /// that would add more is refused with RESOURCE_EXHAUSTED (each costs index
    /// memory while a point holds it). 0: no limit.
    #[arg(long, env = "SHOAL_MAX_PAYLOAD_KEYS", default_value_t = ShardOptions::default().max_payload_keys)]
    pub max_payload_keys: usize,
    /// Shards with at most this many points are searched exactly.
    #[arg(long, env = "SHOAL_EXACT_THRESHOLD", default_value_t = ShardOptions::default().exact_threshold)]
    pub exact_threshold: usize,

    /// Coalescing of concurrent single searches: a search that arrives while a batch
    /// of searches of the same collection is running waits at most this long (in
    /// microseconds) to be sent with the others as one batch; a search arriving when
    /// none is running runs at once. 0 turns coalescing off; at most 1000000 (1 s).
    #[arg(long, env = "SHOAL_SEARCH_COALESCE_US", default_value_t = CoalesceOptions::default().window.as_micros() as u64,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub search_coalesce_us: u64,
    /// Most searches in one coalesced batch (capped by --max-search-batch).
    #[arg(long, env = "SHOAL_SEARCH_COALESCE_MAX", default_value_t = CoalesceOptions::default().max_batch)]
    pub search_coalesce_max: usize,

    /// Vector index implementation of new and reopened shards.
    #[arg(long, env = "SHOAL_INDEX", value_enum, default_value_t = IndexBackend::Native)]
    pub index: IndexBackend,

    /// This node's id in the cluster (a positive integer, unique, never reused;
    /// default 1). Kept in the data directory: a data directory belongs to one id.
    /// A node started with --join gets its id from the cluster instead.
    #[arg(long, env = "SHOAL_NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,
    /// Join a running cluster through any of its nodes' internal address
    /// (HOST:PORT of its --raft-listen): the cluster assigns this node an id, makes it a
    /// member of the metadata group, and moves replicas to it. Needs --advertise (or a
    /// --raft-listen address other nodes can reach) and excludes --peers and --node-id.
    /// A node that joined once keeps its id in its data directory and rejoins with it.
    #[arg(long, env = "SHOAL_JOIN", conflicts_with = "peers")]
    pub join: Option<String>,
    /// A node silent for this many seconds is declared dead: its replicas are
    /// re-created on other nodes and it is removed from the cluster (if it comes back
    /// later, it finds itself removed and deletes its stale data).
    #[arg(long, env = "SHOAL_DEAD_NODE_TIMEOUT", default_value_t = Elasticity::default().dead_node_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub dead_node_timeout: u64,
    /// Most voters of the metadata group; further nodes follow it as learners.
    #[arg(long, env = "SHOAL_MAX_VOTERS", default_value_t = Elasticity::default().max_voters, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=99))]
    pub max_voters: usize,
    /// Most replica moves in flight that involve one node (as source or target), so
    /// rebalancing leaves foreground traffic its speed.
    #[arg(long, env = "SHOAL_MAX_MOVES_PER_NODE", default_value_t = Elasticity::default().max_moves_per_node, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub max_moves_per_node: usize,
    /// Let the cluster plan replica moves itself: restore replication factors, empty
    /// draining and dead nodes, even out replicas and leaders over the nodes. With
    /// `false` it only carries out `shoal cluster rebalance` and moves made by hand.
    #[arg(long, env = "SHOAL_AUTO_REBALANCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_rebalance: bool,
    /// What rebalancing evens out over the nodes: `replicas` (counts within one of
    /// each other) or `points` (the points each node holds, as even as whole replicas
    /// allow: for collections whose shards differ much in size).
    #[arg(long, env = "SHOAL_BALANCE_BY", value_enum, default_value_t = BalanceByArg::Replicas)]
    pub balance_by: BalanceByArg,
    /// Split a shard online by itself once it holds more than this many points (one
    /// split per collection at a time; see `shoal collection reshard`). Off unless
    /// given.
    #[arg(long, env = "SHOAL_SPLIT_POINTS", value_parser = clap::value_parser!(u64).range(1..))]
    pub split_points: Option<u64>,
    /// Address the internal Raft and node-to-node service listens on (port 0 picks a
    /// free port, printed as `raft listening on ADDR`). Keep it on a private network.
    #[arg(long, env = "SHOAL_RAFT_LISTEN", default_value = "127.0.0.1:7471")]
    pub raft_listen: SocketAddr,
    /// Internal address other nodes reach this node at (default: the --raft-listen
    /// address, or this node's entry in --peers).
    #[arg(long, env = "SHOAL_ADVERTISE")]
    pub advertise: Option<String>,
    /// The initial cluster: every node's id and internal address, this node included,
    /// e.g. `1=node1:7471,2=node2:7471,3=node3:7471`. Give every node the same list.
    /// Omit for a single-node cluster.
    #[arg(long, env = "SHOAL_PEERS")]
    pub peers: Option<Peers>,
    /// The cluster secret: every call between nodes carries it and every node's
    /// internal port refuses calls without it (UNAUTHENTICATED). Give every node the
    /// same one, at least 16 printable characters (`shoal cluster-secret` prints a
    /// random one). Prefer --cluster-secret-file: a flag shows in `ps`.
    #[arg(
        long,
        env = "SHOAL_CLUSTER_SECRET",
        help_heading = "Security",
        hide_env_values = true,
        conflicts_with = "cluster_secret_file"
    )]
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret; with several lines (rotation), the node sends
    /// the first and accepts each. Blank lines and `#` comments are ignored.
    #[arg(long, env = "SHOAL_CLUSTER_SECRET_FILE", help_heading = "Security")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Mutual TLS on the internal port: this node's certificate (PEM), signed by the
    /// cluster CA (--internal-tls-ca). Peers must present certificates the same CA
    /// signed, and the traffic between nodes is encrypted. Needs --internal-tls-key and
    /// --internal-tls-ca.
    #[arg(long, env = "SHOAL_INTERNAL_TLS_CERT", help_heading = "Security", requires_all = ["internal_tls_key", "internal_tls_ca"])]
    pub internal_tls_cert: Option<PathBuf>,
    /// The private key of --internal-tls-cert (PEM).
    #[arg(
        long,
        env = "SHOAL_INTERNAL_TLS_KEY",
        help_heading = "Security",
        requires = "internal_tls_cert"
    )]
    pub internal_tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): what every node's certificate is checked
    /// against, both ways.
    #[arg(
        long,
        env = "SHOAL_INTERNAL_TLS_CA",
        help_heading = "Security",
        requires = "internal_tls_cert"
    )]
    pub internal_tls_ca: Option<PathBuf>,
    /// The name every peer's certificate must carry (default: the host of the peer's
    /// address, e.g. `node2` of `node2:7471`). Set it when nodes come and go under
    /// unpredictable host names and share one name in their certificates.
    #[arg(
        long,
        env = "SHOAL_INTERNAL_TLS_SERVER_NAME",
        help_heading = "Security",
        requires = "internal_tls_cert"
    )]
    pub internal_tls_server_name: Option<String>,
    /// Run a multi-node cluster whose internal port listens beyond loopback without a
    /// cluster secret: anyone who reaches that port can read and change every
    /// collection. Only for networks where nothing else can reach the nodes.
    #[arg(long, env = "SHOAL_INSECURE_INTERNAL", help_heading = "Security")]
    pub insecure_internal: bool,
    /// Raft leader heartbeat period, in milliseconds.
    #[arg(long, env = "SHOAL_RAFT_HEARTBEAT_MS", default_value_t = RaftTiming::default().heartbeat_ms)]
    pub raft_heartbeat_ms: u64,
    /// A follower that hears no leader for a random time between the election
    /// minimum and maximum (milliseconds) starts an election.
    #[arg(long, env = "SHOAL_RAFT_ELECTION_MIN_MS", default_value_t = RaftTiming::default().election_min_ms)]
    pub raft_election_min_ms: u64,
    #[arg(long, env = "SHOAL_RAFT_ELECTION_MAX_MS", default_value_t = RaftTiming::default().election_max_ms)]
    pub raft_election_max_ms: u64,
    /// Every this many milliseconds, a node hands the shards it leads back to their
    /// preferred leaders (spread over the nodes at creation) when those are up and
    /// caught up, so writes load every node again after a failover. 0 disables; never
    /// more often than twice the election maximum.
    #[arg(long, env = "SHOAL_LEADER_BALANCE_MS", default_value_t = RaftTiming::default().balance_ms)]
    pub leader_balance_ms: u64,
    /// Snapshot a group and compact its log every this many entries.
    #[arg(long, env = "SHOAL_RAFT_SNAPSHOT_EVERY", default_value_t = RaftTiming::default().snapshot_every)]
    pub raft_snapshot_every: u64,
    /// Log entries kept behind a snapshot for lagging followers.
    #[arg(long, env = "SHOAL_RAFT_KEEP_LOGS", default_value_t = RaftTiming::default().keep_logs)]
    pub raft_keep_logs: u64,
    /// How long a write may wait for its shards' leaders to commit it, and a read for
    /// a replica, before failing with UNAVAILABLE (milliseconds).
    #[arg(long, env = "SHOAL_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// API keys with the admin role: every call, collections and cluster
    /// administration included. Several (comma-separated in the environment variable)
    /// are accepted at once, for rotation. Keys are at least 16 printable ASCII
    /// characters. Prefer the environment or --api-keys-file: flags show in `ps`.
    /// Without any key or JWT key the API needs no credential.
    #[arg(
        long,
        env = "SHOAL_ADMIN_API_KEY",
        value_delimiter = ',',
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub admin_api_key: Vec<Secret>,
    /// API keys with the read-write role: read and write points of every collection.
    #[arg(
        long,
        env = "SHOAL_READ_WRITE_API_KEY",
        value_delimiter = ',',
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub read_write_api_key: Vec<Secret>,
    /// API keys with the read-only role: read points and collections.
    #[arg(
        long,
        env = "SHOAL_READ_ONLY_API_KEY",
        value_delimiter = ',',
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub read_only_api_key: Vec<Secret>,
    /// A file of API keys, one `ROLE KEY` per line (ROLE: admin, read-write or
    /// read-only; `#` starts a comment line). Re-read when it changes.
    #[arg(long, env = "SHOAL_API_KEYS_FILE", help_heading = "Security")]
    pub api_keys_file: Option<PathBuf>,
    /// Accept JWT bearer tokens signed with HS256 by this secret (at least 32 bytes).
    #[arg(
        long,
        env = "SHOAL_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_secret_file",
        help_heading = "Security"
    )]
    pub jwt_secret: Option<Secret>,
    /// Like --jwt-secret, read from a file (trailing whitespace dropped); re-read when
    /// it changes.
    #[arg(long, env = "SHOAL_JWT_SECRET_FILE", help_heading = "Security")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Accept JWT bearer tokens signed with RS256 or ES256 by the private half of this
    /// PEM public key (RSA or EC P-256). Re-read when it changes.
    #[arg(long, env = "SHOAL_JWT_PUBLIC_KEY", help_heading = "Security")]
    pub jwt_public_key: Option<PathBuf>,
    /// Serve the public API over TLS with this PEM certificate chain (with --tls-key).
    /// Plaintext connections are then refused. Re-read when it changes.
    #[arg(
        long,
        env = "SHOAL_TLS_CERT",
        requires = "tls_key",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert. Re-read when it changes.
    #[arg(
        long,
        env = "SHOAL_TLS_KEY",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by a CA of this PEM file (TLS
    /// client authentication, on top of any API key). Re-read when it changes.
    #[arg(
        long,
        env = "SHOAL_TLS_CLIENT_CA",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// How often (seconds) the TLS files, the API-keys file and the JWT key files are
    /// checked for changes; SIGHUP re-reads them at once.
    #[arg(long, env = "SHOAL_RELOAD_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86400), help_heading = "Security")]
    pub reload_secs: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics, liveness at /healthz and
    /// readiness at /readyz (plain HTTP, no authentication: keep it on loopback or a
    /// private network). Off unless given; port 0 picks a free port, printed as
    /// `metrics listening on ADDR`.
    #[arg(long, env = "SHOAL_METRICS_LISTEN", help_heading = "Monitoring")]
    pub metrics_listen: Option<SocketAddr>,
    /// /readyz answers 503 while a Raft group of this node has applied more than this
    /// many entries less than its log holds.
    #[arg(
        long,
        env = "SHOAL_READY_MAX_LAG",
        default_value_t = 1000,
        help_heading = "Monitoring"
    )]
    pub ready_max_lag: u64,

    /// Log lines on stderr: text, or one JSON object per line (for log shippers).
    /// Which lines: RUST_LOG if set, else Shoal's at info and its dependencies' at warn.
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// Where the public API's credentials come from.
    pub fn auth_options(&self) -> AuthOptions {
        let keys = |v: &[Secret]| {
            v.iter()
                .filter(|k| !k.expose().is_empty())
                .cloned()
                .collect::<Vec<_>>()
        };
        AuthOptions {
            admin_keys: keys(&self.admin_api_key),
            read_write_keys: keys(&self.read_write_api_key),
            read_only_keys: keys(&self.read_only_api_key),
            keys_file: self.api_keys_file.clone(),
            jwt_secret: self.jwt_secret.clone().filter(|s| !s.expose().is_empty()),
            jwt_secret_file: self.jwt_secret_file.clone(),
            jwt_public_key: self.jwt_public_key.clone(),
        }
    }

    /// The public port's TLS files, if it serves TLS.
    pub fn tls_options(&self) -> Option<TlsOptions> {
        Some(TlsOptions {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    fn coalesce(&self) -> CoalesceOptions {
        CoalesceOptions {
            window: Duration::from_micros(self.search_coalesce_us),
            max_batch: self.search_coalesce_max,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_dim: self.max_dim,
            max_top_k: self.max_top_k,
            max_ef: self.max_ef,
            max_batch_points: self.max_batch_points,
            max_search_batch: self.max_search_batch,
            max_batch_results: self.max_batch_results,
            max_payload_bytes: self.max_payload_bytes,
            max_scroll_limit: self.max_scroll_limit,
            ..Limits::default()
        }
    }

    /// The cluster secret from --cluster-secret or --cluster-secret-file, if any.
    fn cluster_secret(&self) -> anyhow::Result<Option<ClusterSecret>> {
        let text = match (&self.cluster_secret, &self.cluster_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading --cluster-secret-file {}", path.display()))?,
            (None, None) => return Ok(None),
        };
        let secret = ClusterSecret::parse(&text).map_err(|e| match &self.cluster_secret_file {
            Some(path) if self.cluster_secret.is_none() => {
                anyhow::anyhow!("--cluster-secret-file {}: {e}", path.display())
            }
            _ => anyhow::anyhow!("--cluster-secret: {e}"),
        })?;
        Ok(Some(secret))
    }

    /// Mutual TLS of the internal port from the --internal-tls-* files, if given.
    fn internal_tls(&self) -> anyhow::Result<Option<InternalTls>> {
        let (Some(cert), Some(key), Some(ca)) = (
            &self.internal_tls_cert,
            &self.internal_tls_key,
            &self.internal_tls_ca,
        ) else {
            return Ok(None);
        };
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
        };
        let tls = InternalTls::new(
            &read("--internal-tls-cert", cert)?,
            &read("--internal-tls-key", key)?,
            &read("--internal-tls-ca", ca)?,
            self.internal_tls_server_name.clone(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "--internal-tls-cert/--internal-tls-key/--internal-tls-ca: not a usable \
                 certificate, key and CA in PEM: {e}"
            )
        })?;
        Ok(Some(tls))
    }

    /// Refuses an unauthenticated internal port that other machines may reach, in a
    /// cluster of more than one node, unless --insecure-internal says so.
    fn check_internal_security(
        &self,
        raft_addr: SocketAddr,
        security: &InternalSecurity,
        peers: &BTreeMap<u64, String>,
    ) -> anyhow::Result<()> {
        let clustered = peers.len() > 1 || self.join.is_some();
        if security.authenticates() || !clustered || raft_addr.ip().is_loopback() {
            return Ok(());
        }
        if !self.insecure_internal {
            anyhow::bail!(
                "refusing to run a cluster whose internal port ({raft_addr}, --raft-listen) \
                 other machines can reach without a cluster secret: anyone reaching it could \
                 read and change every collection. Give every node the same \
                 --cluster-secret-file (`shoal cluster-secret --out FILE` makes one) or \
                 --internal-tls-* certificates of one cluster CA, or pass \
                 --insecure-internal on a network nothing else can reach"
            );
        }
        tracing::warn!(
            %raft_addr,
            "--insecure-internal: the internal port takes calls from anyone who reaches it"
        );
        Ok(())
    }

    fn node_options(&self, raft_addr: SocketAddr) -> anyhow::Result<NodeOptions> {
        let peers = self.peers.clone().map(|p| p.0).unwrap_or_default();
        let internal = InternalSecurity {
            secret: self.cluster_secret()?,
            tls: self.internal_tls()?,
        };
        self.check_internal_security(raft_addr, &internal, &peers)?;
        if self.join.is_some() && self.node_id.is_some() {
            anyhow::bail!(
                "--join and --node-id: a joining node gets its id from the cluster; drop --node-id"
            );
        }
        let node_id = self.node_id.unwrap_or(1);
        if !peers.is_empty() && !peers.contains_key(&node_id) {
            anyhow::bail!("--peers does not list this node's id {node_id} (--node-id)");
        }
        let advertise = match (&self.advertise, peers.get(&node_id)) {
            (Some(a), _) => a.clone(),
            (None, Some(a)) => a.clone(),
            (None, None) if raft_addr.ip().is_unspecified() => {
                // Listening on every interface: others reach us by our host name.
                let host = host_name().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--raft-listen {raft_addr} listens on every interface and this \
                         machine's host name is unknown: set --advertise HOST:PORT"
                    )
                })?;
                format!("{host}:{}", raft_addr.port())
            }
            (None, None) => raft_addr.to_string(),
        };
        Ok(NodeOptions {
            node_id,
            join: self.join.clone(),
            internal,
            elasticity: Elasticity {
                dead_node_timeout: Duration::from_secs(self.dead_node_timeout),
                max_voters: self.max_voters,
                max_moves_per_node: self.max_moves_per_node,
                auto_rebalance: self.auto_rebalance,
                balance_by: match self.balance_by {
                    BalanceByArg::Replicas => shoal_cluster::BalanceBy::Replicas,
                    BalanceByArg::Points => shoal_cluster::BalanceBy::Points,
                },
                split_points: self.split_points,
                ..Elasticity::default()
            },
            advertise,
            peers,
            data_dir: self.data_dir.clone(),
            limits: self.limits(),
            shard: ShardOptions {
                backend: match self.index {
                    IndexBackend::Native => shoal_cluster::IndexBackend::Native,
                    #[cfg(feature = "hnsw-rs")]
                    IndexBackend::HnswRs => shoal_cluster::IndexBackend::HnswRs,
                    #[cfg(not(feature = "hnsw-rs"))]
                    IndexBackend::HnswRs => anyhow::bail!(
                        "--index hnsw-rs: this shoal was built without the hnsw_rs backend \
                         (cargo feature `hnsw-rs`, on by default); use --index native"
                    ),
                },
                exact_threshold: self.exact_threshold,
                checkpoint_every: self.checkpoint_every,
                checkpoint_idle: Duration::from_millis(self.checkpoint_idle_ms),
                max_payload_keys: self.max_payload_keys,
                ..ShardOptions::default()
            },
            search_threads: self.search_threads,
            timing: RaftTiming {
                heartbeat_ms: self.raft_heartbeat_ms,
                election_min_ms: self.raft_election_min_ms,
                election_max_ms: self.raft_election_max_ms,
                balance_ms: self.leader_balance_ms,
                snapshot_every: self.raft_snapshot_every,
                keep_logs: self.raft_keep_logs,
            },
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
        })
    }
}

/// This machine's host name (what a container's siblings resolve it by).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The log filter when `RUST_LOG` is unset: Shoal's own crates (every target starting
/// with `shoal`) at info, every dependency at warn. At info openraft logs each group's
/// every state change (with whole `RaftState` dumps), and fjall and lsm_tree their
/// database creation and ingestions.
pub const DEFAULT_LOG_FILTER: &str = "warn,shoal=info";

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Sends the process's `tracing` events to stderr in `format`, filtered by `RUST_LOG`
/// if it is set (it replaces the whole filter), else by [`DEFAULT_LOG_FILTER`]. Call
/// once, before [`serve`].
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Starts the node and serves until SIGINT or SIGTERM, or until the cluster removes
/// the node (then it stops serving and waits for the signal), or until the node
/// failed (its storage, or a Raft group) and its data directory has room again: then
/// it stops serving and returns an error, for its supervisor to start it again.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Security settings first: a bad key or certificate stops start-up before the node
    // opens its data.
    let auth = Arc::new(Authenticator::new(args.auth_options())?);
    let tls = args
        .tls_options()
        .map(ServerTls::new)
        .transpose()?
        .map(Arc::new);
    // The metrics endpoint first: /healthz answers while the node opens.
    let monitor = match args.metrics_listen {
        Some(addr) => {
            let listener = crate::monitoring::bind(addr).await?;
            let handle = crate::monitoring::install_recorder()?;
            let monitor = crate::monitoring::Monitor::new(handle, args.ready_max_lag);
            println!("metrics listening on {}", listener.local_addr()?);
            crate::monitoring::spawn(listener, monitor.clone());
            Some(monitor)
        }
        None => None,
    };
    let raft_listener = tokio::net::TcpListener::bind(args.raft_listen)
        .await
        .with_context(|| format!("binding --raft-listen {}", args.raft_listen))?;
    let raft_addr = raft_listener.local_addr()?;
    let options = args.node_options(raft_addr)?;
    tracing::info!(data_dir = %args.data_dir.display(), "starting node");
    let node = Node::start(options)
        .await
        .with_context(|| format!("starting the node on {}", args.data_dir.display()))?;
    if let Some(monitor) = &monitor {
        monitor.attach(node.clone());
    }

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let internal_server = tokio::spawn(
        // HTTP/2 and TCP keepalive: connections of peers that went away are dropped.
        node.internal_server()?
            .add_routes(node.internal_routes())
            .serve_with_incoming_shutdown(
                shoal_cluster::internal_incoming(raft_listener),
                async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                },
            ),
    );
    println!("raft listening on {raft_addr}");

    let (health_reporter, health) = tonic_health::server::health_reporter();
    set_health(&health_reporter, tonic_health::ServingStatus::Serving).await;
    // A failed node (its storage takes no more writes, or a Raft group stopped) is
    // NOT_SERVING, for the whole server ("") and each service, until it exits.
    tokio::spawn({
        let (node, health) = (node.clone(), health_reporter.clone());
        async move {
            node.failed().await;
            set_health(&health, tonic_health::ServingStatus::NotServing).await;
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shoal_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let max = args.max_message_bytes;
    let collections = CollectionsServer::new(CollectionsService::new(node.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let replies =
        (args.max_pending_reply_bytes > 0).then(|| ReplyBudget::new(args.max_pending_reply_bytes));
    let points = PointsServer::new(PointsService::new(
        node.clone(),
        args.coalesce(),
        max,
        replies,
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let cluster = ClusterServer::new(ClusterService::new(node.clone()));
    let backup_dir = args
        .backup_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("backups"));
    let backup_store = Arc::new(
        shoal_backup::BackupStore::open(&backup_dir)
            .with_context(|| format!("opening --backup-dir {}", backup_dir.display()))?,
    );
    let backups = BackupsServer::new(BackupsService::new(node.clone(), backup_store))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    log_security(addr, &auth, tls.as_deref());
    // SIGHUP's handler is installed before the address is printed: from then on a
    // SIGHUP re-reads the files instead of ending the process.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hup = None;
    let reloader = tokio::spawn(reload_on_change(
        auth.clone(),
        tls.clone(),
        Duration::from_secs(args.reload_secs),
        hup,
    ));
    tracing::info!(%addr, raft = %raft_addr, tls = tls.is_some(), "serving gRPC");
    println!("listening on {addr}");

    let memory_watermark = args
        .memory_watermark_bytes
        .or_else(crate::admission::default_watermark)
        .filter(|b| *b > 0)
        .map(|bytes| {
            tracing::info!(
                bytes,
                "refusing work that needs memory above this resident size"
            );
            let node = node.clone();
            crate::admission::MemoryWatermark {
                bytes,
                rss: Arc::new(move || node.rss_bytes()),
            }
        });
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(args.max_streams_per_connection))
        // Connections of clients that went away are closed: pinged every 30 s when
        // idle, dropped when a ping is not answered within 20 s.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // Outermost: counts every call with the status its client sees.
        .layer(crate::monitoring::grpc::GrpcMetricsLayer {
            enabled: monitor.is_some(),
        })
        .layer(tower::util::MapResponseLayer::new(
            crate::early_status::remap::<tonic::body::Body>,
        ))
        .layer(crate::deadline::DeadlineLayer)
        // Keeps each connection's open calls, for its idle timeout.
        .layer(crate::admission::TrackCallsLayer)
        .layer(AuthLayer::new(auth))
        .layer(InFlightLayer::new(
            args.max_concurrent_requests as usize,
            memory_watermark,
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(collections)
        .add_service(points)
        .add_service(cluster)
        .add_service(backups);
    let idle_timeout = (args.idle_connection_timeout_s > 0)
        .then(|| Duration::from_secs(args.idle_connection_timeout_s));
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    limit_connections(
                        crate::tls::incoming(listener, tls),
                        args.max_connections as usize,
                        idle_timeout,
                    ),
                    stop_serving(&node),
                )
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    // TCP_NODELAY: small replies must not wait for Nagle's algorithm
                    // (a ~40 ms stall at the tail under concurrency otherwise).
                    limit_connections(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        args.max_connections as usize,
                        idle_timeout,
                    ),
                    stop_serving(&node),
                )
                .await?
        }
    }
    reloader.abort();
    if let Some(failure) = node.restart_due() {
        // The calls in flight were answered; the groups stop, and the process exits
        // with an error so that its supervisor starts it again over the same data.
        tracing::error!(%failure, "exiting: the node failed and its data directory has room again");
        if let Err(e) = node.shutdown().await {
            tracing::warn!(error = %e, "saving index checkpoints before exit failed");
        }
        let _ = stop_tx.send(true);
        let _ = internal_server.await;
        anyhow::bail!(
            "the node failed ({failure}) and exits now that its data directory has room \
             again, to be restarted by its supervisor (docker compose: restart: \
             unless-stopped; systemd: Restart=on-failure): reopening the data clears the \
             failure, and the node catches up from its peers"
        );
    }
    if let Some(removal) = node.removal() {
        // Its replicas are deleted; the process stays up (a restart policy would only
        // start it again) until told to stop.
        let _ = stop_tx.send(true);
        let _ = internal_server.await;
        tracing::error!("{removal}; no longer serving, waiting for a stop signal");
        shutdown_signal().await;
        return Ok(());
    }
    tracing::info!("stopping Raft groups and saving index checkpoints before exit");
    node.shutdown().await.context("saving index checkpoints")?;
    let _ = stop_tx.send(true);
    let _ = internal_server.await;
    tracing::info!("shut down");
    Ok(())
}

/// The start-up lines about the public port's security: what is on, and a warning
/// when a port other machines can reach takes calls without a credential, or takes
/// credentials in plaintext.
fn log_security(addr: SocketAddr, auth: &Authenticator, tls: Option<&ServerTls>) {
    let reachable = !addr.ip().is_loopback();
    if auth.enabled() {
        let (keys, jwt) = auth.summary();
        tracing::info!(api_keys = keys, jwt, "the public API requires a credential");
        if keys == 0 && !jwt {
            tracing::warn!("authentication is on but no key is configured: every call is refused");
        }
        if reachable && tls.is_none() {
            tracing::warn!(%addr, "API keys and tokens travel in plaintext to this address: serve TLS with --tls-cert and --tls-key");
        }
    } else if reachable {
        tracing::warn!(%addr, "the public API takes calls without a credential on an address other machines can reach: set --admin-api-key (and --read-write-api-key, --read-only-api-key, --api-keys-file or --jwt-secret); see the README's Security section");
    }
    if let Some(tls) = tls {
        tracing::info!(
            cert = %tls.options().cert.display(),
            client_certificates = tls.options().client_ca.is_some(),
            "the public API serves TLS"
        );
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

/// Re-reads the TLS files and the key files every `every` if they changed, and at
/// once on SIGHUP (`hup`).
async fn reload_on_change(
    auth: Arc<Authenticator>,
    tls: Option<Arc<ServerTls>>,
    every: Duration,
    mut hup: Hangup,
) {
    loop {
        #[cfg(unix)]
        let force = match hup.as_mut() {
            Some(h) => {
                let got = tokio::select! {
                    _ = tokio::time::sleep(every) => Some(false),
                    r = h.recv() => r.map(|_| true),
                };
                // `None`: the signal stream ended (the runtime is stopping).
                if got.is_none() {
                    hup = None;
                }
                got.unwrap_or(false)
            }
            None => {
                tokio::time::sleep(every).await;
                false
            }
        };
        #[cfg(not(unix))]
        let force = {
            let _ = &mut hup;
            tokio::time::sleep(every).await;
            false
        };
        if force {
            tracing::info!("SIGHUP: re-reading the TLS and key files");
        }
        // Blocking file reads, a few small files: off the async workers.
        let (a, t) = (auth.clone(), tls.clone());
        let _ = tokio::task::spawn_blocking(move || {
            a.reload(force);
            if let Some(t) = t {
                t.reload(force);
            }
        })
        .await;
    }
}

/// Resolves on SIGINT or SIGTERM, once the cluster removed this node, or once the
/// failed node must restart (`Node::must_restart`).
async fn stop_serving(node: &Node) {
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = node.removed() => {}
        _ = node.must_restart() => {}
    }
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

/// Sets the gRPC health of the whole server (`""`) and of each public service.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    use tonic::server::NamedService;
    for name in [
        "",
        CollectionsServer::<CollectionsService>::NAME,
        PointsServer::<PointsService>::NAME,
        ClusterServer::<ClusterService>::NAME,
        BackupsServer::<BackupsService>::NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_peers;

    #[test]
    fn default_log_filter_parses_and_quiets_dependencies() {
        let filter = tracing_subscriber::EnvFilter::builder()
            .parse(super::DEFAULT_LOG_FILTER)
            .unwrap();
        let text = filter.to_string();
        assert!(
            text.contains("shoal=info") && text.contains("warn"),
            "{text}"
        );
    }

    #[cfg(not(feature = "hnsw-rs"))]
    #[test]
    fn hnsw_rs_without_its_feature_is_an_error_naming_it() {
        use clap::Parser;
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            args: super::ServeArgs,
        }
        let serve = Serve::parse_from(["shoal", "--index", "hnsw-rs"]);
        let e = serve
            .args
            .node_options("127.0.0.1:7471".parse().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("`hnsw-rs`"), "{e}");
    }

    #[test]
    fn a_cluster_beyond_loopback_needs_a_secret_or_an_explicit_opt_out() {
        use clap::Parser;
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            args: super::ServeArgs,
        }
        let options = |flags: &[&str], raft: &str| {
            let mut argv = vec!["shoal"];
            argv.extend_from_slice(flags);
            Serve::try_parse_from(argv)
                .unwrap()
                .args
                .node_options(raft.parse().unwrap())
                .map(|o| o.internal.secret.is_some())
                .map_err(|e| e.to_string())
        };
        let three = ["--peers", "1=a:1,2=b:1,3=c:1"];
        let open = "0.0.0.0:7471";
        // Refused: three nodes reachable beyond loopback, no secret.
        let e = options(&three, open).unwrap_err();
        assert!(e.contains("--cluster-secret-file"), "{e}");
        let e = options(&["--join", "a:1"], "10.0.0.5:7471").unwrap_err();
        assert!(e.contains("--insecure-internal"), "{e}");
        // Allowed: loopback, a node alone, a secret, or said explicitly.
        assert_eq!(options(&three, "127.0.0.1:7471"), Ok(false));
        assert_eq!(options(&[], open), Ok(false));
        let secret = ["--cluster-secret", "0123456789abcdef0123"];
        assert_eq!(options(&[&three[..], &secret[..]].concat(), open), Ok(true));
        let insecure = ["--insecure-internal"];
        assert_eq!(
            options(&[&three[..], &insecure[..]].concat(), open),
            Ok(false)
        );
        // A bad secret is refused with the flag's name, never echoed.
        let e = options(&["--cluster-secret", "short-secret"], open).unwrap_err();
        assert!(
            e.contains("--cluster-secret") && !e.contains("short-secret"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(
            &file,
            "# rotation\nnew-secret-0123456789\nold-secret-0123456789\n",
        )
        .unwrap();
        let f = ["--cluster-secret-file", file.to_str().unwrap()];
        assert_eq!(options(&[&three[..], &f[..]].concat(), open), Ok(true));
        let missing = ["--cluster-secret-file", "/nonexistent/secret"];
        let e = options(&missing, open).unwrap_err();
        assert!(e.contains("/nonexistent/secret"), "{e}");
    }

    #[test]
    fn peers_parse_and_reject_with_reasons() {
        let p = parse_peers("1=a:7471, 2=10.0.0.2:7471,3=c:1").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&2], "10.0.0.2:7471");
        for (bad, why) in [
            ("1=a:7471,1=b:7471", "twice"),
            ("0=a:1", "start at 1"),
            ("x=a:1", "positive integer"),
            ("1=a", "HOST:PORT"),
            ("1=a:port", "HOST:PORT"),
            ("a:1", "ID=HOST:PORT"),
        ] {
            let e = parse_peers(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
