//! The node: what `shoal serve` starts. [`Node`] wires the parts together — the
//! [`Host`] (groups and replicas on this node), the [`Router`] (requests to any
//! group), the [`Database`] (what requests mean) — starts the background tasks
//! (reconciler, idle checkpointer, leader balancer), bootstraps the cluster, and is
//! the crate's edge: its methods answer in `shoal_core::Error`.
//!
//! **Bootstrap.** Every node is started with the same initial voter list (`peers`).
//! A node whose metadata group has never been initialized initializes it with that
//! list: the lowest id at once, the others only if they have heard from no leader
//! after two election timeouts (openraft allows several nodes to initialize with the
//! same membership). A restarted node finds its group initialized and rejoins.
//!
//! **Failure.** A watcher checks every [`FAILURE_CHECK`] whether the node failed
//! (module `failure`: its storage takes no more writes, or a Raft group stopped):
//! [`Node::failed`] resolves then, and once the data directory has room again,
//! [`Node::must_restart`] — the caller stops serving and exits, so that its
//! supervisor starts the node again over the same data.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::BasicNode;
use shoal_core::{
    CollectionConfig, Error, Filter, Limits, Point, PointId, RetrievedPoint, ScoredPoint,
    SearchRequest,
};
use shoal_meta::ClusterState;
use shoal_proto::internal::v1::cluster_internal_server::ClusterInternalServer;
use shoal_proto::internal::v1::raft_transport_server::RaftTransportServer;
use shoal_raft::auth::{Gate, InternalTls};
use shoal_raft::election_gate::{ElectionGate, GateTiming};
use shoal_raft::network::{MAX_RAFT_MESSAGE, RaftTransportService, internal_server};
use tonic::service::interceptor::InterceptedService;

use crate::admin::Admin;
use crate::balance::Balancer;
use crate::database::{CollectionInfo, Database, ReadOptions, WriteOutcome};
use crate::error::ClusterError;
use crate::eviction::{self, Removal};
use crate::failure::Failure;
use crate::host::{Host, initialize_later};
use crate::identity;
use crate::load::LoadMeter;
use crate::operator::{Memory, Operator};
use crate::options::NodeOptions;
use crate::placement::Rotation;
use crate::router::Router;
use crate::scheduler::Planned;
use crate::service::ClusterInternalService;
use crate::status::{ClusterStatus, gather};

/// `Result` with the domain error: what the node's clients see.
type Result<T, E = Error> = std::result::Result<T, E>;

struct Inner {
    host: Arc<Host>,
    router: Arc<Router>,
    db: Arc<Database>,
    admin: Arc<Admin>,
    removed: tokio::sync::watch::Receiver<Option<Removal>>,
    /// Set once the node failed (see the module doc).
    failed: tokio::sync::watch::Receiver<Option<Failure>>,
    /// Set once the failed node's data directory has room again.
    restart: tokio::sync::watch::Receiver<Option<Failure>>,
    /// Checks the cluster secret of every call to the internal port.
    gate: Gate,
    /// Mutual TLS of the internal port, if configured.
    tls: Option<InternalTls>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Opens the data directory, starts the metadata group and every local replica,
    /// and bootstraps the cluster if it was never formed. Serve
    /// [`Node::internal_routes`] on the `advertise` address for peers to reach it.
    pub async fn start(options: NodeOptions) -> Result<Node> {
        Ok(Self::start_inner(options).await?)
    }

