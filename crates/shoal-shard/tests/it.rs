//! A shard against a brute-force model: random upserts, re-upserts, deletes and
//! filtered searches, with index rebuilds forced often.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use shoal_core::{Condition, Filter, Payload, Point, PointId, SearchRequest, Value, Write};
use shoal_shard::testing::{self, DIM, l2, vector};
use shoal_shard::{Shard, ShardOptions};

#[derive(Debug, Clone)]
enum Op {
    Upsert(Vec<(u64, [i8; DIM], i64)>),
    Delete(Vec<u64>),
    Search {
        query: [i8; DIM],
        k: usize,
        groups: Option<Vec<i64>>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => testing::batch(0..80, 0i64..5).prop_map(Op::Upsert),
        1 => prop::collection::vec(0u64..80, 1..10).prop_map(|mut ids| { ids.sort(); ids.dedup(); Op::Delete(ids) }),
        3 => (testing::small_vector(), 1usize..15, prop::option::of(prop::collection::vec(0i64..5, 1..3)))
            .prop_map(|(query, k, groups)| Op::Search { query, k, groups }),
    ]
}

fn open(dir: &std::path::Path) -> Shard {
    let options = ShardOptions {
        exact_threshold: 0,         // always the graph path for unfiltered searches
        filter_exact_fraction: 0.0, // and for filtered ones, unless fewer than k match
        rebuild_min_tombstones: 8,  // rebuild often
        rebuild_tombstone_ratio: 0.3,
        ..ShardOptions::default()
    };
    testing::open(dir, DIM, options)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn shard_matches_brute_force(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path());
        let mut model: BTreeMap<u64, (Vec<f32>, i64)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Upsert(ps) => {
                    let points = ps.iter().map(|(id, v, g)| Point {
                        id: PointId::Num(*id),
                        vector: vector(v),
                        payload: Payload::from([("g".to_string(), Value::Integer(*g))]),
                    }).collect();
                    let t = testing::upsert(&shard, points).unwrap();
                    shard.sync(t).unwrap();
                    for (id, v, g) in ps {
                        model.insert(id, (vector(&v), g));
                    }
                }
                Op::Delete(ids) => {
                    let t = testing::delete(&shard, ids.iter().map(|i| PointId::Num(*i)).collect()).unwrap();
                    shard.sync(t).unwrap();
                    for id in ids {
                        model.remove(&id);
                    }
                }
                Op::Search { query, k, groups } => {
                    let q = vector(&query);
                    let filter = groups.clone().map(|any| Filter {
                        must: vec![Condition::Integer { key: "g".into(), any }],
                        ..Filter::default()
                    });
                    let hits = shard.search(&SearchRequest {
                        vector: q.clone(),
                        top_k: k as u32,
                        ef: Some(200), // covers every point the shard can hold
                        filter,
                        with_payload: true,
                        with_vector: true,
                    });
                    let matching: Vec<(u64, f32)> = model.iter()
                        .filter(|(_, (_, g))| groups.as_ref().is_none_or(|gs| gs.contains(g)))
                        .map(|(id, (v, _))| (*id, l2(&q, v)))
                        .collect();
                    prop_assert_eq!(hits.len(), k.min(matching.len()), "top_k results whenever that many match");
                    let mut expected: Vec<f32> = matching.iter().map(|m| m.1.sqrt()).collect();
                    expected.sort_by(f32::total_cmp);
                    for (i, h) in hits.iter().enumerate() {
                        let PointId::Num(id) = h.id else { unreachable!() };
                        let (v, g) = &model[&id];
                        prop_assert!(groups.as_ref().is_none_or(|gs| gs.contains(g)), "non-matching point returned");
                        prop_assert_eq!(h.vector.as_ref(), Some(v));
                        prop_assert_eq!(h.payload.as_ref().and_then(|p| p.get("g")), Some(&Value::Integer(*g)));
                        prop_assert!((h.score - l2(&q, v).sqrt()).abs() < 1e-3);
                        // Same distances as the exact answer, rank by rank.
                        prop_assert!((h.score - expected[i]).abs() < 1e-3, "rank {}: {} vs exact {}", i, h.score, expected[i]);
                    }
                }
            }
        }
        // Wait out a background rebuild, then everything is still there.
        testing::wait_for_rebuild(&shard);
        prop_assert_eq!(shard.count(None), model.len() as u64);
        let ids: Vec<PointId> = model.keys().map(|i| PointId::Num(*i)).collect();
        prop_assert_eq!(shard.get(&ids, false, true).len(), model.len());
    }
}

