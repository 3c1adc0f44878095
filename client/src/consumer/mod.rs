//! The consumer: reads partitions from a position, with long-polling
//! fetches to the partition leaders.
//!
//! Two ways to get partitions:
//! - [`Consumer::assign`]: the application picks partitions and positions
//!   itself ([`Consumer::seek`]);
//! - [`Consumer::subscribe`] (with [`ConsumerBuilder::group`]): the group's
//!   coordinator splits the topics' partitions between the members of the
//!   group, positions start at the group's committed offsets, and
//!   [`Consumer::commit`] (or auto-commit) records progress. Committing
//!   after processing gives at-least-once processing: after a crash or a
//!   rebalance, the records since the last commit are delivered again.

mod builder;
mod fetcher;
mod group;
mod membership;
mod record;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use strand_proto::v1::ErrorCode;

pub use builder::ConsumerBuilder;
pub use membership::RebalanceEvent;
pub use record::ConsumerRecord;

use membership::{GroupSettings, Membership};

use fetcher::{FetchOutcome, Fetcher, Requested, RequestedIndex, decode_records};

use crate::coordinator::Coordinator;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::offsets::{OffsetSpec, list_offsets};
use crate::retry::Backoff;

/// Offset lookups one consumer keeps in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 32;

/// Where to start when a partition has no valid position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OffsetReset {
    /// The first stored offset.
    Earliest,
    /// The end of the log: only records produced from now on (the default,
    /// as in Kafka).
    #[default]
    Latest,
    /// No automatic position: [`Consumer::poll`] fails with `NO_OFFSET` or
    /// the broker's `OFFSET_OUT_OF_RANGE` until [`Consumer::seek`] is called.
    None,
}

/// A position to [`Consumer::seek`] to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offset {
    /// The first stored offset.
    Beginning,
    /// The end of the log (the high watermark).
    End,
    /// This offset.
    At(u64),
    /// The first record with a timestamp at or after this (ms since the
    /// epoch); the end of the log if every record is older.
    Timestamp(i64),
}

#[derive(Debug, Default)]
struct AssignedPartition {
    /// Next offset to fetch; `None` until reset or sought.
    position: Option<u64>,
    /// The id of the topic the position belongs to (sent with every fetch
    /// and commit, so a position is never applied to a topic created again
    /// under the same name); `None` until known.
    topic_id: Option<Arc<str>>,
    high_watermark: Option<u64>,
    log_start_offset: Option<u64>,
    in_flight: bool,
}

/// Reads records from assigned partitions.
///
/// Not `Clone`: one consumer tracks one set of positions. All methods take
/// `&mut self`; [`Consumer::poll`] is cancel-safe (a dropped poll loses no
/// records: fetches in flight are kept and handled by the next poll).
pub struct Consumer {
    md: Arc<Metadata>,
    auto_offset_reset: OffsetReset,
    assignment: BTreeMap<Arc<str>, BTreeMap<u32, AssignedPartition>>,
    fetcher: Fetcher,
    /// Records fetched but not yet handed out by [`Consumer::stream`].
    buffered: VecDeque<ConsumerRecord>,
    /// An error to report on the next poll (records came first).
    pending_error: Option<ClientError>,
    refresh_wanted: bool,
    /// Set with [`ConsumerBuilder::group`].
    group: Option<GroupMode>,
}

/// A rebalance listener.
pub type RebalanceListener = Arc<dyn Fn(&RebalanceEvent) + Send + Sync>;

struct GroupMode {
    settings: GroupSettings,
    coordinator: Arc<Coordinator>,
    /// Running once subscribed.
    membership: Option<Membership>,
    listener: Option<RebalanceListener>,
    last_auto_commit: std::time::Instant,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("assignment", &self.assignment)
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A builder for a consumer that bootstraps from `bootstrap`,
    /// `"host:port[,host:port...]"`.
    pub fn builder(bootstrap: impl Into<String>) -> ConsumerBuilder {
        ConsumerBuilder::new(bootstrap.into())
    }

