//! Points: an id, a vector and a payload of JSON-like values.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A point's id: an unsigned 64-bit integer or a UUID.
///
/// Ids order numbers first (numerically), then UUIDs (bytewise); `Scroll` pages in
/// this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PointId {
    Num(u64),
    Uuid(uuid::Uuid),
}

impl PointId {
    /// Order-preserving byte encoding: `0x00 ++ u64 BE` or `0x01 ++ 16 UUID bytes`.
    /// Used as the storage key and as the input of the shard hash.
    pub fn to_key(&self) -> Vec<u8> {
        match self {
            PointId::Num(n) => {
                let mut k = Vec::with_capacity(9);
                k.push(0);
                k.extend_from_slice(&n.to_be_bytes());
                k
            }
            PointId::Uuid(u) => {
                let mut k = Vec::with_capacity(17);
                k.push(1);
                k.extend_from_slice(u.as_bytes());
                k
            }
        }
    }

    /// Inverse of [`PointId::to_key`].
    pub fn from_key(key: &[u8]) -> Option<PointId> {
        match key {
            [0, rest @ ..] if rest.len() == 8 => {
                Some(PointId::Num(u64::from_be_bytes(rest.try_into().ok()?)))
            }
            [1, rest @ ..] if rest.len() == 16 => {
                Some(PointId::Uuid(uuid::Uuid::from_slice(rest).ok()?))
            }
            _ => None,
        }
    }

    /// Parses `"42"` as a number and anything UUID-shaped as a UUID.
    pub fn parse(s: &str) -> crate::Result<PointId> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(PointId::Num(n));
        }
        uuid::Uuid::parse_str(s).map(PointId::Uuid).map_err(|_| {
            crate::Error::invalid(
                "id",
                format!("{s:?} is neither an unsigned 64-bit integer nor a UUID"),
            )
        })
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// A JSON-like payload value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Integer(i64),
    Double(f64),
    String(String),
    List(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

impl Value {
    /// Nesting depth: scalars are 1.
    pub fn depth(&self) -> usize {
        match self {
            Value::List(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(Value::depth).max().unwrap_or(0),
            _ => 1,
        }
    }

    /// Numeric view used by range conditions.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Integer(i) => Some(*i as f64),
            Value::Double(d) => Some(*d),
            _ => None,
        }
    }
}

/// A point's payload: string keys to values.
pub type Payload = BTreeMap<String, Value>;

/// A point as written by a client (after validation, the vector is ready to index:
/// finite, of the collection's `dim`, and normalised for `COSINE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub id: PointId,
    pub vector: Vec<f32>,
    pub payload: Payload,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encoding_round_trips_and_preserves_order() {
        let ids = [
            PointId::Num(0),
            PointId::Num(1),
            PointId::Num(256),
            PointId::Num(u64::MAX),
            PointId::Uuid(uuid::Uuid::nil()),
            PointId::Uuid(uuid::Uuid::from_u128(7)),
        ];
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_key() < w[1].to_key());
        }
        for id in ids {
            assert_eq!(PointId::from_key(&id.to_key()), Some(id));
        }
        assert_eq!(PointId::from_key(&[0, 1]), None);
        assert_eq!(PointId::from_key(&[]), None);
    }

    #[test]
    fn parse_ids() {
        assert_eq!(PointId::parse("42").unwrap(), PointId::Num(42));
        let u = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(
            PointId::parse(u).unwrap(),
            PointId::Uuid(uuid::Uuid::parse_str(u).unwrap())
        );
        assert!(PointId::parse("-1").is_err());
    }
}
