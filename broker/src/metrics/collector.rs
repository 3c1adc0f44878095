//! Gauges read at scrape time: per partition (offsets, size, leadership,
//! term, under-replication), per consumer group (members, committed
//! offsets, lag) and per share group (members; records in flight,
//! acquired, available, delayed, archived, redelivered), so an idle broker
//! does no metrics work.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};

use super::security::SecurityCounts;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Metrics;
use crate::groups::GroupCoordinator;
use crate::groups::share::views::ShareMetricsRow;
use crate::groups::views::GroupPartitionRow;
use crate::node::Node;
use crate::partition::PartitionOffsets;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    topic: String,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPartitionLabel {
    group: String,
    topic: String,
    partition: u32,
}

impl GroupPartitionLabel {
    fn of(r: &GroupPartitionRow) -> Self {
        GroupPartitionLabel {
            group: r.group.clone(),
            topic: r.topic.clone(),
            partition: r.partition,
        }
    }
}

/// One hosted replica's gauges.
#[derive(Clone, Debug)]
pub struct PartitionRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offsets and sizes.
    pub offsets: PartitionOffsets,
    /// Whether this broker leads it.
    pub is_leader: bool,
    /// Raft term.
    pub term: u64,
    /// Leads it with a replica out of sync.
    pub under_replicated: bool,
    /// This replica is recovering (no votes until brought up to date).
    pub recovering: bool,
    /// This replica's storage failed: it stopped.
    pub failed: bool,
}

/// Everything the scrape-time gauges show, read once per scrape.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Hosted replicas.
    pub partitions: Vec<PartitionRow>,
    /// Leader changes seen by this broker's replicas.
    pub leader_changes: u64,
    /// Members per consumer group coordinated here.
    pub group_members: Vec<(String, usize)>,
    /// Committed offsets and lag of those groups.
    pub group_offsets: Vec<GroupPartitionRow>,
    /// Client connections open now.
    pub open_connections: i64,
    /// Members per share group coordinated here.
    pub share_members: Vec<(String, usize)>,
    /// Counts per share-partition of those groups.
    pub share_partitions: Vec<ShareMetricsRow>,
    /// Authentication, authorization and quota counters.
    pub security: SecurityCounts,
}

impl Snapshot {
    /// Reads the node's replicas and the coordinator's groups.
    pub fn read(node: &Node, groups: &GroupCoordinator, open_connections: i64) -> Self {
        let parts = node.all_partitions();
        let (group_members, group_offsets) = groups.metrics_rows();
        let (share_members, share_partitions) = groups.share_metrics_rows();
        Snapshot {
            leader_changes: parts.iter().map(|p| p.leader_changes()).sum(),
            partitions: parts
                .iter()
                .map(|p| {
                    let status = p.status();
                    PartitionRow {
                        topic: p.topic().to_string(),
                        partition: p.id(),
                        offsets: p.offsets(),
                        is_leader: status.is_leader,
                        term: status.term.get(),
                        under_replicated: p.under_replicated(),
                        recovering: status.recovering,
                        failed: status.failed,
                    }
                })
                .collect(),
            group_members,
            group_offsets,
            open_connections,
            share_members,
            share_partitions,
            security: SecurityCounts {
                tls_handshake_failures: node.security().audit().handshake_failures(),
                authentication_failures: node.security().audit().authentication_failures(),
                authorization_denials: node.security().audit().denials(),
                throttled: node.security().throttle().throttled(),
            },
        }
    }
}

fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (label, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(label)?)?;
    }
    Ok(())
}

fn partition_gauge(
    encoder: &mut DescriptorEncoder,
    s: &Snapshot,
    name: &str,
    help: &str,
    value: impl Fn(&PartitionRow) -> i64,
) -> Result<(), std::fmt::Error> {
    let rows: Vec<(PartitionLabel, i64)> = s
        .partitions
        .iter()
        .map(|p| {
            let label = PartitionLabel {
                topic: p.topic.clone(),
                partition: p.partition,
            };
            (label, value(p))
        })
        .collect();
    gauge_family(encoder, name, help, &rows)
}

