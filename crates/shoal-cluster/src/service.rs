//! `shoal.internal.v1.ClusterInternal`: the receiving side of node-to-node calls.
//! Each handler decodes its postcard payload, serves it from this node only (never
//! forwarding further, so calls cannot loop) and encodes `Result<T, Refusal>`.

use shoal_proto::internal::v1::{GroupCall, Payload, cluster_internal_server::ClusterInternal};
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::wire::{ReadCall, Refusal, decode, encode};

/// The internal service of one node.
#[derive(Clone)]
pub struct ClusterInternalService {
    node: Node,
}

impl ClusterInternalService {
    pub fn new(node: Node) -> Self {
        ClusterInternalService { node }
    }
}

fn reply<T: serde::Serialize>(r: Result<T, Refusal>) -> Result<Response<Payload>, Status> {
    let payload = encode(&r).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Payload { payload }))
}

fn bad(e: shoal_core::Error) -> Status {
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
        let t = budget(&req, self.node.inner.timeout);
        let call = req.into_inner();
        let cmd = decode(&call.payload).map_err(bad)?;
        reply(self.node.propose_local(call.group, cmd, t).await)
    }

    async fn read(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let t = budget(&req, self.node.inner.timeout);
        let call = req.into_inner();
        let read: ReadCall = decode(&call.payload).map_err(bad)?;
        reply(self.node.read_local(call.group, read, t).await)
    }

    async fn elect(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let call = req.into_inner();
        reply(self.node.elect_local(call.group).await)
    }

    async fn status(&self, req: Request<GroupCall>) -> Result<Response<Payload>, Status> {
        let digests: bool = decode(&req.into_inner().payload).map_err(bad)?;
        reply(
            self.node
                .local_reports(digests)
                .await
                .map_err(Refusal::Error),
        )
    }
}
