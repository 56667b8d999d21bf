//! The public API's security against a real `shoal serve`: every RPC without a
//! credential, with a wrong key, an expired token, a read-only and a read-write key, a
//! collection-scoped token and an admin key gets the status `auth::table` promises;
//! TLS works with the CLI and the client library, plaintext is refused, client
//! certificates are required when configured, and a replaced certificate is served to
//! new connections without a restart. Certificates are made here with rcgen.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_cli::client::{self, Target};
use shoal_proto::v1 as pb;
use shoal_server::auth::table::{Access, RPCS, short_name};
use tonic::Code;

use crate::*;

const ADMIN: &str = "admin-key-for-the-tests-0001";
const RW: &str = "write-key-for-the-tests-0002";
const RO: &str = "read-key-for-the-tests-00003";
const SECRET: &str = "jwt-secret-of-the-tests-32-bytes-at-least";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn target(url: &str, credential: Option<&str>) -> Target {
    let mut t = Target::plain(url);
    t.api_key = credential.map(|c| c.parse().unwrap());
    t
}

/// Makes the call `rpc` (`Points.Search`, …) on `collection` as `t`; the code of its
/// status. Admin calls are made harmless: a collection that is created and deleted by
/// the admin only (`scratch`), a node that does not exist, a dry run.
async fn call(t: &Target, rpc: &str, collection: &str) -> Code {
    let (mut cols, mut pts) = client::connect(t).await.expect("connect");
    let mut cl = client::cluster_client(t).await.expect("connect");
    let mut bk = shoal_cli::backup::backups(t).await.expect("connect");
    let read = || None;
    let c = collection.to_string();
    let r = match rpc {
        "Collections.Create" => cols
            .create(create("scratch", 2, pb::Metric::L2, 1))
            .await
            .map(drop),
        "Collections.Get" => cols
            .get(pb::GetCollectionRequest { name: c })
            .await
            .map(drop),
        "Collections.List" => cols.list(pb::ListCollectionsRequest {}).await.map(drop),
        "Collections.Update" => cols
            .update(pb::UpdateCollectionRequest {
                name: c,
                replication_factor: None,
                shard_count: None,
            })
            .await
            .map(drop),
        "Collections.Delete" => cols
            .delete(pb::DeleteCollectionRequest {
                name: "scratch".into(),
            })
            .await
            .map(drop),
        "Points.Upsert" => pts
            .upsert(pb::UpsertRequest {
                collection: c,
                points: vec![point(1000, vec![0.5, 0.5], &[])],
            })
            .await
            .map(drop),
        "Points.Delete" => pts
            .delete(pb::DeletePointsRequest {
                collection: c,
                ids: vec![num(1000).unwrap()],
            })
            .await
            .map(drop),
        "Points.Get" => pts
            .get(pb::GetPointsRequest {
                collection: c,
                ids: vec![num(1).unwrap()],
                read: read(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Points.Search" => pts.search(search(&c, vec![1.0, 0.0], 3)).await.map(drop),
        "Points.SearchBatch" => pts
            .search_batch(pb::SearchBatchRequest {
                collection: c.clone(),
                searches: vec![search(&c, vec![1.0, 0.0], 3)],
                read: read(),
            })
            .await
            .map(drop),
        "Points.Scroll" => pts
            .scroll(pb::ScrollRequest {
                collection: c,
                limit: Some(5),
                ..Default::default()
            })
            .await
            .map(drop),
        "Points.Count" => pts
            .count(pb::CountRequest {
                collection: c,
                filter: None,
                read: read(),
            })
            .await
            .map(drop),
        "Cluster.Status" => cl
            .status(pb::ClusterStatusRequest { digests: false })
            .await
            .map(drop),
        "Cluster.Drain" => cl.drain(pb::DrainRequest { node: 99 }).await.map(drop),
        "Cluster.MoveReplica" => cl
            .move_replica(pb::MoveReplicaRequest {
                collection: c,
                shard: 0,
                from: Some(98),
                to: Some(99),
            })
            .await
            .map(drop),
        "Cluster.Rebalance" => cl
            .rebalance(pb::RebalanceRequest { dry_run: true })
            .await
            .map(drop),
        "Backups.Create" => bk
            .create(pb::CreateBackupRequest {
                name: "auth-probe".into(),
                collections: vec!["no-such-collection".into()],
            })
            .await
            .map(drop),
        "Backups.List" => bk.list(pb::ListBackupsRequest {}).await.map(drop),
        "Backups.Delete" => bk
            .delete(pb::DeleteBackupRequest {
                name: "no-such-backup".into(),
            })
            .await
            .map(drop),
        "Backups.Download" => bk
            .download(pb::DownloadBackupRequest {
                name: "no-such-backup".into(),
            })
            .await
            .map(drop),
        "Backups.Restore" => bk
            .restore(tokio_stream::iter([pb::RestoreBackupRequest {
                part: Some(pb::restore_backup_request::Part::Options(
                    pb::RestoreOptions {
                        backup: "no-such-backup".into(),
                        ..Default::default()
                    },
                )),
            }]))
            .await
            .map(drop),
        other => panic!("this test makes no {other} call: add it"),
    };
    match r {
        Ok(()) => Code::Ok,
        Err(s) => {
            // Never a credential in a message.
            for secret in [ADMIN, RW, RO, SECRET] {
                assert!(!s.message().contains(secret), "{rpc}: {}", s.message());
            }
            s.code()
        }
    }
}

fn allowed(code: Code) -> bool {
    !matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

async fn start_secured(tmp: &Path) -> shoal_tests::Node {
    let node = shoal_tests::Node::start(
        binary(),
        &tmp.join("data"),
        &[
            "--admin-api-key",
            ADMIN,
            "--read-write-api-key",
            RW,
            "--read-only-api-key",
            RO,
            "--jwt-secret",
            SECRET,
        ],
    );
    let admin = target(&node.url, Some(ADMIN));
    let (mut cols, mut pts) = client::connect(&admin).await.unwrap();
    for name in ["docs", "other"] {
        cols.create(create(name, 2, pb::Metric::L2, 1))
            .await
            .unwrap();
        pts.upsert(pb::UpsertRequest {
            collection: name.into(),
            points: (0..10)
                .map(|i| point(i, vec![i as f32, 1.0], &[]))
                .collect(),
        })
        .await
        .unwrap();
    }
    node
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_gets_the_status_its_credential_deserves() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start_secured(tmp.path()).await;
    let url = node.url.as_str();
    let expired = token(serde_json::json!({"exp": now() - 3600, "access": "admin"}));
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"exp": now() + 3600, "access": "admin"}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-of-this-server-at-all"),
    )
    .unwrap();
    let ro_token = token(serde_json::json!({"exp": now() + 3600, "access": "r"}));
    let scoped = token(serde_json::json!({"exp": now() + 3600, "access": [
        {"collection": "docs", "access": "rw"},
    ]}));
    let scoped_ro = token(serde_json::json!({"exp": now() + 3600, "access": [
        {"collection": "docs", "access": "r"},
    ]}));

    // Admin calls go last, so that `scratch` is created before it is deleted.
    let mut rpcs: Vec<_> = RPCS.iter().collect();
    rpcs.sort_by_key(|r| r.access == Access::Admin);
    for rpc in rpcs {
        let name = short_name(rpc.path).replace('/', ".");
        let code = |cred: Option<&str>, collection: &str| {
            let t = target(url, cred);
            let name = name.clone();
            let collection = collection.to_string();
            async move { call(&t, &name, &collection).await }
        };
        for (cred, what) in [
            (None, "no credential"),
            (Some("wrong-key-0123456789abcdef"), "a wrong key"),
            (Some(expired.as_str()), "an expired token"),
            (Some(forged.as_str()), "a token signed with another secret"),
        ] {
            assert_eq!(
                code(cred, "docs").await,
                Code::Unauthenticated,
                "{name} with {what}"
            );
        }
        let admin_only = rpc.access == Access::Admin;
        let writes = rpc.access == Access::Write;
        for (cred, what) in [(RO, "read-only key"), (ro_token.as_str(), "\"r\" token")] {
            let got = code(Some(cred), "docs").await;
            if admin_only || writes {
                assert_eq!(got, Code::PermissionDenied, "{name} with a {what}");
            } else {
                assert!(allowed(got), "{name} with a {what}: {got:?}");
            }
        }
        let got = code(Some(RW), "docs").await;
        if admin_only {
            assert_eq!(
                got,
                Code::PermissionDenied,
                "{name} with the read-write key"
            );
        } else {
            assert!(allowed(got), "{name} with the read-write key: {got:?}");
        }
        // A token for `docs` only.
        let on_docs = code(Some(&scoped), "docs").await;
        let on_other = code(Some(&scoped), "other").await;
        let ro_on_docs = code(Some(&scoped_ro), "docs").await;
        match rpc.access {
            Access::Admin => {
                assert_eq!(on_docs, Code::PermissionDenied, "{name}, scoped token");
            }
            Access::Read | Access::Write => {
                assert!(
                    allowed(on_docs),
                    "{name}, scoped token on docs: {on_docs:?}"
                );
                assert_eq!(
                    on_other,
                    Code::PermissionDenied,
                    "{name}, scoped token on other"
                );
                if rpc.access == Access::Write {
                    assert_eq!(ro_on_docs, Code::PermissionDenied, "{name}, \"r\" token");
                } else {
                    assert!(allowed(ro_on_docs), "{name}, \"r\" token: {ro_on_docs:?}");
                }
            }
            Access::Any => {
                assert!(
                    allowed(on_docs) && allowed(on_other),
                    "{name}, scoped token"
                );
            }
        }
        let got = code(Some(ADMIN), "docs").await;
        assert!(allowed(got), "{name} with the admin key: {got:?}");
    }

    // Health and reflection need nothing.
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
    let services = shoal_tests::reflection::list_services(node.channel().await).await;
    assert!(
        services.iter().any(|s| s == "shoal.v1.Points"),
        "{services:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_reads_scoped_tokens_see_their_collections_and_status_is_redacted() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start_secured(tmp.path()).await;
    let url = node.url.as_str();

    // A read-only key searches, and its writes change nothing.
    let (_, mut pts) = client::connect(&target(url, Some(RO))).await.unwrap();
    let hits = pts
        .search(search("docs", vec![3.0, 1.0], 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(id_of(&hits.results[0].id), 3);
    let s = pts
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: vec![point(77, vec![7.0, 7.0], &[])],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("read-only"), "{}", s.message());
    assert_eq!(count(&mut pts, "docs").await, 10);

    // The api-key header works as well as authorization: Bearer.
    let (mut raw_cols, _) = node.clients().await;
    let mut req = tonic::Request::new(pb::ListCollectionsRequest {});
    req.metadata_mut().insert("api-key", RO.parse().unwrap());
    assert_eq!(
        raw_cols
            .list(req)
            .await
            .unwrap()
            .into_inner()
            .collections
            .len(),
        2
    );

    // A token scoped to docs lists docs only, and sees docs only in the status.
    let scoped = token(serde_json::json!({"exp": now() + 3600, "access": [
        {"collection": "docs", "access": "r"},
        {"collection": "missing", "access": "r"},
    ]}));
    let t = target(url, Some(&scoped));
    let (mut cols, mut pts) = client::connect(&t).await.unwrap();
    let names: Vec<String> = cols
        .list(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .collections
        .into_iter()
        .filter_map(|c| c.config.map(|c| c.name))
        .collect();
    assert_eq!(names, ["docs"]);
    assert_eq!(count(&mut pts, "docs").await, 10);
    let s = pts
        .count(pb::CountRequest {
            collection: "other".into(),
            filter: None,
            read: None,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("\"other\""), "{}", s.message());
    // A collection it may read that does not exist is NOT_FOUND; one it may not read
    // is PERMISSION_DENIED whether or not it exists.
    let get = |name: &str| pb::GetCollectionRequest { name: name.into() };
    assert_eq!(
        cols.get(get("missing")).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        cols.get(get("nowhere")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut cl = client::cluster_client(&t).await.unwrap();
    let st = cl
        .status(pb::ClusterStatusRequest { digests: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.collections.len(), 1);
    assert!(st.nodes.iter().all(|n| n.address.is_empty()), "{st:?}");
    let s = cl
        .status(pb::ClusterStatusRequest { digests: true })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);

    // Read-only key: every collection, no addresses; admin: everything.
    let mut cl = client::cluster_client(&target(url, Some(RO)))
        .await
        .unwrap();
    let st = cl
        .status(pb::ClusterStatusRequest { digests: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.collections.len(), 2);
    assert!(st.nodes.iter().all(|n| n.address.is_empty()));
    let mut cl = client::cluster_client(&target(url, Some(ADMIN)))
        .await
        .unwrap();
    let st = cl
        .status(pb::ClusterStatusRequest { digests: true })
        .await
        .unwrap()
        .into_inner();
    assert!(st.nodes.iter().all(|n| !n.address.is_empty()));
    assert!(
        st.collections[0].shards[0].replicas[0].digest.is_some(),
        "{st:?}"
    );

    // No key or token reached the log.
    let log = node.log();
    for secret in [ADMIN, RW, RO, SECRET, scoped.as_str()] {
        assert!(!log.contains(secret), "a secret in the log");
    }
}

async fn count(pts: &mut pb::points_client::PointsClient<client::Conn>, collection: &str) -> u64 {
    pts.count(pb::CountRequest {
        collection: collection.into(),
        filter: None,
        read: None,
    })
    .await
    .unwrap()
    .into_inner()
    .count
}

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it: (the CA's
/// certificate, its key, the server's certificate and key as PEM).
fn server_cert(ca_name: &str) -> (rcgen::Certificate, rcgen::KeyPair, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shoal test node");
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert, ca_key, cert.pem(), key.serialize_pem())
}

/// Writes `content` to `path` atomically (as certificate renewals do).
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tls_target(addr: &str, ca: &Path, credential: Option<&str>) -> Target {
    let mut t = target(&format!("https://{addr}"), credential);
    t.tls_ca = Some(ca.to_path_buf());
    t.tls_server_name = Some("localhost".into());
    t
}

fn shoal_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .env_remove("SHOAL_API_KEY")
        .output()
        .expect("run shoal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_the_cli_refuses_plaintext_and_reloads_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca1, _, cert1, key1) = server_cert("shoal test CA 1");
    let (ca1_pem, cert_pem, key_pem) = (
        dir.join("ca1.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca1_pem, ca1.pem()).unwrap();
    std::fs::write(&cert_pem, &cert1).unwrap();
    std::fs::write(&key_pem, &key1).unwrap();
    let node = shoal_tests::Node::start(
        binary(),
        &dir.join("data"),
        &[
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
            "--reload-secs",
            "1",
            "--admin-api-key",
            ADMIN,
        ],
    );
    let addr = node.url.strip_prefix("http://").unwrap().to_string();
    let https = format!("https://{addr}");

    // The CLI over TLS, trusting the test CA.
    let ca1_arg = ca1_pem.to_str().unwrap();
    let (ok, out) = shoal_cli(&[
        "--addr",
        &https,
        "--tls-ca",
        ca1_arg,
        "--api-key",
        ADMIN,
        "collection",
        "create",
        "docs",
        "--dim",
        "2",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = shoal_cli(&[
        "--addr",
        &https,
        "--tls-ca",
        ca1_arg,
        "--tls-server-name",
        "localhost",
        "--api-key",
        ADMIN,
        "collection",
        "list",
    ]);
    assert!(ok && out.contains("docs: dim=2"), "{out}");
    // Without the key: refused by authentication, over TLS.
    let (ok, out) = shoal_cli(&["--addr", &https, "--tls-ca", ca1_arg, "collection", "list"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    // Not trusting the CA: the handshake fails.
    let (ok, out) = shoal_cli(&["--addr", &https, "--api-key", ADMIN, "collection", "list"]);
    assert!(!ok, "{out}");
    // Plaintext to the TLS port: refused (by the CLI and by a raw gRPC client).
    let (ok, out) = shoal_cli(&[
        "--addr",
        &node.url,
        "--api-key",
        ADMIN,
        "collection",
        "list",
    ]);
    assert!(!ok, "{out}");
    let plain = async {
        let ch = tonic::transport::Channel::from_shared(node.url.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await?;
        tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(drop)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    };
    assert!(
        plain.await.is_err(),
        "a plaintext call to a TLS port succeeded"
    );

    // The library client with TLS.
    let t1 = tls_target(&addr, &ca1_pem, Some(ADMIN));
    let (mut cols, _) = client::connect(&t1).await.unwrap();
    assert_eq!(
        cols.list(pb::ListCollectionsRequest {})
            .await
            .unwrap()
            .into_inner()
            .collections
            .len(),
        1
    );

    // Renewal: a certificate from another CA replaces the files; new connections get
    // it without a restart (checked every second), while the open one goes on.
    let (ca2, _, cert2, key2) = server_cert("shoal test CA 2");
    let ca2_pem = dir.join("ca2.pem");
    std::fs::write(&ca2_pem, ca2.pem()).unwrap();
    replace(&key_pem, &key2);
    replace(&cert_pem, &cert2);
    let t2 = tls_target(&addr, &ca2_pem, Some(ADMIN));
    let start = Instant::now();
    loop {
        if client::connect(&t2).await.is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the new certificate was not served; log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        client::connect(&t1).await.is_err(),
        "the old certificate is still served to new connections"
    );
    assert!(cols.list(pb::ListCollectionsRequest {}).await.is_ok());
    assert!(node.log().contains("reloaded the TLS certificate"));

    // Broken files: logged, the certificate in force kept.
    let kept = || {
        node.log()
            .matches("keeping the certificate in force")
            .count()
    };
    let before = kept();
    replace(&key_pem, "not a key");
    let start = Instant::now();
    while kept() == before {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", node.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(client::connect(&t2).await.is_ok());
    assert!(!node.log().contains("BEGIN PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_required_when_a_client_ca_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, ca_key, cert, key) = server_cert("shoal test CA");
    let write = |name: &str, content: &str| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let ca_pem = write("ca.pem", &ca.pem());
    let cert_pem = write("cert.pem", &cert);
    let key_pem = write("key.pem", &key);
    // A client certificate signed by the same CA.
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.signed_by(&client_key, &ca, &ca_key).unwrap();
    let client_cert_pem = write("client.pem", &client_cert.pem());
    let client_key_pem = write("client-key.pem", &client_key.serialize_pem());
    // One from a CA the node does not know.
    let (_, _, stranger_cert, stranger_key) = server_cert("stranger CA");
    let stranger_cert_pem = write("stranger.pem", &stranger_cert);
    let stranger_key_pem = write("stranger-key.pem", &stranger_key);

    let node = shoal_tests::Node::start(
        binary(),
        &dir.join("data"),
        &[
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
            "--tls-client-ca",
            ca_pem.to_str().unwrap(),
        ],
    );
    let addr = node.url.strip_prefix("http://").unwrap().to_string();
    let list = |t: Target| async move {
        let (mut cols, _) = client::connect(&t).await?;
        cols.list(pb::ListCollectionsRequest {}).await?;
        anyhow::Ok(())
    };
    assert!(list(tls_target(&addr, &ca_pem, None)).await.is_err());
    let mut stranger = tls_target(&addr, &ca_pem, None);
    stranger.tls_client_cert = Some(stranger_cert_pem);
    stranger.tls_client_key = Some(stranger_key_pem);
    assert!(list(stranger).await.is_err());
    let mut known = tls_target(&addr, &ca_pem, None);
    known.tls_client_cert = Some(client_cert_pem.clone());
    known.tls_client_key = Some(client_key_pem.clone());
    list(known).await.unwrap();
    // The CLI's flags.
    let (ok, out) = shoal_cli(&[
        "--addr",
        &format!("https://{addr}"),
        "--tls-ca",
        ca_pem.to_str().unwrap(),
        "--tls-client-cert",
        client_cert_pem.to_str().unwrap(),
        "--tls-client-key",
        client_key_pem.to_str().unwrap(),
        "collection",
        "list",
    ]);
    assert!(ok && out.contains("no collections"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_through_the_keys_file_on_sighup_and_es256_tokens_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::write(&keys, format!("# test keys\nread-only {RO}\n")).unwrap();
    let signer = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let public = tmp.path().join("jwt.pem");
    std::fs::write(&public, signer.public_key_pem()).unwrap();
    let mut node = shoal_tests::Node::start(
        binary(),
        &tmp.path().join("data"),
        &[
            "--api-keys-file",
            keys.to_str().unwrap(),
            "--jwt-public-key",
            public.to_str().unwrap(),
            // Only SIGHUP re-reads the file within this test's time.
            "--reload-secs",
            "3600",
        ],
    );
    let url = node.url.as_str();
    let list = |key: &str| {
        let t = target(url, Some(key));
        async move { call(&t, "Collections.List", "").await }
    };
    assert_eq!(list(RO).await, Code::Ok);
    assert_eq!(list(RW).await, Code::Unauthenticated);

    // An ES256 token signed by the key's private half; an HS256 one is not accepted.
    let es256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &serde_json::json!({"exp": now() + 600, "access": "r"}),
        &jsonwebtoken::EncodingKey::from_ec_pem(signer.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(list(&es256).await, Code::Ok);
    assert_eq!(
        call(&target(url, Some(&es256)), "Points.Upsert", "x").await,
        Code::PermissionDenied
    );
    let hs256 = token(serde_json::json!({"exp": now() + 600, "access": "admin"}));
    assert_eq!(list(&hs256).await, Code::Unauthenticated);

    // Rotation: the read-write key replaces the read-only one; SIGHUP re-reads.
    std::fs::write(&keys, format!("read-write {RW}\n")).unwrap();
    let pid = node.pid().unwrap().to_string();
    let sighup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    };
    sighup();
    let start = Instant::now();
    while list(RW).await != Code::Ok {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list(RO).await, Code::Unauthenticated);
    assert!(node.log().contains("SIGHUP"));
    // A broken file keeps the keys in force.
    std::fs::write(&keys, "read-write short\n").unwrap();
    sighup();
    let start = Instant::now();
    while !node.log().contains("keeping the keys in force") {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list(RW).await, Code::Ok);
    assert!(node.is_running());
}
