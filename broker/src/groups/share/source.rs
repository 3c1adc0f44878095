//! Reading a topic partition, and writing to its dead-letter topic, from
//! wherever its leader is.
//!
//! A share group's coordinator (the leader of the group's
//! `__consumer_offsets` partition) hands out records of partitions it
//! usually does not lead. It reads them from their leader with the public
//! `Fetch` (protobuf records, no wait) and writes dead letters with the
//! public `Produce` (`acks=all`), over one lazily connected channel per
//! broker. The leader may be this broker: the call then goes over loopback,
//! which keeps one path for every case (a share fetch is not the log's hot
//! path).
//!
//! Invariants: only the leader answers (`leader_only`), and only with
//! records below its high watermark, so a record handed out is committed
//! and no failover can take it back; what counts as deleted by retention
//! is the leader's first offset, not a follower's (each replica trims its
//! own copy).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strand_proto::v1 as pb;
use strand_proto::v1::strand_client::StrandClient;
use tonic::transport::Channel;

use crate::error::{BrokerError, Result};
use crate::node::Node;
use crate::security::Security;
use crate::topic::TopicUuid;

/// How many leader hints a read follows before giving up.
const HOPS: usize = 3;

/// What a read found.
#[derive(Debug)]
pub(crate) enum Read {
    /// Records at or after the offset asked for (possibly none), and where
    /// the partition stands.
    Records {
        /// Decoded records, in offset order.
        records: Vec<pb::Record>,
        /// The offset to read next.
        next_offset: u64,
        /// The partition's high watermark.
        high_watermark: u64,
        /// Its first stored offset.
        log_start: u64,
    },
    /// The offset is not stored (retention deleted it, or past the end).
    OutOfRange {
        /// First stored offset.
        earliest: u64,
        /// Log end.
        latest: u64,
    },
}

/// A failed call: the broker's own reason if it gave one, else (it is down
/// or unreachable) `NOT_LEADER`, which the member retries.
fn unreachable(topic: &str, partition: u32, s: tonic::Status) -> BrokerError {
    if s.metadata().contains_key(crate::error::REASON_KEY) {
        return s.into();
    }
    tracing::debug!(topic, partition, error = %s, "partition leader unreachable");
    BrokerError::NotLeader {
        topic: topic.into(),
        partition,
        leader_addr: None,
    }
}

/// Channels to the brokers that lead the partitions share groups read.
pub(crate) struct PartitionSource {
    node: Arc<Node>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl PartitionSource {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        PartitionSource {
            node,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, addr: &str) -> Result<StrandClient<Channel>> {
        let max = self.node.config().limits.max_message_bytes;
        let mut channels = self.channels.lock();
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Security::endpoint(addr)?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10));
                let c = self.node.security().dialer().connect_lazy(endpoint);
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(StrandClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max))
    }

    /// The address of the broker that leads (or, as a hint, hosts) a
    /// partition.
    fn leader_addr(&self, topic: &str, partition: u32) -> Result<String> {
        let unknown = || no_leader(topic, partition);
        match self.node.partition(topic, partition) {
            Ok(p) => p.leader().and_then(|l| self.node.addr_of(l)).ok_or_else(unknown),
            Err(BrokerError::NotLeader { leader_addr, .. }) => leader_addr.ok_or_else(unknown),
            Err(e) => Err(e),
        }
    }

    /// Reads records of `topic`/`partition` (id `topic_id`) from `offset`,
    /// about `max_bytes` of them.
    pub(crate) async fn read(
        &self,
        topic: &str,
        topic_id: TopicUuid,
        partition: u32,
        offset: u64,
        max_bytes: u32,
    ) -> Result<Read> {
        let mut addr = self.leader_addr(topic, partition)?;
        for _ in 0..HOPS {
            let req = pb::FetchRequest {
                partitions: vec![pb::FetchPartition {
                    topic: topic.into(),
                    partition,
                    offset,
                    max_bytes,
                    topic_id: topic_id.to_string(),
                }],
                max_wait_ms: 0,
                max_bytes,
                record_format: pb::RecordFormat::Protobuf as i32,
                // Replicas apply retention to their own copies: only the
                // leader's first offset decides what was deleted.
                leader_only: true,
                ..Default::default()
            };
            let answer = self
                .client(&addr)?
                .fetch(req)
                .await
                .map_err(|s| unreachable(topic, partition, s))?
                .into_inner();
            let Some(d) = answer.partitions.into_iter().next() else {
                return Err(BrokerError::InvalidRequest {
                    reason: format!("{addr} answered a fetch of {topic}/{partition} with no partition"),
                });
            };
            if let Some(e) = d
                .error
                .as_ref()
                .filter(|e| e.code == pb::ErrorCode::OffsetOutOfRange as i32)
            {
                return Ok(Read::OutOfRange {
                    earliest: e.earliest,
                    latest: e.latest,
                });
            }
            match step(d.error) {
                Step::Done => {
                    return Ok(Read::Records {
                        records: d.decoded_records,
                        next_offset: d.next_offset,
                        high_watermark: d.high_watermark,
                        log_start: d.log_start_offset,
                    });
                }
                Step::Redirect(to) => addr = to,
                Step::Failed(e) => return Err(e),
            }
        }
        Err(no_leader(topic, partition))
    }

    /// Appends `records` to `topic`/`partition` with `acks=all`.
    pub(crate) async fn produce(&self, topic: &str, partition: u32, records: Vec<pb::Record>) -> Result<()> {
        let mut addr = self.leader_addr(topic, partition)?;
        for _ in 0..HOPS {
            let req = pb::ProduceRequest {
                acks: pb::Acks::All as i32,
                records: vec![pb::TopicRecords {
                    topic: topic.into(),
                    topic_id: String::new(),
                    records: records
                        .iter()
                        .cloned()
                        .map(|mut r| {
                            r.partition = Some(partition);
                            r.offset = 0;
                            r
                        })
                        .collect(),
                }],
                ..Default::default()
            };
            let answer = self
                .client(&addr)?
                .produce(req)
                .await
                .map_err(|s| unreachable(topic, partition, s))?
                .into_inner();
            match step(answer.record_results.into_iter().find_map(|r| r.error)) {
                Step::Done => return Ok(()),
                Step::Redirect(to) => addr = to,
                Step::Failed(e) => return Err(e),
            }
        }
        Err(no_leader(topic, partition))
    }
}

/// What a partition's answer means for the call.
enum Step {
    /// It succeeded.
    Done,
    /// Another broker leads the partition: ask it.
    Redirect(String),
    /// It failed with the broker's reason.
    Failed(BrokerError),
}

fn step(error: Option<pb::Error>) -> Step {
    match error {
        None => Step::Done,
        Some(e) if e.code == pb::ErrorCode::None as i32 => Step::Done,
        Some(e) if e.code == pb::ErrorCode::NotLeader as i32 && !e.leader_addr.is_empty() => {
            Step::Redirect(e.leader_addr)
        }
        Some(e) => Step::Failed(BrokerError::Forwarded {
            code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::StorageFailed),
            message: e.message,
        }),
    }
}

fn no_leader(topic: &str, partition: u32) -> BrokerError {
    BrokerError::NotLeader {
        topic: topic.into(),
        partition,
        leader_addr: None,
    }
}
