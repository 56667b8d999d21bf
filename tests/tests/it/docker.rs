//! The shipped image layout runs Shoal: an image built from local parts (a Debian base
//! made with debootstrap, the binary under test) keeps an acknowledged write across a
//! SIGKILL of its container. Skipped, with a message, where no Docker engine runs.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_proto::v1 as pb;

use crate::*;

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's container, volume and image whatever happens.
struct Cleanup {
    container: String,
    volume: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        let _ = docker(&["volume", "rm", "-f", &self.volume]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

/// Connects to the container's published port, waiting until it serves.
async fn connect(container: &str) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let port = docker(&["port", container, "7470/tcp"]);
        let addr = String::from_utf8_lossy(&port.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if !addr.is_empty()
            && let Ok(ch) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
        {
            let mut cols = pb::collections_client::CollectionsClient::new(ch.clone());
            if cols.list(pb::ListCollectionsRequest {}).await.is_ok() {
                return ch;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the container did not serve within 60 s; logs:\n{}",
            String::from_utf8_lossy(&docker(&["logs", container]).stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn container_keeps_acknowledged_writes_across_sigkill() {
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!(
            "SKIPPED container_keeps_acknowledged_writes_across_sigkill: no Docker engine (`docker info` failed)"
        );
        return;
    }
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker");
    let base = Command::new("bash")
        .arg(here.join("base-image.sh"))
        .output()
        .expect("run base-image.sh");
    assert!(
        base.status.success(),
        "base image: {}{}",
        String::from_utf8_lossy(&base.stdout),
        String::from_utf8_lossy(&base.stderr)
    );

    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(binary(), ctx.path().join("shoal")).unwrap();
    std::fs::copy(here.join("Dockerfile.local"), ctx.path().join("Dockerfile")).unwrap();
    let id = std::process::id();
    let guard = Cleanup {
        container: format!("shoal-test-{id}"),
        volume: format!("shoal-test-{id}-data"),
        image: format!("shoal-test:{id}"),
    };
    docker_ok(&[
        "build",
        "-q",
        "-t",
        &guard.image,
        &ctx.path().to_string_lossy(),
    ]);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &guard.container,
        "-v",
        &format!("{}:/data", guard.volume),
        "-p",
        "127.0.0.1::7470",
        &guard.image,
    ]);

    let ch = connect(&guard.container).await;
    let mut pts = pb::points_client::PointsClient::new(ch.clone());
    pb::collections_client::CollectionsClient::new(ch)
        .create(create("docs", 3, pb::Metric::Cosine, 2))
        .await
        .unwrap();
    let points = (0..50)
        .map(|i| point(i, vec![1.0, i as f32, 0.5], &[("n", int(i as i64))]))
        .collect();
    pts.upsert(pb::UpsertRequest {
        collection: "docs".into(),
        points,
    })
    .await
    .unwrap();

    docker_ok(&["kill", "--signal", "KILL", &guard.container]);
    docker_ok(&["start", &guard.container]);
    let mut pts = pb::points_client::PointsClient::new(connect(&guard.container).await);
    let n = count_all(&mut pts, "docs").await;
    assert_eq!(
        n, 50,
        "acknowledged points survive SIGKILL of the container"
    );
    let got = pts
        .get(pb::GetPointsRequest {
            read: None,
            collection: "docs".into(),
            ids: vec![num(49).unwrap()],
            with_payload: true,
            with_vector: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.points[0].payload.get("n"), Some(&int(49)));
    drop(guard);
}
