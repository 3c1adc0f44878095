//! Every bad input of the broker gets a typed error with a stable reason,
//! and nothing is written (issue: "Bad input gets a clear error").

use std::collections::HashMap;

use strand_proto::v1::{
    Acks, CreateTopicRequest, DescribeTopicRequest, ErrorCode, FetchPartition, FetchRequest, ListOffsetsRequest,
    PartitionBatch, ProduceRequest, list_offsets_request::Spec,
};
use tokio::io::AsyncWriteExt;

use crate::harness::{TestBroker, batch, reason};

async fn create(b: &TestBroker, name: &str, partitions: u32, configs: &[(&str, &str)]) {
    b.raw_admin()
        .await
        .create_topic(CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            topic_id: String::new(),
        })
        .await
        .expect("create topic");
}

fn produce_req(topic: &str, partition: u32, bytes: bytes::Bytes) -> ProduceRequest {
    ProduceRequest {
        acks: Acks::All as i32,
        timeout_ms: 0,
        batches: vec![PartitionBatch {
            topic: topic.into(),
            partition,
            batch: bytes,
            topic_id: String::new(),
        }],
        records: Vec::new(),
    }
}

async fn log_end(b: &TestBroker, topic: &str, partition: u32) -> u64 {
    b.raw()
        .await
        .list_offsets(ListOffsetsRequest {
            topic: topic.into(),
            partition,
            spec: Some(Spec::Latest(true)),
            topic_id: String::new(),
        })
        .await
        .expect("list offsets")
        .into_inner()
        .offset
}

fn now() -> i64 {
    strand_storage::now_ms()
}

