//! gRPC services `shoal.v1.Collections` and `shoal.v1.Points` over the engine.
//!
//! Nothing here blocks a tokio worker: writes (which fsync) run on the blocking pool;
//! reads and searches run on the engine's rayon pool and are awaited through a oneshot.

use std::sync::Arc;

use shoal_core::Result;
use shoal_engine::Engine;
use shoal_proto::v1::{self as pb, collections_server::Collections, points_server::Points};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::status::to_status;

/// Runs `f` on the engine's rayon pool.
async fn on_pool<T, F>(engine: &Arc<Engine>, f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let e = engine.clone();
    engine.pool().spawn(move || {
        let _ = tx.send(f(&e));
    });
    rx.await
        .map_err(|_| Status::internal("the request's worker failed; see the server log"))?
        .map_err(to_status)
}

/// Runs `f` on tokio's blocking pool (for work that waits on fsync).
async fn blocking<T, F>(engine: &Arc<Engine>, f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> Result<T> + Send + 'static,
{
    let e = engine.clone();
    tokio::task::spawn_blocking(move || f(&e))
        .await
        .map_err(|_| Status::internal("the request's worker failed; see the server log"))?
        .map_err(to_status)
}

/// `shoal.v1.Collections`.
pub struct CollectionsService {
    engine: Arc<Engine>,
}

impl CollectionsService {
    pub fn new(engine: Arc<Engine>) -> Self {
        CollectionsService { engine }
    }
}

#[tonic::async_trait]
impl Collections for CollectionsService {
    async fn create(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let config = convert::collection_config(req.into_inner()).map_err(to_status)?;
        let info = blocking(&self.engine, move |e| e.create_collection(config)).await?;
        Ok(Response::new(convert::collection_info(info)))
    }

    async fn get(
        &self,
        req: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let info = self
            .engine
            .collection(&req.into_inner().name)
            .map_err(to_status)?;
        Ok(Response::new(convert::collection_info(info)))
    }

    async fn list(
        &self,
        _req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        Ok(Response::new(pb::ListCollectionsResponse {
            collections: self
                .engine
                .list_collections()
                .into_iter()
                .map(convert::collection_info)
                .collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let name = req.into_inner().name;
        blocking(&self.engine, move |e| e.delete_collection(&name)).await?;
        Ok(Response::new(pb::DeleteCollectionResponse {}))
    }
}

/// `shoal.v1.Points`.
pub struct PointsService {
    engine: Arc<Engine>,
}

impl PointsService {
    pub fn new(engine: Arc<Engine>) -> Self {
        PointsService { engine }
    }
}

#[tonic::async_trait]
impl Points for PointsService {
    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = req.into_inner();
        let points = convert::points(r.points).map_err(to_status)?;
        let count = blocking(&self.engine, move |e| e.upsert(&r.collection, points)).await?;
        Ok(Response::new(pb::WriteResponse { count }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = req.into_inner();
        let ids = convert::ids("ids", r.ids).map_err(to_status)?;
        let count = blocking(&self.engine, move |e| e.delete_points(&r.collection, ids)).await?;
        Ok(Response::new(pb::WriteResponse { count }))
    }

    async fn get(
        &self,
        req: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let r = req.into_inner();
        let ids = convert::ids("ids", r.ids).map_err(to_status)?;
        let points = on_pool(&self.engine, move |e| {
            e.get(&r.collection, ids, r.with_payload, r.with_vector)
        })
        .await?;
        Ok(Response::new(pb::GetPointsResponse {
            points: points.into_iter().map(convert::retrieved).collect(),
        }))
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let r = req.into_inner();
        let collection = r.collection.clone();
        let search = convert::search("", r).map_err(to_status)?;
        let hits = on_pool(&self.engine, move |e| e.search(&collection, search)).await?;
        Ok(Response::new(convert::scored(hits)))
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let r = req.into_inner();
        shoal_core::validate::search_batch_len(r.searches.len(), self.engine.limits())
            .map_err(to_status)?;
        let searches = r
            .searches
            .into_iter()
            .enumerate()
            .map(|(i, s)| convert::search(&format!("searches[{i}]"), s))
            .collect::<Result<Vec<_>>>()
            .map_err(to_status)?;
        let results = on_pool(&self.engine, move |e| {
            e.search_batch(&r.collection, searches)
        })
        .await?;
        Ok(Response::new(pb::SearchBatchResponse {
            responses: results.into_iter().map(convert::scored).collect(),
        }))
    }

    async fn scroll(
        &self,
        req: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let r = req.into_inner();
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
        let limit = r.limit.unwrap_or(100);
        let (points, next) = on_pool(&self.engine, move |e| {
            e.scroll(
                &r.collection,
                offset,
                limit,
                filter,
                r.with_payload,
                r.with_vector,
            )
        })
        .await?;
        Ok(Response::new(pb::ScrollResponse {
            points: points.into_iter().map(convert::retrieved).collect(),
            next_offset: next.map(convert::point_id_to_pb),
        }))
    }

    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let r = req.into_inner();
        let filter = r
            .filter
            .map(|f| convert::filter("filter", f))
            .transpose()
            .map_err(to_status)?;
        let count = on_pool(&self.engine, move |e| e.count(&r.collection, filter)).await?;
        Ok(Response::new(pb::CountResponse { count }))
    }
}
