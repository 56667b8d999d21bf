//! Validation rules, next to the types they guard.
//!
//! Every write and query passes through here before it touches a shard. Each function
//! returns the first problem found as an [`Error`] whose `field` is a path into the
//! request (`points[2].vector[5]`), so a client can tell exactly what to fix. Functions
//! that accept vectors return them *prepared* (see [`crate::vector::prepare`]).
//!
//! One rule picks the code: a value over a bound of the server's configuration
//! ([`Limits`], the `--max-*` flags: dim, top_k, ef, scroll limit, batch sizes,
//! payload bytes) is [`Error::ResourceExhausted`] (another server, or this one
//! configured otherwise, may accept it); anything wrong whatever the configuration
//! (empty, zero, below a minimum, over a bound fixed by the API such as `hnsw.m`,
//! nesting depth, key length or filter conditions, malformed, not finite) is
//! [`Error::InvalidArgument`]. Input repeated in a message is cut short
//! ([`crate::error::echo`]).

use std::collections::HashSet;

use crate::error::echo;
use crate::vector::{MAX_COMPONENT, MAX_DIM};
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
            format!(
                "collection name {} contains {c:?}; only A-Z a-z 0-9 _ - are allowed",
                echo(name)
            ),
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

/// A value with bounds fixed by the API: out of them is `INVALID_ARGUMENT`.
fn in_range(field: &str, value: u32, lo: u32, hi: u32) -> Result<()> {
    if value < lo || value > hi {
        return Err(Error::invalid(
            field,
            format!("{value} is out of range; must be between {lo} and {hi}"),
        ));
    }
    Ok(())
}

/// A value whose maximum is the server's configuration (`flag`): below `lo` is
/// `INVALID_ARGUMENT`, over `hi` `RESOURCE_EXHAUSTED`.
fn within_limit(field: &str, value: u32, lo: u32, hi: u32, flag: &str) -> Result<()> {
    if value < lo {
        return Err(Error::invalid(
            field,
            format!("{value} is out of range; must be between {lo} and {hi}"),
        ));
    }
    if value > hi {
        return Err(Error::exhausted(
            field,
            format!("{value} is over this server's limit of {hi} ({flag})"),
        ));
    }
    Ok(())
}

/// Checks a collection definition.
pub fn collection_config(cfg: &CollectionConfig, limits: &Limits) -> Result<()> {
    collection_name(&cfg.name)?;
    within_limit("dim", cfg.dim, 1, limits.max_dim.min(MAX_DIM), "--max-dim")?;
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
/// The range accepted (see [`crate::vector`]) is the one in which every score is a
/// finite number.
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
        let v = crate::vector::prepare(cfg.metric, v);
        // Normalising in f64 always succeeds for a finite non-zero vector; should a
        // change ever break that, refuse rather than store a vector that scores NaN.
        let n = crate::vector::norm_sq(&v);
        if !(0.5..=2.0).contains(&n) || v.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(
                field,
                "this COSINE vector cannot be normalised to unit length",
            ));
        }
        return Ok(v);
    }
    if let Some(i) = v.iter().position(|x| x.abs() > MAX_COMPONENT) {
        return Err(Error::invalid(
            format!("{field}[{i}]"),
            format!(
                "component is {}; L2 and DOT vectors must have components between -{MAX_COMPONENT:e} and {MAX_COMPONENT:e}",
                v[i]
            ),
        ));
    }
    Ok(v)
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

/// A payload key, at any depth: 1 to [`MAX_KEY_LEN`] bytes, without `.` (a filter
/// key's dots separate path segments, so a key containing one could never be
/// matched). The reason of the refusal, if any.
fn payload_key_problem(k: &str) -> Option<String> {
    if k.is_empty() || k.len() > MAX_KEY_LEN {
        return Some(format!("payload keys must be 1 to {MAX_KEY_LEN} bytes"));
    }
    if k.contains('.') {
        return Some(format!(
            "payload key {} contains '.'; filter keys use '.' to separate path segments, so such a key could never be matched",
            echo(k)
        ));
    }
    None
}

/// One step of a path into a payload value.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The first problem inside a payload value: the path to it (innermost step first,
/// so it is built only on the way out of an error) and the reason.
fn value_problem(v: &Value) -> Option<(Vec<Step<'_>>, String)> {
    match v {
        Value::Double(d) if !d.is_finite() => Some((
            Vec::new(),
            format!("payload numbers must be finite, found {d}"),
        )),
        Value::List(items) => items.iter().enumerate().find_map(|(i, x)| {
            value_problem(x).map(|(mut path, why)| {
                path.push(Step::Index(i));
                (path, why)
            })
        }),
        Value::Object(map) => map.iter().find_map(|(k, x)| {
            if let Some(why) = payload_key_problem(k) {
                return Some((Vec::new(), why));
            }
            value_problem(x).map(|(mut path, why)| {
                path.push(Step::Key(k));
                (path, why)
            })
        }),
        _ => None,
    }
}

