//! The API as a client generated from the .proto alone sees it (issue
//! "Clients in every language from the .proto alone"): protobuf-native
//! records both ways, the standard health service, server reflection, and
//! stable reasons for requests that are too big or name special values.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::{Admin, Compression, Consumer, OffsetReset, Producer, ProducerRecord, partition_for_key};
use strand_proto::v1::{
    Acks, CreateTopicRequest, FetchPartition, FetchRequest, ListOffsetsRequest, PartitionBatch, ProduceRequest,
    ProduceResponse, Record, RecordFormat, RecordHeader, SubscribeRequest, TopicRecords, list_offsets_request,
    strand_client::StrandClient,
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::harness::{TestBroker, reason, test_config};

fn record(key: Option<&str>, value: Option<&str>, partition: Option<u32>) -> Record {
    Record {
        key: key.map(|k| Bytes::from(k.to_string())),
        value: value.map(|v| Bytes::from(v.to_string())),
        partition,
        ..Default::default()
    }
}

fn produce(topic: &str, records: Vec<Record>) -> ProduceRequest {
    ProduceRequest {
        acks: Acks::All as i32,
        records: vec![TopicRecords {
            topic: topic.into(),
            records,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn fetch(topic: &str, partition: u32, offset: u64) -> FetchRequest {
    FetchRequest {
        partitions: vec![FetchPartition {
            topic: topic.into(),
            partition,
            offset,
            ..Default::default()
        }],
        record_format: RecordFormat::Protobuf as i32,
        ..Default::default()
    }
}

async fn create(b: &TestBroker, topic: &str, partitions: u32) {
    Admin::connect(b.addr())
        .await
        .expect("admin")
        .create_topic(topic, partitions, 1, BTreeMap::new())
        .await
        .expect("create");
}

/// Every decoded record of `partition` from `offset` on, up to its high
/// watermark.
async fn read_all(c: &mut StrandClient<Channel>, topic: &str, partition: u32, mut offset: u64) -> Vec<Record> {
    let mut out = Vec::new();
    loop {
        let r = c
            .fetch(fetch(topic, partition, offset))
            .await
            .expect("fetch")
            .into_inner();
        let d = &r.partitions[0];
        assert!(d.error.is_none(), "fetch of {topic}-{partition}: {:?}", d.error);
        assert!(d.records.is_empty(), "protobuf answers carry no raw batches");
        out.extend(d.decoded_records.iter().cloned());
        assert!(d.next_offset >= offset, "next_offset never goes back");
        offset = d.next_offset;
        if offset >= d.high_watermark {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_round_trip_partitioned_as_the_rust_client_does() {
    let b = TestBroker::start().await;
    create(&b, "native", 4).await;
    let mut c = b.raw().await;

    let mut sent: Vec<Record> = (0..20)
        .map(|i| record(Some(&format!("key-{i}")), Some(&format!("v{i}")), None))
        .collect();
    let mut special = record(Some(""), None, Some(2));
    special.headers = vec![
        RecordHeader {
            key: "trace".into(),
            value: Some(Bytes::from_static(b"abc")),
        },
        RecordHeader {
            key: "empty".into(),
            value: None,
        },
    ];
    special.timestamp_ms = 1_700_000_000_000;
    sent.push(special);
    sent.extend((0..5).map(|i| record(None, Some(&format!("keyless-{i}")), None)));
    let before = strand_storage::now_ms();
    let answer: ProduceResponse = c
        .produce(produce("native", sent.clone()))
        .await
        .expect("produce")
        .into_inner();
    assert!(answer.results.is_empty(), "no raw batches were sent");
    assert_eq!(answer.record_results.len(), sent.len(), "one result per record");

    let mut by_offset = BTreeMap::new();
    for (r, res) in sent.iter().zip(&answer.record_results) {
        assert!(res.error.is_none(), "{res:?}");
        assert_eq!(res.topic, "native");
        match (r.partition, &r.key) {
            (Some(p), _) => assert_eq!(res.partition, p, "explicit partition kept"),
            (None, Some(k)) => assert_eq!(res.partition, partition_for_key(k, 4), "murmur2 of {k:?}"),
            (None, None) => {}
        }
        assert!(
            by_offset.insert((res.partition, res.offset), r.clone()).is_none(),
            "two records at {}-{}",
            res.partition,
            res.offset
        );
    }
    let keyless: Vec<u32> = answer.record_results[21..].iter().map(|r| r.partition).collect();
    assert!(
        keyless.iter().all(|p| *p == keyless[0]),
        "keyless records of one request share a partition"
    );

    // Decoded by the broker, record by record, exactly as sent.
    let mut got = 0;
    for p in 0..4 {
        for r in read_all(&mut c, "native", p, 0).await {
            let want = by_offset.get(&(p, r.offset)).expect("a record that was sent");
            assert_eq!((&r.key, &r.value, &r.headers), (&want.key, &want.value, &want.headers));
            assert_eq!(r.partition, None, "answers name the partition in PartitionData");
            if want.timestamp_ms == 0 {
                assert!(r.timestamp_ms >= before, "timestamp 0 means now");
            } else {
                assert_eq!(r.timestamp_ms, want.timestamp_ms);
            }
            got += 1;
        }
    }
    assert_eq!(got, sent.len());

    // From the middle of a batch: nothing below the requested offset.
    let first = answer.record_results[0].clone();
    let rest = read_all(&mut c, "native", first.partition, first.offset + 1).await;
    assert!(
        rest.iter().all(|r| r.offset > first.offset),
        "records below the offset are skipped"
    );

    // The broker's batches are ordinary batches: the Rust client reads them.
    let mut consumer = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .expect("consumer");
    consumer.assign_all("native").await.expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = Vec::new();
    while read.len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "the Rust consumer read {} records",
            read.len()
        );
        read.extend(consumer.poll().await.expect("poll"));
    }
    let tombstone = read
        .iter()
        .find(|r| r.partition == 2 && r.value.is_none())
        .expect("tombstone");
    assert_eq!(
        tombstone.key.as_deref(),
        Some(&b""[..]),
        "an empty key is not a null key"
    );
    assert_eq!(tombstone.headers.len(), 2);
    b.stop().await;
}

/// Sends `records` with a snappy-compressing Rust producer and waits until
/// every one is acknowledged.
async fn produce_snappy(b: &TestBroker, records: impl Iterator<Item = ProducerRecord>) {
    let producer = Producer::builder(b.addr())
        .compression(Compression::Snappy)
        .linger(Duration::from_millis(10))
        .build()
        .await
        .expect("producer");
    let mut acks = Vec::new();
    for r in records {
        acks.push(producer.send(r).await.expect("send"));
    }
    for a in acks {
        a.await.expect("acknowledged");
    }
    producer.close().await.expect("close");
}

/// A protobuf-format subscription to partition 0 of `topic`.
async fn subscribe(
    c: &mut StrandClient<Channel>,
    topic: &str,
    offset: u64,
    max_bytes: u32,
) -> tonic::Streaming<strand_proto::v1::PartitionData> {
    c.subscribe(SubscribeRequest {
        topic: topic.into(),
        partition: 0,
        offset,
        max_bytes,
        record_format: RecordFormat::Protobuf as i32,
        ..Default::default()
    })
    .await
    .expect("subscribe")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_decode_to_protobuf_and_subscribe_continues() {
    let b = TestBroker::start().await;
    create(&b, "snappy", 1).await;
    produce_snappy(
        &b,
        (0..300).map(|i| {
            ProducerRecord::new("snappy", Bytes::from(format!("value-{i:04}"))).key(Bytes::from(format!("k{i}")))
        }),
    )
    .await;

    let mut c = b.raw().await;
    let all = read_all(&mut c, "snappy", 0, 0).await;
    let values: Vec<String> = all
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap_or_default().to_vec()).expect("utf-8"))
        .collect();
    let want: Vec<String> = (0..300).map(|i| format!("value-{i:04}")).collect();
    assert_eq!(values, want, "every compressed record, in order");
    assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64));

    // Subscribe in protobuf form from an offset inside a batch: each push
    // continues where the previous ended.
    let mut stream = subscribe(&mut c, "snappy", 7, 512).await;
    let mut next = 7;
    while next < 300 {
        let d = stream.message().await.expect("stream").expect("data");
        assert!(d.error.is_none(), "{:?}", d.error);
        for r in &d.decoded_records {
            assert_eq!(r.offset, next, "no gap, no repeat");
            next += 1;
        }
        assert_eq!(d.next_offset, next);
    }
    b.stop().await;
}

/// Checks that one answer's decoded values fit `budget` bytes and continue
/// at `next` with no gap or repeat; moves `next` past them.
fn take_within(d: &strand_proto::v1::PartitionData, budget: usize, next: &mut u64) {
    let bytes: usize = d
        .decoded_records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Bytes::len))
        .sum();
    assert!(bytes <= budget, "{bytes} decoded bytes in an answer of {budget}");
    for r in &d.decoded_records {
        assert_eq!(r.offset, *next, "no gap, no repeat");
        *next += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_answers_stay_within_their_byte_limits_however_well_a_batch_compressed() {
    let b = TestBroker::start().await;
    create(&b, "zeros", 1).await;
    // 200 records of 8 KiB of zeros: 1.6 MB decoded, a few KiB stored.
    produce_snappy(
        &b,
        (0..200).map(|_| ProducerRecord::new("zeros", Bytes::from(vec![0u8; 8 << 10]))),
    )
    .await;

    let mut c = b.raw().await;
    let mut next = 0;
    let mut answers = 0;
    while next < 200 {
        let r = c
            .fetch(FetchRequest {
                partitions: vec![FetchPartition {
                    topic: "zeros".into(),
                    partition: 0,
                    offset: next,
                    max_bytes: 64 << 10,
                    ..Default::default()
                }],
                record_format: RecordFormat::Protobuf as i32,
                ..Default::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        let d = &r.partitions[0];
        assert!(d.error.is_none(), "{:?}", d.error);
        take_within(d, 64 << 10, &mut next);
        assert_eq!(d.next_offset, next, "continue after the last record sent");
        answers += 1;
    }
    assert!(answers >= 200 * 8 / 64, "{answers} answers for 1.6 MB at 64 KiB each");

    // Subscribe pushes the same reads in as many messages as the budget needs.
    let mut stream = subscribe(&mut c, "zeros", 0, 64 << 10).await;
    let mut next = 0;
    while next < 200 {
        let d = stream.message().await.expect("stream").expect("data");
        take_within(&d, 64 << 10, &mut next);
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_record_refusals_are_per_topic_and_partition() {
    let b = TestBroker::start().await;
    create(&b, "good", 2).await;
    let mut c = b.raw().await;
    let future = strand_storage::now_ms() + 10 * 3_600_000;
    let req = ProduceRequest {
        acks: Acks::All as i32,
        batches: vec![PartitionBatch {
            topic: "good".into(),
            partition: 0,
            batch: crate::harness::batch(&[("raw", "batch")], strand_storage::now_ms()),
            topic_id: String::new(),
        }],
        records: vec![
            TopicRecords {
                topic: "missing".into(),
                records: vec![record(None, Some("a"), None), record(None, Some("b"), None)],
                ..Default::default()
            },
            TopicRecords {
                topic: "good".into(),
                records: vec![
                    record(Some("ok"), Some("stored"), Some(0)),
                    record(None, Some("no such partition"), Some(9)),
                    Record {
                        timestamp_ms: future,
                        ..record(None, Some("from the future"), Some(1))
                    },
                ],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let answer = c.produce(req).await.expect("answered per record").into_inner();
    assert_eq!(answer.results.len(), 1, "one result per raw batch");
    assert!(answer.results[0].error.is_none());
    let codes: Vec<i32> = answer
        .record_results
        .iter()
        .map(|r| r.error.as_ref().map_or(0, |e| e.code))
        .collect();
    use strand_proto::v1::ErrorCode as E;
    assert_eq!(
        codes,
        vec![
            E::UnknownTopic as i32,
            E::UnknownTopic as i32,
            0,
            E::UnknownPartition as i32,
            E::InvalidTimestamp as i32
        ],
        "{:?}",
        answer.record_results
    );
    assert_eq!(answer.record_results[2].offset, 1, "after the raw batch's record");
    let stored = read_all(&mut c, "good", 1, 0).await;
    assert!(stored.is_empty(), "the refused partition stored nothing: {stored:?}");
    // Batches: next_offset is after the last batch returned.
    let raw = c
        .fetch(FetchRequest {
            record_format: RecordFormat::Batches as i32,
            ..fetch("good", 0, 0)
        })
        .await
        .expect("fetch")
        .into_inner();
    assert!(!raw.partitions[0].records.is_empty());
    assert_eq!(raw.partitions[0].next_offset, raw.partitions[0].high_watermark);

    // Internal topics are refused as for a raw batch, existing or not.
    for internal in ["__consumer_offsets", "__not_there"] {
        let answer = c
            .produce(produce(internal, vec![record(None, Some("x"), Some(0))]))
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(
            answer.record_results[0].error.as_ref().map(|e| e.code),
            Some(E::InvalidTopic as i32),
            "{internal}"
        );
    }

    // One topic named in two entries is one topic: its keyless records of
    // the request share a partition and one batch, in request order.
    let twice = ProduceRequest {
        acks: Acks::All as i32,
        records: vec![
            TopicRecords {
                topic: "good".into(),
                records: vec![record(None, Some("first"), None)],
                ..Default::default()
            },
            TopicRecords {
                topic: "good".into(),
                records: vec![record(None, Some("second"), None)],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let answer = c.produce(twice).await.expect("answered").into_inner();
    let (first, second) = (&answer.record_results[0], &answer.record_results[1]);
    assert!(first.error.is_none() && second.error.is_none(), "{answer:?}");
    assert_eq!(
        first.partition, second.partition,
        "one keyless partition per topic and request"
    );
    assert_eq!(second.offset, first.offset + 1, "one batch, request order");

    // acks=none: answered at once, offsets not known.
    let mut fire = produce("good", vec![record(Some("x"), Some("fire and forget"), Some(1))]);
    fire.acks = Acks::None as i32;
    let answer = c.produce(fire).await.expect("answered").into_inner();
    assert!(answer.record_results[0].error.is_none());
    assert_eq!(answer.record_results[0].offset, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_all(&mut c, "good", 1, 0).await.is_empty() {
        assert!(Instant::now() < deadline, "the acks=none record was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A topic id that is not the topic's, in the only entry or in a later
    // entry for a topic an earlier one named without an id.
    let mut wrong_id = produce("good", vec![record(None, Some("x"), Some(0))]);
    wrong_id.records[0].topic_id = "00000000-0000-0000-0000-000000000001".into();
    let answer = c.produce(wrong_id).await.expect("answered").into_inner();
    assert_eq!(
        answer.record_results[0].error.as_ref().map(|e| e.code),
        Some(E::UnknownTopicId as i32)
    );
    let mut named_later = produce("good", vec![record(None, Some("y"), Some(0))]);
    let mut wrong = named_later.records[0].clone();
    wrong.topic_id = "00000000-0000-0000-0000-000000000001".into();
    named_later.records.push(wrong);
    let answer = c.produce(named_later).await.expect("answered").into_inner();
    assert!(answer.record_results[0].error.is_none());
    assert_eq!(
        answer.record_results[1].error.as_ref().map(|e| e.code),
        Some(E::UnknownTopicId as i32),
        "an id named in a later entry is checked too"
    );

    // An unknown record format is the client's bug: the request is refused.
    let bad = FetchRequest {
        record_format: 7,
        ..fetch("good", 0, 0)
    };
    let status = c.fetch(bad).await.expect_err("refused");
    assert_eq!(reason(&status), "INVALID_REQUEST");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_replays_from_a_timestamp_and_commits_as_a_standalone_consumer() {
    use strand_proto::v1::{
        CommitOffsetsRequest, FetchOffsetsRequest, FindCoordinatorRequest, OffsetCommit, groups_client::GroupsClient,
    };
    let b = TestBroker::start().await;
    create(&b, "replay", 1).await;
    let mut c = b.raw().await;
    let records: Vec<Record> = (0..10)
        .map(|i| Record {
            timestamp_ms: 1_700_000_000_000 + i * 1_000,
            ..record(None, Some(&format!("r{i}")), Some(0))
        })
        .collect();
    c.produce(produce("replay", records)).await.expect("produce");
    let at = c
        .list_offsets(ListOffsetsRequest {
            topic: "replay".into(),
            partition: 0,
            spec: Some(list_offsets_request::Spec::TimestampMs(1_700_000_006_000)),
            ..Default::default()
        })
        .await
        .expect("list offsets")
        .into_inner();
    assert_eq!(at.offset, 6);
    let tail = read_all(&mut c, "replay", 0, at.offset).await;
    assert_eq!(tail.first().map(|r| r.offset), Some(6));
    assert_eq!(tail.len(), 4);

    let mut groups = GroupsClient::connect(format!("http://{}", b.addr()))
        .await
        .expect("connect");
    let coordinator = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match groups
                .find_coordinator(FindCoordinatorRequest { group: "py".into() })
                .await
            {
                Ok(r) => return r.into_inner(),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("a coordinator");
    let mut groups = GroupsClient::connect(format!("http://{}", coordinator.addr))
        .await
        .expect("connect");
    let commit = CommitOffsetsRequest {
        group: "py".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![OffsetCommit {
            topic: "replay".into(),
            partition: 0,
            offset: 10,
            metadata: "from python".into(),
            ..Default::default()
        }],
    };
    let mut too_long = commit.clone();
    too_long.offsets[0].metadata = "x".repeat(4097);
    let status = groups.commit_offsets(too_long).await.expect_err("metadata over 4 KiB");
    assert_eq!(reason(&status), "INVALID_REQUEST");
    let committed = groups.commit_offsets(commit).await.expect("commit").into_inner();
    assert_eq!(committed.committed[0].offset, 10);
    assert_eq!(
        committed.committed[0].metadata, "from python",
        "metadata is stored with the offset"
    );
    let fetched = groups
        .fetch_offsets(FetchOffsetsRequest {
            group: "py".into(),
            partitions: Vec::new(),
        })
        .await
        .expect("fetch offsets")
        .into_inner();
    assert_eq!(fetched.offsets.len(), 1);
    assert_eq!(fetched.offsets[0].offset, 10);
    assert_eq!(fetched.offsets[0].metadata, "from python");

    // The same offset with new metadata replaces it; a lower offset changes
    // nothing, metadata included.
    let again = |offset: u64, metadata: &str| CommitOffsetsRequest {
        group: "py".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![OffsetCommit {
            topic: "replay".into(),
            partition: 0,
            offset,
            metadata: metadata.into(),
            ..Default::default()
        }],
    };
    let same = groups
        .commit_offsets(again(10, "rewritten"))
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(same.committed[0].metadata, "rewritten");
    let lower = groups
        .commit_offsets(again(4, "older"))
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(
        (lower.committed[0].offset, lower.committed[0].metadata.as_str()),
        (10, "rewritten")
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_values_are_refused_or_documented() {
    let b = TestBroker::start().await;
    let mut admin = b.raw_admin().await;
    let status = admin
        .create_topic(CreateTopicRequest {
            name: "rf0".into(),
            partitions: 1,
            replication_factor: 0,
            configs: Default::default(),
            topic_id: String::new(),
        })
        .await
        .expect_err("replication factor 0 is refused, not silently 1");
    assert_eq!(reason(&status), "INVALID_REQUEST");

    // A request over limits.max_message_bytes (16 MiB) is refused by the
    // codec, with the same stable reason as a batch over max.message.bytes.
    create(&b, "big", 1).await;
    let mut c = b.raw().await.max_encoding_message_size(64 << 20);
    let huge = ProduceRequest {
        acks: Acks::All as i32,
        batches: vec![PartitionBatch {
            topic: "big".into(),
            partition: 0,
            batch: Bytes::from(vec![0u8; 20 << 20]),
            topic_id: String::new(),
        }],
        ..Default::default()
    };
    let status = c.produce(huge).await.expect_err("20 MiB is refused");
    assert_eq!(reason(&status), "RECORD_TOO_LARGE", "{status:?}");
    let big_batch = {
        let mut builder = strand_storage::BatchBuilder::new(strand_storage::Compression::None);
        let value = vec![7u8; 2 << 20];
        builder.push(&strand_storage::NewRecord {
            timestamp_ms: strand_storage::now_ms(),
            key: None,
            value: Some(&value),
            headers: &[],
        });
        Bytes::from(builder.build().expect("batch"))
    };
    let two_mib = ProduceRequest {
        acks: Acks::All as i32,
        batches: vec![PartitionBatch {
            topic: "big".into(),
            partition: 0,
            batch: big_batch,
            topic_id: String::new(),
        }],
        ..Default::default()
    };
    let answer = c.produce(two_mib).await.expect("answered per partition").into_inner();
    assert_eq!(
        answer.results[0].error.as_ref().map(|e| e.code),
        Some(strand_proto::v1::ErrorCode::RecordTooLarge as i32)
    );

    // max_bytes = 0 means "the broker's cap", not "nothing".
    c.produce(produce("big", vec![record(None, Some("small"), Some(0))]))
        .await
        .expect("produce");
    let r = c.fetch(fetch("big", 0, 0)).await.expect("fetch").into_inner();
    assert_eq!(r.partitions[0].decoded_records.len(), 1);
    b.stop().await;
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a uri")
        .connect()
        .await
        .expect("connect")
}

async fn health(addr: &str) -> HealthClient<Channel> {
    HealthClient::new(channel(addr).await)
}

async fn status_of(h: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let r = h
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("check")
        .into_inner();
    ServingStatus::try_from(r.status).expect("a known status")
}

async fn wait_for_status(h: &mut HealthClient<Channel>, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = status_of(h, service).await;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{service:?} stayed {now:?}, never {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_serving_when_ready_and_not_serving_when_stopping() {
    let b = TestBroker::start().await;
    let mut h = health(&b.addr()).await;
    for service in [
        "",
        "strand.v1.Strand",
        "strand.v1.Admin",
        "strand.v1.Groups",
        "strand.v1.Peer",
    ] {
        wait_for_status(&mut h, service, ServingStatus::Serving).await;
    }
    let unknown = h
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = h
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(b.stop());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a transition before the broker is gone")
        .expect("watch")
        .expect("a status");
    assert_eq!(
        next.status,
        ServingStatus::NotServing as i32,
        "shutting down is not serving"
    );
    stopping.await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_cluster_has_no_quorum_but_peers_can_talk() {
    // A founder of a two-broker cluster whose peer never starts: it serves
    // the port (peers must reach it) but cannot serve clients.
    let free = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    };
    let (me, other) = (free(0), free(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.listen = me.to_string();
    config.peers = vec![format!("1@{me}"), format!("2@{other}")];
    let b = TestBroker::start_with(dir, config).await;
    let mut h = health(&b.addr()).await;
    wait_for_status(&mut h, "strand.v1.Peer", ServingStatus::Serving).await;
    for service in ["", "strand.v1.Strand", "strand.v1.Admin", "strand.v1.Groups"] {
        assert_eq!(
            status_of(&mut h, service).await,
            ServingStatus::NotServing,
            "{service:?} without a controller quorum"
        );
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_every_service_and_describes_the_messages() {
    use prost::Message as _;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let b = TestBroker::start().await;
    let mut r = ServerReflectionClient::new(channel(&b.addr()).await);
    let ask = |m: MessageRequest| {
        tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        }])
    };
    let mut answers = r
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .expect("reflection")
        .into_inner();
    let listed = match answers
        .message()
        .await
        .expect("answer")
        .and_then(|a| a.message_response)
    {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
        other => panic!("not a service list: {other:?}"),
    };
    for want in [
        "strand.v1.Strand",
        "strand.v1.Admin",
        "strand.v1.Groups",
        "strand.v1.Peer",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(listed.iter().any(|s| s == want), "{want} missing from {listed:?}");
    }

    let mut answers = r
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol("strand.v1.Record".into())))
        .await
        .expect("reflection")
        .into_inner();
    let files = match answers
        .message()
        .await
        .expect("answer")
        .and_then(|a| a.message_response)
    {
        Some(MessageResponse::FileDescriptorResponse(f)) => f.file_descriptor_proto,
        other => panic!("not a file: {other:?}"),
    };
    let file = prost_types::FileDescriptorProto::decode(files[0].as_slice()).expect("a descriptor");
    assert_eq!(file.package(), "strand.v1");
    assert!(file.message_type.iter().any(|m| m.name() == "Record"));
    assert!(file.service.iter().any(|s| s.name() == "Strand"));
    b.stop().await;
}
