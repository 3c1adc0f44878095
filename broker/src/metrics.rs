//! Prometheus metrics and health endpoints (`--metrics-listen`).
//!
//! Request counters and latency histograms are updated on the request path
//! (one atomic add per request, never per record); per-partition gauges (log
//! end offset, high watermark, size, leadership, term, under-replication)
//! are read from the partitions at scrape time, so an idle broker does no
//! metrics work.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::BrokerState;

/// Label set of per-topic counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Topic name.
    pub topic: String,
}

/// Label set of request histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabel {
    /// gRPC method.
    pub rpc: &'static str,
}

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
    fn of(r: &crate::group::GroupPartitionRow) -> Self {
        GroupPartitionLabel {
            group: r.group.clone(),
            topic: r.topic.clone(),
            partition: r.partition,
        }
    }
}

/// The broker's instruments.
#[derive(Debug)]
pub struct Metrics {
    /// Produce requests per topic (one per batch).
    pub produce_requests: Family<TopicLabel, Counter>,
    /// Records acknowledged per topic.
    pub produce_records: Family<TopicLabel, Counter>,
    /// Batch bytes acknowledged per topic.
    pub produce_bytes: Family<TopicLabel, Counter>,
    /// Fetch requests per topic (one per partition read).
    pub fetch_requests: Family<TopicLabel, Counter>,
    /// Bytes served per topic.
    pub fetch_bytes: Family<TopicLabel, Counter>,
    /// Request latency by RPC.
    pub request_duration: Family<RpcLabel, Histogram>,
    /// Client connections open now.
    pub open_connections: AtomicI64,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            produce_requests: Family::default(),
            produce_records: Family::default(),
            produce_bytes: Family::default(),
            fetch_requests: Family::default(),
            fetch_bytes: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            open_connections: AtomicI64::new(0),
        }
    }
}

/// Records a request's latency when dropped.
pub struct RequestTimer<'a> {
    metrics: &'a Metrics,
    rpc: &'static str,
    start: Instant,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .request_duration
            .get_or_create(&RpcLabel { rpc: self.rpc })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Times one request of `rpc`.
    pub fn time(&self, rpc: &'static str) -> RequestTimer<'_> {
        RequestTimer {
            metrics: self,
            rpc,
            start: Instant::now(),
        }
    }

    /// Counts `n` on `family` for `topic`.
    pub fn add(family: &Family<TopicLabel, Counter>, topic: &str, n: u64) {
        family
            .get_or_create(&TopicLabel {
                topic: topic.to_string(),
            })
            .inc_by(n);
    }
}

/// Reads partition state at scrape time.
#[derive(Debug)]
struct PartitionCollector {
    state: std::sync::Weak<BrokerState>,
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
        let Some(state) = self.state.upgrade() else {
            return Ok(());
        };
        let parts = state.all_partitions();
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
            let st = p.state();
            let status = p.status();
            let lagging = status.is_leader
                && status.replicas.iter().any(|r| {
                    !r.active || status.last_index.saturating_sub(r.matched) > crate::service::status::MAX_IN_SYNC_LAG
                });
            under_total += i64::from(lagging);
            changes += p.leader_changes();
            leo.push((label.clone(), st.log_end_offset as i64));
            hw.push((label.clone(), st.high_watermark as i64));
            size.push((label.clone(), st.size_bytes as i64));
            leader.push((label.clone(), i64::from(status.is_leader)));
            term.push((label.clone(), status.term as i64));
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
        let (members, rows) = state.groups.metrics_rows(&state);
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
            .map(|r| (GroupPartitionLabel::of(r), r.committed as i64))
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
        ConstGauge::new(state.metrics.open_connections.load(Ordering::Relaxed)).encode(m)?;
        Ok(())
    }
}

/// A registry with the broker's instruments and partition collector.
pub fn registry(state: &Arc<BrokerState>) -> Registry {
    let mut r = Registry::default();
    let m = &state.metrics;
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
        state: Arc::downgrade(state),
    }));
    r
}

/// Serves `/metrics`, `/health/live` and `/health/ready` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<BrokerState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;

    let registry = Arc::new(registry(&state));
    let metrics = {
        let registry = Arc::clone(&registry);
        move || {
            let registry = Arc::clone(&registry);
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        body,
                    ),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [("content-type", "text/plain")],
                        String::new(),
                    ),
                }
            }
        }
    };
    let ready = {
        let state = Arc::clone(&state);
        move || {
            let state = Arc::clone(&state);
            async move {
                match state.readiness() {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