#[test]
fn reopen_restores_points_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    {
        let shard = open(dir.path());
        let points = (0..50)
            .map(|i| Point {
                id: PointId::Num(i),
                vector: vec![i as f32, 0.0, 0.0, 0.0],
                payload: Payload::new(),
            })
            .collect();
        shard
            .sync(testing::upsert(&shard, points).unwrap())
            .unwrap();
        shard
            .sync(testing::delete(&shard, vec![PointId::Num(3)]).unwrap())
            .unwrap();
        assert_eq!(shard.stats().applied_seq, 2);
        testing::wait_for_rebuild(&shard);
    }
    let shard = open(dir.path());
    let stats = shard.stats();
    assert_eq!(
        (stats.points, stats.tombstones, stats.applied_seq),
        (49, 0, 2)
    );
    let hits = shard.search(&SearchRequest {
        vector: vec![3.2, 0.0, 0.0, 0.0],
        top_k: 2,
        ef: None,
        filter: None,
        with_payload: false,
        with_vector: false,
    });
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        vec![PointId::Num(4), PointId::Num(2)]
    );
}

#[test]
fn rebuild_under_concurrent_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path());
    // Many re-upserts of the same ids pile up tombstones and trigger rebuilds while a
    // second thread keeps writing new ids.
    let writer = {
        let shard = shard.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                let p = Point {
                    id: PointId::Num(10_000 + i),
                    vector: vec![i as f32, 1.0, 0.0, 0.0],
                    payload: Payload::new(),
                };
                shard
                    .sync(testing::upsert(&shard, vec![p]).unwrap())
                    .unwrap();
            }
        })
    };
    for round in 0..30u64 {
        let points = (0..100)
            .map(|i| Point {
                id: PointId::Num(i),
                vector: vec![i as f32, round as f32, 0.0, 0.0],
                payload: Payload::from([("round".to_string(), Value::Integer(round as i64))]),
            })
            .collect();
        shard
            .sync(testing::upsert(&shard, points).unwrap())
            .unwrap();
    }
    writer.join().unwrap();
    testing::wait_for_rebuild(&shard);
    assert_eq!(shard.count(None), 400);
    let latest = Filter {
        must: vec![Condition::Integer {
            key: "round".into(),
            any: vec![29],
        }],
        ..Filter::default()
    };
    assert_eq!(
        shard.count(Some(&latest)),
        100,
        "every id shows its latest version"
    );
    let stats = shard.stats();
    assert!(
        stats.tombstones <= 400,
        "rebuilds cleared tombstones: {stats:?}"
    );
    for i in [0u64, 57, 99] {
        let got = shard.get(&[PointId::Num(i)], false, true);
        assert_eq!(
            got[0].vector.as_deref(),
            Some(&[i as f32, 29.0, 0.0, 0.0][..])
        );
    }
}

fn exact_ids(shard: &Shard, q: Vec<f32>, k: u32) -> Vec<PointId> {
    shard
        .search(&SearchRequest {
            vector: q,
            top_k: k,
            ef: Some(500),
            filter: None,
            with_payload: false,
            with_vector: false,
        })
        .into_iter()
        .map(|h| h.id)
        .collect()
}

