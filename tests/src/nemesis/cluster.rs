//! # The cluster under test: `shoal` processes in network namespaces
//!
//! [`NsCluster`] runs one `shoal serve` process per node of a [`Network`], node `i`
//! on `10.98.0.i` (public port [`PUBLIC_PORT`], internal port [`RAFT_PORT`]), over a
//! data directory of its own, its stdout and stderr appended to `nI.log` in the
//! output directory. It can kill a node with SIGKILL, start it again over the same
//! directory, pause it (SIGSTOP) and resume it (SIGCONT), and cut it off from its
//! peers. With a small disk, the last node's data directory is a tmpfs of its own
//! (in the network holder's mount namespace) that [`NsCluster::fill_disk`] fills up
//! and [`NsCluster::free_disk`] frees. What state each node is in (up, killed, paused, partitioned) is kept here,
//! behind one lock per node, so the nemesis and the watchdog never act on a node at
//! the same time.
//!
//! Must never: leave a process behind (every node is killed in `Drop`, resumed first
//! if paused), or block for longer than a bounded command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use parking_lot::Mutex;

use crate::netns::Network;

/// The public (gRPC API) port of every node.
pub const PUBLIC_PORT: u16 = 7470;
/// The internal (Raft) port of every node.
pub const RAFT_PORT: u16 = 7471;
/// The cluster secret the nodes share (their internal ports listen beyond loopback).
const SECRET: &str = "nemesis-test-secret-0123456789abcdef";

/// What the nemesis has done to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Running (possibly partitioned), since this instant (start, restart or resume).
    Up {
        since: Instant,
        partitioned: bool,
    },
    Killed,
    Paused,
}

/// One node's process and state.
pub struct NodeProc {
    pub id: usize,
    child: Option<Child>,
    pub state: NodeState,
    /// Times started (1 after the first start).
    pub starts: u32,
    /// The node may exit by itself (its disk was filled: it exits to be restarted
    /// once it has room again); the watchdog restarts it, as a supervisor would,
    /// without counting the exit.
    pub expect_exit: bool,
}

