//! The node: its store, its Raft groups, and reconciliation of its shard replicas
//! against the metadata group's state.
//!
//! **Bootstrap.** Every node is started with the same initial voter list (`peers`).
//! A node whose metadata group has never been initialized initializes it with that
//! list: the lowest id at once, the others only if they have heard from no leader
//! after two election timeouts (openraft allows several nodes to initialize with the
//! same membership). A restarted node finds its group initialized and rejoins.
//!
//! **Reconciliation.** Whenever the metadata changes, the node opens a replica (shard,
//! state machine, Raft group) for every shard placed on it and not yet open, and
//! closes and deletes the data of collections that no longer exist. A new shard group
//! is initialized by its preferred leader (the first replica in the placement), so
//! leaders start spread over the nodes; the other replicas initialize it themselves
//! only if the preferred leader has not reached them after two election timeouts.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use parking_lot::RwLock;
use shoal_core::{Error, Limits, Result};
use shoal_raft::network::{Network, Peers, Registry};
use shoal_raft::{
    ClusterState, CollectionMeta, LogStore, META_GROUP, MetaStateMachine, ShardStateMachine,
    TypeConfig, group_of,
};
use shoal_shard::{Shard, ShardOptions};
use shoal_storage::{CollectionRecord, Store};
use tokio::sync::watch;

/// The data directory's subdirectory for snapshot files.
const SNAPSHOT_DIR: &str = "snapshots";

/// Raft timing and log compaction, shared by every group of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTiming {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an
    /// election.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// How often a node hands the leadership of shard groups it leads back to their
    /// preferred nodes (0: never). At least twice `election_max_ms` (a transfer
    /// needs the leader's vote to be older than its lease).
    pub balance_ms: u64,
    /// Build a snapshot (and compact the log behind it) every this many entries.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot, so briefly lagging followers catch up from the
    /// log rather than by snapshot.
    pub keep_logs: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        // Slow heartbeats: dozens of groups per node on two cores must not starve
        // each other into elections; a dead leader is replaced in about 1.5-3 s.
        RaftTiming {
            heartbeat_ms: 300,
            election_min_ms: 1_500,
            election_max_ms: 3_000,
            balance_ms: 10_000,
            snapshot_every: 20_000,
            keep_logs: 1_000,
        }
    }
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub node_id: u64,
    /// The internal (Raft) address other nodes reach this node at.
    pub advertise: String,
    /// The initial voters, id → internal address, this node included. Empty: a
    /// cluster of this node alone.
    pub peers: BTreeMap<u64, String>,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub shard: ShardOptions,
    /// Threads of the search pool (0: one per core).
    pub search_threads: usize,
    pub timing: RaftTiming,
    /// How long a write may wait for a leader to commit it, and a read for a replica.
    pub request_timeout: Duration,
}

/// One shard replica hosted here.
pub(crate) struct Replica {
    pub shard: Shard,
    pub raft: Raft<TypeConfig>,
    /// Closed while this node hands the group's leadership over (`balance`).
    pub gate: crate::balance::Gate,
}

pub(crate) struct Inner {
    pub id: u64,
    pub store: Store,
    pub pool: Arc<rayon::ThreadPool>,
    pub limits: Limits,
    pub shard_options: ShardOptions,
    pub timeout: Duration,
    pub timing: RaftTiming,
    pub raft_config: Arc<Config>,
    pub peers: Peers,
    pub registry: Registry,
    pub meta: Raft<TypeConfig>,
    pub state: watch::Receiver<Arc<ClusterState>>,
    pub replicas: RwLock<HashMap<u64, Arc<Replica>>>,
    /// Where shard groups write their snapshot files.
    pub snapshot_dir: PathBuf,
    reconciling: tokio::sync::Mutex<()>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))?
}