fn payload(field: &str, p: &Payload, limits: &Limits) -> Result<()> {
    let mut size = 0;
    for (k, v) in p {
        if let Some(why) = payload_key_problem(k) {
            return Err(Error::invalid(field, why));
        }
        if v.depth() > MAX_PAYLOAD_DEPTH {
            return Err(Error::invalid(
                format!("{field}.{k}"),
                format!("value nests deeper than {MAX_PAYLOAD_DEPTH} levels"),
            ));
        }
        if let Some((steps, why)) = value_problem(v) {
            let mut path = format!("{field}.{k}");
            for step in steps.iter().rev() {
                match step {
                    Step::Key(k) => path.push_str(&format!(".{k}")),
                    Step::Index(i) => path.push_str(&format!("[{i}]")),
                }
            }
            return Err(Error::invalid(path, why));
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

/// The number of items of a batch: at least one, at most `max` (`flag`). `what` is
/// `(singular, plural)`.
fn batch_size(field: &str, n: usize, max: usize, what: (&str, &str), flag: &str) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(
            field,
            format!("at least one {} is required", what.0),
        ));
    }
    if n > max {
        return Err(Error::exhausted(
            field,
            format!(
                "{n} {} in one request; this server allows at most {max} ({flag})",
                what.1
            ),
        ));
    }
    Ok(())
}