#[test]
fn stale_checkpoint_is_reconciled_with_storage() {
    let dir = tempfile::tempdir().unwrap();
    let p = |id: u64, x: f32, tag: i64| Point {
        id: PointId::Num(id),
        vector: vec![x, 0.0, 0.0, 0.0],
        payload: Payload::from([("tag".to_string(), Value::Integer(tag))]),
    };
    {
        let shard = open(dir.path());
        shard
            .sync(testing::upsert(&shard, (0..100).map(|i| p(i, i as f32, 0)).collect()).unwrap())
            .unwrap();
        shard.checkpoint().unwrap();
        // After the checkpoint: move 10 points, delete 10, add 10, change a payload.
        shard
            .sync(
                testing::upsert(
                    &shard,
                    (0..10).map(|i| p(i, 1000.0 + i as f32, 1)).collect(),
                )
                .unwrap(),
            )
            .unwrap();
        shard
            .sync(testing::delete(&shard, (10..20).map(PointId::Num).collect()).unwrap())
            .unwrap();
        shard
            .sync(testing::upsert(&shard, (100..110).map(|i| p(i, i as f32, 2)).collect()).unwrap())
            .unwrap();
        shard
            .sync(testing::upsert(&shard, vec![p(50, 50.0, 7)]).unwrap())
            .unwrap();
        testing::wait_for_rebuild(&shard);
    }
    let shard = open(dir.path());
    assert_eq!(shard.count(None), 100);
    assert_eq!(
        exact_ids(&shard, vec![1000.0, 0.0, 0.0, 0.0], 3),
        vec![PointId::Num(0), PointId::Num(1), PointId::Num(2)]
    );
    assert_eq!(
        exact_ids(&shard, vec![15.0, 0.0, 0.0, 0.0], 2),
        vec![PointId::Num(20), PointId::Num(21)]
    );
    assert_eq!(
        exact_ids(&shard, vec![109.0, 0.0, 0.0, 0.0], 1),
        vec![PointId::Num(109)]
    );
    let tag7 = Filter {
        must: vec![Condition::Integer {
            key: "tag".into(),
            any: vec![7],
        }],
        ..Filter::default()
    };
    assert_eq!(shard.count(Some(&tag7)), 1);
    assert!(shard.get(&[PointId::Num(12)], false, false).is_empty());
    // Checkpointing again and reopening gives the same answers.
    shard.checkpoint().unwrap();
    drop(shard);
    let shard = open(dir.path());
    assert_eq!(shard.count(None), 100);
    assert_eq!(
        exact_ids(&shard, vec![1000.0, 0.0, 0.0, 0.0], 3),
        vec![PointId::Num(0), PointId::Num(1), PointId::Num(2)]
    );
}

#[test]
fn damaged_checkpoint_falls_back_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    {
        let shard = open(dir.path());
        let points = (0..60)
            .map(|i| Point {
                id: PointId::Num(i),
                vector: vec![i as f32, 1.0, 0.0, 0.0],
                payload: Payload::new(),
            })
            .collect();
        shard
            .sync(testing::upsert(&shard, points).unwrap())
            .unwrap();
        shard.checkpoint().unwrap();
    }
    // Truncate every file of the checkpoint.
    let mut damaged = 0;
    let mut stack = vec![dir.path().join("index")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                std::fs::write(e.path(), b"x").unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0, "the checkpoint wrote files under <data>/index");
    let shard = open(dir.path());
    assert_eq!(shard.count(None), 60);
    assert_eq!(shard.stats().tombstones, 0, "rebuilt from storage");
    assert_eq!(
        exact_ids(&shard, vec![30.2, 1.0, 0.0, 0.0], 2),
        vec![PointId::Num(30), PointId::Num(31)]
    );
}

fn pt(id: u64, x: f32) -> Point {
    Point {
        id: PointId::Num(id),
        vector: vec![x, 0.0, 0.0, 0.0],
        payload: Payload::new(),
    }
}

#[test]
fn apply_at_is_idempotent_and_keeps_meta_atomically() {
    let dir = tempfile::tempdir().unwrap();
    {
        let shard = open(dir.path());
        let t = shard
            .apply_at(
                5,
                Some(Write::Upsert(vec![pt(1, 1.0), pt(2, 2.0)])),
                b"log-5",
            )
            .unwrap();
        shard.sync(t.unwrap()).unwrap();
        // Replays of applied entries are skipped, whatever they carry.
        assert!(
            shard
                .apply_at(5, Some(Write::Delete(vec![PointId::Num(1)])), b"x")
                .unwrap()
                .is_none()
        );
        assert!(
            shard
                .apply_at(3, Some(Write::Upsert(vec![pt(9, 9.0)])), b"x")
                .unwrap()
                .is_none()
        );
        let t = shard.apply_at(6, None, b"log-6").unwrap().unwrap();
        shard.sync(t).unwrap();
        let t = shard
            .apply_at(7, Some(Write::Delete(vec![PointId::Num(2)])), b"log-7")
            .unwrap();
        shard.sync(t.unwrap()).unwrap();
        assert_eq!(shard.count(None), 1);
        assert_eq!(shard.meta().unwrap().as_deref(), Some(&b"log-7"[..]));
    }
    let shard = open(dir.path());
    assert_eq!(shard.stats().applied_seq, 7);
    assert_eq!(shard.meta().unwrap().as_deref(), Some(&b"log-7"[..]));
    assert_eq!(
        shard
            .get(
                &[PointId::Num(1), PointId::Num(2), PointId::Num(9)],
                false,
                false
            )
            .len(),
        1
    );
}

