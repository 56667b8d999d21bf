//! Wire types ⇄ domain types. Conversions that can fail return
//! `shoal_core::Error::InvalidArgument` naming the field; semantic validation happens
//! afterwards in `shoal_core::validate`, called by the engine.

use shoal_core::{self as core, Condition, Error, Filter, Payload, PointId, Result, Value};
use shoal_proto::v1 as pb;

pub fn point_id(field: &str, id: Option<pb::PointId>) -> Result<PointId> {
    match id.and_then(|i| i.kind) {
        Some(pb::point_id::Kind::Num(n)) => Ok(PointId::Num(n)),
        Some(pb::point_id::Kind::Uuid(s)) => {
            uuid::Uuid::parse_str(&s).map(PointId::Uuid).map_err(|e| {
                Error::invalid(
                    field,
                    format!("{} is not a UUID: {e}", core::error::echo(&s)),
                )
            })
        }
        None => Err(Error::invalid(
            field,
            "point id is missing (set num or uuid)",
        )),
    }
}

pub fn point_id_to_pb(id: PointId) -> pb::PointId {
    pb::PointId {
        kind: Some(match id {
            PointId::Num(n) => pb::point_id::Kind::Num(n),
            PointId::Uuid(u) => pb::point_id::Kind::Uuid(u.to_string()),
        }),
    }
}

pub fn ids(field: &str, ids: Vec<pb::PointId>) -> Result<Vec<PointId>> {
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| point_id(&format!("{field}[{i}]"), Some(id)))
        .collect()
}

pub fn value(v: pb::Value) -> Value {
    use pb::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::IntegerValue(i)) => Value::Integer(i),
        Some(Kind::DoubleValue(d)) => Value::Double(d),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::List(l.values.into_iter().map(value).collect()),
        Some(Kind::StructValue(s)) => {
            Value::Object(s.fields.into_iter().map(|(k, v)| (k, value(v))).collect())
        }
    }
}

pub fn value_to_pb(v: Value) -> pb::Value {
    use pb::value::Kind;
    pb::Value {
        kind: Some(match v {
            Value::Null => Kind::NullValue(pb::NullValue::NullValue as i32),
            Value::Bool(b) => Kind::BoolValue(b),
            Value::Integer(i) => Kind::IntegerValue(i),
            Value::Double(d) => Kind::DoubleValue(d),
            Value::String(s) => Kind::StringValue(s),
            Value::List(l) => Kind::ListValue(pb::ListValue {
                values: l.into_iter().map(value_to_pb).collect(),
            }),
            Value::Object(m) => Kind::StructValue(pb::Struct {
                fields: m.into_iter().map(|(k, v)| (k, value_to_pb(v))).collect(),
            }),
        }),
    }
}

pub fn payload(p: std::collections::HashMap<String, pb::Value>) -> Payload {
    p.into_iter().map(|(k, v)| (k, value(v))).collect()
}

pub fn payload_to_pb(p: Payload) -> std::collections::HashMap<String, pb::Value> {
    p.into_iter().map(|(k, v)| (k, value_to_pb(v))).collect()
}

pub fn points(points: Vec<pb::Point>) -> Result<Vec<core::Point>> {
    points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(core::Point {
                id: point_id(&format!("points[{i}].id"), p.id)?,
                vector: p.vector,
                payload: payload(p.payload),
            })
        })
        .collect()
}

pub fn metric(field: &str, m: i32) -> Result<core::Metric> {
    match pb::Metric::try_from(m) {
        Ok(pb::Metric::Cosine) => Ok(core::Metric::Cosine),
        Ok(pb::Metric::Dot) => Ok(core::Metric::Dot),
        Ok(pb::Metric::L2) => Ok(core::Metric::L2),
        Ok(pb::Metric::Unspecified) => Err(Error::invalid(
            field,
            "metric is required: COSINE, DOT or L2",
        )),
        Err(_) => Err(Error::invalid(
            field,
            format!("unknown metric {m}; expected COSINE, DOT or L2"),
        )),
    }
}

pub fn metric_to_pb(m: core::Metric) -> pb::Metric {
    match m {
        core::Metric::Cosine => pb::Metric::Cosine,
        core::Metric::Dot => pb::Metric::Dot,
        core::Metric::L2 => pb::Metric::L2,
    }
}

