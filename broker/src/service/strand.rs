//! The `Strand` service: produce, fetch, subscribe, list offsets, metadata.
//! Protobuf in, domain calls (`data_path`), protobuf out; records either as
//! whole batches (the fast path) or as protobuf records (`super::records`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use strand_cluster::NodeId;
use strand_proto::v1 as pb;
use strand_storage::Offset;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::access::{self, caller};
use crate::controller::TopicState;
use crate::controller::acl::{AclOperation as Op, ResourceType};
use crate::data_path::fetch::{self, DEFAULT_PARTITION_MAX_BYTES, FetchPartition, PartitionRead};
use crate::data_path::fetch_session::FetchSessions;
use crate::data_path::offsets::{OffsetSpec, list_offsets};
use crate::data_path::produce::{self, Acks, ProduceBatch};
use crate::error::{BrokerError, Result};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::security::quota::QuotaKind;
use crate::topic::requested_topic_id;
use strand_security::Principal;

use super::records::{self, Placement};

/// The `Strand` service.
#[derive(Clone, Debug)]
pub struct StrandService {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    /// Spreads keyless protobuf records across partitions, request by
    /// request.
    round_robin: Arc<AtomicU32>,
    /// Consumers' fetch sessions on this broker.
    fetch_sessions: Arc<FetchSessions>,
}

impl StrandService {
    /// A service over `node`, counting into `metrics`.
    pub fn new(node: Arc<Node>, metrics: Arc<Metrics>) -> Self {
        StrandService {
            node,
            metrics,
            round_robin: Arc::new(AtomicU32::new(0)),
            fetch_sessions: Arc::new(FetchSessions::default()),
        }
    }
}

/// Whether answers carry protobuf records instead of whole batches.
fn wants_protobuf(format: i32) -> Result<bool> {
    match pb::RecordFormat::try_from(format) {
        Ok(pb::RecordFormat::Batches) => Ok(false),
        Ok(pb::RecordFormat::Protobuf) => Ok(true),
        Err(_) => Err(BrokerError::InvalidRequest {
            reason: format!("unknown record format {format}"),
        }),
    }
}

/// A fetch's byte limits and record format.
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// Record bytes of the whole answer.
    total: usize,
    /// Largest single record a protobuf answer may hold.
    cap: usize,
    protobuf: bool,
}

/// How a partition's answer carries its records.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// Whole stored batches, as read.
    Batches,
    /// Decoded records within `budget` bytes (at least one record); a record
    /// over `max_record` bytes is refused.
    Protobuf { budget: usize, max_record: usize },
}

/// One partition's answer from `read` (which starts at `from`, the offset
/// asked for), and whether a protobuf answer left records of `read` out
/// (the rest is asked for from `next_offset`).
fn partition_data(
    topic: &str,
    partition: u32,
    from: Offset,
    form: Form,
    read: &PartitionRead,
) -> Result<(pb::PartitionData, bool)> {
    let mut d = pb::PartitionData {
        topic: topic.to_string(),
        partition,
        high_watermark: read.high_watermark.get(),
        log_start_offset: read.log_start_offset.get(),
        ..Default::default()
    };
    match form {
        Form::Batches => {
            d.next_offset = records::next_offset(&read.records, from).get();
            d.records = read.records.clone();
            Ok((d, false))
        }
        Form::Protobuf { budget, max_record } => {
            let decoded = records::decode_batches(&read.records, from, budget, max_record)?;
            d.next_offset = decoded.next_offset.get();
            d.decoded_records = decoded.records;
            Ok((d, !decoded.complete))
        }
    }
}

/// A partition's answer that failed: the error, in place of records.
fn partition_error(topic: &str, partition: u32, from: Offset, e: &BrokerError) -> pb::PartitionData {
    if matches!(e, BrokerError::UndecodableRecords { .. }) {
        tracing::warn!(topic, partition, error = %e, "stored records do not decode");
    }
    pb::PartitionData {
        topic: topic.to_string(),
        partition,
        next_offset: from.get(),
        error: Some(e.to_proto()),
        ..Default::default()
    }
}

/// Approximate encoded size of a partition's answer.
fn answer_bytes(d: &pb::PartitionData) -> usize {
    d.records.len()
        + d.decoded_records
            .iter()
            .map(|r| r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len) + 24)
            .sum::<usize>()
}

