//! The producer's background task: takes sealed batches from the
//! accumulator, sends them to their partition leaders and settles their
//! records' futures.
//!
//! Ordering: a batch that must be retried goes back into its partition's
//! queue in its original place, and after any failure a partition sends
//! nothing more until its requests in flight have come back, so retries
//! never reorder a partition. Without idempotence a partition has one batch
//! in flight; with it, up to `max_in_flight` (the broker stores a batch only
//! if it continues the partition's sequence, see `idempotence`). Different
//! partitions are independent; ready batches of partitions that share a
//! leader travel in one `ProduceRequest`, a partition's in order.
//!
//! Lingering: a batch whose linger time passed is sealed only when its
//! partition is free to send. While a request is in flight the open batch
//! keeps filling, which turns a slow broker into larger batches rather than
//! a queue of small ones.
//!
//! Lifetime: the task ends when the producer is closed, or when every
//! `Producer` handle is dropped, after it has delivered (or failed) what was
//! already accepted, so nothing is left running.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use strand_proto::v1::{ErrorCode, PartitionBatch, ProduceRequest, ProduceResponse};
use tokio::sync::mpsc;

use super::Acks;
use super::accumulator::{Accumulator, FlushWaiter, ProducerBatch};
use super::idempotence::{self, Identity, Sequence};
use crate::connection::with_timeout;
use crate::error::{ClientError, Result};
use crate::metadata::{Metadata, RefreshReport};
use crate::retry::Backoff;

/// Extra time the client waits for a produce answer beyond the timeout it
/// gives the broker, so a broker-side `REQUEST_TIMED_OUT` arrives as such.
const RESPONSE_GRACE: Duration = Duration::from_secs(1);

/// Approximate protobuf framing per batch in a `ProduceRequest` (topic name
/// excluded), for sizing requests.
const PER_BATCH_OVERHEAD: usize = 32;

/// Sender settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SenderConfig {
    pub acks: Acks,
    pub request_timeout: Duration,
    pub delivery_timeout: Duration,
    pub retries: u32,
    pub backoff: Backoff,
    pub max_request_bytes: usize,
    pub metadata_max_age: Duration,
    /// Batches of one partition in flight at once (1 without idempotence).
    pub max_in_flight: usize,
}

/// What an idempotent producer knows of itself.
#[derive(Debug, Clone)]
pub(crate) struct IdempotentState {
    /// Its stable key, if it has one.
    pub key: Option<String>,
    /// Its newest id and epoch.
    pub identity: Identity,
}

type PartitionKey = (Arc<str>, u32);

#[derive(Debug, Default)]
struct PartitionQueue {
    /// Sealed batches not in flight: those sent before (by `ord`), then the
    /// new ones in sealing order.
    queue: VecDeque<ProducerBatch>,
    /// `ord`s of the batches in flight.
    in_flight: BTreeSet<u64>,
    /// The `ord` the next batch sent for the first time gets.
    next_ord: u64,
    /// A send failed: nothing more goes out until the requests in flight
    /// came back.
    drain: bool,
    /// No send before this instant (backoff after a retriable failure).
    retry_at: Option<Instant>,
    /// The open batch may have lingered: seal it when the partition is free.
    check_linger: bool,
    /// The identity of this partition's numbering run (idempotence).
    run: Option<Identity>,
    /// The sequence the next numbered batch gets.
    next_seq: i32,
    /// The run is broken: renumber under a newer epoch (see `idempotence`).
    needs_reset: bool,
}

impl PartitionQueue {
    fn is_free(&self, now: Instant, max_in_flight: usize) -> bool {
        // After a failure, nothing new goes out until the rest came back.
        let drained = !self.drain || self.in_flight.is_empty();
        self.in_flight.len() < max_in_flight && drained && self.retry_at.is_none_or(|t| t <= now)
    }

    fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.queue.is_empty() && !self.check_linger
    }

    /// Puts a batch sent before back in its place.
    fn requeue(&mut self, b: ProducerBatch) {
        let at = self
            .queue
            .iter()
            .position(|q| q.ord.is_none_or(|o| Some(o) > b.ord))
            .unwrap_or(self.queue.len());
        self.queue.insert(at, b);
    }

    /// Whether a batch sent for the first time now stays within
    /// `max_in_flight` of the oldest batch still unsettled (in flight, or
    /// queued again after a send whose fate is unknown). The broker
    /// remembers a producer's last 5 batches: a retry further behind the
    /// newest stored one could no longer be recognised as a duplicate.
    fn window_open(&self, max_in_flight: usize) -> bool {
        let queued = self.queue.iter().filter_map(|b| b.ord).min();
        let oldest = match (self.in_flight.first().copied(), queued) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        oldest.is_none_or(|o| self.next_ord < o + max_in_flight as u64)
    }

    /// Whether a batch sent before `ord` is still unsettled.
    fn earlier_unsettled(&self, ord: u64) -> bool {
        self.in_flight.range(..ord).next().is_some() || self.queue.iter().any(|q| q.ord.is_some_and(|o| o < ord))
    }
}

/// What an idempotent partition may do with its front batch.
enum Numbered {
    /// Send it.
    Send,
    /// Wait (for requests in flight, or a newer epoch).
    Wait,
    /// Its run is broken and it needs an epoch newer than the run's.
    NeedEpoch,
}

enum Event {
    Produced {
        addr: Arc<str>,
        batches: Vec<ProducerBatch>,
        result: Result<ProduceResponse>,
    },
    Refreshed(Result<RefreshReport>),
    /// A newer epoch (or a new id) for an idempotent producer.
    Identity(Result<Identity>),
}

pub(crate) struct Sender {
    config: SenderConfig,
    md: Arc<Metadata>,
    acc: Arc<Mutex<Accumulator>>,
    wake: mpsc::Receiver<()>,
    wake_open: bool,
    closing: bool,
    partitions: HashMap<PartitionKey, PartitionQueue>,
    /// Ids of batches taken from the accumulator and not yet settled.
    incomplete: BTreeSet<u64>,
    flush_waiters: Vec<FlushWaiter>,
    inflight: FuturesUnordered<BoxFuture<'static, Event>>,
    next_linger: Option<Instant>,
    accumulator_empty: bool,
    refresh_wanted: bool,
    refresh_in_flight: bool,
    last_refresh: Option<Instant>,
    next_periodic_refresh: Instant,
    /// `Some` when the producer is idempotent.
    idempotent: Option<IdempotentState>,
    identity_wanted: bool,
    identity_in_flight: bool,
    /// Failed requests for a new epoch in a row, and when to ask again.
    identity_attempts: u32,
    identity_retry_at: Option<Instant>,
    /// A newer incarnation fenced this producer: every batch fails so.
    fenced: Option<ClientError>,
}

impl Sender {
    pub(crate) fn new(
        config: SenderConfig,
        md: Arc<Metadata>,
        acc: Arc<Mutex<Accumulator>>,
        wake: mpsc::Receiver<()>,
        idempotent: Option<IdempotentState>,
    ) -> Self {
        Sender {
            config,
            md,
            acc,
            wake,
            wake_open: true,
            closing: false,
            partitions: HashMap::new(),
            incomplete: BTreeSet::new(),
            flush_waiters: Vec::new(),
            inflight: FuturesUnordered::new(),
            next_linger: None,
            accumulator_empty: true,
            refresh_wanted: false,
            refresh_in_flight: false,
            last_refresh: None,
            next_periodic_refresh: Instant::now() + config.metadata_max_age,
            idempotent,
            identity_wanted: false,
            identity_in_flight: false,
            identity_attempts: 0,
            identity_retry_at: None,
            fenced: None,
        }
    }