#[test]
fn snapshot_installs_on_another_shard_replacing_its_contents() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(a_dir.path());
    let points: Vec<Point> = (0..300).map(|i| pt(i, i as f32)).collect();
    a.sync(
        a.apply_at(10, Some(Write::Upsert(points)), b"ten")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    a.sync(
        a.apply_at(11, Some(Write::Delete(vec![PointId::Num(0)])), b"eleven")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let snap = a.snapshot().unwrap();
    assert_eq!(
        (snap.seq, snap.meta.as_deref(), snap.points.len()),
        (11, Some(&b"eleven"[..]), 299)
    );
    {
        let b = open(b_dir.path());
        // B has stale data of its own, which the snapshot must replace entirely.
        b.sync(
            b.apply_at(
                3,
                Some(Write::Upsert(vec![pt(5000, 1.0), pt(5, 123.0)])),
                b"old",
            )
            .unwrap()
            .unwrap(),
        )
        .unwrap();
        b.sync(b.install(snap.clone()).unwrap()).unwrap();
        assert_eq!(b.snapshot().unwrap(), snap);
        // Later entries apply on top; replays of covered ones are skipped.
        assert!(
            b.apply_at(11, Some(Write::Upsert(vec![pt(7777, 0.0)])), b"x")
                .unwrap()
                .is_none()
        );
        b.sync(
            b.apply_at(12, Some(Write::Upsert(vec![pt(300, 300.0)])), b"twelve")
                .unwrap()
                .unwrap(),
        )
        .unwrap();
    }
    let b = open(b_dir.path());
    assert_eq!(b.count(None), 300);
    assert_eq!(b.stats().applied_seq, 12);
    assert!(
        b.get(&[PointId::Num(5000), PointId::Num(0)], false, false)
            .is_empty()
    );
    assert_eq!(
        b.get(&[PointId::Num(5)], false, true)[0].vector.as_deref(),
        Some(&[5.0, 0.0, 0.0, 0.0][..])
    );
    assert_eq!(
        exact_ids(&b, vec![299.6, 0.0, 0.0, 0.0], 2),
        vec![PointId::Num(300), PointId::Num(299)]
    );
}

#[test]
fn a_split_off_shard_keeps_its_half_and_searches_it_on_the_parent_graph() {
    let (dir, child_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let parent = open(dir.path());
    let p = |id: u64| Point {
        id: PointId::Num(id),
        vector: vec![(id % 97) as f32, (id / 97) as f32, (id % 13) as f32, 1.0],
        payload: Payload::from([("odd".to_string(), Value::Integer((id % 2) as i64))]),
    };
    parent
        .sync(testing::upsert(&parent, (0..2_000).map(p).collect()).unwrap())
        .unwrap();
    let store = shoal_storage::Store::open(child_dir.path()).unwrap();
    let record = store.create_collection(testing::config(DIM)).unwrap();
    let keep = |id: &PointId| matches!(id, PointId::Num(n) if n % 2 == 0);
    let child = parent
        .split_off(store.shard(&record, 0).unwrap(), 0, keep, 5, b"meta")
        .unwrap();
    assert_eq!(child.count(None), 1_000);
    assert_eq!(child.stats().applied_seq, 5);
    assert_eq!(child.meta().unwrap().as_deref(), Some(&b"meta"[..]));
    assert!(child.get(&[PointId::Num(1)], false, false).is_empty());
    assert_eq!(child.get(&[PointId::Num(2)], false, true).len(), 1);
    // The graph came from the parent (the other half's nodes deleted: tombstones) and
    // answers with the kept points only, as an exact scan of them would, before and
    // after the compaction.
    let check = |child: &Shard| {
        for q in [0u64, 501, 1_234, 1_999] {
            let query = p(q).vector;
            let hits = exact_ids(child, query.clone(), 10);
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(keep), "{hits:?}");
            let mut exact: Vec<(f32, u64)> = (0..2_000u64)
                .filter(|i| i % 2 == 0)
                .map(|i| (l2(&p(i).vector, &query), i))
                .collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let best: Vec<f32> = exact.iter().take(10).map(|e| e.0).collect();
            let mut got: Vec<f32> = child
                .get(&hits, false, true)
                .iter()
                .map(|r| l2(r.vector.as_ref().unwrap(), &query))
                .collect();
            got.sort_by(f32::total_cmp);
            assert_eq!(got, best, "query {q}: the 10 nearest distances");
        }
    };
    assert!(child.stats().tombstones >= 1_000, "{:?}", child.stats());
    check(&child);
    // The first write compacts it in the background; the answers stay.
    child
        .sync(testing::upsert(&child, vec![p(4_000)]).unwrap())
        .unwrap();
    testing::wait_for_rebuild(&child);
    assert_eq!(child.stats().tombstones, 0, "compacted");
    assert_eq!(child.count(None), 1_001);
    check(&child);
    // Reopened, it is the same shard.
    drop(child);
    let keep_count = 1_001;
    let child = shoal_shard::Shard::open(
        std::sync::Arc::new(testing::config(DIM)),
        0,
        store.shard(&record, 0).unwrap(),
        ShardOptions {
            exact_threshold: 0,
            ..ShardOptions::default()
        },
        std::sync::Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(child.count(None), keep_count);
}

#[test]
fn an_invalid_write_stores_nothing_and_a_bad_stored_record_is_quarantined_on_open() {
    for with_checkpoint in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = shoal_storage::Store::open(dir.path()).unwrap();
            let shard = testing::open_in(&store, testing::config(DIM), ShardOptions::default());
            let t = testing::upsert(&shard, (1..=20).map(|i| pt(i, i as f32)).collect()).unwrap();
            shard.sync(t).unwrap();
            // A wrong dimension, a non-finite component: refused before anything is
            // stored, the shard unchanged and still writable.
            let wrong_dim = Point {
                vector: vec![1.0; DIM + 1],
                ..pt(100, 0.0)
            };
            let nan = Point {
                vector: vec![f32::NAN; DIM],
                ..pt(101, 0.0)
            };
            for bad in [wrong_dim.clone(), nan.clone()] {
                let e = testing::upsert(&shard, vec![pt(50, 5.0), bad]).unwrap_err();
                assert!(matches!(e, shoal_shard::ShardError::Invalid(_)), "{e}");
            }
            assert_eq!(shard.count(None), 20);
            assert!(
                shard
                    .check(&Write::Upsert(vec![wrong_dim.clone()]))
                    .is_err()
            );
            assert!(shard.check(&Write::Upsert(vec![pt(50, 5.0)])).is_ok());
            if with_checkpoint {
                shard.checkpoint().unwrap();
            }
            // Records no valid write could store, planted beneath the shard: a
            // wrong dimension, a NaN, bytes that do not decode.
            let record = store.collections().unwrap().pop().unwrap();
            let raw = store.shard(&record, 0).unwrap();
            raw.put_unchecked(&wrong_dim, None).unwrap();
            raw.put_unchecked(&nan, None).unwrap();
            raw.put_unchecked(&pt(102, 0.0), Some(&[0xff, 0xff, 0xff]))
                .unwrap();
            raw.put_unchecked(&pt(3, 0.0), Some(&[0xff])).unwrap();
        }
        // The shard opens with the rest: 19 points (point 3's record was damaged),
        // 4 quarantined, searchable and writable; a second open finds them still
        // quarantined and nothing else missing.
        for _ in 0..2 {
            let shard = open(dir.path());
            let stats = shard.stats();
            assert_eq!(
                (stats.points, stats.quarantined),
                (19, 4),
                "checkpoint: {with_checkpoint}"
            );
            let ids = exact_ids(&shard, vec![4.0, 0.0, 0.0, 0.0], 3);
            assert_eq!(ids[0], PointId::Num(4));
            assert!(!ids.contains(&PointId::Num(3)));
            let t = testing::upsert(&shard, vec![pt(3, 3.0)]).unwrap();
            shard.sync(t).unwrap();
            assert_eq!(shard.count(None), 20);
            let t = testing::delete(&shard, vec![PointId::Num(3)]).unwrap();
            shard.sync(t).unwrap();
        }
    }
}

