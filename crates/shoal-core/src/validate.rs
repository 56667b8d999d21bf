//! Validation rules, next to the types they guard.
//!
//! Every write and query passes through here before it touches a shard. Each function
//! returns the first problem found as an [`Error`] whose `field` is a path into the
//! request (`points[2].vector[5]`), so a client can tell exactly what to fix. Functions
//! that accept vectors return them *prepared* (see [`crate::vector::prepare`]).

use std::collections::HashSet;

use crate::{
    CollectionConfig, Condition, Error, Filter, HnswParams, Limits, Metric, Payload, Point,
    PointId, Result, SearchRequest, Value,
};

/// Deepest payload value nesting accepted (scalars are depth 1).
pub const MAX_PAYLOAD_DEPTH: usize = 32;
/// Deepest filter nesting accepted.
pub const MAX_FILTER_DEPTH: usize = 16;
/// Most conditions in one filter, counted over all nesting levels.
pub const MAX_FILTER_CONDITIONS: usize = 1_024;
/// Longest payload key or filter key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Collection names: 1–64 characters of `[A-Za-z0-9_-]`, not starting with `-`.
pub fn collection_name(name: &str) -> Result<()> {
    let field = "collection";
    if name.is_empty() {
        return Err(Error::invalid(field, "collection name must not be empty"));
    }
    if name.len() > CollectionConfig::MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!(
                "collection name is {} bytes; at most {} allowed",
                name.len(),
                CollectionConfig::MAX_NAME_LEN
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Error::invalid(
            field,
            format!("collection name {name:?} contains {c:?}; only A-Z a-z 0-9 _ - are allowed"),
        ));
    }
    if name.starts_with('-') {
        return Err(Error::invalid(
            field,
            "collection name must not start with '-'",
        ));
    }
    Ok(())
}

fn in_range(field: &str, value: u32, lo: u32, hi: u32) -> Result<()> {
    if value < lo || value > hi {
        return Err(Error::invalid(
            field,
            format!("{value} is out of range; must be between {lo} and {hi}"),
        ));
    }
    Ok(())
}

/// Checks a collection definition.
pub fn collection_config(cfg: &CollectionConfig, limits: &Limits) -> Result<()> {
    collection_name(&cfg.name)?;
    in_range("dim", cfg.dim, 1, limits.max_dim)?;
    in_range(
        "shard_count",
        cfg.shard_count,
        1,
        CollectionConfig::MAX_SHARD_COUNT,
    )?;
    in_range(
        "replication_factor",
        cfg.replication_factor,
        1,
        CollectionConfig::MAX_REPLICATION_FACTOR,
    )?;
    in_range("hnsw.m", cfg.hnsw.m, 2, HnswParams::MAX_M)?;
    in_range(
        "hnsw.ef_construction",
        cfg.hnsw.ef_construction,
        1,
        HnswParams::MAX_EF_CONSTRUCTION,
    )?;
    Ok(())
}

/// Checks one vector against the collection and returns it prepared for the index.
pub fn vector(cfg: &CollectionConfig, field: &str, v: Vec<f32>) -> Result<Vec<f32>> {
    if v.len() != cfg.dim as usize {
        return Err(Error::invalid(
            field,
            format!(
                "vector has {} components; collection {:?} has dim {}",
                v.len(),
                cfg.name,
                cfg.dim
            ),
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            format!("{field}[{i}]"),
            format!("component is {}; vectors must be finite", v[i]),
        ));
    }
    if cfg.metric == Metric::Cosine {
        let n = crate::vector::norm_sq(&v);
        if n == 0.0 || !n.is_finite() {
            return Err(Error::invalid(
                field,
                "a COSINE vector must have a non-zero, finite length",
            ));
        }
    }
    Ok(crate::vector::prepare(cfg.metric, v))
}

/// Approximate encoded size of a value, for the payload size limit.
fn value_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 1,
        Value::Integer(_) | Value::Double(_) => 9,
        Value::String(s) => 5 + s.len(),
        Value::List(items) => 5 + items.iter().map(value_size).sum::<usize>(),
        Value::Object(map) => {
            5 + map
                .iter()
                .map(|(k, v)| 5 + k.len() + value_size(v))
                .sum::<usize>()
        }
    }
}

fn payload(field: &str, p: &Payload, limits: &Limits) -> Result<()> {
    let mut size = 0;
    for (k, v) in p {
        if k.is_empty() || k.len() > MAX_KEY_LEN {
            return Err(Error::invalid(
                field,
                format!("payload keys must be 1 to {MAX_KEY_LEN} bytes"),
            ));
        }
        if v.depth() > MAX_PAYLOAD_DEPTH {
            return Err(Error::invalid(
                format!("{field}.{k}"),
                format!("value nests deeper than {MAX_PAYLOAD_DEPTH} levels"),
            ));
        }
        if let Some(bad) = first_non_finite(v) {
            return Err(Error::invalid(
                format!("{field}.{k}"),
                format!("payload numbers must be finite, found {bad}"),
            ));
        }
        size += 5 + k.len() + value_size(v);
    }
    if size > limits.max_payload_bytes {
        return Err(Error::exhausted(
            field,
            format!(
                "payload is about {size} bytes; at most {} allowed",
                limits.max_payload_bytes
            ),
        ));
    }
    Ok(())
}

