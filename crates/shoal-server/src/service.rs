//! gRPC services `shoal.v1.Collections`, `shoal.v1.Points` and `shoal.v1.Cluster`
//! over a cluster node. Requests are converted (and their wire shape validated) in
//! `convert`; the node validates their content and routes them. Concurrent single
//! searches are coalesced into batches (`shoal_cluster::SearchCoalescer`).
//!
//! Every call arrives with its caller checked by `crate::auth::AuthLayer`; a call on
//! a collection checks the caller's access to that collection
//! ([`Authorized::collection`]) before anything else, so that a caller learns nothing
//! of collections it may not read. `Collections.List` and `Cluster.Status` show only
//! what the caller may see.
//!
//! A reply larger than `--max-message-bytes` is answered `RESOURCE_EXHAUSTED` naming
//! the limit ([`sized`]); tonic's own encoder would refuse it with `OUT_OF_RANGE`,
//! after the response headers, where no layer can remap it.

use prost::Message;
use shoal_cluster::{CoalesceOptions, Node, SearchCoalescer};
use shoal_core::Result;
use shoal_proto::v1::{
    self as pb, cluster_server::Cluster, collections_server::Collections, points_server::Points,
};
use tonic::{Request, Response, Status};

use crate::admission::ReplyBudget;
use crate::auth::{Authorized, Principal};
use crate::convert;
use crate::status::to_status;

/// `shoal.v1.Collections`.
pub struct CollectionsService {
    node: Node,
}

impl CollectionsService {
    pub fn new(node: Node) -> Self {
        CollectionsService { node }
    }
}

#[tonic::async_trait]
impl Collections for CollectionsService {
    async fn create(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        Authorized::of(&req)?;
        let config = convert::collection_config(req.into_inner()).map_err(to_status)?;
        let info = self
            .node
            .create_collection(config)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::collection_info(info)))
    }

    async fn get(
        &self,
        req: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let auth = Authorized::of(&req)?;
        let name = req.into_inner().name;
        auth.collection(&name)?;
        let info = self.node.collection(&name).await.map_err(to_status)?;
        Ok(Response::new(convert::collection_info(info)))
    }

    async fn list(
        &self,
        req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let auth = Authorized::of(&req)?;
        let all = self.node.list_collections().await.map_err(to_status)?;
        Ok(Response::new(pb::ListCollectionsResponse {
            collections: all
                .into_iter()
                .map(convert::collection_info)
                .filter(|c| {
                    c.config
                        .as_ref()
                        .is_some_and(|c| auth.principal.may_read(&c.name))
                })
                .collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        Authorized::of(&req)?;
        self.node
            .delete_collection(&req.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteCollectionResponse {}))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        Authorized::of(&req)?;
        let r = req.into_inner();
        if let Some(rf) = r.replication_factor {
            self.node
                .set_replication_factor(&r.name, rf)
                .await
                .map_err(to_status)?;
        }
        if let Some(shards) = r.shard_count {
            self.node
                .reshard(&r.name, shards)
                .await
                .map_err(to_status)?;
        }
        let info = self.node.collection(&r.name).await.map_err(to_status)?;
        Ok(Response::new(convert::collection_info(info)))
    }
}

/// `reply`, or `RESOURCE_EXHAUSTED` if its encoding is over `max` bytes (the
/// server's `--max-message-bytes`, which tonic enforces on replies too).
pub fn sized<T: Message>(reply: T, max: usize) -> Result<Response<T>, Status> {
    let len = reply.encoded_len();
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "reply: the answer is {len} bytes, over this server's --max-message-bytes of {max}; \
             ask for fewer results, or without vectors or payloads"
        )));
    }
    Ok(Response::new(reply))
}

/// `shoal.v1.Points`. Single searches go through the node's [`SearchCoalescer`].
pub struct PointsService {
    node: Node,
    searches: SearchCoalescer,
    max_reply_bytes: usize,
    replies: Option<ReplyBudget>,
}

impl PointsService {
    /// Must be called inside the tokio runtime that serves it (the coalescer runs its
    /// batches there). Replies over `max_reply_bytes` are refused ([`sized`]); with
    /// `replies`, each reserves its size there until sent.
    pub fn new(
        node: Node,
        coalesce: CoalesceOptions,
        max_reply_bytes: usize,
        replies: Option<ReplyBudget>,
    ) -> Self {
        PointsService {
            searches: SearchCoalescer::new(&node, coalesce),
            node,
            max_reply_bytes,
            replies,
        }
    }