impl StrandService {
    async fn produce(&self, who: &Principal, req: pb::ProduceRequest) -> Result<pb::ProduceResponse> {
        let named = req.batches.iter().map(|b| b.topic.as_str());
        access::topics(
            &self.node,
            who,
            Op::Write,
            named.chain(req.records.iter().map(|t| t.topic.as_str())),
        )?;
        let acks = match pb::Acks::try_from(req.acks) {
            Ok(pb::Acks::All) => Acks::All,
            Ok(pb::Acks::Leader) => Acks::Leader,
            Ok(pb::Acks::None) => Acks::None,
            Err(_) => {
                return Err(BrokerError::InvalidRequest {
                    reason: format!("unknown acks level {}", req.acks),
                });
            }
        };
        let limits = &self.node.config().limits;
        let timeout = match req.timeout_ms {
            0 => Duration::from_millis(limits.produce_timeout_ms),
            ms => Duration::from_millis(u64::from(ms)),
        }
        .min(self.node.config().request_timeout());
        // A malformed topic id is the client's bug: the whole request is
        // refused, as for any other malformed field.
        let mut batches: Vec<ProduceBatch> = req
            .batches
            .into_iter()
            .map(|b| {
                Ok(ProduceBatch {
                    topic_id: requested_topic_id(&b.topic, &b.topic_id)?,
                    topic: b.topic,
                    partition: b.partition,
                    batch: b.batch,
                })
            })
            .collect::<Result<_>>()?;
        let producer_batches = batches.len();
        let topic_names: Vec<String> = req.records.iter().map(|t| t.topic.clone()).collect();
        let built = records::build_batches(&self.node, req.records, &self.round_robin);
        batches.extend(built.batches);
        let outcomes = produce::produce(&self.node, &batches, acks, timeout).await;
        let record_results = built
            .placements
            .iter()
            .map(|place| match *place {
                Placement::InBatch { batch, position } => {
                    let b = &batches[producer_batches + batch];
                    let mut r = pb::RecordProduceResult {
                        topic: b.topic.clone(),
                        partition: b.partition,
                        ..Default::default()
                    };
                    match &outcomes[producer_batches + batch] {
                        Ok(info) if acks != Acks::None => {
                            r.offset = info.base_offset.get() + u64::from(position);
                            r.log_append_time_ms = info.append_time_ms;
                        }
                        Ok(_) => {}
                        Err(e) => r.error = Some(e.to_proto()),
                    }
                    r
                }
                Placement::Refused { topic } => pb::RecordProduceResult {
                    topic: topic_names[topic].clone(),
                    error: built.topic_errors[topic].as_ref().map(BrokerError::to_proto),
                    ..Default::default()
                },
            })
            .collect();
        let results = batches
            .iter()
            .zip(outcomes)
            .map(|(b, outcome)| {
                let mut r = pb::PartitionProduceResult {
                    topic: b.topic.clone(),
                    partition: b.partition,
                    ..Default::default()
                };
                match outcome {
                    Ok(info) => {
                        r.base_offset = info.base_offset.get();
                        r.log_append_time_ms = info.append_time_ms;
                        let m = &self.metrics;
                        Metrics::add(&m.produce_requests, &b.topic, 1);
                        if acks != Acks::None {
                            Metrics::add(
                                &m.produce_records,
                                &b.topic,
                                info.last_offset.since(info.base_offset) + 1,
                            );
                        }
                        Metrics::add(&m.produce_bytes, &b.topic, b.batch.len() as u64);
                    }
                    Err(e) => {
                        tracing::debug!(topic = %b.topic, partition = b.partition, error = %e, "produce refused");
                        r.error = Some(e.to_proto());
                    }
                }
                r
            })
            .collect::<Vec<_>>();
        let mut results = results;
        results.truncate(producer_batches);
        Ok(pb::ProduceResponse {
            results,
            record_results,
        })
    }

