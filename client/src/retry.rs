//! Retry timing: exponential backoff with jitter, and a helper that sends a
//! request to a partition's leader, refreshing metadata and retrying while
//! the failure is retriable.

use std::time::{Duration, Instant};

use crate::connection::Link as Channel;
use strand_proto::v1::ErrorCode;
use strand_proto::v1::strand_client::StrandClient;

use crate::error::{ClientError, Result};
use crate::metadata::Metadata;

/// Relative spread of a backoff delay (±20 %, as Kafka's clients do), so
/// clients that failed together do not retry together.
const JITTER: f64 = 0.2;

/// Exponential backoff: `initial`, doubling per attempt, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 1 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry),
    /// without jitter.
    pub(crate) fn base_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.initial
            .saturating_mul(1 << doublings)
            .min(self.max.max(self.initial))
    }

    /// [`Backoff::base_delay`] spread by ±20 % at random.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        self.base_delay(attempt)
            .mul_f64(rand::random_range(1.0 - JITTER..=1.0 + JITTER))
    }
}

/// Sends `call` to the leader of `topic`/`partition`; on a retriable error,
/// refreshes metadata when the leader may have moved and tries again after a
/// backoff, until `limit` has passed since the first attempt. The call is
/// about the topic by that name, whichever it is now: `UNKNOWN_TOPIC_ID`
/// (the cached id is an older topic's) refreshes and tries again too.
///
/// # Errors
/// `UNKNOWN_TOPIC` / `UNKNOWN_PARTITION` if the partition does not exist; the
/// last error once it is not retriable or `limit` passed.
pub(crate) async fn with_leader<T, F, Fut>(
    md: &Metadata,
    topic: &str,
    partition: u32,
    backoff: Backoff,
    limit: Duration,
    mut call: F,
) -> Result<T>
where
    F: FnMut(StrandClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let addr = leader_of(md, topic, partition).await?;
            let client = md.conns().strand(&addr).await?;
            let r = call(client).await;
            if let Err(e) = &r
                && e.needs_metadata_refresh()
            {
                md.conns().invalidate(&addr);
            }
            r
        }
        .await;
        match result {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retriable() || e.code() == Some(ErrorCode::UnknownTopicId) => {
                let delay = backoff.delay(attempt);
                if start.elapsed() + delay >= limit {
                    return Err(e);
                }
                tracing::debug!(topic, partition, attempt, error = %e, "retrying after a retriable error");
                if e.needs_metadata_refresh()
                    && let Err(refresh) = md.refresh(&[topic]).await
                {
                    tracing::debug!(topic, error = %refresh, "metadata refresh failed");
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The leader address of a partition, refreshing metadata once if the
/// partition or its leader is not cached.
async fn leader_of(md: &Metadata, topic: &str, partition: u32) -> Result<std::sync::Arc<str>> {
    let mut n = md.partitions_of(topic).await?;
    if partition >= n || md.leader(topic, partition).is_none() {
        let report = md.refresh(&[topic]).await?;
        if let Some(e) = report.error_for(topic) {
            return Err(e.clone());
        }
        n = md.partition_count(topic).unwrap_or(0);
    }
    if partition >= n {
        return Err(ClientError::broker(
            ErrorCode::UnknownPartition,
            format!("topic {topic:?} has {n} partitions, not {partition}"),
        ));
    }
    md.leader(topic, partition)
        .ok_or_else(|| ClientError::broker(ErrorCode::NotLeader, format!("no leader known for {topic}/{partition}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_initial_and_stops_at_max() {
        let b = Backoff::default();
        let want_ms = [100, 200, 400, 800, 1000, 1000];
        for (i, want) in want_ms.into_iter().enumerate() {
            let attempt = i as u32 + 1;
            assert_eq!(b.base_delay(attempt), Duration::from_millis(want), "attempt {attempt}");
        }
        assert_eq!(
            b.base_delay(u32::MAX),
            Duration::from_secs(1),
            "no overflow on huge attempts"
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let b = Backoff::default();
        for attempt in 1..50 {
            let base = b.base_delay(attempt);
            let d = b.delay(attempt);
            assert!(
                d >= base.mul_f64(0.79) && d <= base.mul_f64(1.21),
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
    }
}
