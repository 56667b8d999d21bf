//! Test support: nodes in one process, each serving its internal port on loopback, so
//! routing, forwarding and failover are tested without spawning `shoal` processes.
//! Built for this crate's tests and, with the `testing` feature, for other crates'.
//!
//! Timing is faster than the defaults but well above a loaded two-core machine's
//! scheduling hiccups. Everything a test starts is stopped when it is dropped.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shoal_core::Limits;
use shoal_shard::ShardOptions;
use tokio::task::JoinHandle;

use shoal_core::{CollectionConfig, Metric, Point, PointId};

use crate::{Consistency, Node, NodeOptions, RaftTiming, ReadOptions};

/// Raft timing of test nodes.
pub fn timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 100,
        election_min_ms: 500,
        election_max_ms: 1_000,
        balance_ms: 0,
        ..RaftTiming::default()
    }
}

/// A collection of 2-d L2 vectors.
pub fn config(name: &str, shards: u32, rf: u32) -> CollectionConfig {
    CollectionConfig {
        name: name.into(),
        dim: 2,
        metric: Metric::L2,
        shard_count: shards,
        replication_factor: rf,
        hnsw: Default::default(),
    }
}

/// Points with ids `ids`, the vector of `i` being `[i, 1]`.
pub fn points(ids: std::ops::Range<u64>) -> Vec<Point> {
    ids.map(|i| Point {
        id: PointId::Num(i),
        vector: vec![i as f32, 1.0],
        payload: Default::default(),
    })
    .collect()
}

/// STRONG read options.
pub fn strong() -> ReadOptions {
    ReadOptions {
        consistency: Consistency::Strong,
        token: None,
    }
}

/// Options of node `id` over `dir`, with `peers` (empty: a cluster of one).
pub fn options(id: u64, dir: &Path, peers: BTreeMap<u64, String>) -> NodeOptions {
    NodeOptions {
        node_id: id,
        advertise: peers
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:1".into()),
        peers,
        data_dir: dir.to_path_buf(),
        limits: Limits::default(),
        shard: ShardOptions {
            exact_threshold: 0,
            ..ShardOptions::default()
        },
        search_threads: 2,
        timing: timing(),
        request_timeout: Duration::from_secs(10),
        join: None,
        internal: Default::default(),
        elasticity: crate::Elasticity {
            interval: Duration::from_millis(200),
            dead_node_timeout: Duration::from_secs(5),
            ..crate::Elasticity::default()
        },
    }
}

/// A node alone: a cluster of one, serving nothing on the network.
pub async fn single_node(dir: &Path) -> Node {
    Node::start(options(1, dir, BTreeMap::new()))
        .await
        .expect("start a single node")
}

struct Member {
    node: Node,
    stop: tokio::sync::oneshot::Sender<()>,
    server: JoinHandle<()>,
}

/// Nodes `1..=n` of one cluster in this process, each with its internal services
/// on its own loopback port. See the module doc.
pub struct TestCluster {
    members: BTreeMap<u64, Member>,
    peers: BTreeMap<u64, String>,
    /// Nodes that joined with `--join` (they restart the same way).
    joined: std::collections::BTreeSet<u64>,
    dirs: BTreeMap<u64, std::path::PathBuf>,
    tweak: fn(&mut NodeOptions),
    dir: tempfile::TempDir,
    /// Ports of silenced nodes, held by a task that accepts and never answers.
    silent: BTreeMap<u64, JoinHandle<()>>,
}

impl TestCluster {
    /// Starts `n` nodes and waits until the metadata group has a leader.
    pub async fn start(n: u64) -> TestCluster {
        Self::start_with(n, |_| {}).await
    }

