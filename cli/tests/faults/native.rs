//! A producer of protobuf-native records (`ProduceRequest.records`), as a
//! client generated from the .proto in another language would send them:
//! the broker chooses each record's partition (murmur2 of its key) and
//! builds the batch. Every send is in the history, so the checker holds
//! broker-built batches to the same contract as the Rust client's: nothing
//! acknowledged is lost, offsets are consistent, a key's records stay in
//! send order.
//!
//! One task per partition, each with its own keys (keys that hash to that
//! partition) and one request in flight, sent to the partition's leader,
//! paced so that it does not starve the Rust producers.
//! Not idempotent: an unknown outcome is retried with the same ids, so its
//! duplicates are counted, as for producer 2.

use std::time::Duration;

use bytes::Bytes;
use strand_checker::{Event, Recorder};
use strand_client::partition_for_key;
use strand_proto::v1::{Acks, MetadataRequest, ProduceRequest, Record, TopicRecords, strand_client::StrandClient};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::{PARTITIONS, TOPIC};
use crate::support::Endpoint;

/// Records per request.
const PER_REQUEST: usize = 4;
/// Pause between requests: the native producers add a steady stream next
/// to the Rust producers without taking the cores from them.
const PACE: Duration = Duration::from_millis(10);
/// Keys per partition.
const KEYS: usize = 2;

/// The native producers, one per partition, as history process `process`.
pub(super) fn start(
    ep: Endpoint,
    process: u64,
    rec: Recorder,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..PARTITIONS)
        .map(|p| tokio::spawn(partition_producer(ep.clone(), process, p, rec.clone(), stop.clone())))
        .collect()
}

/// `KEYS` keys of this process whose murmur2 partition is `partition`.
fn keys_of(process: u64, partition: u32) -> Vec<String> {
    (0..)
        .map(|i| format!("n{process}-{i}"))
        .filter(|k| partition_for_key(k.as_bytes(), PARTITIONS) == partition)
        .take(KEYS)
        .collect()
}

/// The address of `partition`'s leader, asked of any broker that answers.
async fn leader_of(ep: &Endpoint, partition: u32) -> Option<StrandClient<Channel>> {
    let endpoint = |addr: &str| {
        Channel::from_shared(format!("http://{addr}")).ok().map(|e| {
            e.connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(5))
        })
    };
    for addr in ep.bootstrap.split(',') {
        let Some(e) = endpoint(addr) else { continue };
        let Ok(channel) = ep.security.channel(e).await else {
            continue;
        };
        let mut c = StrandClient::new(channel);
        let Ok(md) = c
            .metadata(MetadataRequest {
                topics: vec![TOPIC.into()],
            })
            .await
        else {
            continue;
        };
        let md = md.into_inner();
        let leader = md
            .topics
            .first()
            .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
            .map(|p| p.leader)
            .filter(|l| *l != 0)?;
        let addr = md.brokers.iter().find(|b| b.node_id == leader)?.addr.clone();
        let channel = ep.security.channel(endpoint(&addr)?).await.ok()?;
        return Some(StrandClient::new(channel));
    }
    None
}

async fn partition_producer(
    ep: Endpoint,
    process: u64,
    partition: u32,
    rec: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let keys = keys_of(process, partition);
    let mut seq = 0u64;
    let mut leader: Option<StrandClient<Channel>> = None;
    // Ids whose outcome was unknown: sent again, with the same id.
    let mut retry: Vec<(String, String)> = Vec::new();
    while !*stop.borrow_and_update() {
        let Some(client) = leader.as_mut() else {
            leader = leader_of(&ep, partition).await;
            if leader.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let mut sends = std::mem::take(&mut retry);
        while sends.len() < PER_REQUEST {
            seq += 1;
            let key = keys[(seq as usize) % keys.len()].clone();
            sends.push((format!("n{process}-{partition}-{seq}"), key));
        }
        let records = sends
            .iter()
            .map(|(id, key)| {
                rec.record(Event::Invoke {
                    process,
                    time_ms: rec.now(),
                    id: id.clone(),
                    key: key.clone(),
                    idempotent: false,
                });
                Record {
                    key: Some(Bytes::from(key.clone())),
                    value: Some(Bytes::from(id.clone())),
                    ..Default::default()
                }
            })
            .collect();
        let request = ProduceRequest {
            acks: Acks::All as i32,
            timeout_ms: 3_000,
            records: vec![TopicRecords {
                topic: TOPIC.into(),
                records,
                ..Default::default()
            }],
            ..Default::default()
        };
        let answer = client.produce(request).await;
        let now = rec.now();
        tokio::time::sleep(PACE).await;
        match answer {
            Ok(answer) => {
                let results = answer.into_inner().record_results;
                for ((id, key), r) in sends.into_iter().zip(results) {
                    match r.error {
                        None => rec.record(Event::Ok {
                            process,
                            time_ms: now,
                            id,
                            partition: r.partition,
                            offset: r.offset,
                        }),
                        // Refusals before proposing and outcomes unknown
                        // (a leader that lost its term) look alike from
                        // here: unknown, sent again.
                        Some(e) => {
                            rec.record(Event::Unknown {
                                process,
                                time_ms: now,
                                id: id.clone(),
                                error: e.message,
                            });
                            retry.push((id, key));
                            leader = None;
                        }
                    }
                }
            }
            Err(status) => {
                for (id, key) in sends {
                    rec.record(Event::Unknown {
                        process,
                        time_ms: now,
                        id: id.clone(),
                        error: status.message().to_string(),
                    });
                    retry.push((id, key));
                }
                leader = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
