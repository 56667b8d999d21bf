//! The internal port of a three-node cluster started with a cluster secret (issue 16):
//! every internal RPC an outsider sends — forged Raft votes and appends, Propose, Read,
//! Elect, Status, Join, Split — is refused with UNAUTHENTICATED, without and with a
//! wrong secret, while a writer's writes keep succeeding; an invalid write that does
//! reach a shard's log (proposed with the right secret, bypassing validation) is
//! refused on apply by every replica, the replicas' digests stay equal, and a node
//! restarted after it opens cleanly. Also: a multi-node cluster listening beyond
//! loopback without a secret refuses to start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_proto::internal::v1::{
    GroupCall, RaftRequest, RaftRpc, cluster_internal_client::ClusterInternalClient,
    raft_transport_client::RaftTransportClient,
};
use shoal_proto::v1 as pb;
use tonic::transport::Channel;

use crate::cluster::{
    Cluster, ONE_AT_A_TIME, create_collection, points, status, vector, wait_replicas_agree,
};
use crate::*;

const SECRET: &str = "integration-test-cluster-secret-0001";

async fn internal_channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the internal port")
}

/// `call` with `authorization: Bearer <secret>` when `secret` is given.
fn call(group: u64, to: u64, payload: Vec<u8>, secret: Option<&str>) -> tonic::Request<GroupCall> {
    let mut r = tonic::Request::new(GroupCall { group, payload, to });
    if let Some(s) = secret {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {s}").parse().unwrap());
    }
    r.set_timeout(Duration::from_secs(10));
    r
}