/// Checks an upsert batch and returns its points prepared for the index.
pub fn upsert(cfg: &CollectionConfig, points: Vec<Point>, limits: &Limits) -> Result<Vec<Point>> {
    batch_size(
        "points",
        points.len(),
        limits.max_batch_points,
        ("point", "points"),
        "--max-batch-points",
    )?;
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

/// Largest payload a stored point may have, whatever a server's `--max-payload-bytes`
/// (which cannot be set above it).
pub const MAX_STORED_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Re-checks a point as it is stored, or about to be applied from a Raft log, against
/// what every replica agrees on whatever its flags: the collection's dimension and
/// metric, finite components in range (unit length for COSINE, which is stored
/// normalised), a well-formed payload of at most [`MAX_STORED_PAYLOAD_BYTES`]. A
/// point that passed [`upsert`] always passes; one that fails was never accepted
/// through the API (a forged or corrupted entry or record), and storing or indexing it
/// would fail later. Deterministic: every replica decides the same way.
pub fn stored_point(cfg: &CollectionConfig, field: &str, p: &Point) -> Result<()> {
    let v = &p.vector;
    if v.len() != cfg.dim as usize {
        return Err(Error::invalid(
            format!("{field}.vector"),
            format!(
                "vector has {} components; the shard's dim is {}",
                v.len(),
                cfg.dim
            ),
        ));
    }
    if let Some(i) = v
        .iter()
        .position(|x| !x.is_finite() || x.abs() > MAX_COMPONENT)
    {
        return Err(Error::invalid(
            format!("{field}.vector[{i}]"),
            format!("component {} is not finite or out of range", v[i]),
        ));
    }
    if cfg.metric == Metric::Cosine && !(0.5..=2.0).contains(&crate::vector::norm_sq(v)) {
        return Err(Error::invalid(
            format!("{field}.vector"),
            "a stored COSINE vector must have unit length",
        ));
    }
    let limits = Limits {
        max_payload_bytes: MAX_STORED_PAYLOAD_BYTES,
        ..Limits::default()
    };
    payload(&format!("{field}.payload"), &p.payload, &limits)
}

/// [`stored_point`] for every point of a write (deletes always pass: any id is one).
pub fn stored_write(cfg: &CollectionConfig, write: &crate::Write) -> Result<()> {
    match write {
        crate::Write::Upsert(points) => points
            .iter()
            .enumerate()
            .try_for_each(|(i, p)| stored_point(cfg, &format!("points[{i}]"), p)),
        crate::Write::Delete(_) => Ok(()),
    }
}

/// Checks a list of ids (for `Delete` and `Get`) and returns them without duplicates,
/// in first-seen order.
pub fn ids(ids: Vec<PointId>, limits: &Limits) -> Result<Vec<PointId>> {
    batch_size(
        "ids",
        ids.len(),
        limits.max_batch_points,
        ("id", "ids"),
        "--max-batch-points",
    )?;
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
                return Err(Error::invalid(
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
    within_limit(
        &path("top_k"),
        req.top_k,
        1,
        limits.max_top_k,
        "--max-top-k",
    )?;
    if let Some(ef) = req.ef {
        within_limit(&path("ef"), ef, 1, limits.max_ef, "--max-ef")?;
    }
    if let Some(f) = &req.filter {
        filter(&path("filter"), f)?;
    }
    req.vector = vector(cfg, &path("vector"), std::mem::take(&mut req.vector))?;
    Ok(req)
}

/// Checks the number of queries in a `SearchBatch`.
pub fn search_batch_len(n: usize, limits: &Limits) -> Result<()> {
    batch_size(
        "searches",
        n,
        limits.max_search_batch,
        ("search", "searches"),
        "--max-search-batch",
    )
}

/// Checks the results a `SearchBatch` asks for in all (the sum of its `top_k`), before
/// any work: a batch within every per-query limit can still ask for more than a reply
/// can carry or a node should merge.
pub fn search_batch_results(reqs: &[SearchRequest], limits: &Limits) -> Result<()> {
    let total: u64 = reqs.iter().map(|r| u64::from(r.top_k)).sum();
    if total > limits.max_batch_results as u64 {
        return Err(Error::exhausted(
            "searches",
            format!(
                "the batch asks for {total} results in all (the sum of its top_k); at most {} \
                 allowed (--max-batch-results): split it, or lower top_k",
                limits.max_batch_results
            ),
        ));
    }
    Ok(())
}

/// Checks a `Scroll` page size.
pub fn scroll_limit(limit: u32, limits: &Limits) -> Result<()> {
    within_limit(
        "limit",
        limit,
        1,
        limits.max_scroll_limit,
        "--max-scroll-limit",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_points_pass_only_what_validation_could_have_produced() {
        let limits = Limits::default();
        for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
            let c = cfg(metric);
            let mut payload = Payload::new();
            payload.insert("k".into(), Value::Double(1.5));
            let valid = upsert(
                &c,
                vec![Point {
                    id: PointId::Num(1),
                    vector: vec![3.0, -4.0, 0.5],
                    payload,
                }],
                &limits,
            )
            .unwrap();
            stored_write(&c, &crate::Write::Upsert(valid.clone())).unwrap();
            let with = |f: &dyn Fn(&mut Point)| {
                let mut p = valid[0].clone();
                f(&mut p);
                stored_point(&c, "points[0]", &p).unwrap_err()
            };
            let e = with(&|p| p.vector.push(1.0));
            assert!(e.to_string().contains("points[0].vector"), "{e}");
            let e = with(&|p| p.vector[1] = f32::NAN);
            assert!(e.to_string().contains("points[0].vector[1]"), "{e}");
            with(&|p| p.vector[2] = f32::INFINITY);
            with(&|p| {
                p.payload.insert("bad".into(), Value::Double(f64::NAN));
            });
            with(&|p| {
                p.payload.insert("a.b".into(), Value::Null);
            });
            with(&|p| {
                p.payload.insert(
                    "big".into(),
                    Value::String("x".repeat(MAX_STORED_PAYLOAD_BYTES)),
                );
            });
            if metric == Metric::Cosine {
                // Stored COSINE vectors are unit length.
                with(&|p| p.vector = vec![3.0, 4.0, 0.0]);
            }
        }
        // Deletes always pass.
        stored_write(
            &cfg(Metric::L2),
            &crate::Write::Delete(vec![PointId::Num(9)]),
        )
        .unwrap();
    }

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
    fn vectors_stay_in_the_range_where_scores_are_finite() {
        // A tiny COSINE vector used to be stored as [inf, NaN, ...] (1/n overflowed).
        let c = cfg(Metric::Cosine);
        for tiny in [1e-40f32, f32::from_bits(1)] {
            let v = vector(&c, "v", vec![tiny, 0.0, 0.0]).unwrap();
            assert_eq!(v, vec![1.0, 0.0, 0.0], "{tiny}");
        }
        // L2 and DOT: components past the bound are refused with their exact path.
        for metric in [Metric::L2, Metric::Dot] {
            let m = cfg(metric);
            let e = vector(&m, "p.v", vec![1.0, -1e16, 0.0]).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
            assert_eq!(field_of(e), "p.v[1]");
            assert_eq!(
                field_of(vector(&m, "v", vec![f32::MAX, 0.0, 0.0]).unwrap_err()),
                "v[0]"
            );
            assert!(vector(&m, "v", vec![MAX_COMPONENT, -MAX_COMPONENT, 0.0]).is_ok());
        }
    }

    #[test]
    fn limits_over_the_configuration_are_resource_exhausted() {
        let c = cfg(Metric::L2);
        let l = Limits {
            max_top_k: 10,
            max_ef: 20,
            max_scroll_limit: 5,
            max_dim: 8,
            ..Limits::default()
        };
        let s = |top_k, ef| SearchRequest {
            vector: vec![0.0; 3],
            top_k,
            ef,
            filter: None,
            with_payload: false,
            with_vector: false,
        };
        assert!(matches!(
            search(&c, "", s(11, None), &l),
            Err(Error::ResourceExhausted { field, reason }) if field == "top_k" && reason.contains("--max-top-k")
        ));
        assert!(matches!(
            search(&c, "", s(10, Some(21)), &l),
            Err(Error::ResourceExhausted { field, .. }) if field == "ef"
        ));
        assert!(matches!(
            search(&c, "", s(0, None), &l),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            scroll_limit(6, &l),
            Err(Error::ResourceExhausted { .. })
        ));
        assert!(matches!(
            scroll_limit(0, &l),
            Err(Error::InvalidArgument { .. })
        ));
        let mut big = c.clone();
        big.dim = 9;
        assert!(matches!(
            collection_config(&big, &l),
            Err(Error::ResourceExhausted { field, .. }) if field == "dim"
        ));
        // Bounds fixed by the API stay INVALID_ARGUMENT.
        let mut m = c.clone();
        m.hnsw.m = HnswParams::MAX_M + 1;
        assert!(matches!(
            collection_config(&m, &l),
            Err(Error::InvalidArgument { .. })
        ));
        // However high --max-dim is set, dims stay within the range where the
        // component bound keeps scores finite.
        let mut huge = c.clone();
        huge.dim = MAX_DIM + 1;
        let open = Limits {
            max_dim: u32::MAX,
            ..Limits::default()
        };
        assert!(collection_config(&huge, &open).is_err());
        // Plurals are spelled right.
        let e = search_batch_len(1025, &Limits::default()).unwrap_err();
        assert!(
            e.to_string().contains("1025 searches in one request"),
            "{e}"
        );
    }

    #[test]
    fn a_batch_asking_for_too_many_results_is_refused_up_front() {
        let q = |top_k| SearchRequest {
            vector: vec![1.0, 0.0, 0.0],
            top_k,
            ef: None,
            filter: None,
            with_payload: false,
            with_vector: false,
        };
        let limits = Limits::default();
        // 1,024 queries of top_k 10,000: each within --max-top-k, 10.24M in all.
        let big = vec![q(10_000); 1024];
        let e = search_batch_results(&big, &limits).unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted { ref field, .. } if field == "searches"));
        assert!(
            e.to_string().contains("10240000 results")
                && e.to_string().contains("--max-batch-results"),
            "{e}"
        );
        // At the bound: accepted.
        let at = vec![q(100); 1000];
        assert!(search_batch_results(&at, &limits).is_ok());
        assert!(search_batch_results(&[at.clone(), vec![q(1)]].concat(), &limits).is_err());
    }

    #[test]
    fn payload_keys_are_checked_at_every_depth() {
        let c = cfg(Metric::L2);
        let limits = Limits::default();
        let with = |k: &str, v: Value| {
            let mut payload = Payload::new();
            payload.insert(k.into(), v);
            vec![Point {
                id: PointId::Num(1),
                vector: vec![0.0; 3],
                payload,
            }]
        };
        let obj = |k: &str, v: Value| Value::Object([(k.to_string(), v)].into_iter().collect());
        let refused = |points| match upsert(&c, points, &limits).unwrap_err() {
            Error::InvalidArgument { field, reason } => (field, reason),
            other => panic!("{other:?}"),
        };
        // A dotted key could never be matched by a filter: refused, at any depth.
        let (field, reason) = refused(with("a.b", Value::Integer(1)));
        assert_eq!(field, "points[0].payload");
        assert!(
            reason.contains("\"a.b\"") && reason.contains("'.'"),
            "{reason}"
        );
        let nested = obj("inner", obj("x.y", Value::Null));
        assert_eq!(
            refused(with("outer", nested)).0,
            "points[0].payload.outer.inner"
        );
        // Nested keys obey the length rule too.
        assert_eq!(
            refused(with("outer", obj("", Value::Null))).0,
            "points[0].payload.outer"
        );
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert_eq!(
            refused(with(
                "o",
                Value::List(vec![Value::Null, obj(&long, Value::Null)])
            ))
            .0,
            "points[0].payload.o[1]"
        );
        // Non-finite numbers are named by their exact path.
        let list = Value::List(vec![Value::Double(1.0), obj("d", Value::Double(f64::NAN))]);
        assert_eq!(refused(with("x", list)).0, "points[0].payload.x[1].d");
        // Keys echoed in a message are cut short.
        let (_, reason) = refused(with(&format!("{}.", "z".repeat(200)), Value::Null));
        assert!(reason.len() < 250, "{reason}");
        // Good nested payloads pass.
        assert!(
            upsert(
                &c,
                with("a", obj("b", obj("c", Value::Integer(1)))),
                &limits
            )
            .is_ok()
        );
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
