//! [`ShareConsumerBuilder`]: how a share-group member is configured.

use std::sync::Arc;
use std::time::Duration;

use super::{ShareConsumer, ShareSettings};
use crate::connection::ConnectionConfig;
use crate::consumer::OffsetReset;
use crate::coordinator::Coordinator;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::retry::Backoff;

/// Builds a [`ShareConsumer`].
#[derive(Debug, Clone)]
pub struct ShareConsumerBuilder {
    bootstrap: String,
    group: String,
    max_records: u32,
    max_wait: Duration,
    lock_duration: Option<Duration>,
    session_timeout: Option<Duration>,
    offset_reset: OffsetReset,
    connection: ConnectionConfig,
    backoff: Backoff,
}

impl ShareConsumerBuilder {
    pub(crate) fn new(bootstrap: String, group: String) -> Self {
        ShareConsumerBuilder {
            bootstrap,
            group,
            max_records: 500,
            max_wait: Duration::from_millis(500),
            lock_duration: None,
            session_timeout: None,
            offset_reset: OffsetReset::Latest,
            connection: ConnectionConfig::default(),
            backoff: Backoff::default(),
        }
    }

    /// Most records one poll acquires. Default 500.
    pub fn max_records(mut self, n: u32) -> Self {
        self.max_records = n;
        self
    }

    /// Longest a poll waits for records. Default 500 ms.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// How long this member holds what it acquires before the records go
    /// to others (SQS's visibility timeout). Default: the broker's
    /// (30 s unless configured).
    pub fn lock_duration(mut self, d: Duration) -> Self {
        self.lock_duration = Some(d);
        self
    }

    /// This member leaves the group (its records are released) when it
    /// sends nothing this long. Default: the broker's (45 s unless
    /// configured).
    pub fn session_timeout(mut self, d: Duration) -> Self {
        self.session_timeout = Some(d);
        self
    }

    /// Where partitions the group never read start: [`OffsetReset::Latest`]
    /// (the default, as in Kafka) or [`OffsetReset::Earliest`]. Only the
    /// group's first read of a partition uses it.
    pub fn offset_reset(mut self, r: OffsetReset) -> Self {
        self.offset_reset = r;
        self
    }

    /// TLS (and a client certificate) for every connection. Default:
    /// plaintext.
    pub fn security(mut self, security: crate::Security) -> Self {
        self.connection.security = security;
        self
    }

    /// Deadline of one request to the coordinator. Default 30 s.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.connection.request_timeout = d;
        self
    }

    /// Connects to the cluster.
    ///
    /// # Errors
    /// Invalid settings; no bootstrap broker answered.
    pub async fn build(self) -> Result<ShareConsumer> {
        if self.group.is_empty() {
            return Err(ClientError::invalid("the share group id is empty"));
        }
        if self.max_records == 0 {
            return Err(ClientError::invalid("max_records must be at least 1"));
        }
        if matches!(self.offset_reset, OffsetReset::None) {
            return Err(ClientError::invalid(
                "a share group starts at the earliest or the latest offset",
            ));
        }
        let request_timeout = self.connection.request_timeout;
        let md = Metadata::connect(&self.bootstrap, self.connection.clone()).await?;
        let member_id = format!("{:032x}", rand::random::<u128>());
        Ok(ShareConsumer {
            coordinator: Arc::new(Coordinator::new(md, self.group, self.backoff, request_timeout)),
            member_id,
            topics: Vec::new(),
            settings: ShareSettings {
                max_records: self.max_records,
                max_wait: self.max_wait,
                lock_duration: self.lock_duration,
                session_timeout: self.session_timeout,
                offset_reset: self.offset_reset,
                request_timeout,
            },
            pending: Vec::new(),
            failures: Vec::new(),
        })
    }
}
