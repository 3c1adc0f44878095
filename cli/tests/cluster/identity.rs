//! The cluster id: made once when the cluster is created (random, by the
//! lowest-numbered founder, learned by the others and given to joiners),
//! kept across restarts, and checked with the sender's node id on every
//! peer RPC.

use std::time::{Duration, Instant};

use strand_proto::v1::peer_client::PeerClient;
use strand_proto::v1::{IdentityRequest, LocalStatusRequest, RaftBatch};
use tonic::Code;

use crate::support::Cluster;

fn stored_cluster_id(c: &Cluster, id: u64) -> String {
    let bytes = std::fs::read(c.data_dir(id).join("node.json")).expect("node.json");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("node.json is JSON");
    v["cluster_id"].as_str().expect("cluster_id").to_string()
}

async fn peer(c: &Cluster, id: u64) -> PeerClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match PeerClient::connect(format!("http://{}", c.addr(id))).await {
            Ok(p) => return p,
            Err(e) => {
                assert!(Instant::now() < deadline, "broker {id} unreachable: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_id_is_made_once_and_only_its_brokers_are_heard() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    let id = stored_cluster_id(&c, 1);
    assert_eq!(id.len(), 32, "128 random bits in hex: {id}");
    assert!(id.chars().all(|ch| ch.is_ascii_hexdigit()));
    assert_eq!(stored_cluster_id(&c, 2), id, "founders learn the id");
    assert_eq!(stored_cluster_id(&c, 3), id);
    let joiner = c.add_joining();
    c.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.data_dir(joiner).join("node.json").exists() {
        assert!(Instant::now() < deadline, "the joiner never stored its identity");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored_cluster_id(&c, joiner), id, "a joiner is given the id");

    let mut p = peer(&c, 2).await;
    let status = |cluster_id: &str, from: u64| LocalStatusRequest {
        cluster_id: cluster_id.to_string(),
        from,
    };
    let refused = p.local_status(status("0123456789abcdef", 1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "another cluster: {refused}");
    let refused = p.local_status(status(&id, 99)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "an unknown node: {refused}");
    let refused = p.local_status(status(&id, 2)).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "a node claiming to be the receiver: {refused}"
    );
    p.local_status(status(&id, 1)).await.expect("a peer is heard");
    let raft = RaftBatch {
        cluster_id: "0123456789abcdef".into(),
        from: 1,
        ..Default::default()
    };
    let refused = p.raft(raft).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "Raft traffic of another cluster: {refused}"
    );
    let refused = p.identity(IdentityRequest { from: 99 }).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "the id is told only to founders"
    );
    assert_eq!(
        p.identity(IdentityRequest { from: 1 })
            .await
            .expect("identity")
            .into_inner()
            .cluster_id,
        id
    );

    // A restart keeps it.
    for n in 1..=3 {
        c.stop(n);
    }
    for n in 1..=3 {
        c.restart(n);
    }
    c.wait_ready().await;
    for n in 1..=3 {
        assert_eq!(stored_cluster_id(&c, n), id);
    }
}
