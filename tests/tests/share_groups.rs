//! Share groups against a real broker (issue "Queues on the log"): workers
//! of one group share the records of one partition, each accepted once; a
//! dead worker's records come back after their lock with a higher delivery
//! count; poison records end in the dead-letter topic with their headers;
//! delayed records wait for their time, also across a restart;
//! acknowledgements of records a member does not hold are refused with a
//! stable reason, and a resent acceptance is answered as done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strand_client::dlq::{HEADER_ATTEMPTS, HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC};
use strand_client::{
    AcknowledgeType, Admin, Consumer, OffsetReset, Producer, ProducerRecord, ShareConsumer, ShareRecord,
};
use strand_proto::v1 as pb;
use strand_proto::v1::share_groups_client::ShareGroupsClient;

use crate::harness::{TestBroker, reason, test_config};

/// A broker with short share-group timers so tests run in seconds.
async fn broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.groups.offsets_partitions = 2;
    config.groups.min_session_timeout_ms = 100;
    config.groups.share_delivery_count_limit = 5;
    TestBroker::start_with(dir, config).await
}

async fn create(b: &TestBroker, topic: &str, partitions: u32) {
    Admin::connect(b.addr())
        .await
        .unwrap()
        .create_topic(topic, partitions, 1, BTreeMap::new())
        .await
        .unwrap();
}