    async fn fetch(&self, who: &Principal, req: pb::FetchRequest) -> Result<pb::FetchResponse> {
        // What a session already holds is checked below, on every fetch: an
        // ACL removed mid-session takes effect at once.
        access::topics(
            &self.node,
            who,
            Op::Read,
            req.partitions.iter().map(|p| p.topic.as_str()),
        )?;
        let protobuf = wants_protobuf(req.record_format)?;
        let limits = &self.node.config().limits;
        let max_wait = Duration::from_millis(u64::from(req.max_wait_ms).min(limits.max_fetch_wait_ms));
        // Keep the encoded response under the message limit even when the
        // last partition read returns one whole batch past the budget.
        let cap = limits.max_message_bytes / 2;
        let total = match req.max_bytes {
            0 => cap,
            n => (n as usize).min(cap),
        };
        let named: Vec<FetchPartition> = req
            .partitions
            .iter()
            .map(|fp| {
                Ok(FetchPartition {
                    topic: fp.topic.clone(),
                    topic_id: requested_topic_id(&fp.topic, &fp.topic_id)?,
                    partition: fp.partition,
                    offset: Offset(fp.offset),
                    max_bytes: match fp.max_bytes {
                        0 => DEFAULT_PARTITION_MAX_BYTES,
                        n => n as usize,
                    },
                    leader_only: req.leader_only,
                })
            })
            .collect::<Result<_>>()?;
        let budget = Budget { total, cap, protobuf };
        match (req.session_id, req.session_epoch) {
            (0, 0) => {
                if !req.forgotten.is_empty() {
                    return Err(BrokerError::InvalidRequest {
                        reason: "`forgotten` needs a fetch session".into(),
                    });
                }
                let reads = fetch::fetch(&self.node, &named, 0, total, max_wait).await?;
                let keep = vec![true; reads.len()];
                Ok(pb::FetchResponse {
                    partitions: self.answer(&named, reads, &keep, budget),
                    session_id: 0,
                })
            }
            (0, 1) => {
                if !req.forgotten.is_empty() {
                    return Err(BrokerError::InvalidRequest {
                        reason: "a new fetch session has nothing to forget".into(),
                    });
                }
                let (id, mut session) = self.fetch_sessions.open(named).await;
                let first = session.next_first();
                let reads = fetch::fetch(&self.node, session.partitions(), first, total, max_wait).await?;
                // The opening answer is full: the client learns every bound.
                session.news(&reads);
                let keep = vec![true; reads.len()];
                Ok(pb::FetchResponse {
                    partitions: self.answer(session.partitions(), reads, &keep, budget),
                    session_id: id,
                })
            }
            (0, epoch) => Err(BrokerError::InvalidRequest {
                reason: format!("a fetch session opens with epoch 1, not {epoch}"),
            }),
            (id, epoch) => {
                let forgotten: Vec<(String, u32)> = req
                    .forgotten
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
                    .collect();
                let mut session = self.fetch_sessions.resume(id, epoch, named, &forgotten)?;
                access::topics(
                    &self.node,
                    who,
                    Op::Read,
                    session.partitions().iter().map(|p| p.topic.as_str()),
                )?;
                let first = session.next_first();
                let reads = fetch::fetch(&self.node, session.partitions(), first, total, max_wait).await?;
                let keep = session.news(&reads);
                Ok(pb::FetchResponse {
                    partitions: self.answer(session.partitions(), reads, &keep, budget),
                    session_id: id,
                })
            }
        }
    }

    /// The answers to `reads` (one per partition of `parts`) that `keep`
    /// selects, within `budget`.
    fn answer(
        &self,
        parts: &[FetchPartition],
        reads: Vec<Result<PartitionRead>>,
        keep: &[bool],
        budget: Budget,
    ) -> Vec<pb::PartitionData> {
        let Budget { total, cap, protobuf } = budget;
        // Decoded records count against the same budget as batches: what
        // a compressed batch grows to, not what it stored.
        let mut remaining = total;
        parts
            .iter()
            .zip(reads)
            .zip(keep)
            .filter(|(_, keep)| **keep)
            .map(|((fp, read), _)| {
                if let Ok(r) = &read
                    && !r.records.is_empty()
                {
                    Metrics::add(&self.metrics.fetch_requests, &fp.topic, 1);
                    Metrics::add(&self.metrics.fetch_bytes, &fp.topic, r.records.len() as u64);
                }
                let form = if protobuf {
                    Form::Protobuf {
                        budget: fp.max_bytes.min(remaining),
                        max_record: cap,
                    }
                } else {
                    Form::Batches
                };
                let answer = match (form, read) {
                    // Past the budget: answered empty, as a batch read is.
                    (Form::Protobuf { budget: 0, .. }, Ok(r)) => partition_data(
                        &fp.topic,
                        fp.partition,
                        fp.offset,
                        form,
                        &PartitionRead {
                            records: Bytes::new(),
                            ..r
                        },
                    ),
                    (form, Ok(r)) => partition_data(&fp.topic, fp.partition, fp.offset, form, &r),
                    (_, Err(e)) => Err(e),
                };
                match answer {
                    Ok((d, _)) => {
                        remaining = remaining.saturating_sub(answer_bytes(&d));
                        d
                    }
                    Err(e) => {
                        tracing::debug!(topic = %fp.topic, partition = fp.partition, error = %e, "fetch refused");
                        partition_error(&fp.topic, fp.partition, fp.offset, &e)
                    }
                }
            })
            .collect()
    }

