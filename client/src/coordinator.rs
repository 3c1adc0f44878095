//! Calls to a consumer group's coordinator: found with `FindCoordinator`
//! through any broker, remembered, and found again when it moves
//! (`NOT_COORDINATOR`, a lost connection). Every attempt has a deadline, so
//! a coordinator that accepted a call and never answers (it lost its
//! quorum, it was paused) costs one request timeout, not the caller's life.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use crate::connection::Link as Channel;
use strand_proto::v1::groups_client::GroupsClient;
use strand_proto::v1::share_groups_client::ShareGroupsClient;
use strand_proto::v1::{FetchOffsetsRequest, FindCoordinatorRequest, OffsetCommit, TopicPartitions};

use crate::connection::{MAX_MESSAGE_BYTES, with_timeout};
use crate::error::Result;
use crate::metadata::Metadata;
use crate::retry::Backoff;

/// A gRPC client of a coordinator's services, made on a channel.
pub(crate) trait CoordinatorClient {
    /// The client on `ch`, with the message size limits.
    fn on(ch: Channel) -> Self;
}

impl CoordinatorClient for GroupsClient<Channel> {
    fn on(ch: Channel) -> Self {
        GroupsClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

impl CoordinatorClient for ShareGroupsClient<Channel> {
    fn on(ch: Channel) -> Self {
        ShareGroupsClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// The coordinator of one group.
#[derive(Debug)]
pub(crate) struct Coordinator {
    md: Arc<Metadata>,
    group: String,
    addr: Mutex<Option<Arc<str>>>,
    backoff: Backoff,
    /// Deadline of one attempt (finding the coordinator and calling it).
    request_timeout: Duration,
}

impl Coordinator {
    pub(crate) fn new(md: Arc<Metadata>, group: String, backoff: Backoff, request_timeout: Duration) -> Self {
        Coordinator {
            md,
            group,
            addr: Mutex::new(None),
            backoff,
            request_timeout,
        }
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    fn cached(&self) -> Option<Arc<str>> {
        self.addr.lock().clone()
    }

    fn set(&self, addr: Option<Arc<str>>) {
        *self.addr.lock() = addr;
    }

    async fn find(&self) -> Result<Arc<str>> {
        if let Some(a) = self.cached() {
            return Ok(a);
        }
        let group = self.group.clone();
        let md = &self.md;
        let found = md
            .with_any_broker(|addr| {
                let group = group.clone();
                async move {
                    let mut c = md.conns().groups(&addr).await?;
                    Ok(c.find_coordinator(FindCoordinatorRequest { group }).await?.into_inner())
                }
            })
            .await?;
        let addr: Arc<str> = Arc::from(found.addr.as_str());
        self.set(Some(addr.clone()));
        Ok(addr)
    }

    /// One attempt within the request timeout (or `within`, if shorter):
    /// finds the coordinator if needed and calls it; forgets it when the
    /// answer says it moved or none came.
    pub(crate) async fn call_once<T, F, Fut>(&self, call: &mut F, within: Option<Duration>) -> Result<T>
    where
        F: FnMut(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call_once_on(call, within).await
    }

    /// [`Coordinator::call_once`] on any of the coordinator's services.
    pub(crate) async fn call_once_on<C, T, F, Fut>(&self, call: &mut F, within: Option<Duration>) -> Result<T>
    where
        C: CoordinatorClient,
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let limit = within.map_or(self.request_timeout, |w| w.min(self.request_timeout));
        let mut addr: Option<Arc<str>> = None;
        let result = with_timeout(
            || format!("call to the coordinator of group {:?}", self.group),
            limit,
            async {
                let found = self.find().await?;
                addr = Some(found.clone());
                let client = C::on(self.md.conns().channel(&found).await?);
                call(client).await
            },
        )
        .await;
        if let Err(e) = &result
            && e.is_retriable()
        {
            self.set(None);
            if e.needs_metadata_refresh()
                && let Some(addr) = &addr
            {
                self.md.conns().invalidate(addr);
            }
        }
        result
    }

    /// Calls the coordinator, retrying retriable failures with backoff
    /// until `limit` passed.
    ///
    /// # Errors
    /// The first non-retriable error, or the last one once `limit` passed.
    pub(crate) async fn call<T, F, Fut>(&self, limit: Duration, call: F) -> Result<T>
    where
        F: FnMut(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call_on(limit, call).await
    }

    /// [`Coordinator::call`] on any of the coordinator's services.
    pub(crate) async fn call_on<C, T, F, Fut>(&self, limit: Duration, mut call: F) -> Result<T>
    where
        C: CoordinatorClient,
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = limit.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
            match self.call_once_on(&mut call, Some(left)).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() => {
                    let delay = self.backoff.delay(attempt);
                    if start.elapsed() + delay >= limit {
                        return Err(e);
                    }
                    tracing::debug!(group = %self.group, attempt, error = %e, "coordinator call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The group's committed offsets of `partitions` (all when empty).
    ///
    /// # Errors
    /// As [`Coordinator::call`].
    pub(crate) async fn fetch_offsets(
        &self,
        partitions: Vec<TopicPartitions>,
        limit: Duration,
    ) -> Result<Vec<OffsetCommit>> {
        let req = FetchOffsetsRequest {
            group: self.group.clone(),
            partitions,
        };
        let resp = self
            .call(limit, |mut c| {
                let req = req.clone();
                async move { Ok(c.fetch_offsets(req).await?.into_inner()) }
            })
            .await?;
        Ok(resp.offsets)
    }
}
