//! # The workload of a nemesis run
//!
//! Clients that keep writing and reading through random nodes while the nemesis
//! works, recording every operation in the [`History`]:
//! - unique inserts: multi-shard batches into `nem` (3 shards) and single-shard
//!   batches into `one` (1 shard) through random nodes, and multi-shard batches
//!   through each node by a client of its own (so that a client waiting on a hit
//!   node does not hide how soon the others take writes); every id is written once,
//!   never retried;
//! - registers: a few points of `nem` whose payload `v` is overwritten with unique
//!   values, and read back with STRONG Gets;
//! - SESSION read-your-writes: a point written through one node, read with the
//!   write's token through another;
//! - deletes of acknowledged inserts.
//!
//! Every call has a deadline (sent to the server, and the client's own timeout a
//! second later). Owns the clients; must never retry a write (a retry would blur its
//! outcome) or judge what it saw (that is `check`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_proto::v1 as pb;
use shoal_proto::v1::points_client::PointsClient;
use tonic::transport::{Channel, Endpoint};

use super::cluster::NsCluster;
use super::history::*;

/// The multi-shard collection (inserts, registers, sessions, deletes).
pub const MULTI: &str = "nem";
/// The single-shard collection.
pub const SINGLE: &str = "one";
/// Register keys are point ids from here on (inserted ids stay below).
pub const REGISTER_BASE: u64 = 1 << 40;
/// Dimension of the collections.
pub const DIM: usize = 4;

/// The shared state of a run's clients.
pub struct Shared {
    pub cluster: NsCluster,
    pub clock: Clock,
    pub history: Mutex<History>,
    /// One lazily connected channel per node (index 0 is node 1).
    channels: Vec<Channel>,
    /// Set to stop the workload.
    pub stop: AtomicBool,
    next_id: AtomicU64,
    next_value: AtomicU64,
    /// Acknowledged inserts of `nem` not yet handed to the deleter.
    deletable: Mutex<Vec<u64>>,
    pub timeout: Duration,
    pub registers: u64,
}

impl Shared {
    /// Must run inside the runtime whose threads are in the cluster's network.
    pub fn new(cluster: NsCluster, timeout: Duration, registers: u64) -> Shared {
        let channels = (1..=cluster.len())
            .map(|i| {
                Endpoint::from_shared(cluster.url(i))
                    .expect("url")
                    .connect_timeout(Duration::from_secs(2))
                    .connect_lazy()
            })
            .collect();
        Shared {
            cluster,
            clock: Clock(std::time::Instant::now()),
            history: Mutex::new(History::default()),
            channels,
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            next_value: AtomicU64::new(1),
            deletable: Mutex::new(Vec::new()),
            timeout,
            registers,
        }
    }

    /// Node `i`'s channel.
    pub fn channel(&self, i: usize) -> Channel {
        self.channels[i - 1].clone()
    }

