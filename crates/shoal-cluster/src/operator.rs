//! The operator: on the node that leads the metadata group, every
//! [`Elasticity::interval`] it
//!
//! 1. observes the nodes (a short `Status` call to each: alive, or silent since when;
//!    silent longer than `--dead-node-timeout`: dead);
//! 2. keeps the metadata group's membership in line with the metadata's nodes: a node
//!    that joined becomes a learner, then a voter while the group has fewer voters
//!    than it should (an odd number, at most [`Elasticity::max_voters`], from the
//!    active, live, caught-up nodes); a node that left is removed;
//! 3. drives every operation in flight one step (see [`Operator::drive_move`] and
//!    [`Operator::drive_split`]); each
//!    step is idempotent and decided from the group's membership as its leader
//!    reports it, so a new metadata leader resumes where the last one stopped;
//! 4. asks the scheduler (`scheduler`) for new operations and proposes them (unless
//!    automatic rebalancing is off; repairs then still wait for an operator's
//!    `shoal cluster rebalance`).
//!
//! A move never removes a replica before its replacement is a voter: the voters
//! change by joint consensus from the old set to the new one in one membership
//! change, after the new replica caught up as a learner. If the replica to remove
//! leads the group, the leadership is handed to the new replica first.
//!
//! The operator must never block a round on one slow group for long: every call is
//! bounded by the request timeout, and a step that cannot finish now is tried again
//! next round.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::join_all;
use openraft::ServerState;
use parking_lot::Mutex;
use shoal_meta::{
    ClusterState, META_GROUP, MetaCommand, MetaError, NodeId, NodeState, OpKind, Operation,
};
use shoal_raft::{Command, Rejection};

use crate::balance::Balancer;
use crate::error::{ClusterError, Result};
use crate::failpoints::{at, held};
use crate::options::Elasticity;
use crate::router::{Router, Rpc};
use crate::scheduler::{self, Observed, Policy};
use crate::wire::{MembershipChange, MembershipView, SplitCall, SplitChild, SplitProgress, encode};

/// How far behind its leader (in log entries) a learner may be and still count as
/// caught up.
const CATCH_UP_SLACK: u64 = 64;
/// How long a node may take to answer the liveness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often one step of a split asks the parent's replicas for progress, and how
/// long it waits between two asks (the rest waits for the next round).
const SPLIT_POLLS: usize = 30;
const SPLIT_POLL_PAUSE: Duration = Duration::from_millis(100);

/// What one step of an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Waiting for something (a learner catching up, a membership change to commit).
    Waiting(String),
    /// Made progress; more steps follow.
    Progressed(String),
    /// The operation finished (or was abandoned) and left the metadata.
    Done(String),
}

/// What the operator remembers between rounds.
#[derive(Default)]
pub(crate) struct Memory {
    /// When each node last answered, since this node began observing.
    last_seen: Mutex<BTreeMap<NodeId, Instant>>,
    /// When this node last started leading the metadata group.
    leading_since: Mutex<Option<Instant>>,
}

/// See the module doc.
pub(crate) struct Operator {
    router: Arc<Router>,
    options: Elasticity,
    memory: Arc<Memory>,
}

impl Operator {
    pub fn new(router: Arc<Router>, options: Elasticity, memory: Arc<Memory>) -> Operator {
        Operator {
            router,
            options,
            memory,
        }
    }