    /// Runs until the producer is closed or dropped and everything accepted
    /// has been settled.
    pub(crate) async fn run(mut self) {
        loop {
            let now = Instant::now();
            self.pull(now);
            self.expire(now);
            self.dispatch(now);
            self.resolve_flushes();
            if self.closing && self.is_idle() {
                break;
            }
            let wake_at = self.next_wakeup(now);
            tokio::select! {
                Some(event) = self.inflight.next(), if !self.inflight.is_empty() => self.handle(event),
                msg = self.wake.recv(), if self.wake_open => {
                    if msg.is_none() {
                        // Every handle is gone: deliver what was accepted, then stop.
                        self.wake_open = false;
                        self.closing = true;
                    }
                }
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
        self.finish();
    }

    /// Takes sealed batches, flush requests and linger expiries from the
    /// accumulator, and seals lingered batches of free partitions. All under
    /// one lock, so a partition's batches enter its queue in sealing order.
    fn pull(&mut self, now: Instant) {
        let acc_arc = self.acc.clone();
        let mut acc = acc_arc.lock();
        if acc.closed {
            self.closing = true;
        }
        if self.closing {
            acc.seal_all();
        }
        for b in acc.take_ready() {
            self.incomplete.insert(b.id);
            self.partitions
                .entry((b.topic.clone(), b.partition))
                .or_default()
                .queue
                .push_back(b);
        }
        self.flush_waiters.extend(acc.take_flush_waiters());
        while let Some(key) = acc.pop_lingered(now) {
            self.partitions.entry(key).or_default().check_linger = true;
        }
        for ((topic, partition), st) in self.partitions.iter_mut() {
            if st.check_linger && st.queue.is_empty() && st.is_free(now, self.config.max_in_flight) {
                st.check_linger = false;
                if let Some(b) = acc.seal_if_lingered(topic, *partition, now) {
                    self.incomplete.insert(b.id);
                    st.queue.push_back(b);
                }
            }
        }
        self.next_linger = acc.next_linger_deadline();
        self.accumulator_empty = acc.is_empty();
    }

    /// Fails queued batches whose delivery timeout passed.
    fn expire(&mut self, now: Instant) {
        let limit = self.config.delivery_timeout;
        for st in self.partitions.values_mut() {
            while st.queue.front().is_some_and(|b| b.created_at + limit <= now) {
                if let Some(b) = st.queue.pop_front() {
                    self.incomplete.remove(&b.id);
                    let err = timeout_error(&b, limit);
                    b.fail(err);
                }
            }
            if st.queue.is_empty() {
                st.retry_at = None;
            }
        }
    }

    /// Sends the front batch of every free partition whose leader is known,
    /// one request per leader (split at `max_request_bytes`).
    fn dispatch(&mut self, now: Instant) {
        if let Some(err) = self.fenced.clone() {
            self.fail_everything(&err);
        }
        let max = self.config.max_in_flight;
        let identity = self.idempotent.as_ref().map(|s| s.identity);
        let mut by_leader: HashMap<Arc<str>, Vec<ProducerBatch>> = HashMap::new();
        let mut failed = Vec::new();
        for ((topic, partition), st) in self.partitions.iter_mut() {
            if st.queue.is_empty() || !st.is_free(now, max) {
                continue;
            }
            let Some(leader) = self.md.leader(topic, *partition) else {
                self.refresh_wanted = true;
                continue;
            };
            st.drain = false;
            while !st.queue.is_empty() && st.is_free(now, max) {
                if st.queue.front().is_some_and(|b| b.ord.is_none()) && !st.window_open(max) {
                    break;
                }
                if let Some(identity) = identity {
                    match number_front(st, identity) {
                        Numbered::Send => {}
                        Numbered::Wait => break,
                        Numbered::NeedEpoch => {
                            self.identity_wanted = true;
                            break;
                        }
                    }
                }
                let Some(mut b) = st.queue.pop_front() else { break };
                if let Err(e) = prepare(st, &mut b) {
                    failed.push((b, e));
                    continue;
                }
                if let Some(ord) = b.ord {
                    st.in_flight.insert(ord);
                }
                st.retry_at = None;
                by_leader.entry(leader.clone()).or_default().push(b);
            }
        }
        for (b, e) in failed {
            self.incomplete.remove(&b.id);
            b.fail(e);
        }
        for (addr, batches) in by_leader {
            let mut request: Vec<ProducerBatch> = Vec::new();
            let mut bytes = 0;
            for b in batches {
                let size = b.bytes.len() + b.topic.len() + PER_BATCH_OVERHEAD;
                if !request.is_empty() && bytes + size > self.config.max_request_bytes {
                    let full = std::mem::take(&mut request);
                    self.inflight.push(self.produce(addr.clone(), full));
                    bytes = 0;
                }
                bytes += size;
                request.push(b);
            }
            if !request.is_empty() {
                self.inflight.push(self.produce(addr.clone(), request));
            }
        }
        // An idempotent partition keeps its numbering for good: a batch
        // numbered from 0 again would be taken for a retry of the first.
        self.partitions.retain(|_, st| !st.is_idle() || st.run.is_some());

        if now >= self.next_periodic_refresh {
            self.next_periodic_refresh = now + self.config.metadata_max_age;
            self.refresh_wanted = true;
        }
        if self.refresh_wanted && !self.refresh_in_flight && self.refresh_allowed_at().is_none_or(|t| t <= now) {
            self.refresh_wanted = false;
            self.refresh_in_flight = true;
            self.last_refresh = Some(now);
            self.inflight.push(self.refresh());
        }
        if self.identity_wanted
            && !self.identity_in_flight
            && self.fenced.is_none()
            && self.identity_retry_at.is_none_or(|t| t <= now)
            && let Some(state) = &self.idempotent
        {
            self.identity_wanted = false;
            self.identity_in_flight = true;
            self.inflight.push(self.new_epoch(state.clone()));
        }
    }

    /// Asks for the next epoch of this producer's id.
    fn new_epoch(&self, state: IdempotentState) -> BoxFuture<'static, Event> {
        let md = self.md.clone();
        let timeout = self.config.request_timeout;
        Box::pin(async move {
            let r = idempotence::init_producer_id(&md, state.key.as_deref(), Some(state.identity), timeout).await;
            Event::Identity(r)
        })
    }

    /// Fails every batch not in flight (the producer was fenced).
    fn fail_everything(&mut self, err: &ClientError) {
        for st in self.partitions.values_mut() {
            for b in st.queue.drain(..) {
                self.incomplete.remove(&b.id);
                b.fail(err.clone());
            }
        }
    }

    fn refresh_allowed_at(&self) -> Option<Instant> {
        self.last_refresh.map(|t| t + self.config.backoff.initial)
    }

    /// One `ProduceRequest` carrying `batches` (all led by `addr`).
    fn produce(&self, addr: Arc<str>, batches: Vec<ProducerBatch>) -> BoxFuture<'static, Event> {
        let md = self.md.clone();
        let timeout = self.config.request_timeout;
        let request = ProduceRequest {
            acks: self.config.acks.to_proto() as i32,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            batches: batches
                .iter()
                .map(|b| PartitionBatch {
                    topic: b.topic.to_string(),
                    partition: b.partition,
                    batch: b.bytes.clone(),
                    // The broker refuses the batch (UNKNOWN_TOPIC_ID) if the
                    // topic was deleted or re-created since this was cached.
                    topic_id: self.md.topic_id(&b.topic).map(|id| id.to_string()).unwrap_or_default(),
                })
                .collect(),
            records: Vec::new(),
        };
        Box::pin(async move {
            let result = async {
                let mut client = md.conns().strand(&addr).await?;
                with_timeout(
                    || format!("produce request to {addr}"),
                    timeout + RESPONSE_GRACE,
                    async { Ok(client.produce(request).await?.into_inner()) },
                )
                .await
            }
            .await;
            Event::Produced { addr, batches, result }
        })
    }

