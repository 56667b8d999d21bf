//! The gRPC Raft transport: [`Network`] sends a group's Raft RPCs to peers,
//! [`RaftTransportService`] receives them and hands them to the right group in the
//! node's [`Registry`].
//!
//! All groups of a node share one lazily connected channel per peer address; requests
//! name their group. Requests and replies are openraft's own types, postcard-encoded:
//! the reply carries the whole `Result`, so a Raft-level refusal (e.g. a higher vote)
//! reaches the caller as openraft's `RemoteError`, while transport failures become
//! `Unreachable` (openraft backs off and retries).
//!
//! **Dead connections.** A peer connection that stops carrying packets (a partition, a
//! peer's host gone) must not outlive the fault: TCP alone would keep it, retransmitting
//! with exponential back-off, and deliver nothing for a long time after the network
//! heals. So every peer channel pings its connection over HTTP/2 every
//! [`KEEPALIVE_INTERVAL`], idle or not, and closes it when a ping is unanswered for
//! [`KEEPALIVE_TIMEOUT`]; the next call then connects afresh (a new TCP connection,
//! each attempt bounded by [`CONNECT_TIMEOUT`]). A call that fails in the transport
//! (no connection, connection closed) also drops the channel from [`Peers`], so the
//! call after it builds a new one rather than waiting behind the old one. TCP keepalive
//! ([`TCP_KEEPALIVE`]) backs the pings up for idle connections; TCP_NODELAY keeps small
//! Raft messages from waiting for Nagle's algorithm. The internal server
//! ([`internal_server`]) pings its clients the same way, so it drops connections whose
//! client is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
use crate::auth::{Credential, InternalSecurity, InternalTls};
use crate::log_store::{decode, encode};

/// Largest Raft message (log batches, snapshot chunks), both ways.
pub const MAX_RAFT_MESSAGE: usize = 256 * 1024 * 1024;

/// How often a peer connection is pinged (HTTP/2 PING), by both ends.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a ping may go unanswered before its connection is closed as dead. Two
/// intervals: a busy peer on two cores, or a ping queued behind a large message, is
/// not taken for a dead one.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one attempt to connect to a peer may take. A connection attempt whose SYN
/// was lost is abandoned and the next call starts a fresh one, rather than waiting for
/// the kernel's SYN retransmission back-off.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Idle time before TCP keepalive probes start on a peer connection (both ends).
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(10);

/// Interval between TCP keepalive probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// Unanswered TCP keepalive probes before the kernel closes the connection.
const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// A tonic server builder for a node's internal port (Raft and node-to-node calls),
/// with the keepalive of the module doc. Serve it with [`internal_incoming`].
/// With `tls`, connections are served with mutual TLS ([`InternalTls`]).
pub fn internal_server(
    tls: Option<&InternalTls>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    match tls {
        Some(tls) => server.tls_config(tls.server_config()),
        None => Ok(server),
    }
}

/// The connections accepted on a node's internal port: TCP_NODELAY and TCP keepalive.
pub fn internal_incoming(
    listener: tokio::net::TcpListener,
) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
        .with_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
        .with_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES))
}

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

    /// Every group hosted now, with its Raft instance.
    pub fn all(&self) -> Vec<(u64, Raft<TypeConfig>)> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(g, r)| (*g, r.clone()))
            .collect()
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
    channels: Arc<RwLock<HashMap<String, PeerChannel>>>,
    book: Arc<RwLock<HashMap<u64, String>>>,
    /// Numbers the channels created, so a failed call drops only the one it used.
    created: Arc<AtomicU64>,
    /// What every call to a peer carries to be let in (see [`crate::auth`]).
    credential: Credential,
    /// Mutual TLS to every peer, when configured.
    tls: Option<InternalTls>,
}

/// A channel with its serial number (see [`Peers::forget`]).
#[derive(Clone)]
pub struct PeerChannel {
    pub channel: Channel,
    pub serial: u64,
}

impl Peers {
    /// No channels yet; every call made through them is secured by `security`.
    pub fn new(security: &InternalSecurity) -> Peers {
        Peers {
            credential: Credential::new(security.secret.clone()),
            tls: security.tls.clone(),
            ..Peers::default()
        }
    }