#[test]
fn upserts_past_the_payload_key_bound_are_refused_and_deletes_free_keys() {
    let dir = tempfile::tempdir().unwrap();
    let options = ShardOptions {
        max_payload_keys: 3,
        ..ShardOptions::default()
    };
    let shard = testing::open(dir.path(), DIM, options);
    let apply = |shard: &Shard, w: Write| match w {
        Write::Upsert(p) => testing::upsert(shard, p).map(drop).unwrap(),
        Write::Delete(ids) => testing::delete(shard, ids).map(drop).unwrap(),
    };
    let with = |id: u64, keys: &[&str]| {
        let payload: Payload = keys
            .iter()
            .map(|k| (k.to_string(), Value::Integer(1)))
            .collect::<BTreeMap<_, _>>();
        Write::Upsert(vec![Point {
            id: PointId::Num(id),
            vector: vec![id as f32, 0.0, 0.0, 0.0],
            payload,
        }])
    };
    // Nested keys count as their paths: `a` and `a.b`.
    let nested = Write::Upsert(vec![Point {
        id: PointId::Num(1),
        vector: vec![1.0, 0.0, 0.0, 0.0],
        payload: [(
            "a".to_string(),
            Value::Object([("b".to_string(), Value::Integer(1))].into()),
        )]
        .into(),
    }]);
    shard.admit(&nested).unwrap();
    apply(&shard, nested);
    // Keys already held cost nothing; one new key fits (3), a second does not.
    shard.admit(&with(2, &["a"])).unwrap();
    let one_more = with(3, &["c"]);
    shard.admit(&one_more).unwrap();
    apply(&shard, one_more);
    let err = shard.admit(&with(4, &["d", "a"])).unwrap_err();
    assert!(
        matches!(
            err,
            shoal_shard::ShardError::TooManyPayloadKeys {
                held: 3,
                new: 1,
                limit: 3
            }
        ),
        "{err:?}"
    );
    // Deletes always pass; once a key's last point is gone, its place is free again.
    let delete = Write::Delete(vec![PointId::Num(3)]);
    shard.admit(&delete).unwrap();
    apply(&shard, delete);
    shard.admit(&with(4, &["d", "a"])).unwrap();
    // 0: no bound.
    let unbounded = testing::open(
        tempfile::tempdir().unwrap().path(),
        DIM,
        ShardOptions {
            max_payload_keys: 0,
            ..ShardOptions::default()
        },
    );
    let keys: Vec<String> = (0..100).map(|k| format!("k{k}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    unbounded.admit(&with(1, &keys)).unwrap();
}

/// Status and split progress read a shard's stats from async code: they must never
/// wait for the writer lock, which a snapshot, a checkpoint or a snapshot install holds
/// for seconds (two such waits stalled both runtime threads of a two-core node: the
/// whole process stopped answering until the holder finished).
#[test]
fn stats_never_wait_for_the_writer_lock() {
    let dir = tempfile::tempdir().unwrap();
    let shard = testing::open(dir.path(), DIM, ShardOptions::default());
    testing::upsert(&shard, (0..10).map(|i| pt(i, i as f32)).collect()).unwrap();
    let (holding, held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (answered, answer) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        // A snapshot holds the writer lock until it is released.
        let snapshotting = shard.clone();
        scope.spawn(move || {
            let mut first = true;
            snapshotting
                .snapshot_chunks::<shoal_shard::ShardError>(100, |_| {
                    if first {
                        first = false;
                        holding.send(()).unwrap();
                        let _ = released.recv_timeout(Duration::from_secs(20));
                    }
                    Ok(())
                })
                .unwrap();
        });
        held.recv_timeout(Duration::from_secs(10)).unwrap();
        let reader = shard.clone();
        scope.spawn(move || {
            let stats = reader.stats();
            let _ = answered.send((stats.points, stats.applied_seq, reader.is_rebuilding()));
        });
        let got = answer.recv_timeout(Duration::from_secs(5));
        release.send(()).unwrap();
        let (points, applied, rebuilding) = got.expect("stats waited for the writer lock");
        assert_eq!(points, 10);
        assert_eq!(applied, shard.stats().applied_seq);
        assert!(applied > 0);
        assert!(!rebuilding);
    });
}

/// A graph rebuild runs on the compaction pool: while that pool is busy, the shard's writes
/// (whose index inserts use the foreground pool) go on, and the rebuild waits. With one
/// pool for both, a write queued behind a rebuild of a split's child for its seconds:
/// the node's writes timed out (BENCHMARKS.md "Resharding").
#[test]
fn a_rebuild_never_holds_up_the_foreground_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = shoal_storage::Store::open(dir.path()).unwrap();
    let record = store.create_collection(testing::config(DIM)).unwrap();
    let one = || {
        std::sync::Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap(),
        )
    };
    let pools = shoal_shard::Pools {
        foreground: one(),
        build: one(),
        compaction: one(),
    };
    let shard = Shard::open(
        std::sync::Arc::new(testing::config(DIM)),
        0,
        store.shard(&record, 0).unwrap(),
        ShardOptions {
            rebuild_min_tombstones: 10,
            rebuild_tombstone_ratio: 0.3,
            ..ShardOptions::default()
        },
        pools.clone(),
    )
    .unwrap();
    shard
        .sync(testing::upsert(&shard, (0..200).map(|i| pt(i, i as f32)).collect()).unwrap())
        .unwrap();
    // Hold the compaction pool's one thread until released (at most 30 s).
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (holding, held) = std::sync::mpsc::channel();
    pools.compaction.spawn(move || {
        holding.send(()).unwrap();
        let _ = released.recv_timeout(Duration::from_secs(30));
    });
    held.recv_timeout(Duration::from_secs(10)).unwrap();
    // Deleting most points starts a rebuild, which waits for the compaction pool.
    shard
        .sync(testing::delete(&shard, (0..150).map(PointId::Num).collect()).unwrap())
        .unwrap();
    assert!(shard.is_rebuilding());
    let (answered, answer) = std::sync::mpsc::channel();
    let writer = shard.clone();
    std::thread::spawn(move || {
        let done = testing::upsert(&writer, (1_000..1_100).map(|i| pt(i, i as f32)).collect())
            .and_then(|t| writer.sync(t));
        let _ = answered.send(done.is_ok());
    });
    let wrote = answer.recv_timeout(Duration::from_secs(10));
    let rebuilding = shard.is_rebuilding();
    release.send(()).unwrap();
    assert_eq!(
        wrote,
        Ok(true),
        "a write waited for the pool a rebuild occupies"
    );
    assert!(rebuilding, "the rebuild ran without the compaction pool");
    testing::wait_for_rebuild(&shard);
    assert_eq!(shard.stats().tombstones, 0);
    assert_eq!(shard.count(None), 150);
}

