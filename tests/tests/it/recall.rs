//! Recall through the gRPC API on real SIFT data, against exact ground truth.

use shoal_datasets::{ground_truth, read_fvecs, read_ivecs, recall_at_k};
use shoal_proto::v1 as pb;

use crate::*;

async fn recall_for(metric: pb::Metric, shards: u32) -> f64 {
    let dir = siftsmall();
    let base = read_fvecs(&dir.join("siftsmall_base.fvecs")).unwrap();
    let queries = read_fvecs(&dir.join("siftsmall_query.fvecs")).unwrap();
    let truth = match metric {
        pb::Metric::L2 => read_ivecs(&dir.join("siftsmall_groundtruth.ivecs")).unwrap(),
        _ => ground_truth(&base, &queries, 10, shoal_core::Metric::Cosine),
    };
    let tmp = tempfile::tempdir().unwrap();
    // Force graph search: these tests hold the HNSW index, not the exact scan, to the
    // recall target.
    let node = shoal_tests::Node::start(
        binary(),
        &tmp.path().join("data"),
        &["--exact-threshold", "0"],
    );
    let (mut cols, mut pts) = node.clients().await;
    let name = format!("sift_{}_{shards}", metric.as_str_name().to_lowercase());
    cols.create(create(&name, 128, metric, shards))
        .await
        .unwrap();
    upsert_all(&mut pts, &name, &base).await;
    let resp = pts
        .search_batch(pb::SearchBatchRequest {
            read: None,
            collection: name.clone(),
            searches: queries
                .iter()
                .map(|q| search(&name, q.clone(), 10))
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    let found: Vec<Vec<u32>> = resp
        .responses
        .iter()
        .map(|r| r.results.iter().map(|h| id_of(&h.id) as u32).collect())
        .collect();
    assert!(found.iter().all(|f| f.len() == 10));
    // Scores are ordered best first for the metric.
    for r in &resp.responses {
        for w in r.results.windows(2) {
            match metric {
                pb::Metric::L2 => assert!(w[0].score <= w[1].score),
                _ => assert!(w[0].score >= w[1].score),
            }
        }
    }
    recall_at_k(&found, &truth, 10)
}

#[tokio::test(flavor = "multi_thread")]
async fn sift_l2_one_shard() {
    let r = recall_for(pb::Metric::L2, 1).await;
    eprintln!("siftsmall L2, 1 shard: recall@10 = {r:.4}");
    assert!(r >= 0.95, "recall@10 = {r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sift_l2_four_shards() {
    let r = recall_for(pb::Metric::L2, 4).await;
    eprintln!("siftsmall L2, 4 shards: recall@10 = {r:.4}");
    assert!(r >= 0.95, "recall@10 = {r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sift_cosine_one_shard() {
    let r = recall_for(pb::Metric::Cosine, 1).await;
    eprintln!("siftsmall COSINE, 1 shard: recall@10 = {r:.4}");
    assert!(r >= 0.95, "recall@10 = {r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sift_cosine_four_shards() {
    let r = recall_for(pb::Metric::Cosine, 4).await;
    eprintln!("siftsmall COSINE, 4 shards: recall@10 = {r:.4}");
    assert!(r >= 0.95, "recall@10 = {r}");
}
