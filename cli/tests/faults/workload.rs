//! The fault suite's workload: producers whose every send is in the
//! history, a consumer group that records what it processed and commits, an
//! observer of the group's committed offsets, and the members of a share
//! group (`share`).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use strand_checker::{Event, Recorder};
use strand_client::{OffsetReset, ProducerRecord, RebalanceEvent};
use tokio::sync::watch;

use super::{GROUP, TOPIC};
use crate::support::{Cluster, Endpoint};

/// A producer process: keyed records whose values are unique ids, acks=all,
/// at most 32 in flight.
///
/// Idempotent (the default producer): the producer retries on its own, up
/// to the delivery timeout, and the workload never sends an id twice, so
/// any second copy of an id is a duplicate the checker flags. Without
/// idempotence: retries are the workload's, with the same id, so that every
/// retried send is in the history (the producer's own retries would be
/// invisible), and the duplicates they make are counted.
pub(super) async fn producer(
    ep: Endpoint,
    process: u64,
    idempotent: bool,
    rec: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let builder = ep
        .producer()
        .request_timeout(Duration::from_secs(3))
        .delivery_timeout(Duration::from_secs(10));
    let builder = if idempotent {
        builder
    } else {
        builder.enable_idempotence(false).retries(0)
    };
    let p = builder.build().await.expect("producer");
    let mut inflight = FuturesUnordered::new();
    let mut retries: Vec<(String, String)> = Vec::new();
    let mut seq = 0u64;
    loop {
        if *stop.borrow_and_update() {
            // Sends still to retry stay unknown (as recorded); what is in
            // flight is settled below.
            break;
        }
        while inflight.len() < 32 && !*stop.borrow() {
            let (id, key) = match retries.pop() {
                Some(r) => r,
                None => {
                    seq += 1;
                    (format!("p{process}-{seq}"), format!("k{process}-{}", seq % 4))
                }
            };
            rec.record(Event::Invoke {
                process,
                time_ms: rec.now(),
                id: id.clone(),
                key: key.clone(),
                idempotent,
            });
            let r = ProducerRecord::new(TOPIC, Bytes::from(id.clone())).key(Bytes::from(key.clone()));
            match p.send(r).await {
                Ok(d) => inflight.push(async move { (id, key, d.await) }),
                Err(e) => rec.record(Event::Fail {
                    process,
                    time_ms: rec.now(),
                    id,
                    error: e.to_string(),
                }),
            }
        }
        let Some((id, key, result)) = inflight.next().await else {
            continue;
        };
        if record_outcome(&rec, process, &id, result) && !idempotent && !*stop.borrow() {
            retries.push((id, key));
        }
    }
    while let Some((id, _, result)) = inflight.next().await {
        record_outcome(&rec, process, &id, result);
    }
    let _ = p.close().await;
}

/// Records how a send ended; true when its outcome is unknown (a retry with
/// the same id may follow).
pub(super) fn record_outcome(
    rec: &Recorder,
    process: u64,
    id: &str,
    result: strand_client::Result<strand_client::RecordMetadata>,
) -> bool {
    let (id, time_ms) = (id.to_string(), rec.now());
    match result {
        Ok(meta) => {
            rec.record(Event::Ok {
                process,
                time_ms,
                id,
                partition: meta.partition,
                offset: meta.offset.unwrap_or(u64::MAX),
            });
            false
        }
        Err(e) if e.is_retriable() => {
            rec.record(Event::Unknown {
                process,
                time_ms,
                id,
                error: e.to_string(),
            });
            true
        }
        Err(e) => {
            rec.record(Event::Fail {
                process,
                time_ms,
                id,
                error: e.to_string(),
            });
            false
        }
    }
}

/// A group member: polls, records what it processed, commits after
/// processing.
pub(super) async fn consumer(ep: Endpoint, id: u64, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let r2 = rec.clone();
    let mut c = ep
        .consumer()
        .group(GROUP)
        .session_timeout(Duration::from_secs(3))
        .auto_commit(None)
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(3))
        .on_rebalance(move |e| {
            let (tps, assigned) = match e {
                RebalanceEvent::Assigned(t) => (t, true),
                RebalanceEvent::Revoked(t) | RebalanceEvent::Lost(t) => (t, false),
            };
            for (_, p) in tps {
                let time_ms = r2.now();
                r2.record(if assigned {
                    Event::Assigned {
                        consumer: id,
                        time_ms,
                        partition: *p,
                    }
                } else {
                    Event::Revoked {
                        consumer: id,
                        time_ms,
                        partition: *p,
                    }
                });
            }
        })
        .build()
        .await
        .expect("consumer");
    c.subscribe(&[TOPIC]).await.expect("subscribe");
    while !*stop.borrow_and_update() {
        let records = match c.poll().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("consumer {id}: poll failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for r in &records {
            rec.record(Event::Poll {
                consumer: id,
                time_ms: rec.now(),
                partition: r.partition,
                offset: r.offset,
                id: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            });
        }
        if !records.is_empty()
            && let Err(e) = c.commit().await
        {
            eprintln!("consumer {id}: commit failed: {e}");
        }
    }
    let _ = c.close().await;
}

