//! The database operations a node offers its clients, from any node: collection
//! management through the metadata group, writes split by shard and committed by each
//! shard's group, reads scattered over one replica per shard and merged.
//!
//! [`Database`] decides what a request means — which collection, which shards, which
//! consistency — validates it (nothing unvalidated is ever proposed), and sends the
//! parts through the [`Router`]. It must never talk to a Raft group or a peer
//! directly.
//!
//! **Routing versions.** A request is split by shard with one version of the
//! collection's routing (its metadata). A shard being split refuses writes (not
//! applied) and STRONG reads, and a split shard disappears; either answers
//! [`ClusterError::Resharded`], and the request waits (bounded by the request
//! timeout) for this node to apply the newer routing and is routed again: a write
//! only for the parts that were refused, a read as a whole, so a search always reads
//! one consistent set of shards and never sees a point twice. A SESSION token that
//! names shards newer than this node's routing makes it read the routing from the
//! metadata leader first.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, join_all};
use shoal_core::{
    CollectionConfig, Error, Filter, Limits, Metric, Point, PointId, RetrievedPoint, ScoredPoint,
    SearchRequest, Write, validate,
};
use shoal_meta::{ClusterState, CollectionMeta, META_GROUP, MetaCommand, MetaError, NodeId};
use shoal_raft::{Command, Rejection, Reply};
use shoal_shard::ShardStats;

use crate::Consistency;
use crate::error::{ClusterError, Result};
use crate::placement::Placement;
use crate::router::Router;
use crate::wire::{ReadCall, ReadOp, ReadResult};

/// A collection's configuration and per-shard counters (read from one replica of
/// each shard).
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    pub config: CollectionConfig,
    pub points: u64,
    pub shards: Vec<ShardStats>,
}

/// Per shard of one collection, the log index a write was applied at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WriteToken {
    pub collection_id: u64,
    pub shards: BTreeMap<u32, u64>,
}

/// A committed write: how many points or ids, and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub count: u64,
    pub token: WriteToken,
}

/// How a read picks its replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ReadOptions {
    pub consistency: Consistency,
    /// For SESSION: the writes to see.
    pub token: Option<WriteToken>,
}

/// A validated search and the collection it was validated against.
pub(crate) type PreparedSearch = (Arc<CollectionMeta>, SearchRequest);

/// How many times a collection is placed again when the nodes changed under the
/// placement before it committed.
const PLACEMENT_ATTEMPTS: usize = 3;

/// The database operations; see the module doc.
pub(crate) struct Database {
    pub(crate) router: Arc<Router>,
    limits: Limits,
    placement: Box<dyn Placement>,
}

/// The log index a committed entry was applied at, or the state machine's refusal.
pub(crate) fn committed(reply: Reply) -> Result<u64> {
    match reply.rejected {
        None => Ok(reply.applied),
        Some(Rejection::Meta(e)) => Err(e.into()),
        Some(e @ (Rejection::WrongGroup | Rejection::Sealed)) => Err(ClusterError::internal(e)),
        // Validated before it was proposed: refused on apply only if the node that
        // validated it and the shard disagree; nothing was applied on any replica.
        Some(Rejection::Invalid(why)) => Err(shoal_core::Error::invalid(
            "points",
            format!("refused by the shard, nothing written: {why}"),
        )
        .into()),
    }
}

/// Like [`committed`], for a shard write to `group`: a sealed shard's refusal means
/// "route again".
fn committed_write(group: u64, reply: Reply) -> Result<u64> {
    match reply.rejected {
        Some(Rejection::Sealed) => Err(ClusterError::Resharded { group }),
        _ => committed(reply),
    }
}

/// Orders hits best first for `metric`, ties by id so results are deterministic.
fn compare_hits(metric: Metric, a: &ScoredPoint, b: &ScoredPoint) -> Ordering {
    let by_score = if metric.higher_is_better() {
        b.score.total_cmp(&a.score)
    } else {
        a.score.total_cmp(&b.score)
    };
    by_score.then_with(|| a.id.cmp(&b.id))
}

