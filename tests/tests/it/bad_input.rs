//! Every kind of bad input gets a precise status naming the field, nothing invalid is
//! stored, and the node keeps serving.

use shoal_proto::v1 as pb;
use tonic::Code;

use crate::*;

fn check(what: &str, r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, field: &str) {
    match r {
        Ok(v) => panic!("{what}: expected {code:?} naming {field:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {}", s.message());
            assert!(
                s.message().contains(field),
                "{what}: message {:?} does not name {field:?}",
                s.message()
            );
        }
    }
}

fn uuid(s: &str) -> Option<pb::PointId> {
    Some(pb::PointId {
        kind: Some(pb::point_id::Kind::Uuid(s.into())),
    })
}

fn cond(kind: pb::condition::Kind) -> pb::Condition {
    pb::Condition { kind: Some(kind) }
}

/// A filter nested `depth` levels deep.
fn nested_filter(depth: usize) -> pb::Filter {
    (0..depth).fold(pb::Filter::default(), |inner, _| pb::Filter {
        must: vec![cond(pb::condition::Kind::Filter(inner))],
        ..Default::default()
    })
}

/// One unary gRPC call over raw HTTP/2 with a `grpc-timeout` header: the
/// `grpc-status` and `grpc-message` the server answered (in headers or trailers).
async fn raw_call(
    url: &str,
    path: &str,
    timeout: &str,
    msg: impl prost::Message,
) -> (String, String) {
    let addr = url.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("{url}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(grpc_frame(&msg), true).unwrap();
    let resp = resp.await.unwrap();
    let get = |h: &http::HeaderMap| {
        (
            h.get("grpc-status")
                .map(|v| v.to_str().unwrap().to_string()),
            h.get("grpc-message")
                .map(|v| v.to_str().unwrap().to_string()),
        )
    };
    let (mut status, mut message) = get(resp.headers());
    if status.is_none() {
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            chunk.unwrap();
        }
        let trailers = body.trailers().await.unwrap().unwrap_or_default();
        (status, message) = get(&trailers);
    }
    (status.unwrap_or_default(), message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_table() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = shoal_tests::Node::start(
        binary(),
        &tmp.path().join("data"),
        &[
            "--max-batch-points",
            "100",
            "--max-message-bytes",
            "1048576",
            "--max-top-k",
            "100",
            "--max-ef",
            "500",
            "--max-search-batch",
            "10",
            "--max-dim",
            "4096",
            "--max-payload-bytes",
            "1024",
            "--max-scroll-limit",
            "50",
            "--max-batch-results",
            "500",
            "--max-payload-keys",
            "20",
        ],
    );
    let (mut cols, mut pts) = node.clients().await;
    cols.create(create("c", 4, pb::Metric::Cosine, 2))
        .await
        .unwrap();
    let good: Vec<pb::Point> = (0..10)
        .map(|i| point(i, vec![1.0, i as f32, 0.5, 0.25], &[("n", int(i as i64))]))
        .collect();
    pts.upsert(pb::UpsertRequest {
        collection: "c".into(),
        points: good,
    })
    .await
    .unwrap();

    // ---- collections ----
    let mut req = create("bad name", 4, pb::Metric::L2, 1);
    check(
        "invalid name",
        cols.create(req.clone()).await,
        Code::InvalidArgument,
        "collection name",
    );
    req.name = "x".repeat(65);
    check(
        "long name",
        cols.create(req).await,
        Code::InvalidArgument,
        "collection",
    );
    check(
        "dim 0",
        cols.create(create("d0", 0, pb::Metric::L2, 1)).await,
        Code::InvalidArgument,
        "dim",
    );
    // Over a limit of the server's configuration: RESOURCE_EXHAUSTED naming the flag.
    check(
        "dim over max",
        cols.create(create("d1", 5000, pb::Metric::L2, 1)).await,
        Code::ResourceExhausted,
        "--max-dim",
    );
    check(
        "metric unset",
        cols.create(create("m0", 4, pb::Metric::Unspecified, 1))
            .await,
        Code::InvalidArgument,
        "metric",
    );
    let mut req = create("m1", 4, pb::Metric::L2, 1);
    req.metric = 99;
    check(
        "unknown metric",
        cols.create(req).await,
        Code::InvalidArgument,
        "metric",
    );
    check(
        "shard_count 0",
        cols.create(create("s0", 4, pb::Metric::L2, 0)).await,
        Code::InvalidArgument,
        "shard_count",
    );
    let mut req = create("hm", 4, pb::Metric::L2, 1);
    req.m = Some(1000);
    check(
        "m too big",
        cols.create(req).await,
        Code::InvalidArgument,
        "hnsw.m",
    );
    let mut req = create("rf", 4, pb::Metric::L2, 1);
    req.replication_factor = Some(0);
    check(
        "replication_factor 0",
        cols.create(req).await,
        Code::InvalidArgument,
        "replication_factor",
    );
    check(
        "existing",
        cols.create(create("c", 4, pb::Metric::L2, 1)).await,
        Code::AlreadyExists,
        "\"c\"",
    );
    check(
        "get unknown",
        cols.get(pb::GetCollectionRequest {
            name: "nope".into(),
        })
        .await,
        Code::NotFound,
        "nope",
    );
    check(
        "delete unknown",
        cols.delete(pb::DeleteCollectionRequest {
            name: "nope".into(),
        })
        .await,
        Code::NotFound,
        "nope",
    );

    // ---- upserts ----
    let up = |points: Vec<pb::Point>| pb::UpsertRequest {
        collection: "c".into(),
        points,
    };
    let v = |x: f32| vec![x, 1.0, 1.0, 1.0];
    check(
        "unknown collection",
        pts.upsert(pb::UpsertRequest {
            collection: "nope".into(),
            points: vec![point(1, v(1.0), &[])],
        })
        .await,
        Code::NotFound,
        "nope",
    );
    check(
        "bad collection name",
        pts.upsert(pb::UpsertRequest {
            collection: "no/pe".into(),
            points: vec![point(1, v(1.0), &[])],
        })
        .await,
        Code::InvalidArgument,
        "collection",
    );
    check(
        "wrong dimension",
        pts.upsert(up(vec![point(100, vec![1.0; 3], &[])])).await,
        Code::InvalidArgument,
        "points[0].vector",
    );
    check(
        "NaN",
        pts.upsert(up(vec![
            point(100, v(1.0), &[]),
            point(101, vec![1.0, 1.0, f32::NAN, 1.0], &[]),
        ]))
        .await,
        Code::InvalidArgument,
        "points[1].vector[2]",
    );
    check(
        "infinity",
        pts.upsert(up(vec![point(100, v(f32::INFINITY), &[])]))
            .await,
        Code::InvalidArgument,
        "points[0].vector[0]",
    );
    check(
        "zero vector for COSINE",
        pts.upsert(up(vec![point(100, vec![0.0; 4], &[])])).await,
        Code::InvalidArgument,
        "points[0].vector",
    );
    check(
        "empty vector",
        pts.upsert(up(vec![point(100, vec![], &[])])).await,
        Code::InvalidArgument,
        "points[0].vector",
    );
    check(
        "duplicate ids",
        pts.upsert(up(vec![point(100, v(1.0), &[]), point(100, v(2.0), &[])]))
            .await,
        Code::InvalidArgument,
        "points[1].id",
    );
    let mut no_id = point(100, v(1.0), &[]);
    no_id.id = None;
    check(
        "missing id",
        pts.upsert(up(vec![no_id])).await,
        Code::InvalidArgument,
        "points[0].id",
    );
    let mut bad_uuid = point(100, v(1.0), &[]);
    bad_uuid.id = uuid("not-a-uuid");
    check(
        "bad uuid",
        pts.upsert(up(vec![bad_uuid])).await,
        Code::InvalidArgument,
        "points[0].id",
    );
    check(
        "empty batch",
        pts.upsert(up(vec![])).await,
        Code::InvalidArgument,
        "points",
    );
    check(
        "batch over limit",
        pts.upsert(up((0..101).map(|i| point(1000 + i, v(1.0), &[])).collect()))
            .await,
        Code::ResourceExhausted,
        "points",
    );
    let big = pb::Value {
        kind: Some(pb::value::Kind::StringValue("x".repeat(2000))),
    };
    check(
        "payload over limit",
        pts.upsert(up(vec![point(100, v(1.0), &[("big", big)])]))
            .await,
        Code::ResourceExhausted,
        "points[0].payload",
    );
    let mut deep = int(1);
    for _ in 0..40 {
        deep = pb::Value {
            kind: Some(pb::value::Kind::ListValue(pb::ListValue {
                values: vec![deep],
            })),
        };
    }
    check(
        "payload too deep",
        pts.upsert(up(vec![point(100, v(1.0), &[("deep", deep)])]))
            .await,
        Code::InvalidArgument,
        "points[0].payload.deep",
    );
    let nan = pb::Value {
        kind: Some(pb::value::Kind::DoubleValue(f64::NAN)),
    };
    check(
        "NaN payload",
        pts.upsert(up(vec![point(100, v(1.0), &[("x", nan)])]))
            .await,
        Code::InvalidArgument,
        "points[0].payload.x",
    );
    let huge = (0..60)
        .map(|i| {
            point(
                2000 + i,
                vec![1.0; 4],
                &[("s", string(&"y".repeat(20_000)))],
            )
        })
        .collect();
    check(
        "message over --max-message-bytes",
        pts.upsert(up(huge)).await,
        Code::ResourceExhausted,
        "max-message-bytes",
    );

    // ---- searches ----
    let s = |vector: Vec<f32>, top_k: u32| search("c", vector, top_k);
    check(
        "search unknown collection",
        pts.search(search("nope", v(1.0), 10)).await,
        Code::NotFound,
        "nope",
    );
    check(
        "top_k 0",
        pts.search(s(v(1.0), 0)).await,
        Code::InvalidArgument,
        "top_k",
    );
    check(
        "top_k over max",
        pts.search(s(v(1.0), 101)).await,
        Code::ResourceExhausted,
        "top_k",
    );
    let mut r = s(v(1.0), 10);
    r.ef = Some(501);
    check(
        "ef over max",
        pts.search(r).await,
        Code::ResourceExhausted,
        "--max-ef",
    );
    let mut r = s(v(1.0), 10);
    r.ef = Some(0);
    check("ef 0", pts.search(r).await, Code::InvalidArgument, "ef");
    check(
        "query wrong dimension",
        pts.search(s(vec![1.0; 5], 10)).await,
        Code::InvalidArgument,
        "vector",
    );
    check(
        "query NaN",
        pts.search(s(vec![1.0, f32::NAN, 1.0, 1.0], 10)).await,
        Code::InvalidArgument,
        "vector[1]",
    );
    check(
        "query zero for COSINE",
        pts.search(s(vec![0.0; 4], 10)).await,
        Code::InvalidArgument,
        "vector",
    );
    let mut r = s(v(1.0), 10);
    r.filter = Some(pb::Filter {
        must: vec![pb::Condition { kind: None }],
        ..Default::default()
    });
    check(
        "empty condition",
        pts.search(r).await,
        Code::InvalidArgument,
        "filter.must[0]",
    );
    let mut r = s(v(1.0), 10);
    r.filter = Some(pb::Filter {
        should: vec![cond(pb::condition::Kind::Range(pb::Range {
            key: "n".into(),
            gt: Some(f64::NAN),
            ..Default::default()
        }))],
        ..Default::default()
    });
    check(
        "NaN range bound",
        pts.search(r).await,
        Code::InvalidArgument,
        "filter.should[0].gt",
    );
    let mut r = s(v(1.0), 10);
    r.filter = Some(pb::Filter {
        must: vec![cond(pb::condition::Kind::Range(pb::Range {
            key: "n".into(),
            ..Default::default()
        }))],
        ..Default::default()
    });
    check(
        "range without bounds",
        pts.search(r).await,
        Code::InvalidArgument,
        "filter.must[0]",
    );
    let mut r = s(v(1.0), 10);
    r.filter = Some(pb::Filter {
        must: vec![cond(pb::condition::Kind::Keyword(pb::MatchKeyword {
            key: "".into(),
            any: vec!["a".into()],
        }))],
        ..Default::default()
    });
    check(
        "empty key",
        pts.search(r).await,
        Code::InvalidArgument,
        "filter.must[0].key",
    );
    let mut r = s(v(1.0), 10);
    r.filter = Some(pb::Filter {
        must: vec![cond(pb::condition::Kind::HasId(pb::HasId {
            ids: vec![uuid("zzz").unwrap()],
        }))],
        ..Default::default()
    });
    check(
        "bad has_id",
        pts.search(r).await,
        Code::InvalidArgument,
        "filter.must[0].has_id.ids[0]",
    );
    let mut r = s(v(1.0), 10);
    r.filter = Some(nested_filter(20));
    check(
        "filter too deep",
        pts.search(r).await,
        Code::InvalidArgument,
        "filter",
    );
    // Nested past protobuf's own recursion limit: refused while decoding.
    let mut r = s(v(1.0), 10);
    r.filter = Some(nested_filter(80));
    check(
        "filter nested beyond protobuf's limit",
        pts.search(r).await,
        Code::InvalidArgument,
        "request",
    );
    let mut r = s(v(1.0), 10);
    r.read = Some(pb::ReadOptions {
        consistency: 9,
        token: None,
    });
    check(
        "unknown consistency",
        pts.search(r).await,
        Code::InvalidArgument,
        "read.consistency",
    );
    let batch = |searches| pb::SearchBatchRequest {
        read: None,
        collection: "c".into(),
        searches,
    };
    check(
        "search batch over limit",
        pts.search_batch(batch((0..11).map(|_| s(v(1.0), 10)).collect()))
            .await,
        Code::ResourceExhausted,
        "searches",
    );
    check(
        "search batch asking for too many results in all",
        pts.search_batch(batch((0..6).map(|_| s(v(1.0), 100)).collect()))
            .await,
        Code::ResourceExhausted,
        "--max-batch-results",
    );
    check(
        "empty search batch",
        pts.search_batch(batch(vec![])).await,
        Code::InvalidArgument,
        "searches",
    );
    check(
        "bad search in batch",
        pts.search_batch(batch(vec![s(v(1.0), 10), s(v(1.0), 0)]))
            .await,
        Code::InvalidArgument,
        "searches[1].top_k",
    );

    // ---- get / delete / scroll / count ----
    let ids =
        |ids: Vec<Option<pb::PointId>>| ids.into_iter().map(Option::unwrap).collect::<Vec<_>>();
    check(
        "get no ids",
        pts.get(pb::GetPointsRequest {
            collection: "c".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "ids",
    );
    check(
        "get unknown collection",
        pts.get(pb::GetPointsRequest {
            collection: "nope".into(),
            ids: ids(vec![num(1)]),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "nope",
    );
    check(
        "get bad id",
        pts.get(pb::GetPointsRequest {
            collection: "c".into(),
            ids: vec![pb::PointId { kind: None }],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "ids[0]",
    );
    check(
        "delete no ids",
        pts.delete(pb::DeletePointsRequest {
            collection: "c".into(),
            ids: vec![],
        })
        .await,
        Code::InvalidArgument,
        "ids",
    );
    check(
        "delete over limit",
        pts.delete(pb::DeletePointsRequest {
            collection: "c".into(),
            ids: (0..101).map(|i| num(i).unwrap()).collect(),
        })
        .await,
        Code::ResourceExhausted,
        "ids",
    );
    check(
        "scroll limit 0",
        pts.scroll(pb::ScrollRequest {
            collection: "c".into(),
            limit: Some(0),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "limit",
    );
    check(
        "scroll bad offset",
        pts.scroll(pb::ScrollRequest {
            collection: "c".into(),
            offset: uuid("x"),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "offset",
    );
    check(
        "count unknown",
        pts.count(pb::CountRequest {
            read: None,
            collection: "nope".into(),
            filter: None,
        })
        .await,
        Code::NotFound,
        "nope",
    );
    check(
        "count bad filter",
        pts.count(pb::CountRequest {
            read: None,
            collection: "c".into(),
            filter: Some(pb::Filter {
                must_not: vec![pb::Condition { kind: None }],
                ..Default::default()
            }),
        })
        .await,
        Code::InvalidArgument,
        "filter.must_not[0]",
    );

    check(
        "scroll limit over max",
        pts.scroll(pb::ScrollRequest {
            collection: "c".into(),
            limit: Some(51),
            ..Default::default()
        })
        .await,
        Code::ResourceExhausted,
        "--max-scroll-limit",
    );

    // ---- vectors: only the range where every score is finite ----
    // A tiny COSINE vector used to be stored as [inf, NaN, ...] and score NaN.
    pts.upsert(up(vec![point(500, vec![1e-40, 0.0, 0.0, 0.0], &[])]))
        .await
        .unwrap();
    for q in [vec![1e-40, 0.0, 0.0, 0.0], v(1.0)] {
        let hits = pts.search(s(q, 100)).await.unwrap().into_inner().results;
        assert_eq!(hits.len(), 11);
        assert!(hits.iter().all(|h| h.score.is_finite()), "{hits:?}");
    }
    cols.create(create("l2", 4, pb::Metric::L2, 1))
        .await
        .unwrap();
    let up_l2 = |points| pb::UpsertRequest {
        collection: "l2".into(),
        points,
    };
    check(
        "L2 component over 1e15",
        pts.upsert(up_l2(vec![point(1, vec![0.0, 1e20, 0.0, 0.0], &[])]))
            .await,
        Code::InvalidArgument,
        "points[0].vector[1]",
    );
    check(
        "L2 query near f32::MAX",
        pts.search(search("l2", vec![f32::MAX, 0.0, 0.0, 0.0], 10))
            .await,
        Code::InvalidArgument,
        "vector[0]",
    );

    // ---- payload keys, at every depth ----
    check(
        "dotted payload key",
        pts.upsert(up(vec![point(100, v(1.0), &[("a.b", int(1))])]))
            .await,
        Code::InvalidArgument,
        "points[0].payload",
    );
    let nested = pb::Value {
        kind: Some(pb::value::Kind::StructValue(pb::Struct {
            fields: [("x.y".to_string(), int(1))].into_iter().collect(),
        })),
    };
    check(
        "nested dotted payload key",
        pts.upsert(up(vec![point(100, v(1.0), &[("o", nested)])]))
            .await,
        Code::InvalidArgument,
        "points[0].payload.o",
    );
    let empty_key = pb::Value {
        kind: Some(pb::value::Kind::StructValue(pb::Struct {
            fields: [(String::new(), int(1))].into_iter().collect(),
        })),
    };
    check(
        "nested empty payload key",
        pts.upsert(up(vec![point(100, v(1.0), &[("o", empty_key)])]))
            .await,
        Code::InvalidArgument,
        "points[0].payload.o",
    );

    // ---- messages that stay small, codes that tell the truth ----
    let mut bad_uuid = point(100, v(1.0), &[]);
    bad_uuid.id = uuid(&"u".repeat(500_000));
    let e = pts.upsert(up(vec![bad_uuid])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("points[0].id"), "{}", e.message());
    assert!(
        e.message().len() < 1100,
        "{} bytes echoed",
        e.message().len()
    );
    // tonic's client times a deadline out itself (and says CANCELLED), so the
    // server's answer is read over raw HTTP/2.
    let (status, message) = raw_call(
        &node.url,
        "/shoal.v1.Points/Count",
        "1m",
        pb::CountRequest {
            read: None,
            collection: "c".into(),
            filter: None,
        },
    )
    .await;
    assert_eq!(status, "4", "expired deadline: {message}");
    assert!(message.contains("deadline"), "{message}");
    // A reply over --max-message-bytes (1 MiB): 80 vectors of 16 KiB.
    cols.create(create("wide", 4096, pb::Metric::L2, 1))
        .await
        .unwrap();
    for part in 0..2u64 {
        pts.upsert(pb::UpsertRequest {
            collection: "wide".into(),
            points: (0..40)
                .map(|i| point(part * 40 + i, vec![0.5; 4096], &[]))
                .collect(),
        })
        .await
        .unwrap();
    }
    check(
        "reply over --max-message-bytes",
        pts.get(pb::GetPointsRequest {
            collection: "wide".into(),
            ids: (0..80).map(|i| num(i).unwrap()).collect(),
            with_vector: true,
            ..Default::default()
        })
        .await,
        Code::ResourceExhausted,
        "max-message-bytes",
    );

    // Payload key paths past --max-payload-keys (the shard holds "n"; 30 more).
    let many: Vec<(String, pb::Value)> = (0..30).map(|k| (format!("k{k}"), int(k))).collect();
    let many: Vec<(&str, pb::Value)> = many.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    check(
        "payload key paths past --max-payload-keys",
        pts.upsert(pb::UpsertRequest {
            collection: "c".into(),
            points: vec![point(100, vec![1.0, 0.0, 0.0, 0.0], &many)],
        })
        .await,
        Code::ResourceExhausted,
        "max-payload-keys",
    );

    // Nothing invalid was stored, and the node still serves.
    assert!(node.is_running());
    let count = count_all(&mut pts, "c").await;
    assert_eq!(count, 11);
    assert_eq!(count_all(&mut pts, "l2").await, 0);
    let list = cols
        .list(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.collections.len(), 3);
    let mut health = tonic_health::pb::health_client::HealthClient::new(node.channel().await);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