pub fn collection_config(r: pb::CreateCollectionRequest) -> Result<core::CollectionConfig> {
    Ok(core::CollectionConfig {
        metric: metric("metric", r.metric)?,
        name: r.name,
        dim: r.dim,
        shard_count: r
            .shard_count
            .unwrap_or(core::CollectionConfig::DEFAULT_SHARD_COUNT),
        replication_factor: r
            .replication_factor
            .unwrap_or(core::CollectionConfig::DEFAULT_REPLICATION_FACTOR),
        hnsw: core::HnswParams {
            m: r.m.unwrap_or(core::HnswParams::DEFAULT_M),
            ef_construction: r
                .ef_construction
                .unwrap_or(core::HnswParams::DEFAULT_EF_CONSTRUCTION),
        },
    })
}

pub fn collection_info(info: shoal_cluster::CollectionInfo) -> pb::CollectionInfo {
    let c = info.config;
    pb::CollectionInfo {
        config: Some(pb::CollectionConfig {
            metric: metric_to_pb(c.metric) as i32,
            name: c.name,
            dim: c.dim,
            shard_count: c.shard_count,
            replication_factor: c.replication_factor,
            m: c.hnsw.m,
            ef_construction: c.hnsw.ef_construction,
        }),
        points_count: info.points,
        shards: info
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| pb::ShardInfo {
                shard: i as u32,
                points_count: s.points,
                tombstones: s.tombstones,
                applied_seq: s.applied_seq,
            })
            .collect(),
    }
}

pub fn filter(field: &str, f: pb::Filter) -> Result<Filter> {
    let clause = |name: &str, conds: Vec<pb::Condition>| -> Result<Vec<Condition>> {
        conds
            .into_iter()
            .enumerate()
            .map(|(i, c)| condition(&format!("{field}.{name}[{i}]"), c))
            .collect()
    };
    Ok(Filter {
        must: clause("must", f.must)?,
        should: clause("should", f.should)?,
        must_not: clause("must_not", f.must_not)?,
    })
}

fn condition(field: &str, c: pb::Condition) -> Result<Condition> {
    use pb::condition::Kind;
    Ok(match c.kind {
        Some(Kind::Keyword(m)) => Condition::Keyword {
            key: m.key,
            any: m.any,
        },
        Some(Kind::Integer(m)) => Condition::Integer {
            key: m.key,
            any: m.any,
        },
        Some(Kind::Range(r)) => Condition::Range {
            key: r.key,
            gt: r.gt,
            gte: r.gte,
            lt: r.lt,
            lte: r.lte,
        },
        Some(Kind::IsNull(k)) => Condition::IsNull { key: k.key },
        Some(Kind::IsEmpty(k)) => Condition::IsEmpty { key: k.key },
        Some(Kind::HasId(h)) => Condition::HasId {
            ids: ids(&format!("{field}.has_id.ids"), h.ids)?
                .into_iter()
                .collect(),
        },
        Some(Kind::Filter(f)) => Condition::Nested(filter(&format!("{field}.filter"), f)?),
        None => {
            return Err(Error::invalid(
                field,
                "condition is empty: set one of its kinds",
            ));
        }
    })
}

pub fn search(field: &str, r: pb::SearchRequest) -> Result<core::SearchRequest> {
    Ok(core::SearchRequest {
        filter: r
            .filter
            .map(|f| filter(&prefixed(field, "filter"), f))
            .transpose()?,
        vector: r.vector,
        top_k: r.top_k,
        ef: r.ef,
        with_payload: r.with_payload,
        with_vector: r.with_vector,
    })
}

fn prefixed(field: &str, name: &str) -> String {
    if field.is_empty() {
        name.to_string()
    } else {
        format!("{field}.{name}")
    }
}

pub fn scored(points: Vec<core::ScoredPoint>) -> pb::SearchResponse {
    pb::SearchResponse {
        results: points
            .into_iter()
            .map(|p| pb::ScoredPoint {
                id: Some(point_id_to_pb(p.id)),
                score: p.score,
                vector: p.vector.unwrap_or_default(),
                payload: p.payload.map(payload_to_pb).unwrap_or_default(),
            })
            .collect(),
    }
}

pub fn retrieved(p: core::RetrievedPoint) -> pb::RetrievedPoint {
    pb::RetrievedPoint {
        id: Some(point_id_to_pb(p.id)),
        vector: p.vector.unwrap_or_default(),
        payload: p.payload.map(payload_to_pb).unwrap_or_default(),
    }
}