/// True if `e` says a shard is being split or was split (see the module doc).
fn is_resharded(e: &ClusterError) -> bool {
    match e {
        ClusterError::Resharded { .. } => true,
        ClusterError::GaveUp { last, .. } => is_resharded(last),
        _ => false,
    }
}

/// `writes` (all of one kind: a request upserts or deletes) split by shard under
/// `cm`'s routing.
fn by_shard(cm: &CollectionMeta, writes: Vec<Write>) -> BTreeMap<u32, Write> {
    let mut points: BTreeMap<u32, Vec<Point>> = BTreeMap::new();
    let mut ids: BTreeMap<u32, Vec<PointId>> = BTreeMap::new();
    for w in writes {
        match w {
            Write::Upsert(ps) => {
                for p in ps {
                    points.entry(cm.shard_for(&p.id).id).or_default().push(p);
                }
            }
            Write::Delete(is) => {
                for id in is {
                    ids.entry(cm.shard_for(&id).id).or_default().push(id);
                }
            }
        }
    }
    let mut out: BTreeMap<u32, Write> = points
        .into_iter()
        .map(|(s, p)| (s, Write::Upsert(p)))
        .collect();
    out.extend(ids.into_iter().map(|(s, i)| (s, Write::Delete(i))));
    out
}

impl Database {
    pub fn new(router: Arc<Router>, limits: Limits, placement: Box<dyn Placement>) -> Database {
        Database {
            router,
            limits,
            placement,
        }
    }