    /// A metadata refresh of every topic the producer writes to.
    fn refresh(&self) -> BoxFuture<'static, Event> {
        let md = self.md.clone();
        let mut topics: HashSet<String> = md.cached_topics().into_iter().collect();
        topics.extend(self.partitions.keys().map(|(t, _)| t.to_string()));
        Box::pin(async move {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            Event::Refreshed(md.refresh(&topics).await)
        })
    }

    fn handle(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Identity(result) => {
                self.identity_in_flight = false;
                match result {
                    Ok(identity) => {
                        self.identity_attempts = 0;
                        self.identity_retry_at = None;
                        tracing::info!(
                            producer_id = identity.0,
                            epoch = identity.1,
                            "producer took a new epoch"
                        );
                        if let Some(s) = &mut self.idempotent {
                            s.identity = identity;
                        }
                    }
                    Err(e) if e.code() == Some(ErrorCode::ProducerFenced) => {
                        tracing::warn!(error = %e, "producer fenced by a newer incarnation");
                        self.fenced = Some(e);
                    }
                    Err(e) if e.is_retriable() => {
                        tracing::warn!(error = %e, "could not get a new producer epoch; retrying");
                        self.identity_wanted = true;
                        self.identity_attempts += 1;
                        self.identity_retry_at = Some(now + self.config.backoff.delay(self.identity_attempts));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no new producer epoch: the producer stops");
                        self.fenced = Some(e);
                    }
                }
            }
            Event::Refreshed(result) => {
                self.refresh_in_flight = false;
                match result {
                    Ok(report) => {
                        for (topic, err) in report.errors {
                            if err.is_retriable() {
                                // The broker that answered is behind: ask again.
                                self.refresh_wanted = true;
                            } else {
                                self.fail_topic(&topic, &err);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "producer metadata refresh failed");
                        self.refresh_wanted = true;
                    }
                }
            }
            Event::Produced { addr, batches, result } => match result {
                Err(e) => {
                    tracing::debug!(broker = %addr, error = %e, batches = batches.len(), "produce request failed");
                    if e.needs_metadata_refresh() {
                        self.md.conns().invalidate(&addr);
                        self.refresh_wanted = true;
                    }
                    for b in batches {
                        self.retry_or_fail(b, e.clone(), now);
                    }
                }
                Ok(resp) if resp.results.len() != batches.len() => {
                    let err = ClientError::Protocol {
                        message: format!(
                            "produce answered {} results for {} batches",
                            resp.results.len(),
                            batches.len()
                        ),
                    };
                    for b in batches {
                        self.retry_or_fail(b, err.clone(), now);
                    }
                }
                Ok(resp) => {
                    for (b, r) in batches.into_iter().zip(resp.results) {
                        let error = r
                            .error
                            .as_ref()
                            .and_then(|e| ClientError::from_partition_error(e, &b.topic, b.partition, 0));
                        match error {
                            None => {
                                let offset = match self.config.acks {
                                    Acks::None => None,
                                    Acks::All | Acks::Leader => Some(r.base_offset),
                                };
                                self.succeed(b, offset);
                            }
                            Some(err) if self.sequence_error(&err, &b) => {
                                let mut b = b;
                                self.on_sequence_error(&mut b, err);
                                let st = self.state(&b);
                                st.requeue(b);
                            }
                            Some(err) => {
                                if err.code() == Some(ErrorCode::NotLeader)
                                    && let Some(hint) = r.error.as_ref().map(|e| e.leader_addr.as_str())
                                    && !hint.is_empty()
                                {
                                    self.md.set_leader(&b.topic, b.partition, hint);
                                }
                                if err.needs_metadata_refresh() {
                                    self.refresh_wanted = true;
                                }
                                self.retry_or_fail(b, err, now);
                            }
                        }
                    }
                }
            },
        }
    }

    fn state(&mut self, b: &ProducerBatch) -> &mut PartitionQueue {
        self.partitions.entry((b.topic.clone(), b.partition)).or_default()
    }

    /// Marks `b`'s send as settled in its partition.
    fn settle(&mut self, b: &ProducerBatch) -> &mut PartitionQueue {
        let st = self.state(b);
        if let Some(ord) = b.ord {
            st.in_flight.remove(&ord);
        }
        st.check_linger = true;
        st
    }

    /// Whether `err` is an idempotence answer the partition handles itself
    /// (not written; the batch stays queued).
    fn sequence_error(&self, err: &ClientError, b: &ProducerBatch) -> bool {
        b.seq.is_some()
            && matches!(
                err.code(),
                Some(ErrorCode::OutOfOrderSequence | ErrorCode::UnknownProducerId | ErrorCode::ProducerFenced)
            )
    }

    /// `b` was refused for its numbering, so it is not stored. Out of order
    /// behind a batch still unsettled: it waits for that one. Otherwise the
    /// run is broken and the partition renumbers; fenced: the producer stops.
    fn on_sequence_error(&mut self, b: &mut ProducerBatch, err: ClientError) {
        let fenced = err.code() == Some(ErrorCode::ProducerFenced);
        let ord = b.ord.unwrap_or(0);
        b.unwritten = true;
        b.last_error = Some(err.clone());
        let st = self.settle(b);
        st.drain = true;
        if fenced {
            self.fenced = Some(err);
            return;
        }
        // Refused because an earlier batch is not stored yet (a gap, or the
        // producer unknown until its first batch lands): wait for that one.
        let waits_for_earlier = st.earlier_unsettled(ord);
        if !waits_for_earlier {
            tracing::debug!(
                topic = %b.topic, partition = b.partition, error = %err,
                "sequence broken; renumbering under a newer epoch"
            );
            st.needs_reset = true;
        }
    }

    fn succeed(&mut self, b: ProducerBatch, offset: Option<u64>) {
        self.settle(&b);
        self.incomplete.remove(&b.id);
        b.complete(offset);
    }

    /// Puts a failed batch back at the front of its queue after a backoff if
    /// the error is retriable and time and retries remain; fails it otherwise.
    fn retry_or_fail(&mut self, mut b: ProducerBatch, err: ClientError, now: Instant) {
        let config = self.config;
        b.attempts += 1;
        let deadline = b.created_at + config.delivery_timeout;
        let st = self.settle(&b);
        st.drain = true;
        // A topic deleted and created again under its name answers
        // UNKNOWN_TOPIC_ID until the metadata is refreshed: the records are
        // for the topic by that name, so they go to the new one.
        let mut retriable = err.is_retriable() || err.code() == Some(ErrorCode::UnknownTopicId);
        // A batch sent before may be stored already: UNKNOWN_TOPIC from a
        // broker that has not caught up with the cluster (a replaced disk)
        // must not report it as not stored. It is retried (elsewhere, after a
        // refresh) until the delivery timeout, whose error says "unknown".
        if err.code() == Some(ErrorCode::UnknownTopic) && b.attempts > 1 {
            retriable = true;
            self.refresh_wanted = true;
        }
        let st = self.state(&b);
        if retriable && b.attempts <= config.retries && now < deadline {
            let delay = config.backoff.delay(b.attempts);
            tracing::debug!(
                topic = %b.topic, partition = b.partition, attempt = b.attempts, error = %err,
                "retrying produce after {delay:?}"
            );
            st.retry_at = Some(now + delay);
            b.last_error = Some(err);
            st.requeue(b);
            return;
        }
        self.incomplete.remove(&b.id);
        let err = if err.is_retriable() && now >= deadline {
            b.last_error = Some(err);
            timeout_error(&b, config.delivery_timeout)
        } else {
            err
        };
        tracing::debug!(topic = %b.topic, partition = b.partition, error = %err, "produce failed");
        b.fail(err);
    }

    /// Fails the queued (not in-flight) batches of a topic the broker says
    /// is gone, if they were never stored: not sent yet, or refused. One
    /// sent before whose fate is unknown stays queued: failing it with
    /// `UNKNOWN_TOPIC` would say it was not stored, and it may have been;
    /// it is sent again or times out (an unknown outcome).
    fn fail_topic(&mut self, topic: &str, err: &ClientError) {
        for ((t, _), st) in self.partitions.iter_mut() {
            if &**t != topic {
                continue;
            }
            let (never_stored, unknown): (VecDeque<ProducerBatch>, VecDeque<ProducerBatch>) =
                st.queue.drain(..).partition(|b| b.ord.is_none() || b.unwritten);
            st.queue = unknown;
            for b in never_stored {
                self.incomplete.remove(&b.id);
                b.fail(err.clone());
            }
            st.retry_at = None;
        }
    }

    fn resolve_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let oldest = self.incomplete.first().copied();
        let waiters = std::mem::take(&mut self.flush_waiters);
        for w in waiters {
            if oldest.is_none_or(|id| id >= w.upto) {
                let _ = w.tx.send(());
            } else {
                self.flush_waiters.push(w);
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.inflight.is_empty() && self.accumulator_empty && self.partitions.values().all(|st| st.queue.is_empty())
    }

    /// The earliest instant at which the loop has timed work to do.
    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut at = now + self.config.metadata_max_age;
        at = at.min(self.next_periodic_refresh);
        if self.identity_wanted
            && let Some(t) = self.identity_retry_at
        {
            at = at.min(t);
        }
        if let Some(t) = self.next_linger {
            at = at.min(t);
        }
        for st in self.partitions.values() {
            if !st.in_flight.is_empty() {
                continue;
            }
            if let Some(front) = st.queue.front() {
                at = at.min(front.created_at + self.config.delivery_timeout);
                if let Some(t) = st.retry_at {
                    at = at.min(t);
                }
            }
        }
        if self.refresh_wanted
            && !self.refresh_in_flight
            && let Some(t) = self.refresh_allowed_at()
        {
            at = at.min(t);
        }
        at.max(now)
    }

    /// Marks the producer finished and releases any flush still waiting.
    fn finish(self) {
        let mut acc = self.acc.lock();
        acc.sender_done = true;
        for w in acc.take_flush_waiters().into_iter().chain(self.flush_waiters) {
            let _ = w.tx.send(());
        }
        for b in acc.take_ready() {
            b.fail(ClientError::Closed);
        }
    }
}

