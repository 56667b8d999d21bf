//! The Raft groups and shard replicas hosted on this node, and how they serve.
//!
//! [`Host`] owns the node's store, its thread pools (searches and writes; graph
//! builds; compactions at a lower priority, see [`Pools`]), the metadata group's Raft instance
//! and every open shard replica (shard + Raft group + leader-transfer gate). It
//! opens and closes replicas as the metadata changes ([`Host::reconcile`]), and
//! serves what reaches a replica *on this node* — a proposal, a read, an election
//! request, a status report — whether it came from this node's router or from a
//! peer through the internal service.
//!
//! It must never forward anything to another node (that is the router's job, and
//! calls that arrive from peers must not loop), and never hold a lock across an
//! `.await`.
//!
//! **Reconciliation.** Whenever the metadata changes, the node opens a replica (shard,
//! state machine, Raft group) for every shard placed on it and not yet open, and
//! closes and deletes the data of collections that no longer exist. A new shard group
//! is initialized by its preferred leader (the first replica in the placement), so
//! leaders start spread over the nodes; the other replicas initialize it themselves
//! only if the preferred leader has not reached them after two election timeouts.
//!
//! **Splits.** A shard being split is sealed by a log entry (it refuses writes from
//! then on, and STRONG reads, which the children must answer once they take over).
//! Before the seal, when the operator asks ([`Host::split_local`]), this node copies
//! the two children from its replica of the parent while it still takes writes
//! (`shoal_shard::Shard::split_ahead`); the operator seals once every replica holds
//! its copies. After the seal it builds the children from its own sealed replica, in
//! the background — bringing the copies up to date with the writes since, or from
//! scratch without them — and opens their groups
//! (never initialized: every replica starts them from the same state, see
//! `shoal_raft::ShardStateMachine::build_child`). Children stay open while the split
//! is in flight; once the metadata lists them, they are ordinary replicas and the
//! parent is closed and deleted like any replica the metadata no longer places here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};
use parking_lot::RwLock;
use rayon::prelude::*;
use shoal_meta::{ClusterState, CollectionMeta, META_GROUP, NodeId, ShardMeta, group_of};
use shoal_raft::network::{Network, Peers, Registry};
use shoal_raft::{Command, LogStore, MetaStateMachine, Reply, ShardStateMachine, TypeConfig};
use shoal_shard::{Pools, Shard, ShardOptions, SplitCopy};
use shoal_storage::{CollectionRecord, Store};
use tokio::sync::watch;
use xxhash_rust::xxh3::Xxh3;

use crate::Consistency;
use crate::error::{ClusterError, Result};
use crate::gate::Gate;
use crate::load::LoadMeter;
use crate::options::{NodeOptions, RaftTiming};
use crate::read_index::ReadIndex;
use crate::wire::{
    MembershipChange, MembershipView, NodeReport, ReadCall, ReadOp, ReadResult, ReplicaReport,
    SplitCall, SplitProgress,
};

/// The data directory's subdirectory for snapshot files.
pub(crate) const SNAPSHOT_DIR: &str = "snapshots";
/// A lone search that would scan more vectors than this exactly goes to the search
/// pool even when it could run inline (~1 ms of distance computations at most).
const INLINE_SCAN_MAX: usize = 10_000;

/// How long a follower waits for a SESSION read's index beyond its own log before it
/// answers `Behind` and the router tries another replica (see `Host::read_local`).
const BEYOND_LOG_WAIT: Duration = Duration::from_secs(1);

/// One shard replica hosted here.
pub(crate) struct Replica {
    pub shard: Shard,
    pub raft: Raft<TypeConfig>,
    /// Closed while this node hands the group's leadership over (`balance`).
    pub gate: Gate,
    /// True once the shard is sealed for a split (see the module doc).
    pub sealed: Arc<AtomicBool>,
    /// Shared by the replica's STRONG reads while it leads.
    pub read_index: Arc<ReadIndex>,
}

/// The groups and replicas of one node. See the module doc.
pub(crate) struct Host {
    pub id: NodeId,
    store: Store,
    pools: Pools,
    shard_options: ShardOptions,
    pub timing: RaftTiming,
    raft_config: Arc<Config>,
    /// Channels to peers, shared by every group's Raft traffic and the router.
    pub peers: Peers,
    /// The Raft groups the internal transport delivers to.
    pub registry: Registry,
    pub meta: Raft<TypeConfig>,
    /// Shared by the metadata group's STRONG reads while this node leads it.
    meta_read_index: Arc<ReadIndex>,
    state: watch::Receiver<Arc<ClusterState>>,
    replicas: RwLock<HashMap<u64, Arc<Replica>>>,
    snapshot_dir: PathBuf,
    reconciling: tokio::sync::Mutex<()>,
    /// Requests, CPU and memory of this node.
    pub load: Arc<LoadMeter>,
    data_dir: PathBuf,
    /// Set once the cluster removed this node: nothing opens again.
    evicted: std::sync::atomic::AtomicBool,
    /// Set once the node shuts down: its groups stop on purpose.
    closing: AtomicBool,
    /// Groups of split children being built here (see [`Host::split_local`]).
    building: parking_lot::Mutex<HashSet<u64>>,
    /// Split children copied here ahead of their parent's seal, by child group (see
    /// [`Host::split_local`]).
    ahead: parking_lot::Mutex<HashMap<u64, AheadCopy>>,
}

/// A split's child being copied, or copied, ahead of its parent's seal.
struct AheadCopy {
    /// The parent's group.
    parent: u64,
    /// `None` while the copy is made.
    copy: Option<Result<SplitCopy>>,
    /// When the copy was finished.
    made: Option<Instant>,
}

/// The least time between two copies of a split's children made before the seal
/// (copied again when the writes since would make the pause long, see
/// [`Host::split_local`]).
const SPLIT_RECOPY_AFTER: Duration = Duration::from_secs(60);

fn internal(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Internal(e.to_string())
}

/// Runs blocking work (storage, index builds) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClusterError::Internal(format!("a blocking task failed: {e}")))?
}

