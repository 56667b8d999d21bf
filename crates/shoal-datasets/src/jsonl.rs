//! JSON lines of points: one object per line,
//! `{"id": 42 | "uuid", "vector": [..], "payload": {..}}`.
//!
//! `payload` may be missing or `null`; other keys are ignored; blank lines are
//! skipped. Payload numbers that fit an `i64` become [`Value::Integer`], all other
//! numbers [`Value::Double`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use shoal_core::{Payload, PointId, Value};

use crate::DatasetError;

/// One point read from a JSON-lines file.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlPoint {
    pub id: PointId,
    pub vector: Vec<f32>,
    pub payload: Payload,
}

/// Reads every point of a JSON-lines file. Errors name the line (from 1).
pub fn read_jsonl(path: &Path) -> Result<Vec<JsonlPoint>, DatasetError> {
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DatasetError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let point = parse_line(&line).map_err(|reason| DatasetError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        })?;
        out.push(point);
    }
    Ok(out)
}

/// Parses one line into a point; the error is a reason without position.
pub fn parse_line(line: &str) -> Result<JsonlPoint, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Object(mut obj) = value else {
        return Err("expected a JSON object".into());
    };
    let id = match obj.remove("id") {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(PointId::Num)
            .ok_or_else(|| format!("id {n} is not an unsigned 64-bit integer"))?,
        Some(serde_json::Value::String(s)) => PointId::parse(&s).map_err(|e| e.to_string())?,
        Some(other) => return Err(format!("id must be a number or a UUID string, got {other}")),
        None => return Err("missing \"id\"".into()),
    };
    let vector = match obj.remove("vector") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_f64()
                    .map(|f| f as f32)
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| format!("vector[{i}] is not a finite f32: {x}"))
            })
            .collect::<Result<Vec<f32>, String>>()?,
        Some(other) => return Err(format!("vector must be an array of numbers, got {other}")),
        None => return Err("missing \"vector\"".into()),
    };
    let payload = match obj.remove("payload") {
        None | Some(serde_json::Value::Null) => Payload::new(),
        Some(serde_json::Value::Object(map)) => object(map),
        Some(other) => return Err(format!("payload must be an object, got {other}")),
    };
    Ok(JsonlPoint {
        id,
        vector,
        payload,
    })
}

fn object(map: serde_json::Map<String, serde_json::Value>) -> BTreeMap<String, Value> {
    map.into_iter().map(|(k, v)| (k, value(v))).collect()
}

/// Converts a JSON value to a payload value.
pub fn value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => Value::List(items.into_iter().map(value).collect()),
        serde_json::Value::Object(map) => Value::Object(object(map)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_vectors_and_nested_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.jsonl");
        let uuid = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        std::fs::write(
            &f,
            format!(
                concat!(
                    "{{\"id\": 42, \"vector\": [1, 2.5, -3e2]}}\n",
                    "\n",
                    "{{\"id\": \"{}\", \"vector\": [0.5], \"payload\": {{\"a\": {{\"b\": [1, 2.5, \"x\", null, true]}}, ",
                    "\"big\": 18446744073709551615, \"neg\": -7}}, \"extra\": 1}}\n",
                    "{{\"id\": 7, \"vector\": [], \"payload\": null}}\n",
                ),
                uuid
            ),
        )
        .unwrap();
        let points = read_jsonl(&f).unwrap();
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].id, PointId::Num(42));
        assert_eq!(points[0].vector, vec![1.0, 2.5, -300.0]);
        assert!(points[0].payload.is_empty());
        assert_eq!(points[1].id, PointId::parse(uuid).unwrap());
        let inner = Value::Object(
            [(
                "b".to_string(),
                Value::List(vec![
                    Value::Integer(1),
                    Value::Double(2.5),
                    Value::String("x".into()),
                    Value::Null,
                    Value::Bool(true),
                ]),
            )]
            .into(),
        );
        assert_eq!(points[1].payload["a"], inner);
        assert_eq!(points[1].payload["big"], Value::Double(u64::MAX as f64));
        assert_eq!(points[1].payload["neg"], Value::Integer(-7));
        assert_eq!(points[1].payload.len(), 3);
        assert_eq!(points[2].id, PointId::Num(7));
        assert!(points[2].vector.is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.jsonl");
        let cases = [
            (
                "{\"id\": 1, \"vector\": [1]}\n{\"id\": -1, \"vector\": [1]}\n",
                2,
                "id",
            ),
            ("{\"id\": \"nope\", \"vector\": [1]}\n", 1, "nope"),
            ("\n\n{\"vector\": [1]}\n", 3, "missing \"id\""),
            ("{\"id\": 1, \"vector\": [1, \"a\"]}\n", 1, "vector[1]"),
            ("{\"id\": 1, \"vector\": [1e300]}\n", 1, "vector[0]"),
            (
                "{\"id\": 1, \"vector\": [1], \"payload\": [1]}\n",
                1,
                "payload",
            ),
            ("{\"id\": 1, \"vector\": [1]\n", 1, "not JSON"),
            ("[1]\n", 1, "object"),
        ];
        for (text, line_no, needle) in cases {
            std::fs::write(&f, text).unwrap();
            match read_jsonl(&f).unwrap_err() {
                DatasetError::Line { line, reason, .. } => {
                    assert_eq!(line, line_no, "{text}");
                    assert!(reason.contains(needle), "{text}: {reason}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
