//! Consumer settings, with Kafka-like defaults.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::fetcher::{FetchConfig, Fetcher};
use super::membership::{GroupSettings, RebalanceEvent};
use super::{Consumer, GroupMode, OffsetReset, RebalanceListener};
use crate::connection::ConnectionConfig;
use crate::coordinator::Coordinator;
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
#[derive(Clone)]
#[must_use = "a builder does nothing until .build().await"]
pub struct ConsumerBuilder {
    bootstrap: String,
    max_wait: Duration,
    fetch_max_bytes: usize,
    partition_max_bytes: usize,
    auto_offset_reset: OffsetReset,
    backoff: Backoff,
    connection: ConnectionConfig,
    group: Option<String>,
    instance_id: Option<String>,
    client_id: String,
    session_timeout: Duration,
    assignor: String,
    auto_commit: Option<Duration>,
    max_poll_interval: Duration,
    listener: Option<RebalanceListener>,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("bootstrap", &self.bootstrap)
            .field("group", &self.group)
            .field("instance_id", &self.instance_id)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .finish_non_exhaustive()
    }
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
            group: None,
            instance_id: None,
            client_id: "strand-client".into(),
            session_timeout: Duration::from_secs(10),
            assignor: "cooperative-sticky".into(),
            auto_commit: Some(Duration::from_secs(5)),
            max_poll_interval: Duration::from_secs(300),
            listener: None,
        }
    }

    /// The consumer group to join with [`Consumer::subscribe`] (and to
    /// commit offsets for). Default: none.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Static membership: a stable id for this consumer instance (for
    /// example the host name). Restarted within the session timeout, it gets
    /// its partitions back with no rebalance. Default: none (dynamic).
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// A name for this client, shown by `strand group describe`. Default
    /// `strand-client`.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// How long the coordinator keeps a member that stopped heartbeating.
    /// Default 10 s (the broker allows 1 s ..= 5 min).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Assignment strategy: `range`, `roundrobin` or `cooperative-sticky`
    /// (the default). Every member of a group must use the same.
    pub fn assignor(mut self, name: impl Into<String>) -> Self {
        self.assignor = name.into();
        self
    }

    /// Commit the positions of what `poll` returned every `interval` (from
    /// within `poll`, so what the previous poll returned counts as
    /// processed), when partitions are revoked, and on close. `None` turns
    /// it off: commit with [`Consumer::commit`]. Default every 5 s.
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.auto_commit = interval;
        self
    }

    /// Leave the group when the application does not poll for this long,
    /// so a stuck consumer does not hold partitions. Default 5 min.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval;
        self
    }

    /// Called from inside `poll` when partitions are assigned, revoked or
    /// lost.
    pub fn on_rebalance(mut self, listener: impl Fn(&RebalanceEvent) + Send + Sync + 'static) -> Self {
        self.listener = Some(std::sync::Arc::new(listener));
        self
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

    /// TLS (and a client certificate) for every connection. Default:
    /// plaintext.
    pub fn security(mut self, security: crate::Security) -> Self {
        self.connection.security = security;
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
        let group = self.group_settings()?;
        let md = Metadata::connect(&self.bootstrap, self.connection.clone()).await?;
        let group = group.map(|settings| GroupMode {
            coordinator: std::sync::Arc::new(Coordinator::new(
                md.clone(),
                settings.group.clone(),
                self.backoff,
                fetch.request_timeout,
            )),
            settings,
            membership: None,
            listener: self.listener.clone(),
            last_auto_commit: std::time::Instant::now(),
        });
        Ok(Consumer {
            group,
            md,
            auto_offset_reset: self.auto_offset_reset,
            assignment: BTreeMap::new(),
            fetcher: Fetcher::new(fetch),
            buffered: VecDeque::new(),
            pending_error: None,
            refresh_wanted: false,
        })
    }

    fn group_settings(&self) -> Result<Option<GroupSettings>> {
        let Some(group) = &self.group else {
            return Ok(None);
        };
        if group.is_empty() {
            return Err(ClientError::invalid("the group id is empty"));
        }
        if self.session_timeout < Duration::from_millis(100) {
            return Err(ClientError::invalid("session_timeout must be at least 100 ms"));
        }
        if self.auto_commit.is_some_and(|d| d.is_zero()) {
            return Err(ClientError::invalid("auto_commit interval must be positive"));
        }
        Ok(Some(GroupSettings {
            group: group.clone(),
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            session_timeout: self.session_timeout,
            assignor: self.assignor.clone(),
            auto_commit: self.auto_commit,
            max_poll_interval: self.max_poll_interval,
        }))
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