    /// The interceptor that adds this node's cluster credential to a call.
    pub fn credential(&self) -> Credential {
        self.credential.clone()
    }

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
        Ok(self.peer_channel(addr)?.channel)
    }

    /// [`Peers::channel`], with the serial number to [`Peers::forget`] it by.
    pub fn peer_channel(&self, addr: &str) -> Result<PeerChannel, String> {
        if let Some(c) = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("invalid peer address {addr:?}: {e}"))?;
        if let Some(tls) = &self.tls {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            endpoint = endpoint
                .tls_config(tls.client_config(host))
                .map_err(|e| format!("TLS to peer {addr:?}: {e}"))?;
        }
        let channel = endpoint
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_keepalive(Some(TCP_KEEPALIVE))
            .tcp_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
            .tcp_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES))
            .connect_lazy();
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        // Another caller may have created one meanwhile: share it.
        let c = channels
            .entry(addr.to_string())
            .or_insert_with(|| PeerChannel {
                channel,
                serial: self.created.fetch_add(1, Ordering::Relaxed),
            });
        Ok(c.clone())
    }

    /// Drops the channel to `addr` numbered `serial`, if it is still the current one:
    /// the next call to `addr` connects through a new channel. Calls in flight on the
    /// old one finish (or fail) on their own.
    pub fn forget(&self, addr: &str, serial: u64) {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if channels.get(addr).is_some_and(|c| c.serial == serial) {
            channels.remove(addr);
            tracing::debug!(addr, "peer connection failed; reconnecting afresh");
        }
    }

    /// Pings node `id` at `addr` (a [`RaftRpc::Ping`]), waiting at most `timeout`:
    /// whether that node answered. A refusal the peer itself sent counts as an answer
    /// (an older node that does not know the ping refuses it as an unknown kind),
    /// except one saying it is another node or does not let this one in. A failed
    /// connection is dropped, as by every call (the next ping connects afresh).
    pub async fn ping(&self, id: u64, addr: &str, timeout: Duration) -> bool {
        let Ok(PeerChannel { channel, serial }) = self.peer_channel(addr) else {
            return false;
        };
        let mut request = tonic::Request::new(RaftRequest {
            group: 0,
            rpc: RaftRpc::Ping as i32,
            payload: Vec::new(),
            to: id,
        });
        request.set_timeout(timeout);
        let mut client = RaftTransportClient::with_interceptor(channel, self.credential());
        let call = tokio::time::timeout(timeout, client.call(request)).await;
        match call {
            Ok(Ok(_)) => true,
            Ok(Err(s)) => {
                if Peers::is_transport_failure(&s) {
                    self.forget(addr, serial);
                    return false;
                }
                // A status the peer sent has no local source.
                std::error::Error::source(&s).is_none()
                    && !matches!(
                        s.code(),
                        tonic::Code::FailedPrecondition
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                            | tonic::Code::Unauthenticated
                            | tonic::Code::PermissionDenied
                    )
            }
            Err(_) => false,
        }
    }

    /// Whether `status`, the outcome of a call through a peer channel, says the request
    /// never reached the peer: its connection was refused (nothing listens there). Any
    /// other failure may have come after the request was sent.
    pub fn never_sent(status: &tonic::Status) -> bool {
        let mut cause = std::error::Error::source(status);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// Whether `status`, the outcome of a call through a peer channel, is a failure
    /// of the connection itself (nothing to connect to, the connection closed or
    /// found dead by keepalive) rather than the peer's answer or a deadline.
    pub fn is_transport_failure(status: &tonic::Status) -> bool {
        // A status the peer sent has no local source; one made from a local error
        // (connect, hyper, h2) has. A deadline that passed is left to keepalive: a
        // slow peer is not a dead connection.
        let mut cause = std::error::Error::source(status);
        if cause.is_none() {
            return false;
        }
        while let Some(e) = cause {
            if e.is::<tonic::TimeoutExpired>() {
                return false;
            }
            cause = e.source();
        }
        true
    }
}

/// openraft's network factory for one group.
#[derive(Clone)]
pub struct Network {
    group: u64,
    peers: Peers,
    /// The labels of the group's metrics (`collection` and `shard` of a shard group).
    labels: Arc<Vec<metrics::Label>>,
}

impl Network {
    pub fn new(group: u64, peers: Peers) -> Network {
        Network {
            group,
            peers,
            labels: Arc::default(),
        }
    }

    /// The network of a shard group: its metrics (snapshots sent) carry the shard's
    /// collection and number.
    pub fn for_shard(group: u64, peers: Peers, collection: &str, shard: u32) -> Network {
        Network {
            labels: Arc::new(vec![
                metrics::Label::new("collection", collection.to_string()),
                metrics::Label::new("shard", shard.to_string()),
            ]),
            ..Network::new(group, peers)
        }
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
            labels: self.labels.clone(),
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
    labels: Arc<Vec<metrics::Label>>,
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
        let addr = self.peers.address_of(self.target, &self.recorded);
        let PeerChannel { channel, serial } = self
            .peers
            .peer_channel(&addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest {
            group: self.group,
            rpc: rpc as i32,
            payload,
            to: self.target,
        });
        request.set_timeout(option.hard_ttl());
        let mut client = RaftTransportClient::with_interceptor(channel, self.peers.credential())
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let reply = match client.call(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                if Peers::is_transport_failure(&s) {
                    self.peers.forget(&addr, serial);
                }
                return Err(RPCError::Unreachable(Unreachable::new(&s)));
            }
        };
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
        let done = rpc.done;
        let reply = self.call(RaftRpc::InstallSnapshot, &rpc, &option).await;
        if done && reply.is_ok() {
            // The last chunk accepted: one snapshot sent to a follower.
            metrics::counter!("shoal_raft_snapshot_sends_total", self.labels.iter()).increment(1);
        }
        reply
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
        if req.rpc == RaftRpc::Ping as i32 {
            return Ok(tonic::Response::new(RaftReply::default()));
        }
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
            Ok(RaftRpc::Ping) | Ok(RaftRpc::Unspecified) | Err(_) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    use shoal_proto::internal::v1::raft_transport_server::RaftTransportServer;

