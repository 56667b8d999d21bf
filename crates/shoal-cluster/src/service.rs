//! `shoal.internal.v1.ClusterInternal`: the receiving side of node-to-node calls.
//! Each handler decodes its postcard payload, serves it from this node's [`Host`]
//! only (never forwarding further, so calls cannot loop) and encodes
//! `Result<T, ClusterError>`. A payload that does not decode is the caller's bug
//! (or another version): `INVALID_ARGUMENT`, the only gRPC error besides transport.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::internal::v1::{GroupCall, Payload, cluster_internal_server::ClusterInternal};
use tonic::{Request, Response, Status};

use shoal_raft::network::check_recipient;

use crate::admin::Admin;
use crate::balance::Balancer;
use crate::error::ClusterError;
use crate::host::Host;
use crate::router::Router;
use crate::wire::{JoinRequest, MembershipChange, ReadCall, SplitCall, decode, encode};

/// The internal service of one node.
#[derive(Clone)]
pub(crate) struct ClusterInternalService {
    host: Arc<Host>,
    router: Arc<Router>,
    admin: Arc<Admin>,
    timeout: Duration,
}

impl ClusterInternalService {
    pub fn new(router: Arc<Router>, admin: Arc<Admin>) -> Self {
        ClusterInternalService {
            host: router.host().clone(),
            timeout: router.timeout(),
            router,
            admin,
        }
    }
}

impl ClusterInternalService {
    /// The call, if it is meant for this node.
    fn for_me(&self, req: Request<GroupCall>) -> Result<GroupCall, Status> {
        let call = req.into_inner();
        check_recipient(self.host.id, call.to)?;
        Ok(call)
    }
}

fn reply<T: serde::Serialize>(r: Result<T, ClusterError>) -> Result<Response<Payload>, Status> {
    let payload = encode(&r).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Payload { payload }))
}

fn bad(e: ClusterError) -> Status {
    Status::invalid_argument(format!("payload: {e}"))
}

/// What is left of the caller's deadline (gRPC `grpc-timeout`), capped by ours.
fn budget<T>(req: &Request<T>, ours: std::time::Duration) -> std::time::Duration {
    req.metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| t.min(ours))
        .unwrap_or(ours)
}

fn parse_grpc_timeout(v: &str) -> Option<std::time::Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(n * 3600),
        "M" => std::time::Duration::from_secs(n * 60),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl ClusterInternal for ClusterInternalService {
    async fn propose(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let t = budget(&req, self.timeout);
        let call = self.for_me(req)?;
        let cmd = decode(&call.payload).map_err(bad)?;
        reply(self.host.propose_local(call.group, cmd, t).await)
    }

    async fn read(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let t = budget(&req, self.timeout);
        let call = self.for_me(req)?;
        let read: ReadCall = decode(&call.payload).map_err(bad)?;
        reply(self.host.read_local(call.group, read, t).await)
    }

    async fn elect(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let call = self.for_me(req)?;
        reply(self.host.elect_local(call.group).await)
    }

    async fn status(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let digests: bool = decode(&self.for_me(req)?.payload).map_err(bad)?;
        reply(self.host.report(digests).await)
    }

    async fn membership(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let t = budget(&req, self.timeout);
        let call = self.for_me(req)?;
        let change: MembershipChange = decode(&call.payload).map_err(bad)?;
        reply(self.host.membership_local(call.group, change, t).await)
    }

    async fn transfer(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let call = self.for_me(req)?;
        let to: u64 = decode(&call.payload).map_err(bad)?;
        let balancer = Balancer::new(self.router.clone());
        reply(balancer.hand_over(call.group, to).await.map(|_| ()))
    }

    async fn split(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let call = self.for_me(req)?;
        let split: SplitCall = decode(&call.payload).map_err(bad)?;
        reply(self.host.split_local(call.group, split).await)
    }

    type ExportStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<Payload, Status>> + Send + 'static>>;

    async fn export(
        &self,
        req: Request<GroupCall>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let t = budget(&req, self.timeout);
        let call = self.for_me(req)?;
        let frames = match self.host.export_local(call.group, t).await {
            Ok(export) => export.into_wire(),
            Err(e) => {
                // A refusal (not the leader, not hosted) is the stream's one frame.
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let m = encode(&Err::<crate::export::ExportFrame, _>(e))
                    .map_err(|e| Status::internal(e.to_string()))?;
                let _ = tx.send(m).await;
                rx
            }
        };
        let stream = futures::stream::unfold(frames, |mut rx| async move {
            rx.recv().await.map(|payload| (Ok(Payload { payload }), rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn join(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let call = self.for_me(req)?;
        let join: JoinRequest = decode(&call.payload).map_err(bad)?;
        reply(self.admin.register_node(join).await)
    }
}
