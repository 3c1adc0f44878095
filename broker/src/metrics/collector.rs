//! Gauges read at scrape time: per partition (offsets, size, leadership,
//! term, under-replication) and per consumer group (members, committed
//! offsets, lag), so an idle broker does no metrics work.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Metrics;
use crate::groups::GroupCoordinator;
use crate::groups::views::GroupPartitionRow;
use crate::node::Node;

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

/// Reads partition state at scrape time.
#[derive(Debug)]
struct PartitionCollector {
    node: Weak<Node>,
    groups: Weak<GroupCoordinator>,
    open_connections: Arc<AtomicI64>,
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

impl Collector for PartitionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (Some(node), Some(groups)) = (self.node.upgrade(), self.groups.upgrade()) else {
            return Ok(());
        };
        let parts = node.all_partitions();
        let mut leo = Vec::with_capacity(parts.len());
        let mut hw = Vec::with_capacity(parts.len());
        let mut size = Vec::with_capacity(parts.len());
        let mut leader = Vec::with_capacity(parts.len());
        let mut term = Vec::with_capacity(parts.len());
        let mut under = Vec::with_capacity(parts.len());
        let mut changes = 0u64;
        let mut under_total = 0i64;
        for p in &parts {
            let label = PartitionLabel {
                topic: p.topic().to_string(),
                partition: p.id(),
            };
            let st = p.offsets();
            let status = p.status();
            let lagging = p.under_replicated();
            under_total += i64::from(lagging);
            changes += p.leader_changes();
            leo.push((label.clone(), st.log_end_offset.get() as i64));
            hw.push((label.clone(), st.high_watermark.get() as i64));
            size.push((label.clone(), st.size_bytes as i64));
            leader.push((label.clone(), i64::from(status.is_leader)));
            term.push((label.clone(), status.term.get() as i64));
            under.push((label, i64::from(lagging)));
        }
        gauge_family(
            &mut encoder,
            "strand_partition_log_end_offset",
            "Offset after the last stored record",
            &leo,
        )?;
        gauge_family(
            &mut encoder,
            "strand_partition_high_watermark",
            "Offset after the last committed record",
            &hw,
        )?;
        gauge_family(
            &mut encoder,
            "strand_partition_size_bytes",
            "Bytes of log stored",
            &size,
        )?;
        gauge_family(
            &mut encoder,
            "strand_partition_is_leader",
            "1 when this broker leads the partition",
            &leader,
        )?;
        gauge_family(
            &mut encoder,
            "strand_raft_term",
            "Current Raft term of the partition's group",
            &term,
        )?;
        gauge_family(
            &mut encoder,
            "strand_partition_under_replicated",
            "1 on the leader while a replica is down or lagging",
            &under,
        )?;
        let m = encoder.encode_descriptor(
            "strand_under_replicated_partitions",
            "Partitions led here with a lagging replica",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(under_total).encode(m)?;
        let m = encoder.encode_descriptor(
            "strand_raft_leader_changes",
            "Leader changes seen by this broker's replicas",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(changes).encode(m)?;
        let (members, rows) = groups.metrics_rows();
        let members: Vec<(GroupLabel, i64)> = members
            .into_iter()
            .map(|(group, n)| (GroupLabel { group }, n as i64))
            .collect();
        gauge_family(
            &mut encoder,
            "strand_consumer_group_members",
            "Members of each consumer group coordinated by this broker",
            &members,
        )?;
        let committed: Vec<(GroupPartitionLabel, i64)> = rows
            .iter()
            .map(|r| (GroupPartitionLabel::of(r), r.committed.get() as i64))
            .collect();
        gauge_family(
            &mut encoder,
            "strand_consumer_group_committed_offset",
            "Committed offset per group and partition (groups coordinated here)",
            &committed,
        )?;
        let lag: Vec<(GroupPartitionLabel, i64)> = rows
            .iter()
            .filter_map(|r| Some((GroupPartitionLabel::of(r), r.lag? as i64)))
            .collect();
        gauge_family(
            &mut encoder,
            "strand_consumer_group_lag",
            "High watermark minus committed offset per group and partition (partitions hosted here)",
            &lag,
        )?;
        let m = encoder.encode_descriptor(
            "strand_open_connections",
            "Client connections open now",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.open_connections.load(Ordering::Relaxed)).encode(m)?;
        Ok(())
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
    r.register_collector(Box::new(PartitionCollector {
        node: Arc::downgrade(node),
        groups: Arc::downgrade(groups),
        open_connections: Arc::clone(&m.open_connections),
    }));
    r
}