    fn request() -> tonic::Request<RaftRequest> {
        let mut r = tonic::Request::new(RaftRequest {
            group: 7,
            rpc: RaftRpc::Vote as i32,
            payload: vec![],
            to: 0,
        });
        // Far longer than keepalive takes to find a dead connection.
        r.set_timeout(Duration::from_secs(60));
        r
    }

    async fn call(peers: &Peers, addr: &str) -> (u64, Result<(), tonic::Status>) {
        let c = peers.peer_channel(addr).unwrap();
        let r = RaftTransportClient::new(c.channel)
            .call(request())
            .await
            .map(|_| ());
        (c.serial, r)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peers_answer_keeps_the_channel_and_a_failed_connection_drops_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = RaftTransportServer::new(RaftTransportService::new(Registry::default(), 1));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            internal_server(None)
                .unwrap()
                .add_service(service)
                .serve_with_incoming_shutdown(internal_incoming(listener), async move {
                    let _ = stopped.await;
                }),
        );
        let peers = Peers::default();
        // The peer answers (no such group): its refusal is no transport failure.
        let (first, r) = call(&peers, &addr).await;
        let status = r.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        assert!(!Peers::is_transport_failure(&status));
        assert_eq!(peers.peer_channel(&addr).unwrap().serial, first);
        // The peer goes away: the call fails in the transport.
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        let (serial, r) = call(&peers, &addr).await;
        assert_eq!(serial, first);
        let status = r.unwrap_err();
        assert!(Peers::is_transport_failure(&status), "{status:?}");
        if !Peers::never_sent(&status) {
            // The call raced the close: it went to the old connection before the
            // client saw it end (hyper: "connection closed"). Whether it was written
            // is unknown, so it is not "never sent"; the next call must reconnect.
            let (serial, r) = call(&peers, &addr).await;
            assert_eq!(serial, first);
            let retried = r.unwrap_err();
            assert!(Peers::is_transport_failure(&retried), "{retried:?}");
            // Nothing listens there any more: the request provably never left.
            assert!(Peers::never_sent(&retried), "{status:?} then {retried:?}");
        }
        // Forgetting an older channel than the current one changes nothing.
        peers.forget(&addr, first + 1);
        assert_eq!(peers.peer_channel(&addr).unwrap().serial, first);
        peers.forget(&addr, first);
        assert_ne!(peers.peer_channel(&addr).unwrap().serial, first);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ping_is_answered_by_the_node_named_and_by_no_other() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = RaftTransportServer::new(RaftTransportService::new(Registry::default(), 1));
        let server = tokio::spawn(
            internal_server(None)
                .unwrap()
                .add_service(service)
                .serve_with_incoming(internal_incoming(listener)),
        );
        let peers = Peers::default();
        let t = Duration::from_secs(5);
        assert!(peers.ping(1, &addr, t).await);
        // The node at that address is not node 2.
        assert!(!peers.ping(2, &addr, t).await);
        // A listener that never answers: no answer within the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        assert!(
            !peers
                .ping(1, &silent_addr, Duration::from_millis(300))
                .await
        );
        // Nothing listens: refused.
        held.abort();
        server.abort();
        let _ = server.await;
        peers.forget(&addr, peers.peer_channel(&addr).unwrap().serial);
        assert!(!peers.ping(1, &addr, t).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keepalive_fails_a_call_to_a_peer_that_stopped_answering() {
        // A peer that accepts connections and then says nothing, as a partitioned or
        // paused one: the call must fail by keepalive (UNAVAILABLE), not wait for
        // its deadline (a minute away; that would be CANCELLED).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let peers = Peers::default();
        // A deadline that passes first is no transport failure.
        let mut short = request();
        short.set_timeout(Duration::from_millis(100));
        let status = RaftTransportClient::new(peers.channel(&addr).unwrap())
            .call(short)
            .await
            .unwrap_err();
        assert!(!Peers::is_transport_failure(&status), "{status:?}");
        let (_, r) = call(&peers, &addr).await;
        let status = r.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(Peers::is_transport_failure(&status), "{status:?}");
        // The request went out on a connection that then died: it may have arrived.
        assert!(!Peers::never_sent(&status), "{status:?}");
        silent.abort();
    }
}