    /// Runs a round every interval while `router` lives (the node holds it).
    pub fn spawn(router: &Arc<Router>, options: Elasticity, memory: Arc<Memory>) {
        let weak: Weak<Router> = Arc::downgrade(router);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(options.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(router) = weak.upgrade() else { break };
                Operator::new(router, options.clone(), memory.clone())
                    .round()
                    .await;
            }
        });
    }

    fn leads_metadata(&self) -> bool {
        self.router.host().meta.metrics().borrow().state == ServerState::Leader
    }

    /// One round (see the module doc). Does nothing unless this node leads the
    /// metadata group.
    pub async fn round(&self) {
        if !self.leads_metadata() {
            *self.memory.leading_since.lock() = None;
            return;
        }
        self.memory
            .leading_since
            .lock()
            .get_or_insert_with(Instant::now);
        let state = self.router.host().state();
        let observed = self.observe(&state).await;
        if let Err(e) = self.meta_membership(&state, &observed).await {
            tracing::debug!(error = %e, "metadata membership step");
        }
        for op in state.operations.values() {
            match self.drive(op, &state, &observed).await {
                Ok(Step::Done(what)) => {
                    tracing::info!(op = op.id, "{what}")
                }
                Ok(Step::Progressed(what)) => tracing::info!(op = op.id, "{what}"),
                Ok(Step::Waiting(what)) => tracing::debug!(op = op.id, "{what}"),
                Err(e) => {
                    tracing::debug!(op = op.id, error = %e, "operation step failed; retrying next round")
                }
            }
        }
        if let Some(limit) = self.options.split_points {
            let state = self.router.host().state();
            for cmd in splits_due(&state, &observed, limit) {
                match self.propose(cmd.clone()).await {
                    Ok(_) => {
                        tracing::info!(command = ?cmd, limit, "a shard passed --split-points: splitting it")
                    }
                    Err(e) => tracing::debug!(error = %e, command = ?cmd, "split not started"),
                }
            }
        }
        if self.options.auto_rebalance {
            let state = self.router.host().state();
            for planned in scheduler::plan(&state, &observed, &self.policy()) {
                match self.propose(planned.command.clone()).await {
                    Ok(_) => {
                        tracing::info!(reason = %planned.reason, command = ?planned.command, "scheduled")
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, command = ?planned.command, "not scheduled")
                    }
                }
            }
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            max_moves_per_node: self.options.max_moves_per_node,
            balance: true,
            balance_by: self.options.balance_by,
        }
    }

    /// Probes every node; see the module doc.
    pub async fn observe(&self, state: &ClusterState) -> Observed {
        let nodes: Vec<NodeId> = state.nodes.keys().copied().collect();
        let me = self.router.id();
        let answers = join_all(nodes.iter().map(|n| async move {
            if *n == me {
                return (*n, self.router.host().report(false).await.ok());
            }
            let report = self.router.report_of(*n, false, PROBE_TIMEOUT).await;
            (*n, report.ok())
        }))
        .await;
        let now = Instant::now();
        let since = self.memory.leading_since.lock().unwrap_or(now);
        let mut last_seen = self.memory.last_seen.lock();
        let mut observed = Observed::default();
        for (n, report) in answers {
            if let Some(report) = report {
                for r in &report.replicas {
                    let p = observed.points.entry(r.group).or_default();
                    *p = (*p).max(r.points);
                }
                last_seen.insert(n, now);
                observed.alive.insert(n);
            } else {
                let seen = last_seen.get(&n).copied().unwrap_or(since).max(since);
                if now.duration_since(seen) >= self.options.dead_node_timeout {
                    observed.dead.insert(n);
                }
            }
        }
        last_seen.retain(|n, _| state.nodes.contains_key(n));
        observed
    }

    /// Proposes a metadata command; returns the index it was applied at.
    async fn propose(&self, cmd: MetaCommand) -> Result<u64> {
        let voters: Vec<NodeId> = self.router.host().state().nodes.keys().copied().collect();
        let reply = self
            .router
            .propose(META_GROUP, &voters, Command::Meta(cmd))
            .await?;
        match reply.rejected {
            None => Ok(reply.applied),
            Some(Rejection::Meta(e)) => Err(e.into()),
            Some(e) => Err(ClusterError::internal(e)),
        }
    }

    /// Step 2 of a round: the metadata group's members follow the metadata's nodes.
    async fn meta_membership(&self, state: &ClusterState, observed: &Observed) -> Result<()> {
        let host = self.router.host();
        let t = self.router.timeout();
        let view = host
            .membership_local(META_GROUP, MembershipChange::Describe, t)
            .await?;
        // Joined nodes become learners.
        for (id, node) in &state.nodes {
            if !view.voters.contains(id) && !view.learners.contains(id) {
                tracing::info!(node = id, addr = %node.addr, "adding the node to the metadata group");
                host.membership_local(
                    META_GROUP,
                    MembershipChange::AddLearner {
                        node: *id,
                        addr: node.addr.clone(),
                    },
                    t,
                )
                .await?;
                return Ok(());
            }
        }
        // Removed nodes leave.
        for l in &view.learners {
            if !state.nodes.contains_key(l) {
                tracing::info!(node = l, "removing the node from the metadata group");
                host.membership_local(META_GROUP, MembershipChange::RemoveLearner { node: *l }, t)
                    .await?;
                return Ok(());
            }
        }
        let voters = desired_voters(state, observed, &view, self.options.max_voters);
        if voters != view.voters {
            tracing::info!(?voters, was = ?view.voters, "changing the metadata group's voters");
            host.membership_local(META_GROUP, MembershipChange::SetVoters { voters }, t)
                .await?;
        }
        Ok(())
    }

    /// Drives one operation one step.
    pub async fn drive(
        &self,
        op: &Operation,
        state: &ClusterState,
        observed: &Observed,
    ) -> Result<Step> {
        // An operation whose collection or shard is gone (deleted, or split meanwhile)
        // has nothing left to do.
        let (collection, shard) = op.shard();
        let gone = match state.collection_by_id(collection) {
            None => Some("the collection is gone"),
            Some(cm) if cm.shard(shard).is_none() => Some("the shard is gone"),
            Some(_) => None,
        };
        if let Some(why) = gone {
            self.propose(MetaCommand::AbandonOperation(op.id)).await?;
            let describe = scheduler::describe(&op.kind, state);
            return Ok(Step::Done(format!("{describe}: abandoned, {why}")));
        }
        match op.kind {
            OpKind::Move {
                collection,
                shard,
                from,
                to,
            } => {
                self.drive_move(op, state, observed, collection, shard, from, to)
                    .await
            }
            OpKind::Split {
                collection,
                shard,
                at,
                children,
                ..
            } => {
                self.drive_split(op, state, collection, shard, at, children)
                    .await
            }
        }
    }

    /// One step of a split (see [`OpKind::Split`]):
    /// 0. wait until no replica of the parent is compacting its index and each has a
    ///    fresh checkpoint (asking for one): the work of step 2 then leaves out the
    ///    whole-graph dump, so the pause of the shard's writes is short;
    /// 1. seal the parent (a log entry; from then on it refuses writes, which the
    ///    routers send to the children once they take over);
    /// 2. ask every replica of the parent to build and open both children from its
    ///    sealed copy (in the background; later rounds ask again for progress);
    /// 3. once a majority of the parent's replicas have both children open and each
    ///    child has a leader, record the split: the children take over the range and
    ///    the parent's replicas are deleted. A replica that had not built its copies
    ///    by then gets them from the children's leaders as snapshots.
    async fn drive_split(
        &self,
        op: &Operation,
        state: &ClusterState,
        collection: u64,
        shard_id: u32,
        at: u64,
        children: [u32; 2],
    ) -> Result<Step> {
        let describe = scheduler::describe(&op.kind, state);
        let cm = state
            .collection_by_id(collection)
            .ok_or(MetaError::NoSuchCollectionId(collection))?;
        let parent = cm.shard(shard_id).ok_or(MetaError::NoSuchShard {
            collection,
            shard: shard_id,
        })?;
        let group = cm.group(shard_id);
        let call = SplitCall {
            children: [
                SplitChild {
                    shard: children[0],
                    first: parent.range.first,
                    last: at - 1,
                },
                SplitChild {
                    shard: children[1],
                    first: at,
                    last: parent.range.last,
                },
            ],
            voters: parent
                .replicas
                .iter()
                .map(|n| {
                    let addr = state.nodes.get(n).map(|m| m.addr.clone());
                    (*n, addr.unwrap_or_default())
                })
                .collect(),
        };
        let payload = encode(&call)?;
        let t = self.router.timeout();
        let needed = parent.replicas.len() / 2 + 1;
        let mut sealed_now = None;
        // Writes to the shard wait from the seal until the children take over: this
        // step polls briefly rather than leaving each stage to the next round.
        for attempt in 0..SPLIT_POLLS {
            if attempt > 0 {
                tokio::time::sleep(SPLIT_POLL_PAUSE).await;
            }
            let answers = join_all(parent.replicas.iter().map(|n| {
                let (call, payload) = (call.clone(), payload.clone());
                async move {
                    if *n == self.router.id() {
                        self.router.host().split_local(group, call).await
                    } else {
                        self.router
                            .call::<SplitProgress>(*n, Rpc::Split, group, payload, t)
                            .await
                    }
                }
            }))
            .await;
            let sealed = answers.iter().any(|a| {
                matches!(a, Ok(p) if !matches!(p, SplitProgress::NotSealed | SplitProgress::Compacting | SplitProgress::Copying))
            });
            let compacting = answers
                .iter()
                .any(|a| matches!(a, Ok(SplitProgress::Compacting)));
            let copying = answers
                .iter()
                .any(|a| matches!(a, Ok(SplitProgress::Copying)));
            if !sealed && sealed_now.is_none() && compacting {
                // Sealing now would pause the shard's writes while its replicas are
                // busy compacting (an earlier split's child) or checkpointing: wait.
                return Ok(Step::Waiting(format!(
                    "{describe}: waiting for the shard's replicas to compact or checkpoint their index"
                )));
            }
            if !sealed && sealed_now.is_none() && copying {
                // The children are copied while the shard still takes writes; the
                // pause after the seal then only brings the copies up to date.
                return Ok(Step::Waiting(format!(
                    "{describe}: copying the children ahead of the seal"
                )));
            }
            if !sealed && sealed_now.is_none() {
                let reply = self
                    .router
                    .propose(group, &parent.replicas, Command::Seal)
                    .await?;
                if let Some(e) = reply.rejected {
                    return Err(ClusterError::internal(e));
                }
                tracing::info!(
                    op = op.id,
                    "{describe}: sealed the shard at log index {}",
                    reply.applied
                );
                sealed_now = Some(reply.applied);
                continue;
            }
            let open = answers
                .iter()
                .filter(|a| {
                    matches!(a, Ok(SplitProgress::Open { leaders }) if leaders.iter().all(Option::is_some))
                })
                .count();
            if open >= needed {
                self.propose(MetaCommand::FinishOperation(op.id)).await?;
                return Ok(Step::Done(format!("{describe}: done")));
            }
        }
        Ok(Step::Waiting(format!(
            "{describe}: waiting for the children to open with a leader on {needed} of {} replicas",
            parent.replicas.len()
        )))
    }

    /// One step of a move (see [`OpKind::Move`]):
    /// 1. `to` joins the group as a learner; wait until it caught up;
    /// 2. if `from` leads a group of at most three voters: hand the leadership to
    ///    another caught-up voter (if the leader is the only voter, `to` first becomes
    ///    a voter and takes it); with more voters openraft's leader steps down by
    ///    itself once the change that removes it commits;
    /// 3. change the voters to the new set (joint consensus; `from` leaves the group);
    /// 4. record the new replicas in the metadata (`from` then deletes its copy).
    ///
    /// If `to` died, left or is draining before it became a voter, the learner is
    /// removed and the move abandoned.
    #[allow(clippy::too_many_arguments)]
    async fn drive_move(
        &self,
        op: &Operation,
        state: &ClusterState,
        observed: &Observed,
        collection: u64,
        shard_id: u32,
        from: Option<NodeId>,
        to: Option<NodeId>,
    ) -> Result<Step> {
        let describe = scheduler::describe(&op.kind, state);
        let cm = state
            .collection_by_id(collection)
            .ok_or(MetaError::NoSuchCollectionId(collection))?;
        let shard = cm.shard(shard_id).ok_or(MetaError::NoSuchShard {
            collection,
            shard: shard_id,
        })?;
        let group = cm.group(shard_id);
        let mut members: Vec<NodeId> = shard.replicas.clone();
        members.extend(to);
        let t = self.router.timeout();
        let view = self
            .router
            .membership(group, &members, MembershipChange::Describe)
            .await?;
        let target: BTreeSet<NodeId> = shard
            .replicas
            .iter()
            .copied()
            .filter(|n| Some(*n) != from)
            .chain(to)
            .collect();
        if let Some(to) = to {
            let gone = state
                .nodes
                .get(&to)
                .is_none_or(|n| n.state != NodeState::Active)
                || observed.dead.contains(&to);
            if gone && !view.voters.contains(&to) {
                if view.learners.contains(&to) {
                    self.router
                        .membership(
                            group,
                            &members,
                            MembershipChange::RemoveLearner { node: to },
                        )
                        .await?;
                }
                self.propose(MetaCommand::AbandonOperation(op.id)).await?;
                return Ok(Step::Done(format!(
                    "{describe}: abandoned, node {to} is no longer a usable target"
                )));
            }
            if !view.voters.contains(&to) && !view.learners.contains(&to) {
                let addr = state
                    .nodes
                    .get(&to)
                    .map(|n| n.addr.clone())
                    .ok_or(ClusterError::UnknownNode(to))?;
                self.router
                    .membership(
                        group,
                        &members,
                        MembershipChange::AddLearner { node: to, addr },
                    )
                    .await?;
                return Ok(Step::Progressed(format!(
                    "{describe}: node {to} joined the group as a learner"
                )));
            }
            if !view.voters.contains(&to) && held(at::MOVE_LEARNER_ADDED) {
                return Ok(Step::Waiting(format!("{describe}: held (failpoint)")));
            }
            if !view.caught_up(to, CATCH_UP_SLACK) {
                let matched = view.matched.get(&to).copied().flatten();
                return Ok(Step::Waiting(format!(
                    "{describe}: node {to} is catching up ({} of {} entries)",
                    matched.unwrap_or(0),
                    view.last_index
                )));
            }
        }
        if view.voters != target || view.joint {
            if !view.joint && held(at::MOVE_CAUGHT_UP) {
                return Ok(Step::Waiting(format!("{describe}: held (failpoint)")));
            }
            // Hand the leadership over before the leader's replica goes. openraft 0.9
            // has no transfer: the candidate wins with its own vote and the old
            // leader's (the others keep their lease on the old leader), which is a
            // majority of at most three voters. With more, the voter change goes
            // ahead and openraft's leader steps down once it commits.
            if from == Some(view.leader) && !view.joint && view.voters.len() <= 3 {
                let heir = view
                    .voters
                    .iter()
                    .copied()
                    .find(|n| Some(*n) != from && view.caught_up(*n, 0));
                match (heir, to) {
                    (Some(heir), _) => {
                        self.transfer(view.leader, group, heir, t).await?;
                        return Ok(Step::Progressed(format!(
                            "{describe}: leadership handed from node {} to node {heir}",
                            view.leader
                        )));
                    }
                    // The leader is the only voter: the new replica votes too, then
                    // takes over.
                    (None, Some(to)) if !view.voters.contains(&to) => {
                        let mut voters = view.voters.clone();
                        voters.insert(to);
                        self.router
                            .membership(group, &members, MembershipChange::SetVoters { voters })
                            .await?;
                        return Ok(Step::Progressed(format!(
                            "{describe}: node {to} is a voter, so that it can take the leadership"
                        )));
                    }
                    (None, Some(to)) => {
                        self.transfer(view.leader, group, to, t).await?;
                        return Ok(Step::Progressed(format!(
                            "{describe}: leadership handed from node {} to node {to}",
                            view.leader
                        )));
                    }
                    (None, None) => {}
                }
            }
            if !view.joint && held(at::MOVE_LEADER_HANDED) {
                return Ok(Step::Waiting(format!("{describe}: held (failpoint)")));
            }
            let view = self
                .router
                .membership(
                    group,
                    &members,
                    MembershipChange::SetVoters {
                        voters: target.clone(),
                    },
                )
                .await?;
            if view.voters != target || view.joint {
                return Ok(Step::Waiting(format!(
                    "{describe}: the voter change is committing"
                )));
            }
        }
        if held(at::MOVE_VOTERS_CHANGED) {
            return Ok(Step::Waiting(format!("{describe}: held (failpoint)")));
        }
        self.propose(MetaCommand::FinishOperation(op.id)).await?;
        Ok(Step::Done(format!("{describe}: done")))
    }

    /// Asks `leader` to hand `group`'s leadership to `to`.
    async fn transfer(
        &self,
        leader: NodeId,
        group: u64,
        to: NodeId,
        timeout: Duration,
    ) -> Result<()> {
        if leader == self.router.id() {
            Balancer::new(self.router.clone())
                .hand_over(group, to)
                .await?;
            return Ok(());
        }
        self.router
            .call::<()>(leader, Rpc::Transfer, group, encode(&to)?, timeout)
            .await
    }
}