impl Host {
    /// Opens the data directory and the metadata group's Raft instance. Shard
    /// replicas open on [`Host::reconcile`].
    pub async fn open(options: &NodeOptions) -> Result<Host> {
        let dir = options.data_dir.clone();
        let store = blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                ClusterError::Storage(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
            // Snapshot files are derived and rebuilt on demand: left-overs of an
            // earlier run are removed.
            let snapshots = dir.join(SNAPSHOT_DIR);
            if snapshots.exists() {
                std::fs::remove_dir_all(&snapshots).map_err(|e| {
                    ClusterError::Storage(format!("cannot clear {}: {e}", snapshots.display()))
                })?;
            }
            Ok(Store::open(&dir)?)
        })
        .await?;
        let threads = options.search_threads;
        let pools = Pools {
            foreground: Arc::new(pool_of(threads, "shoal-search", 0)?),
            build: Arc::new(pool_of(threads, "shoal-build", 0)?),
            // Compactions (see `Pools`) yield the CPU to everything else.
            compaction: Arc::new(pool_of(threads, "shoal-compact", COMPACTION_NICE)?),
        };
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
            .map_err(|e| shoal_core::Error::invalid("raft timing", e.to_string()))?,
        );
        let meta_sm = MetaStateMachine::open(store.clone())
            .map_err(|e| ClusterError::Storage(e.to_string()))?;
        if meta_sm.is_fresh() && !store.collections()?.is_empty() {
            return Err(ClusterError::Storage(format!(
                "{} holds collections written by a Shoal without clustering; export them \
                 with a matching `shoal` and import into a fresh data directory",
                options.data_dir.display()
            )));
        }
        let state = meta_sm.subscribe();
        let peers = Peers::new(&options.internal);
        let registry = Registry::default();
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
        let changes = metrics::counter!("shoal_metadata_leader_changes_total");
        watch_leader(options.node_id, META_GROUP, &meta, changes);
        Ok(Host {
            id: options.node_id,
            store,
            pools,
            shard_options: options.shard.clone(),
            timing: options.timing.clone(),
            raft_config,
            peers,
            registry,
            meta,
            meta_read_index: ReadIndex::new(options.node_id, META_GROUP),
            state,
            replicas: RwLock::new(HashMap::new()),
            snapshot_dir: options.data_dir.join(SNAPSHOT_DIR),
            reconciling: tokio::sync::Mutex::new(()),
            load: Arc::new(LoadMeter::default()),
            data_dir: options.data_dir.clone(),
            evicted: Default::default(),
            closing: Default::default(),
            building: Default::default(),
            ahead: Default::default(),
        })
    }

    /// The metadata as this node last applied it.
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    /// Every change of the metadata from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// Waits up to `timeout` until this node has applied the metadata log up to
    /// `index`.
    pub async fn wait_state(&self, index: u64, timeout: Duration) -> Result<Arc<ClusterState>> {
        let mut rx = self.state.clone();
        let wait = rx.wait_for(|s| s.applied >= index);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => Ok(s.clone()),
            _ => Err(ClusterError::MetadataBehind {
                node: self.id,
                index,
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Waits up to `timeout` until the metadata names at least one node (a fresh
    /// cluster has committed its first membership).
    pub async fn wait_formed(&self, timeout: Duration) -> Result<Arc<ClusterState>> {
        let mut rx = self.state.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|s| !s.nodes.is_empty())).await {
            Ok(Ok(s)) => Ok(s.clone()),
            _ => Err(ClusterError::NotFormed),
        }
    }

    /// Number of fsyncs issued so far.
    pub fn fsyncs(&self) -> u64 {
        self.store.fsyncs()
    }

    /// The node's store (for monitoring: its bytes on disk, whether it takes writes).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every replica open here, by group (a snapshot: the set may change meanwhile).
    pub fn local_replicas(&self) -> Vec<(u64, Arc<Replica>)> {
        self.replicas
            .read()
            .iter()
            .map(|(g, r)| (*g, r.clone()))
            .collect()
    }

    pub fn replica(&self, group: u64) -> Option<Arc<Replica>> {
        self.replicas.read().get(&group).cloned()
    }

    /// The Raft instance of `group` on this node, if it hosts it.
    fn raft(&self, group: u64) -> Option<Raft<TypeConfig>> {
        if group == META_GROUP {
            return Some(self.meta.clone());
        }
        self.replica(group).map(|r| r.raft.clone())
    }

    /// The leader of `group` as this node's replica sees it.
    pub fn leader_hint(&self, group: u64) -> Option<NodeId> {
        self.raft(group)?.metrics().borrow().current_leader
    }

    /// Resolves, with the new leader, once this node's replica of `group` knows of a
    /// leader other than `from` elected after the call (in a later term): a request
    /// still waiting on `from` then waits on a node that no longer leads (paused or
    /// cut off: its connection is found dead only by keepalive, seconds later). Never
    /// resolves if this node hosts no replica of `group`.
    pub(crate) async fn leader_moved_from(&self, group: u64, from: NodeId) -> NodeId {
        let Some(raft) = self.raft(group) else {
            return std::future::pending().await;
        };
        let mut metrics = raft.metrics();
        let start = metrics.borrow().current_term;
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.current_term > start
                    && let Some(leader) = m.current_leader
                    && leader != from
                {
                    return leader;
                }
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Whether this node failed, and why (see the `failure` module): its store's
    /// recorded write failure, and every Raft group of its that stopped. Cheap (no
    /// IO): the store's fault is the one recorded; `Store::fault` (which also asks
    /// the engine) is called by the node's failure watcher and by readiness.
    pub fn failure(&self) -> Option<crate::failure::Failure> {
        let mut groups = vec![("metadata".to_string(), stopped(&self.meta))];
        for (_, r) in self.local_replicas() {
            let name = format!("{}/{}", r.shard.config().name, r.shard.shard_no());
            groups.push((name, stopped(&r.raft)));
        }
        crate::failure::decide(self.store.recorded_fault().as_ref(), &groups)
    }

    /// The refusal of a request to this node's replica of `group` (or the metadata
    /// group) when it cannot serve it any more: the store failed, or the group
    /// stopped. Nothing was appended.
    pub(crate) fn refusal(&self, group: u64) -> Option<ClusterError> {
        let (disk_full, reason) = match self.store.recorded_fault() {
            Some(f) => (f.disk_full, f.to_string()),
            None => {
                let why = stopped(&self.raft(group)?)?;
                (
                    false,
                    format!("its replica of group {group} stopped: {why}"),
                )
            }
        };
        Some(ClusterError::NodeFailed {
            node: self.id,
            group,
            disk_full,
            reason,
            in_flight: false,
        })
    }

    /// The error of a request to `group` that openraft failed with `e` after it was
    /// handed over: `NodeFailed` if the group stopped meanwhile of a failure (its
    /// storage failed, or it panicked), else `Raft`.
    fn fatal_or<E: std::error::Error>(
        &self,
        group: u64,
        e: &RaftError<u64, E>,
        in_flight: bool,
    ) -> ClusterError {
        // Stopped on purpose (a replica closed, e.g. its collection deleted, or the
        // node shutting down): retried as before, never a failure.
        if !matches!(e, RaftError::Fatal(f) if !matches!(f, openraft::error::Fatal::Stopped)) {
            return ClusterError::Raft {
                node: self.id,
                group,
                reason: e.to_string(),
            };
        }
        let (disk_full, reason) = match self.refusal(group) {
            Some(ClusterError::NodeFailed {
                disk_full, reason, ..
            }) => (disk_full, reason),
            _ => (false, format!("its replica of group {group} stopped: {e}")),
        };
        ClusterError::NodeFailed {
            node: self.id,
            group,
            disk_full,
            reason,
            in_flight,
        }
    }

    /// Opens the replicas the metadata places here (or moves here) and that are not
    /// open yet; closes and deletes the replicas it no longer places here, and the
    /// collections it no longer has.
    ///
    /// Deleting is safe on any node's committed metadata, however far behind: a
    /// replica leaves the metadata only after its group's membership dropped it.
    pub async fn reconcile(&self, state: Arc<ClusterState>) -> Result<()> {
        self.peers
            .set_addresses(state.nodes.iter().map(|(id, n)| (*id, n.addr.clone())));
        let _one_at_a_time = self.reconciling.lock().await;
        if self.is_evicted() {
            return Ok(());
        }
        let store = self.store.clone();
        let records = blocking(move || Ok(store.collections()?)).await?;
        for record in records {
            let current = state.collections.get(&record.config.name).map(|c| c.id);
            if current != Some(record.id) {
                self.drop_collection(record).await?;
            }
        }
        let hosted = state.hosted_by(self.id);
        let mut wanted: HashSet<u64> = hosted.iter().map(|(cm, s)| cm.group(s.id)).collect();
        // The children of splits in flight, built (or being built) here.
        wanted.extend(state.splitting_children());
        for (cm, shard) in hosted {
            let group = cm.group(shard.id);
            // A split's child still being copied here (the split finished without this
            // node's copy) opens once the copy ends: the copy reconciles then.
            let copying = self
                .ahead
                .lock()
                .get(&group)
                .is_some_and(|a| a.copy.is_none());
            if !self.replicas.read().contains_key(&group)
                && !self.building.lock().contains(&group)
                && !copying
            {
                self.open_replica(cm, shard, &state).await?;
            }
        }
        for (group, _) in self.local_replicas() {
            let (cid, _) = shoal_meta::location_of(group);
            if state.collection_by_id(cid).is_some() && !wanted.contains(&group) {
                self.close_replica(group).await?;
            }
        }
        Ok(())
    }

    /// Stops this node's replica of `group` and deletes its data: points, Raft log,
    /// checkpoints.
    async fn close_replica(&self, group: u64) -> Result<()> {
        let (cid, shard) = shoal_meta::location_of(group);
        tracing::info!(
            group,
            collection = cid,
            shard,
            "removing the replica from this node"
        );
        self.registry.remove(group);
        self.forget_copies(cid, Some(group));
        let replica = self.replicas.write().remove(&group);
        if let Some(r) = replica {
            let _ = r.raft.shutdown().await;
        }
        let store = self.store.clone();
        blocking(move || {
            store.raft_log(group).destroy()?;
            store.delete_shard(cid, shard)?;
            Ok(())
        })
        .await
    }

    async fn drop_collection(&self, record: CollectionRecord) -> Result<()> {
        tracing::info!(collection = %record.config.name, id = record.id, "removing collection");
        self.forget_copies(record.id, None);
        let groups: Vec<u64> = self
            .replicas
            .read()
            .keys()
            .copied()
            .filter(|g| shoal_meta::location_of(*g).0 == record.id)
            .collect();
        for group in &groups {
            self.registry.remove(*group);
            let replica = self.replicas.write().remove(group);
            if let Some(r) = replica {
                let _ = r.raft.shutdown().await;
            }
        }
        let store = self.store.clone();
        blocking(move || {
            store.delete_collection(&record.config.name)?;
            store.destroy_raft_logs(
                group_of(record.id, 0)..=group_of(record.id, shoal_meta::MAX_SHARD_ID),
            )?;
            Ok(())
        })
        .await
    }

    async fn open_replica(
        &self,
        cm: &CollectionMeta,
        shard_meta: &ShardMeta,
        state: &ClusterState,
    ) -> Result<()> {
        let group = cm.group(shard_meta.id);
        let shard = self.open_shard(cm, shard_meta.id).await?;
        let raft = self.start_group(group, shard).await?;
        // Only the first replicas of a group created with its collection may start it;
        // any other replica (a move's target, a split's child, one that lost its
        // state after a move) waits for the group's leader to reach it.
        let may_initialize = shard_meta.may_initialize() && shard_meta.replicas.contains(&self.id);
        if may_initialize && !raft.is_initialized().await.map_err(internal)? {
            let replicas = &shard_meta.replicas;
            let members: BTreeMap<u64, BasicNode> = replicas
                .iter()
                .map(|n| {
                    let addr = state
                        .nodes
                        .get(n)
                        .map(|m| m.addr.clone())
                        .unwrap_or_default();
                    (*n, BasicNode::new(addr))
                })
                .collect();
            let delay = if replicas.first() == Some(&self.id) {
                Duration::ZERO
            } else {
                Duration::from_millis(2 * self.timing.election_max_ms)
            };
            tokio::spawn(initialize_later(raft, members, delay));
        }
        Ok(())
    }

    /// Opens this node's copy of shard `s` of `cm` (recording the collection first).
    async fn open_shard(&self, cm: &CollectionMeta, s: u32) -> Result<Shard> {
        let record = CollectionRecord {
            id: cm.id,
            config: cm.config.clone(),
        };
        let (store, options, pools) = (
            self.store.clone(),
            self.shard_options.clone(),
            self.pools.clone(),
        );
        let group = cm.group(s);
        self.ahead.lock().remove(&group);
        blocking(move || {
            store.adopt_collection(&record)?;
            let mut shard_store = store.shard(&record, s)?;
            if shard_store.applied_seq()? == 0 && shard_store.points().next().is_some() {
                // A split's child copied ahead of a seal and never finished here (the
                // split finished without this node's copy): not this replica's state,
                // which the group's leader sends.
                tracing::info!(group, "removing an unfinished copy of a split's child");
                drop(shard_store);
                store.delete_shard(record.id, s)?;
                shard_store = store.shard(&record, s)?;
            }
            Ok(Shard::open(
                Arc::new(record.config),
                s,
                shard_store,
                options,
                pools,
            )?)
        })
        .await
    }

    /// Starts the Raft group `group` over `shard` (not initialized) and registers the
    /// replica.
    async fn start_group(&self, group: u64, shard: Shard) -> Result<Raft<TypeConfig>> {
        let sm = ShardStateMachine::new(shard.clone(), self.snapshot_dir.clone());
        let sealed = sm.sealed_flag();
        let raft = Raft::new(
            self.id,
            self.raft_config.clone(),
            Network::for_shard(
                group,
                self.peers.clone(),
                &shard.config().name,
                shard.shard_no(),
            ),
            LogStore::new(self.store.raft_log(group)),
            sm,
        )
        .await
        .map_err(internal)?;
        self.registry.insert(group, raft.clone());
        let changes = metrics::counter!(
            "shoal_raft_leader_changes_total",
            "collection" => shard.config().name.clone(),
            "shard" => shard.shard_no().to_string(),
        );
        watch_leader(self.id, group, &raft, changes);
        self.replicas.write().insert(
            group,
            Arc::new(Replica {
                shard,
                raft: raft.clone(),
                gate: Gate::default(),
                sealed,
                read_index: ReadIndex::new(self.id, group),
            }),
        );
        Ok(raft)
    }

    /// One step of a split on this node (see the module doc): whether its replica of
    /// the parent `group` is sealed, the children are being built, or they are open
    /// (with the leaders this node sees). The first call after the seal starts the
    /// build in the background; later calls report on it.
    pub async fn split_local(
        self: &Arc<Self>,
        group: u64,
        call: SplitCall,
    ) -> Result<SplitProgress> {
        let (cid, _) = shoal_meta::location_of(group);
        let groups = call.children.clone().map(|c| group_of(cid, c.shard));
        if groups.iter().all(|g| self.replicas.read().contains_key(g)) {
            let leaders = groups.map(|g| self.leader_hint(g));
            // The parent's leader starts the children's first elections rather than
            // waiting out an election timeout (writes wait meanwhile).
            let leads_parent = self
                .replica(group)
                .is_some_and(|r| r.raft.metrics().borrow().state == ServerState::Leader);
            if leads_parent {
                for (g, l) in groups.iter().zip(leaders) {
                    if l.is_none() {
                        let _ = self.elect_local(*g).await;
                    }
                }
            }
            return Ok(SplitProgress::Open { leaders });
        }
        if groups.iter().any(|g| self.building.lock().contains(g)) {
            return Ok(SplitProgress::Building);
        }
        let parent = self.replica(group).ok_or(ClusterError::NotHosted {
            node: self.id,
            group,
        })?;
        let cm =
            self.state().collection_by_id(cid).cloned().ok_or_else(|| {
                ClusterError::from(shoal_meta::MetaError::NoSuchCollectionId(cid))
            })?;
        if !parent.sealed.load(Ordering::Acquire) {
            // Before the seal, the work the split would otherwise do while the shard's
            // writes wait: a compaction finished, a fresh checkpoint saved, then the
            // children copied.
            let (copies, oldest) = {
                let ahead = self.ahead.lock();
                let copies =
                    groups.map(|g| ahead.get(&g).map(|a| a.copy.as_ref().map(|c| c.is_ok())));
                let made = groups.iter().filter_map(|g| ahead.get(g)?.made);
                (copies, made.min())
            };
            let mut restart = false;
            match copies {
                // Copied (or a copy failed: the build after the seal does it all)...
                [Some(Some(_)), Some(Some(_))] => {
                    if parent.shard.is_rebuilding() {
                        return Ok(SplitProgress::Compacting);
                    }
                    // ... unless the writes since (while the other replicas compacted,
                    // say) would make the pause long: copied again, but not sooner than
                    // `SPLIT_RECOPY_AFTER` after the last copy, so that however fast
                    // the writes come, the replicas are ready together for most of
                    // the time and the operator can seal.
                    let live = parent.shard.stats().points as usize;
                    let dirty = parent.shard.split_dirty().unwrap_or(0);
                    let stale = dirty > (live / 50).max(2_000);
                    let old = oldest.is_some_and(|t| t.elapsed() >= SPLIT_RECOPY_AFTER);
                    if !stale || !old {
                        return Ok(SplitProgress::NotSealed);
                    }
                    tracing::info!(
                        group,
                        written_since = dirty,
                        "the split's copies fell behind the writes; copying again"
                    );
                    self.forget_copies(cid, Some(group));
                    restart = true;
                }
                c if c.contains(&Some(None)) => return Ok(SplitProgress::Copying),
                // None made yet (or one of them forgotten): copy both.
                _ => {}
            }
            if parent.shard.is_rebuilding() || !parent.shard.ready_to_split() {
                return Ok(SplitProgress::Compacting);
            }
            self.copy_ahead(&cm, group, &parent.shard, &call, restart);
            return Ok(SplitProgress::Copying);
        }
        if groups
            .iter()
            .any(|g| self.ahead.lock().get(g).is_some_and(|a| a.copy.is_none()))
        {
            // A copy begun before this replica applied the seal is still writing the
            // child's store: the build waits for it (and then finishes it).
            return Ok(SplitProgress::Building);
        }
        self.building.lock().extend(groups);
        let host = self.clone();
        tokio::spawn(async move {
            let built = host.build_children(&cm, &parent.shard, &call).await;
            if let Err(e) = &built {
                tracing::warn!(group, error = %e, "building the split's children failed; the operator asks again");
            }
            for g in groups {
                host.building.lock().remove(&g);
            }
            // The split may have finished meanwhile (without this node's copies):
            // open what the metadata places here now.
            if let Err(e) = host.reconcile(host.state()).await {
                tracing::warn!(error = %e, "reconciling after a split's build failed");
            }
        });
        Ok(SplitProgress::Building)
    }

    /// Copies the children of `call` from this node's replica of the parent `group`
    /// (not sealed yet) in the background, one after the other, into
    /// [`Host::ahead`] (see `shoal_shard::Shard::split_ahead`).
    fn copy_ahead(
        self: &Arc<Self>,
        cm: &CollectionMeta,
        group: u64,
        parent: &Shard,
        call: &SplitCall,
        restart: bool,
    ) {
        {
            let mut ahead = self.ahead.lock();
            for child in &call.children {
                ahead.insert(
                    cm.group(child.shard),
                    AheadCopy {
                        parent: group,
                        copy: None,
                        made: None,
                    },
                );
            }
        }
        let (host, cm, parent, call) = (self.clone(), cm.clone(), parent.clone(), call.clone());
        tokio::spawn(async move {
            if restart {
                // The record of the writes since the earlier copies starts over.
                let p = parent.clone();
                if let Err(e) = blocking(move || {
                    p.split_restart();
                    Ok(())
                })
                .await
                {
                    tracing::warn!(error = %e, "restarting a split's copies failed");
                }
            }
            for child in call.children {
                let g = cm.group(child.shard);
                let record = CollectionRecord {
                    id: cm.id,
                    config: cm.config.clone(),
                };
                let (store, parent, spec) = (host.store.clone(), parent.clone(), child.spec());
                let started = Instant::now();
                let copied = blocking(move || {
                    store.adopt_collection(&record)?;
                    let shard_store = store.shard(&record, spec.shard)?;
                    ShardStateMachine::copy_child(&parent, shard_store, spec).map_err(internal)
                })
                .await;
                match &copied {
                    Ok(c) => tracing::info!(
                        group = g,
                        shard = child.shard,
                        points = c.points(),
                        ms = started.elapsed().as_millis() as u64,
                        "copied a split's child ahead of the seal"
                    ),
                    Err(e) => tracing::warn!(
                        group = g,
                        error = %e,
                        "copying a split's child ahead of the seal failed; it is built after the seal"
                    ),
                }
                // Dropped if the parent left this node meanwhile.
                if let Some(a) = host.ahead.lock().get_mut(&g) {
                    a.copy = Some(copied);
                    a.made = Some(Instant::now());
                }
            }
            // The split may have finished meanwhile without this node's copies: open
            // what the metadata places here now (a leftover copy is deleted first).
            if let Err(e) = host.reconcile(host.state()).await {
                tracing::warn!(error = %e, "reconciling after copying a split's children failed");
            }
        });
    }

    /// Forgets the split children copied ahead of `parent`'s seal (every parent of
    /// collection `cid` with `parent` `None`).
    fn forget_copies(&self, cid: u64, parent: Option<u64>) {
        self.ahead.lock().retain(|_, a| match parent {
            Some(p) => a.parent != p,
            None => shoal_meta::location_of(a.parent).0 != cid,
        });
    }

    async fn build_children(
        &self,
        cm: &CollectionMeta,
        parent: &Shard,
        call: &SplitCall,
    ) -> Result<()> {
        let voters: BTreeMap<u64, BasicNode> = call
            .voters
            .iter()
            .map(|(n, addr)| (*n, BasicNode::new(addr.clone())))
            .collect();
        // Both children at once: the shard's writes wait until they are open.
        let opened = futures::future::join_all(call.children.iter().map(|child| {
            let voters = voters.clone();
            async move {
                let group = cm.group(child.shard);
                if self.replicas.read().contains_key(&group) {
                    return Ok(None);
                }
                let record = CollectionRecord {
                    id: cm.id,
                    config: cm.config.clone(),
                };
                let store = self.store.clone();
                let (parent, spec) = (parent.clone(), child.spec());
                let copy = match self.ahead.lock().remove(&group) {
                    Some(AheadCopy {
                        copy: Some(Ok(copy)),
                        ..
                    }) => Some(copy),
                    _ => None,
                };
                let copied = copy.is_some();
                let started = Instant::now();
                let built = blocking(move || {
                    store.adopt_collection(&record)?;
                    let shard_store = store.shard(&record, spec.shard)?;
                    if shard_store.applied_seq()? > 0 {
                        // Built before a restart: the state is there, complete.
                        return Ok(None);
                    }
                    let shard =
                        ShardStateMachine::build_child(&parent, shard_store, spec, copy, voters)
                            .map_err(internal)?;
                    Ok(Some(shard))
                })
                .await?;
                let (shard, built) = match built {
                    Some(shard) => (shard, true),
                    None => (self.open_shard(cm, child.shard).await?, false),
                };
                tracing::info!(
                    group,
                    shard = child.shard,
                    points = shard.stats().points,
                    built,
                    copied,
                    ms = started.elapsed().as_millis() as u64,
                    "opened a split's child (built from the sealed parent unless built before; from its copy made ahead of the seal if copied)"
                );
                Ok::<_, ClusterError>(Some((group, shard)))
            }
        }))
        .await;
        for child in opened {
            if let Some((group, shard)) = child? {
                self.start_group(group, shard).await?;
            }
        }
        Ok(())
    }

    /// Commits `cmd` through this node's replica of `group`, if it leads it, and
    /// returns what applying it returned (a state machine's rejection included).
    pub async fn propose_local(
        &self,
        group: u64,
        cmd: Command,
        timeout: Duration,
    ) -> Result<Reply> {
        let id = self.id;
        let raft = self
            .raft(group)
            .ok_or(ClusterError::NotHosted { node: id, group })?;
        if let Some(refused) = self.refusal(group) {
            return Err(refused);
        }
        let started = Instant::now();
        if let Some(replica) = self.replica(group) {
            if matches!(cmd, Command::Shard(_)) && replica.sealed.load(Ordering::Acquire) {
                // Being split: refused before anything is appended.
                return Err(ClusterError::Resharded { group });
            }
            if let Command::Shard(write) = &cmd {
                // Bounds of what a shard holds (payload key paths): refused before
                // anything is appended.
                replica
                    .shard
                    .admit(write)
                    .map_err(|e| ClusterError::Request(e.into()))?;
            }
            // Held while the leadership is handed over (see `balance`).
            replica.gate.pass(timeout).await;
        }
        // Refused before anything is appended when this replica does not lead: the
        // caller may treat the write as not written here.
        let m = raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(ClusterError::NotLeader {
                node: id,
                group,
                leader: m.current_leader.filter(|l| *l != id),
            });
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
            Err(_) => Err(ClusterError::Timeout {
                node: id,
                group,
                what: "the commit of a proposal".into(),
                waited_ms: timeout.as_millis() as u64,
            }),
            Ok(Ok(resp)) => Ok(resp.data),
            // openraft also answers this after it appended the entry and lost the
            // leadership (the entry truncated here may survive elsewhere).
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ClusterError::LeaderChanged {
                    node: id,
                    group,
                    leader: f.leader_id,
                })
            }
            // The group stopped (its storage failed) with the entry handed over: it
            // may have been appended, and sent to the other replicas.
            Ok(Err(e)) => Err(self.fatal_or(group, &e, true)),
        }
    }

    /// Starts a point-in-time copy of this node's replica of shard group `group`,
    /// which it must lead (see `export`). A sealed shard (a split in flight) is
    /// copied too: its points are final.
    pub(crate) async fn export_local(
        &self,
        group: u64,
        timeout: Duration,
    ) -> Result<crate::export::Export> {
        let id = self.id;
        let replica = self
            .replica(group)
            .ok_or(ClusterError::NotHosted { node: id, group })?;
        self.confirm_leader(group, &replica.raft, &replica.read_index, timeout)
            .await?;
        let shard = replica.shard.clone();
        let (seq, points) = blocking(move || Ok(shard.export()?)).await?;
        Ok(crate::export::Export::produce(id, seq, points))
    }

    /// Serves a read from this node's replica of `group`.
    pub async fn read_local(
        &self,
        group: u64,
        call: ReadCall,
        timeout: Duration,
    ) -> Result<ReadResult> {
        let id = self.id;
        if group == META_GROUP {
            // STRONG: the leader's state, confirmed; otherwise this node's own copy.
            if call.consistency == Consistency::Strong {
                self.confirm_leader(group, &self.meta, &self.meta_read_index, timeout)
                    .await?;
            }
            return Ok(ReadResult::ClusterState((*self.state()).clone()));
        }
        let replica = self
            .replica(group)
            .ok_or(ClusterError::NotHosted { node: id, group })?;
        match call.consistency {
            // A sealed shard's children take writes once the split finishes; only
            // they can answer linearizably.
            Consistency::Strong if replica.sealed.load(Ordering::Acquire) => {
                return Err(ClusterError::Resharded { group });
            }
            Consistency::Strong => {
                self.confirm_leader(group, &replica.raft, &replica.read_index, timeout)
                    .await?
            }
            Consistency::Session if call.min_applied > 0 => {
                let m = replica.raft.metrics().borrow().clone();
                let last = m.last_log_index.unwrap_or(0);
                let beyond_log = call.min_applied > last;
                if beyond_log && m.state == ServerState::Leader {
                    // A leader's log holds every committed entry, so every index a
                    // write token can name: this one was never issued by a write.
                    return Err(shoal_core::Error::invalid(
                        "read.token",
                        format!(
                            "index {} of shard group {group} is beyond its log (last index {last}): \
                             not a token of this collection's writes",
                            call.min_applied
                        ),
                    )
                    .into());
                }
                // A follower may simply lag: it waits a little, then lets the router
                // try another replica (the leader, which decides at once).
                let wait = if beyond_log {
                    timeout.min(BEYOND_LOG_WAIT)
                } else {
                    timeout
                };
                replica
                    .raft
                    .wait(Some(wait))
                    .applied_index_at_least(Some(call.min_applied), "session read")
                    .await
                    .map_err(|_| ClusterError::Behind {
                        node: id,
                        group,
                        index: call.min_applied,
                        waited_ms: wait.as_millis() as u64,
                    })?;
            }
            _ => {}
        }
        if matches!(call.op, ReadOp::ClusterState) {
            return Err(internal("a metadata read reached a shard group"));
        }
        let shard = replica.shard.clone();
        let op = call.op;
        // A lone search of a one-shard collection that is light (a graph search, or a
        // small exact scan: `Shard::search_if_light` declines the others before any
        // work) runs here, on the calling task: handing it to the search
        // pool costs two thread wake-ups and the pool threads' spinning while they wait
        // for more work, more CPU than the search itself on this machine (see
        // BENCHMARKS.md, "Where the time goes"). Batches, heavy scans and the shards of
        // a multi-shard collection (which should search in parallel) use the pool.
        let lone = match &op {
            ReadOp::Search(reqs) if shard.config().shard_count == 1 => match reqs.as_slice() {
                [req] => Some(req),
                _ => None,
            },
            _ => None,
        };
        if let Some(req) = lone {
            // Like a pool job, a panic answers INTERNAL and leaves the node up.
            let hits = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                shard.search_if_light(req, INLINE_SCAN_MAX)
            }))
            .map_err(|_| internal("a search failed; see the server log"))?;
            if let Some(hits) = hits {
                return Ok(ReadResult::Search(vec![hits]));
            }
        }
        on_pool(&self.pools.foreground, move |cancel| match op {
            // A batch stops searching once its request is gone (the client
            // cancelled, or its deadline passed): what is left answers nobody.
            ReadOp::Search(reqs) => ReadResult::Search(
                reqs.par_iter()
                    .map(|r| {
                        if cancel.is_cancelled() {
                            Vec::new()
                        } else {
                            shard.search(r)
                        }
                    })
                    .collect(),
            ),
            ReadOp::Get {
                ids,
                with_payload,
                with_vector,
            } => ReadResult::Points(shard.get(&ids, with_payload, with_vector)),
            ReadOp::Scroll {
                offset,
                limit,
                filter,
                with_payload,
                with_vector,
            } => ReadResult::Points(shard.scroll(
                offset,
                limit,
                filter.as_deref(),
                with_payload,
                with_vector,
            )),
            ReadOp::Count(filter) => ReadResult::Count(shard.count(filter.as_deref())),
            ReadOp::Stats => ReadResult::Stats(shard.stats()),
            ReadOp::ClusterState => unreachable!("refused above"),
        })
        .await
    }

    /// A STRONG read's confirmation through the group's shared read index
    /// (`read_index`), refused at once when this node failed.
    async fn confirm_leader(
        &self,
        group: u64,
        raft: &Raft<TypeConfig>,
        read_index: &Arc<ReadIndex>,
        timeout: Duration,
    ) -> Result<()> {
        if let Some(refused) = self.refusal(group) {
            return Err(refused);
        }
        match read_index.confirm(raft, timeout).await {
            // openraft failed: the group may have stopped of a failure meanwhile.
            Err(e @ ClusterError::Raft { .. }) => Err(self.refusal(group).unwrap_or(e)),
            r => r,
        }
    }

    /// Changes the membership of `group` if this node leads it (see
    /// [`MembershipChange`]), and describes it as it is afterwards.
    pub async fn membership_local(
        &self,
        group: u64,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<MembershipView> {
        let id = self.id;
        let raft = self
            .raft(group)
            .ok_or(ClusterError::NotHosted { node: id, group })?;
        if let Some(refused) = self.refusal(group) {
            return Err(refused);
        }
        let view = self.describe_membership(group, &raft)?;
        let raft_err = |reason: String| ClusterError::Raft {
            node: id,
            group,
            reason,
        };
        let changed = match change {
            MembershipChange::Describe => None,
            MembershipChange::AddLearner { node, addr } => {
                if view.voters.contains(&node) || view.learners.contains(&node) {
                    None
                } else {
                    Some(raft.add_learner(node, BasicNode::new(addr), false).await)
                }
            }
            MembershipChange::SetVoters { voters } => {
                if voters.is_empty() {
                    return Err(raft_err("a group needs at least one voter".into()));
                }
                if !view.joint && view.voters == voters {
                    None
                } else {
                    let change = ChangeMembers::ReplaceAllVoters(voters);
                    Some(
                        tokio::time::timeout(timeout, raft.change_membership(change, false))
                            .await
                            .map_err(|_| ClusterError::Timeout {
                                node: id,
                                group,
                                what: "a membership change".into(),
                                waited_ms: timeout.as_millis() as u64,
                            })?,
                    )
                }
            }
            MembershipChange::RemoveLearner { node } => {
                if view.learners.contains(&node) {
                    let change = ChangeMembers::RemoveNodes([node].into());
                    Some(
                        tokio::time::timeout(timeout, raft.change_membership(change, false))
                            .await
                            .map_err(|_| ClusterError::Timeout {
                                node: id,
                                group,
                                what: "a membership change".into(),
                                waited_ms: timeout.as_millis() as u64,
                            })?,
                    )
                } else {
                    None
                }
            }
        };
        match changed {
            None | Some(Ok(_)) => {}
            Some(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                return Err(ClusterError::LeaderChanged {
                    node: id,
                    group,
                    leader: f.leader_id,
                });
            }
            Some(Err(e)) => return Err(self.fatal_or(group, &e, true)),
        }
        self.describe_membership(group, &raft)
    }

    /// `group`'s membership and replication progress, if this node leads it.
    fn describe_membership(&self, group: u64, raft: &Raft<TypeConfig>) -> Result<MembershipView> {
        let m = raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(ClusterError::NotLeader {
                node: self.id,
                group,
                leader: m.current_leader.filter(|l| *l != self.id),
            });
        }
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().collect();
        let all: std::collections::BTreeSet<u64> = membership.nodes().map(|(n, _)| *n).collect();
        let learners = membership
            .learner_ids()
            .filter(|n| all.contains(n))
            .collect();
        let matched = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(n, l)| (*n, l.as_ref().map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(MembershipView {
            leader: self.id,
            voters,
            learners,
            joint: membership.get_joint_config().len() > 1,
            last_index: m.last_log_index.unwrap_or(0),
            matched,
        })
    }

    /// The receiving end of a leader transfer: start an election for `group` now.
    pub async fn elect_local(&self, group: u64) -> Result<()> {
        let id = self.id;
        let replica = self
            .replica(group)
            .ok_or(ClusterError::NotHosted { node: id, group })?;
        if replica.raft.metrics().borrow().state != ServerState::Follower {
            return Err(ClusterError::Raft {
                node: id,
                group,
                reason: "not a follower".into(),
            });
        }
        replica
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| ClusterError::Raft {
                node: id,
                group,
                reason: e.to_string(),
            })
    }

    /// This node's report: its replicas (with `digests`, each with its content
    /// digest) and its load.
    pub async fn report(&self, digests: bool) -> Result<NodeReport> {
        let replicas = self.local_reports(digests).await?;
        let mut load = self.load.sample();
        load.replicas = replicas.len() as u32;
        load.points = replicas.iter().map(|r| r.points).sum();
        load.leaders = replicas.iter().filter(|r| r.state == "leader").count() as u32;
        Ok(NodeReport {
            replicas,
            load,
            failure: self.failure(),
        })
    }

    /// Reports of this node's replicas; with `digests`, each with its content digest.
    pub async fn local_reports(&self, digests: bool) -> Result<Vec<ReplicaReport>> {
        let replicas = self.local_replicas();
        let mut out = Vec::with_capacity(replicas.len());
        let store_fault = self.store.recorded_fault();
        for (group, r) in replicas {
            let m = r.raft.metrics().borrow().clone();
            let stats = r.shard.stats();
            // Failed: stopped of a failure, or stopped because the store failed.
            let failure = match (&m.running_state, &store_fault) {
                (Ok(()), _) | (Err(openraft::error::Fatal::Stopped), None) => None,
                (Err(openraft::error::Fatal::Stopped), Some(f)) => Some(format!("stopped: {f}")),
                (Err(e), _) => Some(e.to_string()),
            };
            let mut report = ReplicaReport {
                group,
                state: match failure {
                    Some(_) => "failed".into(),
                    None => format!("{:?}", m.state).to_lowercase(),
                },
                failure,
                leader: m.current_leader,
                term: m.current_term,
                applied: m.last_applied.map(|l| l.index).unwrap_or(0),
                points: stats.points,
                digest: None,
                quarantined: stats.quarantined,
            };
            if digests {
                let shard = r.shard.clone();
                // Off the pools: the snapshot takes the shard's writer lock, whose
                // holder (a write) may be waiting on the foreground pool for its index
                // inserts — and a pool thread inside that insert may pick up this job
                // (a deadlock seen in the status test; ARCHITECTURE.md's pool rule).
                let (applied, digest, points) = blocking(move || -> Result<(u64, u64, u64)> {
                    let mut snap = shard.snapshot()?;
                    snap.points.sort_by_key(|p| p.id);
                    let mut h = Xxh3::new();
                    for p in &snap.points {
                        h.update(&postcard::to_stdvec(p).map_err(internal)?);
                    }
                    Ok((
                        snap.seq.saturating_sub(1),
                        h.digest(),
                        snap.points.len() as u64,
                    ))
                })
                .await?;
                report.applied = applied;
                report.digest = Some(digest);
                report.points = points;
            }
            out.push(report);
        }
        Ok(out)
    }

    /// Asks each local shard to save a checkpoint if it has unsaved writes and has
    /// been idle (never blocks: a busy shard declines at once). A sealed shard is
    /// idle because it is being split: its checkpoint would only compete with the
    /// building of its children, which the shard's writes wait for.
    pub fn checkpoint_idle_shards(&self) {
        for (_, replica) in self.local_replicas() {
            if replica.sealed.load(Ordering::Acquire) {
                continue;
            }
            if replica.shard.checkpoint_if_idle() {
                tracing::debug!(
                    shard = replica.shard.shard_no(),
                    "idle shard: checkpoint started"
                );
            }
        }
    }

    /// Saves an index checkpoint of every local shard with writes since its last.
    pub async fn checkpoint_all(&self) -> Result<()> {
        let replicas = self.local_replicas();
        blocking(move || {
            for (_, r) in replicas {
                r.shard.checkpoint()?;
            }
            Ok(())
        })
        .await
    }

    /// Stops every group, then saves an index checkpoint of every local shard.
    /// The cluster removed this node: deletes every local replica (log and data),
    /// stops the metadata group and records the removal in the data directory, so
    /// that nothing here serves again.
    pub async fn evict(&self) -> Result<()> {
        let _one_at_a_time = self.reconciling.lock().await;
        self.evicted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for (group, _) in self.local_replicas() {
            self.close_replica(group).await?;
        }
        let _ = self.meta.shutdown().await;
        self.registry.remove(META_GROUP);
        let (dir, id) = (self.data_dir.clone(), self.id);
        blocking(move || crate::identity::mark_removed(&dir, id)).await
    }

    /// True once [`Host::evict`] began.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops every Raft group of this node, leaving its replicas open for reads:
    /// its store takes no more writes, and a group that cannot append must not go
    /// on leading (its heartbeats would keep the followers from electing another
    /// leader) nor voting. See the `failure` module.
    pub async fn stop_groups(&self) {
        tracing::error!("the store takes no more writes: stopping every Raft group of this node");
        for (_, r) in self.local_replicas() {
            let _ = r.raft.shutdown().await;
        }
        let _ = self.meta.shutdown().await;
    }

    /// True once [`Host::shutdown`] began.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    pub async fn shutdown(&self) -> Result<()> {
        self.closing.store(true, Ordering::SeqCst);
        let replicas = self.local_replicas();
        for (_, r) in &replicas {
            let _ = r.raft.shutdown().await;
        }
        let _ = self.meta.shutdown().await;
        self.checkpoint_all().await
    }
}