fn first_non_finite(v: &Value) -> Option<f64> {
    match v {
        Value::Double(d) if !d.is_finite() => Some(*d),
        Value::List(items) => items.iter().find_map(first_non_finite),
        Value::Object(map) => map.values().find_map(first_non_finite),
        _ => None,
    }
}

fn batch_size(field: &str, n: usize, max: usize, what: &str) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(
            field,
            format!("at least one {what} is required"),
        ));
    }
    if n > max {
        return Err(Error::exhausted(
            field,
            format!("{n} {what}s in one request; at most {max} allowed"),
        ));
    }
    Ok(())
}

/// Checks an upsert batch and returns its points prepared for the index.
pub fn upsert(cfg: &CollectionConfig, points: Vec<Point>, limits: &Limits) -> Result<Vec<Point>> {
    batch_size("points", points.len(), limits.max_batch_points, "point")?;
    let mut seen = HashSet::with_capacity(points.len());
    points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            if !seen.insert(p.id) {
                return Err(Error::invalid(
                    format!("points[{i}].id"),
                    format!("id {} appears more than once in this batch", p.id),
                ));
            }
            payload(&format!("points[{i}].payload"), &p.payload, limits)?;
            let vector = vector(cfg, &format!("points[{i}].vector"), p.vector)?;
            Ok(Point { vector, ..p })
        })
        .collect()
}

/// Checks a list of ids (for `Delete` and `Get`) and returns them without duplicates,
/// in first-seen order.
pub fn ids(ids: Vec<PointId>, limits: &Limits) -> Result<Vec<PointId>> {
    batch_size("ids", ids.len(), limits.max_batch_points, "id")?;
    let mut seen = HashSet::with_capacity(ids.len());
    Ok(ids.into_iter().filter(|id| seen.insert(*id)).collect())
}

/// Checks a filter's structure and bounds.
pub fn filter(field: &str, f: &Filter) -> Result<()> {
    if f.depth() > MAX_FILTER_DEPTH {
        return Err(Error::invalid(
            field,
            format!("filter nests deeper than {MAX_FILTER_DEPTH} levels"),
        ));
    }
    let mut count = 0;
    filter_inner(field, f, &mut count)
}

fn filter_inner(field: &str, f: &Filter, count: &mut usize) -> Result<()> {
    for (clause, conds) in [
        ("must", &f.must),
        ("should", &f.should),
        ("must_not", &f.must_not),
    ] {
        for (i, c) in conds.iter().enumerate() {
            *count += 1;
            if *count > MAX_FILTER_CONDITIONS {
                return Err(Error::exhausted(
                    field,
                    format!("more than {MAX_FILTER_CONDITIONS} conditions"),
                ));
            }
            condition(&format!("{field}.{clause}[{i}]"), c, count)?;
        }
    }
    Ok(())
}

fn key(field: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(
            format!("{field}.key"),
            format!("key must be 1 to {MAX_KEY_LEN} bytes"),
        ));
    }
    Ok(())
}

fn condition(field: &str, c: &Condition, count: &mut usize) -> Result<()> {
    match c {
        Condition::Keyword { key: k, any } => {
            key(field, k)?;
            if any.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.any"),
                    "give at least one value to match",
                ));
            }
        }
        Condition::Integer { key: k, any } => {
            key(field, k)?;
            if any.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.any"),
                    "give at least one value to match",
                ));
            }
        }
        Condition::Range {
            key: k,
            gt,
            gte,
            lt,
            lte,
        } => {
            key(field, k)?;
            let bounds = [("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)];
            if bounds.iter().all(|(_, b)| b.is_none()) {
                return Err(Error::invalid(
                    field,
                    "a range needs at least one of gt, gte, lt, lte",
                ));
            }
            for (name, b) in bounds {
                if let Some(b) = b
                    && b.is_nan()
                {
                    return Err(Error::invalid(format!("{field}.{name}"), "bound is NaN"));
                }
            }
        }
        Condition::IsNull { key: k } | Condition::IsEmpty { key: k } => key(field, k)?,
        Condition::HasId { ids } => {
            if ids.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.ids"),
                    "give at least one id",
                ));
            }
        }
        Condition::Nested(f) => filter_inner(&format!("{field}.filter"), f, count)?,
    }
    Ok(())
}