/// The voters the metadata group should have: an odd number, at most `max`, of the
/// active nodes not declared dead, keeping the current voters that still qualify and
/// promoting live, caught-up learners. A node that is only unreachable keeps its
/// vote (shrinking the group while a node is down would not help a majority); a
/// draining or dead voter is replaced once a learner can take its place, and dropped
/// when it leaves the metadata.
/// The splits `--split-points limit` asks for now: in each collection with no split
/// in flight, its fullest shard above `limit` points, at the middle of its range.
fn splits_due(state: &ClusterState, observed: &Observed, limit: u64) -> Vec<MetaCommand> {
    let mut out = Vec::new();
    for cm in state.collections.values() {
        let splitting = state
            .operations
            .values()
            .any(|o| matches!(o.kind, OpKind::Split { collection, .. } if collection == cm.id));
        if splitting {
            continue;
        }
        let fullest = cm
            .shards
            .iter()
            .filter(|s| state.operation_on(cm.id, s.id).is_none())
            .filter_map(|s| {
                let points = observed.points.get(&cm.group(s.id)).copied()?;
                let (_, upper) = s.range.halves()?;
                (points > limit).then_some((points, s.id, upper.first))
            })
            .max();
        if let Some((_, shard, at)) = fullest {
            out.push(MetaCommand::StartSplit {
                collection: cm.id,
                shard,
                at,
            });
        }
    }
    out
}