/// Encodes a snapshot's gauges (pure: what a scrape shows for this state).
pub fn encode_snapshot(s: &Snapshot, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let e = &mut encoder;
    partition_gauge(
        e,
        s,
        "strand_partition_log_end_offset",
        "Offset after the last stored record",
        |p| p.offsets.log_end_offset.get() as i64,
    )?;
    partition_gauge(
        e,
        s,
        "strand_partition_high_watermark",
        "Offset after the last committed record",
        |p| p.offsets.high_watermark.get() as i64,
    )?;
    partition_gauge(e, s, "strand_partition_size_bytes", "Bytes of log stored", |p| {
        p.offsets.size_bytes as i64
    })?;
    partition_gauge(
        e,
        s,
        "strand_partition_active_producers",
        "Idempotent producer ids the partition remembers (not expired)",
        |p| i64::from(p.offsets.active_producers),
    )?;
    partition_gauge(
        e,
        s,
        "strand_partition_is_leader",
        "1 when this broker leads the partition",
        |p| i64::from(p.is_leader),
    )?;
    partition_gauge(
        e,
        s,
        "strand_raft_term",
        "Current Raft term of the partition's group",
        |p| p.term as i64,
    )?;
    partition_gauge(
        e,
        s,
        "strand_partition_under_replicated",
        "1 on the leader while a replica is down or lagging",
        |p| i64::from(p.under_replicated),
    )?;
    partition_gauge(
        e,
        s,
        "strand_replica_recovering",
        "1 while this replica recovers a lost or damaged log (it takes no part in elections)",
        |p| i64::from(p.recovering),
    )?;
    partition_gauge(
        e,
        s,
        "strand_replica_failed",
        "1 when this replica's storage failed and it stopped (until the broker restarts)",
        |p| i64::from(p.failed),
    )?;
    let under_total = s.partitions.iter().filter(|p| p.under_replicated).count() as i64;
    let m = e.encode_descriptor(
        "strand_under_replicated_partitions",
        "Partitions led here with a lagging replica",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(under_total).encode(m)?;
    let m = e.encode_descriptor(
        "strand_raft_leader_changes",
        "Leader changes seen by this broker's replicas",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(s.leader_changes).encode(m)?;
    let members: Vec<(GroupLabel, i64)> = s
        .group_members
        .iter()
        .map(|(group, n)| (GroupLabel { group: group.clone() }, *n as i64))
        .collect();
    gauge_family(
        e,
        "strand_consumer_group_members",
        "Members of each consumer group coordinated by this broker",
        &members,
    )?;
    let committed: Vec<(GroupPartitionLabel, i64)> = s
        .group_offsets
        .iter()
        .map(|r| (GroupPartitionLabel::of(r), r.committed.get() as i64))
        .collect();
    gauge_family(
        e,
        "strand_consumer_group_committed_offset",
        "Committed offset per group and partition (groups coordinated here)",
        &committed,
    )?;
    let lag: Vec<(GroupPartitionLabel, i64)> = s
        .group_offsets
        .iter()
        .filter_map(|r| Some((GroupPartitionLabel::of(r), r.lag? as i64)))
        .collect();
    gauge_family(
        e,
        "strand_consumer_group_lag",
        "High watermark minus committed offset per group and partition (partitions hosted here)",
        &lag,
    )?;
    encode_shares(e, s)?;
    super::security::encode(e, &s.security)?;
    let m = e.encode_descriptor(
        "strand_open_connections",
        "Client connections open now",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(s.open_connections).encode(m)
}

fn encode_shares(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    let members: Vec<(GroupLabel, i64)> = s
        .share_members
        .iter()
        .map(|(group, n)| (GroupLabel { group: group.clone() }, *n as i64))
        .collect();
    gauge_family(
        e,
        "strand_share_group_members",
        "Members of each share group coordinated by this broker",
        &members,
    )?;
    let label = |r: &ShareMetricsRow| GroupPartitionLabel {
        group: r.group.clone(),
        topic: r.topic.clone(),
        partition: r.partition,
    };
    type Count = fn(&crate::groups::share::state::ShareCounts) -> u64;
    let gauges: [(&str, &str, Count); 4] = [
        (
            "strand_share_partition_in_flight",
            "Records a share group read and has not finished (acquired, available, waiting for the dead-letter copy)",
            |c| c.in_flight,
        ),
        (
            "strand_share_partition_acquired",
            "Records locked to a share-group member now",
            |c| c.acquired,
        ),
        (
            "strand_share_partition_available",
            "Records a share-group member may acquire now",
            |c| c.available,
        ),
        (
            "strand_share_partition_delayed",
            "Records waiting for their delivery time",
            |c| c.delayed,
        ),
    ];
    for (name, help, value) in gauges {
        let rows: Vec<(GroupPartitionLabel, i64)> = s
            .share_partitions
            .iter()
            .map(|r| (label(r), value(&r.counts) as i64))
            .collect();
        gauge_family(e, name, help, &rows)?;
    }
    let counters: [(&str, &str, Count); 2] = [
        (
            "strand_share_partition_archived",
            "Records archived to the dead-letter topic (rejected, or out of deliveries) since the share-partition started",
            |c| c.archived,
        ),
        (
            "strand_share_partition_redelivered",
            "Deliveries after a record's first, since the share-partition started",
            |c| c.redelivered,
        ),
    ];
    for (name, help, value) in counters {
        let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
        for r in &s.share_partitions {
            ConstCounter::new(value(&r.counts)).encode(m.encode_family(&label(r))?)?;
        }
    }
    Ok(())
}

/// Reads the node and the coordinator at scrape time.
#[derive(Debug)]
struct ScrapeCollector {
    node: Weak<Node>,
    groups: Weak<GroupCoordinator>,
    open_connections: Arc<AtomicI64>,
}

impl Collector for ScrapeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (Some(node), Some(groups)) = (self.node.upgrade(), self.groups.upgrade()) else {
            return Ok(());
        };
        let snapshot = Snapshot::read(&node, &groups, self.open_connections.load(Ordering::Relaxed));
        encode_snapshot(&snapshot, encoder)
    }
}

/// A registry with the broker's instruments and the scrape-time collector.
pub fn registry(metrics: &Metrics, node: &Arc<Node>, groups: &Arc<GroupCoordinator>) -> Registry {
    let mut r = Registry::default();
    let m = metrics;
    r.register(
        "strand_produce_requests",
        "Produce requests (batches) per topic",
        m.produce_requests.clone(),
    );
    r.register(
        "strand_produce_records",
        "Records acknowledged per topic",
        m.produce_records.clone(),
    );
    r.register(
        "strand_produce_bytes",
        "Batch bytes acknowledged per topic",
        m.produce_bytes.clone(),
    );
    r.register(
        "strand_fetch_requests",
        "Partition reads served per topic",
        m.fetch_requests.clone(),
    );
    r.register(
        "strand_fetch_bytes",
        "Bytes served to consumers per topic",
        m.fetch_bytes.clone(),
    );
    r.register(
        "strand_request_duration_seconds",
        "Request latency by RPC",
        m.request_duration.clone(),
    );
    r.register_collector(Box::new(ScrapeCollector {
        node: Arc::downgrade(node),
        groups: Arc::downgrade(groups),
        open_connections: Arc::clone(&m.open_connections),
    }));
    r
}

#[cfg(test)]
mod tests {
    use strand_storage::Offset;

    use super::*;

    #[derive(Debug)]
    struct Fixed(Snapshot);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_snapshot(&self.0, encoder)
        }
    }

    #[test]
    fn a_scrape_shows_partition_and_group_gauges_with_their_labels() {
        let offsets = PartitionOffsets {
            log_start_offset: Offset(0),
            high_watermark: Offset(90),
            log_end_offset: Offset(100),
            size_bytes: 4096,
            active_producers: 2,
            segments: 1,
        };
        let snapshot = Snapshot {
            partitions: vec![PartitionRow {
                topic: "orders".into(),
                partition: 2,
                offsets,
                is_leader: true,
                term: 7,
                under_replicated: true,
                recovering: true,
                failed: false,
            }],
            leader_changes: 3,
            group_members: vec![("billing".into(), 2)],
            group_offsets: vec![GroupPartitionRow {
                group: "billing".into(),
                topic: "orders".into(),
                partition: 2,
                committed: Offset(80),
                lag: Some(10),
            }],
            open_connections: 5,
            share_members: vec![("workers".into(), 3)],
            share_partitions: vec![ShareMetricsRow {
                group: "workers".into(),
                topic: "orders".into(),
                partition: 2,
                counts: crate::groups::share::state::ShareCounts {
                    in_flight: 9,
                    acquired: 4,
                    available: 5,
                    delayed: 2,
                    archived: 1,
                    redelivered: 6,
                },
            }],
            security: SecurityCounts {
                tls_handshake_failures: 4,
                authorization_denials: vec![("User:eve".into(), 2)],
                authentication_failures: vec![("User:mallory".into(), 7)],
                throttled: vec![(
                    "User:greedy".into(),
                    crate::security::quota::QuotaKind::Produce,
                    crate::security::quota::Throttled {
                        responses: 3,
                        seconds: 1.5,
                    },
                )],
            },
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(snapshot)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            r#"strand_partition_log_end_offset{topic="orders",partition="2"} 100"#,
            r#"strand_partition_high_watermark{topic="orders",partition="2"} 90"#,
            r#"strand_raft_term{topic="orders",partition="2"} 7"#,
            r#"strand_partition_under_replicated{topic="orders",partition="2"} 1"#,
            r#"strand_replica_recovering{topic="orders",partition="2"} 1"#,
            r#"strand_replica_failed{topic="orders",partition="2"} 0"#,
            "strand_under_replicated_partitions 1",
            "strand_raft_leader_changes_total 3",
            r#"strand_consumer_group_members{group="billing"} 2"#,
            r#"strand_consumer_group_lag{group="billing",topic="orders",partition="2"} 10"#,
            "strand_open_connections 5",
            r#"strand_share_group_members{group="workers"} 3"#,
            r#"strand_share_partition_in_flight{group="workers",topic="orders",partition="2"} 9"#,
            r#"strand_share_partition_acquired{group="workers",topic="orders",partition="2"} 4"#,
            r#"strand_share_partition_available{group="workers",topic="orders",partition="2"} 5"#,
            r#"strand_share_partition_delayed{group="workers",topic="orders",partition="2"} 2"#,
            r#"strand_share_partition_archived_total{group="workers",topic="orders",partition="2"} 1"#,
            r#"strand_share_partition_redelivered_total{group="workers",topic="orders",partition="2"} 6"#,
            "strand_tls_handshake_failures_total 4",
            r#"strand_authorization_denied_total{principal="User:eve"} 2"#,
            r#"strand_authentication_failures_total{principal="User:mallory"} 7"#,
            r#"strand_quota_throttled_responses_total{principal="User:greedy",kind="produce"} 3"#,
            r#"strand_quota_throttle_seconds_total{principal="User:greedy",kind="produce"} 1.5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }
}
