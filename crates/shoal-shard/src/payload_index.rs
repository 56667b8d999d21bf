//! The payload index: for every key a filter can name, which points hold which values
//! there, as compressed bitmaps of internal ids.
//!
//! It owns the answer to "which live points match this filter": a filter is evaluated
//! as bitmap operations (`must` → and, `should` → or, `must_not` → and-not, nested
//! filters recursively), so a search knows the exact match set and its size without
//! reading a payload, and checks a candidate during graph traversal with one bitmap
//! lookup. Per key ([`shoal_core::filter::for_each_keyed_value`] decides the keys, so
//! the index and [`Filter::matches`] agree by construction):
//! - strings (and strings in lists) → points, for keyword matches; strings longer than
//!   [`MAX_INDEXED_KEYWORD`] bytes are only marked, and a keyword match asking for such
//!   a string is evaluated point by point over the marked points (texts are rarely
//!   matched exactly, and indexing them would copy them);
//! - integers → points, in an ordered map (integer matches; ranges);
//! - doubles → points, in an ordered map (ranges);
//! - `null` values (is-null) and non-empty values (is-empty is their complement).
//!
//! Like the vector index it is *derived*: the shard builds it from the stored points on
//! open and updates it with the records it publishes, under the shard's state lock;
//! it never reads storage, and it must never hold anything but live internal ids
//! (every bitmap is a subset of [`PayloadIndex::live`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use roaring::{MultiOps, RoaringBitmap};
use shoal_core::filter::for_each_keyed_value;
use shoal_core::{Condition, Filter, Payload, PointId, Value};
use shoal_index::InternalId;

/// Longest string (in bytes) indexed by value; longer ones are matched point by point.
pub const MAX_INDEXED_KEYWORD: usize = 128;

/// What the index needs from its owner to answer conditions it does not index.
pub trait Records {
    /// The internal id of a live point.
    fn internal_id(&self, id: &PointId) -> Option<InternalId>;
    /// Evaluates `condition` on the live point `iid` (false if it is not live).
    fn matches(&self, iid: InternalId, condition: &Condition) -> bool;
}

/// A double as an ordered map key: never NaN, and `-0.0` stored as `0.0`, so the
/// total order agrees with `<` on every value kept.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF64(f64);

impl OrdF64 {
    fn new(x: f64) -> Option<OrdF64> {
        (!x.is_nan()).then_some(OrdF64(if x == 0.0 { 0.0 } else { x }))
    }
}

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Everything indexed under one key.
#[derive(Default)]
struct KeyIndex {
    keywords: HashMap<Box<str>, RoaringBitmap>,
    /// Points with a string longer than [`MAX_INDEXED_KEYWORD`] here.
    long_keywords: RoaringBitmap,
    integers: BTreeMap<i64, RoaringBitmap>,
    doubles: BTreeMap<OrdF64, RoaringBitmap>,
    /// Points with a NaN here (validation refuses them; kept exact regardless).
    nans: RoaringBitmap,
    /// Points whose value here is `null`.
    nulls: RoaringBitmap,
    /// Points whose value here is neither `null` nor `[]`.
    non_empty: RoaringBitmap,
}

impl KeyIndex {
    fn is_empty(&self) -> bool {
        self.keywords.is_empty()
            && self.long_keywords.is_empty()
            && self.integers.is_empty()
            && self.doubles.is_empty()
            && self.nans.is_empty()
            && self.nulls.is_empty()
            && self.non_empty.is_empty()
    }

    /// Adds (`add`) or removes `iid` for `value` found at this key.
    fn update(&mut self, iid: InternalId, value: &Value, add: bool) {
        let set = |b: &mut RoaringBitmap| {
            if add {
                b.insert(iid);
            } else {
                b.remove(iid);
            }
        };
        match value {
            Value::Null => set(&mut self.nulls),
            Value::List(items) => {
                if !items.is_empty() {
                    set(&mut self.non_empty);
                }
                for item in items {
                    self.update_scalar(iid, item, add);
                }
            }
            other => {
                set(&mut self.non_empty);
                self.update_scalar(iid, other, add);
            }
        }
    }