    /// `reply` as a response, within the size limit and the pending replies' budget.
    fn reply<T: Message>(&self, reply: T) -> Result<Response<T>, Status> {
        let mut response = sized(reply, self.max_reply_bytes)?;
        if let Some(budget) = &self.replies {
            let permit = budget.reserve(response.get_ref().encoded_len())?;
            response.extensions_mut().insert(permit);
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl Points for PointsService {
    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let auth = Authorized::of(&req)?;
        let r = req.into_inner();
        auth.collection(&r.collection)?;
        let points = convert::points(r.points).map_err(to_status)?;
        let outcome = self
            .node
            .upsert(&r.collection, points)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::write_response(outcome)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let auth = Authorized::of(&req)?;
        let r = req.into_inner();
        auth.collection(&r.collection)?;
        let ids = convert::ids("ids", r.ids).map_err(to_status)?;
        let outcome = self
            .node
            .delete_points(&r.collection, ids)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::write_response(outcome)))
    }

    async fn get(
        &self,
        req: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let auth = Authorized::of(&req)?;
        let r = req.into_inner();
        auth.collection(&r.collection)?;
        let ids = convert::ids("ids", r.ids).map_err(to_status)?;
        let read = convert::read_options("read", r.read).map_err(to_status)?;
        let points = self
            .node
            .get(&r.collection, ids, r.with_payload, r.with_vector, read)
            .await
            .map_err(to_status)?;
        self.reply(pb::GetPointsResponse {
            points: points.into_iter().map(convert::retrieved).collect(),
        })
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let auth = Authorized::of(&req)?;
        let mut r = req.into_inner();
        auth.collection(&r.collection)?;
        let collection = std::mem::take(&mut r.collection);
        let read = convert::read_options("read", r.read.take()).map_err(to_status)?;
        let search = convert::search("", r).map_err(to_status)?;
        let hits = self
            .searches
            .search(&collection, search, read)
            .await
            .map_err(to_status)?;
        self.reply(convert::scored(hits))
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let auth = Authorized::of(&req)?;
        let r = req.into_inner();
        auth.collection(&r.collection)?;
        shoal_core::validate::search_batch_len(r.searches.len(), self.node.limits())
            .map_err(to_status)?;
        let read = convert::read_options("read", r.read).map_err(to_status)?;
        let searches = r
            .searches
            .into_iter()
            .enumerate()
            .map(|(i, s)| convert::search(&format!("searches[{i}]"), s))
            .collect::<Result<Vec<_>>>()
            .map_err(to_status)?;
        let results = self
            .node
            .search_batch(&r.collection, searches, read)
            .await
            .map_err(to_status)?;
        self.reply(pb::SearchBatchResponse {
            responses: results.into_iter().map(convert::scored).collect(),
        })
    }

    async fn scroll(
        &self,
        req: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let auth = Authorized::of(&req)?;
        let r = req.into_inner();
        auth.collection(&r.collection)?;
        let offset = r
            .offset
            .map(|o| convert::point_id("offset", Some(o)))
            .transpose()
            .map_err(to_status)?;
        let filter = r
            .filter
            .map(|f| convert::filter("filter", f))
            .transpose()
            .map_err(to_status)?;
        let read = convert::read_options("read", r.read).map_err(to_status)?;
        let limit = r.limit.unwrap_or(100);
        let (points, next) = self
            .node
            .scroll(
                &r.collection,
                offset,
                limit,
                filter,
                r.with_payload,
                r.with_vector,
                read,
            )
            .await
            .map_err(to_status)?;
        self.reply(pb::ScrollResponse {
            points: points.into_iter().map(convert::retrieved).collect(),
            next_offset: next.map(convert::point_id_to_pb),
        })
    }

    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let auth = Authorized::of(&req)?;
        let r = req.into_inner();
        auth.collection(&r.collection)?;
        let filter = r
            .filter
            .map(|f| convert::filter("filter", f))
            .transpose()
            .map_err(to_status)?;
        let read = convert::read_options("read", r.read).map_err(to_status)?;
        let count = self
            .node
            .count(&r.collection, filter, read)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CountResponse { count }))
    }
}

