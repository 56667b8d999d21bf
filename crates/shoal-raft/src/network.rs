//! The gRPC Raft transport: [`Network`] sends a group's Raft RPCs to peers,
//! [`RaftTransportService`] receives them and hands them to the right group in the
//! node's [`Registry`].
//!
//! All groups of a node share one lazily connected channel per peer address; requests
//! name their group. Requests and replies are openraft's own types, postcard-encoded:
//! the reply carries the whole `Result`, so a Raft-level refusal (e.g. a higher vote)
//! reaches the caller as openraft's `RemoteError`, while transport failures become
//! `Unreachable` (openraft backs off and retries).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_proto::internal::v1::{
    RaftReply, RaftRequest, RaftRpc, raft_transport_client::RaftTransportClient,
    raft_transport_server::RaftTransport,
};
use tonic::transport::Channel;

use crate::TypeConfig;
use crate::log_store::{decode, encode};

/// Largest Raft message (log batches, snapshot chunks), both ways.
pub const MAX_RAFT_MESSAGE: usize = 256 * 1024 * 1024;

/// The Raft groups a node hosts, by group id.
#[derive(Clone, Default)]
pub struct Registry {
    groups: Arc<RwLock<HashMap<u64, Raft<TypeConfig>>>>,
}

impl Registry {
    pub fn insert(&self, group: u64, raft: Raft<TypeConfig>) {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, raft);
    }

    pub fn get(&self, group: u64) -> Option<Raft<TypeConfig>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    pub fn remove(&self, group: u64) -> Option<Raft<TypeConfig>> {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group)
    }
}

/// One channel per peer address, shared by every group of the node, and the address
/// book: each node's current address as the metadata has it. A group's membership
/// records the address a member had when it was added; a node that comes back at
/// another address (a container recreated with a new host name) is reached at the
/// address the book gives, for every group.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<RwLock<HashMap<String, Channel>>>,
    book: Arc<RwLock<HashMap<u64, String>>>,
}

impl Peers {
    /// Replaces the address book.
    pub fn set_addresses(&self, addresses: impl IntoIterator<Item = (u64, String)>) {
        *self.book.write().unwrap_or_else(|p| p.into_inner()) = addresses.into_iter().collect();
    }

    /// Node `id`'s address per the book, else `recorded`.
    pub fn address_of(&self, id: u64, recorded: &str) -> String {
        self.book
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_else(|| recorded.to_string())
    }

    /// The channel to `addr` (`host:port`), created (lazily connecting) on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        if let Some(c) = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return Ok(c.clone());
        }
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("invalid peer address {addr:?}: {e}"))?
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect_lazy();
        self.channels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// openraft's network factory for one group.
#[derive(Clone)]
pub struct Network {
    group: u64,
    peers: Peers,
}

impl Network {
    pub fn new(group: u64, peers: Peers) -> Network {
        Network { group, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            group: self.group,
            peers: self.peers.clone(),
            recorded: node.addr.clone(),
        }
    }
}

/// Sends one group's RPCs to one peer, at its address of the moment (see [`Peers`]).
pub struct PeerClient {
    target: u64,
    group: u64,
    peers: Peers,
    /// The address the group's membership recorded for the peer.
    recorded: String,
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: RaftRpc,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self
            .peers
            .channel(&self.peers.address_of(self.target, &self.recorded))
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest {
            group: self.group,
            rpc: rpc as i32,
            payload,
            to: self.target,
        });
        request.set_timeout(option.hard_ttl());
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let reply = client
            .call(request)
            .await
            .map_err(|s| RPCError::Unreachable(Unreachable::new(&s)))?
            .into_inner();
        let result: Result<Resp, RaftError<u64, E>> =
            decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        self.call(RaftRpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(RaftRpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.call(RaftRpc::Vote, &rpc, &option).await
    }
}

/// The receiving side: dispatches each request to its group.
#[derive(Clone)]
pub struct RaftTransportService {
    registry: Registry,
    node: u64,
}

impl RaftTransportService {
    /// The transport of node `node`, delivering to the groups in `registry`.
    pub fn new(registry: Registry, node: u64) -> RaftTransportService {
        RaftTransportService { registry, node }
    }
}

/// Refuses a request meant for another node: an address may have passed from a
/// node that left to a new one, whose groups must not take the old one's messages.
pub fn check_recipient(me: u64, to: u64) -> Result<(), tonic::Status> {
    if to != 0 && to != me {
        return Err(tonic::Status::failed_precondition(format!(
            "this is node {me}, not node {to}"
        )));
    }
    Ok(())
}

fn bad_request(e: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::invalid_argument(format!("payload: {e}"))
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn call(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req = request.into_inner();
        check_recipient(self.node, req.to)?;
        let raft = self.registry.get(req.group).ok_or_else(|| {
            tonic::Status::not_found(format!("group {} is not hosted here", req.group))
        })?;
        let payload = match RaftRpc::try_from(req.rpc) {
            Ok(RaftRpc::AppendEntries) => {
                let r = decode(&req.payload).map_err(bad_request)?;
                encode(&raft.append_entries(r).await)
            }
            Ok(RaftRpc::Vote) => {
                let r = decode(&req.payload).map_err(bad_request)?;
                encode(&raft.vote(r).await)
            }
            Ok(RaftRpc::InstallSnapshot) => {
                let r = decode(&req.payload).map_err(bad_request)?;
                encode(&raft.install_snapshot(r).await)
            }
            _ => {
                return Err(tonic::Status::invalid_argument(format!(
                    "rpc: unknown kind {}",
                    req.rpc
                )));
            }
        }
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(RaftReply { payload }))
    }
}
