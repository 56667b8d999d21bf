//! Filtered searches, counts and scrolls answered from the payload index against a
//! brute-force oracle over the stored points: exactly equal for the exact strategy
//! (and for the graph strategy when `ef` covers the shard), recall held for the graph
//! strategy at a larger scale. Shards are reopened and checkpointed along the way, so
//! the index is also checked after being rebuilt from storage.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use shoal_core::{Condition, Filter, Payload, Point, PointId, SearchRequest, Value};
use shoal_shard::testing::{self, DIM, l2, open};
use shoal_shard::{Shard, ShardOptions};

/// Always an exact scan of the matches.
fn exact() -> ShardOptions {
    ShardOptions {
        exact_threshold: 0,
        filter_exact_fraction: 1.0,
        rebuild_min_tombstones: 8,
        rebuild_tombstone_ratio: 0.3,
        ..ShardOptions::default()
    }
}

/// Always the graph with the filter in the accept callback (unless fewer than k match).
fn graph() -> ShardOptions {
    ShardOptions {
        filter_exact_fraction: 0.0,
        ..exact()
    }
}

const TAGS: [&str; 3] = ["red", "blue", "green"];

fn tag() -> impl Strategy<Value = String> {
    (0..TAGS.len()).prop_map(|i| TAGS[i].to_string())
}

fn payload() -> impl Strategy<Value = Payload> {
    let tag_value = prop_oneof![
        tag().prop_map(Value::String),
        prop::collection::vec(tag().prop_map(Value::String), 0..3).prop_map(Value::List),
        Just(Value::Null),
    ];
    let n_value = prop_oneof![
        (0i64..5).prop_map(Value::Integer),
        (0i32..50).prop_map(|x| Value::Double(x as f64 / 10.0)),
        prop::collection::vec((0i64..5).prop_map(Value::Integer), 0..3).prop_map(Value::List),
    ];
    let o_value = prop_oneof![
        (0i64..3).prop_map(|x| Value::Object([("x".to_string(), Value::Integer(x))].into())),
        Just(Value::Object(BTreeMap::new())),
        Just(Value::Integer(1)),
    ];
    (
        prop::option::of(tag_value),
        prop::option::of(n_value),
        prop::option::of(o_value),
    )
        .prop_map(|(t, n, o)| {
            let mut p = Payload::new();
            for (k, v) in [("tag", t), ("n", n), ("o", o)] {
                if let Some(v) = v {
                    p.insert(k.to_string(), v);
                }
            }
            p
        })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("tag"),
        Just("n"),
        Just("o"),
        Just("o.x"),
        Just("missing")
    ]
    .prop_map(String::from)
}

fn condition() -> impl Strategy<Value = Condition> + Clone {
    let bound = prop::option::of((0i32..60).prop_map(|x| x as f64 / 10.0));
    let leaf = prop_oneof![
        (key(), prop::collection::vec(tag(), 1..3))
            .prop_map(|(key, any)| Condition::Keyword { key, any }),
        (key(), prop::collection::vec(0i64..5, 1..3))
            .prop_map(|(key, any)| Condition::Integer { key, any }),
        (key(), bound.clone(), bound.clone(), bound.clone(), bound).prop_map(
            |(key, gt, gte, lt, lte)| Condition::Range {
                key,
                gt,
                gte,
                lt,
                lte
            }
        ),
        key().prop_map(|key| Condition::IsNull { key }),
        key().prop_map(|key| Condition::IsEmpty { key }),
        prop::collection::hash_set((0u64..60).prop_map(PointId::Num), 1..6)
            .prop_map(|ids| Condition::HasId { ids }),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        filter_of(inner).prop_map(Condition::Nested)
    })
}

