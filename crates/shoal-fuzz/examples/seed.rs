//! Writes well-formed seed inputs for every fuzz target into `fuzz/corpus/<target>/`
//! (`seed-*` files; existing files stay): the fuzzers start from messages the node
//! really parses rather than from nothing. Run by `fuzz/run.sh` before fuzzing:
//! `cargo run --release -p shoal-fuzz --example seed`.

use std::collections::BTreeMap;

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use prost::Message;
use shoal_core::{CollectionConfig, HnswParams, Metric, Payload, Point, PointId, Value, Write};
use shoal_index::{IndexParams, NativeIndex, VectorIndex};
use shoal_proto::v1 as pb;
use shoal_raft::{Command, TypeConfig};

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = shoal_fuzz::corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
}

fn with_selector(sel: u8, body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![sel];
    v.extend(body);
    v
}

fn pb_id(n: u64) -> pb::PointId {
    pb::PointId {
        kind: Some(pb::point_id::Kind::Num(n)),
    }
}

fn pb_filter() -> pb::Filter {
    use pb::condition::Kind;
    let cond = |k: Kind| pb::Condition { kind: Some(k) };
    pb::Filter {
        must: vec![cond(Kind::Keyword(pb::MatchKeyword {
            key: "color".into(),
            any: vec!["red".into(), "blue".into()],
        }))],
        should: vec![cond(Kind::Range(pb::Range {
            key: "price".into(),
            gte: Some(1.0),
            lt: Some(5.0),
            ..Default::default()
        }))],
        must_not: vec![cond(Kind::HasId(pb::HasId {
            ids: vec![pb_id(3)],
        }))],
    }
}

fn payload() -> Payload {
    let mut p = Payload::new();
    p.insert("color".into(), Value::String("red".into()));
    p.insert("n".into(), Value::Integer(3));
    p
}

fn points() -> Vec<Point> {
    (0..3u64)
        .map(|i| Point {
            id: PointId::Num(i),
            vector: vec![1.0, i as f32, 0.5, -0.5],
            payload: payload(),
        })
        .collect()
}

/// Frames as a snapshot or backup shard file holds them.
fn frames(points: &[Point]) -> Vec<u8> {
    let frame = postcard::to_stdvec(points).expect("encode");
    let mut out = (frame.len() as u32).to_le_bytes().to_vec();
    out.extend(frame);
    out
}