    fn list_offsets(&self, who: &Principal, req: pb::ListOffsetsRequest) -> Result<pb::ListOffsetsResponse> {
        access::topics(&self.node, who, Op::Describe, [req.topic.as_str()])?;
        use pb::list_offsets_request::Spec;
        let spec = match req.spec {
            Some(Spec::Earliest(_)) => OffsetSpec::Earliest,
            Some(Spec::Latest(_)) => OffsetSpec::Latest,
            Some(Spec::TimestampMs(ts)) => OffsetSpec::Timestamp(ts),
            None => {
                return Err(BrokerError::InvalidRequest {
                    reason: "ListOffsets needs earliest, latest or timestamp_ms".into(),
                });
            }
        };
        let topic_id = requested_topic_id(&req.topic, &req.topic_id)?;
        let (offset, st) = list_offsets(&self.node, &req.topic, topic_id, req.partition, spec)?;
        Ok(pb::ListOffsetsResponse {
            offset: offset.get(),
            log_start_offset: st.log_start_offset.get(),
            high_watermark: st.high_watermark.get(),
        })
    }

    /// Brokers, and topics with their partition leaders (as this broker
    /// knows them: the live leader of a hosted replica, else the preferred
    /// replica as a hint that answers `NOT_LEADER` with the leader if it is
    /// wrong).
    fn metadata(&self, who: &Principal, req: pb::MetadataRequest) -> pb::MetadataResponse {
        let node = &self.node;
        let may_describe = |name: &str| node.permits(who, Op::Describe, ResourceType::Topic, name);
        let topic_meta = |t: &TopicState| pb::TopicMetadata {
            name: t.meta.name.clone(),
            partitions: t
                .assignment
                .iter()
                .zip(node.hosted(t))
                .enumerate()
                .map(|(p, (replicas, local))| pb::PartitionMetadata {
                    partition: p as u32,
                    leader: match local {
                        Some(l) => l.leader().map_or(0, NodeId::get),
                        None => replicas.first().map_or(0, |r| r.get()),
                    },
                    replicas: replicas.iter().map(|r| r.get()).collect(),
                })
                .collect(),
            error: None,
            topic_id: t.uuid().to_string(),
        };
        let meta = node.metadata();
        let topics = if req.topics.is_empty() {
            // Every topic the caller may describe.
            meta.topics
                .values()
                .filter(|t| may_describe(&t.meta.name))
                .map(topic_meta)
                .collect()
        } else {
            req.topics
                .iter()
                .map(|name| match meta.topics.get(name) {
                    _ if !may_describe(name) => pb::TopicMetadata {
                        name: name.clone(),
                        partitions: Vec::new(),
                        error: Some(crate::security::denial(who, Op::Describe, ResourceType::Topic, name).to_proto()),
                        topic_id: String::new(),
                    },
                    Some(t) => topic_meta(t),
                    None => pb::TopicMetadata {
                        name: name.clone(),
                        partitions: Vec::new(),
                        // A broker behind the controller log (just started,
                        // or its disk was replaced) must not deny a topic it
                        // has not learned about yet: ask another.
                        error: Some(match node.topic(name) {
                            Err(e) => e.to_proto(),
                            Ok(_) => BrokerError::UnknownTopic { topic: name.clone() }.to_proto(),
                        }),
                        topic_id: String::new(),
                    },
                })
                .collect()
        };
        pb::MetadataResponse {
            brokers: node
                .brokers()
                .into_iter()
                .map(|(id, addr)| pb::BrokerInfo {
                    node_id: id.get(),
                    addr,
                })
                .collect(),
            topics,
            cluster_id: node.cluster_id().to_string(),
            controller_id: node.controller_leader().map_or(0, NodeId::get),
        }
    }
}

/// Bytes a produce request carries (batches as stored, records by key and
/// value), what the produce quota counts.
fn produced_bytes(r: &pb::ProduceRequest) -> usize {
    let batches: usize = r.batches.iter().map(|b| b.batch.len()).sum();
    let records: usize = r
        .records
        .iter()
        .flat_map(|t| t.records.iter())
        .map(|rec| rec.key.as_ref().map_or(0, Bytes::len) + rec.value.as_ref().map_or(0, Bytes::len))
        .sum();
    batches + records
}