fn desired_voters(
    state: &ClusterState,
    observed: &Observed,
    view: &MembershipView,
    max: usize,
) -> BTreeSet<NodeId> {
    let keep = |n: &NodeId| {
        state
            .nodes
            .get(n)
            .is_some_and(|m| m.state == NodeState::Active)
            && !observed.dead.contains(n)
    };
    let promotable =
        |n: &NodeId| keep(n) && observed.alive.contains(n) && view.caught_up(*n, CATCH_UP_SLACK);
    let able = state.nodes.keys().filter(|n| keep(n)).count();
    let mut want = able.min(max).max(1);
    if want.is_multiple_of(2) {
        want -= 1;
    }
    let mut next: BTreeSet<NodeId> = view.voters.iter().copied().filter(keep).collect();
    for l in view.learners.iter().filter(|n| promotable(n)) {
        if next.len() >= want {
            break;
        }
        next.insert(*l);
    }
    // Nobody to replace a draining or dead voter yet: it keeps its vote.
    for v in &view.voters {
        if next.len() >= want.min(view.voters.len()) {
            break;
        }
        if state.nodes.contains_key(v) {
            next.insert(*v);
        }
    }
    while next.len() > want {
        let drop = next
            .iter()
            .rev()
            .find(|n| !observed.alive.contains(n))
            .or_else(|| next.iter().next_back())
            .copied();
        match drop {
            Some(d) => {
                next.remove(&d);
            }
            None => break,
        }
    }
    if next.is_empty() {
        return view.voters.clone();
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(voters: &[u64], learners: &[u64]) -> MembershipView {
        let all: Vec<u64> = voters.iter().chain(learners).copied().collect();
        MembershipView {
            leader: voters[0],
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            joint: false,
            last_index: 10,
            matched: all.iter().map(|n| (*n, Some(10))).collect(),
        }
    }

    fn state(n: u64) -> ClusterState {
        let mut s = ClusterState::default();
        let addrs: Vec<(u64, String)> = (1..=n).map(|i| (i, format!("n{i}:1"))).collect();
        s.observe_members(addrs.iter().map(|(i, a)| (*i, a.as_str())));
        s
    }

    fn alive(nodes: &[u64]) -> Observed {
        Observed {
            alive: nodes.iter().copied().collect(),
            dead: BTreeSet::new(),
            points: Default::default(),
        }
    }

    #[test]
    fn the_metadata_group_grows_to_an_odd_number_of_voters() {
        let s = state(5);
        // 3 voters, 2 caught-up learners: all five vote.
        let v = desired_voters(&s, &alive(&[1, 2, 3, 4, 5]), &view(&[1, 2, 3], &[4, 5]), 5);
        assert_eq!(v, [1, 2, 3, 4, 5].into());
        // A fourth node alone does not make four voters.
        let s4 = state(4);
        let v = desired_voters(&s4, &alive(&[1, 2, 3, 4]), &view(&[1, 2, 3], &[4]), 5);
        assert_eq!(v, [1, 2, 3].into());
        // At most `max`.
        let v = desired_voters(&s, &alive(&[1, 2, 3, 4, 5]), &view(&[1, 2, 3], &[4, 5]), 3);
        assert_eq!(v, [1, 2, 3].into());
    }

    #[test]
    fn a_draining_voter_is_replaced_and_a_down_one_kept_without_a_replacement() {
        let mut s = state(4);
        s.apply(MetaCommand::SetNodeState {
            node: 2,
            state: NodeState::Draining,
        })
        .unwrap();
        let v = desired_voters(&s, &alive(&[1, 2, 3, 4]), &view(&[1, 2, 3], &[4]), 5);
        assert_eq!(v, [1, 3, 4].into());
        // Node 3 down, nobody to replace it: the voters stay.
        let s = state(3);
        let v = desired_voters(&s, &alive(&[1, 2]), &view(&[1, 2, 3], &[]), 5);
        assert_eq!(v, [1, 2, 3].into());
    }

    mod in_process {
        use std::collections::BTreeSet;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

        use shoal_core::PointId;

        use crate::Node;
        use crate::testing::{TestCluster, config, eventually, points, strong};

        /// Replicas per node of the cluster as `node` knows it, once no operation is
        /// in flight.
        fn settled_counts(node: &Node) -> Result<Vec<usize>, String> {
            let state = node.cluster_state();
            if !state.operations.is_empty() {
                return Err(format!("operations in flight: {:?}", state.operations));
            }
            Ok(state.replica_counts().values().copied().collect())
        }

        /// Waits until `node` is removed from the cluster as `via` knows it and the
        /// three nodes left hold two replicas each, no operation in flight.
        async fn removed_and_settled(via: &Node, node: u64, what: &str) {
            eventually(90, what, || async {
                let state = via.cluster_state();
                if state.nodes.contains_key(&node) || !state.removed.contains(&node) {
                    return Err(format!("nodes {:?}", state.nodes.keys()));
                }
                let counts = settled_counts(via)?;
                if counts == vec![2, 2, 2] {
                    Ok(())
                } else {
                    Err(format!("{counts:?}"))
                }
            })
            .await
        }

        /// Waits until every replica of every shard reports the same applied index and
        /// digest through `node`, and `expect` points in all.
        async fn replicas_agree(node: &Node, expect: u64) {
            eventually(60, "replicas agree", || async {
                let status = node.status(true).await.map_err(|e| e.to_string())?;
                let mut total = 0;
                for c in &status.collections {
                    for sh in &c.shards {
                        let views: BTreeSet<(u64, Option<u64>)> = sh
                            .replicas
                            .iter()
                            .map(|r| {
                                r.report
                                    .as_ref()
                                    .map(|r| (r.applied, r.digest))
                                    .unwrap_or((0, None))
                            })
                            .collect();
                        if views.len() != 1 || views.iter().any(|(_, d)| d.is_none()) {
                            return Err(format!("shard {}: {views:?}", sh.shard));
                        }
                        total += sh.replicas[0].report.as_ref().map_or(0, |r| r.points);
                    }
                }
                if total != expect {
                    return Err(format!("{total} points, {expect} expected"));
                }
                Ok(())
            })
            .await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_joined_node_takes_replicas_and_a_drained_one_gives_them_back() {
            let mut cluster = TestCluster::start(3).await;
            let n1 = cluster.node(1).clone();
            n1.create_collection(config("c", 3, 2)).await.unwrap();
            n1.upsert("c", points(0..300)).await.unwrap();
            let new = cluster.join().await;
            assert_eq!(new, 4, "the cluster gives the next id");
            eventually(90, "node 4 takes its share", || async {
                let counts = settled_counts(&n1)?;
                let (min, max) = (counts.iter().min(), counts.iter().max());
                if counts.len() == 4
                    && counts[3] >= 1
                    && max.zip(min).is_some_and(|(a, b)| a - b <= 1)
                {
                    Ok(())
                } else {
                    Err(format!("{counts:?}"))
                }
            })
            .await;
            // Restarted at another address (a container recreated under a new host
            // name), it tells the cluster, which reaches it there for every group.
            let addr = cluster.restart_elsewhere(4).await;
            eventually(30, "the new address in the metadata", || async {
                let state = n1.cluster_state();
                match state.nodes.get(&4) {
                    Some(n) if n.addr == addr => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
            n1.upsert("c", points(300..310)).await.unwrap();
            n1.delete_points("c", (300..310).map(PointId::Num).collect())
                .await
                .unwrap();
            let n4 = cluster.node(4).clone();
            assert_eq!(n4.count("c", None, strong()).await.unwrap(), 300);
            replicas_agree(&n1, 300).await;
            // Drain it again: its replicas go back, then it leaves the cluster.
            n1.drain(4).await.unwrap();
            removed_and_settled(&n1, 4, "node 4 drained and removed").await;
            assert_eq!(n1.count("c", None, strong()).await.unwrap(), 300);
            replicas_agree(&n1, 300).await;
            // The drained node finds out, deletes what it held and stops serving.
            let removal = tokio::time::timeout(std::time::Duration::from_secs(60), n4.removed())
                .await
                .expect("the drained node learns it was removed");
            assert_eq!(removal, crate::Removal::Drained(4));
            assert!(n4.inner_host_replicas().is_empty());
            drop(n4);
            // Started again (with --join, as it was), it is told it was removed.
            let refused = cluster.try_restart(4).await.unwrap_err();
            assert!(
                matches!(&refused, shoal_core::Error::FailedPrecondition(m) if m.contains("removed")),
                "{refused:?}"
            );
            assert!(
                !cluster.data_dir(4).join("db").exists(),
                "its data is deleted"
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_dead_node_is_replaced_and_deletes_its_stale_replicas_when_it_returns() {
            let mut cluster = TestCluster::start(3).await;
            let n1 = cluster.node(1).clone();
            let four = cluster.join().await;
            n1.create_collection(config("c", 2, 3)).await.unwrap();
            n1.upsert("c", points(0..100)).await.unwrap();
            eventually(90, "every node holds replicas", || async {
                let counts = settled_counts(&n1)?;
                if counts.len() == 4 && counts.iter().all(|c| *c >= 1) {
                    Ok(())
                } else {
                    Err(format!("{counts:?}"))
                }
            })
            .await;
            // Node 3 (one of the first three) dies; down longer than the dead-node
            // timeout (5 s here), it is replaced.
            let dead = 3;
            cluster.stop(dead).await;
            removed_and_settled(&n1, dead, "node 3 replaced").await;
            n1.upsert("c", points(100..150)).await.unwrap();
            replicas_agree(&n1, 150).await;
            // It comes back with its old replicas: it finds out, deletes them, and
            // refuses to start over its data directory again.
            cluster.restart(dead).await;
            let removal = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                cluster.node(dead).removed(),
            )
            .await
            .expect("the returning node learns it was removed");
            assert_eq!(removal, crate::Removal::Replaced(dead));
            assert_eq!(
                crate::identity::removed_node(cluster.data_dir(dead)).unwrap(),
                Some(dead)
            );
            assert!(cluster.node(dead).inner_host_replicas().is_empty());
            let refused = cluster.try_restart(dead).await.unwrap_err();
            assert!(
                matches!(&refused, shoal_core::Error::FailedPrecondition(m) if m.contains("removed")),
                "{refused:?}"
            );
            // The cluster kept every write and the returning node changed nothing.
            n1.upsert("c", points(150..160)).await.unwrap();
            assert_eq!(n1.count("c", None, strong()).await.unwrap(), 160);
            replicas_agree(&n1, 160).await;
            let state = n1.cluster_state();
            assert!(state.hosted_by(dead).is_empty());
            assert!(state.nodes.contains_key(&four));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_move_by_hand_under_writes_loses_nothing() {
            let mut cluster =
                TestCluster::start_with(3, |o| o.elasticity.auto_rebalance = false).await;
            let n1 = cluster.node(1).clone();
            n1.create_collection(config("c", 1, 3)).await.unwrap();
            n1.upsert("c", points(0..200)).await.unwrap();
            let to = cluster.join().await;
            // Move the leader's replica: the leadership is handed over first.
            let leader = eventually(30, "a leader", || async {
                let st = n1.status(false).await.map_err(|e| e.to_string())?;
                st.collections[0].shards[0]
                    .leader
                    .ok_or("no leader".to_string())
            })
            .await;
            let stop = Arc::new(AtomicBool::new(false));
            let next = Arc::new(AtomicU64::new(1_000));
            let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let writer = {
                let (stop, next, acked) = (stop.clone(), next.clone(), acked.clone());
                let node = cluster.node(if leader == 2 { 3 } else { 2 }).clone();
                tokio::spawn(async move {
                    let mut failed = 0;
                    for _ in 0..2_000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let id = next.fetch_add(1, Ordering::SeqCst);
                        match node.upsert("c", points(id..id + 1)).await {
                            Ok(_) => acked.lock().push(id),
                            Err(_) => failed += 1,
                        }
                    }
                    failed
                })
            };
            let op = n1
                .move_replica("c", 0, Some(leader), Some(to))
                .await
                .unwrap();
            assert!(op > 0);
            eventually(90, "the move finishes", || async {
                let state = n1.cluster_state();
                let replicas = &state.collections["c"].shards[0].replicas;
                if state.operations.is_empty()
                    && replicas.contains(&to)
                    && !replicas.contains(&leader)
                {
                    Ok(())
                } else {
                    Err(format!("replicas {replicas:?}, ops {:?}", state.operations))
                }
            })
            .await;
            stop.store(true, Ordering::SeqCst);
            let failed = writer.await.unwrap();
            assert_eq!(failed, 0, "no write failed during the move");
            let acked = acked.lock().clone();
            assert!(!acked.is_empty());
            let ids: Vec<PointId> = acked.iter().map(|i| PointId::Num(*i)).collect();
            let got = cluster
                .node(to)
                .get("c", ids, false, false, strong())
                .await
                .unwrap();
            assert_eq!(got.len(), acked.len(), "every acknowledged write is there");
            replicas_agree(&n1, 200 + acked.len() as u64).await;
            // The source deleted its copy.
            eventually(30, "the source deleted its replica", || async {
                let reports = cluster
                    .node(leader)
                    .status(false)
                    .await
                    .map_err(|e| e.to_string())?;
                let still = reports.collections[0].shards[0]
                    .replicas
                    .iter()
                    .any(|r| r.node == leader);
                if still {
                    Err("still listed".into())
                } else {
                    Ok(())
                }
            })
            .await;
        }

        /// The ids of the `k` points of `ids` nearest `[q, 1]` (vectors `[i, 1]`, L2),
        /// ties by id: the exact answer.
        fn exact(ids: &BTreeSet<u64>, q: f32, k: usize) -> Vec<u64> {
            let mut by: Vec<(f32, u64)> = ids.iter().map(|i| ((*i as f32 - q).abs(), *i)).collect();
            by.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            by.into_iter().take(k).map(|(_, i)| i).collect()
        }

        async fn search_ids(node: &Node, q: f32, k: u32) -> Result<Vec<u64>, String> {
            let req = shoal_core::SearchRequest {
                vector: vec![q, 1.0],
                top_k: k,
                ef: None,
                filter: None,
                with_payload: false,
                with_vector: false,
            };
            let hits = node
                .search("c", req, strong())
                .await
                .map_err(|e| e.to_string())?;
            Ok(hits
                .iter()
                .map(|h| match h.id {
                    PointId::Num(n) => n,
                    _ => u64::MAX,
                })
                .collect())
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_reshard_under_writes_and_searches_loses_nothing() {
            // Exact scans, so every answer can be compared with the exact one (the
            // graph path of a split shard is tested in shoal-shard).
            let cluster = TestCluster::start_with(3, |o| o.shard.exact_threshold = 1_000_000).await;
            let n1 = cluster.node(1).clone();
            n1.create_collection(config("c", 1, 3)).await.unwrap();
            n1.upsert("c", points(0..300)).await.unwrap();
            let queries = [0.0f32, 17.5, 150.0, 299.0, 1_000.0];
            let before: BTreeSet<u64> = (0..300).collect();
            for q in queries {
                assert_eq!(search_ids(&n1, q, 10).await.unwrap(), exact(&before, q, 10));
            }
            let stop = Arc::new(AtomicBool::new(false));
            let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let writer = {
                let (stop, acked) = (stop.clone(), acked.clone());
                let node = cluster.node(2).clone();
                tokio::spawn(async move {
                    let mut failed = Vec::new();
                    for id in 1_000..1_600u64 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        // Two points a write: more shards than one after the split.
                        match node
                            .upsert(
                                "c",
                                vec![
                                    points(id..id + 1)[0].clone(),
                                    points(id + 5_000..id + 5_001)[0].clone(),
                                ],
                            )
                            .await
                        {
                            Ok(_) => acked.lock().extend([id, id + 5_000]),
                            Err(e) => failed.push(e.to_string()),
                        }
                    }
                    failed
                })
            };
            let searcher = {
                let stop = stop.clone();
                let node = cluster.node(3).clone();
                tokio::spawn(async move {
                    let (mut failed, mut doubled, mut done) = (Vec::new(), 0, 0);
                    for i in 0..3_000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        match search_ids(&node, (i % 300) as f32, 20).await {
                            Ok(ids) => {
                                let distinct: BTreeSet<u64> = ids.iter().copied().collect();
                                doubled += usize::from(distinct.len() != ids.len());
                                done += 1;
                            }
                            Err(e) => failed.push(e),
                        }
                    }
                    (failed, doubled, done)
                })
            };
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            n1.reshard("c", 4).await.unwrap();
            eventually(120, "the reshard finishes", || async {
                let state = n1.cluster_state();
                let cm = &state.collections["c"];
                if cm.shards.len() == 4 && state.operations.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} shards, ops {:?}",
                        cm.shards.len(),
                        state.operations
                    ))
                }
            })
            .await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            stop.store(true, Ordering::SeqCst);
            let failed = writer.await.unwrap();
            let (search_failed, doubled, searches) = searcher.await.unwrap();
            assert!(
                failed.is_empty(),
                "writes failed during the reshard: {failed:?}"
            );
            assert!(
                search_failed.is_empty(),
                "searches failed: {search_failed:?}"
            );
            assert_eq!(doubled, 0, "a search returned a point twice");
            assert!(searches > 0);
            let acked = acked.lock().clone();
            assert!(!acked.is_empty());
            let all: BTreeSet<u64> = (0..300).chain(acked.iter().copied()).collect();
            let ids: Vec<PointId> = all.iter().map(|i| PointId::Num(*i)).collect();
            let got = cluster
                .node(3)
                .get("c", ids, false, false, strong())
                .await
                .unwrap();
            assert_eq!(got.len(), all.len(), "every acknowledged point is there");
            assert_eq!(
                n1.count("c", None, strong()).await.unwrap(),
                all.len() as u64,
                "and nothing else"
            );
            for q in queries {
                assert_eq!(
                    search_ids(&n1, q, 10).await.unwrap(),
                    exact(&all, q, 10),
                    "query {q}"
                );
            }
            replicas_agree(&n1, all.len() as u64).await;
            // The parent's replicas are gone from every node.
            let state = n1.cluster_state();
            let cm = &state.collections["c"];
            let parent = cm.group(0);
            eventually(30, "the parent's replicas are deleted", || async {
                for id in 1..=3 {
                    if cluster.node(id).hosts(parent) {
                        return Err(format!("node {id} still hosts the parent"));
                    }
                }
                Ok(())
            })
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn shards_past_split_points_split_by_themselves() {
            let cluster =
                TestCluster::start_with(3, |o| o.elasticity.split_points = Some(150)).await;
            let n1 = cluster.node(1).clone();
            n1.create_collection(config("c", 1, 3)).await.unwrap();
            n1.upsert("c", points(0..400)).await.unwrap();
            // 400 points: split in two of ~200, each past 150: split again, then
            // four shards of ~100 stay.
            eventually(90, "the shards split down to the limit", || async {
                let state = n1.cluster_state();
                let cm = &state.collections["c"];
                if cm.shards.len() == 4 && state.operations.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} shards, ops {:?}",
                        cm.shards.len(),
                        state.operations
                    ))
                }
            })
            .await;
            assert_eq!(n1.count("c", None, strong()).await.unwrap(), 400);
            replicas_agree(&n1, 400).await;
        }
    }
}