    async fn start_inner(mut options: NodeOptions) -> Result<Node, ClusterError> {
        let started = std::time::Instant::now();
        options.node_id = identity::resolve(&options).await?;
        let host = Arc::new(Host::open(&options).await?);
        let router = Arc::new(Router::new(host.clone(), options.request_timeout));
        let db = Arc::new(Database::new(
            router.clone(),
            options.limits.clone(),
            Box::new(Rotation),
        ));
        let admin = Arc::new(Admin::new(router.clone(), options.elasticity.clone()));
        let (removed_tx, removed) = tokio::sync::watch::channel(None);
        let mut seeds: Vec<(u64, String)> = options
            .peers
            .iter()
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        seeds.extend(options.join.iter().map(|addr| (0, addr.clone())));
        eviction::spawn(
            &host,
            seeds,
            Duration::from_millis((2 * options.timing.election_max_ms).max(2000)),
            removed_tx,
        );
        let (failed_tx, failed) = tokio::sync::watch::channel(None);
        let (restart_tx, restart) = tokio::sync::watch::channel(None);
        spawn_failure_watch(&host, failed_tx, restart_tx);
        let node = Node {
            inner: Arc::new(Inner {
                host,
                router,
                db,
                admin,
                removed,
                failed,
                restart,
                gate: Gate::new(options.internal.secret.clone()),
                tls: options.internal.tls.clone(),
            }),
        };
        let host = &node.inner.host;
        host.reconcile(host.state()).await?;
        if options.join.is_none() {
            node.bootstrap(&options).await?;
        }
        spawn_reconciler(host);
        spawn_election_gate(host);
        LoadMeter::spawn_sampler(&host.load);
        let idle = options.shard.checkpoint_idle;
        if !idle.is_zero() && options.shard.checkpoint_every > 0 {
            spawn_idle_checkpointer(host, (idle / 2).max(Duration::from_millis(100)));
        }
        if options.timing.balance_ms > 0 {
            // Never more often than the leader lease allows a transfer.
            let every = options
                .timing
                .balance_ms
                .max(2 * options.timing.election_max_ms);
            Balancer::spawn(&node.inner.router, Duration::from_millis(every));
        }
        Operator::spawn(
            &node.inner.router,
            options.elasticity.clone(),
            Arc::new(Memory::default()),
        );
        if options.peers.len() <= 1 && options.join.is_none() {
            // Alone, the node elects itself at once: serve only once it leads.
            let _ = host
                .meta
                .wait(Some(options.request_timeout))
                .metrics(|m| m.current_leader.is_some(), "single node elected")
                .await;
        }
        tracing::info!(
            node = options.node_id,
            replicas = host.local_replicas().len(),
            secs = started.elapsed().as_secs_f64(),
            "node started"
        );
        Ok(node)
    }

    async fn bootstrap(&self, options: &NodeOptions) -> Result<(), ClusterError> {
        let mut members: BTreeMap<u64, BasicNode> = options
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        if members.is_empty() {
            members.insert(options.node_id, BasicNode::new(&options.advertise));
        }
        if !members.contains_key(&options.node_id) {
            return Err(Error::invalid(
                "peers",
                format!(
                    "the peer list does not name this node (id {})",
                    options.node_id
                ),
            )
            .into());
        }
        let meta = self.inner.host.meta.clone();
        if meta
            .is_initialized()
            .await
            .map_err(ClusterError::internal)?
        {
            return Ok(());
        }
        let first = *members.keys().next().unwrap_or(&options.node_id);
        let delay = if first == options.node_id {
            Duration::ZERO
        } else {
            Duration::from_millis(2 * options.timing.election_max_ms)
        };
        tokio::spawn(initialize_later(meta, members, delay));
        Ok(())
    }

    /// The internal services other nodes call — the Raft transport of every group and
    /// the node-to-node calls — to serve on the internal (`--raft-listen`) port.
    /// A server builder for the internal port, with its keepalive and, when
    /// configured, mutual TLS. Serve [`Node::internal_routes`] with it over
    /// `internal_incoming`.
    pub fn internal_server(&self) -> Result<tonic::transport::Server> {
        internal_server(self.inner.tls.as_ref())
            .map_err(|e| shoal_core::Error::Internal(format!("internal port TLS: {e}")))
    }

