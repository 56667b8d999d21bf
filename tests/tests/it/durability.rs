//! An acknowledged write survives `kill -9`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::v1 as pb;

use crate::*;

const DIM: usize = 16;

fn vector_of(id: u64) -> Vec<f32> {
    // Distinct per id, so no two points tie on distance to a query.
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 100_000) as f32 / 1_000.0
        })
        .collect()
}

async fn get_all(
    pts: &mut pb::points_client::PointsClient<tonic::transport::Channel>,
    ids: &[u64],
) -> BTreeMap<u64, pb::RetrievedPoint> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(1000) {
        let resp = pts
            .get(pb::GetPointsRequest {
                read: None,
                collection: "durable".into(),
                ids: chunk.iter().map(|i| num(*i).unwrap()).collect(),
                with_payload: true,
                with_vector: true,
            })
            .await
            .unwrap()
            .into_inner();
        for p in resp.points {
            out.insert(id_of(&p.id), p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    // Exact search: results after restart must equal results before, point for point.
    // Frequent index checkpoints: the restart loads one and must still find the writes
    // acknowledged after it.
    let mut node = shoal_tests::Node::start(
        binary(),
        &tmp.path().join("data"),
        &["--exact-threshold", "1000000", "--checkpoint-every", "500"],
    );
    let (mut cols, pts) = node.clients().await;
    cols.create(create("durable", DIM as u32, pb::Metric::L2, 3))
        .await
        .unwrap();

    // Four concurrent writers upsert small batches with unique ids and record every
    // acknowledgement, until the node is killed under them.
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let mut pts = pts.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..10_000u64 {
                let ids: Vec<u64> = (0..8).map(|i| w * 1_000_000 + b * 8 + i).collect();
                let batch = ids
                    .iter()
                    .map(|&id| {
                        point(
                            id,
                            vector_of(id),
                            &[("n", int(id as i64)), ("w", string(&format!("writer-{w}")))],
                        )
                    })
                    .collect();
                match pts
                    .upsert(pb::UpsertRequest {
                        collection: "durable".into(),
                        points: batch,
                    })
                    .await
                {
                    Ok(_) => acked.lock().unwrap().extend(ids),
                    Err(_) => return, // the node died under us
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<u64> = acked.lock().unwrap().iter().copied().collect();
    assert!(
        acked.len() >= 2_000,
        "only {} acknowledged writes before the deadline",
        acked.len()
    );

    node.restart(binary());
    let (_, mut pts) = node.clients().await;
    assert!(
        node.log().contains("loaded index checkpoint"),
        "the restart went through a checkpoint (and must still find later writes)"
    );
    let found = get_all(&mut pts, &acked).await;
    let missing: Vec<&u64> = acked.iter().filter(|id| !found.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged points lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (id, p) in &found {
        assert_eq!(p.vector, vector_of(*id), "vector of {id}");
        assert_eq!(
            p.payload.get("n"),
            Some(&int(*id as i64)),
            "payload of {id}"
        );
    }

    // Deletes are durable too, and searches give the same answers after a restart.
    let doomed: Vec<u64> = acked.iter().copied().step_by(3).collect();
    for chunk in doomed.chunks(500) {
        pts.delete(pb::DeletePointsRequest {
            collection: "durable".into(),
            ids: chunk.iter().map(|i| num(*i).unwrap()).collect(),
        })
        .await
        .unwrap();
    }
    let queries: Vec<Vec<f32>> = (0..20).map(|i| vector_of(i * 7919 + 3)).collect();
    let mut before = Vec::new();
    for q in &queries {
        before.push(
            pts.search(search("durable", q.clone(), 10))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let count_before = count_all(&mut pts, "durable").await;

    node.restart(binary());
    let (_, mut pts) = node.clients().await;
    let count_after = count_all(&mut pts, "durable").await;
    assert_eq!(count_after, count_before);
    let found = get_all(&mut pts, &doomed).await;
    assert!(found.is_empty(), "{} deleted points came back", found.len());
    for (q, b) in queries.iter().zip(before) {
        let a = pts
            .search(search("durable", q.clone(), 10))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a, b, "search results changed across a restart");
    }
}