impl Node {
    /// Opens the data directory, starts the metadata group and every local replica,
    /// and bootstraps the cluster if it was never formed. The caller must already
    /// serve the internal gRPC services for [`Node::registry`] at `advertise`.
    pub async fn start(options: NodeOptions, registry: Registry) -> Result<Node> {
        let started = std::time::Instant::now();
        let dir = options.data_dir.clone();
        let store = blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                internal(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
            // Snapshot files are derived and rebuilt on demand: left-overs of an
            // earlier run are removed.
            let snapshots = dir.join(SNAPSHOT_DIR);
            if snapshots.exists() {
                std::fs::remove_dir_all(&snapshots)
                    .map_err(|e| internal(format!("cannot clear {}: {e}", snapshots.display())))?;
            }
            Ok(Store::open(&dir)?)
        })
        .await?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.search_threads)
            .thread_name(|i| format!("shoal-search-{i}"))
            // A panic in a job must not abort the node: the job's caller sees its
            // result channel closed and answers INTERNAL.
            .panic_handler(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %msg, "search job panicked");
            })
            .build()
            .map(Arc::new)
            .map_err(internal)?;
        let t = &options.timing;
        let raft_config = Arc::new(
            Config {
                cluster_name: "shoal".into(),
                heartbeat_interval: t.heartbeat_ms,
                election_timeout_min: t.election_min_ms,
                election_timeout_max: t.election_max_ms,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
                max_in_snapshot_log_to_keep: t.keep_logs,
                // Installing a snapshot's last chunk rebuilds the shard's index.
                install_snapshot_timeout: 120_000,
                max_payload_entries: 64,
                ..Default::default()
            }
            .validate()
            .map_err(|e| Error::invalid("raft timing", e.to_string()))?,
        );
        let meta_sm = MetaStateMachine::open(store.clone()).map_err(internal)?;
        if meta_sm.is_fresh() && !store.collections()?.is_empty() {
            return Err(Error::Internal(format!(
                "{} holds collections written by a Shoal without clustering; export them \
                 with a matching `shoal` and import into a fresh data directory",
                options.data_dir.display()
            )));
        }
        let state = meta_sm.subscribe();
        let peers = Peers::default();
        let meta = Raft::new(
            options.node_id,
            raft_config.clone(),
            Network::new(META_GROUP, peers.clone()),
            LogStore::new(store.raft_log(META_GROUP)),
            meta_sm,
        )
        .await
        .map_err(internal)?;
        registry.insert(META_GROUP, meta.clone());
        let node = Node {
            inner: Arc::new(Inner {
                id: options.node_id,
                store,
                pool,
                limits: options.limits.clone(),
                shard_options: options.shard.clone(),
                timeout: options.request_timeout,
                timing: options.timing.clone(),
                raft_config,
                peers,
                registry,
                meta,
                state,
                replicas: RwLock::new(HashMap::new()),
                snapshot_dir: options.data_dir.join(SNAPSHOT_DIR),
                reconciling: tokio::sync::Mutex::new(()),
            }),
        };
        let current = node.inner.state.borrow().clone();
        node.reconcile(current).await?;
        node.bootstrap(&options).await?;
        node.spawn_reconciler();
        let idle = node.inner.shard_options.checkpoint_idle;
        if !idle.is_zero() && node.inner.shard_options.checkpoint_every > 0 {
            node.spawn_idle_checkpointer((idle / 2).max(Duration::from_millis(100)));
        }
        if options.timing.balance_ms > 0 && options.peers.len() > 1 {
            // Never more often than the leader lease allows a transfer.
            let every = options
                .timing
                .balance_ms
                .max(2 * options.timing.election_max_ms);
            node.spawn_balancer(Duration::from_millis(every));
        }
        if options.peers.len() <= 1 {
            // Alone, the node elects itself at once: serve only once it leads.
            let _ = node
                .inner
                .meta
                .wait(Some(options.request_timeout))
                .metrics(|m| m.current_leader.is_some(), "single node elected")
                .await;
        }
        tracing::info!(
            node = options.node_id,
            replicas = node.inner.replicas.read().len(),
            secs = started.elapsed().as_secs_f64(),
            "node started"
        );
        Ok(node)
    }

    async fn bootstrap(&self, options: &NodeOptions) -> Result<()> {
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
            ));
        }
        let meta = self.inner.meta.clone();
        if meta.is_initialized().await.map_err(internal)? {
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

    fn spawn_reconciler(&self) {
        let weak = Arc::downgrade(&self.inner);
        let mut rx = self.inner.state.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let state = rx.borrow_and_update().clone();
                let Some(inner) = weak.upgrade() else { break };
                let node = Node { inner };
                if let Err(e) = node.reconcile(state).await {
                    tracing::error!(error = %e, "reconciling shard replicas failed");
                }
            }
        });
    }

    /// Every `every`, asks each local shard to save a checkpoint if it has unsaved
    /// writes and has been idle for `checkpoint_idle` (which never blocks: a shard
    /// busy writing declines at once; the checkpoint runs on its own thread).
    fn spawn_idle_checkpointer(&self, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let replicas: Vec<Arc<Replica>> = inner.replicas.read().values().cloned().collect();
                for replica in replicas {
                    if replica.shard.checkpoint_if_idle() {
                        tracing::debug!(
                            shard = replica.shard.shard_no(),
                            "idle shard: checkpoint started"
                        );
                    }
                }
            }
        });
    }

    /// Opens replicas placed here and not yet open; closes and deletes collections
    /// the metadata no longer has.
    pub(crate) async fn reconcile(&self, state: Arc<ClusterState>) -> Result<()> {
        let _one_at_a_time = self.inner.reconciling.lock().await;
        let store = self.inner.store.clone();
        let records = blocking(move || Ok(store.collections()?)).await?;
        for record in records {
            let current = state.collections.get(&record.config.name).map(|c| c.id);
            if current != Some(record.id) {
                self.drop_collection(record).await?;
            }
        }
        for cm in state.collections.values() {
            for (s, replicas) in cm.replicas.iter().enumerate() {
                let group = group_of(cm.id, s as u32);
                if replicas.contains(&self.inner.id)
                    && !self.inner.replicas.read().contains_key(&group)
                {
                    self.open_replica(cm, s as u32, &state).await?;
                }
            }
        }
        Ok(())
    }

    async fn drop_collection(&self, record: CollectionRecord) -> Result<()> {
        tracing::info!(collection = %record.config.name, id = record.id, "removing collection");
        for s in 0..record.config.shard_count {
            let group = group_of(record.id, s);
            self.inner.registry.remove(group);
            let replica = self.inner.replicas.write().remove(&group);
            if let Some(r) = replica {
                let _ = r.raft.shutdown().await;
            }
        }
        let store = self.inner.store.clone();
        blocking(move || {
            store.delete_collection(&record.config.name)?;
            for s in 0..record.config.shard_count {
                store.raft_log(group_of(record.id, s)).destroy()?;
            }
            Ok(())
        })
        .await
    }

    async fn open_replica(&self, cm: &CollectionMeta, s: u32, state: &ClusterState) -> Result<()> {
        let group = group_of(cm.id, s);
        let record = CollectionRecord {
            id: cm.id,
            config: cm.config.clone(),
        };
        let (store, options, pool) = (
            self.inner.store.clone(),
            self.inner.shard_options.clone(),
            self.inner.pool.clone(),
        );
        let shard = blocking(move || {
            store.adopt_collection(&record)?;
            let shard_store = store.shard(&record, s)?;
            Ok(Shard::open(
                Arc::new(record.config),
                s,
                shard_store,
                options,
                pool,
            )?)
        })
        .await?;
        let raft = Raft::new(
            self.inner.id,
            self.inner.raft_config.clone(),
            Network::new(group, self.inner.peers.clone()),
            LogStore::new(self.inner.store.raft_log(group)),
            ShardStateMachine::new(shard.clone(), self.inner.snapshot_dir.clone()),
        )
        .await
        .map_err(internal)?;
        self.inner.registry.insert(group, raft.clone());
        self.inner.replicas.write().insert(
            group,
            Arc::new(Replica {
                shard,
                raft: raft.clone(),
                gate: Default::default(),
            }),
        );
        if !raft.is_initialized().await.map_err(internal)? {
            let replicas = &cm.replicas[s as usize];
            let members: BTreeMap<u64, BasicNode> = replicas
                .iter()
                .map(|n| {
                    let addr = state.nodes.get(n).cloned().unwrap_or_default();
                    (*n, BasicNode::new(addr))
                })
                .collect();
            let delay = if replicas.first() == Some(&self.inner.id) {
                Duration::ZERO
            } else {
                Duration::from_millis(2 * self.inner.timing.election_max_ms)
            };
            tokio::spawn(initialize_later(raft, members, delay));
        }
        Ok(())
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The request limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The metadata as this node last applied it.
    pub fn cluster_state(&self) -> Arc<ClusterState> {
        self.inner.state.borrow().clone()
    }

    /// Number of fsyncs issued so far.
    pub fn fsyncs(&self) -> u64 {
        self.inner.store.fsyncs()
    }

    /// Every replica open here, by group (a snapshot: the set may change meanwhile).
    pub(crate) fn local_replicas(&self) -> Vec<(u64, Arc<Replica>)> {
        self.inner
            .replicas
            .read()
            .iter()
            .map(|(g, r)| (*g, r.clone()))
            .collect()
    }

    pub(crate) fn replica(&self, group: u64) -> Option<Arc<Replica>> {
        self.inner.replicas.read().get(&group).cloned()
    }

    /// Waits until this node has applied the metadata log up to `index`.
    pub(crate) async fn wait_state(&self, index: u64) -> Result<Arc<ClusterState>> {
        let mut rx = self.inner.state.clone();
        let wait = rx.wait_for(|s| s.applied >= index);
        match tokio::time::timeout(self.inner.timeout, wait).await {
            Ok(Ok(s)) => Ok(s.clone()),
            _ => Err(Error::Unavailable(format!(
                "node {} has not applied metadata index {index} within {:?}",
                self.inner.id, self.inner.timeout
            ))),
        }
    }

    /// Saves an index checkpoint of every local shard, then stops every group.
    pub async fn shutdown(&self) -> Result<()> {
        let replicas: Vec<Arc<Replica>> = self.inner.replicas.read().values().cloned().collect();
        for r in &replicas {
            let _ = r.raft.shutdown().await;
        }
        let _ = self.inner.meta.shutdown().await;
        blocking(move || {
            for r in replicas {
                r.shard.checkpoint()?;
            }
            Ok(())
        })
        .await
    }

    /// Saves an index checkpoint of every local shard with writes since its last.
    pub async fn checkpoint_all(&self) -> Result<()> {
        let replicas: Vec<Arc<Replica>> = self.inner.replicas.read().values().cloned().collect();
        blocking(move || {
            for r in replicas {
                r.shard.checkpoint()?;
            }
            Ok(())
        })
        .await
    }
}

/// Initializes `raft` with `members` after `delay`, unless it has heard from a leader
/// (or been initialized) meanwhile. Initializing an initialized group is refused by
/// openraft and harmless.
async fn initialize_later(
    raft: Raft<TypeConfig>,
    members: BTreeMap<u64, BasicNode>,
    delay: Duration,
) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match raft.is_initialized().await {
        Ok(false) => {
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "initialize refused");
            }
        }
        Ok(true) => {}
        Err(e) => tracing::debug!(error = %e, "group stopped before initializing"),
    }
}
