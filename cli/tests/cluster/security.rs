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

/// Runs `strand` against the cluster with `args` (after the TLS CA flag) and
/// `stdin`; returns stdout, panicking with stderr on failure.
fn strand(c: &Cluster, client: &[&str], args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Result<String, String> {
    use std::io::Write;
    let dir = c.certs_dir().expect("certs");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_strand"));
    cmd.args(["--bootstrap", &c.bootstrap(), "--tls-ca"])
        .arg(dir.join("ca.pem"))
        .args(client.iter().map(|a| a.replace("{certs}", &dir.display().to_string())))
        .args(args)
        .env_remove("STRAND_USER")
        .env_remove("STRAND_PASSWORD")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("strand");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("strand runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_users_acls_and_quotas_of_a_secured_cluster() {
    let c = Cluster::start_tls(
        3,
        "[security]\nauthorization = true\nrequire_authentication = true\nclient_auth = \"optional\"\nsuper_users = [\"User:test-admin\"]\n",
    );
    c.wait_ready().await;
    create(&c, "orders.eu", 1).await;
    create(&c, "payroll", 1).await;
    let admin = [
        "--tls-cert",
        "{certs}/test-admin.pem",
        "--tls-key",
        "{certs}/test-admin-key.pem",
    ];
    let ok = |r: Result<String, String>| r.unwrap_or_else(|e| panic!("strand failed: {e}"));
    ok(strand(&c, &admin, &["user", "create", "bob"], "hunter22\n", &[]));
    assert_eq!(ok(strand(&c, &admin, &["user", "list"], "", &[])).trim(), "bob");
    ok(strand(
        &c,
        &admin,
        &[
            "acl",
            "add",
            "--principal",
            "User:bob",
            "--operation",
            "write",
            "--topic",
            "orders.",
            "--prefixed",
        ],
        "",
        &[],
    ));
    let listed = ok(strand(&c, &admin, &["acl", "list", "--principal", "User:bob"], "", &[]));
    assert!(
        listed.contains("ALLOW User:bob WRITE topic orders. (prefixed)"),
        "{listed}"
    );
    ok(strand(
        &c,
        &admin,
        &[
            "quota",
            "set",
            "--principal",
            "User:bob",
            "--produce-bytes-per-sec",
            "1048576",
        ],
        "",
        &[],
    ));
    let quotas = ok(strand(&c, &admin, &["quota", "list"], "", &[]));
    assert!(quotas.contains("User:bob") && quotas.contains("1048576"), "{quotas}");

    // Bob logs in with his password (environment, as a script would).
    let bob = [("STRAND_USER", "bob"), ("STRAND_PASSWORD", "hunter22")];
    let topics = ok(strand(&c, &[], &["topic", "list"], "", &bob));
    assert!(
        topics.contains("orders.eu") && !topics.contains("payroll"),
        "bob sees only his topics: {topics}"
    );
    let produced = ok(strand(&c, &[], &["produce", "orders.eu"], "one\ntwo\n", &bob));
    assert!(produced.contains("2 of 2"), "{produced}");
    let refused = strand(&c, &[], &["produce", "payroll"], "raise\n", &bob).expect_err("payroll refused");
    assert!(refused.contains("AUTHORIZATION_FAILED"), "{refused}");
    let wrong = strand(
        &c,
        &[],
        &["topic", "list"],
        "",
        &[("STRAND_USER", "bob"), ("STRAND_PASSWORD", "nope")],
    )
    .expect_err("wrong password");
    assert!(wrong.contains("AUTHENTICATION_FAILED"), "{wrong}");
    let anonymous = strand(&c, &[], &["topic", "list"], "", &[]).expect_err("anonymous");
    assert!(anonymous.contains("AUTHENTICATION_FAILED"), "{anonymous}");
    ok(strand(
        &c,
        &admin,
        &["acl", "remove", "--principal", "User:bob"],
        "",
        &[],
    ));
    let refused = strand(&c, &[], &["produce", "orders.eu"], "three\n", &bob).expect_err("after removal");
    assert!(refused.contains("AUTHORIZATION_FAILED"), "{refused}");
}