/// Checks a search and prepares its query vector. `field` prefixes error paths (e.g.
/// `searches[3]` in a batch; empty for a single search).
pub fn search(
    cfg: &CollectionConfig,
    field: &str,
    mut req: SearchRequest,
    limits: &Limits,
) -> Result<SearchRequest> {
    let path = |name: &str| {
        if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        }
    };
    in_range(&path("top_k"), req.top_k, 1, limits.max_top_k)?;
    if let Some(ef) = req.ef {
        in_range(&path("ef"), ef, 1, limits.max_ef)?;
    }
    if let Some(f) = &req.filter {
        filter(&path("filter"), f)?;
    }
    req.vector = vector(cfg, &path("vector"), std::mem::take(&mut req.vector))?;
    Ok(req)
}

/// Checks the number of queries in a `SearchBatch`.
pub fn search_batch_len(n: usize, limits: &Limits) -> Result<()> {
    batch_size("searches", n, limits.max_search_batch, "search")
}

/// Checks a `Scroll` page size.
pub fn scroll_limit(limit: u32, limits: &Limits) -> Result<()> {
    in_range("limit", limit, 1, limits.max_scroll_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(metric: Metric) -> CollectionConfig {
        CollectionConfig {
            name: "c".into(),
            dim: 3,
            metric,
            shard_count: 1,
            replication_factor: 1,
            hnsw: HnswParams::default(),
        }
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::InvalidArgument { field, .. } | Error::ResourceExhausted { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn names() {
        assert!(collection_name("docs_v2-en").is_ok());
        for bad in ["", "a b", "-x", "é", &"x".repeat(65), "a/b", "a.b"] {
            assert!(collection_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vectors() {
        let c = cfg(Metric::Cosine);
        assert_eq!(field_of(vector(&c, "v", vec![1.0, 2.0]).unwrap_err()), "v");
        assert_eq!(
            field_of(vector(&c, "v", vec![1.0, f32::NAN, 0.0]).unwrap_err()),
            "v[1]"
        );
        assert_eq!(
            field_of(vector(&c, "v", vec![f32::INFINITY, 0.0, 0.0]).unwrap_err()),
            "v[0]"
        );
        assert_eq!(field_of(vector(&c, "v", vec![0.0; 3]).unwrap_err()), "v");
        let v = vector(&c, "v", vec![3.0, 0.0, 4.0]).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[2] - 0.8).abs() < 1e-6);
        // Zero vectors are fine for DOT and L2; huge components do not overflow the norm.
        assert!(vector(&cfg(Metric::L2), "v", vec![0.0; 3]).is_ok());
        assert!(vector(&c, "v", vec![f32::MAX, f32::MAX, 0.0]).is_ok());
    }

    #[test]
    fn upsert_batches() {
        let c = cfg(Metric::L2);
        let limits = Limits {
            max_batch_points: 2,
            ..Limits::default()
        };
        let p = |id| Point {
            id: PointId::Num(id),
            vector: vec![0.0; 3],
            payload: Payload::new(),
        };
        assert!(matches!(
            upsert(&c, vec![], &limits),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            upsert(&c, vec![p(1), p(2), p(3)], &limits),
            Err(Error::ResourceExhausted { .. })
        ));
        assert_eq!(
            field_of(upsert(&c, vec![p(1), p(1)], &limits).unwrap_err()),
            "points[1].id"
        );
        let mut deep = Value::Null;
        for _ in 0..40 {
            deep = Value::List(vec![deep]);
        }
        let mut q = p(1);
        q.payload.insert("k".into(), deep);
        assert_eq!(
            field_of(upsert(&c, vec![q], &limits).unwrap_err()),
            "points[0].payload.k"
        );
    }

    #[test]
    fn searches() {
        let c = cfg(Metric::L2);
        let l = Limits::default();
        let s = |top_k, ef| SearchRequest {
            vector: vec![0.0; 3],
            top_k,
            ef,
            filter: None,
            with_payload: false,
            with_vector: false,
        };
        assert_eq!(
            field_of(search(&c, "", s(0, None), &l).unwrap_err()),
            "top_k"
        );
        assert_eq!(
            field_of(search(&c, "q[1]", s(10_001, None), &l).unwrap_err()),
            "q[1].top_k"
        );
        assert_eq!(
            field_of(search(&c, "", s(10, Some(10_001)), &l).unwrap_err()),
            "ef"
        );
        assert!(search(&c, "", s(10, Some(100)), &l).is_ok());
        let mut bad = s(10, None);
        bad.filter = Some(Filter {
            must: vec![Condition::Range {
                key: "x".into(),
                gt: Some(f64::NAN),
                gte: None,
                lt: None,
                lte: None,
            }],
            ..Filter::default()
        });
        assert_eq!(
            field_of(search(&c, "", bad, &l).unwrap_err()),
            "filter.must[0].gt"
        );
    }
}