    fn update_scalar(&mut self, iid: InternalId, value: &Value, add: bool) {
        fn update_in<K: Ord>(map: &mut BTreeMap<K, RoaringBitmap>, key: K, iid: u32, add: bool) {
            if add {
                map.entry(key).or_default().insert(iid);
            } else if let Some(b) = map.get_mut(&key) {
                b.remove(iid);
                if b.is_empty() {
                    map.remove(&key);
                }
            }
        }
        match value {
            Value::String(s) if s.len() > MAX_INDEXED_KEYWORD => {
                if add {
                    self.long_keywords.insert(iid);
                } else {
                    self.long_keywords.remove(iid);
                }
            }
            Value::String(s) => {
                if add {
                    self.keywords
                        .entry(s.as_str().into())
                        .or_default()
                        .insert(iid);
                } else if let Some(b) = self.keywords.get_mut(s.as_str()) {
                    b.remove(iid);
                    if b.is_empty() {
                        self.keywords.remove(s.as_str());
                    }
                }
            }
            Value::Integer(i) => update_in(&mut self.integers, *i, iid, add),
            Value::Double(d) => match OrdF64::new(*d) {
                Some(key) => update_in(&mut self.doubles, key, iid, add),
                None if add => {
                    self.nans.insert(iid);
                }
                None => {
                    self.nans.remove(iid);
                }
            },
            // Nested lists and objects inside lists are never matched; booleans only
            // count as non-empty.
            Value::Null | Value::Bool(_) | Value::List(_) | Value::Object(_) => {}
        }
    }

    /// Points with a number at this key within the bounds (as [`Condition::Range`]).
    fn range(
        &self,
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    ) -> RoaringBitmap {
        let bounds = [gt, gte, lt, lte];
        let mut out = RoaringBitmap::new();
        if bounds.iter().flatten().any(|b| b.is_nan()) {
            return out; // every comparison with NaN is false
        }
        let test = |n: f64| {
            gt.is_none_or(|b| n > b)
                && gte.is_none_or(|b| n >= b)
                && lt.is_none_or(|b| n < b)
                && lte.is_none_or(|b| n <= b)
        };
        // Inclusive outer bounds; every key inside is tested exactly.
        let lo = [gt, gte].into_iter().flatten().reduce(f64::max);
        let hi = [lt, lte].into_iter().flatten().reduce(f64::min);
        if let (Some(l), Some(h)) = (lo, hi)
            && l > h
        {
            return out;
        }
        let bound = |b: Option<f64>| match b.and_then(OrdF64::new) {
            Some(x) => Bound::Included(x),
            None => Bound::Unbounded,
        };
        // The bitmaps of every value in range, unioned at once (`MultiOps`: container
        // by container), not one by one: a range over many distinct values costs one
        // pass over their bitmaps instead of a growing bitmap rewritten per value.
        let mut parts: Vec<&RoaringBitmap> = self
            .doubles
            .range((bound(lo), bound(hi)))
            .filter(|(k, _)| test(k.0))
            .map(|(_, b)| b)
            .collect();
        // `i as f64` rounds by at most 1024 and `b as i64` truncates (saturating), so
        // the integers that can pass lie within this margin of the converted bounds.
        const MARGIN: i64 = 4096;
        let lo_i = lo.map_or(i64::MIN, |b| (b as i64).saturating_sub(MARGIN));
        let hi_i = hi.map_or(i64::MAX, |b| (b as i64).saturating_add(MARGIN));
        if lo_i <= hi_i {
            parts.extend(
                self.integers
                    .range(lo_i..=hi_i)
                    .filter(|(k, _)| test(**k as f64))
                    .map(|(_, b)| b),
            );
        }
        if lo.is_none() && hi.is_none() {
            parts.push(&self.nans);
        }
        out |= parts.into_iter().union();
        out
    }
}

/// The payload index of one shard (see the module docs).
#[derive(Default)]
pub struct PayloadIndex {
    live: RoaringBitmap,
    keys: HashMap<Box<str>, KeyIndex>,
}

