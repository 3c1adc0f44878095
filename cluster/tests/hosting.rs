//! A group whose replicas are hosted one after another, as a broker hosts
//! a new topic's partitions: the messages that arrive first are not lost.
mod support;

use support::*;

#[tokio::test]
async fn vote_requests_that_arrive_before_the_group_is_hosted_elect_it_at_once() {
    // An election timeout of 6–12 s: a candidate whose first vote requests
    // were dropped would not stand again before the deadline below.
    let config = NodeConfig {
        tick: Duration::from_millis(20),
        election_ticks: 300,
        ..fast()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = MemoryNetwork::new();
    let nodes: Vec<RaftNode> = (1..=3)
        .map(|id| {
            let n = RaftNode::start(NodeId(id), config.clone(), Arc::new(net.clone()));
            net.attach(NodeId(id), n.inbox(), n.log_source());
            n
        })
        .collect();
    let host = |i: usize| {
        let log = PartitionLog::open(tmp.path().join(format!("node-{}", i + 1)), log_config()).expect("open log");
        nodes[i].host(NewReplica {
            group: GROUP,
            log: Arc::new(RwLock::new(log)),
            voters: ids(&[1, 2, 3]),
            recovering: false,
            span: tracing::Span::none(),
        })
    };
    let first = host(0).await.expect("host on node 1");
    nodes[0].campaign(GROUP).expect("campaign");
    // Give the (pre-)vote requests time to reach nodes 2 and 3 before they
    // host the group: this is what makes the case happen, not what the
    // assertion waits for.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let others = [
        host(1).await.expect("host on node 2"),
        host(2).await.expect("host on node 3"),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !first.status.borrow().is_leader {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 not elected within 3 s: its vote requests were dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for h in &others {
        let mut status = h.status.subscribe();
        let known =
            tokio::time::timeout(Duration::from_secs(3), status.wait_for(|s| s.leader == Some(NodeId(1)))).await;
        assert!(known.is_ok(), "followers know their leader");
    }
    for n in nodes {
        n.shutdown();
    }
}
