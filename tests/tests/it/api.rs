//! The API does what the proto promises: lifecycle, replace, get, delete, filters,
//! scroll, count, health.

use std::collections::BTreeSet;

use shoal_proto::v1 as pb;

use crate::*;

fn kw(key: &str, any: &[&str]) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Keyword(pb::MatchKeyword {
            key: key.into(),
            any: any.iter().map(|s| s.to_string()).collect(),
        })),
    }
}

fn range(key: &str, gte: f64, lt: f64) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Range(pb::Range {
            key: key.into(),
            gte: Some(gte),
            lt: Some(lt),
            ..Default::default()
        })),
    }
}

/// Points 0..400 on a line in 2-d; payload: color by id % 3, n = id, tags, nulls.
fn dataset() -> Vec<pb::Point> {
    (0..400u64)
        .map(|i| {
            let color = ["red", "green", "blue"][(i % 3) as usize];
            let mut payload = vec![("color", string(color)), ("n", int(i as i64))];
            if i % 10 == 0 {
                payload.push((
                    "maybe",
                    pb::Value {
                        kind: Some(pb::value::Kind::NullValue(0)),
                    },
                ));
            }
            if i % 4 == 0 {
                let tags = pb::ListValue {
                    values: vec![
                        string("even4"),
                        string(if i % 8 == 0 { "even8" } else { "odd8" }),
                    ],
                };
                payload.push((
                    "tags",
                    pb::Value {
                        kind: Some(pb::value::Kind::ListValue(tags)),
                    },
                ));
            }
            point(i, vec![i as f32, 0.0], &payload)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn collections_points_filters_scroll() {
    let tmp = tempfile::tempdir().unwrap();
    // A low exact threshold, so the graph path is exercised too.
    let node = shoal_tests::Node::start(
        binary(),
        &tmp.path().join("data"),
        &["--exact-threshold", "50"],
    );
    let (mut cols, mut pts) = node.clients().await;

    // Collections lifecycle.
    let info = cols
        .create(create("a", 2, pb::Metric::L2, 4))
        .await
        .unwrap()
        .into_inner();
    let cfg = info.config.unwrap();
    assert_eq!(
        (
            cfg.dim,
            cfg.shard_count,
            cfg.replication_factor,
            cfg.m,
            cfg.ef_construction
        ),
        (2, 4, 1, 16, 200)
    );
    cols.create(create("b", 3, pb::Metric::Dot, 1))
        .await
        .unwrap();
    let names: Vec<String> = cols
        .list(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .collections
        .into_iter()
        .map(|c| c.config.unwrap().name)
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    cols.delete(pb::DeleteCollectionRequest { name: "b".into() })
        .await
        .unwrap();
    assert_eq!(
        cols.get(pb::GetCollectionRequest { name: "b".into() })
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );

    pts.upsert(pb::UpsertRequest {
        collection: "a".into(),
        points: dataset(),
    })
    .await
    .unwrap();
    let info = cols
        .get(pb::GetCollectionRequest { name: "a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.points_count, 400);
    assert_eq!(info.shards.len(), 4);
    assert!(
        info.shards.iter().all(|s| s.points_count > 50),
        "points spread over shards: {:?}",
        info.shards
    );

    // Nearest to x=100.2: 100, 101, 99, ...; L2 score is the distance.
    let r = pts
        .search(search("a", vec![100.2, 0.0], 3))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = r.results.iter().map(|h| id_of(&h.id)).collect();
    assert_eq!(ids, vec![100, 101, 99]);
    assert!((r.results[0].score - 0.2).abs() < 1e-3);
    assert!(r.results[0].payload.is_empty() && r.results[0].vector.is_empty());

    // Replace point 100: it moves away, keeps one version.
    pts.upsert(pb::UpsertRequest {
        collection: "a".into(),
        points: vec![point(100, vec![1000.0, 0.0], &[("color", string("gold"))])],
    })
    .await
    .unwrap();
    let mut req = search("a", vec![100.2, 0.0], 2);
    req.with_payload = true;
    req.with_vector = true;
    let r = pts.search(req).await.unwrap().into_inner();
    assert_eq!(
        r.results.iter().map(|h| id_of(&h.id)).collect::<Vec<_>>(),
        vec![101, 99]
    );
    assert_eq!(r.results[0].vector, vec![101.0, 0.0]);
    assert_eq!(r.results[0].payload.get("n"), Some(&int(101)));
    let got = pts
        .get(pb::GetPointsRequest {
            read: None,
            collection: "a".into(),
            ids: vec![num(100).unwrap(), num(7777).unwrap()],
            with_payload: true,
            with_vector: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.points.len(), 1, "unknown ids are left out");
    assert_eq!(got.points[0].vector, vec![1000.0, 0.0]);
    assert_eq!(got.points[0].payload.get("color"), Some(&string("gold")));
    assert_eq!(
        got.points[0].payload.get("n"),
        None,
        "a replace replaces the payload"
    );
    assert_eq!(count_all(&mut pts, "a").await, 400);

    // Filters: every result matches, and top_k come back when that many match.
    let filtered = |filter: pb::Filter, top_k: u32| {
        let mut r = search("a", vec![200.0, 0.0], top_k);
        r.filter = Some(filter);
        r.with_payload = true;
        r
    };
    let f = pb::Filter {
        must: vec![kw("color", &["red"])],
        ..Default::default()
    };
    let r = pts.search(filtered(f, 10)).await.unwrap().into_inner();
    assert_eq!(r.results.len(), 10);
    assert!(r.results.iter().all(|h| id_of(&h.id).is_multiple_of(3)));
    assert_eq!(id_of(&r.results[0].id), 201);
    // Very selective: 3 points match, all returned.
    let f = pb::Filter {
        must: vec![range("n", 10.0, 13.0)],
        ..Default::default()
    };
    let r = pts.search(filtered(f, 10)).await.unwrap().into_inner();
    assert_eq!(
        r.results
            .iter()
            .map(|h| id_of(&h.id))
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([10, 11, 12])
    );
    // should + must_not + list values + nested.
    let f = pb::Filter {
        should: vec![kw("tags", &["even8"]), kw("color", &["gold"])],
        must_not: vec![pb::Condition {
            kind: Some(pb::condition::Kind::Filter(pb::Filter {
                must: vec![range("n", 0.0, 100.0)],
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    let r = pts
        .search(filtered(f.clone(), 400))
        .await
        .unwrap()
        .into_inner();
    let ids: BTreeSet<u64> = r.results.iter().map(|h| id_of(&h.id)).collect();
    let expected: BTreeSet<u64> = (104..400).filter(|i| i % 8 == 0).chain([100]).collect();
    assert_eq!(ids, expected);
    let c = pts
        .count(pb::CountRequest {
            read: None,
            collection: "a".into(),
            filter: Some(f),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(c, expected.len() as u64);
    // is_null / is_empty / has_id / integer.
    let cnt = |c: pb::Condition| pb::CountRequest {
        read: None,
        collection: "a".into(),
        filter: Some(pb::Filter {
            must: vec![c],
            ..Default::default()
        }),
    };
    let is_null = pb::Condition {
        kind: Some(pb::condition::Kind::IsNull(pb::FieldKey {
            key: "maybe".into(),
        })),
    };
    assert_eq!(
        pts.count(cnt(is_null)).await.unwrap().into_inner().count,
        39,
        "every 10th except the replaced 100"
    );
    let is_empty = pb::Condition {
        kind: Some(pb::condition::Kind::IsEmpty(pb::FieldKey {
            key: "maybe".into(),
        })),
    };
    assert_eq!(
        pts.count(cnt(is_empty)).await.unwrap().into_inner().count,
        400
    );
    let has_id = pb::Condition {
        kind: Some(pb::condition::Kind::HasId(pb::HasId {
            ids: vec![num(5).unwrap(), num(6).unwrap(), num(9999).unwrap()],
        })),
    };
    assert_eq!(pts.count(cnt(has_id)).await.unwrap().into_inner().count, 2);
    let integer = pb::Condition {
        kind: Some(pb::condition::Kind::Integer(pb::MatchInteger {
            key: "n".into(),
            any: vec![1, 2, 3],
        })),
    };
    assert_eq!(pts.count(cnt(integer)).await.unwrap().into_inner().count, 3);

    // Delete, then scroll every point in id order across shards, in pages.
    pts.delete(pb::DeletePointsRequest {
        collection: "a".into(),
        ids: (0..50).map(|i| num(i * 2).unwrap()).collect(),
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut offset = None;
    loop {
        let page = pts
            .scroll(pb::ScrollRequest {
                collection: "a".into(),
                offset,
                limit: Some(37),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.points.len() <= 37);
        seen.extend(page.points.iter().map(|p| id_of(&p.id)));
        match page.next_offset {
            Some(o) => offset = Some(o),
            None => break,
        }
    }
    let expected: Vec<u64> = (0..400).filter(|i| !(i % 2 == 0 && *i < 100)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn uuid_ids_cosine_and_dot() {
    let tmp = tempfile::tempdir().unwrap();
    let node = shoal_tests::Node::start(binary(), &tmp.path().join("data"), &[]);
    let (mut cols, mut pts) = node.clients().await;
    cols.create(create("cos", 2, pb::Metric::Cosine, 2))
        .await
        .unwrap();
    let u = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let uid = Some(pb::PointId {
        kind: Some(pb::point_id::Kind::Uuid(u.into())),
    });
    let mut p = point(0, vec![3.0, 4.0], &[]);
    p.id = uid.clone();
    pts.upsert(pb::UpsertRequest {
        collection: "cos".into(),
        points: vec![p, point(1, vec![-1.0, 0.0], &[])],
    })
    .await
    .unwrap();
    let mut r = search("cos", vec![6.0, 8.0], 2);
    r.with_vector = true;
    let r = pts.search(r).await.unwrap().into_inner();
    assert_eq!(r.results[0].id, uid);
    assert!(
        (r.results[0].score - 1.0).abs() < 1e-5,
        "cosine similarity of parallel vectors"
    );
    assert_eq!(
        r.results[0].vector,
        vec![0.6, 0.8],
        "COSINE vectors are stored normalised"
    );
    assert!((r.results[1].score + 0.6).abs() < 1e-5);

    cols.create(create("dot", 2, pb::Metric::Dot, 1))
        .await
        .unwrap();
    pts.upsert(pb::UpsertRequest {
        collection: "dot".into(),
        points: vec![
            point(1, vec![1.0, 0.0], &[]),
            point(2, vec![10.0, 0.0], &[]),
            point(3, vec![0.0, 0.0], &[]),
        ],
    })
    .await
    .unwrap();
    let r = pts
        .search(search("dot", vec![2.0, 1.0], 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.results.iter().map(|h| id_of(&h.id)).collect::<Vec<_>>(),
        vec![2, 1, 3]
    );
    assert_eq!(
        r.results.iter().map(|h| h.score).collect::<Vec<_>>(),
        vec![20.0, 2.0, 0.0]
    );

    // Reflection lists the public services.
    let mut refl = tonic_reflection_client(&node).await;
    assert!(refl.contains(&"shoal.v1.Points".to_string()), "{refl:?}");
    refl.retain(|s| s.starts_with("shoal.v1"));
    refl.sort();
    assert_eq!(
        refl,
        vec![
            "shoal.v1.Backups",
            "shoal.v1.Cluster",
            "shoal.v1.Collections",
            "shoal.v1.Points"
        ]
    );
}

async fn tonic_reflection_client(node: &shoal_tests::Node) -> Vec<String> {
    // Use grpcurl's protocol by hand: list services via the v1 reflection API.
    use shoal_tests::reflection::list_services;
    list_services(node.channel().await).await
}

/// Regression: concurrent large upserts to the same shards once deadlocked (a pool
/// thread holding a shard's writer lock stole another upsert of the same shard while
/// waiting inside its parallel index insert).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_large_upserts_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let node = shoal_tests::Node::start(binary(), &tmp.path().join("data"), &[]);
    let (mut cols, pts) = node.clients().await;
    cols.create(create("big", 8, pb::Metric::L2, 2))
        .await
        .unwrap();
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let mut pts = pts.clone();
            tokio::spawn(async move {
                for b in 0..3u64 {
                    let batch = (0..1000u64)
                        .map(|i| {
                            let id = w * 100_000 + b * 1000 + i;
                            point(
                                id,
                                (0..8).map(|j| ((id * 7 + j) % 13) as f32).collect(),
                                &[],
                            )
                        })
                        .collect();
                    pts.upsert(pb::UpsertRequest {
                        collection: "big".into(),
                        points: batch,
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    let all = futures_join(writers);
    tokio::time::timeout(std::time::Duration::from_secs(120), all)
        .await
        .expect("concurrent upserts did not finish within 120 s (deadlock?)");
    let mut pts = pts;
    let n = count_all(&mut pts, "big").await;
    assert_eq!(n, 12_000);
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        h.await.unwrap();
    }
}
