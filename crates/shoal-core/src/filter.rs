//! Payload filters: `must` / `should` / `must_not` over conditions.
//!
//! Semantics (the same as the proto documentation):
//! - a point matches when every `must` condition matches, at least one `should`
//!   condition matches (if there are any), and no `must_not` condition matches;
//! - `key` is a path into the payload: `"a.b"` reads field `b` of object `a`;
//! - when the value at `key` is a list, a match/range condition holds if it holds for
//!   any element;
//! - `IsNull` holds when the key exists with value `null`; `IsEmpty` holds when the key
//!   is missing, `null`, or an empty list.
//!
//! [`for_each_keyed_value`] lists every value a key can reach, under that key, with the
//! same path rules as evaluation: the shard's payload index is built from it, so that
//! answering a filter from the index and evaluating it point by point agree.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{Payload, PointId, Value};

/// A boolean combination of conditions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

/// One test on a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    /// The string at `key` equals one of `any`.
    Keyword { key: String, any: Vec<String> },
    /// The integer at `key` equals one of `any`.
    Integer { key: String, any: Vec<i64> },
    /// The number at `key` lies within the bounds that are set.
    Range {
        key: String,
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    },
    /// The key exists and is `null`.
    IsNull { key: String },
    /// The key is missing, `null`, or `[]`.
    IsEmpty { key: String },
    /// The point's id is one of these.
    HasId { ids: HashSet<PointId> },
    /// A nested filter.
    Nested(Filter),
}

impl Filter {
    /// True when no clause constrains anything.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    /// Does the point with this id and payload match?
    pub fn matches(&self, id: &PointId, payload: &Payload) -> bool {
        self.must.iter().all(|c| c.matches(id, payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(id, payload)))
            && !self.must_not.iter().any(|c| c.matches(id, payload))
    }