/// Numbers the front batch of an idempotent partition if it is new, or
/// renumbers the partition's queue under a newer epoch when its run broke
/// (see `idempotence`). `identity` is the producer's newest.
fn number_front(st: &mut PartitionQueue, identity: Identity) -> Numbered {
    if st.needs_reset {
        if !st.in_flight.is_empty() {
            return Numbered::Wait;
        }
        // A numbered batch whose fate is unknown goes out alone, as it was,
        // until the broker says whether it is stored.
        if st.queue.front().is_some_and(|b| b.seq.is_some() && !b.unwritten) {
            return Numbered::Send;
        }
        if st.run == Some(identity) {
            return Numbered::NeedEpoch;
        }
        st.run = Some(identity);
        st.next_seq = 0;
        st.needs_reset = false;
        for b in st.queue.iter_mut().filter(|b| b.seq.is_some()) {
            b.seq = Some(Sequence {
                identity,
                base: st.next_seq,
            });
            b.unwritten = false;
            st.next_seq = strand_storage::next_sequence(st.next_seq, b.record_count() as u32);
        }
    }
    let numbered_queued = st.queue.iter().any(|b| b.seq.is_some());
    let Some(front) = st.queue.front_mut() else {
        return Numbered::Wait;
    };
    if front.seq.is_some() {
        return Numbered::Send;
    }
    if st.run != Some(identity) {
        // A newer epoch starts a new run once the old one is settled.
        if st.run.is_some() && (!st.in_flight.is_empty() || numbered_queued) {
            if let Some(run) = st.run {
                front.seq = Some(Sequence {
                    identity: run,
                    base: st.next_seq,
                });
                st.next_seq = strand_storage::next_sequence(st.next_seq, front.record_count() as u32);
            }
            return Numbered::Send;
        }
        st.run = Some(identity);
        st.next_seq = 0;
    }
    front.seq = Some(Sequence {
        identity,
        base: st.next_seq,
    });
    st.next_seq = strand_storage::next_sequence(st.next_seq, front.record_count() as u32);
    Numbered::Send
}

/// Gives a batch sent for the first time its place, and writes its
/// numbering into its bytes when that changed.
fn prepare(st: &mut PartitionQueue, b: &mut ProducerBatch) -> Result<()> {
    // Sent again: what the last answer said no longer holds.
    b.unwritten = false;
    if b.ord.is_none() {
        b.ord = Some(st.next_ord);
        st.next_ord += 1;
    }
    if let Some(seq) = b.seq {
        let current = strand_storage::BatchRef::trusted(&b.bytes)
            .ok()
            .and_then(|v| v.producer());
        let wanted = strand_storage::ProducerInfo {
            producer_id: seq.identity.0,
            producer_epoch: seq.identity.1,
            base_sequence: seq.base,
        };
        if current != Some(wanted) {
            b.bytes = idempotence::stamp(std::mem::take(&mut b.bytes), seq)?;
        }
    }
    Ok(())
}

fn timeout_error(b: &ProducerBatch, limit: Duration) -> ClientError {
    let last = b
        .last_error
        .as_ref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default();
    ClientError::Timeout {
        what: format!(
            "delivery of {} records to {}/{}{last}",
            b.record_count(),
            b.topic,
            b.partition
        ),
        after: limit,
    }
}