/// The read options of a request (absent: EVENTUAL).
pub fn read_options(field: &str, r: Option<pb::ReadOptions>) -> Result<shoal_cluster::ReadOptions> {
    use shoal_cluster::Consistency;
    let Some(r) = r else {
        return Ok(shoal_cluster::ReadOptions::default());
    };
    let consistency = match pb::Consistency::try_from(r.consistency) {
        Ok(pb::Consistency::Unspecified) | Ok(pb::Consistency::Eventual) => Consistency::Eventual,
        Ok(pb::Consistency::Session) => Consistency::Session,
        Ok(pb::Consistency::Strong) => Consistency::Strong,
        Err(_) => {
            return Err(core::Error::invalid(
                format!("{field}.consistency"),
                format!("unknown consistency {}", r.consistency),
            ));
        }
    };
    let token = r.token.map(|t| shoal_cluster::WriteToken {
        collection_id: t.collection_id,
        shards: t.shards.into_iter().map(|s| (s.shard, s.index)).collect(),
    });
    Ok(shoal_cluster::ReadOptions { consistency, token })
}

/// A write's reply.
pub fn write_response(o: shoal_cluster::WriteOutcome) -> pb::WriteResponse {
    pb::WriteResponse {
        count: o.count,
        token: Some(pb::WriteToken {
            collection_id: o.token.collection_id,
            shards: o
                .token
                .shards
                .into_iter()
                .map(|(shard, index)| pb::ShardIndex { shard, index })
                .collect(),
        }),
    }
}

/// The cluster status as sent to clients.
pub fn cluster_status(s: shoal_cluster::ClusterStatus) -> pb::ClusterStatus {
    pb::ClusterStatus {
        node_id: s.node_id,
        metadata_leader: s.metadata_leader,
        nodes: s
            .nodes
            .into_iter()
            .map(|n| pb::NodeStatus {
                id: n.id,
                address: n.address,
                reachable: n.reachable,
                error: n.error.unwrap_or_default(),
                state: n.state,
                voter: n.voter,
                failure: n.failure.unwrap_or_default(),
                load: n.load.map(|l| pb::NodeLoad {
                    cpu_percent: l.cpu_percent,
                    rss_bytes: l.rss_bytes,
                    requests_per_second: l.requests_per_second,
                    points: l.points,
                    replicas: l.replicas,
                    leaders: l.leaders,
                }),
            })
            .collect(),
        operations: s
            .operations
            .into_iter()
            .map(|o| pb::OperationStatus {
                id: o.id,
                description: o.description,
                progress: o.progress,
            })
            .collect(),
        collections: s
            .collections
            .into_iter()
            .map(|c| pb::CollectionStatus {
                name: c.name,
                id: c.id,
                routing_version: c.routing_version,
                shards: c
                    .shards
                    .into_iter()
                    .map(|sh| pb::ShardStatus {
                        shard: sh.shard,
                        hash_first: sh.range.first,
                        hash_last: sh.range.last,
                        leader: sh.leader,
                        replicas: sh
                            .replicas
                            .into_iter()
                            .map(|r| match r.report {
                                Some(rep) => pb::ReplicaStatus {
                                    node: r.node,
                                    state: rep.state,
                                    applied_index: rep.applied,
                                    points: rep.points,
                                    digest: rep.digest.map(|d| format!("{d:016x}")),
                                    term: rep.term,
                                    quarantined: rep.quarantined,
                                    failure: rep.failure.unwrap_or_default(),
                                },
                                None => pb::ReplicaStatus {
                                    node: r.node,
                                    state: "unreachable".into(),
                                    applied_index: 0,
                                    points: 0,
                                    digest: None,
                                    term: 0,
                                    quarantined: 0,
                                    failure: String::new(),
                                },
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_uuid_is_not_echoed_whole() {
        let huge = "z".repeat(1 << 20);
        let id = pb::PointId {
            kind: Some(pb::point_id::Kind::Uuid(huge)),
        };
        match point_id("points[0].id", Some(id)).unwrap_err() {
            Error::InvalidArgument { field, reason } => {
                assert_eq!(field, "points[0].id");
                assert!(reason.len() < 300, "{} bytes", reason.len());
                assert!(reason.contains("is not a UUID"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
