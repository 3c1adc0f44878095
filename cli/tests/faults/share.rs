//! The fault suite's share-group workload (issue "Queues on the log"): two
//! members of one share group accept every record of the workload's topic
//! while the nemesis runs, each delivery and each acceptance in the
//! history; after healing, a fresh member drains what is left (records held
//! by members that died come back when their locks run out) and the
//! dead-letter topic is read. `strand-checker` then checks that no record
//! was handed out after its acceptance was confirmed, that delivery counts
//! grow with every delivery, and that every record of the final log was
//! accepted or archived.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strand_checker::{Event, Recorder};
use strand_client::{AcknowledgeType, AcknowledgementFailure, OffsetReset, ShareConsumer, ShareRecord};
use tokio::sync::watch;

use super::TOPIC;
use crate::support::{Cluster, Endpoint};

const SHARE_GROUP: &str = "fault-workers";

/// Lock of the workload's members: short, so records of a member that
/// died come back within the drain.
const LOCK: Duration = Duration::from_secs(3);

async fn member(ep: &Endpoint, lock: Duration, max_records: u32) -> Option<ShareConsumer> {
    let mut c = ep
        .share_consumer(SHARE_GROUP)
        .offset_reset(OffsetReset::Earliest)
        .max_records(max_records)
        .max_wait(Duration::from_millis(200))
        .lock_duration(lock)
        .session_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(3))
        .build()
        .await
        .ok()?;
    c.subscribe(&[TOPIC]);
    Some(c)
}

fn refused(failures: &[AcknowledgementFailure], r: &ShareRecord) -> bool {
    failures
        .iter()
        .any(|f| f.partition == r.record.partition && (f.first_offset..=f.last_offset).contains(&r.record.offset))
}

fn acked(rec: &Recorder, id: u64, r: &ShareRecord, confirmed: bool) {
    rec.record(Event::ShareAcked {
        consumer: id,
        time_ms: rec.now(),
        partition: r.record.partition,
        offset: r.record.offset,
        confirmed,
    });
}

/// Polls, records every delivery, accepts everything and commits; records
/// each acceptance as confirmed, or as of unknown outcome when an earlier
/// attempt of the commit failed (a refusal may then mean it took effect).
/// Returns false if told to stop before the commit settled.
async fn process(c: &mut ShareConsumer, id: u64, rec: &Recorder, stop: Option<&watch::Receiver<bool>>) -> bool {
    let records = match c.poll().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("share member {id}: poll failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            return true;
        }
    };
    if records.is_empty() {
        return true;
    }
    for r in &records {
        rec.record(Event::ShareAcquired {
            consumer: id,
            time_ms: rec.now(),
            partition: r.record.partition,
            offset: r.record.offset,
            delivery_count: r.delivery_count,
        });
        c.acknowledge(r, AcknowledgeType::Accept);
    }
    let mut failed_before = false;
    loop {
        match c.commit().await {
            Ok(failures) => {
                for r in &records {
                    let refused = refused(&failures, r);
                    if !refused || failed_before {
                        acked(rec, id, r, !refused && !failed_before);
                    }
                }
                return true;
            }
            Err(e) => {
                failed_before = true;
                if stop.is_some_and(|s| *s.borrow()) {
                    for r in &records {
                        acked(rec, id, r, false);
                    }
                    return false;
                }
                eprintln!("share member {id}: commit failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A member of the share group until `stop`.
pub(super) async fn worker(ep: Endpoint, id: u64, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let mut c = loop {
        if let Some(c) = member(&ep, LOCK, 50).await {
            break c;
        }
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    while !*stop.borrow_and_update() {
        if !process(&mut c, id, &rec, Some(&stop)).await {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
}

/// After healing: a fresh member accepts what is left until the group's
/// start offset of every partition reaches `ends` with nothing in flight,
/// then the group's start offsets and the dead-letter topic's records go
/// into the history.
pub(super) async fn drain(c: &Cluster, rec: &Recorder, ends: &[u64]) {
    const DRAINER: u64 = 100;
    let a = c.endpoint().admin().await.expect("admin");
    let mut m = member(&c.endpoint(), Duration::from_secs(30), 500)
        .await
        .expect("drain member");
    // The catch-up nemeses leave a backlog of 1 GiB.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut starts: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        process(&mut m, DRAINER, rec, None).await;
        if let Ok(d) = a.describe_share_group(SHARE_GROUP).await {
            starts = d
                .partitions
                .iter()
                .filter(|p| p.topic == TOPIC)
                .map(|p| (p.partition, p.start_offset))
                .collect();
            let done = ends
                .iter()
                .enumerate()
                .all(|(p, end)| starts.get(&(p as u32)).is_some_and(|s| s >= end))
                && d.partitions.iter().all(|p| p.in_flight == 0);
            if done {
                break;
            }
        }
        if Instant::now() >= deadline {
            eprintln!("share drain: gave up at {starts:?}, log ends {ends:?}");
            break;
        }
    }
    let _ = m.close().await;
    for (partition, start_offset) in starts {
        rec.record(Event::ShareEnd {
            partition,
            start_offset,
        });
    }
    record_dead_letters(c, rec).await;
}

/// Every dead letter of the workload's topic, as `ShareArchived`.
async fn record_dead_letters(c: &Cluster, rec: &Recorder) {
    let dlq = format!("{TOPIC}.dlq");
    let a = c.endpoint().admin().await.expect("admin");
    let Ok(t) = a.describe_topic(&dlq).await else {
        return;
    };
    let mut d = c
        .endpoint()
        .consumer()
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(200))
        .build()
        .await
        .expect("dead-letter consumer");
    d.assign_all(&dlq).await.expect("assign");
    for p in 0..t.partitions.len() as u32 {
        let end = a
            .list_offsets(&dlq, p, strand_client::OffsetSpec::Latest)
            .await
            .map_or(0, |o| o.offset);
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.position(&dlq, p).unwrap_or(0) < end && Instant::now() < deadline {
            for r in d.poll().await.unwrap_or_default() {
                let header = |k: &str| {
                    r.headers
                        .iter()
                        .find(|(key, _)| key == k)
                        .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok()?.parse::<u64>().ok())
                };
                if let (Some(partition), Some(offset)) = (
                    header(strand_client::dlq::HEADER_PARTITION),
                    header(strand_client::dlq::HEADER_OFFSET),
                ) {
                    rec.record(Event::ShareArchived {
                        partition: partition as u32,
                        offset,
                    });
                }
            }
        }
    }
}
