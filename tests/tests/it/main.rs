//! Integration tests of a real `shoal` process over gRPC.

mod api;
mod auth;
mod backup;
mod bad_input;
mod cli;
mod cluster;
mod disk;
mod docker;
mod durability;
mod elastic;
mod internal_security;
mod limits;
mod metrics;
mod nemesis;
mod recall;

use std::path::Path;

use shoal_proto::v1 as pb;

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shoal-node"))
}

pub fn num(id: u64) -> Option<pb::PointId> {
    Some(pb::PointId {
        kind: Some(pb::point_id::Kind::Num(id)),
    })
}

pub fn id_of(p: &Option<pb::PointId>) -> u64 {
    match p.as_ref().and_then(|i| i.kind.clone()) {
        Some(pb::point_id::Kind::Num(n)) => n,
        other => panic!("expected a numeric id, got {other:?}"),
    }
}

pub fn int(v: i64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::IntegerValue(v)),
    }
}

pub fn string(v: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::StringValue(v.into())),
    }
}

/// `msg` as the body of a gRPC call on a raw HTTP/2 stream: uncompressed, length
/// prefixed.
pub fn grpc_frame(msg: &impl prost::Message) -> bytes::Bytes {
    let body = msg.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.into()
}

pub fn point(id: u64, vector: Vec<f32>, payload: &[(&str, pb::Value)]) -> pb::Point {
    pb::Point {
        id: num(id),
        vector,
        payload: payload
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

pub fn create(
    name: &str,
    dim: u32,
    metric: pb::Metric,
    shards: u32,
) -> pb::CreateCollectionRequest {
    pb::CreateCollectionRequest {
        name: name.into(),
        dim,
        metric: metric as i32,
        shard_count: Some(shards),
        ..Default::default()
    }
}

pub fn search(collection: &str, vector: Vec<f32>, top_k: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: collection.into(),
        vector,
        top_k,
        ..Default::default()
    }
}

/// Number of points in a collection.
pub async fn count_all(
    points: &mut shoal_proto::v1::points_client::PointsClient<tonic::transport::Channel>,
    collection: &str,
) -> u64 {
    points
        .count(pb::CountRequest {
            read: None,
            collection: collection.into(),
            filter: None,
        })
        .await
        .expect("count")
        .into_inner()
        .count
}

/// Replicas per node in `s` (from the metadata's placement), every node listed.
pub fn replica_counts(s: &pb::ClusterStatus) -> std::collections::BTreeMap<u64, usize> {
    let mut counts: std::collections::BTreeMap<u64, usize> =
        s.nodes.iter().map(|n| (n.id, 0)).collect();
    for c in &s.collections {
        for sh in &c.shards {
            for r in &sh.replicas {
                *counts.entry(r.node).or_default() += 1;
            }
        }
    }
    counts
}

/// The siftsmall directory, or a panic that says where it was expected.
pub fn siftsmall() -> std::path::PathBuf {
    shoal_tests::data::siftsmall()
        .expect("these tests need ../shared/data/siftsmall beside the checkout (see shared/data/siftsmall/SOURCE.md)")
}

/// Upserts vectors with ids = row numbers, in batches.
pub async fn upsert_all(
    points: &mut shoal_proto::v1::points_client::PointsClient<tonic::transport::Channel>,
    collection: &str,
    vectors: &[Vec<f32>],
) {
    for (chunk_no, chunk) in vectors.chunks(1000).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| point((chunk_no * 1000 + i) as u64, v.clone(), &[]))
            .collect();
        points
            .upsert(pb::UpsertRequest {
                collection: collection.into(),
                points: batch,
            })
            .await
            .expect("upsert");
    }
}
