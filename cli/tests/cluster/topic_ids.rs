//! Topic ids with real brokers (issue "A recreated topic is a new topic"):
//! a broker that was down while a topic was deleted, and another created
//! under the same name, removes the old replicas' data when it comes back
//! and replicates the new topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::{Admin, Producer, ProducerRecord};

use super::{converge, create, drain};
use crate::support::Cluster;

async fn produce(c: &Cluster, topic: &str, values: impl Iterator<Item = String>) {
    let p = Producer::builder(c.bootstrap()).build().await.expect("producer");
    for v in values {
        p.send_and_wait(ProducerRecord::new(topic, Bytes::from(v)))
            .await
            .expect("acknowledged");
    }
    p.close().await.expect("close");
}

/// The topic id a partition directory's marker names (`<id> <uuid>`).
fn marked_uuid(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("topic-id")).ok()?;
    text.split_whitespace().nth(1).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_during_a_delete_removes_the_old_data_and_replicates_the_new_topic() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "t", 1).await;
    create(&c, "gone", 1).await;
    produce(&c, "t", (0..50).map(|i| format!("old-{i}"))).await;
    produce(&c, "gone", (0..5).map(|i| format!("gone-{i}"))).await;
    converge(&c, "t", 1).await;
    converge(&c, "gone", 1).await;
    let a = Admin::connect(c.bootstrap()).await.expect("admin");
    let old_id = a.describe_topic("t").await.expect("describe").topic_id;
    // A follower (not the controller) is down while `gone` is deleted and
    // `t` is deleted and created again.
    let controller = c.controller().await;
    let down = (1..=3).find(|&i| i != controller).expect("another broker");
    c.kill(down);
    let up = (1..=3).find(|&i| i != down).expect("a live broker");
    let a = Admin::connect(c.addr(up)).await.expect("admin");
    a.delete_topic("gone").await.expect("delete gone");
    a.delete_topic("t").await.expect("delete t");
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_id = loop {
        match a.create_topic("t", 1, 3, BTreeMap::new()).await {
            Ok(t) => break t.topic_id,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("create t again: {e}"),
        }
    };
    assert_ne!(new_id, old_id);
    c.leader("t", 0).await;
    produce(&c, "t", (0..7).map(|i| format!("new-{i}"))).await;
    let stale = c.data_dir(down).join("t-0");
    assert_eq!(
        marked_uuid(&stale).as_deref(),
        Some(old_id.as_str()),
        "the old data is there while it is down"
    );
    assert!(c.data_dir(down).join("gone-0").exists());

    c.restart(down);
    c.wait_ready().await;
    converge(&c, "t", 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.data_dir(down).join("gone-0").exists() {
        assert!(
            Instant::now() < deadline,
            "the deleted topic's partition is still on broker {down}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        marked_uuid(&stale).as_deref(),
        Some(new_id.as_str()),
        "broker {down} holds the new topic"
    );
    let values: Vec<String> = drain(&c, "t", 1)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let want: Vec<String> = (0..7).map(|i| format!("new-{i}")).collect();
    assert_eq!(values, want, "only the new topic's records");
    // The returned broker's own replica is the new topic's, caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = match strand_client::proto::admin_client::AdminClient::connect(format!("http://{}", c.addr(down))).await
        {
            Ok(mut a) => a
                .describe_topic(strand_client::proto::DescribeTopicRequest { name: "t".into() })
                .await
                .ok()
                .map(|d| d.into_inner()),
            Err(_) => None,
        };
        if let Some(d) = d
            && d.topic_id == new_id
            && d.partitions[0].high_watermark == 7
        {
            break;
        }
        assert!(Instant::now() < deadline, "broker {down} does not serve the new topic");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