/// Watches the group's committed offsets as the coordinator reports them.
pub(super) async fn commit_observer(ep: Endpoint, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let Ok(a) = ep.admin().await else { return };
    while !*stop.borrow_and_update() {
        if let Ok(offsets) = a.group_offsets(GROUP).await {
            let time_ms = rec.now();
            for (_, partition, offset) in offsets {
                rec.record(Event::Commit {
                    consumer: 0,
                    time_ms,
                    group: GROUP.into(),
                    partition,
                    offset,
                    reset: false,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) struct Workload {
    stop: watch::Sender<bool>,
    tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
}

pub(super) fn start_workload(c: &Cluster, rec: &Recorder) -> Workload {
    let (stop, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // Process 1 is idempotent, process 2 is not.
    for p in 1..=2 {
        let t = tokio::spawn(producer(c.endpoint(), p, p == 1, rec.clone(), rx.clone()));
        tasks.push((format!("producer {p}"), t));
    }
    // Process 3 sends protobuf-native records (the broker builds the batch).
    for (i, t) in super::native::start(c.endpoint(), 3, rec.clone(), rx.clone())
        .into_iter()
        .enumerate()
    {
        tasks.push((format!("native producer {i}"), t));
    }
    for id in 1..=2 {
        let t = tokio::spawn(consumer(c.endpoint(), id, rec.clone(), rx.clone()));
        tasks.push((format!("consumer {id}"), t));
    }
    // Processes 11 and 12 are members of a share group.
    for id in 11..=12 {
        let t = tokio::spawn(super::share::worker(c.endpoint(), id, rec.clone(), rx.clone()));
        tasks.push((format!("share member {id}"), t));
    }
    let t = tokio::spawn(commit_observer(c.endpoint(), rec.clone(), rx));
    tasks.push(("commit observer".to_string(), t));
    Workload { stop, tasks }
}

impl Workload {
    pub(super) async fn finish(self) {
        let _ = self.stop.send(true);
        for (name, t) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(60), t).await {
                Ok(r) => r.unwrap_or_else(|e| panic!("{name} failed: {e}")),
                Err(_) => panic!("{name} did not stop within 60 s"),
            }
        }
    }
}

/// Padding carried by each backlog record (in a header, so the value stays
/// a short unique id the checker can follow).
const BACKLOG_RECORD_BYTES: usize = 16 << 10;

/// Writes `bytes` of backlog into `partition` as producer process
/// `process`: records of 16 KiB whose values are unique ids (`b-<n>`), each
/// send in the history like the workload's, by an idempotent producer (its
/// own retries never store a record twice), sent again with the same id
/// only when its delivery timed out. Returns once every record is
/// acknowledged. Batches stay within `batch_bytes` (at most the brokers'
/// `max_batch_bytes`, or they are refused as too large).
pub(super) async fn write_backlog(
    ep: Endpoint,
    process: u64,
    partition: u32,
    bytes: u64,
    batch_bytes: usize,
    rec: &Recorder,
) {
    let p = ep
        .producer()
        .request_timeout(Duration::from_secs(10))
        .delivery_timeout(Duration::from_secs(30))
        .batch_bytes(batch_bytes)
        .build()
        .await
        .expect("backlog producer");
    let pad = Bytes::from(vec![b'.'; BACKLOG_RECORD_BYTES]);
    let total = bytes / BACKLOG_RECORD_BYTES as u64;
    let mut todo: Vec<String> = (0..total).rev().map(|i| format!("b{process}-{i}")).collect();
    let mut inflight = FuturesUnordered::new();
    let key = format!("backlog-{process}");
    while !todo.is_empty() || !inflight.is_empty() {
        while inflight.len() < 64 {
            let Some(id) = todo.pop() else { break };
            rec.record(Event::Invoke {
                process,
                time_ms: rec.now(),
                id: id.clone(),
                key: key.clone(),
                idempotent: true,
            });
            let r = ProducerRecord::new(TOPIC, Bytes::from(id.clone()))
                .key(Bytes::from(key.clone()))
                .partition(partition)
                .header("pad", pad.clone());
            match p.send(r).await {
                Ok(d) => inflight.push(async move { (id, d.await) }),
                Err(e) => panic!("backlog send refused: {e}"),
            }
        }
        if let Some((id, result)) = inflight.next().await
            && record_outcome(rec, process, &id, result)
        {
            todo.push(id);
        }
    }
    let _ = p.close().await;
}

/// Sends every kind of malformed batch to every partition, over and over,
/// until `stop`; each must be refused with `CORRUPT_BATCH`. Returns how
/// many were sent; panics at the first one that was not refused that way.
pub(super) async fn malformed_producer(
    addr: String,
    security: strand_client::Security,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    use strand_client::proto::{Acks, ErrorCode, PartitionBatch, ProduceRequest, strand_client::StrandClient};
    let mut sent = 0;
    let mut client: Option<StrandClient<tonic::transport::Channel>> = None;
    while !*stop.borrow_and_update() {
        let Some(c) = client.as_mut() else {
            client = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
                Ok(e) => security.channel(e).await.ok().map(StrandClient::new),
                Err(_) => None,
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for (what, bytes, reason) in strand_checker::malformed::every_kind(strand_storage::now_ms()) {
            let req = ProduceRequest {
                acks: Acks::All as i32,
                timeout_ms: 0,
                batches: (0..super::PARTITIONS)
                    .map(|partition| PartitionBatch {
                        topic: TOPIC.into(),
                        partition,
                        batch: bytes.clone().into(),
                        topic_id: String::new(),
                    })
                    .collect(),
                records: Vec::new(),
            };
            match c.produce(req).await {
                Ok(resp) => {
                    for r in resp.into_inner().results {
                        let e = r
                            .error
                            .unwrap_or_else(|| panic!("malformed batch ({what}) was accepted"));
                        // A partition between leaders answers NOT_LEADER
                        // first; every answer that judged the batch refused it.
                        if e.code != ErrorCode::NotLeader as i32 {
                            assert_eq!(e.code, ErrorCode::CorruptBatch as i32, "{what}: {}", e.message);
                            assert!(e.message.contains(reason), "{what}: {}", e.message);
                        }
                    }
                    sent += 1;
                }
                // The broker restarted or is unreachable: reconnect.
                Err(_) => {
                    client = None;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent
}