    /// Nesting depth of filters (a flat filter is 1).
    pub fn depth(&self) -> usize {
        1 + self
            .must
            .iter()
            .chain(&self.should)
            .chain(&self.must_not)
            .map(|c| match c {
                Condition::Nested(f) => f.depth(),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

fn lookup<'a>(payload: &'a Payload, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut cur = payload.get(parts.next()?)?;
    for part in parts {
        match cur {
            Value::Object(map) => cur = map.get(part)?,
            _ => return None,
        }
    }
    Some(cur)
}

/// Calls `f(key, value)` for every value that a condition's `key` reads in `payload`
/// (see [`Condition::matches`]): each field under its name, and each field of a nested
/// object under `"outer.inner"`, objects included. A field whose name contains `.` can
/// never be reached by a key (the key would be split there), so it is skipped with
/// everything under it. Lists are handed over whole: their elements are not keyed.
pub fn for_each_keyed_value(payload: &Payload, f: &mut dyn FnMut(&str, &Value)) {
    fn walk(
        path: &mut String,
        top: bool,
        map: &std::collections::BTreeMap<String, Value>,
        f: &mut dyn FnMut(&str, &Value),
    ) {
        for (name, value) in map {
            if name.contains('.') {
                continue;
            }
            let len = path.len();
            if !top {
                path.push('.');
            }
            path.push_str(name);
            f(path, value);
            if let Value::Object(inner) = value {
                walk(path, false, inner, f);
            }
            path.truncate(len);
        }
    }
    walk(&mut String::new(), true, payload, f);
}

/// Applies `test` to a value, or to each element when it is a list.
fn any_scalar(v: &Value, test: &dyn Fn(&Value) -> bool) -> bool {
    match v {
        Value::List(items) => items.iter().any(test),
        other => test(other),
    }
}

impl Condition {
    /// Does the point with this id and payload satisfy the condition?
    pub fn matches(&self, id: &PointId, payload: &Payload) -> bool {
        match self {
            Condition::Keyword { key, any } => lookup(payload, key).is_some_and(|v| {
                any_scalar(
                    v,
                    &|x| matches!(x, Value::String(s) if any.iter().any(|a| a == s)),
                )
            }),
            Condition::Integer { key, any } => lookup(payload, key).is_some_and(|v| {
                any_scalar(v, &|x| matches!(x, Value::Integer(i) if any.contains(i)))
            }),
            Condition::Range {
                key,
                gt,
                gte,
                lt,
                lte,
            } => lookup(payload, key).is_some_and(|v| {
                any_scalar(v, &|x| {
                    x.as_f64().is_some_and(|n| {
                        gt.is_none_or(|b| n > b)
                            && gte.is_none_or(|b| n >= b)
                            && lt.is_none_or(|b| n < b)
                            && lte.is_none_or(|b| n <= b)
                    })
                })
            }),
            Condition::IsNull { key } => matches!(lookup(payload, key), Some(Value::Null)),
            Condition::IsEmpty { key } => match lookup(payload, key) {
                None | Some(Value::Null) => true,
                Some(Value::List(items)) => items.is_empty(),
                Some(_) => false,
            },
            Condition::HasId { ids } => ids.contains(id),
            Condition::Nested(f) => f.matches(id, payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(pairs: &[(&str, Value)]) -> Payload {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn keyword_integer_range_and_lists() {
        let p = payload(&[
            ("color", Value::String("red".into())),
            (
                "tags",
                Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            ("n", Value::Integer(5)),
            ("x", Value::Double(2.5)),
            ("nul", Value::Null),
            ("empty", Value::List(vec![])),
            (
                "obj",
                Value::Object([("inner".to_string(), Value::Integer(9))].into()),
            ),
        ]);
        let id = PointId::Num(1);
        let kw = |k: &str, v: &str| Condition::Keyword {
            key: k.into(),
            any: vec![v.into()],
        };
        assert!(kw("color", "red").matches(&id, &p));
        assert!(!kw("color", "blue").matches(&id, &p));
        assert!(kw("tags", "b").matches(&id, &p));
        assert!(!kw("missing", "b").matches(&id, &p));
        assert!(
            Condition::Integer {
                key: "n".into(),
                any: vec![4, 5]
            }
            .matches(&id, &p)
        );
        assert!(
            Condition::Integer {
                key: "obj.inner".into(),
                any: vec![9]
            }
            .matches(&id, &p)
        );
        let range = |gt, lte| Condition::Range {
            key: "x".into(),
            gt,
            gte: None,
            lt: None,
            lte,
        };
        assert!(range(Some(2.0), Some(2.5)).matches(&id, &p));
        assert!(!range(Some(2.5), None).matches(&id, &p));
        assert!(Condition::IsNull { key: "nul".into() }.matches(&id, &p));
        assert!(
            !Condition::IsNull {
                key: "missing".into()
            }
            .matches(&id, &p)
        );
        for k in ["nul", "empty", "missing"] {
            assert!(Condition::IsEmpty { key: k.into() }.matches(&id, &p), "{k}");
        }
        assert!(!Condition::IsEmpty { key: "n".into() }.matches(&id, &p));
        assert!(Condition::HasId { ids: [id].into() }.matches(&id, &p));
        assert!(
            !Condition::HasId {
                ids: [PointId::Num(2)].into()
            }
            .matches(&id, &p)
        );
    }

    #[test]
    fn keyed_values_are_exactly_what_lookup_reaches() {
        let obj = |pairs: &[(&str, Value)]| Value::Object(payload(pairs));
        let p = payload(&[
            (
                "a",
                obj(&[("b", Value::Integer(1)), ("c.d", Value::Integer(2))]),
            ),
            ("x.y", Value::Integer(3)),
            ("l", Value::List(vec![obj(&[("z", Value::Integer(4))])])),
            ("", obj(&[("e", Value::Null)])),
        ]);
        let mut seen = Vec::new();
        for_each_keyed_value(&p, &mut |k, v| seen.push((k.to_string(), v.clone())));
        let keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["", ".e", "a", "a.b", "l"]);
        for (k, v) in &seen {
            assert_eq!(lookup(&p, k), Some(v), "{k}");
        }
        for unreachable in ["a.c.d", "x.y", "l.z", "a.c"] {
            assert_eq!(lookup(&p, unreachable), None, "{unreachable}");
        }
    }

    #[test]
    fn boolean_structure() {
        let p = payload(&[("n", Value::Integer(5))]);
        let id = PointId::Num(1);
        let yes = Condition::Integer {
            key: "n".into(),
            any: vec![5],
        };
        let no = Condition::Integer {
            key: "n".into(),
            any: vec![6],
        };
        let f = |must: Vec<Condition>, should: Vec<Condition>, must_not: Vec<Condition>| Filter {
            must,
            should,
            must_not,
        };
        assert!(Filter::default().matches(&id, &p));
        assert!(f(vec![yes.clone()], vec![], vec![]).matches(&id, &p));
        assert!(!f(vec![yes.clone(), no.clone()], vec![], vec![]).matches(&id, &p));
        assert!(f(vec![], vec![no.clone(), yes.clone()], vec![]).matches(&id, &p));
        assert!(!f(vec![], vec![no.clone()], vec![]).matches(&id, &p));
        assert!(!f(vec![], vec![], vec![yes.clone()]).matches(&id, &p));
        let nested = Condition::Nested(f(vec![], vec![], vec![no]));
        assert!(f(vec![nested], vec![], vec![]).matches(&id, &p));
    }
}