fn requests() {
    let pb_point = |n: u64| pb::Point {
        id: Some(pb_id(n)),
        vector: vec![0.25, -1.0, 3.0, 0.0],
        payload: [(
            "color".to_string(),
            pb::Value {
                kind: Some(pb::value::Kind::StringValue("red".into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    let search = pb::SearchRequest {
        collection: "fuzz".into(),
        vector: vec![1.0, 0.0, 0.0, 0.5],
        top_k: 10,
        ef: Some(64),
        filter: Some(pb_filter()),
        ..Default::default()
    };
    let bodies: Vec<(u8, &str, Vec<u8>)> = vec![
        (
            0,
            "upsert",
            pb::UpsertRequest {
                collection: "fuzz".into(),
                points: vec![pb_point(1), pb_point(2)],
            }
            .encode_to_vec(),
        ),
        (1, "search", search.encode_to_vec()),
        (
            2,
            "search-batch",
            pb::SearchBatchRequest {
                collection: "fuzz".into(),
                searches: vec![search.clone(), search.clone()],
                read: None,
            }
            .encode_to_vec(),
        ),
        (
            3,
            "scroll",
            pb::ScrollRequest {
                collection: "fuzz".into(),
                offset: Some(pb_id(5)),
                limit: Some(10),
                filter: Some(pb_filter()),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            4,
            "count",
            pb::CountRequest {
                collection: "fuzz".into(),
                filter: Some(pb_filter()),
                read: None,
            }
            .encode_to_vec(),
        ),
        (
            5,
            "get",
            pb::GetPointsRequest {
                collection: "fuzz".into(),
                ids: vec![pb_id(1), pb_id(2)],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            6,
            "delete",
            pb::DeletePointsRequest {
                collection: "fuzz".into(),
                ids: vec![pb_id(1)],
            }
            .encode_to_vec(),
        ),
        (
            7,
            "create",
            pb::CreateCollectionRequest {
                name: "fuzz".into(),
                dim: 4,
                metric: pb::Metric::Cosine as i32,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    for (kind, name, body) in bodies {
        for metric in 0..3u8 {
            put(
                "request",
                &format!("{name}-{metric}"),
                &with_selector(kind | metric << 3, body.clone()),
            );
        }
    }
}

fn peer_messages() {
    let log_id = |i| LogId::new(CommittedLeaderId::new(3, 1), i);
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id: log_id(5),
            payload: EntryPayload::Normal(Command::Shard(Write::Upsert(points()))),
        },
        Entry {
            log_id: log_id(6),
            payload: EntryPayload::Normal(Command::Shard(Write::Delete(vec![PointId::Num(1)]))),
        },
        Entry {
            log_id: log_id(7),
            payload: EntryPayload::Normal(Command::Meta(
                shoal_meta::MetaCommand::CreateCollection {
                    config: CollectionConfig {
                        name: "c".into(),
                        dim: 4,
                        metric: Metric::L2,
                        shard_count: 1,
                        replication_factor: 1,
                        hnsw: HnswParams::default(),
                    },
                    placement: vec![vec![1]],
                },
            )),
        },
        Entry {
            log_id: log_id(8),
            payload: EntryPayload::Blank,
        },
    ];
    let append = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(4)),
        entries,
        leader_commit: Some(log_id(4)),
    };
    let bytes = postcard::to_stdvec(&append).unwrap();
    shoal_raft::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&bytes)
        .expect("the seed decodes");
    put("peer_message", "append", &with_selector(0, bytes));
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: Vote::new(4, 2),
        last_log_id: Some(log_id(8)),
    };
    put(
        "peer_message",
        "vote",
        &with_selector(2, postcard::to_stdvec(&vote).unwrap()),
    );
    let snapshot = openraft::raft::InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        meta: openraft::SnapshotMeta {
            last_log_id: Some(log_id(8)),
            last_membership: openraft::StoredMembership::new(
                Some(log_id(1)),
                openraft::Membership::new(vec![[1u64, 2, 3].into()], BTreeMap::new()),
            ),
            snapshot_id: "3-1-8-0".into(),
        },
        offset: 0,
        data: frames(&points()),
        done: true,
    };
    put(
        "peer_message",
        "install-snapshot",
        &with_selector(3, postcard::to_stdvec(&snapshot).unwrap()),
    );
}

fn index_dumps() {
    for (sel, metric) in [(0u8, Metric::Cosine), (1, Metric::Dot), (2, Metric::L2)] {
        // m 4 (the selector's upper bits 0).
        let index = NativeIndex::new(IndexParams {
            dim: 4,
            metric,
            m: 4,
            ef_construction: 100,
            capacity_hint: 0,
        });
        let vectors: Vec<Vec<f32>> = (0..40)
            .map(|i| {
                let x = i as f32;
                let v = vec![x.sin(), x.cos(), (x * 0.3).sin(), 1.0];
                shoal_core::vector::prepare(metric, v)
            })
            .collect();
        let items: Vec<(u32, &[f32])> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, v.as_slice()))
            .collect();
        index.insert(&items).expect("insert");
        index.delete(3);
        let dir = tempfile::tempdir().unwrap();
        index.dump(dir.path()).expect("dump");
        let bytes = std::fs::read(dir.path().join("native.graph")).expect("native.graph");
        // The seed reaches the end of the parser.
        NativeIndex::from_dump_bytes(*index.params(), &bytes).expect("the seed dump loads");
        put(
            "index_dump",
            &format!("m4-{sel}"),
            &with_selector(sel, bytes),
        );
    }
}

fn backups() {
    let dir = tempfile::tempdir().unwrap();
    let store = shoal_backup::BackupStore::open(dir.path()).unwrap();
    let mut w = shoal_backup::BackupWriter::begin(&store, "seed").unwrap();
    w.collection(
        CollectionConfig {
            name: "fuzz".into(),
            dim: 4,
            metric: Metric::L2,
            shard_count: 1,
            replication_factor: 1,
            hnsw: HnswParams::default(),
        },
        0,
    )
    .unwrap();
    let mut f = w.shard(0, 0, u64::MAX).unwrap();
    f.write(&points()).unwrap();
    let entry = f.finish(9).unwrap();
    w.add(entry).unwrap();
    w.finish("seed").unwrap();
    let mut archive = Vec::new();
    shoal_backup::pack(&store.path("seed"), &mut archive).unwrap();
    let upload = store
        .receive(archive.as_slice())
        .expect("the seed archive is received");
    assert_eq!(upload.manifest().points(), 3);
    put("backup", "archive", &with_selector(0, archive));
    // A vouched shard file: L2 (metric bits 2), 3 points (bits 3..).
    put(
        "backup",
        "shard-file",
        &with_selector(1 | 2 << 1 | 3 << 3, frames(&points())),
    );
}

fn filters() {
    let texts = [
        r#"{"must": [{"key": "color", "keyword": ["red", "blue"]}]}"#,
        r#"{"should": [{"key": "n", "integer": [1, 2]}, {"key": "price", "range": {"gte": 1, "lt": 5}}]}"#,
        r#"{"must_not": [{"is_null": "color"}, {"is_empty": "tags"}, {"has_id": [1, "67e55044-10b1-426f-9247-bb680e5fe0c8"]}]}"#,
        r#"{"must": [{"filter": {"should": [{"key": "a.b", "keyword": ["x"]}]}}]}"#,
    ];
    for (i, t) in texts.iter().enumerate() {
        put("filter_json", &i.to_string(), t.as_bytes());
    }
}

fn main() {
    requests();
    peer_messages();
    snapshot_frames();
    index_dumps();
    backups();
    filters();
    println!("seeds written under fuzz/corpus/");
}

fn snapshot_frames() {
    let mut two = frames(&points());
    two.extend(frames(&points()[..1]));
    put("snapshot_frames", "two-frames", &two);
    put("snapshot_frames", "empty", &[]);
}
