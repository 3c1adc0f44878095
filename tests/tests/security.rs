//! TLS on one broker: certificates rotated on disk are used without a
//! restart (and a half-finished rotation keeps the old ones); a broker
//! refuses to start unauthenticated on a non-loopback address.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_broker::BrokerConfig;
use strand_client::proto as pb;
use strand_client::{Admin, Consumer, OffsetReset, Producer, ProducerRecord, Security};
use strand_security::dev_ca::{self, Subject};

use crate::harness::{TestBroker, test_config};

/// A CA in `dir` with a certificate for broker 1 and one for `user`.
fn pki(dir: &Path, user: &str) {
    dev_ca::create_ca(dir, 1).expect("CA");
    let broker = Subject::Broker {
        node_id: 1,
        hosts: vec!["127.0.0.1".into()],
    };
    dev_ca::issue(dir, &broker, dir, "broker", 1).expect("broker cert");
    dev_ca::issue(dir, &Subject::User { name: user.into() }, dir, user, 1).expect("user cert");
}

/// A broker config serving TLS with the broker certificate of `pki` (see
/// [`pki`]), with metrics.
fn tls_config(data: &Path, pki: &Path) -> BrokerConfig {
    let mut config = test_config(data);
    config.metrics_listen = Some("127.0.0.1:0".into());
    config.security.tls_ca = Some(pki.join("ca.pem"));
    config.security.tls_cert = Some(pki.join("broker.pem"));
    config.security.tls_key = Some(pki.join("broker-key.pem"));
    config
}

fn client(dir: &Path, user: &str) -> Security {
    Security::mutual_tls(
        dir.join("ca.pem"),
        dir.join(format!("{user}.pem")),
        dir.join(format!("{user}-key.pem")),
    )
    .expect("client TLS")
}