    pub fn points(&self, i: usize) -> PointsClient<Channel> {
        PointsClient::new(self.channel(i))
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// Fresh ids, never used before in this run.
    pub fn ids(&self, n: u64) -> Vec<u64> {
        let first = self.next_id.fetch_add(n, Ordering::Relaxed);
        (first..first + n).collect()
    }

    pub fn value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A request with the run's deadline (sent to the server as `grpc-timeout`).
pub fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// Awaits a call for at most `timeout` plus a second; `None` if the client gave up.
pub async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<Result<T, tonic::Status>> {
    tokio::time::timeout(timeout + Duration::from_secs(1), call)
        .await
        .ok()
        .map(|r| r.map(tonic::Response::into_inner))
}

pub fn num(id: u64) -> pb::PointId {
    pb::PointId {
        kind: Some(pb::point_id::Kind::Num(id)),
    }
}

pub fn id_of(p: &Option<pb::PointId>) -> Option<u64> {
    match p.as_ref()?.kind.as_ref()? {
        pb::point_id::Kind::Num(n) => Some(*n),
        _ => None,
    }
}

pub fn vector(id: u64) -> Vec<f32> {
    let x = (id % 100_000) as f32;
    vec![x, (x * 0.37).sin(), (x * 0.11).cos(), 1.0]
}

fn point(id: u64, value: Option<u64>) -> pb::Point {
    pb::Point {
        id: Some(num(id)),
        vector: vector(id),
        payload: value
            .map(|v| {
                (
                    "v".to_string(),
                    pb::Value {
                        kind: Some(pb::value::Kind::IntegerValue(v as i64)),
                    },
                )
            })
            .into_iter()
            .collect(),
    }
}

pub fn read_options(
    consistency: pb::Consistency,
    token: Option<pb::WriteToken>,
) -> pb::ReadOptions {
    pb::ReadOptions {
        consistency: consistency as i32,
        token,
    }
}

fn error_text<T>(r: &Option<Result<T, tonic::Status>>) -> Option<String> {
    match r {
        None => Some("client timeout".into()),
        Some(Ok(_)) => None,
        Some(Err(s)) => Some(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// Upserts new points `ids` into `collection` through `node`, recording the insert.
/// The write's token when acknowledged.
pub async fn insert(
    shared: &Shared,
    collection: &'static str,
    ids: Vec<u64>,
    node: usize,
    multi_shard: bool,
) -> (Outcome, Option<pb::WriteToken>) {
    let call = shared.clock.now();
    let req = pb::UpsertRequest {
        collection: collection.into(),
        points: ids.iter().map(|&id| point(id, None)).collect(),
    };
    let r = bounded(
        shared.timeout,
        shared.points(node).upsert(request(req, shared.timeout)),
    )
    .await;
    let ret = shared.clock.now();
    let outcome = classify_write(r.as_ref(), multi_shard);
    let error = error_text(&r);
    let token = r.and_then(|r| r.ok()).and_then(|w| w.token);
    if outcome == Outcome::Ok && collection == MULTI {
        shared.deletable.lock().extend(ids.iter().copied());
    }
    shared.history.lock().inserts.push(InsertOp {
        collection,
        ids,
        node,
        call,
        ret,
        outcome,
        error,
    });
    (outcome, token)
}

/// A STRONG read of register `key` through `node`, recorded; `None` if it failed.
pub async fn read_register(shared: &Shared, key: u64, node: usize) -> Option<Option<u64>> {
    let call = shared.clock.now();
    let req = pb::GetPointsRequest {
        collection: MULTI.into(),
        ids: vec![num(REGISTER_BASE + key)],
        with_payload: true,
        with_vector: false,
        read: Some(read_options(pb::Consistency::Strong, None)),
    };
    let r = bounded(
        shared.timeout,
        shared.points(node).get(request(req, shared.timeout)),
    )
    .await;
    let ret = shared.clock.now();
    let mut h = shared.history.lock();
    match r {
        Some(Ok(resp)) => {
            let value = resp.points.first().map(|p| match p.payload.get("v") {
                Some(pb::Value {
                    kind: Some(pb::value::Kind::IntegerValue(v)),
                }) => *v as u64,
                // A register point without its value: impossible; u64::MAX never
                // written, so the checker rejects it.
                _ => u64::MAX,
            });
            h.ok_reads += 1;
            h.registers.push(RegisterOp {
                key,
                node,
                call,
                ret,
                kind: RegisterKind::Read { value },
            });
            Some(value)
        }
        _ => {
            h.failed_reads += 1;
            None
        }
    }
}

async fn write_register(shared: &Shared, key: u64, node: usize) {
    let value = shared.value();
    let call = shared.clock.now();
    let req = pb::UpsertRequest {
        collection: MULTI.into(),
        points: vec![point(REGISTER_BASE + key, Some(value))],
    };
    let r = bounded(
        shared.timeout,
        shared.points(node).upsert(request(req, shared.timeout)),
    )
    .await;
    let ret = shared.clock.now();
    let outcome = classify_write(r.as_ref(), false);
    shared.history.lock().registers.push(RegisterOp {
        key,
        node,
        call,
        ret,
        kind: RegisterKind::Write { value, outcome },
    });
}

fn pick_node(rng: &mut StdRng, n: usize) -> usize {
    rng.random_range(1..=n)
}

/// Pause between a client's operations (keeps the shared CPU for the nodes).
const PACE: Duration = Duration::from_millis(20);

async fn inserter(shared: Arc<Shared>, seed: u64, collection: &'static str, batch: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shared.cluster.len();
    while !shared.stopped() {
        let node = pick_node(&mut rng, n);
        let ids = shared.ids(batch);
        insert(&shared, collection, ids, node, collection == MULTI).await;
        tokio::time::sleep(PACE).await;
    }
}

/// Multi-shard batches through one node only, every 100 ms: a client that is not
/// held up by another node's fault, so the write stall after a fault can be read
/// through every node it did not hit.
async fn pinned_inserter(shared: Arc<Shared>, node: usize) {
    while !shared.stopped() {
        let ids = shared.ids(6);
        insert(&shared, MULTI, ids, node, true).await;
        tokio::time::sleep(PACE * 5).await;
    }
}

async fn register_client(shared: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shared.cluster.len();
    while !shared.stopped() {
        let node = pick_node(&mut rng, n);
        let key = rng.random_range(0..shared.registers);
        if rng.random_bool(0.5) {
            write_register(&shared, key, node).await;
        } else {
            read_register(&shared, key, node).await;
        }
        tokio::time::sleep(PACE).await;
    }
}

async fn session_client(shared: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shared.cluster.len();
    while !shared.stopped() {
        let a = pick_node(&mut rng, n);
        let b = (a + rng.random_range(0..n - 1)) % n + 1;
        let id = shared.ids(1)[0];
        let (outcome, token) = insert(&shared, MULTI, vec![id], a, false).await;
        if outcome == Outcome::Ok {
            let req = pb::GetPointsRequest {
                collection: MULTI.into(),
                ids: vec![num(id)],
                with_payload: false,
                with_vector: false,
                read: Some(read_options(pb::Consistency::Session, token)),
            };
            let r = bounded(
                shared.timeout,
                shared.points(b).get(request(req, shared.timeout)),
            )
            .await;
            let at = shared.clock.now();
            let mut h = shared.history.lock();
            match r {
                Some(Ok(resp)) => {
                    h.ok_reads += 1;
                    h.ryw_checked += 1;
                    if !resp.points.iter().any(|p| id_of(&p.id) == Some(id)) {
                        h.ryw_violations.push(RywViolation {
                            id,
                            write_node: a,
                            read_node: b,
                            at,
                        });
                    }
                }
                _ => h.failed_reads += 1,
            }
        }
        tokio::time::sleep(PACE * 5).await;
    }
}

async fn deleter(shared: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shared.cluster.len();
    while !shared.stopped() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ids: Vec<u64> = {
            let mut d = shared.deletable.lock();
            if d.len() < 10 {
                continue;
            }
            (0..2)
                .map(|_| {
                    let k = rng.random_range(0..d.len());
                    d.swap_remove(k)
                })
                .collect()
        };
        let node = pick_node(&mut rng, n);
        let call = shared.clock.now();
        let req = pb::DeletePointsRequest {
            collection: MULTI.into(),
            ids: ids.iter().map(|&i| num(i)).collect(),
        };
        let r = bounded(
            shared.timeout,
            shared.points(node).delete(request(req, shared.timeout)),
        )
        .await;
        let ret = shared.clock.now();
        let outcome = classify_write(r.as_ref(), true);
        let error = error_text(&r);
        shared.history.lock().deletes.push(DeleteOp {
            collection: MULTI,
            ids,
            node,
            call,
            ret,
            outcome,
            error,
        });
    }
}

/// Starts every client; they run until `shared.stop` is set.
pub fn spawn_all(shared: &Arc<Shared>, seed: u64) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for k in 0..2 {
        tasks.push(tokio::spawn(inserter(
            shared.clone(),
            seed ^ (100 + k),
            MULTI,
            6,
        )));
    }
    tasks.push(tokio::spawn(inserter(
        shared.clone(),
        seed ^ 200,
        SINGLE,
        3,
    )));
    for node in 1..=shared.cluster.len() {
        tasks.push(tokio::spawn(pinned_inserter(shared.clone(), node)));
    }
    for k in 0..3 {
        tasks.push(tokio::spawn(register_client(
            shared.clone(),
            seed ^ (300 + k),
        )));
    }
    tasks.push(tokio::spawn(session_client(shared.clone(), seed ^ 400)));
    tasks.push(tokio::spawn(deleter(shared.clone(), seed ^ 500)));
    tasks
}

/// Per outcome, the number of operations (for the report).
pub fn outcome_counts<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> HashMap<Outcome, u64> {
    let mut m = HashMap::new();
    for o in outcomes {
        *m.entry(*o).or_default() += 1;
    }
    m
}