    /// Assigns `partitions` of `topic`, replacing this topic's previous
    /// assignment (other topics stay assigned). Partitions already assigned
    /// keep their position; new ones start at `auto_offset_reset`, resolved
    /// now (so with `Latest`, records produced after this call are read).
    /// An empty list unassigns the topic.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, or a failure resolving the
    /// start offsets; the assignment is unchanged then.
    pub async fn assign(&mut self, topic: &str, partitions: &[u32]) -> Result<()> {
        if self.subscribed() {
            return Err(ClientError::invalid(
                "this consumer is subscribed: the group assigns its partitions",
            ));
        }
        let n = self.lookups().partition_count(topic).await?;
        if let Some(p) = partitions.iter().find(|p| **p >= n) {
            return Err(ClientError::broker(
                ErrorCode::UnknownPartition,
                format!("topic {topic:?} has {n} partitions, not {p}"),
            ));
        }
        let mut wanted: Vec<u32> = partitions.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let existing = self.assignment.get(topic);
        let new: Vec<u32> = wanted
            .iter()
            .copied()
            .filter(|p| !existing.is_some_and(|m| m.contains_key(p)))
            .collect();
        let lookups = self.lookups();
        let named: Arc<str> = Arc::from(topic);
        let starts = lookups
            .reset_positions(new.iter().map(|p| (named.clone(), *p)).collect())
            .await;
        let starts = starts.into_iter().collect::<Result<Vec<_>>>()?;
        let topic_id = self.md.topic_id(topic);

        let key = match self.assignment.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => Arc::from(topic),
        };
        let mut states = self.assignment.remove(topic).unwrap_or_default();
        states.retain(|p, _| wanted.binary_search(p).is_ok());
        for (p, position) in new.into_iter().zip(starts) {
            states.insert(
                p,
                AssignedPartition {
                    position,
                    topic_id: topic_id.clone(),
                    ..Default::default()
                },
            );
        }
        self.buffered
            .retain(|r| &*r.topic != topic || wanted.binary_search(&r.partition).is_ok());
        if !states.is_empty() {
            self.assignment.insert(key, states);
        }
        Ok(())
    }

    /// Assigns every partition of `topic` (see [`Consumer::assign`]).
    ///
    /// # Errors
    /// As `assign`.
    pub async fn assign_all(&mut self, topic: &str) -> Result<()> {
        let n = self.lookups().partition_count(topic).await?;
        let all: Vec<u32> = (0..n).collect();
        self.assign(topic, &all).await
    }

    /// The assigned partitions, ordered by topic and partition.
    pub fn assignment(&self) -> Vec<(Arc<str>, u32)> {
        self.assignment
            .iter()
            .flat_map(|(t, ps)| ps.keys().map(move |p| (t.clone(), *p)))
            .collect()
    }

    /// Moves the position of an assigned partition. `Beginning`, `End` and
    /// `Timestamp` ask the leader (`ListOffsets`); `At` is taken as is and
    /// checked by the next fetch.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] if the partition is not assigned; a
    /// failed offset lookup.
    pub async fn seek(&mut self, topic: &str, partition: u32, offset: Offset) -> Result<()> {
        if self.state(topic, partition).is_none() {
            return Err(ClientError::invalid(format!("{topic}/{partition} is not assigned")));
        }
        let lookups = self.lookups();
        let position = match offset {
            Offset::At(n) => n,
            Offset::Beginning => lookups.offset(topic, partition, OffsetSpec::Earliest).await?,
            Offset::End => lookups.offset(topic, partition, OffsetSpec::Latest).await?,
            Offset::Timestamp(ms) => lookups.offset(topic, partition, OffsetSpec::Timestamp(ms)).await?,
        };
        if let Some(st) = self.state_mut(topic, partition) {
            st.position = Some(position);
        }
        self.buffered
            .retain(|r| !(&*r.topic == topic && r.partition == partition));
        Ok(())
    }

    /// The offset of the next record `poll` returns for the partition;
    /// `None` if it is not assigned or has no position.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        let buffered = self
            .buffered
            .iter()
            .find(|r| &*r.topic == topic && r.partition == partition)
            .map(|r| r.offset);
        buffered.or_else(|| self.state(topic, partition)?.position)
    }

    /// The partition's high watermark as of the last fetch (`None` before
    /// one). `high_watermark - position` is the consumer's lag.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.state(topic, partition)?.high_watermark
    }

    /// The first stored offset of the partition as of the last fetch.
    pub fn log_start_offset(&self, topic: &str, partition: u32) -> Option<u64> {
        self.state(topic, partition)?.log_start_offset
    }

    /// Fetches from every assigned partition and returns the records that
    /// arrived, in offset order per partition, and advances the positions
    /// past them. Waits up to `max_wait` for data (an empty result then
    /// means no new records).
    ///
    /// Retriable failures (a moved leader, a lost connection) are handled
    /// inside: metadata is refreshed and the fetch retried with backoff on a
    /// later poll. `OFFSET_OUT_OF_RANGE` moves the position per
    /// `auto_offset_reset`.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] with nothing assigned;
    /// [`ClientError::NoOffset`], `OFFSET_OUT_OF_RANGE` (with `auto_offset_reset`
    /// `None`), `CORRUPT_BATCH`, or another non-retriable broker error. When
    /// records arrived with the error, the records come first and the error
    /// on the next poll.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.subscribed() {
            self.reconcile().await?;
            self.maybe_auto_commit().await;
            if self.assignment.is_empty() && self.buffered.is_empty() {
                // Nothing assigned (yet): wait for the group, then let the
                // next poll apply what changed.
                let wait = self.fetcher.config().max_wait;
                if let Some(m) = self.group.as_mut().and_then(|g| g.membership.as_mut()) {
                    let _ = tokio::time::timeout(wait, m.changed.changed()).await;
                }
                return Ok(Vec::new());
            }
        }
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        if self.assignment.is_empty() {
            return Err(ClientError::invalid("no partitions assigned: call assign first"));
        }
        if self.refresh_wanted {
            self.refresh_wanted = false;
            let topics: Vec<Arc<str>> = self.assignment.keys().cloned().collect();
            let topics: Vec<&str> = topics.iter().map(|t| &**t).collect();
            if let Err(e) = self.md.refresh(&topics).await {
                tracing::warn!(error = %e, "consumer metadata refresh failed");
            }
        }
        self.resolve_positions().await?;
        self.start_fetches();
        let Some(first) = self.fetcher.next().await else {
            // No partition has a known leader: refresh and try again later.
            self.refresh_wanted = true;
            tokio::time::sleep(self.fetcher.config().backoff.delay(1)).await;
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        self.handle(first, &mut out);
        while let Some(more) = self.fetcher.next_ready() {
            self.handle(more, &mut out);
        }
        if out.is_empty()
            && let Some(e) = self.pending_error.take()
        {
            return Err(e);
        }
        Ok(out)
    }

    /// The records of successive polls as a stream. It never ends by
    /// itself; errors are yielded as items and polling goes on if the stream
    /// is polled again. Records fetched but not yet yielded when the stream
    /// is dropped are returned by the next `poll`.
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumerRecord>> + '_ {
        futures::stream::unfold(self, |c| async move {
            loop {
                if let Some(r) = c.buffered.pop_front() {
                    return Some((Ok(r), c));
                }
                match c.poll().await {
                    Ok(records) => c.buffered.extend(records),
                    Err(e) => return Some((Err(e), c)),
                }
            }
        })
    }

    /// Sends a fetch to each leader for the assigned partitions that have a
    /// position and no fetch in flight.
    fn start_fetches(&mut self) {
        let mut by_leader: HashMap<Arc<str>, Vec<Requested>> = HashMap::new();
        for (topic, partitions) in &mut self.assignment {
            for (p, st) in partitions.iter_mut() {
                let Some(position) = st.position else { continue };
                if st.in_flight {
                    continue;
                }
                let Some(leader) = self.md.leader(topic, *p) else {
                    self.refresh_wanted = true;
                    continue;
                };
                st.in_flight = true;
                by_leader.entry(leader).or_default().push(Requested {
                    topic: topic.clone(),
                    topic_id: st.topic_id.clone(),
                    partition: *p,
                    offset: position,
                });
            }
        }
        for (addr, requested) in by_leader {
            self.fetcher.start(self.md.clone(), addr, requested);
        }
    }

    /// Applies one finished fetch: new positions, watermarks, records, errors.
    fn handle(&mut self, outcome: FetchOutcome, out: &mut Vec<ConsumerRecord>) {
        let FetchOutcome {
            addr,
            requested,
            result,
            ..
        } = outcome;
        for r in &requested {
            if let Some(st) = self.state_mut(&r.topic, r.partition) {
                st.in_flight = false;
            }
        }
        let response = match result {
            Ok(resp) => resp,
            Err(e) if e.is_retriable() => {
                tracing::warn!(broker = %addr, error = %e, "fetch failed; will retry");
                self.fetcher.record_failure(&addr);
                if e.needs_metadata_refresh() {
                    self.md.conns().invalidate(&addr);
                    self.refresh_wanted = true;
                }
                return;
            }
            Err(e) => {
                self.pending_error.get_or_insert(e);
                return;
            }
        };
        let mut leader_moved = false;
        let index = RequestedIndex::new(&requested, response.partitions.len());
        for (i, data) in response.partitions.iter().enumerate() {
            let Some(req) = index.get(i, &data.topic, data.partition) else {
                tracing::warn!(
                    topic = %data.topic, partition = data.partition,
                    "fetch answered a partition it was not asked for"
                );
                continue;
            };
            let reset = self.auto_offset_reset;
            let Some(st) = self.state_mut(&req.topic, req.partition) else {
                continue; // unassigned meanwhile
            };
            if st.position != Some(req.offset) {
                continue; // sought meanwhile: the data is for an old position
            }
            st.high_watermark = Some(data.high_watermark);
            st.log_start_offset = Some(data.log_start_offset);
            let error = data
                .error
                .as_ref()
                .and_then(|e| ClientError::from_partition_error(e, &req.topic, req.partition, req.offset));
            match error {
                None => {
                    let decoded = decode_records(&req.topic, req.partition, &data.records, req.offset, out);
                    st.position = Some(decoded.next_position);
                    if let Some(e) = decoded.error {
                        self.pending_error.get_or_insert(e);
                    }
                }
                Some(ClientError::OffsetOutOfRange { earliest, latest, .. }) if reset != OffsetReset::None => {
                    let to = if reset == OffsetReset::Earliest {
                        earliest
                    } else {
                        latest
                    };
                    tracing::info!(
                        topic = %req.topic, partition = req.partition, from = req.offset, to,
                        "offset out of range; resetting per auto_offset_reset"
                    );
                    st.position = Some(to);
                }
                Some(e) if e.code() == Some(ErrorCode::UnknownTopicId) => {
                    // The topic was deleted, or deleted and created again:
                    // the position belongs to the old one. Say so once, and
                    // start over on the topic by that name as a new
                    // assignment would (auto_offset_reset).
                    tracing::warn!(
                        topic = %req.topic, partition = req.partition, offset = req.offset,
                        "the topic was deleted or created again; its position is dropped"
                    );
                    st.position = None;
                    st.topic_id = None;
                    self.refresh_wanted = true;
                    self.pending_error.get_or_insert(e);
                }
                Some(e) if e.is_retriable() => {
                    if e.code() == Some(ErrorCode::NotLeader)
                        && let Some(hint) = data.error.as_ref().map(|x| x.leader_addr.as_str())
                        && !hint.is_empty()
                    {
                        self.md.set_leader(&req.topic, req.partition, hint);
                    }
                    leader_moved = true;
                }
                Some(e) => {
                    self.pending_error.get_or_insert(e);
                }
            }
        }
        if leader_moved {
            // Back off this broker so a stale leader is not asked in a tight loop.
            self.fetcher.record_failure(&addr);
            self.refresh_wanted = true;
        } else {
            self.fetcher.record_success(&addr);
        }
    }

    /// Gives a start position to assigned partitions without one.
    async fn resolve_positions(&mut self) -> Result<()> {
        let missing: Vec<(Arc<str>, u32)> = self
            .assignment
            .iter()
            .flat_map(|(t, ps)| {
                ps.iter()
                    .filter(|(_, st)| st.position.is_none())
                    .map(|(p, _)| (t.clone(), *p))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let lookups = self.lookups();
        let found = lookups.reset_positions(missing.clone()).await;
        for ((t, p), position) in missing.iter().zip(found) {
            match position? {
                Some(pos) => {
                    let topic_id = self.md.topic_id(t);
                    if let Some(st) = self.state_mut(t, *p) {
                        st.position = Some(pos);
                        if st.topic_id.is_none() {
                            st.topic_id = topic_id;
                        }
                    }
                }
                None => {
                    return Err(ClientError::NoOffset {
                        topic: t.to_string(),
                        partition: *p,
                    });
                }
            }
        }
        Ok(())
    }

    fn lookups(&self) -> Lookups {
        let c = self.fetcher.config();
        Lookups {
            md: self.md.clone(),
            reset: self.auto_offset_reset,
            backoff: c.backoff,
            limit: c.request_timeout,
        }
    }

    fn state(&self, topic: &str, partition: u32) -> Option<&AssignedPartition> {
        self.assignment.get(topic)?.get(&partition)
    }

    fn state_mut(&mut self, topic: &str, partition: u32) -> Option<&mut AssignedPartition> {
        self.assignment.get_mut(topic)?.get_mut(&partition)
    }
}

/// Offset and metadata lookups, detached from the [`Consumer`] so that its
/// futures stay `Send` (the consumer itself is not `Sync`).
struct Lookups {
    md: Arc<Metadata>,
    reset: OffsetReset,
    backoff: Backoff,
    limit: Duration,
}

impl Lookups {
    /// `reset_position` of each partition, in order, with a bounded number
    /// of lookups in flight: thousands of concurrent calls on one connection
    /// would flood it with small frames (h2 closes such a connection with
    /// `ENHANCE_YOUR_CALM`), for no gain over a few dozen.
    async fn reset_positions(&self, partitions: Vec<(Arc<str>, u32)>) -> Vec<Result<Option<u64>>> {
        futures::stream::iter(partitions)
            .map(|(t, p)| async move { self.reset_position(&t, p).await })
            .buffered(LOOKUPS_IN_FLIGHT)
            .collect()
            .await
    }

    /// The start offset `auto_offset_reset` gives a partition, if any.
    async fn reset_position(&self, topic: &str, partition: u32) -> Result<Option<u64>> {
        let spec = match self.reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::None => return Ok(None),
        };
        self.offset(topic, partition, spec).await.map(Some)
    }

    async fn offset(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<u64> {
        let found = list_offsets(&self.md, topic, partition, spec, self.backoff, self.limit).await?;
        Ok(found.offset)
    }

    /// The topic's partition count, fresh from a broker.
    async fn partition_count(&self, topic: &str) -> Result<u32> {
        let report = self.md.refresh(&[topic]).await?;
        if let Some(e) = report.error_for(topic) {
            return Err(e.clone());
        }
        self.md
            .partition_count(topic)
            .ok_or_else(|| ClientError::broker(ErrorCode::UnknownTopic, format!("topic {topic:?} does not exist")))
    }
}