    pub fn internal_routes(&self) -> tonic::service::Routes {
        let host = &self.inner.host;
        let raft =
            RaftTransportServer::new(RaftTransportService::new(host.registry.clone(), host.id))
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let calls = ClusterInternalServer::new(ClusterInternalService::new(
            self.inner.router.clone(),
            self.inner.admin.clone(),
        ))
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE);
        // Every call is checked for the cluster secret before it is decoded.
        let gate = &self.inner.gate;
        tonic::service::Routes::new(InterceptedService::new(raft, gate.clone()))
            .add_service(InterceptedService::new(calls, gate.clone()))
    }

    /// Resolves once the cluster removed this node — a drain of it finished, or it
    /// was replaced while down — and its local replicas were deleted. The node
    /// should stop serving then.
    pub async fn removed(&self) -> Removal {
        let mut rx = self.inner.removed.clone();
        match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.expect("waited for Some"),
            // The watcher ended without a removal: never resolve.
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves once this node failed: its storage takes no more writes, or one of
    /// its Raft groups stopped (see module `failure`). It serves reads still, and
    /// refuses writes to what failed; report it as not serving.
    pub async fn failed(&self) -> Failure {
        wait_some(self.inner.failed.clone()).await
    }

    /// Resolves once this node failed and its data directory has room again
    /// (`shoal_storage::ROOM_BYTES` available, a file can be written): stop serving,
    /// and exit so that a supervisor starts the node again — reopening its data is
    /// what clears the failure.
    pub async fn must_restart(&self) -> Failure {
        wait_some(self.inner.restart.clone()).await
    }

    /// Why this node must restart, if it must (see [`Node::must_restart`]).
    pub fn restart_due(&self) -> Option<Failure> {
        self.inner.restart.borrow().clone()
    }

    /// Why this node failed, if it did, as last checked (see [`Node::failed`]).
    pub fn failure(&self) -> Option<Failure> {
        self.inner.failed.borrow().clone()
    }

    /// How the cluster removed this node, if it did (see [`Node::removed`]).
    pub fn removal(&self) -> Option<Removal> {
        *self.inner.removed.borrow()
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        self.inner.host.id
    }

    /// The request limits in force.
    pub fn limits(&self) -> &Limits {
        self.inner.db.limits()
    }

    /// The metadata as this node last applied it.
    pub fn cluster_state(&self) -> Arc<ClusterState> {
        self.inner.host.state()
    }

    /// True if this node has an open replica of shard group `group`.
    pub fn hosts(&self, group: u64) -> bool {
        self.inner.host.replica(group).is_some()
    }

    /// Number of fsyncs issued so far.
    pub fn fsyncs(&self) -> u64 {
        self.inner.host.fsyncs()
    }

    /// Sets the gauges of this node's replicas, metadata group, store and process
    /// through the `metrics` facade (module `telemetry`). Reads files: call it on a
    /// blocking thread, not on an async worker.
    pub fn record_gauges(&self) {
        crate::telemetry::record_gauges(&self.inner.host);
    }

    /// Why this node does not serve now, in short sentences (empty: it serves): it
    /// was removed from the cluster, the applied metadata does not list it, a Raft
    /// group it holds (the metadata group or a shard replica the metadata places
    /// here) is stopped, not open, without a known leader or has applied more than
    /// `max_lag` entries less than its log holds, or its storage refuses writes.
    pub async fn readiness(&self, max_lag: u64) -> Vec<String> {
        if let Some(removal) = self.removal() {
            return vec![removal.to_string()];
        }
        let host = self.inner.host.clone();
        tokio::task::spawn_blocking(move || crate::telemetry::readiness(&host, max_lag))
            .await
            .unwrap_or_else(|e| vec![format!("the readiness check failed: {e}")])
    }

    /// Waits up to `timeout` until this node knows a leader of the metadata group;
    /// false if it does not by then.
    pub async fn wait_for_metadata_leader(&self, timeout: Duration) -> bool {
        self.inner
            .host
            .meta
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "metadata leader known")
            .await
            .is_ok()
    }

    /// The groups of the replicas open on this node.
    #[cfg(test)]
    pub(crate) fn inner_host_replicas(&self) -> Vec<u64> {
        self.inner
            .host
            .local_replicas()
            .into_iter()
            .map(|(g, _)| g)
            .collect()
    }

    /// The process's resident memory at the last load sample (every 2 s; 0 where
    /// `/proc` is missing).
    pub fn rss_bytes(&self) -> u64 {
        self.inner.host.load.sample().rss_bytes
    }

    pub(crate) fn load_meter(&self) -> &Arc<LoadMeter> {
        &self.inner.host.load
    }

    pub(crate) fn database(&self) -> &Arc<Database> {
        &self.inner.db
    }

    /// Creates a collection cluster-wide; returns once this node knows it.
    pub async fn create_collection(&self, config: CollectionConfig) -> Result<CollectionInfo> {
        Ok(self.inner.db.create_collection(config).await?)
    }

    /// Deletes a collection cluster-wide; returns once this node has removed its data.
    pub async fn delete_collection(&self, name: &str) -> Result<()> {
        Ok(self.inner.db.delete_collection(name).await?)
    }

    /// Describes one collection.
    pub async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        Ok(self.inner.db.collection(name).await?)
    }

    /// Writes backup `name` of `collections` (all if empty) into `store` (see
    /// module `backup`); `progress` is told the points copied so far.
    pub async fn create_backup(
        &self,
        store: std::sync::Arc<shoal_backup::BackupStore>,
        name: &str,
        collections: &[String],
        progress: impl Fn(u64),
    ) -> Result<shoal_backup::Manifest> {
        Ok(self
            .inner
            .db
            .create_backup(
                store,
                name,
                collections,
                env!("CARGO_PKG_VERSION"),
                progress,
            )
            .await?)
    }

    /// Restores a verified backup into this cluster (see module `backup`);
    /// `progress` is told the points committed so far.
    pub async fn restore_backup(
        &self,
        backup: std::sync::Arc<shoal_backup::Backup>,
        options: crate::RestoreOptions,
        progress: impl Fn(u64),
    ) -> Result<Vec<crate::Restored>> {
        Ok(self
            .inner
            .db
            .restore_backup(backup, options, progress)
            .await?)
    }

    /// Describes every collection, by name.
    pub async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        Ok(self.inner.db.list_collections().await?)
    }

    /// Validates and writes points; returns once every touched shard committed them.
    pub async fn upsert(&self, name: &str, points: Vec<Point>) -> Result<WriteOutcome> {
        self.inner.host.load.request();
        Ok(self.inner.db.upsert(name, points).await?)
    }

    /// Deletes points by id; returns once every touched shard committed it.
    pub async fn delete_points(&self, name: &str, ids: Vec<PointId>) -> Result<WriteOutcome> {
        self.inner.host.load.request();
        Ok(self.inner.db.delete_points(name, ids).await?)
    }

    /// Points by id, in the order asked; missing ids are left out.
    pub async fn get(
        &self,
        name: &str,
        ids: Vec<PointId>,
        with_payload: bool,
        with_vector: bool,
        read: ReadOptions,
    ) -> Result<Vec<RetrievedPoint>> {
        self.inner.host.load.request();
        Ok(self
            .inner
            .db
            .get(name, ids, with_payload, with_vector, read)
            .await?)
    }

    /// One search.
    pub async fn search(
        &self,
        name: &str,
        req: SearchRequest,
        read: ReadOptions,
    ) -> Result<Vec<ScoredPoint>> {
        self.inner.host.load.request();
        Ok(self.inner.db.search(name, req, read).await?)
    }

    /// Many searches, each shard answering all of them in one parallel job.
    pub async fn search_batch(
        &self,
        name: &str,
        reqs: Vec<SearchRequest>,
        read: ReadOptions,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        self.inner.host.load.request();
        Ok(self.inner.db.search_batch(name, reqs, read).await?)
    }

    /// A page of points in id order from `offset` (inclusive), and the offset of the
    /// next page if there is one.
    #[allow(clippy::too_many_arguments)]
    pub async fn scroll(
        &self,
        name: &str,
        offset: Option<PointId>,
        limit: u32,
        filter: Option<Filter>,
        with_payload: bool,
        with_vector: bool,
        read: ReadOptions,
    ) -> Result<(Vec<RetrievedPoint>, Option<PointId>)> {
        self.inner.host.load.request();
        Ok(self
            .inner
            .db
            .scroll(name, offset, limit, filter, with_payload, with_vector, read)
            .await?)
    }

    /// Number of points, optionally matching a filter.
    pub async fn count(
        &self,
        name: &str,
        filter: Option<Filter>,
        read: ReadOptions,
    ) -> Result<u64> {
        self.inner.host.load.request();
        Ok(self.inner.db.count(name, filter, read).await?)
    }

    /// Gathers the status of every node and replica. Unreachable nodes are reported,
    /// not errors.
    pub async fn status(&self, digests: bool) -> Result<ClusterStatus> {
        Ok(gather(&self.inner.router, digests).await)
    }

    /// Starts draining node `node`: its replicas move away, then it leaves the
    /// cluster (see `shoal cluster drain`).
    pub async fn drain(&self, node: u64) -> Result<()> {
        Ok(self.inner.admin.drain(node).await?)
    }

    /// Moves (adds, removes) one replica of a shard by hand; returns the operation id.
    pub async fn move_replica(
        &self,
        collection: &str,
        shard: u32,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<u64> {
        Ok(self
            .inner
            .admin
            .move_replica(collection, shard, from, to)
            .await?)
    }

    /// Changes a collection's replication factor; replicas are added or removed in
    /// the background.
    pub async fn set_replication_factor(
        &self,
        collection: &str,
        replication_factor: u32,
    ) -> Result<()> {
        shoal_core::validate::collection_name(collection)?;
        Ok(self
            .inner
            .admin
            .set_replication_factor(collection, replication_factor)
            .await?)
    }

    /// Splits a collection's shards online until it has `shards` of them; returns once
    /// the reshard is recorded (its splits show in `Cluster.Status`).
    pub async fn reshard(&self, collection: &str, shards: u32) -> Result<()> {
        shoal_core::validate::collection_name(collection)?;
        Ok(self.inner.admin.reshard(collection, shards).await?)
    }

    /// What the scheduler would do now (each command with its reason); unless
    /// `dry_run`, starts it.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Vec<Planned>> {
        Ok(self.inner.admin.rebalance(dry_run).await?)
    }

    /// Saves an index checkpoint of every local shard, then stops every group.
    pub async fn shutdown(&self) -> Result<()> {
        Ok(self.inner.host.shutdown().await?)
    }

    /// Saves an index checkpoint of every local shard with writes since its last.
    pub async fn checkpoint_all(&self) -> Result<()> {
        Ok(self.inner.host.checkpoint_all().await?)
    }
}

