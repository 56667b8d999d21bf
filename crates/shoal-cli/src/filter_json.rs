//! JSON spellings of filters and payloads for the CLI.
//!
//! A filter is `{"must": [...], "should": [...], "must_not": [...]}` whose conditions
//! are one of:
//! `{"key": "color", "keyword": ["red", "blue"]}`, `{"key": "n", "integer": [1, 2]}`,
//! `{"key": "price", "range": {"gte": 1, "lt": 5}}`, `{"is_null": "key"}`,
//! `{"is_empty": "key"}`, `{"has_id": [1, "67e55044-10b1-426f-9247-bb680e5fe0c8"]}`,
//! `{"filter": { ...nested filter... }}`.

use anyhow::{Context, anyhow, bail};
use serde_json::Value as J;
use shoal_core::{Payload, Value};
use shoal_proto::v1 as pb;

/// Parses a filter from JSON text.
pub fn parse(text: &str) -> anyhow::Result<pb::Filter> {
    let v: J = serde_json::from_str(text).context("--filter is not valid JSON")?;
    filter(&v, "filter")
}

fn filter(v: &J, path: &str) -> anyhow::Result<pb::Filter> {
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow!("{path}: expected an object"))?;
    let mut f = pb::Filter::default();
    for (k, conds) in obj {
        let list = conds
            .as_array()
            .ok_or_else(|| anyhow!("{path}.{k}: expected a list of conditions"))?;
        let parsed = list
            .iter()
            .enumerate()
            .map(|(i, c)| condition(c, &format!("{path}.{k}[{i}]")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        match k.as_str() {
            "must" => f.must = parsed,
            "should" => f.should = parsed,
            "must_not" => f.must_not = parsed,
            other => bail!("{path}: unknown clause {other:?}; expected must, should or must_not"),
        }
    }
    Ok(f)
}

fn condition(v: &J, path: &str) -> anyhow::Result<pb::Condition> {
    use pb::condition::Kind;
    let key = || -> anyhow::Result<String> {
        v.get("key")
            .and_then(J::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{path}: missing \"key\""))
    };
    let kind = if let Some(any) = v.get("keyword") {
        let any = any
            .as_array()
            .ok_or_else(|| anyhow!("{path}.keyword: expected a list of strings"))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{path}.keyword: expected strings"))
            })
            .collect::<anyhow::Result<_>>()?;
        Kind::Keyword(pb::MatchKeyword { key: key()?, any })
    } else if let Some(any) = v.get("integer") {
        let any = any
            .as_array()
            .ok_or_else(|| anyhow!("{path}.integer: expected a list of integers"))?
            .iter()
            .map(|s| {
                s.as_i64()
                    .ok_or_else(|| anyhow!("{path}.integer: expected integers"))
            })
            .collect::<anyhow::Result<_>>()?;
        Kind::Integer(pb::MatchInteger { key: key()?, any })
    } else if let Some(r) = v.get("range") {
        let b = |n: &str| r.get(n).and_then(J::as_f64);
        Kind::Range(pb::Range {
            key: key()?,
            gt: b("gt"),
            gte: b("gte"),
            lt: b("lt"),
            lte: b("lte"),
        })
    } else if let Some(k) = v.get("is_null") {
        Kind::IsNull(pb::FieldKey {
            key: k
                .as_str()
                .ok_or_else(|| anyhow!("{path}.is_null: expected a key"))?
                .into(),
        })
    } else if let Some(k) = v.get("is_empty") {
        Kind::IsEmpty(pb::FieldKey {
            key: k
                .as_str()
                .ok_or_else(|| anyhow!("{path}.is_empty: expected a key"))?
                .into(),
        })
    } else if let Some(ids) = v.get("has_id") {
        let ids = ids
            .as_array()
            .ok_or_else(|| anyhow!("{path}.has_id: expected a list of ids"))?
            .iter()
            .map(|i| {
                let s = match i {
                    J::Number(n) => n.to_string(),
                    J::String(s) => s.clone(),
                    _ => bail!("{path}.has_id: ids are numbers or UUID strings"),
                };
                let id =
                    shoal_core::PointId::parse(&s).map_err(|e| anyhow!("{path}.has_id: {e}"))?;
                Ok(shoal_server::convert::point_id_to_pb(id))
            })
            .collect::<anyhow::Result<_>>()?;
        Kind::HasId(pb::HasId { ids })
    } else if let Some(f) = v.get("filter") {
        Kind::Filter(filter(f, &format!("{path}.filter"))?)
    } else {
        bail!(
            "{path}: unknown condition; expected keyword, integer, range, is_null, is_empty, has_id or filter"
        )
    };
    Ok(pb::Condition { kind: Some(kind) })
}

/// A payload as JSON, for printing.
pub fn payload_to_json(p: &Payload) -> J {
    J::Object(
        p.iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Integer(i) => J::from(*i),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::String(s) => J::String(s.clone()),
        Value::List(l) => J::Array(l.iter().map(value_to_json).collect()),
        Value::Object(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_condition() {
        let f = parse(
            r#"{"must": [{"key": "c", "keyword": ["a"]}, {"key": "n", "integer": [1]},
                {"key": "x", "range": {"gte": 1, "lt": 2.5}}, {"is_null": "z"}],
                "should": [{"has_id": [3, "67e55044-10b1-426f-9247-bb680e5fe0c8"]}],
                "must_not": [{"is_empty": "t"}, {"filter": {"must": [{"key": "c", "keyword": ["b"]}]}}]}"#,
        )
        .unwrap();
        assert_eq!(f.must.len(), 4);
        assert_eq!(f.should.len(), 1);
        assert_eq!(f.must_not.len(), 2);
        let core = shoal_server::convert::filter("filter", f).unwrap();
        assert_eq!(core.depth(), 2);
    }

    #[test]
    fn rejects_unknown_clauses_and_conditions() {
        assert!(parse(r#"{"mustnt": []}"#).is_err());
        assert!(parse(r#"{"must": [{"key": "c"}]}"#).is_err());
        assert!(parse("not json").is_err());
    }
}