/// Replaces `to`'s file with `from`'s the way an operator's tooling does:
/// write beside, rename over.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotated_on_disk_are_used_without_a_restart() {
    let pkis = tempfile::tempdir().expect("tempdir");
    let (old, new, live) = (
        pkis.path().join("old"),
        pkis.path().join("new"),
        pkis.path().join("live"),
    );
    pki(&old, "alice");
    pki(&new, "bob");
    std::fs::create_dir_all(&live).expect("live dir");
    for f in ["ca.pem", "broker.pem", "broker-key.pem"] {
        replace(&old.join(f), &live.join(f));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config: BrokerConfig = test_config(dir.path());
    config.security.tls_ca = Some(live.join("ca.pem"));
    config.security.tls_cert = Some(live.join("broker.pem"));
    config.security.tls_key = Some(live.join("broker-key.pem"));
    config.security.tls_reload_interval_ms = 100;
    let b = TestBroker::start_with(dir, config).await;
    let addr = b.addr();

    let alice = Admin::connect_with(addr.clone(), client(&old, "alice"))
        .await
        .expect("alice connects");
    alice.create_topic("t", 1, 1, Default::default()).await.expect("create");
    assert!(
        Admin::connect_with(addr.clone(), client(&new, "bob")).await.is_err(),
        "bob's CA is not trusted yet"
    );

    // Half a rotation: the new certificate with the old key does not load,
    // and the broker keeps serving with the old pair.
    replace(&new.join("broker.pem"), &live.join("broker.pem"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    Admin::connect_with(addr.clone(), client(&old, "alice"))
        .await
        .expect("the old certificate still serves");

    // The rest of it.
    replace(&new.join("broker-key.pem"), &live.join("broker-key.pem"));
    replace(&new.join("ca.pem"), &live.join("ca.pem"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let bob = loop {
        match Admin::connect_with(addr.clone(), client(&new, "bob")).await {
            Ok(a) => break a,
            Err(e) => assert!(Instant::now() < deadline, "new certificates not picked up: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let topics = bob.list_topics().await.expect("bob lists");
    assert!(topics.iter().any(|t| t.name == "t"), "{topics:?}");
    assert!(
        Admin::connect_with(addr.clone(), client(&old, "alice")).await.is_err(),
        "the old CA is no longer trusted"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_broker_refuses_to_serve_unauthenticated_clients_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.listen = "0.0.0.0:0".into();
    let err = strand_broker::RunningBroker::start(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    config.security.allow_insecure = true;
    let b = strand_broker::RunningBroker::start(config)
        .await
        .expect("allowed when told");
    b.stop().await.expect("stop");
}

/// A TLS broker enforcing ACLs, `admin` its super user; the CA in `pki`
/// with certificates for `admin`, `alice` and `mallory`.
async fn acl_broker(pki_dir: &Path) -> TestBroker {
    pki(pki_dir, "admin");
    for user in ["alice", "mallory"] {
        dev_ca::issue(pki_dir, &Subject::User { name: user.into() }, pki_dir, user, 1).expect("user cert");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tls_config(dir.path(), pki_dir);
    config.security.authorization = true;
    config.security.super_users = vec!["User:admin".into()];
    TestBroker::start_with(dir, config).await
}

fn acl(
    principal: &str,
    kind: pb::AclResourceType,
    name: &str,
    prefixed: bool,
    op: pb::AclOperation,
    deny: bool,
) -> pb::AclBinding {
    pb::AclBinding {
        principal: principal.into(),
        resource_type: kind as i32,
        resource_name: name.into(),
        pattern_type: if prefixed {
            pb::AclPatternType::Prefixed
        } else {
            pb::AclPatternType::Literal
        } as i32,
        operation: op as i32,
        permission: if deny {
            pb::AclPermission::Deny
        } else {
            pb::AclPermission::Allow
        } as i32,
    }
}

fn denied<T: std::fmt::Debug>(r: strand_client::Result<T>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.reason(), "AUTHORIZATION_FAILED", "{what}: {e}");
}

async fn send(p: &Producer, topic: &str, value: &str) -> strand_client::Result<()> {
    p.send(ProducerRecord::new(topic, Bytes::from(value.to_string())))
        .await?
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_decide_what_each_principal_may_do() {
    use pb::AclOperation as Op;
    use pb::AclResourceType as Kind;
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = pki_dir.path();
    let b = acl_broker(pki_dir).await;
    let addr = b.addr();
    let admin = Admin::connect_with(addr.clone(), client(pki_dir, "admin"))
        .await
        .expect("admin");
    for t in ["orders.eu", "orders.us", "payroll"] {
        admin.create_topic(t, 1, 1, Default::default()).await.expect("create");
    }
    let alice_sec = client(pki_dir, "alice");
    let alice = Admin::connect_with(addr.clone(), alice_sec.clone())
        .await
        .expect("alice connects");

    // Without an ACL alice may do nothing and sees nothing.
    assert!(
        alice.list_topics().await.expect("list").is_empty(),
        "no topic is visible"
    );
    denied(
        alice.create_topic("mine", 1, 1, Default::default()).await,
        "create topic",
    );
    denied(alice.describe_topic("payroll").await, "describe topic");
    denied(alice.delete_topic("payroll").await, "delete topic");
    denied(alice.cluster_status().await, "cluster status");
    denied(
        alice
            .create_acls(vec![acl("User:alice", Kind::Cluster, "cluster", false, Op::All, false)])
            .await,
        "grant herself",
    );
    denied(
        Producer::builder(addr.clone())
            .security(alice_sec.clone())
            .build()
            .await,
        "idempotent producer id",
    );
    let mut consumer = Consumer::builder(addr.clone())
        .security(alice_sec.clone())
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .expect("consumer");
    denied(consumer.assign("orders.eu", &[0]).await, "assign (describe the topic)");
    let mut member = Consumer::builder(addr.clone())
        .security(alice_sec.clone())
        .group("billing")
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .expect("group consumer");
    member.subscribe(&["orders.eu"]).await.expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match member.poll().await {
            Err(e) => {
                assert_eq!(e.reason(), "AUTHORIZATION_FAILED", "group join: {e}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "the group join was never refused"),
        }
    }

    // Grants: write and read every `orders.` topic, read group billing.
    admin
        .create_acls(vec![
            acl("User:alice", Kind::Topic, "orders.", true, Op::Write, false),
            acl("User:alice", Kind::Topic, "orders.", true, Op::Read, false),
            acl("User:alice", Kind::Group, "billing", false, Op::Read, false),
        ])
        .await
        .expect("grant");
    let listed = admin
        .describe_acls(pb::AclFilter {
            principal: "User:alice".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 3);
    let topics: Vec<String> = alice
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(topics, ["orders.eu", "orders.us"], "only what she may describe");
    let p = Producer::builder(addr.clone())
        .security(alice_sec.clone())
        .build()
        .await
        .expect("producer");
    send(&p, "orders.eu", "o1").await.expect("write orders.eu");
    send(&p, "orders.us", "o2").await.expect("write orders.us (prefix)");
    denied(send(&p, "payroll", "raise").await, "write payroll");
    p.close().await.expect("close");
    consumer.assign("orders.eu", &[0]).await.expect("assign");
    let got = consumer.poll().await.expect("fetch orders.eu");
    assert_eq!(got.len(), 1);
    let mut member = Consumer::builder(addr.clone())
        .security(alice_sec.clone())
        .group("billing")
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .expect("group consumer");
    member.subscribe(&["orders.eu"]).await.expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut consumed = Vec::new();
    while consumed.is_empty() {
        assert!(Instant::now() < deadline, "the group never delivered");
        consumed.extend(member.poll().await.expect("group poll"));
    }
    member.close().await.expect("leave");

    // A deny wins over the prefix allow.
    admin
        .create_acls(vec![acl("User:alice", Kind::Topic, "orders.eu", false, Op::Read, true)])
        .await
        .expect("deny");
    consumer
        .seek("orders.eu", 0, strand_client::Offset::Beginning)
        .await
        .expect("seek");
    denied(consumer.poll().await, "read after the deny");

    // Removal.
    let removed = admin
        .delete_acls(pb::AclFilter {
            principal: "User:alice".into(),
            ..Default::default()
        })
        .await
        .expect("remove");
    assert_eq!(removed.len(), 4);
    denied(
        Producer::builder(addr.clone()).security(alice_sec).build().await,
        "producer after removal",
    );

    // Denials are counted per principal.
    let metrics = scrape(b.broker.as_ref().and_then(|r| r.metrics_addr).expect("metrics")).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"strand_authorization_denied_total{principal="User:alice"}"#))
        .unwrap_or_else(|| panic!("no denial count in\n{metrics}"));
    let n: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("count");
    assert!(n >= 8, "{line}");
    b.stop().await;
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_throttles_a_greedy_producer_while_another_keeps_its_pace() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = pki_dir.path();
    pki(pki_dir, "admin");
    for user in ["greedy", "calm"] {
        dev_ca::issue(pki_dir, &Subject::User { name: user.into() }, pki_dir, user, 1).expect("user cert");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tls_config(dir.path(), pki_dir);
    let b = TestBroker::start_with(dir, config).await;
    let addr = b.addr();
    let admin = Admin::connect_with(addr.clone(), client(pki_dir, "admin"))
        .await
        .expect("admin");
    admin
        .create_topic("bulk", 1, 1, Default::default())
        .await
        .expect("create");
    const RATE: u64 = 256 << 10;
    admin
        .alter_quota(pb::QuotaEntry {
            entity: "User:greedy".into(),
            produce_bytes_per_sec: RATE,
            ..Default::default()
        })
        .await
        .expect("quota");
    let quotas = admin.describe_quotas().await.expect("list");
    assert_eq!(quotas.len(), 1, "{quotas:?}");
    assert!(
        admin
            .alter_quota(pb::QuotaEntry {
                entity: "greedy".into(),
                produce_bytes_per_sec: 1,
                ..Default::default()
            })
            .await
            .is_err_and(|e| e.reason() == "INVALID_REQUEST")
    );

    // The greedy producer writes 1.25 MiB as fast as it can: at 256 KiB/s
    // after a one-second burst, that takes at least 4 s of delayed answers.
    let greedy = Producer::builder(addr.clone())
        .security(client(pki_dir, "greedy"))
        .build()
        .await
        .expect("greedy producer");
    let calm = Producer::builder(addr.clone())
        .security(client(pki_dir, "calm"))
        .linger(Duration::ZERO)
        .build()
        .await
        .expect("calm producer");
    let value = Bytes::from(vec![b'x'; 16 << 10]);
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let mut pending = Vec::new();
        for _ in 0..80 {
            pending.push(
                greedy
                    .send(ProducerRecord::new("bulk", value.clone()))
                    .await
                    .expect("send"),
            );
        }
        for d in pending {
            d.await.expect("acknowledged: throttled, never refused");
        }
        greedy.close().await.expect("close");
    });
    // Meanwhile the calm producer's records are answered at their own pace.
    let mut slowest = Duration::ZERO;
    while !flood.is_finished() {
        let t = Instant::now();
        send(&calm, "bulk", "small").await.expect("calm send");
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood.await.expect("flood");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "1.25 MiB at 256 KiB/s finished in {took:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "the calm producer waited {slowest:?} while the greedy one was throttled"
    );
    let metrics = scrape(b.broker.as_ref().and_then(|r| r.metrics_addr).expect("metrics")).await;
    assert!(
        metrics.lines().any(|l| l.starts_with(r#"strand_quota_throttled_responses_total{principal="User:greedy",kind="produce"}"#)),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"principal="User:calm""#),
        "the calm producer was never throttled"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_with_passwords_that_are_never_sent_or_stored() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = pki_dir.path();
    pki(pki_dir, "admin");
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let mut config = tls_config(dir.path(), pki_dir);
    config.security.client_auth = strand_broker::config::ClientAuthMode::Optional;
    config.security.require_authentication = true;
    config.security.authorization = true;
    config.security.super_users = vec!["User:admin".into()];
    let b = TestBroker::start_with(dir, config).await;
    let addr = b.addr();
    let admin = Admin::connect_with(addr.clone(), client(pki_dir, "admin"))
        .await
        .expect("admin");
    admin.create_topic("t", 1, 1, Default::default()).await.expect("create");
    const PASSWORD: &str = "correct horse battery staple";
    admin.upsert_user("carol", PASSWORD).await.expect("create user");
    assert_eq!(admin.list_users().await.expect("users"), ["carol"]);
    admin
        .create_acls(vec![
            acl(
                "User:carol",
                pb::AclResourceType::Topic,
                "t",
                false,
                pb::AclOperation::Write,
                false,
            ),
            acl(
                "User:carol",
                pb::AclResourceType::Topic,
                "t",
                false,
                pb::AclOperation::Read,
                false,
            ),
        ])
        .await
        .expect("grant");
    let tls_only = || Security::tls(pki_dir.join("ca.pem")).expect("tls");

    // No certificate and no password: refused.
    let anonymous = Admin::connect_with(addr.clone(), tls_only()).await;
    assert_eq!(anonymous.expect_err("anonymous").reason(), "AUTHENTICATION_FAILED");
    // A wrong password and an unknown user are refused alike.
    for (user, password) in [("carol", "guess"), ("nobody", PASSWORD)] {
        let e = Admin::connect_with(addr.clone(), tls_only().with_user(user, password))
            .await
            .expect_err("refused");
        assert_eq!(e.reason(), "AUTHENTICATION_FAILED", "{user}: {e}");
        assert!(e.to_string().contains("unknown user or wrong password"), "{e}");
    }
    // The right password: carol acts as User:carol (her ACLs apply).
    let carol_sec = tls_only().with_user("carol", PASSWORD);
    let p = Producer::builder(addr.clone())
        .security(carol_sec.clone())
        .build()
        .await
        .expect("carol's producer");
    send(&p, "t", "hello").await.expect("carol writes t");
    let carol = Admin::connect_with(addr.clone(), carol_sec.clone())
        .await
        .expect("carol");
    denied(
        carol.create_topic("u", 1, 1, Default::default()).await,
        "carol creates a topic",
    );
    // A forged token is refused.
    let mut raw = pb::admin_client::AdminClient::new(
        tls_only()
            .channel(tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri"))
            .await
            .expect("channel"),
    );
    let mut forged = tonic::Request::new(pb::ListTopicsRequest {});
    forged.metadata_mut().insert(
        "authorization",
        "Bearer Y2Fyb2w6OTk5OTk5OTk5OTk5OQ.AAAA".parse().expect("ascii"),
    );
    let status = raw.list_topics(forged).await.expect_err("forged token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Deleting carol ends her session at once.
    admin.delete_user("carol").await.expect("delete");
    let e = send(&p, "t", "after").await.expect_err("deleted user");
    assert_eq!(e.reason(), "AUTHENTICATION_FAILED", "{e}");
    drop(p);

    let metrics = scrape(b.broker.as_ref().and_then(|r| r.metrics_addr).expect("metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(r#"strand_authentication_failures_total{principal="User:carol"}"#)),
        "{metrics}"
    );
    // Nothing the broker wrote holds the password.
    let files = walk(&data_dir);
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("__controller")),
        "{files:?}"
    );
    for entry in files {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
            "{} holds the password",
            entry.display()
        );
    }
    b.stop().await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