/// Every internal RPC, forged, to the node at `addr` (id `to`), with `secret`: the
/// status codes of the refusals (an RPC that got through is an error string).
async fn forge_every_call(addr: &str, to: u64, secret: Option<&str>) -> Vec<String> {
    let ch = internal_channel(addr).await;
    let mut raft = RaftTransportClient::new(ch.clone());
    let mut calls = ClusterInternalClient::new(ch);
    let group = shoal_meta::group_of(1, 0);
    let mut out = Vec::new();
    let mut record = |what: &str, r: Result<(), tonic::Status>| {
        out.push(match r {
            Err(s) if s.code() == tonic::Code::Unauthenticated => "refused".to_string(),
            Err(s) => format!("{what}: {:?} {}", s.code(), s.message()),
            Ok(()) => format!("{what}: got through"),
        })
    };
    for rpc in [
        RaftRpc::Vote,
        RaftRpc::AppendEntries,
        RaftRpc::InstallSnapshot,
    ] {
        let mut r = tonic::Request::new(RaftRequest {
            group,
            rpc: rpc as i32,
            payload: vec![0; 16],
            to,
        });
        if let Some(s) = secret {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {s}").parse().unwrap());
        }
        record(&format!("raft {rpc:?}"), raft.call(r).await.map(drop));
    }
    let p = || vec![0u8; 8];
    record(
        "propose",
        calls.propose(call(group, to, p(), secret)).await.map(drop),
    );
    record(
        "read",
        calls.read(call(group, to, p(), secret)).await.map(drop),
    );
    record(
        "elect",
        calls.elect(call(group, to, p(), secret)).await.map(drop),
    );
    record(
        "status",
        calls.status(call(0, to, p(), secret)).await.map(drop),
    );
    record(
        "membership",
        calls
            .membership(call(group, to, p(), secret))
            .await
            .map(drop),
    );
    record(
        "transfer",
        calls.transfer(call(group, to, p(), secret)).await.map(drop),
    );
    record("join", calls.join(call(0, to, p(), secret)).await.map(drop));
    record(
        "split",
        calls.split(call(group, to, p(), secret)).await.map(drop),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_port_refuses_outsiders_and_an_invalid_entry_breaks_no_replica() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("cluster-secret");
    std::fs::write(&secret_file, format!("# test\n{SECRET}\n")).unwrap();
    let secret_arg = secret_file.to_str().unwrap().to_string();
    let mut c = Cluster::start(&["--cluster-secret-file", &secret_arg]);
    create_collection(&c.nodes[0], "sec", 1, 3).await;

    // A writer through node 1 while outsiders call every internal RPC of every node.
    let stop = Arc::new(AtomicBool::new(false));
    let (written, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let mut p = points(&c.nodes[0]).await;
        let (stop, written, failed) = (stop.clone(), written.clone(), failed.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                id += 1;
                let r = p
                    .upsert(pb::UpsertRequest {
                        collection: "sec".into(),
                        points: vec![point(id, vector(id), &[])],
                    })
                    .await;
                match r {
                    Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("write {id} failed: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    // The write rate without forged calls, then with them (printed, not asserted:
    // speed is for benchmarks).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = Instant::now();
    let at_quiet = written.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_rate =
        (written.load(Ordering::Relaxed) - at_quiet) as f64 / quiet.elapsed().as_secs_f64();
    let before = written.load(Ordering::Relaxed);
    let flood = Instant::now();
    for round in 0..60 {
        for (i, addr) in c.raft.clone().iter().enumerate() {
            let secret = if round % 2 == 0 {
                None
            } else {
                Some("a-wrong-secret-of-enough-length")
            };
            let outcomes = forge_every_call(addr, i as u64 + 1, secret).await;
            assert!(
                outcomes.iter().all(|o| o == "refused"),
                "node {}: {outcomes:?}",
                i + 1
            );
        }
    }
    let during = written.load(Ordering::Relaxed) - before;
    let flood_secs = flood.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no write may fail");
    assert!(during > 0, "writes went on during the forged calls");
    eprintln!(
        "{during} writes in {flood_secs:.1} s of forged calls ({:.0}/s; {quiet_rate:.0}/s without)",
        during as f64 / flood_secs
    );
    // Refusals are logged, never with the secret presented.
    let log = c.nodes[0].log();
    assert!(log.contains("refused an internal call"), "{log}");
    assert!(
        !log.contains("a-wrong-secret"),
        "a presented secret was logged"
    );

    // With the right secret, a write that skips validation reaches the shard's log:
    // a 2-dim vector in a dim-4 collection. The leader commits it; every replica
    // refuses it on apply.
    let group = shoal_meta::group_of(1, 0);
    let leader = loop {
        let s = status(&c.nodes[0], false).await;
        if let Some(l) = s.collections[0].shards[0].leader {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let forged = shoal_raft::Command::Shard(shoal_core::Write::Upsert(vec![shoal_core::Point {
        id: shoal_core::PointId::Num(1_000_000),
        vector: vec![1.0, 2.0],
        payload: Default::default(),
    }]));
    let payload = postcard::to_allocvec(&forged).unwrap();
    let mut client =
        ClusterInternalClient::new(internal_channel(&c.raft[leader as usize - 1]).await);
    let reply = client
        .propose(call(group, leader, payload, Some(SECRET)))
        .await
        .expect("the right secret is let in")
        .into_inner();
    let reply: Result<shoal_raft::Reply, shoal_cluster::ClusterError> =
        postcard::from_bytes(&reply.payload).unwrap();
    let reply = reply.expect("committed");
    assert!(
        matches!(reply.rejected, Some(shoal_raft::Rejection::Invalid(ref why)) if why.contains("dim")),
        "{reply:?}"
    );
    // The group goes on: a valid write after it commits, every replica applied both
    // and agrees, and the forged point is nowhere.
    let mut p = points(&c.nodes[0]).await;
    p.upsert(pb::UpsertRequest {
        collection: "sec".into(),
        points: vec![point(2_000_000, vector(7), &[])],
    })
    .await
    .expect("a write after the invalid entry");
    let s = wait_replicas_agree(&c.nodes[0]).await;
    let applied = s.collections[0].shards[0].replicas[0].applied_index;
    assert!(applied > reply.applied, "{s:#?}");
    let total = written.load(Ordering::Relaxed) + 1;
    assert!(
        s.collections[0].shards[0]
            .replicas
            .iter()
            .all(|r| r.points == total),
        "{total} points expected on every replica: {s:#?}"
    );

    // A follower killed and restarted replays the log with the invalid entry in it,
    // opens cleanly and catches up.
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    c.node(follower).restart(binary());
    let s = wait_replicas_agree(&c.nodes[0]).await;
    assert!(
        s.collections[0].shards[0]
            .replicas
            .iter()
            .all(|r| r.points == total),
        "{s:#?}"
    );
    let (_, mut p) = c.node(follower).clients().await;
    let got = p
        .get(pb::GetPointsRequest {
            collection: "sec".into(),
            ids: vec![num(1_000_000).unwrap(), num(2_000_000).unwrap()],
            with_vector: false,
            with_payload: false,
            read: crate::cluster::strong(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = got.points.iter().map(|p| id_of(&p.id)).collect();
    assert_eq!(ids, vec![2_000_000], "only the valid point exists");
}

#[test]
fn a_cluster_reachable_beyond_loopback_needs_a_secret_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // A node of a two-node cluster whose internal port listens on every interface.
    let serve = |extra: &[&str]| {
        let out = std::process::Command::new(binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--raft-listen",
                "0.0.0.0:0",
            ])
            .args(["--node-id", "1", "--peers", "1=127.0.0.1:1,2=127.0.0.1:2"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .env_remove("SHOAL_CLUSTER_SECRET")
            .env_remove("SHOAL_CLUSTER_SECRET_FILE")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = serve(&[]);
    assert!(
        err.contains("--cluster-secret-file") && err.contains("--insecure-internal"),
        "{err}"
    );
    // A short secret is refused with the reason, and never echoed.
    let err = serve(&["--cluster-secret", "tooshort123"]);
    assert!(err.contains("at least 16"), "{err}");
    assert!(!err.contains("tooshort123"), "{err}");
}

/// A cluster CA and one certificate it signed for `names` (DNS names or IP
/// addresses): (CA PEM, certificate PEM, key PEM).
fn ca_and_cert(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_over_mutual_tls_and_refuse_everyone_else() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // One certificate of the cluster CA for every node (peers are reached at
    // 127.0.0.1, the name each certificate is checked against by default).
    let (ca, cert, key) = ca_and_cert(&["127.0.0.1"]);
    let file = |name: &str, pem: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (ca_file, cert_file, key_file) = (
        file("ca.pem", &ca),
        file("node.pem", &cert),
        file("node.key", &key),
    );
    let c = Cluster::start(&[
        "--internal-tls-cert",
        &cert_file,
        "--internal-tls-key",
        &key_file,
        "--internal-tls-ca",
        &ca_file,
    ]);
    // The cluster forms, replicates and answers over TLS.
    create_collection(&c.nodes[0], "tls", 1, 3).await;
    let mut p = points(&c.nodes[1]).await;
    p.upsert(pb::UpsertRequest {
        collection: "tls".into(),
        points: (1..=50).map(|i| point(i, vector(i), &[])).collect(),
    })
    .await
    .expect("a write through node 2 reaches the leader over TLS");
    // Asked of node 1, which applied the collection's creation before answering it
    // (another node may not list it yet, and agrees vacuously on no collections).
    let s = wait_replicas_agree(&c.nodes[0]).await;
    assert!(
        s.collections[0].shards[0]
            .replicas
            .iter()
            .all(|r| r.points == 50),
        "{s:#?}"
    );

    let addr = &c.raft[0];
    let status_call = |ch: Channel| async move {
        ClusterInternalClient::new(ch)
            .status(call(0, 1, postcard::to_allocvec(&false).unwrap(), None))
            .await
    };
    // Plaintext: refused (the port speaks TLS only).
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(status_call(ch).await.is_err(), "plaintext got an answer");
    }
    // TLS without a client certificate, and with one of another CA: refused.
    let tls = |identity: Option<(&str, &str)>, ca: &str| {
        let mut t = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name("127.0.0.1");
        if let Some((cert, key)) = identity {
            t = t.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(t)
            .unwrap()
    };
    let anonymous = tls(None, &ca).connect().await;
    if let Ok(ch) = anonymous {
        assert!(
            status_call(ch).await.is_err(),
            "a client without a certificate got an answer"
        );
    }
    let (_, other_cert, other_key) = ca_and_cert(&["127.0.0.1"]);
    let stranger = tls(Some((&other_cert, &other_key)), &ca).connect().await;
    if let Ok(ch) = stranger {
        assert!(
            status_call(ch).await.is_err(),
            "a certificate of another CA got an answer"
        );
    }
    // A client holding a certificate of the cluster CA is let in (the secret is not
    // configured here: the certificate is the credential).
    let member = tls(Some((&cert, &key)), &ca)
        .connect()
        .await
        .expect("a cluster certificate connects");
    let answer = status_call(member)
        .await
        .expect("a cluster member is answered");
    assert!(!answer.into_inner().payload.is_empty());
}
