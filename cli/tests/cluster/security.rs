//! Three brokers serving mutual TLS: clients with a certificate from the
//! cluster's CA produce and consume; clients without one, or with one from
//! another CA, are refused; a process holding some broker's or some user's
//! certificate cannot speak for another broker on the peer RPCs (Raft
//! traffic, joining).

use std::time::Duration;

use bytes::Bytes;
use strand_client::proto::{JoinClusterRequest, RaftBatch, admin_client::AdminClient, peer_client::PeerClient};
use strand_client::{Admin, Producer, ProducerRecord, Security};
use strand_security::dev_ca::{self, Subject};
use strand_security::{ClientAuth, Dialer, TlsContext, TlsFiles};

use super::{admin, create, drain};
use crate::support::Cluster;

/// A channel to `addr` presenting `cert`/`key` (signed by the CA in
/// `ca_dir`), trusting `trust`.
async fn channel(
    addr: &str,
    trust: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> tonic::transport::Channel {
    let ctx = TlsContext::load(
        TlsFiles {
            ca: trust.to_path_buf(),
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
        },
        ClientAuth::None,
    )
    .expect("client TLS");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri");
    Dialer::tls(ctx).connect(endpoint).await.expect("TLS connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_clients_with_certificates_and_refuses_others() {
    let c = Cluster::start_tls(3, "");
    c.wait_ready().await;
    create(&c, "secure", 2).await;
    let p = Producer::builder(c.bootstrap())
        .security(c.security())
        .build()
        .await
        .expect("producer");
    for i in 0..200 {
        let r = ProducerRecord::new("secure", Bytes::from(format!("v{i}"))).key(Bytes::from(format!("k{i}")));
        p.send(r).await.expect("send").await.expect("acknowledged");
    }
    p.close().await.expect("close");
    assert_eq!(drain(&c, "secure", 2).await.len(), 200);

    let dir = c.certs_dir().expect("certs");
    // Plaintext to a TLS listener.
    let plain = Admin::connect(c.addr(1)).await.expect_err("plaintext refused");
    // TCP connects; the broker's TLS handshake then fails on the HTTP/2 preface.
    assert!(["CONNECT", "TRANSPORT"].contains(&plain.reason()), "{plain}");
    // TLS without a client certificate.
    let anonymous = Admin::connect_with(c.addr(1), Security::tls(dir.join("ca.pem")).expect("tls")).await;
    assert_eq!(anonymous.expect_err("no certificate refused").reason(), "CONNECT");
    // A certificate from another CA.
    let other = tempfile::tempdir().expect("tempdir");
    dev_ca::create_ca(other.path(), 1).expect("other CA");
    let mallory = dev_ca::issue(
        other.path(),
        &Subject::User { name: "mallory".into() },
        other.path(),
        "mallory",
        1,
    )
    .expect("cert");
    let forged = Security::mutual_tls(dir.join("ca.pem"), &mallory.cert, &mallory.key).expect("tls");
    let refused = Admin::connect_with(c.addr(1), forged).await;
    assert_eq!(refused.expect_err("foreign CA refused").reason(), "CONNECT");
    // The CLI, with the same flags a user gives it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(["--bootstrap", &c.bootstrap(), "topic", "list"])
        .arg("--tls-ca")
        .arg(dir.join("ca.pem"))
        .arg("--tls-cert")
        .arg(dir.join("test-admin.pem"))
        .arg("--tls-key")
        .arg(dir.join("test-admin-key.pem"))
        .output()
        .expect("strand topic list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("secure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cannot_speak_for_a_broker_its_certificate_does_not_name() {
    let c = Cluster::start_tls(3, "");
    c.wait_ready().await;
    let cluster_id = admin(&c).await.cluster_status().await.expect("status").cluster_id;
    let dir = c.certs_dir().expect("certs");
    let ca = dir.join("ca.pem");
    // A thief holding broker 2's certificate and key, and a user.
    let (b2, b2_key) = (dir.join("broker-2.pem"), dir.join("broker-2-key.pem"));
    let user = dev_ca::issue(dir, &Subject::User { name: "eve".into() }, dir, "eve", 1).expect("user cert");
    let batch = |from: u64| RaftBatch {
        from,
        cluster_id: cluster_id.clone(),
        ..RaftBatch::default()
    };

    // Broker 2's certificate speaks for broker 2 (an empty batch, a
    // heartbeat, is accepted): the checks below refuse the claim, not TLS.
    let mut as_b2 = PeerClient::new(channel(&c.addr(1), &ca, &b2, &b2_key).await);
    as_b2.raft(batch(2)).await.expect("broker 2 speaks for itself");
    for claimed in [3, 1] {
        let refused = as_b2.raft(batch(claimed)).await.expect_err("forged sender");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "claiming {claimed}");
        assert!(refused.message().contains("may not speak for broker"), "{refused:?}");
    }
    // The streaming door checks every batch.
    let stream = futures::stream::iter([batch(2), batch(3)]);
    let mut answers = as_b2.raft_stream(stream).await.expect("stream opened").into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("stream answered");
    let status = ended.expect_err("the forged batch ends the stream");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // A user's certificate speaks for no broker.
    let mut as_eve = PeerClient::new(channel(&c.addr(1), &ca, &user.cert, &user.key).await);
    let refused = as_eve.raft(batch(2)).await.expect_err("user as broker");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // Joining as broker 4 needs broker 4's certificate.
    let mut join = AdminClient::new(channel(&c.addr(1), &ca, &b2, &b2_key).await);
    let refused = join
        .join_cluster(JoinClusterRequest {
            node_id: 4,
            addr: "127.0.0.1:1".into(),
        })
        .await
        .expect_err("join as another node");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let status = admin(&c).await.cluster_status().await.expect("status");
    assert!(
        status.brokers.iter().all(|b| b.node_id != 4),
        "no broker 4 was admitted"
    );
}