async fn produce(b: &TestBroker, records: Vec<ProducerRecord>) {
    let p = Producer::builder(b.addr()).build().await.unwrap();
    let mut ds = Vec::new();
    for r in records {
        ds.push(p.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    p.close().await.unwrap();
}

fn numbered(topic: &str, n: usize) -> Vec<ProducerRecord> {
    (0..n)
        .map(|i| ProducerRecord::new(topic, Bytes::from(format!("job-{i}"))).partition(0))
        .collect()
}

async fn member(b: &TestBroker, group: &str, topic: &str) -> ShareConsumer {
    let mut c = ShareConsumer::builder(b.addr(), group)
        .offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    c.subscribe(&[topic]);
    c
}

fn value(r: &ShareRecord) -> String {
    String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_workers_share_one_partition_and_every_record_is_accepted_once() {
    let b = broker().await;
    create(&b, "jobs", 1).await;
    produce(&b, numbered("jobs", 1_000)).await;
    let accepted: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..5 {
        let mut c = ShareConsumer::builder(b.addr(), "workers")
            .offset_reset(OffsetReset::Earliest)
            .max_records(10)
            .max_wait(Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        c.subscribe(&["jobs"]);
        let accepted = Arc::clone(&accepted);
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while accepted.lock().unwrap().len() < 1_000 {
                assert!(Instant::now() < deadline, "worker {w} gave up");
                let records = c.poll().await.unwrap();
                for r in &records {
                    assert_eq!(r.delivery_count, 1, "nothing failed, so nothing is redelivered");
                    // The work: a few milliseconds per record.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    c.acknowledge(r, AcknowledgeType::Accept);
                    accepted.lock().unwrap().push((w, r.record.offset));
                }
                c.commit().await.unwrap();
            }
            assert!(c.take_acknowledgement_failures().is_empty());
            c.close().await.unwrap();
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let offsets: BTreeSet<u64> = accepted.iter().map(|(_, o)| *o).collect();
    assert_eq!(accepted.len(), 1_000, "each record accepted exactly once");
    assert_eq!(offsets, (0..1_000).collect::<BTreeSet<u64>>());
    let per_worker: BTreeMap<usize, usize> = accepted.iter().fold(BTreeMap::new(), |mut m, (w, _)| {
        *m.entry(*w).or_default() += 1;
        m
    });
    assert_eq!(per_worker.len(), 5, "every worker got a share: {per_worker:?}");

    let d = Admin::connect(b.addr())
        .await
        .unwrap()
        .describe_share_group("workers")
        .await
        .unwrap();
    let p = &d.partitions[0];
    assert_eq!((p.start_offset, p.in_flight, p.acquired, p.archived), (1_000, 0, 0, 0));
    assert!(d.members.is_empty(), "every worker left: {:?}", d.members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_records_go_to_another_after_the_lock_with_delivery_count_two() {
    let b = broker().await;
    create(&b, "jobs", 1).await;
    produce(&b, numbered("jobs", 10)).await;
    let mut dying = ShareConsumer::builder(b.addr(), "workers")
        .offset_reset(OffsetReset::Earliest)
        .lock_duration(Duration::from_millis(1_500))
        .build()
        .await
        .unwrap();
    dying.subscribe(&["jobs"]);
    let held = dying.poll().await.unwrap();
    assert_eq!(held.len(), 10);
    let lock_deadline = held.iter().map(|r| r.lock_deadline_ms).max().unwrap();
    // Killed: it never acknowledges, never leaves.
    drop(dying);

    let mut other = member(&b, "workers", "jobs").await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 10 {
        assert!(Instant::now() < deadline, "redelivered {} of 10", got.len());
        let records = other.poll().await.unwrap();
        if !records.is_empty() {
            assert!(now_ms() >= lock_deadline, "handed out before the lock ran out");
        }
        got.extend(records);
    }
    assert!(
        got.iter().all(|r| r.delivery_count == 2),
        "{:?}",
        got.iter().map(|r| r.delivery_count).collect::<Vec<_>>()
    );
    let values: Vec<String> = got.iter().map(value).collect();
    assert_eq!(values, (0..10).map(|i| format!("job-{i}")).collect::<Vec<_>>());
    for r in &got {
        other.acknowledge(r, AcknowledgeType::Accept);
    }
    assert!(other.commit().await.unwrap().is_empty());
    assert!(other.poll().await.unwrap().is_empty(), "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_member_releases_what_it_holds_at_once() {
    let b = broker().await;
    create(&b, "jobs", 1).await;
    produce(&b, numbered("jobs", 5)).await;
    let mut first = member(&b, "workers", "jobs").await;
    let held = first.poll().await.unwrap();
    assert_eq!(held.len(), 5);
    first.acknowledge(&held[0], AcknowledgeType::Accept);
    first.close().await.unwrap();
    let mut second = member(&b, "workers", "jobs").await;
    let got = second.poll().await.unwrap();
    assert_eq!(
        got.iter()
            .map(|r| (r.record.offset, r.delivery_count))
            .collect::<Vec<_>>(),
        vec![(1, 2), (2, 2), (3, 2), (4, 2)],
        "the accepted record stays done; the rest come back without waiting for the lock"
    );
}

async fn dead_letters(b: &TestBroker, topic: &str, n: usize) -> Vec<strand_client::ConsumerRecord> {
    let mut c = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if c.assign_all(topic).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no dead-letter topic {topic}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "{} of {n} dead letters", got.len());
        got.extend(c.poll().await.unwrap());
    }
    got
}

fn header<'a>(r: &'a strand_client::ConsumerRecord, key: &str) -> &'a str {
    r.headers
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
        .map(|v| std::str::from_utf8(v).unwrap())
        .unwrap_or_else(|| panic!("no header {key} on {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_lands_in_the_dead_letter_topic_after_the_delivery_limit() {
    let b = broker().await;
    create(&b, "jobs", 1).await;
    produce(
        &b,
        vec![
            ProducerRecord::new("jobs", "poison")
                .key("p")
                .header("trace", "abc")
                .partition(0),
            ProducerRecord::new("jobs", "rejected").partition(0),
        ],
    )
    .await;
    let mut c = member(&b, "workers", "jobs").await;
    // The second record is rejected at once; the first fails five times.
    let mut deliveries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries.len() < 5 {
        assert!(Instant::now() < deadline, "delivered {} times", deliveries.len());
        for r in c.poll().await.unwrap() {
            if value(&r) == "rejected" {
                c.acknowledge(&r, AcknowledgeType::Reject);
            } else {
                deliveries.push(r.delivery_count);
                c.acknowledge(&r, AcknowledgeType::Release);
            }
        }
        assert!(c.commit().await.unwrap().is_empty());
    }
    assert_eq!(deliveries, vec![1, 2, 3, 4, 5], "counts grow by one per delivery");
    let letters = dead_letters(&b, "jobs.dlq", 2).await;
    let by_value: BTreeMap<String, &strand_client::ConsumerRecord> = letters
        .iter()
        .map(|r| (String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned(), r))
        .collect();
    let poison = by_value["poison"];
    assert_eq!(header(poison, HEADER_ATTEMPTS), "5");
    assert_eq!(header(poison, HEADER_TOPIC), "jobs");
    assert_eq!(header(poison, HEADER_PARTITION), "0");
    assert_eq!(header(poison, HEADER_OFFSET), "0");
    assert!(header(poison, HEADER_ERROR).contains("delivered 5 times"));
    assert_eq!(header(poison, "trace"), "abc", "the record's own headers are kept");
    assert_eq!(poison.key.as_deref(), Some(&b"p"[..]));
    let rejected = by_value["rejected"];
    assert_eq!(header(rejected, HEADER_ATTEMPTS), "1");
    assert!(header(rejected, HEADER_ERROR).contains("rejected"));
    // Neither comes back.
    assert!(c.poll().await.unwrap().is_empty());
    let d = Admin::connect(b.addr())
        .await
        .unwrap()
        .describe_share_group("workers")
        .await
        .unwrap();
    assert_eq!((d.partitions[0].archived, d.partitions[0].start_offset), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_record_waits_for_its_time_also_across_a_restart() {
    let b = broker().await;
    create(&b, "jobs", 1).await;
    let delay = Duration::from_secs(3);
    let at = SystemTime::now() + delay;
    let at_ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    produce(
        &b,
        vec![
            ProducerRecord::new("jobs", "later").partition(0).deliver_at(at),
            ProducerRecord::new("jobs", "now").partition(0),
        ],
    )
    .await;
    let mut c = member(&b, "workers", "jobs").await;
    let first = c.poll().await.unwrap();
    assert_eq!(
        first.iter().map(value).collect::<Vec<_>>(),
        vec!["now"],
        "the delayed one waits; the next does not"
    );
    c.acknowledge(&first[0], AcknowledgeType::Accept);
    assert!(c.commit().await.unwrap().is_empty());
    let d = Admin::connect(b.addr())
        .await
        .unwrap()
        .describe_share_group("workers")
        .await
        .unwrap();
    assert_eq!((d.partitions[0].delayed, d.partitions[0].start_offset), (1, 2), "{d:?}");
    drop(c);

    // An ordinary consumer sees it at its offset at once.
    let mut plain = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await
        .unwrap();
    plain.assign_all("jobs").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(plain.poll().await.unwrap());
    }
    assert_eq!(seen[0].offset, 0);
    drop(plain);

    let b = b.restart().await;
    let mut c = member(&b, "workers", "jobs").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        assert!(Instant::now() < deadline, "the delayed record never came");
        let got = c.poll().await.unwrap();
        if !got.is_empty() {
            break got;
        }
    };
    assert!(now_ms() >= at_ms, "handed out {} ms early", at_ms - now_ms());
    assert_eq!(got.iter().map(value).collect::<Vec<_>>(), vec!["later"]);
    assert_eq!(got[0].delivery_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_of_records_not_held_are_refused_with_a_stable_reason() {
    let b = broker().await;
    create(&b, "jobs", 1).await;
    produce(&b, numbered("jobs", 3)).await;
    let mut holder = member(&b, "workers", "jobs").await;
    let held = holder.poll().await.unwrap();
    assert_eq!(held.len(), 3);
    let mut raw = ShareGroupsClient::connect(format!("http://{}", b.addr()))
        .await
        .unwrap();
    let ack = |first, last, kind: pb::AcknowledgeType| pb::ShareAcknowledgement {
        topic: "jobs".into(),
        partition: 0,
        first_offset: first,
        last_offset: last,
        r#type: kind as i32,
    };
    // Another member cannot acknowledge the holder's records, nor records
    // never read, nor a topic that does not exist.
    let answer = raw
        .share_acknowledge(pb::ShareAcknowledgeRequest {
            group: "workers".into(),
            member_id: "intruder".into(),
            acknowledgements: vec![
                ack(0, 0, pb::AcknowledgeType::AcknowledgeAccept),
                ack(50, 60, pb::AcknowledgeType::AcknowledgeReject),
                pb::ShareAcknowledgement {
                    topic: "nope".into(),
                    ..ack(0, 0, pb::AcknowledgeType::AcknowledgeAccept)
                },
                ack(5, 1, pb::AcknowledgeType::AcknowledgeAccept),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = answer
        .results
        .iter()
        .map(|r| r.error.as_ref().map_or(0, |e| e.code))
        .collect();
    let invalid_state = pb::ErrorCode::InvalidRecordState as i32;
    assert_eq!(
        codes,
        vec![
            invalid_state,
            invalid_state,
            invalid_state,
            pb::ErrorCode::InvalidRequest as i32
        ]
    );
    // Malformed requests are refused whole.
    for (what, req) in [
        (
            "empty group",
            pb::ShareFetchRequest {
                member_id: "m".into(),
                topics: vec!["jobs".into()],
                ..Default::default()
            },
        ),
        (
            "no member id",
            pb::ShareFetchRequest {
                group: "workers".into(),
                topics: vec!["jobs".into()],
                ..Default::default()
            },
        ),
        (
            "too many records",
            pb::ShareFetchRequest {
                group: "workers".into(),
                member_id: "m".into(),
                topics: vec!["jobs".into()],
                max_records: 1_000_000,
                ..Default::default()
            },
        ),
        (
            "unknown acknowledgement type",
            pb::ShareFetchRequest {
                group: "workers".into(),
                member_id: "m".into(),
                topics: vec!["jobs".into()],
                acknowledgements: vec![pb::ShareAcknowledgement {
                    r#type: 42,
                    ..ack(0, 0, pb::AcknowledgeType::AcknowledgeAccept)
                }],
                ..Default::default()
            },
        ),
    ] {
        let e = raw.share_fetch(req).await.expect_err(what);
        assert_eq!(reason(&e), "INVALID_REQUEST", "{what}: {e:?}");
    }
    // The holder's own acknowledgement still works: nothing was changed.
    for r in &held {
        holder.acknowledge(r, AcknowledgeType::Accept);
    }
    assert!(holder.commit().await.unwrap().is_empty());
    // Sent again (an answer was lost): done is done, so an acceptance is
    // answered as done, but a release of a done record is refused.
    for r in &held {
        holder.acknowledge(r, AcknowledgeType::Accept);
    }
    assert!(
        holder.commit().await.unwrap().is_empty(),
        "a resent acceptance is idempotent"
    );
    for r in &held {
        holder.acknowledge(r, AcknowledgeType::Release);
    }
    let refused = holder.commit().await.unwrap();
    assert_eq!(refused.len(), 1, "one range of three: {refused:?}");
    assert_eq!(refused[0].error.reason(), "INVALID_RECORD_STATE");
    assert!(holder.poll().await.unwrap().is_empty(), "nothing was released");
}
