//! Share groups on three brokers: the state of a share group lives in the
//! replicated `__consumer_offsets` topic, so killing the broker that
//! coordinates it loses no confirmed acknowledgement, redelivers only what
//! was in flight (with its delivery count), and keeps every pending delay.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strand_client::proto::FindCoordinatorRequest;
use strand_client::proto::groups_client::GroupsClient;
use strand_client::{AcknowledgeType, OffsetReset, Producer, ProducerRecord, ShareConsumer, ShareRecord};

use super::create;
use crate::support::Cluster;

const GROUP: &str = "billing-workers";

async fn member(c: &Cluster, lock: Duration) -> ShareConsumer {
    let mut m = ShareConsumer::builder(c.bootstrap(), GROUP)
        .offset_reset(OffsetReset::Earliest)
        .max_records(150)
        .max_wait(Duration::from_millis(200))
        .lock_duration(lock)
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("share consumer");
    m.subscribe(&["invoices"]);
    m
}

fn value(r: &ShareRecord) -> String {
    String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_and_delays_survive_killing_the_coordinator() {
    let mut c = Cluster::start_with(3, "[groups]\nmin_session_timeout_ms = 500\n");
    c.wait_ready().await;
    create(&c, "invoices", 1).await;
    let p = Producer::builder(c.bootstrap()).build().await.expect("producer");
    let at = SystemTime::now() + Duration::from_secs(12);
    let at_ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut ds = vec![
        p.send(ProducerRecord::new("invoices", "delayed").deliver_at(at))
            .await
            .expect("send"),
    ];
    for i in 0..200 {
        ds.push(
            p.send(ProducerRecord::new("invoices", Bytes::from(format!("inv-{i}"))))
                .await
                .expect("send"),
        );
    }
    for d in ds {
        d.await.expect("acknowledged");
    }
    p.close().await.expect("close");

    // A member takes 150, accepts 100 of them (confirmed), and dies holding
    // the other 50.
    let mut first = member(&c, Duration::from_secs(3)).await;
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while held.len() < 150 {
        assert!(Instant::now() < deadline, "acquired {} of 150", held.len());
        held.extend(first.poll().await.expect("poll"));
    }
    assert!(
        held.iter().all(|r| value(r) != "delayed"),
        "the delayed record was handed out early"
    );
    for r in &held[..100] {
        first.acknowledge(r, AcknowledgeType::Accept);
    }
    assert!(
        first.commit().await.expect("commit").is_empty(),
        "every acceptance confirmed"
    );
    let accepted: BTreeSet<u64> = held[..100].iter().map(|r| r.record.offset).collect();
    let in_flight: BTreeSet<u64> = held[100..].iter().map(|r| r.record.offset).collect();
    drop(first);

    let mut g = GroupsClient::connect(format!("http://{}", c.addr(1)))
        .await
        .expect("connect");
    let coordinator = g
        .find_coordinator(FindCoordinatorRequest { group: GROUP.into() })
        .await
        .expect("find coordinator")
        .into_inner()
        .node_id;
    c.kill(coordinator);

    // Another broker takes the group over from the replicated state.
    let mut second = member(&c, Duration::from_secs(30)).await;
    let mut got: Vec<ShareRecord> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 101 {
        assert!(Instant::now() < deadline, "got {} of 101 after the failover", got.len());
        match second.poll().await {
            Ok(records) => {
                for r in &records {
                    if value(r) == "delayed" {
                        assert!(
                            now_ms() >= at_ms,
                            "the delayed record came {} ms early",
                            at_ms - now_ms()
                        );
                    }
                    second.acknowledge(r, AcknowledgeType::Accept);
                }
                got.extend(records);
            }
            Err(e) => eprintln!("poll during the failover: {e}"),
        }
    }
    let offsets: Vec<u64> = got.iter().map(|r| r.record.offset).collect();
    let unique: BTreeSet<u64> = offsets.iter().copied().collect();
    assert_eq!(
        unique.len(),
        offsets.len(),
        "nothing delivered twice after the failover"
    );
    assert!(unique.is_disjoint(&accepted), "confirmed acceptances were lost");
    for r in &got {
        let want = if in_flight.contains(&r.record.offset) { 2 } else { 1 };
        assert_eq!(r.delivery_count, want, "{}@{}", value(r), r.record.offset);
    }
    assert!(got.iter().any(|r| value(r) == "delayed"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match second.commit().await {
            Ok(refused) => {
                assert!(refused.is_empty(), "{refused:?}");
                break;
            }
            Err(e) if Instant::now() < deadline => eprintln!("commit: {e}"),
            Err(e) => panic!("commit: {e}"),
        }
    }
    assert!(second.poll().await.expect("poll").is_empty(), "every record is done");
    second.close().await.expect("close");
}