/// How often the failure watcher checks the node (and, once failed, whether its data
/// directory has room again).
pub const FAILURE_CHECK: Duration = Duration::from_secs(1);

/// The first `Some` of `rx`; never resolves if its sender goes first.
async fn wait_some<T: Clone>(mut rx: tokio::sync::watch::Receiver<Option<T>>) -> T {
    let got = rx.wait_for(|v| v.is_some()).await.map(|v| v.clone());
    match got {
        Ok(Some(v)) => v,
        // The watcher ended without it: never resolve.
        _ => std::future::pending().await,
    }
}

/// Every [`FAILURE_CHECK`], while the host lives and is not closing: whether the
/// node failed (asking the store's engine too), published on `failed` — after its
/// Raft groups were stopped, if its store failed; once it has, whether its data
/// directory has room again, published on `restart` (then the watcher ends).
fn spawn_failure_watch(
    host: &Arc<Host>,
    failed: tokio::sync::watch::Sender<Option<Failure>>,
    restart: tokio::sync::watch::Sender<Option<Failure>>,
) {
    let weak: Weak<Host> = Arc::downgrade(host);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FAILURE_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting_for: Option<String> = None;
        let mut groups_stopped = false;
        loop {
            tick.tick().await;
            let Some(host) = weak.upgrade() else { break };
            if host.is_closing() || host.is_evicted() {
                break;
            }
            // The engine is asked (a journal buffer flush) and the file system
            // probed: off the async workers.
            let h = host.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let _ = h.store().fault();
                let failure = h.failure();
                let room = failure.as_ref().map(|_| h.store().has_room());
                (failure, room)
            })
            .await;
            let Ok((Some(failure), Some(room))) = checked else {
                continue;
            };
            if failure.storage.is_some() && !groups_stopped {
                // A group whose store takes no writes must not go on leading: its
                // heartbeats would keep the followers from electing a leader that
                // can append.
                host.stop_groups().await;
                groups_stopped = true;
                continue;
            }
            if failed.borrow().is_none() {
                tracing::error!(
                    %failure,
                    "this node failed: it refuses writes to what failed, serves reads, \
                     reports NOT_SERVING, and exits to be restarted once its data \
                     directory has room again"
                );
            }
            failed.send_if_modified(|f| {
                let changed = f.as_ref() != Some(&failure);
                *f = Some(failure.clone());
                changed
            });
            match room {
                Ok(()) => {
                    tracing::error!(
                        %failure,
                        "the failed node's data directory has room again: exiting, to be \
                         restarted (reopening the database clears the failure)"
                    );
                    let _ = restart.send(Some(failure));
                    break;
                }
                Err(e) => {
                    let why = e.to_string();
                    if waiting_for.as_deref() != Some(why.as_str()) {
                        tracing::warn!(reason = %why, "the failed node waits for room in its data directory before it restarts");
                        waiting_for = Some(why);
                    }
                }
            }
        }
    });
}