    /// [`TestCluster::start`], with `tweak` applied to every node's options (also
    /// of nodes that join or restart later).
    pub async fn start_with(n: u64, tweak: fn(&mut NodeOptions)) -> TestCluster {
        #[cfg(test)]
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            listeners.insert(id, l);
        }
        let peers: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().expect("addr").to_string()))
            .collect();
        let mut cluster = TestCluster {
            members: BTreeMap::new(),
            peers,
            joined: Default::default(),
            dirs: BTreeMap::new(),
            tweak,
            dir,
            silent: BTreeMap::new(),
        };
        for (id, listener) in listeners {
            cluster.launch(id, listener).await;
        }
        for id in 1..=n {
            cluster
                .node(id)
                .wait_for_metadata_leader(Duration::from_secs(30))
                .await;
        }
        cluster
    }

    async fn launch(&mut self, id: u64, listener: tokio::net::TcpListener) {
        self.try_launch(id, listener).await.expect("start node");
    }

    async fn try_launch(
        &mut self,
        id: u64,
        listener: tokio::net::TcpListener,
    ) -> Result<(), shoal_core::Error> {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| self.dir.path().join(format!("n{id}")))
            .clone();
        let mut opts = options(id, &dir, self.peers.clone());
        if self.joined.contains(&id) {
            opts.peers = BTreeMap::new();
            opts.join = Some(self.peers[&1].clone());
            opts.advertise = self.peers[&id].clone();
        }
        (self.tweak)(&mut opts);
        let node = Node::start(opts).await?;
        assert_eq!(node.id(), id, "the node runs under its id");
        self.serve(id, node, listener);
        Ok(())
    }

    fn serve(&mut self, id: u64, node: Node, listener: tokio::net::TcpListener) {
        let routes = node.internal_routes();
        let mut node_server = node.internal_server().expect("internal server");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = node_server
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    shoal_raft::network::internal_incoming(listener),
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        self.members.insert(id, Member { node, stop, server });
    }

    /// Starts a new node that joins through node 1 (as `shoal serve --join`); returns
    /// the id the cluster gave it.
    pub async fn join(&mut self) -> u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let dir = self
            .dir
            .path()
            .join(format!("joined-{}", self.joined.len()));
        let mut opts = options(0, &dir, BTreeMap::new());
        opts.join = Some(self.peers[&1].clone());
        opts.advertise = addr.clone();
        (self.tweak)(&mut opts);
        let node = Node::start(opts).await.expect("join");
        let id = node.id();
        self.peers.insert(id, addr);
        self.joined.insert(id);
        self.dirs.insert(id, dir);
        self.serve(id, node, listener);
        id
    }

    /// Node `id`. Panics if it is stopped.
    pub fn node(&self, id: u64) -> &Node {
        &self.members.get(&id).expect("a running node").node
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.dirs[&id]
    }

    /// The ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    /// Stops node `id` as a crash would look from outside: its port stops answering
    /// and its groups stop. Its data stays for [`TestCluster::restart`].
    pub async fn stop(&mut self, id: u64) {
        if let Some(m) = self.members.remove(&id) {
            let _ = m.node.shutdown().await;
            let _ = m.stop.send(());
            let server = m.server;
            tokio::pin!(server);
            // Closing connections waits for calls in flight; those end within the
            // request timeout at most.
            if tokio::time::timeout(Duration::from_secs(15), &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }

    /// Stops node `id` and keeps its port open but silent, as a paused process or a
    /// node cut off by dropped packets looks from outside: connections are accepted
    /// (by the kernel) and nothing ever answers. [`TestCluster::restart`] ends it.
    pub async fn silence(&mut self, id: u64) {
        self.stop(id).await;
        let listener = self.rebind(id).await;
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        self.silent.insert(id, holder);
    }

    /// Binds node `id`'s address again, retrying while the OS releases it.
    async fn rebind(&mut self, id: u64) -> tokio::net::TcpListener {
        if let Some(holder) = self.silent.remove(&id) {
            holder.abort();
            let _ = holder.await;
        }
        let addr = self.peers[&id].clone();
        let mut tries = 0;
        loop {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "rebinding");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        }
    }

    /// Starts node `id` again over its data, on the same address.
    pub async fn restart(&mut self, id: u64) {
        self.try_restart(id).await.expect("restart node");
    }

    /// Starts node `id` again over its data on a new address (as a container
    /// recreated under a new host name would); returns the new address.
    pub async fn restart_elsewhere(&mut self, id: u64) -> String {
        self.stop(id).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        self.peers.insert(id, addr.clone());
        self.try_launch(id, listener).await.expect("restart node");
        addr
    }

    /// [`TestCluster::restart`], returning the node's refusal to start.
    pub async fn try_restart(&mut self, id: u64) -> Result<(), shoal_core::Error> {
        self.stop(id).await;
        // The port was ours (or a silenced node's) a moment ago.
        let listener = self.rebind(id).await;
        self.try_launch(id, listener).await
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `secs` seconds;
/// panics with `what` (and the last value seen) if it never does.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match check().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs} s; last: {last}");
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for m in self.members.values() {
            m.server.abort();
        }
        for holder in self.silent.values() {
            holder.abort();
        }
    }
}
