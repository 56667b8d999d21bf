//! # shoal-tests
//!
//! Test kit for Shoal's integration tests: [`Node`] runs a real `shoal serve` process
//! on a free loopback port over a data directory, can kill it with SIGKILL and start
//! it again over the same directory; [`data`] locates the shared SIFT data;
//! [`SmallDisk`] gives a node a small file system of its own, to fill;
//! [`netns`] gives nodes network namespaces of their own, to cut off; [`nemesis`] is
//! the fault-injection suite (workload, nemesis, history, checkers).
//!
//! The tests themselves live in `tests/it/`.

pub mod nemesis;
pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_proto::v1::{collections_client::CollectionsClient, points_client::PointsClient};
use tonic::transport::Channel;

/// A running `shoal serve` process.
pub struct Node {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The metrics endpoint's `HOST:PORT`, when started with `--metrics-listen`
    /// (the address it printed as `metrics listening on ADDR`).
    pub metrics_addr: Option<String>,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Extra environment of the process (kept over restarts).
    env: Vec<(String, String)>,
    log: PathBuf,
    /// A command the node runs under (`nsenter … --`), if any.
    wrapper: Vec<String>,
}

impl Node {
    /// Starts a node over `data_dir` with extra `serve` flags, and waits until it
    /// accepts connections (up to two minutes, for restarts over big data).
    pub fn start(binary: &Path, data_dir: &Path, args: &[&str]) -> Node {
        Node::launch_new(binary, data_dir, args, &[], &[])
    }

    /// [`Node::start`] with extra environment variables (e.g. `FAILPOINTS`), set again
    /// on every restart.
    pub fn start_with_env(
        binary: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        Node::launch_new(binary, data_dir, args, env, &[])
    }

    /// [`Node::start`], the process run under `wrapper` (a command that ends by
    /// executing its arguments, such as [`SmallDisk::wrapper`]), in every run.
    pub fn start_wrapped(
        wrapper: &[String],
        binary: &Path,
        data_dir: &Path,
        args: &[&str],
    ) -> Node {
        Node::launch_new(binary, data_dir, args, &[], wrapper)
    }

    fn launch_new(
        binary: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        wrapper: &[String],
    ) -> Node {
        let mut node = Node {
            child: None,
            url: String::new(),
            metrics_addr: None,
            data_dir: data_dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: data_dir.with_extension("log"),
            wrapper: wrapper.to_vec(),
        };
        node.launch(binary);
        node
    }

    fn launch(&mut self, binary: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .args(
                (!self.args.iter().any(|a| a == "--raft-listen"))
                    .then_some(["--raft-listen", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn shoal");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send((false, addr.to_string()));
                } else if let Some(addr) = line.strip_prefix("metrics listening on ") {
                    let _ = tx.send((true, addr.to_string()));
                }
            }
        });
        self.child = Some(child);
        self.metrics_addr = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((true, addr)) => self.metrics_addr = Some(addr),
                Ok((false, addr)) => {
                    self.url = format!("http://{addr}");
                    break;
                }
                Err(_) => panic!(
                    "shoal did not start listening; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }

    /// SIGKILL: no shutdown hooks, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }

    /// Starts the process again over the same data directory (on a new port).
    pub fn restart(&mut self, binary: &Path) {
        self.kill9();
        self.launch(binary);
    }

    /// Everything the node (in all its runs) has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id while it runs (to send it a signal).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status, or
    /// `None` if it still runs (or was not started).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let status = self.child.as_mut()?.try_wait().ok()?;
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// gRPC clients of this node.
    pub async fn clients(&self) -> (CollectionsClient<Channel>, PointsClient<Channel>) {
        let channel = Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        (
            CollectionsClient::new(channel.clone()).max_decoding_message_size(256 << 20),
            PointsClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        )
    }

    /// A raw channel (for the health and reflection services).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small tmpfs mounted over a directory in a mount namespace of its own, which a
/// process holds (`unshare --mount`, then `sleep`) for as long as this value lives,
/// and dies with the test's thread (`setpriv --pdeathsig`) if it is killed: nothing
/// outside the namespace sees the mount, and the namespace and its tmpfs vanish with
/// the holder. Nodes run in it through [`SmallDisk::wrapper`]; the test reaches its
/// files through [`SmallDisk::outside`]. Needs root.
pub struct SmallDisk {
    holder: Child,
    /// The directory the tmpfs is mounted over (empty outside the namespace).
    pub dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` over `dir` (created if missing) in a new mount
    /// namespace; waits up to 10 s for it.
    pub fn mount(dir: &Path, bytes: u64) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let script = format!(
            "mount -t tmpfs -o size={bytes} tmpfs \"$0\" && echo mounted && exec sleep 3600"
        );
        let mut holder = Command::new("setpriv")
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                "unshare",
                "--mount",
                "--propagation",
            ])
            .args(["private", "--", "sh", "-c", &script])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting setpriv/unshare: {e}"))?;
        let stdout = holder.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let disk = SmallDisk {
            holder,
            dir: dir.to_path_buf(),
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "mounted" => Ok(disk),
            other => Err(format!(
                "mounting a tmpfs over {} failed: {other:?}",
                dir.display()
            )),
        }
    }

    /// The command to run a process in the namespace (prefix its command line).
    pub fn wrapper(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }

    /// `path` inside the namespace (absolute, under [`SmallDisk::dir`]) as this
    /// process reaches it: through the holder's root.
    pub fn outside(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.holder.id())).join(relative)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Shared data sets.
pub mod data {
    use std::path::PathBuf;

    /// `../shared/data/siftsmall` beside the checkout, if present.
    pub fn siftsmall() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/siftsmall");
        dir.join("siftsmall_base.fvecs").exists().then_some(dir)
    }
}

/// A minimal gRPC reflection client (what `grpcurl list` does).
pub mod reflection {
    use tonic::transport::Channel;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    /// Names of the services the server lists.
    pub async fn list_services(channel: Channel) -> Vec<String> {
        let mut client = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .expect("reflection call")
            .into_inner();
        let resp = stream
            .message()
            .await
            .expect("reflection reply")
            .expect("one message");
        match resp.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection reply {other:?}"),
        }
    }
}
