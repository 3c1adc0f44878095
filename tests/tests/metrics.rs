//! The metrics endpoint after real traffic: the numbers match what was
//! produced and consumed (issue "Deploy and operate", Metrics and health).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use strand_client::{Admin, Consumer, OffsetReset, Producer, ProducerRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TestBroker, test_config};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample whose name and labels start with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_what_was_produced_and_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.metrics_listen = Some("127.0.0.1:0".into());
    let b = TestBroker::start_with(dir, config).await;
    let maddr = b.broker.as_ref().unwrap().metrics_addr.expect("metrics served");
    assert_eq!(get(maddr, "/health/live").await.0, 200);

    Admin::connect(b.addr())
        .await
        .unwrap()
        .create_topic("m", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::builder(b.addr()).build().await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..1_000 {
        let r = ProducerRecord::new("m", Bytes::from(format!("value-{i}"))).key(Bytes::from(format!("k{i}")));
        deliveries.push(producer.send(r).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
    let mut c = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    c.assign_all("m").await.unwrap();
    let mut read = 0;
    while read < 1_000 {
        read += c.poll().await.unwrap().len();
    }

    let (status, ready) = get(maddr, "/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    let (status, body) = get(maddr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&body, "strand_produce_records_total{topic=\"m\"}"),
        Some(1_000.0),
        "{body}"
    );
    let hw0 = sample(&body, "strand_partition_high_watermark{topic=\"m\",partition=\"0\"}").expect("hw 0");
    let hw1 = sample(&body, "strand_partition_high_watermark{topic=\"m\",partition=\"1\"}").expect("hw 1");
    assert_eq!(hw0 + hw1, 1_000.0);
    let leo0 = sample(&body, "strand_partition_log_end_offset{topic=\"m\",partition=\"0\"}").expect("leo 0");
    assert_eq!(leo0, hw0);
    assert!(sample(&body, "strand_fetch_bytes_total{topic=\"m\"}").expect("fetch bytes") > 0.0);
    assert!(sample(&body, "strand_partition_size_bytes{topic=\"m\",partition=\"0\"}").expect("size") > 0.0);
    assert_eq!(
        sample(&body, "strand_partition_is_leader{topic=\"m\",partition=\"0\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&body, "strand_under_replicated_partitions"), Some(0.0));
    assert!(sample(&body, "strand_open_connections").expect("connections") >= 1.0);
    assert!(
        body.contains("strand_request_duration_seconds_bucket{"),
        "latency histogram present"
    );
    assert!(sample(&body, "strand_raft_leader_changes_total").expect("leader changes") >= 1.0);
    b.stop().await;
}

#[tokio::test]
async fn consumer_group_lag_and_members_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.metrics_listen = Some("127.0.0.1:0".into());
    config.groups.initial_rebalance_delay_ms = 100;
    let b = TestBroker::start_with(dir, config).await;
    let maddr = b.broker.as_ref().unwrap().metrics_addr.expect("metrics served");
    Admin::connect(b.addr())
        .await
        .unwrap()
        .create_topic("lagged", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::builder(b.addr()).build().await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("lagged", Bytes::from(format!("v{i}"))))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
    let mut c = Consumer::builder(b.addr())
        .group("slow")
        .auto_commit(None)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await
        .unwrap();
    c.subscribe(&["lagged"]).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.assignment().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no assignment");
        c.poll().await.unwrap();
    }
    // Processed 60 of 100.
    c.commit_offsets(&[("lagged", 0, 60)]).await.unwrap();
    let body = get(maddr, "/metrics").await.1;
    let labels = r#"{group="slow",topic="lagged",partition="0"}"#;
    assert_eq!(
        sample(&body, &format!("strand_consumer_group_lag{labels}")),
        Some(40.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, &format!("strand_consumer_group_committed_offset{labels}")),
        Some(60.0)
    );
    assert_eq!(
        sample(&body, r#"strand_consumer_group_members{group="slow"}"#),
        Some(1.0)
    );
    c.close().await.unwrap();
    let body = get(maddr, "/metrics").await.1;
    assert_eq!(
        sample(&body, r#"strand_consumer_group_members{group="slow"}"#),
        Some(0.0)
    );
}