/// Reconciles the host's replicas with every change of the metadata, while the host
/// lives.
fn spawn_reconciler(host: &Arc<Host>) {
    let weak: Weak<Host> = Arc::downgrade(host);
    let mut rx = host.subscribe();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let state = rx.borrow_and_update().clone();
            let Some(host) = weak.upgrade() else { break };
            if let Err(e) = host.reconcile(state).await {
                tracing::error!(error = %e, "reconciling shard replicas failed");
            }
        }
    });
}

/// Opens and closes the election gates of the host's groups (`shoal_raft::
/// election_gate`: no election without a majority in reach), while the host lives.
fn spawn_election_gate(host: &Arc<Host>) {
    let t = &host.timing;
    let timing = GateTiming::from_raft(t.heartbeat_ms, t.election_min_ms, t.election_max_ms);
    let mut gate = ElectionGate::new(host.id, host.registry.clone(), host.peers.clone(), timing);
    let weak: Weak<Host> = Arc::downgrade(host);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(timing.probe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(host) if !host.is_closing() && !host.is_evicted() => {}
                _ => break,
            }
            gate.tick();
        }
    });
}

/// Every `every`, asks each local shard to save a checkpoint if it has unsaved
/// writes and has been idle (see [`Host::checkpoint_idle_shards`]).
fn spawn_idle_checkpointer(host: &Arc<Host>, every: Duration) {
    let weak: Weak<Host> = Arc::downgrade(host);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(host) = weak.upgrade() else { break };
            host.checkpoint_idle_shards();
        }
    });
}
