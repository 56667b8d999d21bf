//! # shoal-fuzz
//!
//! The bodies of Shoal's fuzz targets. Each takes arbitrary bytes, hands them to the
//! very decoder or validator a node runs on bytes from outside the process, and
//! panics only when that code panics or breaks a promise it makes:
//!
//! - [`request`]: a public gRPC request (protobuf) through `shoal_server::convert`
//!   and `shoal_core::validate`, as a node checks it before anything reaches a Raft
//!   log. Promises: an error names its field and maps to `INVALID_ARGUMENT` or
//!   `RESOURCE_EXHAUSTED` with a short message; an accepted vector is finite, passes
//!   the check a follower applies to a committed write, and scores a finite number
//!   against any accepted vector, the most extreme included; an accepted filter
//!   evaluates.
//! - [`peer_message`]: a peer's Raft message (`AppendEntries`, `Vote`,
//!   `InstallSnapshot`, postcard) as `shoal_raft::network` decodes it, and each
//!   decoded entry's command as a state machine checks it.
//! - [`snapshot_frames`]: a shard snapshot's frames (`shoal_raft::read_points`) and
//!   the check `Shard::install` makes of each point.
//! - [`index_dump`]: the native HNSW's dump file (`NativeIndex::from_dump_bytes`, as
//!   if its manifest's checksum held), then searches of what loaded.
//! - [`backup`]: an uploaded backup archive (`BackupStore::receive`: tar, manifest,
//!   checksums; nothing may land outside the store), or a shard file of a backup
//!   whose manifest vouches for it, read frame by frame as a restore does.
//! - [`filter_json`]: the CLI's JSON filter syntax, then the server's conversion and
//!   validation, then evaluation.
//!
//! cargo-fuzz runs them from `fuzz/` (nightly, libFuzzer; `fuzz/run.sh`); [`replay`]
//! runs the committed corpora (`fuzz/corpus/<target>/`) through them on stable, in
//! `cargo test`, so every input a fuzzer kept stays a regression test.
//!
//! This crate must never hold a copy of the code under test: it calls the crates'
//! own functions, and the `fuzz/` binaries are one line each.

use std::path::{Path, PathBuf};

use prost::Message;
use shoal_core::{CollectionConfig, Error, HnswParams, Limits, Metric, Point, validate};
use shoal_proto::v1 as pb;
use shoal_server::convert;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and cargo-fuzz binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("request", request),
    ("peer_message", peer_message),
    ("snapshot_frames", snapshot_frames),
    ("index_dump", index_dump),
    ("backup", backup),
    ("filter_json", filter_json),
];

/// The collection requests are checked against: dimension 4, the metric chosen by the
/// input.
fn config(metric: Metric) -> CollectionConfig {
    CollectionConfig {
        name: "fuzz".into(),
        dim: 4,
        metric,
        shard_count: 1,
        replication_factor: 1,
        hnsw: HnswParams::default(),
    }
}

fn metric_of(b: u8) -> Metric {
    match b % 3 {
        0 => Metric::Cosine,
        1 => Metric::Dot,
        _ => Metric::L2,
    }
}

/// An error a client is sent: it names a field, maps to a status that says the
/// request was refused, and its message fits in a header.
fn check_refusal(e: Error) {
    match &e {
        Error::InvalidArgument { field, .. } | Error::ResourceExhausted { field, .. } => {
            assert!(!field.is_empty(), "an error without a field: {e:?}");
        }
        other => panic!("validation answered {other:?}"),
    }
    let s = shoal_server::status::to_status(e);
    assert!(
        matches!(
            s.code(),
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
        ),
        "{s:?}"
    );
    assert!(s.message().len() <= shoal_server::status::MAX_MESSAGE);
}