impl NodeProc {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `Some(status)` if the process exited by itself (it is reaped then).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

/// Three (or more) nodes in network namespaces.
pub struct NsCluster {
    pub net: Network,
    nodes: Vec<Mutex<NodeProc>>,
    binary: PathBuf,
    data: PathBuf,
    out: PathBuf,
    extra: Vec<String>,
    /// The node whose data directory is a small tmpfs.
    small_disk: Option<usize>,
}

/// Name of the file that fills a node's small disk.
const FILLER: &str = "nemesis-filler";
/// Room left on a filled disk: less than any write needs for long.
const LEFT_FREE: u64 = 256 << 10;

impl NsCluster {
    /// Starts `count` nodes of `binary` (the `shoal` executable) forming one cluster,
    /// data under `data`, logs under `out`, with extra `serve` flags; with
    /// `small_disk`, node `count`'s data directory is a tmpfs of that many bytes.
    /// Does not wait for them to serve (see [`NsCluster::url`] and the caller's
    /// probes).
    pub fn start(
        binary: &Path,
        count: usize,
        data: &Path,
        out: &Path,
        extra: &[String],
        small_disk: Option<u64>,
    ) -> Result<NsCluster, String> {
        let net = Network::create(count)?;
        std::fs::create_dir_all(data).map_err(|e| format!("{}: {e}", data.display()))?;
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        if let Some(bytes) = small_disk {
            net.mount_tmpfs(&data.join(format!("n{count}")), bytes)?;
        }
        let cluster = NsCluster {
            net,
            nodes: (1..=count)
                .map(|id| {
                    Mutex::new(NodeProc {
                        id,
                        child: None,
                        state: NodeState::Killed,
                        starts: 0,
                        expect_exit: false,
                    })
                })
                .collect(),
            binary: binary.to_path_buf(),
            data: data.to_path_buf(),
            out: out.to_path_buf(),
            extra: extra.to_vec(),
            small_disk: small_disk.map(|_| count),
        };
        for i in 1..=count {
            let mut node = cluster.node(i);
            cluster.launch(&mut node)?;
        }
        Ok(cluster)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` (1-based), locked.
    pub fn node(&self, i: usize) -> parking_lot::MutexGuard<'_, NodeProc> {
        self.nodes[i - 1].lock()
    }

    /// Node `i`'s public gRPC address.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}:{PUBLIC_PORT}", self.net.addr(i))
    }

    /// Node `i`'s log file (all its runs).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.out.join(format!("n{i}.log"))
    }

    /// Starts `node`'s process (it must not run).
    pub fn launch(&self, node: &mut NodeProc) -> Result<(), String> {
        assert!(node.child.is_none(), "node {} already runs", node.id);
        let i = node.id;
        let peers = (1..=self.len())
            .map(|j| format!("{j}={}:{RAFT_PORT}", self.net.addr(j)))
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(|e| format!("opening the log of node {i}: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("the log of node {i}: {e}"))?;
        use std::io::Write;
        let _ = writeln!(&log, "==== nemesis: start {} of node {i}", node.starts + 1);
        let wrapper = self.net.wrapper(i);
        let child = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(&self.binary)
            .arg("serve")
            .args(["--node-id", &i.to_string()])
            .args(["--listen", &format!("{}:{PUBLIC_PORT}", self.net.addr(i))])
            .args([
                "--raft-listen",
                &format!("{}:{RAFT_PORT}", self.net.addr(i)),
            ])
            .args(["--peers", &peers])
            .args(["--cluster-secret", SECRET])
            .arg("--data-dir")
            .arg(self.data.join(format!("n{i}")))
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("NEMESIS_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning node {i}: {e}"))?;
        node.child = Some(child);
        node.starts += 1;
        node.state = NodeState::Up {
            since: Instant::now(),
            partitioned: false,
        };
        Ok(())
    }

    /// SIGKILL (a paused process dies too); reaps it.
    pub fn kill9(&self, node: &mut NodeProc) {
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.heal_if_partitioned(node);
        node.state = NodeState::Killed;
    }

    /// SIGSTOP.
    pub fn pause(&self, node: &mut NodeProc) {
        if let Some(pid) = node.pid() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
            node.state = NodeState::Paused;
        }
    }

    /// SIGCONT.
    pub fn resume(&self, node: &mut NodeProc) {
        if let Some(pid) = node.pid() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            node.state = NodeState::Up {
                since: Instant::now(),
                partitioned: false,
            };
        }
    }

    /// Drops the node's internal traffic, both ways.
    pub fn partition(&self, node: &mut NodeProc) -> Result<(), String> {
        self.net.partition(node.id, RAFT_PORT)?;
        if let NodeState::Up { since, .. } = node.state {
            node.state = NodeState::Up {
                since,
                partitioned: true,
            };
        }
        Ok(())
    }

    /// Removes the node's partition.
    pub fn heal(&self, node: &mut NodeProc) -> Result<(), String> {
        self.net.heal(node.id)?;
        if let NodeState::Up { .. } = node.state {
            node.state = NodeState::Up {
                since: Instant::now(),
                partitioned: false,
            };
        }
        Ok(())
    }

    fn heal_if_partitioned(&self, node: &mut NodeProc) {
        if let NodeState::Up {
            partitioned: true, ..
        } = node.state
        {
            let _ = self.net.heal(node.id);
        }
    }

    /// The node whose data directory is a small disk, if one is.
    pub fn small_disk(&self) -> Option<usize> {
        self.small_disk
    }

    /// Fills `node`'s small disk but for a few hundred KiB (a file taking the room
    /// left); the node may exit once the disk is freed (`expect_exit`). The bytes
    /// taken. The node writes meanwhile: when the room measured is gone before the
    /// file takes it (`fallocate` refused), zeros are written until the disk is full.
    pub fn fill_disk(&self, node: &mut NodeProc) -> Result<u64, String> {
        let dir = self.small_disk_dir(node)?;
        node.expect_exit = true;
        let out = self.net.run_in_mounts(&format!(
            "cd '{dir}' && free=$(df -B1 --output=avail . | tail -1) && \
             n=$((free - {LEFT_FREE})) && [ $n -gt 0 ] && \
             {{ fallocate -l $n {FILLER} 2>/dev/null || head -c $n /dev/zero > {FILLER} 2>/dev/null || true; }} && \
             stat -c %s {FILLER}"
        ))?;
        out.trim()
            .parse()
            .map_err(|e| format!("filling the disk of node {}: {e}: {out:?}", node.id))
    }

    /// Frees what [`NsCluster::fill_disk`] took.
    pub fn free_disk(&self, node: &mut NodeProc) -> Result<(), String> {
        let dir = self.small_disk_dir(node)?;
        self.net
            .run_in_mounts(&format!("rm -f '{dir}/{FILLER}'"))
            .map(|_| ())
    }

    fn small_disk_dir(&self, node: &NodeProc) -> Result<String, String> {
        if self.small_disk != Some(node.id) {
            return Err(format!("node {} has no small disk", node.id));
        }
        Ok(self
            .data
            .join(format!("n{}", node.id))
            .display()
            .to_string())
    }

    /// Every node running and unpartitioned: resumes paused nodes, heals partitions,
    /// starts killed nodes.
    pub fn restore_all(&self) -> Result<(), String> {
        for i in 1..=self.len() {
            let mut node = self.node(i);
            if self.small_disk == Some(i) {
                self.free_disk(&mut node)?;
            }
            match node.state {
                NodeState::Paused => self.resume(&mut node),
                NodeState::Killed => self.launch(&mut node)?,
                NodeState::Up {
                    partitioned: true, ..
                } => self.heal(&mut node)?,
                NodeState::Up { .. } => {
                    if let Some(status) = node.exited() {
                        let _ = status;
                        node.state = NodeState::Killed;
                        self.launch(&mut node)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            let mut node = n.lock();
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