/// `shoal.v1.Cluster`.
pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    pub fn new(node: Node) -> Self {
        ClusterService { node }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let auth = Authorized::of(&req)?;
        let digests = req.into_inner().digests;
        if digests && !auth.principal.is_admin() {
            return Err(Status::permission_denied(
                "Cluster.Status: digests need the admin role",
            ));
        }
        let s = self.node.status(digests).await.map_err(to_status)?;
        let mut status = convert::cluster_status(s);
        redact(&mut status, &auth.principal);
        Ok(Response::new(status))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        Authorized::of(&req)?;
        let node = req.into_inner().node;
        if node == 0 {
            return Err(Status::invalid_argument("node: node ids start at 1"));
        }
        self.node.drain(node).await.map_err(to_status)?;
        Ok(Response::new(pb::DrainResponse {}))
    }

    async fn move_replica(
        &self,
        req: Request<pb::MoveReplicaRequest>,
    ) -> Result<Response<pb::MoveReplicaResponse>, Status> {
        Authorized::of(&req)?;
        let r = req.into_inner();
        if r.from.is_none() && r.to.is_none() {
            return Err(Status::invalid_argument(
                "from, to: give the node that gives up a replica, the node that takes one, or both",
            ));
        }
        let operation = self
            .node
            .move_replica(&r.collection, r.shard, r.from, r.to)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::MoveReplicaResponse { operation }))
    }

    async fn rebalance(
        &self,
        req: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceResponse>, Status> {
        Authorized::of(&req)?;
        let planned = self
            .node
            .rebalance(req.into_inner().dry_run)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RebalanceResponse {
            planned: planned
                .into_iter()
                .map(|p| pb::PlannedOperation {
                    description: p.description,
                    reason: p.reason,
                })
                .collect(),
        }))
    }
}

/// `Cluster.Status` as a caller other than an admin sees it: no node addresses or
/// error texts (they name internal addresses), no digests; a collection-scoped token
/// sees only the collections it may read, and no operations (they name collections).
pub fn redact(s: &mut pb::ClusterStatus, caller: &Principal) {
    if caller.is_admin() {
        return;
    }
    // A failure's reason names paths and collections: others learn only that.
    let redact_failure = |f: &mut String| {
        if !f.is_empty() {
            *f = "failed".into();
        }
    };
    for n in &mut s.nodes {
        n.address.clear();
        n.error.clear();
        redact_failure(&mut n.failure);
    }
    for c in &mut s.collections {
        for sh in &mut c.shards {
            for r in &mut sh.replicas {
                r.digest = None;
                redact_failure(&mut r.failure);
            }
        }
    }
    if !caller.sees_everything() {
        s.collections.retain(|c| caller.may_read(&c.name));
        s.operations.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_redacted_for_all_but_admins() {
        use crate::auth::{Grant, Level, Role};
        let full = pb::ClusterStatus {
            node_id: 1,
            nodes: vec![pb::NodeStatus {
                id: 1,
                address: "10.0.0.1:7471".into(),
                error: "unreachable: 10.0.0.1:7471 refused".into(),
                ..Default::default()
            }],
            collections: ["docs", "secret"]
                .into_iter()
                .map(|name| pb::CollectionStatus {
                    name: name.into(),
                    shards: vec![pb::ShardStatus {
                        replicas: vec![pb::ReplicaStatus {
                            node: 1,
                            digest: Some("abc".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            operations: vec![pb::OperationStatus {
                id: 7,
                description: "move secret/0 from node 1 to node 2".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut s = full.clone();
        redact(&mut s, &Principal::admin());
        assert_eq!(s, full);
        let mut s = full.clone();
        redact(
            &mut s,
            &Principal {
                grant: Grant::Role(Role::ReadOnly),
            },
        );
        assert_eq!(s.nodes[0].address, "");
        assert_eq!(s.nodes[0].error, "");
        assert_eq!(s.collections.len(), 2);
        assert_eq!(s.collections[1].shards[0].replicas[0].digest, None);
        assert_eq!(s.operations.len(), 1);
        let mut s = full.clone();
        redact(
            &mut s,
            &Principal {
                grant: Grant::Collections([("docs".to_string(), Level::Read)].into()),
            },
        );
        assert_eq!(s.collections.len(), 1);
        assert_eq!(s.collections[0].name, "docs");
        assert!(s.operations.is_empty());
    }

    #[test]
    fn oversized_replies_are_resource_exhausted() {
        let reply = pb::SearchResponse {
            results: (0..100)
                .map(|i| pb::ScoredPoint {
                    id: Some(convert::point_id_to_pb(shoal_core::PointId::Num(i))),
                    score: 1.0,
                    vector: vec![0.5; 64],
                    ..Default::default()
                })
                .collect(),
        };
        let len = reply.encoded_len();
        assert!(sized(reply.clone(), len).is_ok());
        let s = sized(reply, len - 1).unwrap_err();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().contains("--max-message-bytes"),
            "{}",
            s.message()
        );
    }
}