fn filter_of(c: impl Strategy<Value = Condition> + Clone) -> impl Strategy<Value = Filter> {
    (
        prop::collection::vec(c.clone(), 0..3),
        prop::collection::vec(c.clone(), 0..2),
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
    Upsert(Vec<(u64, [i8; DIM], Payload)>),
    Delete(Vec<u64>),
    Checkpoint,
    Reopen,
    Search {
        query: [i8; DIM],
        k: usize,
        filter: Filter,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => testing::batch(0..60, payload()).prop_map(Op::Upsert),
        1 => prop::collection::vec(0u64..60, 1..10).prop_map(Op::Delete),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        4 => (testing::small_vector(), 1usize..15, filter_of(condition()))
            .prop_map(|(query, k, filter)| Op::Search { query, k, filter }),
    ]
}

type Model = BTreeMap<u64, (Vec<f32>, Payload)>;

/// Checks one shard's answers for `filter` against the model.
fn check(
    shard: &Shard,
    model: &Model,
    q: &[f32],
    k: usize,
    filter: &Filter,
) -> Result<(), TestCaseError> {
    let matching: Vec<(u64, f32)> = model
        .iter()
        .filter(|(id, (_, p))| filter.matches(&PointId::Num(**id), p))
        .map(|(id, (v, _))| (*id, l2(q, v).sqrt()))
        .collect();
    prop_assert_eq!(shard.count(Some(filter)), matching.len() as u64);
    let scrolled: Vec<PointId> = shard
        .scroll(None, 1_000, Some(filter), false, false)
        .into_iter()
        .map(|p| p.id)
        .collect();
    let ids: Vec<PointId> = matching.iter().map(|m| PointId::Num(m.0)).collect();
    prop_assert_eq!(scrolled, ids);
    let hits = shard.search(&SearchRequest {
        vector: q.to_vec(),
        top_k: k as u32,
        ef: Some(200), // covers every point the shard can hold
        filter: Some(filter.clone()),
        with_payload: true,
        with_vector: false,
    });
    prop_assert_eq!(hits.len(), k.min(matching.len()));
    let mut expected: Vec<f32> = matching.iter().map(|m| m.1).collect();
    expected.sort_by(f32::total_cmp);
    for (i, h) in hits.iter().enumerate() {
        let PointId::Num(id) = h.id else {
            unreachable!()
        };
        let (v, p) = &model[&id];
        prop_assert!(
            filter.matches(&h.id, p),
            "non-matching point {} returned",
            id
        );
        prop_assert_eq!(h.payload.as_ref(), Some(p));
        prop_assert!((h.score - l2(q, v).sqrt()).abs() < 1e-3);
        prop_assert!(
            (h.score - expected[i]).abs() < 1e-3,
            "rank {}: {} vs exact {}",
            i,
            h.score,
            expected[i]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn filtered_reads_equal_the_oracle(ops in prop::collection::vec(op(), 1..30)) {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let options = [exact(), graph()];
        let mut shards: Vec<Shard> =
            dirs.iter().zip(&options).map(|(d, o)| open(d.path(), DIM, o.clone())).collect();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Upsert(ps) => {
                    let points: Vec<Point> = ps.iter().map(|(id, v, p)| Point {
                        id: PointId::Num(*id),
                        vector: testing::vector(v),
                        payload: p.clone(),
                    }).collect();
                    for s in &shards {
                        s.sync(testing::upsert(s, points.clone()).unwrap()).unwrap();
                    }
                    for p in points {
                        let PointId::Num(id) = p.id else { unreachable!() };
                        model.insert(id, (p.vector, p.payload));
                    }
                }
                Op::Delete(ids) => {
                    for s in &shards {
                        s.sync(testing::delete(s, ids.iter().map(|i| PointId::Num(*i)).collect()).unwrap()).unwrap();
                    }
                    for id in ids {
                        model.remove(&id);
                    }
                }
                Op::Checkpoint => {
                    for s in &shards {
                        s.checkpoint().unwrap();
                    }
                }
                Op::Reopen => {
                    for s in &shards {
                        testing::wait_for_rebuild(s);
                    }
                    shards.clear(); // closes the stores before they are opened again
                    shards = dirs.iter().zip(&options).map(|(d, o)| open(d.path(), DIM, o.clone())).collect();
                }
                Op::Search { query, k, filter } => {
                    let q = testing::vector(&query);
                    for s in &shards {
                        check(s, &model, &q, k, &filter)?;
                    }
                }
            }
        }
        for s in &shards {
            testing::wait_for_rebuild(s);
        }
    }
}

/// The graph strategy at a scale where it cannot look at every point: recall@10 against
/// the exact filtered answer stays high at 1%, 10% and 50% selectivity, and every hit
/// matches the filter.
#[test]
fn graph_strategy_keeps_recall() {
    const N: u64 = 4_000;
    const D: usize = 16;
    const K: usize = 10;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), D, graph());
    let mut points = Vec::new();
    for id in 0..N {
        let vector: Vec<f32> = (0..D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let payload = Payload::from([
            ("s1".to_string(), Value::Integer(rng.random_range(0..100))),
            ("s10".to_string(), Value::Integer(rng.random_range(0..10))),
            ("s50".to_string(), Value::Integer(rng.random_range(0..2))),
        ]);
        points.push(Point {
            id: PointId::Num(id),
            vector,
            payload,
        });
    }
    for chunk in points.chunks(500) {
        testing::upsert(&shard, chunk.to_vec()).unwrap();
    }
    for field in ["s1", "s10", "s50"] {
        let filter = Filter {
            must: vec![Condition::Integer {
                key: field.into(),
                any: vec![0],
            }],
            ..Filter::default()
        };
        let (mut found, mut total) = (0, 0);
        for _ in 0..50 {
            let q: Vec<f32> = (0..D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let mut truth: Vec<(f32, PointId)> = points
                .iter()
                .filter(|p| filter.matches(&p.id, &p.payload))
                .map(|p| (l2(&q, &p.vector), p.id))
                .collect();
            truth.sort_by(|a, b| a.0.total_cmp(&b.0));
            truth.truncate(K);
            let hits = shard.search(&SearchRequest {
                vector: q,
                top_k: K as u32,
                ef: Some(64),
                filter: Some(filter.clone()),
                with_payload: true,
                with_vector: false,
            });
            assert_eq!(hits.len(), truth.len());
            for h in &hits {
                assert!(filter.matches(&h.id, h.payload.as_ref().unwrap()));
            }
            found += hits
                .iter()
                .filter(|h| truth.iter().any(|t| t.1 == h.id))
                .count();
            total += truth.len();
        }
        let recall = found as f64 / total as f64;
        assert!(recall >= 0.9, "{field}: recall {recall}");
    }
}

/// `search_if_light` answers graph searches and small exact scans (bounded work),
/// exactly as `search` does, and declines exact scans of many points.
#[test]
fn search_if_light_follows_the_search_strategy() {
    let dir = tempfile::tempdir().unwrap();
    let options = ShardOptions {
        exact_threshold: 100,
        filter_exact_fraction: 0.5,
        ..ShardOptions::default()
    };
    let shard = open(dir.path(), DIM, options);
    let request = |filter: Option<Filter>| SearchRequest {
        vector: vec![0.0; DIM],
        top_k: 5,
        ef: Some(16),
        filter,
        with_payload: false,
        with_vector: false,
    };
    let matching = |values: Vec<i64>| {
        Some(Filter {
            must: vec![Condition::Integer {
                key: "g".into(),
                any: values,
            }],
            ..Filter::default()
        })
    };
    let points = |ids: std::ops::Range<u64>| -> Vec<Point> {
        ids.map(|id| Point {
            id: PointId::Num(id),
            vector: vec![id as f32; DIM],
            payload: Payload::from([("g".to_string(), Value::Integer((id % 10) as i64))]),
        })
        .collect()
    };
    let is_light = |req: SearchRequest, max_scan: usize| match shard.search_if_light(&req, max_scan)
    {
        Some(hits) => {
            assert_eq!(hits, shard.search(&req), "a light search is the search");
            true
        }
        None => false,
    };
    testing::upsert(&shard, points(0..50)).unwrap();
    // At most the exact threshold (or max_scan) live points: an exact scan of few.
    assert!(is_light(request(None), 10));
    assert!(is_light(request(matching(vec![0])), 10));
    testing::upsert(&shard, points(50..1_000)).unwrap();
    // Unfiltered over the threshold: the graph.
    assert!(is_light(request(None), 10));
    // 10% match, under the exact fraction: an exact scan of 100 points.
    assert!(!is_light(request(matching(vec![0])), 10));
    assert!(is_light(request(matching(vec![0])), 100));
    // 60% match, over the exact fraction: the graph.
    assert!(is_light(request(matching((0..6).collect())), 10));
}

/// A shard with unsaved writes saves a checkpoint once it has been idle for
/// `checkpoint_idle`, never sooner, and only once per burst of writes.
#[test]
fn idle_shard_saves_a_checkpoint() {
    let idle = std::time::Duration::from_millis(300);
    let has_files = |dir: &std::path::Path| {
        fn any_file(p: &std::path::Path) -> bool {
            std::fs::read_dir(p).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.path().is_file() || any_file(&e.path()))
            })
        }
        any_file(&dir.join("index"))
    };
    let dir = tempfile::tempdir().unwrap();
    let options = ShardOptions {
        checkpoint_every: 1_000_000, // never by count here
        checkpoint_idle: idle,
        ..ShardOptions::default()
    };
    let shard = open(dir.path(), DIM, options.clone());
    assert!(!shard.checkpoint_if_idle(), "nothing written yet");
    let written = std::time::Instant::now();
    let points = (0..50)
        .map(|id| Point {
            id: PointId::Num(id),
            vector: vec![id as f32; DIM],
            payload: Payload::new(),
        })
        .collect();
    shard
        .sync(testing::upsert(&shard, points).unwrap())
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !shard.checkpoint_if_idle() {
        assert!(std::time::Instant::now() < deadline, "no idle checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        written.elapsed() >= idle,
        "a checkpoint started before the shard was idle"
    );
    // Running or done: either way there is nothing more to save.
    assert!(!shard.checkpoint_if_idle());
    while !has_files(dir.path()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the checkpoint wrote no files"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(shard);

    // checkpoint_every 0 turns idle checkpoints off too.
    let dir = tempfile::tempdir().unwrap();
    let shard = open(
        dir.path(),
        DIM,
        ShardOptions {
            checkpoint_every: 0,
            ..options
        },
    );
    shard
        .sync(
            testing::upsert(
                &shard,
                vec![Point {
                    id: PointId::Num(1),
                    vector: vec![1.0; DIM],
                    payload: Payload::new(),
                }],
            )
            .unwrap(),
        )
        .unwrap();
    std::thread::sleep(idle * 2);
    assert!(!shard.checkpoint_if_idle());
}
