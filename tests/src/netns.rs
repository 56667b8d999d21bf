//! # Network namespaces for fault injection
//!
//! [`Network`] owns a private network (and mount) namespace, created by a holder
//! process (`unshare --net --mount`, then `sleep`) that lives as long as the value
//! and dies with the thread that created it (`setpriv --pdeathsig`). Inside it: a
//! bridge `br0` (10.98.0.254/24) and, per node, a namespace `nI` made with `ip netns`
//! (under a tmpfs over `/run` private to the holder's mount namespace) joined to the
//! bridge by a veth pair, with the address 10.98.0.I. Because everything is inside
//! the holder's namespaces, the names and addresses cannot clash with the host's or
//! another test process's, and nothing on the host changes: the bridge, the
//! namespaces and the rules vanish with the holder (killed in `Drop`, also on a
//! panic, or by the kernel when the creating thread dies).
//!
//! A partition ([`Network::partition`]) is nftables drop rules in a node's namespace
//! on the internal (Raft) port, both ways, silently: real packet loss for its peers,
//! while its public port stays reachable from the test. [`Network::enter`] moves the
//! calling thread into the holder's network namespace, where the nodes' addresses are
//! reachable (network namespaces are per thread).
//!
//! Must never: touch the host's network, run a command without a time bound, or
//! outlive its owner.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The private network of a test: a bridge and one namespace per node.
pub struct Network {
    holder: Child,
    nodes: usize,
}

/// Time allowed to any one command run in the namespaces.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

impl Network {
    /// Creates the namespaces of `nodes` nodes (1 to 200). `Err` says why it could
    /// not (not root, no `ip`/`nft`/`unshare`, ...): callers skip their test then.
    pub fn create(nodes: usize) -> Result<Network, String> {
        assert!((1..=200).contains(&nodes));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (network namespaces, nftables)".into());
        }
        for tool in ["ip", "nft", "unshare", "nsenter", "setpriv"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !found {
                return Err(format!("`{tool}` is not installed"));
            }
        }
        let mut script = String::from(
            "set -e\n\
             mount -t tmpfs tmpfs /run\n\
             ip link set lo up\n\
             ip link add br0 type bridge\n\
             ip addr add 10.98.0.254/24 dev br0\n\
             ip link set br0 up\n",
        );
        for i in 1..=nodes {
            script.push_str(&format!(
                "ip netns add n{i}\n\
                 ip link add v{i} type veth peer name eth0 netns n{i}\n\
                 ip link set v{i} master br0 up\n\
                 ip -n n{i} addr add 10.98.0.{i}/24 dev eth0\n\
                 ip -n n{i} link set eth0 up\n\
                 ip -n n{i} link set lo up\n"
            ));
        }
        script.push_str("echo ready\nexec sleep 86400\n");
        let mut holder = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "unshare", "--net", "--mount"])
            .args(["--propagation", "private", "--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting setpriv/unshare: {e}"))?;
        let stdout = holder.stdout.take().expect("stdout");
        let stderr = holder.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let network = Network { holder, nodes };
        match rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(line) if line.trim() == "ready" => Ok(network),
            other => {
                drop(network);
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut err);
                Err(format!(
                    "setting up the network namespaces failed ({other:?}): {}",
                    err.trim()
                ))
            }
        }
    }

    /// Node `i`'s (1-based) address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        assert!((1..=self.nodes).contains(&i));
        Ipv4Addr::new(10, 98, 0, i as u8)
    }

    /// The command prefix that runs a program in node `i`'s namespace (it ends by
    /// executing its arguments, so the program keeps the process id).
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        assert!((1..=self.nodes).contains(&i));
        let pid = self.holder.id().to_string();
        [
            "nsenter", "-t", &pid, "-m", "-n", "--", "ip", "netns", "exec",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("n{i}")])
        .collect()
    }

    /// Runs `program args` in node `i`'s namespace with `stdin` as its input,
    /// bounded in time.
    fn run_in(&self, i: usize, program: &[&str], stdin: &str) -> Result<(), String> {
        let wrapper = self.wrapper(i);
        let mut child = Command::new("timeout")
            .arg(COMMAND_TIMEOUT.as_secs().to_string())
            .args(&wrapper)
            .args(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {program:?}: {e}"))?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .map_err(|e| format!("writing to {program:?}: {e}"))?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {program:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program:?} in n{i}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs `script` with `sh -c` in the holder's mount namespace (where
    /// [`Network::mount_tmpfs`] mounts live), bounded in time; its standard output.
    pub fn run_in_mounts(&self, script: &str) -> Result<String, String> {
        let pid = self.holder.id().to_string();
        let out = Command::new("timeout")
            .arg(COMMAND_TIMEOUT.as_secs().to_string())
            .args(["nsenter", "-t", &pid, "-m", "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {script:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{script:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Mounts a tmpfs of `bytes` over `dir` (created if missing) in the holder's
    /// mount namespace: the nodes started afterwards see it (`ip netns exec` copies
    /// the holder's mounts), the host does not, and it vanishes with the holder.
    pub fn mount_tmpfs(&self, dir: &std::path::Path, bytes: u64) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        self.run_in_mounts(&format!(
            "mount -t tmpfs -o size={bytes} tmpfs '{}'",
            dir.display()
        ))
        .map(|_| ())
    }

    /// Cuts node `i` off from its peers: every packet to or from TCP port `port` (its
    /// internal port, and its peers' internal port) is dropped in its namespace, both
    /// ways. Its other ports stay reachable.
    pub fn partition(&self, i: usize, port: u16) -> Result<(), String> {
        let rules = format!(
            "table inet nemesis {{\n\
               chain in {{ type filter hook input priority 0; tcp dport {port} drop; tcp sport {port} drop; }}\n\
               chain out {{ type filter hook output priority 0; tcp dport {port} drop; tcp sport {port} drop; }}\n\
             }}\n"
        );
        self.run_in(i, &["nft", "-f", "-"], &rules)
    }

    /// Removes node `i`'s partition rules (an error if it had none).
    pub fn heal(&self, i: usize) -> Result<(), String> {
        self.run_in(i, &["nft", "delete", "table", "inet", "nemesis"], "")
    }

    /// Moves the calling thread into the network namespace holding the bridge, from
    /// where every node's address is reachable. Sockets the thread opens afterwards
    /// live there (call it first thing on threads that talk to the nodes, e.g. in a
    /// tokio runtime's `on_thread_start`).
    pub fn enter(&self) -> std::io::Result<()> {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.holder.id()))?;
        // SAFETY: a valid namespace file descriptor; CLONE_NEWNET only changes the
        // calling thread's network namespace.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// A tokio runtime whose threads (workers and blocking pool) all live in the
    /// namespace holding the bridge.
    pub fn runtime(&self, workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
        let path = format!("/proc/{}/ns/net", self.holder.id());
        // Opened once; each thread joins it as it starts.
        let ns = std::sync::Arc::new(std::fs::File::open(path)?);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .on_thread_start(move || {
                // SAFETY: as in `enter`.
                let r = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&*ns), libc::CLONE_NEWNET)
                };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            })
            .build()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
