//! TLS on one broker: certificates rotated on disk are used without a
//! restart (and a half-finished rotation keeps the old ones); a broker
//! refuses to start unauthenticated on a non-loopback address.

use std::path::Path;
use std::time::{Duration, Instant};

use strand_broker::BrokerConfig;
use strand_client::{Admin, Security};
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
