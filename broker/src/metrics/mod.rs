//! Prometheus metrics and health endpoints (`--metrics-listen`).
//!
//! Request counters and latency histograms ([`Metrics`]) are updated on the
//! request path (one atomic add per request, never per record);
//! per-partition and per-group gauges are read at scrape time
//! ([`collector`]), so an idle broker does no metrics work; [`http`] serves
//! them with the health endpoints.

pub mod collector;
pub mod http;
pub mod security;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

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
    pub open_connections: Arc<AtomicI64>,
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
            open_connections: Arc::new(AtomicI64::new(0)),
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