#[tokio::test]
async fn unknown_topic_is_not_found_with_reason_unknown_topic() {
    let b = TestBroker::start().await;
    let status = b
        .raw_admin()
        .await
        .describe_topic(DescribeTopicRequest { name: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(reason(&status), "UNKNOWN_TOPIC");
    let status = b
        .raw()
        .await
        .list_offsets(ListOffsetsRequest {
            topic: "nope".into(),
            partition: 0,
            spec: Some(Spec::Earliest(true)),
            topic_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(reason(&status), "UNKNOWN_TOPIC");
    // In a batched produce the reason is per partition.
    let resp = b
        .raw()
        .await
        .produce(produce_req("nope", 0, batch(&[("k", "v")], now())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.results[0].error.as_ref().unwrap().code,
        ErrorCode::UnknownTopic as i32
    );
    b.stop().await;
}

#[tokio::test]
async fn one_bad_partition_does_not_fail_the_others() {
    let b = TestBroker::start().await;
    create(&b, "t", 2, &[]).await;
    let mut req = produce_req("t", 0, batch(&[("a", "1")], now()));
    req.batches.push(PartitionBatch {
        topic: "t".into(),
        partition: 7,
        batch: batch(&[("b", "2")], now()),
        topic_id: String::new(),
    });
    req.batches.push(PartitionBatch {
        topic: "t".into(),
        partition: 1,
        batch: batch(&[("c", "3")], now()),
        topic_id: String::new(),
    });
    let resp = b.raw().await.produce(req).await.unwrap().into_inner();
    assert!(resp.results[0].error.is_none());
    assert_eq!(
        resp.results[1].error.as_ref().unwrap().code,
        ErrorCode::UnknownPartition as i32
    );
    assert!(resp.results[2].error.is_none());
    assert_eq!((log_end(&b, "t", 0).await, log_end(&b, "t", 1).await), (1, 1));
    b.stop().await;
}

#[tokio::test]
async fn a_corrupt_batch_is_rejected_and_nothing_is_written() {
    let b = TestBroker::start().await;
    create(&b, "t", 1, &[]).await;
    let good = batch(&[("k", "value")], now());
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let resp = b
        .raw()
        .await
        .produce(produce_req("t", 0, bad.into()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.results[0].error.as_ref().unwrap().code,
        ErrorCode::CorruptBatch as i32
    );
    let truncated = good.slice(..good.len() - 3);
    let resp = b
        .raw()
        .await
        .produce(produce_req("t", 0, truncated))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.results[0].error.as_ref().unwrap().code,
        ErrorCode::CorruptBatch as i32
    );
    assert_eq!(log_end(&b, "t", 0).await, 0);
    b.stop().await;
}

#[tokio::test]
async fn a_batch_over_the_topic_maximum_is_record_too_large() {
    let b = TestBroker::start().await;
    create(&b, "small", 1, &[("max.message.bytes", "1024")]).await;
    let big = "x".repeat(2000);
    let resp = b
        .raw()
        .await
        .produce(produce_req("small", 0, batch(&[("k", big.as_str())], now())))
        .await
        .unwrap()
        .into_inner();
    let err = resp.results[0].error.as_ref().unwrap();
    assert_eq!(err.code, ErrorCode::RecordTooLarge as i32, "{}", err.message);
    assert_eq!(log_end(&b, "small", 0).await, 0);
    b.stop().await;
}

#[tokio::test]
async fn timestamps_too_far_in_the_future_are_invalid() {
    let b = TestBroker::start().await;
    create(&b, "t", 1, &[]).await;
    let two_hours = 2 * 3_600_000;
    let resp = b
        .raw()
        .await
        .produce(produce_req("t", 0, batch(&[("k", "v")], now() + two_hours)))
        .await
        .unwrap();
    let err = resp.into_inner().results[0].error.clone().unwrap();
    assert_eq!(err.code, ErrorCode::InvalidTimestamp as i32);
    // Ten minutes ahead is within the default hour.
    let resp = b
        .raw()
        .await
        .produce(produce_req("t", 0, batch(&[("k", "v")], now() + 600_000)))
        .await
        .unwrap();
    assert!(resp.into_inner().results[0].error.is_none());
    assert_eq!(log_end(&b, "t", 0).await, 1);
    b.stop().await;
}

#[tokio::test]
async fn invalid_topic_names_and_configs_are_refused() {
    let b = TestBroker::start().await;
    let mut admin = b.raw_admin().await;
    for (name, partitions, configs, want) in [
        ("bad name", 1, vec![], "INVALID_TOPIC"),
        ("", 1, vec![], "INVALID_TOPIC"),
        ("..", 1, vec![], "INVALID_TOPIC"),
        ("ok", 0, vec![], "INVALID_REQUEST"),
        ("ok", 1, vec![("cleanup.policy", "compact")], "INVALID_CONFIG"),
        ("ok", 1, vec![("retention.ms", "soon")], "INVALID_CONFIG"),
    ] {
        let status = admin
            .create_topic(CreateTopicRequest {
                name: name.into(),
                partitions,
                replication_factor: 1,
                configs: configs
                    .iter()
                    .map(|(k, v): &(&str, &str)| (k.to_string(), v.to_string()))
                    .collect(),
                topic_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&status), want, "{name:?} {configs:?}: {}", status.message());
    }
    let status = admin
        .create_topic(CreateTopicRequest {
            name: "rf".into(),
            partitions: 1,
            replication_factor: 3,
            configs: HashMap::new(),
            topic_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "INVALID_REQUEST", "{}", status.message());
    create(&b, "dup", 1, &[]).await;
    let status = admin
        .create_topic(CreateTopicRequest {
            name: "dup".into(),
            partitions: 1,
            replication_factor: 1,
            configs: HashMap::new(),
            topic_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert_eq!(reason(&status), "TOPIC_ALREADY_EXISTS");

    // A create that names the topic's id is safe to retry: the same request
    // again (its first answer lost) is answered with the topic it created;
    // another id, or none, still finds the name taken; an id that is not a
    // UUID is refused before anything is created.
    let with_id = |name: &str, id: &str| CreateTopicRequest {
        name: name.into(),
        partitions: 2,
        replication_factor: 1,
        configs: HashMap::new(),
        topic_id: id.into(),
    };
    const ID: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    let first = admin
        .create_topic(with_id("retried", ID))
        .await
        .expect("create with an id");
    let again = admin
        .create_topic(with_id("retried", ID))
        .await
        .expect("the same create again is answered with the topic it made");
    let (first, again) = (first.into_inner().topic, again.into_inner().topic);
    assert_eq!(first.as_ref().map(|t| t.topic_id.as_str()), Some(ID));
    assert_eq!(
        again.as_ref().map(|t| (t.topic_id.as_str(), t.partitions.len())),
        Some((ID, 2))
    );
    for other in ["0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3", ""] {
        let status = admin.create_topic(with_id("retried", other)).await.unwrap_err();
        assert_eq!(reason(&status), "TOPIC_ALREADY_EXISTS", "id {other:?}");
    }
    let status = admin.create_topic(with_id("badid", "not-a-uuid")).await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_REQUEST", "{}", status.message());
    let listed = admin
        .describe_topic(DescribeTopicRequest { name: "badid".into() })
        .await
        .unwrap_err();
    assert_eq!(reason(&listed), "UNKNOWN_TOPIC");
    b.stop().await;
}

#[tokio::test]
async fn fetch_out_of_range_carries_earliest_and_latest_and_unknown_partition_is_named() {
    let b = TestBroker::start().await;
    create(&b, "t", 1, &[]).await;
    b.raw()
        .await
        .produce(produce_req("t", 0, batch(&[("a", "1"), ("b", "2")], now())))
        .await
        .unwrap();
    let mut c = b.raw().await;
    let fetch = |offset, partition| FetchRequest {
        partitions: vec![FetchPartition {
            topic: "t".into(),
            partition,
            offset,
            max_bytes: 0,
            topic_id: String::new(),
        }],
        max_wait_ms: 0,
        max_bytes: 0,
        record_format: 0,
        ..Default::default()
    };
    let resp = c.fetch(fetch(9, 0)).await.unwrap().into_inner();
    let err = resp.partitions[0].error.clone().unwrap();
    assert_eq!(err.code, ErrorCode::OffsetOutOfRange as i32);
    assert_eq!((err.earliest, err.latest), (0, 2));
    let resp = c.fetch(fetch(0, 3)).await.unwrap().into_inner();
    assert_eq!(
        resp.partitions[0].error.clone().unwrap().code,
        ErrorCode::UnknownPartition as i32
    );
    // At the log end: an empty answer, not an error.
    let resp = c.fetch(fetch(2, 0)).await.unwrap().into_inner();
    assert!(resp.partitions[0].error.is_none() && resp.partitions[0].records.is_empty());
    b.stop().await;
}

#[tokio::test]
async fn a_request_over_the_message_size_limit_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::harness::test_config(dir.path());
    config.limits.max_message_bytes = 1 << 20;
    let b = TestBroker::start_with(dir, config).await;
    create(&b, "t", 1, &[]).await;
    let mut req = produce_req("t", 0, batch(&[("k", "v")], now()));
    for _ in 0..3 {
        req.batches.push(PartitionBatch {
            topic: "t".into(),
            partition: 0,
            batch: vec![0u8; 512 * 1024].into(),
            topic_id: String::new(),
        });
    }
    let status = b.raw().await.produce(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert_eq!(
        log_end(&b, "t", 0).await,
        0,
        "not even the valid first batch was written"
    );
    b.stop().await;
}

/// A client that sends half a produce request and disconnects leaves no
/// trace: the broker only acts on whole messages.
#[tokio::test]
async fn a_client_that_disconnects_mid_request_writes_nothing() {
    let b = TestBroker::start().await;
    create(&b, "t", 1, &[]).await;
    let body = {
        use prost::Message;
        produce_req("t", 0, batch(&[("k", &"v".repeat(10_000))], now())).encode_to_vec()
    };
    let mut s = tokio::net::TcpStream::connect(b.addr()).await.unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    let mut hpack = Vec::new();
    for (k, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/strand.v1.Strand/Produce"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack.push(0x00); // literal header field without indexing, new name
        hpack.push(k.len() as u8);
        hpack.extend_from_slice(k.as_bytes());
        hpack.push(v.len() as u8);
        hpack.extend_from_slice(v.as_bytes());
    }
    let frame = |out: &mut Vec<u8>, kind: u8, flags: u8, payload: &[u8]| {
        let len = payload.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        out.extend_from_slice(payload);
    };
    frame(&mut out, 1, 0x4, &hpack); // HEADERS, END_HEADERS
    let mut grpc = vec![0u8];
    grpc.extend_from_slice(&(body.len() as u32).to_be_bytes());
    grpc.extend_from_slice(&body[..body.len() / 2]);
    frame(&mut out, 0, 0, &grpc); // DATA without END_STREAM: half the message
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
    drop(s);
    // A complete request afterwards lands at offset 0: nothing came before it.
    let resp = b
        .raw()
        .await
        .produce(produce_req("t", 0, batch(&[("k", "v")], now())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results[0].base_offset, 0);
    assert_eq!(log_end(&b, "t", 0).await, 1);
    b.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::harness::test_config(dir.path());
    config.limits.max_connections = 2;
    let b = TestBroker::start_with(dir, config).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = b.raw_admin().await;
        c.list_topics(strand_proto::v1::ListTopicsRequest {})
            .await
            .expect("within the limit");
        held.push(c);
    }
    let third = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut c = strand_proto::v1::admin_client::AdminClient::connect(format!("http://{}", b.addr())).await?;
        Ok::<_, Box<dyn std::error::Error>>(c.list_topics(strand_proto::v1::ListTopicsRequest {}).await?)
    })
    .await
    .expect("answered quickly");
    assert!(third.is_err(), "a third connection must be refused");
    drop(held);
    b.stop().await;
}

/// A batch whose CRC is right but whose records are not is refused whole,
/// naming what is wrong; nothing is stored, and a consumer reading the
/// partition afterwards is never stuck behind it or misreads it.
#[tokio::test]
async fn a_batch_with_a_valid_crc_but_malformed_records_is_refused_and_consumers_keep_going() {
    let b = TestBroker::start().await;
    create(&b, "strict", 1, &[]).await;
    let ts = now();
    let cases = strand_checker::malformed::every_kind(ts);
    for (what, bytes, expected) in cases {
        let resp = b
            .raw()
            .await
            .produce(produce_req("strict", 0, bytes.into()))
            .await
            .unwrap()
            .into_inner();
        let e = resp.results[0]
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(e.code, ErrorCode::CorruptBatch as i32, "{what}: {}", e.message);
        assert!(e.message.contains(expected), "{what}: {}", e.message);
    }
    assert_eq!(log_end(&b, "strict", 0).await, 0, "nothing was stored");
    // The same layout, well formed, is accepted and reads back exactly.
    use strand_checker::malformed::{batch, records};
    let good: bytes::Bytes = batch(&records(&[(0, 0, 0), (0, 5, 1)]), 2, ts, ts + 5).into();
    let resp = b
        .raw()
        .await
        .produce(produce_req("strict", 0, good))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.results[0].error.is_none(), "{:?}", resp.results[0].error);
    let mut c = strand_client::Consumer::builder(b.addr()).build().await.unwrap();
    c.assign("strict", &[0]).await.unwrap();
    c.seek("strict", 0, strand_client::Offset::Beginning).await.unwrap();
    let got = c.poll().await.unwrap();
    let seen: Vec<(u64, i64)> = got.iter().map(|r| (r.offset, r.timestamp_ms - ts)).collect();
    assert_eq!(seen, vec![(0, 0), (1, 5)]);
    b.stop().await;
}

/// Finishing a move is the partition leader's internal step (it follows
/// Raft's configuration change); a client sending `finish` would make the
/// removed brokers delete their copies early, so it is refused.
#[tokio::test]
async fn a_client_cannot_finish_a_reassignment() {
    let b = TestBroker::start().await;
    create(&b, "moving", 1, &[]).await;
    let e = b
        .raw_admin()
        .await
        .reassign_partition(strand_proto::v1::ReassignPartitionRequest {
            topic: "moving".into(),
            partition: 0,
            replicas: vec![1],
            finish: true,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "INVALID_REQUEST", "{e}");
    assert!(e.message().contains("finish"), "{e}");
    b.stop().await;
}