impl PayloadIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Indexes the live point `iid` with its payload.
    pub fn insert(&mut self, iid: InternalId, payload: &Payload) {
        self.live.insert(iid);
        for_each_keyed_value(payload, &mut |key, value| {
            let k = match self.keys.get_mut(key) {
                Some(k) => k,
                None => self.keys.entry(key.into()).or_default(),
            };
            k.update(iid, value, true);
        });
    }

    /// Forgets the point `iid`, which was indexed with `payload`.
    pub fn remove(&mut self, iid: InternalId, payload: &Payload) {
        self.live.remove(iid);
        for_each_keyed_value(payload, &mut |key, value| {
            if let Some(k) = self.keys.get_mut(key) {
                k.update(iid, value, false);
                if k.is_empty() {
                    self.keys.remove(key);
                }
            }
        });
    }

    /// How many distinct key paths are indexed (keys of live points only: a key's
    /// entry goes when its last point does).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many distinct key paths of `payloads` are not indexed yet.
    pub fn unseen_keys<'a>(&self, payloads: impl IntoIterator<Item = &'a Payload>) -> usize {
        let mut unseen = std::collections::HashSet::new();
        for payload in payloads {
            for_each_keyed_value(payload, &mut |key, _| {
                if !self.keys.contains_key(key) && !unseen.contains(key) {
                    unseen.insert(key.to_string());
                }
            });
        }
        unseen.len()
    }

    /// Every live point.
    pub fn live(&self) -> &RoaringBitmap {
        &self.live
    }

    /// The live points matching `filter`: exactly those for which
    /// [`Filter::matches`] holds. Borrowed from the index when the filter is one
    /// indexed condition.
    pub fn evaluate<'a>(
        &'a self,
        filter: &Filter,
        records: &dyn Records,
    ) -> Cow<'a, RoaringBitmap> {
        let mut acc: Option<Cow<'a, RoaringBitmap>> = None;
        for c in &filter.must {
            if acc.as_ref().is_some_and(|a| a.is_empty()) {
                return Cow::Owned(RoaringBitmap::new());
            }
            let b = self.condition(c, records);
            acc = Some(match acc {
                None => b,
                Some(a) => Cow::Owned(and(a, &b)),
            });
        }
        if !filter.should.is_empty() {
            let mut any = RoaringBitmap::new();
            for c in &filter.should {
                any |= self.condition(c, records).as_ref();
            }
            acc = Some(match acc {
                None => Cow::Owned(any),
                Some(a) => Cow::Owned(and(a, &any)),
            });
        }
        let mut acc = acc.unwrap_or(Cow::Borrowed(&self.live));
        for c in &filter.must_not {
            if acc.is_empty() {
                break;
            }
            let b = self.condition(c, records);
            acc = Cow::Owned(acc.into_owned() - b.as_ref());
        }
        acc
    }

    fn condition<'a>(&'a self, c: &Condition, records: &dyn Records) -> Cow<'a, RoaringBitmap> {
        let empty = || Cow::Owned(RoaringBitmap::new());
        match c {
            Condition::Keyword { key, any } => {
                let Some(k) = self.keys.get(key.as_str()) else {
                    return empty();
                };
                let mut out = union(any.iter().filter_map(|s| k.keywords.get(s.as_str())));
                if any.iter().any(|s| s.len() > MAX_INDEXED_KEYWORD) {
                    let long = k.long_keywords.iter().filter(|&i| records.matches(i, c));
                    let long: RoaringBitmap = long.collect();
                    out = Cow::Owned(out.into_owned() | long);
                }
                out
            }
            Condition::Integer { key, any } => match self.keys.get(key.as_str()) {
                Some(k) => union(any.iter().filter_map(|i| k.integers.get(i))),
                None => empty(),
            },
            Condition::Range {
                key,
                gt,
                gte,
                lt,
                lte,
            } => match self.keys.get(key.as_str()) {
                Some(k) => Cow::Owned(k.range(*gt, *gte, *lt, *lte)),
                None => empty(),
            },
            Condition::IsNull { key } => match self.keys.get(key.as_str()) {
                Some(k) => Cow::Borrowed(&k.nulls),
                None => empty(),
            },
            Condition::IsEmpty { key } => match self.keys.get(key.as_str()) {
                Some(k) => Cow::Owned(&self.live - &k.non_empty),
                None => Cow::Borrowed(&self.live),
            },
            Condition::HasId { ids } => Cow::Owned(
                ids.iter()
                    .filter_map(|id| records.internal_id(id))
                    .collect(),
            ),
            Condition::Nested(f) => self.evaluate(f, records),
        }
    }

    /// Approximate heap memory held by the index, in bytes (bitmaps at their
    /// serialized size, which tracks their in-memory size; map entries at a fixed
    /// estimate).
    pub fn heap_bytes(&self) -> usize {
        const ENTRY: usize = 48;
        let bitmap = |b: &RoaringBitmap| b.serialized_size() + 24;
        let mut total = bitmap(&self.live);
        for (key, k) in &self.keys {
            total += ENTRY + key.len() + std::mem::size_of::<KeyIndex>();
            total += k
                .keywords
                .iter()
                .map(|(s, b)| ENTRY + s.len() + bitmap(b))
                .sum::<usize>();
            total += k
                .integers
                .values()
                .map(|b| ENTRY + bitmap(b))
                .sum::<usize>();
            total += k.doubles.values().map(|b| ENTRY + bitmap(b)).sum::<usize>();
            total += [&k.long_keywords, &k.nans, &k.nulls, &k.non_empty]
                .into_iter()
                .map(bitmap)
                .sum::<usize>();
        }
        total
    }
}