/// Why `raft` stopped, if it stopped of a failure (its storage failed, or it
/// panicked); a group stopped on purpose (`Fatal::Stopped`: its replica closed, the
/// node shutting down) is not failed.
fn stopped(raft: &Raft<TypeConfig>) -> Option<String> {
    let m = raft.metrics();
    let m = m.borrow();
    match &m.running_state {
        Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Logs one line on this node whenever the leader of `group` it sees changes, until
/// the group stops, and counts each new leader in `changes`.
fn watch_leader(node: NodeId, group: u64, raft: &Raft<TypeConfig>, changes: metrics::Counter) {
    let mut rx = raft.metrics();
    tokio::spawn(async move {
        let mut last = rx.borrow().current_leader;
        while rx.changed().await.is_ok() {
            let (leader, term) = {
                let m = rx.borrow_and_update();
                (m.current_leader, m.current_term)
            };
            if leader != last {
                last = leader;
                if leader.is_some() {
                    changes.increment(1);
                }
                match leader {
                    Some(l) if l == node => {
                        tracing::info!(group, term, "this node leads the group")
                    }
                    Some(l) => tracing::info!(group, term, leader = l, "group has a new leader"),
                    None => tracing::info!(group, term, "group lost its leader"),
                }
            }
        }
    });
}

/// Initializes `raft` with `members` after `delay`, unless it has heard from a leader
/// (or been initialized) meanwhile. Initializing an initialized group is refused by
/// openraft and harmless.
pub(crate) async fn initialize_later(
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

/// The `nice` value of the compaction pool's threads (see [`Pools`]): under
/// contention the kernel gives each of them about a tenth of a normal thread's share
/// of the CPU, and all of it when the node is otherwise idle. Builds something waits
/// for (a split's children, a snapshot install) keep the normal priority: at nice 10
/// on a busy node a split's children took a minute to open, with the shard's writes
/// waiting.
const COMPACTION_NICE: i32 = 10;

/// A pool of `threads` threads named `name-<i>` whose scheduling priority is lowered
/// by `nice` (0: left as is). A panic in a job must not abort the node: the job's
/// caller sees its result channel closed and answers INTERNAL.
fn pool_of(threads: usize, name: &'static str, nice: i32) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{name}-{i}"))
        .start_handler(move |_| {
            if nice != 0 {
                // Linux keeps a nice value per thread: this lowers only the calling
                // thread. Failing leaves it at the foreground's priority, which costs
                // only the preference.
                // SAFETY: plain system calls on the calling thread.
                let failed = unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0
                };
                if failed {
                    tracing::warn!(
                        pool = name,
                        error = %std::io::Error::last_os_error(),
                        "could not lower the priority of a pool thread"
                    );
                }
            }
        })
        .panic_handler(move |p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(pool = name, panic = %msg, "a pool job panicked");
        })
        .build()
        .map_err(internal)
}

/// Whether the request a pool job works for is gone. See [`on_pool`].
#[derive(Clone, Default)]
pub(crate) struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Marks its [`Cancel`] when dropped: when the future awaiting a pool job is dropped
/// before the job answered (tonic drops a request's future when the client resets
/// the stream or its deadline passes).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on `pool` and awaits it. If the awaiting future is dropped first, a job
/// still queued never starts, and a running one sees `Cancel::is_cancelled` (long
/// jobs check it between units of work): cancelled requests stop costing CPU.
pub(crate) async fn on_pool<T: Send + 'static>(
    pool: &rayon::ThreadPool,
    f: impl FnOnce(&Cancel) -> T + Send + 'static,
) -> Result<T> {
    let cancel = Cancel::default();
    let _guard = CancelOnDrop(cancel.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.spawn(move || {
        if cancel.is_cancelled() {
            return;
        }
        let _ = tx.send(f(&cancel));
    });
    rx.await
        .map_err(|_| internal("a search job failed; see the server log"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// A pool of one thread, busy until the returned sender is dropped or sent to.
    fn busy_pool() -> (rayon::ThreadPool, std::sync::mpsc::Sender<()>) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _ = wait.recv();
        });
        (pool, release)
    }

    #[tokio::test]
    async fn a_job_whose_request_is_gone_does_not_run() {
        let (pool, release) = busy_pool();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        // The request gives up while its job waits in the queue.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            on_pool(&pool, move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .await;
        assert!(gave_up.is_err());
        drop(release);
        // A job queued after it runs (so the first one had its turn).
        let r = ran.clone();
        on_pool(&pool, move |_| r.fetch_add(10, Ordering::SeqCst))
            .await
            .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 10, "the abandoned job ran");
    }

    #[tokio::test]
    async fn a_running_job_sees_its_request_go() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (seen_tx, seen) = std::sync::mpsc::channel::<bool>();
        let pool = Arc::new(pool);
        let p = pool.clone();
        let job = async move {
            on_pool(&p, move |cancel| {
                let _ = started_tx.send(());
                // Work in units, checking between them, for at most 10 s.
                for _ in 0..1000 {
                    if cancel.is_cancelled() {
                        let _ = seen_tx.send(true);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = seen_tx.send(false);
            })
            .await
        };
        let task = tokio::spawn(job);
        started.await.unwrap();
        task.abort();
        let seen = tokio::task::spawn_blocking(move || seen.recv_timeout(Duration::from_secs(20)))
            .await
            .unwrap();
        assert_eq!(seen, Ok(true), "the job did not see the cancellation");
    }
}