/// The most extreme vectors a collection of `cfg`'s metric accepts.
fn extremes(cfg: &CollectionConfig) -> Vec<Vec<f32>> {
    let d = cfg.dim as usize;
    let m = shoal_core::vector::MAX_COMPONENT;
    let mut out = vec![vec![m; d], vec![-m; d]];
    let mut alternating: Vec<f32> = (0..d).map(|i| if i % 2 == 0 { m } else { -m }).collect();
    out.push(alternating.clone());
    alternating
        .iter_mut()
        .for_each(|x| *x = f32::MIN_POSITIVE * x.signum());
    out.push(alternating);
    out.into_iter()
        .filter_map(|v| validate::vector(cfg, "extreme", v).ok())
        .collect()
}

/// Every score between accepted vectors is a finite number.
fn check_scores(cfg: &CollectionConfig, vectors: &[&[f32]]) {
    let extremes = extremes(cfg);
    let others = vectors
        .iter()
        .copied()
        .chain(extremes.iter().map(Vec::as_slice));
    for a in vectors.iter().take(8) {
        for b in others.clone().take(16) {
            let d = shoal_index::distance::distance(cfg.metric, a, b);
            let score = cfg.metric.score_from_distance(d);
            assert!(
                d.is_finite() && score.is_finite(),
                "{:?} between {a:?} and {b:?}: distance {d}, score {score}",
                cfg.metric
            );
        }
    }
}

/// Points an upsert's validation accepted.
fn check_accepted_points(cfg: &CollectionConfig, points: &[Point]) {
    for (i, p) in points.iter().enumerate() {
        assert!(p.vector.iter().all(|x| x.is_finite()), "{p:?}");
        // What a follower checks before it applies a committed write.
        if let Err(e) = validate::stored_point(cfg, &format!("points[{i}]"), p) {
            panic!("accepted, then refused when applied: {e}");
        }
    }
    let vectors: Vec<&[f32]> = points.iter().map(|p| p.vector.as_slice()).collect();
    check_scores(cfg, &vectors);
}

/// A filter the server accepted evaluates against a few payloads.
fn evaluate(filter: &shoal_core::Filter) {
    use shoal_core::{Payload, PointId, Value};
    let mut payload = Payload::new();
    payload.insert("color".into(), Value::String("red".into()));
    payload.insert("n".into(), Value::Integer(3));
    payload.insert("price".into(), Value::Double(2.5));
    payload.insert("tags".into(), Value::List(vec![Value::String("a".into())]));
    for id in [PointId::Num(1), PointId::Num(u64::MAX)] {
        let _ = filter.matches(&id, &payload);
        let _ = filter.matches(&id, &Payload::new());
    }
}

/// A request's filter converted and validated as the server does.
fn checked_filter(f: pb::Filter) -> shoal_core::Result<shoal_core::Filter> {
    let f = convert::filter("filter", f)?;
    validate::filter("filter", &f)?;
    Ok(f)
}

/// An accepted filter evaluates; a refused one was refused properly.
fn check_filter_outcome(checked: shoal_core::Result<Option<shoal_core::Filter>>) {
    match checked {
        Ok(Some(f)) => evaluate(&f),
        Ok(None) => {}
        Err(e) => check_refusal(e),
    }
}