    /// The request limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn cluster_state(&self) -> Arc<ClusterState> {
        self.router.host().state()
    }

    /// The collection named `name`: from this node's metadata, or — if this node has
    /// not applied it yet — from the metadata leader. One being restored is hidden
    /// ([`MetaError::BeingRestored`]); as this node may not have applied the end of
    /// its restore yet (a client that saw the restore finish through another node
    /// asks here next), the metadata leader decides that.
    async fn collection_meta(&self, name: &str) -> Result<CollectionMeta> {
        let cm = self.collection_meta_any(name).await?;
        if !cm.restoring {
            return Ok(cm);
        }
        match self.fresh_state().await?.collections.get(name) {
            Some(fresh) if !fresh.restoring => Ok(fresh.clone()),
            Some(_) => Err(MetaError::BeingRestored(name.to_string()).into()),
            None => Err(MetaError::NoSuchCollection(name.to_string()).into()),
        }
    }

    /// [`Database::collection_meta`], also of a collection being restored.
    pub(crate) async fn collection_meta_any(&self, name: &str) -> Result<CollectionMeta> {
        validate::collection_name(name)?;
        if let Some(c) = self.cluster_state().collections.get(name) {
            return Ok(c.clone());
        }
        let fresh = self.fresh_state().await?;
        fresh
            .collections
            .get(name)
            .cloned()
            .ok_or_else(|| MetaError::NoSuchCollection(name.to_string()).into())
    }

    /// The metadata as its leader has it now. A node that just joined (and has not
    /// applied any metadata yet) waits, bounded, until it knows the group.
    pub(crate) async fn fresh_state(&self) -> Result<ClusterState> {
        let voters = self.voters().await?;
        self.router.read_metadata(&voters).await
    }

    /// The metadata group's members; waits (bounded) for a just-formed cluster to
    /// commit its first membership.
    pub(crate) async fn voters(&self) -> Result<Vec<NodeId>> {
        let state = self
            .router
            .host()
            .wait_formed(self.router.timeout())
            .await?;
        Ok(state.nodes.keys().copied().collect())
    }

    /// Creates a collection cluster-wide; returns once this node knows it.
    pub async fn create_collection(&self, config: CollectionConfig) -> Result<CollectionInfo> {
        let cm = self.create_collection_as(config, false).await?;
        self.info(&cm).await
    }

    /// Creates a collection, hidden from clients while `restoring` (see
    /// [`MetaCommand::RestoreCollection`]); returns its metadata once this node
    /// knows it and its shards here know their leaders.
    pub(crate) async fn create_collection_as(
        &self,
        config: CollectionConfig,
        restoring: bool,
    ) -> Result<CollectionMeta> {
        validate::collection_config(&config, &self.limits)?;
        let voters = self.voters().await?;
        let name = config.name.clone();
        let mut attempt = 0;
        let applied = loop {
            attempt += 1;
            let state = self.cluster_state();
            if state.collections.contains_key(&config.name) {
                return Err(MetaError::CollectionExists(config.name.clone()).into());
            }
            if state.collections.len() >= self.limits.max_collections {
                return Err(Error::exhausted(
                    "name",
                    format!(
                        "the cluster holds the maximum of {} collections",
                        self.limits.max_collections
                    ),
                )
                .into());
            }
            let placement = self.placement.place(&state, &config)?;
            let cmd = if restoring {
                MetaCommand::RestoreCollection {
                    config: config.clone(),
                    placement,
                }
            } else {
                MetaCommand::CreateCollection {
                    config: config.clone(),
                    placement,
                }
            };
            let reply = self
                .router
                .propose(META_GROUP, &voters, Command::Meta(cmd))
                .await?;
            match reply.rejected {
                // The nodes changed between our view and the commit: place again
                // against the state that refused it.
                Some(Rejection::Meta(MetaError::StalePlacement { .. }))
                    if attempt < PLACEMENT_ATTEMPTS =>
                {
                    self.router
                        .host()
                        .wait_state(reply.applied, self.router.timeout())
                        .await?;
                }
                _ => break committed(reply)?,
            }
        };
        let state = self
            .router
            .host()
            .wait_state(applied, self.router.timeout())
            .await?;
        self.router.host().reconcile(state.clone()).await?;
        let cm = state
            .collections
            .get(&name)
            .cloned()
            .ok_or_else(|| ClusterError::from(MetaError::NoSuchCollection(name.clone())))?;
        self.wait_for_leaders(&cm).await;
        Ok(cm)
    }

    /// Waits (bounded by the request timeout) until every shard of `cm` hosted here
    /// knows its leader, so the first writes need not wait for elections.
    async fn wait_for_leaders(&self, cm: &CollectionMeta) {
        for s in cm.shards.iter().map(|s| s.id) {
            if let Some(r) = self.router.host().replica(cm.group(s)) {
                let _ = r
                    .raft
                    .wait(Some(self.router.timeout()))
                    .metrics(|m| m.current_leader.is_some(), "leader known")
                    .await;
            }
        }
    }

    /// Deletes a collection cluster-wide; returns once this node has removed its data.
    /// A collection being restored can be deleted too (a restore cut short).
    pub async fn delete_collection(&self, name: &str) -> Result<()> {
        self.collection_meta_any(name).await?;
        let reply = self
            .router
            .propose(
                META_GROUP,
                &self.voters().await?,
                Command::Meta(MetaCommand::DeleteCollection(name.to_string())),
            )
            .await?;
        let index = committed(reply)?;
        let state = self
            .router
            .host()
            .wait_state(index, self.router.timeout())
            .await?;
        self.router.host().reconcile(state).await
    }

    async fn info(&self, cm: &CollectionMeta) -> Result<CollectionInfo> {
        self.routed(cm, &ReadOptions::default(), |cm| {
            Box::pin(async move { self.info_once(&cm).await })
        })
        .await
    }

    async fn info_once(&self, cm: &CollectionMeta) -> Result<CollectionInfo> {
        let stats = join_all(cm.shards.iter().map(|sh| sh.id).map(|s| async move {
            match self
                .read_shard(cm, s, &ReadOptions::default(), ReadOp::Stats)
                .await?
            {
                ReadResult::Stats(st) => Ok(st),
                _ => Err(ClusterError::Internal(
                    "unexpected reply to a stats read".into(),
                )),
            }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<ShardStats>>>()?;
        Ok(CollectionInfo {
            config: cm.config.clone(),
            points: stats.iter().map(|s| s.points).sum(),
            shards: stats,
        })
    }

    /// Describes one collection.
    pub async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        let cm = self.collection_meta(name).await?;
        self.info(&cm).await
    }

    /// Describes every collection, by name.
    ///
    /// Read at the metadata leader: a node that applies the metadata late (one that
    /// just joined, or lags) must not answer with a list it has not caught up with.
    pub async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        let state = self.fresh_state().await?;
        let mut out = Vec::with_capacity(state.collections.len());
        for cm in state.collections.values().filter(|c| !c.restoring) {
            out.push(self.info(cm).await?);
        }
        Ok(out)
    }

    /// Commits `write` split by shard, one command per shard in parallel; fails with
    /// the first final error, or with [`ClusterError::PartialWrite`] naming every
    /// shard that did not commit. Parts refused by a shard being split are routed
    /// again once the split finished (see the module doc).
    pub(crate) async fn write_shards(
        &self,
        cm: &CollectionMeta,
        write: Write,
        count: u64,
    ) -> Result<WriteOutcome> {
        let deadline = Instant::now() + self.router.timeout();
        let mut cm = cm.clone();
        let mut pending = by_shard(&cm, vec![write]);
        let mut token = WriteToken {
            collection_id: cm.id,
            shards: BTreeMap::new(),
        };
        let mut failed = Vec::new();
        loop {
            let cm_now = &cm;
            let results = join_all(pending.into_iter().map(|(s, w)| async move {
                let group = cm_now.group(s);
                let replicas = cm_now
                    .shard(s)
                    .map(|s| s.replicas.as_slice())
                    .unwrap_or_default();
                let r = self
                    .router
                    .propose(group, replicas, Command::Shard(w.clone()))
                    .await
                    .and_then(|reply| committed_write(group, reply));
                (s, w, r)
            }))
            .await;
            let mut again = Vec::new();
            for (s, w, r) in results {
                match r {
                    Ok(index) => {
                        token.shards.insert(s, index);
                    }
                    Err(e) if is_resharded(&e) => again.push((s, w, e)),
                    Err(e @ ClusterError::GaveUp { .. }) => failed.push((s, e)),
                    // Listed with the shards that committed (a full disk is
                    // RESOURCE_EXHAUSTED at the edge, the message per shard).
                    Err(e @ ClusterError::NodeFailed { .. }) => failed.push((s, e)),
                    Err(e) if e.is_retryable() => failed.push((s, e)),
                    Err(ClusterError::Request(shoal_core::Error::NotFound(_)))
                        if self.router.host().state().collection_by_id(cm.id).is_none() =>
                    {
                        // The collection was deleted while the write was in flight.
                        return Err(shoal_core::Error::NotFound(format!(
                            "collection {:?} (deleted while the write was in flight)",
                            cm.config.name
                        ))
                        .into());
                    }
                    Err(e) => return Err(e),
                }
            }
            if again.is_empty() {
                break;
            }
            match self.newer_routing(&cm, deadline).await {
                Some(next) => {
                    cm = next;
                    pending = by_shard(&cm, again.into_iter().map(|(_, w, _)| w).collect());
                }
                None => {
                    failed.extend(again.into_iter().map(|(s, _, e)| (s, e)));
                    break;
                }
            }
        }
        if !failed.is_empty() {
            return Err(ClusterError::PartialWrite {
                committed: token.shards.keys().copied().collect(),
                failed,
            });
        }
        Ok(WriteOutcome { count, token })
    }

    /// Waits until this node routes collection `cm` by a newer version than `cm`'s (a
    /// split finished), up to `deadline`; `None` if it did not, or the collection is
    /// gone.
    async fn newer_routing(
        &self,
        cm: &CollectionMeta,
        deadline: Instant,
    ) -> Option<CollectionMeta> {
        let mut rx = self.router.host().subscribe();
        loop {
            {
                let state = rx.borrow_and_update();
                match state.collection_by_id(cm.id) {
                    Some(c) if c.routing_version > cm.routing_version => return Some(c.clone()),
                    None => return None,
                    Some(_) => {}
                }
            }
            match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Runs the read `f` under `cm`'s routing, and again under each newer one while it
    /// meets a split (see the module doc). A SESSION token naming shards newer than
    /// `cm` first brings the routing from the metadata leader.
    async fn routed<'a, T>(
        &'a self,
        cm: &CollectionMeta,
        read: &ReadOptions,
        f: impl Fn(Arc<CollectionMeta>) -> BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.router.timeout();
        let mut cm = cm.clone();
        let newer_shards = |cm: &CollectionMeta| {
            read.consistency == Consistency::Session
                && read.token.as_ref().is_some_and(|t| {
                    t.collection_id == cm.id && t.shards.keys().any(|s| *s >= cm.next_shard_id)
                })
        };
        if newer_shards(&cm)
            && let Some(fresh) = self.fresh_state().await?.collection_by_id(cm.id)
        {
            cm = fresh.clone();
        }
        loop {
            match f(Arc::new(cm.clone())).await {
                Err(e) if is_resharded(&e) => match self.newer_routing(&cm, deadline).await {
                    Some(next) => cm = next,
                    None => return Err(e),
                },
                r => return r,
            }
        }
    }

    /// Validates and writes points; returns once every touched shard committed them.
    pub async fn upsert(&self, name: &str, points: Vec<Point>) -> Result<WriteOutcome> {
        let cm = self.collection_meta(name).await?;
        let points = validate::upsert(&cm.config, points, &self.limits)?;
        let n = points.len() as u64;
        self.write_shards(&cm, Write::Upsert(points), n).await
    }

    /// Deletes points by id; returns once every touched shard committed it.
    pub async fn delete_points(&self, name: &str, ids: Vec<PointId>) -> Result<WriteOutcome> {
        let cm = self.collection_meta(name).await?;
        let ids = validate::ids(ids, &self.limits)?;
        let n = ids.len() as u64;
        self.write_shards(&cm, Write::Delete(ids), n).await
    }

    fn min_applied(cm: &CollectionMeta, shard: u32, read: &ReadOptions) -> u64 {
        match (&read.consistency, &read.token) {
            (Consistency::Session, Some(t)) if t.collection_id == cm.id => {
                t.shards.get(&shard).copied().unwrap_or(0)
            }
            _ => 0,
        }
    }

    fn check_token(cm: &CollectionMeta, read: &ReadOptions) -> Result<()> {
        match &read.token {
            Some(t) if t.collection_id != cm.id && read.consistency == Consistency::Session => {
                Err(Error::invalid(
                    "read.token.collection_id",
                    format!(
                        "the token was issued for collection id {}, this collection's id is {}",
                        t.collection_id, cm.id
                    ),
                )
                .into())
            }
            _ => Ok(()),
        }
    }

    async fn read_shard(
        &self,
        cm: &CollectionMeta,
        shard: u32,
        read: &ReadOptions,
        op: ReadOp,
    ) -> Result<ReadResult> {
        let call = ReadCall {
            consistency: read.consistency,
            min_applied: Self::min_applied(cm, shard, read),
            op,
        };
        let replicas = cm
            .shard(shard)
            .map(|s| s.replicas.as_slice())
            .unwrap_or_default();
        self.router.read(cm.group(shard), replicas, call).await
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
        let cm = self.collection_meta(name).await?;
        Self::check_token(&cm, &read)?;
        let ids = validate::ids(ids, &self.limits)?;
        let (read, ids_ref) = (&read, &ids);
        let mut found = self
            .routed(&cm, read, |cm| {
                Box::pin(async move {
                    let cm = &*cm;
                    let mut by_shard: BTreeMap<u32, Vec<PointId>> = BTreeMap::new();
                    for id in ids_ref {
                        by_shard.entry(cm.shard_for(id).id).or_default().push(*id);
                    }
                    let results = join_all(by_shard.into_iter().map(|(s, ids)| async move {
                        let op = ReadOp::Get {
                            ids,
                            with_payload,
                            with_vector,
                        };
                        match self.read_shard(cm, s, read, op).await? {
                            ReadResult::Points(p) => Ok(p),
                            _ => Err(ClusterError::Internal("unexpected reply to a get".into())),
                        }
                    }))
                    .await;
                    let mut found: BTreeMap<PointId, RetrievedPoint> = BTreeMap::new();
                    for r in results {
                        for p in r? {
                            found.insert(p.id, p);
                        }
                    }
                    Ok(found)
                })
            })
            .await?;
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// One search.
    pub async fn search(
        &self,
        name: &str,
        req: SearchRequest,
        read: ReadOptions,
    ) -> Result<Vec<ScoredPoint>> {
        let cm = self.collection_meta(name).await?;
        let req = validate::search(&cm.config, "", req, &self.limits)?;
        let mut out = self.run_searches(&cm, vec![req], &read).await?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Validates one search the way [`Database::search`] does, for the coalescer: the
    /// collection it names and the validated request.
    pub(crate) async fn prepare_search(
        &self,
        name: &str,
        req: SearchRequest,
        read: &ReadOptions,
    ) -> Result<PreparedSearch> {
        let cm = self.collection_meta(name).await?;
        let req = validate::search(&cm.config, "", req, &self.limits)?;
        Self::check_token(&cm, read)?;
        Ok((Arc::new(cm), req))
    }

    /// Answers searches prepared by [`Database::prepare_search`] against one collection
    /// as one batch: one result per search, in order. A failure of the read (a shard
    /// without an available replica) is every search's.
    pub(crate) async fn run_prepared(
        &self,
        read: &ReadOptions,
        batch: Vec<PreparedSearch>,
    ) -> Vec<Result<Vec<ScoredPoint>>> {
        let n = batch.len();
        // Every search of a batch names the same collection id; the newest metadata
        // read for it serves them all.
        let Some(cm) = batch.last().map(|(cm, _)| cm.clone()) else {
            return Vec::new();
        };
        let reqs = batch.into_iter().map(|(_, r)| r).collect();
        match self.run_searches(&cm, reqs, read).await {
            Ok(results) if results.len() == n => results.into_iter().map(Ok).collect(),
            Ok(results) => vec![
                Err(ClusterError::Internal(format!(
                    "a batch of {n} searches returned {} results",
                    results.len()
                )));
                n
            ],
            Err(e) => vec![Err(e); n],
        }
    }

    /// Many searches, each shard answering all of them in one parallel job.
    pub async fn search_batch(
        &self,
        name: &str,
        reqs: Vec<SearchRequest>,
        read: ReadOptions,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        let cm = self.collection_meta(name).await?;
        validate::search_batch_len(reqs.len(), &self.limits)?;
        let reqs = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| validate::search(&cm.config, &format!("searches[{i}]"), r, &self.limits))
            .collect::<shoal_core::Result<Vec<_>>>()?;
        validate::search_batch_results(&reqs, &self.limits)?;
        self.run_searches(&cm, reqs, &read).await
    }

    async fn run_searches(
        &self,
        cm: &CollectionMeta,
        reqs: Vec<SearchRequest>,
        read: &ReadOptions,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        Self::check_token(cm, read)?;
        let reqs = Arc::new(reqs);
        self.routed(cm, read, |cm| {
            let reqs = reqs.clone();
            Box::pin(async move { self.search_shards(&cm, reqs, read).await })
        })
        .await
    }

    /// Every search of `reqs` on every shard of `cm`, merged.
    async fn search_shards(
        &self,
        cm: &CollectionMeta,
        reqs: Arc<Vec<SearchRequest>>,
        read: &ReadOptions,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        metrics::histogram!("shoal_search_fanout_shards", "collection" => cm.config.name.clone())
            .record(cm.shards.len() as f64);
        let per_shard = join_all(cm.shards.iter().map(|sh| sh.id).map(|s| {
            let reqs = reqs.clone();
            async move {
                match self.read_shard(cm, s, read, ReadOp::Search(reqs)).await? {
                    ReadResult::Search(r) => Ok(r),
                    _ => Err(ClusterError::Internal(
                        "unexpected reply to a search".into(),
                    )),
                }
            }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<Vec<Vec<ScoredPoint>>>>>()?;
        let metric = cm.config.metric;
        let ns = per_shard.len();
        let mut shards: Vec<std::vec::IntoIter<Vec<ScoredPoint>>> =
            per_shard.into_iter().map(|v| v.into_iter()).collect();
        Ok(reqs
            .iter()
            .map(|r| {
                let mut merged: Vec<ScoredPoint> = shards
                    .iter_mut()
                    .flat_map(|s| s.next().unwrap_or_default())
                    .collect();
                if ns > 1 {
                    merged.sort_by(|a, b| compare_hits(metric, a, b));
                }
                merged.truncate(r.top_k as usize);
                merged
            })
            .collect())
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
        let cm = self.collection_meta(name).await?;
        Self::check_token(&cm, &read)?;
        validate::scroll_limit(limit, &self.limits)?;
        if let Some(f) = &filter {
            validate::filter("filter", f)?;
        }
        let limit = limit as usize;
        let filter = filter.map(Arc::new);
        let (read, filter) = (&read, &filter);
        let mut all = self
            .routed(&cm, read, |cm| {
                Box::pin(async move {
                    let cm = &*cm;
                    let results = join_all(cm.shards.iter().map(|sh| sh.id).map(|s| async move {
                        let op = ReadOp::Scroll {
                            offset,
                            limit: limit + 1,
                            filter: filter.clone(),
                            with_payload,
                            with_vector,
                        };
                        match self.read_shard(cm, s, read, op).await? {
                            ReadResult::Points(p) => Ok(p),
                            _ => Err(ClusterError::Internal(
                                "unexpected reply to a scroll".into(),
                            )),
                        }
                    }))
                    .await;
                    let mut all = Vec::new();
                    for r in results {
                        all.extend(r?);
                    }
                    Ok(all)
                })
            })
            .await?;
        all.sort_by_key(|p| p.id);
        let next = all.get(limit).map(|p| p.id);
        all.truncate(limit);
        Ok((all, next))
    }

    /// Number of points, optionally matching a filter.
    pub async fn count(
        &self,
        name: &str,
        filter: Option<Filter>,
        read: ReadOptions,
    ) -> Result<u64> {
        let cm = self.collection_meta(name).await?;
        Self::check_token(&cm, &read)?;
        if let Some(f) = &filter {
            validate::filter("filter", f)?;
        }
        let filter = filter.map(Arc::new);
        let (read, filter) = (&read, &filter);
        self.routed(&cm, read, |cm| {
            Box::pin(async move {
                let cm = &*cm;
                let results = join_all(cm.shards.iter().map(|sh| sh.id).map(|s| async move {
                    match self
                        .read_shard(cm, s, read, ReadOp::Count(filter.clone()))
                        .await?
                    {
                        ReadResult::Count(n) => Ok(n),
                        _ => Err(ClusterError::Internal("unexpected reply to a count".into())),
                    }
                }))
                .await;
                results.into_iter().sum()
            })
        })
        .await
    }
}