/// Delays the answer of a principal over its quota (see `security::quota`).
async fn throttle(node: &Node, who: &Principal, kind: QuotaKind, amount: usize) {
    let delay = node.quota_delay(who, kind, amount as u64);
    if !delay.is_zero() {
        tracing::debug!(principal = %who, kind = kind.as_str(), delay_ms = delay.as_millis() as u64, "quota: response delayed");
        tokio::time::sleep(delay).await;
    }
}

fn request_span(node: &Node, rpc: &'static str) -> tracing::Span {
    tracing::debug_span!("request", node = %node.id(), rpc)
}

#[tonic::async_trait]
impl pb::strand_server::Strand for StrandService {
    async fn produce(&self, req: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        let _t = self.metrics.time("produce");
        let who = caller(&req);
        let r = req.into_inner();
        let bytes = produced_bytes(&r);
        let answer = self
            .produce(&who, r)
            .instrument(request_span(&self.node, "produce"))
            .await?;
        throttle(&self.node, &who, QuotaKind::Produce, bytes).await;
        Ok(Response::new(answer))
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let _t = self.metrics.time("fetch");
        let who = caller(&req);
        let answer = self
            .fetch(&who, req.into_inner())
            .instrument(request_span(&self.node, "fetch"))
            .await?;
        let bytes: usize = answer.partitions.iter().map(answer_bytes).sum();
        throttle(&self.node, &who, QuotaKind::Fetch, bytes).await;
        Ok(Response::new(answer))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::PartitionData, Status>> + Send>>;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let who = caller(&req);
        let req = req.into_inner();
        access::topics(&self.node, &who, Op::Read, [req.topic.as_str()])?;
        let protobuf = wants_protobuf(req.record_format)?;
        let max_bytes = match req.max_bytes {
            0 => DEFAULT_PARTITION_MAX_BYTES,
            n => (n as usize).min(self.node.config().limits.max_message_bytes / 2),
        };
        let topic_id = requested_topic_id(&req.topic, &req.topic_id)?;
        let rx = fetch::subscribe(
            &self.node,
            &req.topic,
            topic_id,
            req.partition,
            Offset(req.offset),
            max_bytes,
        )?;
        let (topic, partition) = (req.topic, req.partition);
        let form = if protobuf {
            Form::Protobuf {
                budget: max_bytes,
                max_record: self.node.config().limits.max_message_bytes / 2,
            }
        } else {
            Form::Batches
        };
        // Each push continues where the previous one ended; a read whose
        // decoded records outgrow the budget is pushed in several messages.
        let mut from = Offset(req.offset);
        let stream = futures::StreamExt::flat_map(tokio_stream::wrappers::ReceiverStream::new(rx), move |read| {
            let mut pushes = Vec::new();
            match read {
                Ok(r) => loop {
                    match partition_data(&topic, partition, from, form, &r) {
                        Ok((d, more)) => {
                            from = Offset(d.next_offset);
                            pushes.push(Ok(d));
                            if !more {
                                break;
                            }
                        }
                        Err(e) => {
                            pushes.push(Err(Status::from(e)));
                            break;
                        }
                    }
                },
                Err(e) => pushes.push(Err(Status::from(e))),
            }
            futures::stream::iter(pushes)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let who = caller(&req);
        Ok(Response::new(self.list_offsets(&who, req.into_inner())?))
    }

    async fn metadata(&self, req: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let who = caller(&req);
        Ok(Response::new(self.metadata(&who, req.into_inner())))
    }

    async fn init_producer_id(
        &self,
        req: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        // An idempotent producer id goes to anyone who may write somewhere
        // (as in Kafka); each batch is checked against its topic anyway.
        let who = caller(&req);
        if !self.node.permits_any(&who, Op::Write, ResourceType::Topic) {
            let err = crate::security::denial(&who, Op::Write, ResourceType::Topic, "*");
            self.node.security().audit().denied(&who, &err);
            return Err(err.into());
        }
        let req = req.into_inner();
        let key = (!req.producer_id_key.is_empty()).then_some(req.producer_id_key.as_str());
        let current = if req.producer_id > 0 {
            let epoch = i16::try_from(req.producer_epoch).map_err(|_| BrokerError::InvalidRequest {
                reason: format!("producer epoch {} is outside 0..=32767", req.producer_epoch),
            })?;
            Some((req.producer_id, epoch))
        } else {
            None
        };
        let (producer_id, epoch) = crate::admin::Admin::new(Arc::clone(&self.node))
            .init_producer_id(key, current)
            .await?;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: i32::from(epoch),
        }))
    }
}