/// Before a split seals a shard, its replicas save a checkpoint for the children to
/// start from, so that the pause of the shard's writes leaves out the whole-graph dump:
/// `ready_to_split` says whether the newest checkpoint is fresh and otherwise starts
/// one; a rebuild makes the checkpoint of the old graph stale.
#[test]
fn a_shard_is_ready_to_split_once_a_fresh_checkpoint_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let shard = testing::open(
        dir.path(),
        DIM,
        ShardOptions {
            rebuild_min_tombstones: 10,
            rebuild_tombstone_ratio: 0.3,
            ..ShardOptions::default()
        },
    );
    shard
        .sync(testing::upsert(&shard, (0..300).map(|i| pt(i, i as f32)).collect()).unwrap())
        .unwrap();
    let ready_within = |secs: u64| {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < until {
            if shard.ready_to_split() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    };
    // No checkpoint yet: not ready, and asking starts one.
    assert!(!shard.ready_to_split());
    assert!(ready_within(20), "a checkpoint was saved when asked");
    assert!(shard.gauges().checkpoint_age_secs.is_some());
    // A rebuild replaces the graph: the checkpoint of the old one is stale, however
    // recent (asking again saves one of the new graph).
    shard
        .sync(testing::delete(&shard, (0..250).map(PointId::Num).collect()).unwrap())
        .unwrap();
    testing::wait_for_rebuild(&shard);
    assert_eq!(shard.stats().tombstones, 0, "rebuilt");
    assert!(
        !shard.ready_to_split(),
        "the old graph's checkpoint is not fresh"
    );
    assert!(ready_within(20), "a checkpoint of the new graph was saved");
}
