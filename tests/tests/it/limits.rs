//! What the public port admits: connections beyond `--max-connections` are closed,
//! and a closed one makes room again.

use std::time::{Duration, Instant};

use shoal_proto::v1::{self as pb, collections_client::CollectionsClient};
use tonic::transport::Channel;

use crate::*;

async fn list(channel: Channel) -> Result<usize, tonic::Status> {
    CollectionsClient::new(channel)
        .list(pb::ListCollectionsRequest {})
        .await
        .map(|r| r.into_inner().collections.len())
}

async fn connect(url: &str) -> Option<Channel> {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let node = shoal_tests::Node::start(
        binary(),
        &tmp.path().join("data"),
        &["--max-connections", "2"],
    );
    let a = connect(&node.url).await.expect("first connection");
    let b = connect(&node.url).await.expect("second connection");
    assert_eq!(list(a.clone()).await.unwrap(), 0);
    assert_eq!(list(b.clone()).await.unwrap(), 0);
    // A third is closed as it is accepted: its call fails.
    let third = match connect(&node.url).await {
        Some(c) => list(c).await,
        None => Err(tonic::Status::unavailable("connect failed")),
    };
    assert!(third.is_err(), "a third connection was served");
    // The first two still work; closing one makes room (bounded wait).
    assert_eq!(list(a.clone()).await.unwrap(), 0);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(c) = connect(&node.url).await
            && list(c).await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn above_the_memory_watermark_work_is_refused_and_deletes_pass() {
    let tmp = tempfile::tempdir().unwrap();
    // Any process is above one byte: everything that needs memory is refused.
    let node = shoal_tests::Node::start(
        binary(),
        &tmp.path().join("data"),
        &["--memory-watermark-bytes", "1"],
    );
    let (mut cols, mut pts) = node.clients().await;
    let e = cols
        .create(create("c", 2, pb::Metric::L2, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("--memory-watermark-bytes"),
        "{}",
        e.message()
    );
    let e = pts
        .search(search("c", vec![1.0, 0.0], 3))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    // Deletes, listing and status pass (the first two reach the node and say the
    // collection is not there).
    let e = pts
        .delete(pb::DeletePointsRequest {
            collection: "c".into(),
            ids: vec![num(1).unwrap()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(cols.list(pb::ListCollectionsRequest {}).await.is_ok());
}