fn and(a: Cow<'_, RoaringBitmap>, b: &RoaringBitmap) -> RoaringBitmap {
    match a {
        Cow::Owned(mut a) => {
            a &= b;
            a
        }
        Cow::Borrowed(a) => a & b,
    }
}

/// The union of `bitmaps`, borrowed when there is just one.
fn union<'a>(mut bitmaps: impl Iterator<Item = &'a RoaringBitmap>) -> Cow<'a, RoaringBitmap> {
    let Some(first) = bitmaps.next() else {
        return Cow::Owned(RoaringBitmap::new());
    };
    match bitmaps.next() {
        None => Cow::Borrowed(first),
        Some(second) => Cow::Owned([first, second].into_iter().chain(bitmaps).union()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Points by internal id, as a shard holds them.
    struct Model(Vec<Option<(PointId, Payload)>>);

    impl Records for Model {
        fn internal_id(&self, id: &PointId) -> Option<InternalId> {
            self.0
                .iter()
                .position(|r| r.as_ref().is_some_and(|(p, _)| p == id))
                .map(|i| i as InternalId)
        }
        fn matches(&self, iid: InternalId, condition: &Condition) -> bool {
            self.0
                .get(iid as usize)
                .and_then(Option::as_ref)
                .is_some_and(|(id, p)| condition.matches(id, p))
        }
    }

    impl Model {
        fn brute_force(&self, f: &Filter) -> RoaringBitmap {
            self.0
                .iter()
                .enumerate()
                .filter(|(_, r)| r.as_ref().is_some_and(|(id, p)| f.matches(id, p)))
                .map(|(i, _)| i as InternalId)
                .collect()
        }
    }

    const KEYS: [&str; 7] = ["a", "b", "o.x", "o", "", ".x", "o."];
    const WORDS: [&str; 3] = ["red", "blue", ""];

    fn long_word() -> String {
        "w".repeat(MAX_INDEXED_KEYWORD + 1)
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..4).prop_map(Value::Integer),
            prop_oneof![Just(i64::MAX), Just(i64::MIN), Just((1i64 << 53) + 1),]
                .prop_map(Value::Integer),
            prop_oneof![(-30i32..40).prop_map(|x| x as f64 / 10.0), Just(-0.0)]
                .prop_map(Value::Double),
            prop_oneof![
                (0..WORDS.len()).prop_map(|i| WORDS[i].to_string()),
                Just(long_word())
            ]
            .prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::List),
                prop::collection::btree_map(
                    prop_oneof![Just("x"), Just("y.z"), Just("")].prop_map(String::from),
                    inner,
                    0..2
                )
                .prop_map(Value::Object),
            ]
        })
    }

    fn payload() -> impl Strategy<Value = Payload> {
        prop::collection::btree_map(
            (0..4usize).prop_map(|i| ["a", "b", "o", ""][i].to_string()),
            value(),
            0..3,
        )
    }

    fn key() -> impl Strategy<Value = String> {
        (0..KEYS.len()).prop_map(|i| KEYS[i].to_string())
    }

    fn bound() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            (-40i32..45).prop_map(|x| Some(x as f64 / 10.0)),
            Just(Some(9.007_199_254_740_992e15)),
            Just(Some(9.3e18)),
            Just(Some(-9.3e18)),
            Just(Some(f64::NAN)),
            Just(Some(-0.0)),
        ]
    }

    fn condition() -> impl Strategy<Value = Condition> + Clone {
        let leaf = prop_oneof![
            (
                key(),
                prop::collection::vec(
                    prop_oneof![
                        (0..WORDS.len()).prop_map(|i| WORDS[i].to_string()),
                        Just(long_word()),
                        Just("w".to_string()),
                    ],
                    1..3
                )
            )
                .prop_map(|(key, any)| Condition::Keyword { key, any }),
            (key(), prop::collection::vec(-3i64..4, 1..3))
                .prop_map(|(key, any)| Condition::Integer { key, any }),
            (key(), Just(vec![i64::MAX, (1i64 << 53) + 1]))
                .prop_map(|(key, any)| Condition::Integer { key, any }),
            (key(), bound(), bound(), bound(), bound()).prop_map(|(key, gt, gte, lt, lte)| {
                Condition::Range {
                    key,
                    gt,
                    gte,
                    lt,
                    lte,
                }
            }),
            key().prop_map(|key| Condition::IsNull { key }),
            key().prop_map(|key| Condition::IsEmpty { key }),
            prop::collection::hash_set((0u64..12).prop_map(PointId::Num), 1..4)
                .prop_map(|ids| Condition::HasId { ids }),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            filter_of(inner).prop_map(Condition::Nested)
        })
    }

    fn filter_of(c: impl Strategy<Value = Condition> + Clone) -> impl Strategy<Value = Filter> {
        (
            prop::collection::vec(c.clone(), 0..3),
            prop::collection::vec(c.clone(), 0..3),
            prop::collection::vec(c, 0..2),
        )
            .prop_map(|(must, should, must_not)| Filter {
                must,
                should,
                must_not,
            })
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Upsert point id (a fresh internal id, retiring the old one).
        Put(u64, Payload),
        Delete(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => ((0u64..12), payload()).prop_map(|(id, p)| Op::Put(id, p)),
            1 => (0u64..12).prop_map(Op::Delete),
        ]
    }

    fn apply(index: &mut PayloadIndex, model: &mut Model, op: Op) {
        let id = match &op {
            Op::Put(id, _) | Op::Delete(id) => PointId::Num(*id),
        };
        if let Some(old) = model.internal_id(&id) {
            let (_, p) = model.0[old as usize].take().unwrap();
            index.remove(old, &p);
        }
        if let Op::Put(_, p) = op {
            index.insert(model.0.len() as InternalId, &p);
            model.0.push(Some((id, p)));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn evaluation_equals_brute_force(
            ops in prop::collection::vec(op(), 0..40),
            filters in prop::collection::vec(filter_of(condition()), 1..6),
        ) {
            let mut index = PayloadIndex::new();
            let mut model = Model(Vec::new());
            for op in ops {
                apply(&mut index, &mut model, op);
            }
            for f in &filters {
                let got = index.evaluate(f, &model);
                prop_assert_eq!(got.as_ref(), &model.brute_force(f), "{:?}", f);
            }
            prop_assert_eq!(index.live(), &model.brute_force(&Filter::default()));
        }

        #[test]
        fn removing_everything_leaves_nothing(ops in prop::collection::vec(op(), 0..30)) {
            let mut index = PayloadIndex::new();
            let mut model = Model(Vec::new());
            for op in ops {
                apply(&mut index, &mut model, op);
            }
            for id in 0..12 {
                apply(&mut index, &mut model, Op::Delete(id));
            }
            prop_assert!(index.live.is_empty() && index.keys.is_empty());
        }
    }

    #[test]
    fn ranges_at_the_edges_of_the_integers() {
        let mut index = PayloadIndex::new();
        let mut model = Model(Vec::new());
        let ints = [i64::MIN, -1, 0, 1, (1 << 53) + 1, i64::MAX].map(Value::Integer);
        let doubles = [-0.0, 0.0, 0.5, -1e300].map(Value::Double);
        for (i, n) in ints.into_iter().chain(doubles).enumerate() {
            let p: Payload = [("n".to_string(), n)].into();
            apply(&mut index, &mut model, Op::Put(i as u64, p));
        }
        let bounds = [
            None,
            Some(f64::NAN),
            Some(0.0),
            Some(-0.0),
            Some(9.007_199_254_740_992e15),
            Some(i64::MAX as f64),
            Some(i64::MIN as f64),
            Some(1e300),
            Some(-1e300),
        ];
        for gt in bounds {
            for lte in bounds {
                for gte in [None, Some(-0.5)] {
                    let f = Filter {
                        must: vec![Condition::Range {
                            key: "n".into(),
                            gt,
                            gte,
                            lt: None,
                            lte,
                        }],
                        ..Filter::default()
                    };
                    let got = index.evaluate(&f, &model);
                    assert_eq!(got.as_ref(), &model.brute_force(&f), "{f:?}");
                }
            }
        }
    }

    #[test]
    fn one_indexed_condition_is_borrowed_not_copied() {
        let mut index = PayloadIndex::new();
        let model = Model(Vec::new());
        for i in 0..100u32 {
            let p: Payload = [("s".to_string(), Value::Integer((i % 10) as i64))].into();
            index.insert(i, &p);
        }
        let f = Filter {
            must: vec![Condition::Integer {
                key: "s".into(),
                any: vec![3],
            }],
            ..Filter::default()
        };
        let got = index.evaluate(&f, &model);
        assert!(matches!(got, Cow::Borrowed(_)));
        assert_eq!(got.len(), 10);
        assert!(index.heap_bytes() > 0);
    }
}
