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
        if let Some(c) = connect(&node.url).await {
            if list(c).await.is_ok() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
