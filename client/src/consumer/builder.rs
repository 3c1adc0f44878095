//! Consumer settings, with Kafka-like defaults.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::fetcher::{FetchConfig, Fetcher};
use super::{Consumer, OffsetReset};
use crate::connection::ConnectionConfig;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::retry::Backoff;

/// Builds a [`Consumer`]. Every setting has a default; see each method.
///
/// ```no_run
/// # async fn f() -> strand_client::Result<()> {
/// use std::time::Duration;
/// use strand_client::{Consumer, OffsetReset};
///
/// let mut consumer = Consumer::builder("127.0.0.1:9292")
///     .auto_offset_reset(OffsetReset::Earliest)
///     .max_wait(Duration::from_millis(200))
///     .build()
///     .await?;
/// consumer.assign_all("orders").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .build().await"]
pub struct ConsumerBuilder {
    bootstrap: String,
    max_wait: Duration,
    fetch_max_bytes: usize,
    partition_max_bytes: usize,
    auto_offset_reset: OffsetReset,
    backoff: Backoff,
    connection: ConnectionConfig,
}

impl ConsumerBuilder {
    pub(crate) fn new(bootstrap: String) -> Self {
        ConsumerBuilder {
            bootstrap,
            max_wait: Duration::from_millis(500),
            fetch_max_bytes: 4 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            backoff: Backoff::default(),
            connection: ConnectionConfig::default(),
        }
    }

    /// How long a fetch may wait at the broker for records. Default 500 ms.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Upper bound on the record bytes of one fetch answer (the broker always
    /// returns at least one batch). Default 4 MiB; at most `u32::MAX`.
    pub fn fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.fetch_max_bytes = bytes;
        self
    }

    /// Upper bound on the record bytes per partition in one fetch answer.
    /// Default 1 MiB; at most `u32::MAX`.
    pub fn partition_max_bytes(mut self, bytes: usize) -> Self {
        self.partition_max_bytes = bytes;
        self
    }

    /// Where a partition starts when assigned, or when its position is out of
    /// range. Default [`OffsetReset::Latest`].
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }

    /// Delay before retrying a failed fetch; doubles per failure up to 1 s
    /// (or this, if larger), with ±20 % jitter. Default 100 ms.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.backoff.initial = backoff;
        self.backoff.max = self.backoff.max.max(backoff);
        self
    }

    /// How long to wait for an answer beyond `max_wait`. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.connection.request_timeout = timeout;
        self
    }

    /// How long to wait for a connection to a broker. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection.connect_timeout = timeout;
        self
    }

    /// Checks the settings and loads metadata from the first bootstrap broker
    /// that answers. Nothing is assigned yet.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an unusable setting;
    /// [`ClientError::Connect`] if no bootstrap broker answers.
    pub async fn build(self) -> Result<Consumer> {
        let fetch = self.fetch_config()?;
        let md = Metadata::connect(&self.bootstrap, self.connection).await?;
        Ok(Consumer {
            md,
            auto_offset_reset: self.auto_offset_reset,
            assignment: BTreeMap::new(),
            fetcher: Fetcher::new(fetch),
            buffered: VecDeque::new(),
            pending_error: None,
            refresh_wanted: false,
        })
    }

    fn fetch_config(&self) -> Result<FetchConfig> {
        let bytes = |name: &str, v: usize| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ClientError::invalid(format!("{name} must be between 1 and {} bytes", u32::MAX)))
        };
        for (name, d) in [
            ("request_timeout", self.connection.request_timeout),
            ("connect_timeout", self.connection.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(ClientError::invalid(format!("{name} must be positive")));
            }
        }
        Ok(FetchConfig {
            max_wait: self.max_wait,
            fetch_max_bytes: bytes("fetch_max_bytes", self.fetch_max_bytes)?,
            partition_max_bytes: bytes("partition_max_bytes", self.partition_max_bytes)?,
            request_timeout: self.connection.request_timeout,
            backoff: self.backoff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let b = ConsumerBuilder::new("x:1".into());
        let c = b.fetch_config().expect("defaults are valid");
        assert_eq!(c.max_wait, Duration::from_millis(500));
        assert_eq!((c.fetch_max_bytes, c.partition_max_bytes), (4 << 20, 1 << 20));
        assert_eq!(b.auto_offset_reset, OffsetReset::Latest);
    }

    #[test]
    fn unusable_sizes_are_refused() {
        for (name, b) in [
            ("fetch_max_bytes", ConsumerBuilder::new("x:1".into()).fetch_max_bytes(0)),
            (
                "partition_max_bytes",
                ConsumerBuilder::new("x:1".into()).partition_max_bytes(u32::MAX as usize + 1),
            ),
        ] {
            let err = b.fetch_config().expect_err(name);
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }
}