/// A public request. The first byte picks the request kind (low 3 bits) and the
/// collection's metric (the rest); the other bytes are its protobuf encoding.
pub fn request(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let cfg = config(metric_of(sel >> 3));
    let limits = Limits::default();
    match sel % 8 {
        0 => {
            let Ok(r) = pb::UpsertRequest::decode(body) else {
                return;
            };
            match convert::points(r.points).and_then(|p| validate::upsert(&cfg, p, &limits)) {
                Ok(points) => check_accepted_points(&cfg, &points),
                Err(e) => check_refusal(e),
            }
        }
        1 => {
            let Ok(mut r) = pb::SearchRequest::decode(body) else {
                return;
            };
            let checked = convert::read_options("read", r.read.take()).and_then(|_| {
                convert::search("", r).and_then(|s| validate::search(&cfg, "", s, &limits))
            });
            match checked {
                Ok(s) => {
                    check_scores(&cfg, &[s.vector.as_slice()]);
                    if let Some(f) = &s.filter {
                        evaluate(f);
                    }
                }
                Err(e) => check_refusal(e),
            }
        }
        2 => {
            let Ok(r) = pb::SearchBatchRequest::decode(body) else {
                return;
            };
            let checked = validate::search_batch_len(r.searches.len(), &limits)
                .and_then(|()| convert::read_options("read", r.read))
                .and_then(|_| {
                    r.searches
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| {
                            let field = format!("searches[{i}]");
                            convert::search(&field, s)
                                .and_then(|s| validate::search(&cfg, &field, s, &limits))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .and_then(|all| validate::search_batch_results(&all, &limits).map(|()| all));
            match checked {
                Ok(all) => {
                    let vectors: Vec<&[f32]> = all.iter().map(|s| s.vector.as_slice()).collect();
                    check_scores(&cfg, &vectors);
                }
                Err(e) => check_refusal(e),
            }
        }
        3 => {
            let Ok(r) = pb::ScrollRequest::decode(body) else {
                return;
            };
            let checked = r
                .offset
                .map(|o| convert::point_id("offset", Some(o)))
                .transpose()
                .and_then(|_| r.filter.map(checked_filter).transpose())
                .and_then(|f| {
                    convert::read_options("read", r.read)?;
                    validate::scroll_limit(r.limit.unwrap_or(100), &limits)?;
                    Ok(f)
                });
            check_filter_outcome(checked);
        }
        4 => {
            let Ok(r) = pb::CountRequest::decode(body) else {
                return;
            };
            let checked = r.filter.map(checked_filter).transpose().and_then(|f| {
                convert::read_options("read", r.read)?;
                Ok(f)
            });
            check_filter_outcome(checked);
        }
        5 => {
            let Ok(r) = pb::GetPointsRequest::decode(body) else {
                return;
            };
            let checked = convert::ids("ids", r.ids)
                .and_then(|ids| validate::ids(ids, &limits))
                .and_then(|ids| convert::read_options("read", r.read).map(|_| ids));
            if let Err(e) = checked {
                check_refusal(e);
            }
        }
        6 => {
            let Ok(r) = pb::DeletePointsRequest::decode(body) else {
                return;
            };
            if let Err(e) = convert::ids("ids", r.ids).and_then(|ids| validate::ids(ids, &limits)) {
                check_refusal(e);
            }
        }
        _ => {
            let Ok(r) = pb::CreateCollectionRequest::decode(body) else {
                return;
            };
            let checked = convert::collection_config(r)
                .and_then(|c| validate::collection_config(&c, &limits).map(|()| c));
            if let Err(e) = checked {
                check_refusal(e);
            }
        }
    }
}

/// A command a shard or the metadata group decoded from a peer, applied as its state
/// machine would: a shard write is checked, a metadata command applied to `state`
/// (which the entries before it built); never a panic, and a refusal changes nothing.
fn check_command(
    cmd: &shoal_raft::Command,
    cfg: &CollectionConfig,
    state: &mut shoal_meta::ClusterState,
) {
    match cmd {
        shoal_raft::Command::Shard(write) => {
            let _ = validate::stored_write(cfg, write);
        }
        shoal_raft::Command::Meta(m) => {
            // A refused command leaves the state as it was (`ClusterState::apply`).
            let before = state.clone();
            if let Err(e) = state.apply(m.clone()) {
                assert_eq!(
                    *state, before,
                    "{m:?} was refused ({e}) but changed the state"
                );
            }
        }
        shoal_raft::Command::Seal => {}
    }
}

/// A peer's Raft message: the first byte picks the kind as `RaftRpc` numbers them
/// (and the metric of the collection entries are checked against), the rest is its
/// postcard payload.
pub fn peer_message(data: &[u8]) {
    use openraft::EntryPayload;
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use shoal_raft::TypeConfig;
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let cfg = config(metric_of(sel >> 2));
    match sel % 4 {
        0 | 1 => {
            if let Ok(r) = shoal_raft::decode::<AppendEntriesRequest<TypeConfig>>(body) {
                let mut state = shoal_meta::ClusterState::default();
                for e in &r.entries {
                    if let EntryPayload::Normal(cmd) = &e.payload {
                        check_command(cmd, &cfg, &mut state);
                    }
                }
            }
        }
        2 => {
            let _ = shoal_raft::decode::<VoteRequest<u64>>(body);
        }
        _ => {
            if let Ok(r) = shoal_raft::decode::<InstallSnapshotRequest<TypeConfig>>(body) {
                // The chunk lands in a file that is read as frames once complete.
                snapshot_frames(&r.data);
            }
        }
    }
}

/// A shard snapshot's bytes: frames of points, each point checked as `Shard::install`
/// checks it (dimension 4, COSINE: the strictest metric).
pub fn snapshot_frames(data: &[u8]) {
    let cfg = config(Metric::Cosine);
    if let Ok(points) = shoal_raft::read_points(data) {
        for p in &points {
            let _ = validate::stored_point(&cfg, "point", p);
        }
    }
}

/// The native index's dump file. The first byte picks the metric and `m` the
/// manifest says (dimension 4); the rest is the file. What loads must answer
/// searches.
pub fn index_dump(data: &[u8]) {
    use shoal_index::{IndexParams, NativeIndex, VectorIndex};
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let params = IndexParams {
        dim: 4,
        metric: metric_of(sel),
        m: [4, 8, 16][usize::from(sel >> 2) % 3],
        ef_construction: 100,
        capacity_hint: 0,
    };
    if let Ok(index) = NativeIndex::from_dump_bytes(params, body) {
        let q = [0.5f32, -0.5, 0.5, -0.5];
        let _ = index.search(&q, 5, 16, None);
        let _ = index.exact_search(&q, 5, None);
    }
}

/// A backup. First byte even: the rest is an uploaded archive, unpacked, verified and
/// read as a restore reads it. Odd: the rest is the one shard file of a backup whose
/// manifest vouches for it (size and SHA-256 right), read frame by frame.
pub fn backup(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = shoal_backup::BackupStore::open(&dir.path().join("store")).expect("a backup store");
    let backup = if sel % 2 == 0 {
        let received = store.receive(body);
        // Nothing of an upload lands outside the store, whatever its paths say.
        let beside: Vec<_> = std::fs::read_dir(dir.path())
            .expect("the temporary directory")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(beside, ["store"], "an upload wrote outside the store");
        match received {
            Ok(b) => b,
            Err(_) => return,
        }
    } else {
        let Some(b) = vouched_backup(&store, sel, body) else {
            return;
        };
        b
    };
    for c in &backup.manifest().collections {
        for s in &c.shards {
            let Ok(frames) = backup.points(s) else {
                continue;
            };
            for frame in frames {
                let Ok(points) = frame else {
                    break;
                };
                for p in &points {
                    let _ = validate::stored_point(&c.config, "point", p);
                }
            }
        }
    }
}

/// A backup named `b` in `store` whose one shard file holds `file`, with a manifest
/// that matches it. `None` if the store refuses it.
fn vouched_backup(
    store: &shoal_backup::BackupStore,
    sel: u8,
    file: &[u8],
) -> Option<shoal_backup::Backup> {
    use sha2::{Digest, Sha256};
    let dir: PathBuf = store.path("b");
    let name = shoal_backup::shard_file_name("fuzz", 0);
    let path = dir.join(&name);
    std::fs::create_dir_all(path.parent()?).ok()?;
    std::fs::write(&path, file).ok()?;
    let sha: String = Sha256::digest(file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let manifest = shoal_backup::Manifest {
        format: shoal_backup::FORMAT.into(),
        format_version: shoal_backup::FORMAT_VERSION,
        shoal_version: "fuzz".into(),
        name: "b".into(),
        created_unix_ms: 0,
        duration_ms: 0,
        collections: vec![shoal_backup::CollectionEntry {
            config: config(metric_of(sel >> 1)),
            routing_version: 0,
            shards: vec![shoal_backup::ShardEntry {
                shard: 0,
                hash_first: 0,
                hash_last: u64::MAX,
                applied_index: 0,
                points: u64::from(sel >> 3),
                file: name,
                bytes: file.len() as u64,
                sha256: sha,
            }],
        }],
    };
    let text = serde_json::to_vec(&manifest).ok()?;
    std::fs::write(dir.join(shoal_backup::MANIFEST), text).ok()?;
    store.open_backup("b").ok()
}

/// A filter in the CLI's JSON syntax, converted and validated as the server does,
/// then evaluated.
pub fn filter_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pb_filter) = shoal_cli::filter_json::parse(text) else {
        return;
    };
    check_filter_outcome(checked_filter(pb_filter).map(Some));
}

/// The committed corpus of `target`: `fuzz/corpus/<target>/` at the repository's
/// root.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs every file of `target`'s committed corpus through it; the number of inputs.
pub fn replay(target: &str, run: Target) -> std::io::Result<usize> {
    let dir = corpus_dir(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.is_file() {
            let bytes = std::fs::read(&path)?;
            let result = std::panic::catch_unwind(|| run(&bytes));
            assert!(
                result.is_ok(),
                "{target}: the corpus input {} fails",
                path.display()
            );
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target's committed corpus passes (the inputs the fuzzers kept, and the
    /// inputs of bugs they found, now fixed).
    #[test]
    fn the_committed_corpora_replay_cleanly() {
        for (name, run) in TARGETS {
            let n = replay(name, *run).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(n > 0, "{name}: the corpus is empty");
        }
    }

    /// The targets are not vacuous: well-formed inputs reach the checks.
    #[test]
    fn a_valid_upsert_is_accepted_and_an_infinite_component_refused() {
        let point = |v: Vec<f32>| pb::Point {
            id: Some(pb::PointId {
                kind: Some(pb::point_id::Kind::Num(7)),
            }),
            vector: v,
            payload: Default::default(),
        };
        let cfg = config(Metric::L2);
        let ok = pb::UpsertRequest {
            collection: "fuzz".into(),
            points: vec![point(vec![1.0, 2.0, 3.0, 4.0])],
        };
        let points = convert::points(ok.points).unwrap();
        assert!(validate::upsert(&cfg, points, &Limits::default()).is_ok());
        let bad = convert::points(vec![point(vec![1.0, f32::INFINITY, 3.0, 4.0])]).unwrap();
        let e = validate::upsert(&cfg, bad, &Limits::default()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { field, .. } if field.contains("vector[1]")));
        // And the target runs both without complaint.
        let mut input = vec![0b0001_0000]; // upsert, L2
        input.extend(
            pb::UpsertRequest {
                collection: "fuzz".into(),
                points: vec![point(vec![1e15, -1e15, 1e15, -1e15])],
            }
            .encode_to_vec(),
        );
        request(&input);
    }

    #[test]
    fn a_snapshot_frame_that_claims_more_than_it_holds_is_refused() {
        let mut bytes = (u32::MAX >> 2).to_le_bytes().to_vec();
        bytes.extend([0u8; 16]);
        // Refused as a cut frame, having read the 16 bytes there are (before, the
        // claimed gigabyte was allocated first and the read then failed as IO).
        let e = shoal_raft::read_points(bytes.as_slice()).unwrap_err();
        assert!(
            matches!(&e, shoal_raft::RaftStoreError::Corrupt(m) if m.contains("cut at 16")),
            "{e:?}"
        );
    }
}
