//! Topic ids against a real broker (issue "A recreated topic is a new
//! topic"): requests that name a topic id are refused with
//! `UNKNOWN_TOPIC_ID` when the topic by that name has another (a malformed
//! id is `INVALID_REQUEST`), a consumer that keeps running across a delete
//! and re-create never applies its old position to the new topic, and a
//! producer that keeps running writes to the new topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::{Admin, Consumer, OffsetReset, Producer, ProducerRecord};
use strand_proto::v1::groups_client::GroupsClient;
use strand_proto::v1::list_offsets_request::Spec;
use strand_proto::v1::{
    CommitOffsetsRequest, ErrorCode, FetchPartition, FetchRequest, ListOffsetsRequest, OffsetCommit, PartitionBatch,
    ProduceRequest,
};

use crate::harness::{TestBroker, batch, reason};

async fn recreate(admin: &Admin, topic: &str) -> String {
    admin.delete_topic(topic).await.expect("delete");
    admin
        .create_topic(topic, 1, 1, BTreeMap::new())
        .await
        .expect("create again")
        .topic_id
}

#[tokio::test]
async fn requests_naming_another_topic_id_are_refused() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    let old = admin.create_topic("t", 1, 1, BTreeMap::new()).await.unwrap().topic_id;
    let new = recreate(&admin, "t").await;
    assert_ne!(old, new);
    let mut raw = b.raw().await;
    let produce = |topic_id: &str| ProduceRequest {
        batches: vec![PartitionBatch {
            topic: "t".into(),
            partition: 0,
            batch: batch(&[("k", "v")], strand_storage::now_ms()),
            topic_id: topic_id.into(),
        }],
        ..Default::default()
    };
    let r = raw.produce(produce(&old)).await.unwrap().into_inner();
    let e = r.results[0].error.as_ref().expect("refused");
    assert_eq!(e.code, ErrorCode::UnknownTopicId as i32, "{e:?}");
    let r = raw.produce(produce(&new)).await.unwrap().into_inner();
    assert!(r.results[0].error.is_none(), "the current id is accepted");
    let r = raw.produce(produce("")).await.unwrap().into_inner();
    assert!(r.results[0].error.is_none(), "no id: the topic by that name");
    let bad = raw.produce(produce("not-a-uuid")).await.expect_err("malformed id");
    assert_eq!(reason(&bad), "INVALID_REQUEST");

    let fetch = |topic_id: &str| FetchRequest {
        partitions: vec![FetchPartition {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            topic_id: topic_id.into(),
        }],
        max_wait_ms: 0,
        max_bytes: 0,
        record_format: 0,
        ..Default::default()
    };
    let r = raw.fetch(fetch(&old)).await.unwrap().into_inner();
    let e = r.partitions[0].error.as_ref().expect("refused");
    assert_eq!(e.code, ErrorCode::UnknownTopicId as i32);
    assert!(
        r.partitions[0].records.is_empty(),
        "nothing of the new topic for the old id"
    );
    let r = raw.fetch(fetch(&new)).await.unwrap().into_inner();
    assert!(r.partitions[0].error.is_none() && !r.partitions[0].records.is_empty());

    let list = |topic_id: &str| ListOffsetsRequest {
        topic: "t".into(),
        partition: 0,
        spec: Some(Spec::Latest(true)),
        topic_id: topic_id.into(),
    };
    let e = raw.list_offsets(list(&old)).await.expect_err("old id");
    assert_eq!(reason(&e), "UNKNOWN_TOPIC_ID");
    assert_eq!(raw.list_offsets(list(&new)).await.unwrap().into_inner().offset, 2);

    // Offsets are committed for the topic they name, or not at all.
    let mut groups = GroupsClient::connect(format!("http://{}", b.addr())).await.unwrap();
    let commit = |topic_id: &str| CommitOffsetsRequest {
        group: "g".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![OffsetCommit {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            metadata: String::new(),
            topic_id: topic_id.into(),
        }],
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match groups.commit_offsets(commit(&old)).await {
            Err(e) if reason(&e) == "NOT_COORDINATOR" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => break other,
        }
    };
    assert_eq!(reason(&refused.expect_err("old id")), "UNKNOWN_TOPIC_ID");
    let ok = groups.commit_offsets(commit(&new)).await.unwrap().into_inner();
    assert_eq!(ok.committed[0].topic_id, new, "stored for the id it names");
}

/// A consumer reading `t` when it is deleted and created again (with more
/// records than it had read, so its old position exists in the new topic)
/// is told once (`UNKNOWN_TOPIC_ID`) and then reads the new topic from its
/// reset policy: never from the old position.
#[tokio::test]
async fn a_running_consumer_never_reads_a_recreated_topic_from_its_old_position() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    admin.create_topic("t", 1, 1, BTreeMap::new()).await.unwrap();
    let producer = Producer::builder(b.addr()).build().await.unwrap();
    for i in 0..10 {
        producer
            .send_and_wait(ProducerRecord::new("t", Bytes::from(format!("old-{i}"))))
            .await
            .unwrap();
    }
    let mut consumer = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await
        .unwrap();
    consumer.assign("t", &[0]).await.unwrap();
    let mut old = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.len() < 10 {
        assert!(Instant::now() < deadline, "old records not read");
        old.extend(consumer.poll().await.unwrap());
    }
    recreate(&admin, "t").await;
    // The producer keeps running: its next record goes to the new topic.
    for i in 0..15 {
        producer
            .send_and_wait(ProducerRecord::new("t", Bytes::from(format!("new-{i}"))))
            .await
            .expect("a running producer writes to the new topic");
    }
    let mut new: Vec<String> = Vec::new();
    let mut told = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while new.len() < 15 {
        assert!(Instant::now() < deadline, "new topic not read: {new:?}");
        match consumer.poll().await {
            Ok(records) => new.extend(
                records
                    .iter()
                    .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()),
            ),
            Err(e) if e.reason() == "UNKNOWN_TOPIC_ID" => told = true,
            Err(e) if e.reason() == "UNKNOWN_TOPIC" || e.is_retriable() => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(told, "the consumer was told its topic was created again");
    let want: Vec<String> = (0..15).map(|i| format!("new-{i}")).collect();
    assert_eq!(new, want, "the new topic from its start, not from old position 10");
}
