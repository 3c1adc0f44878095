//! gRPC channels to brokers, one per address, shared by every request.
//!
//! A tonic `Channel` multiplexes concurrent requests over one HTTP/2
//! connection, so the client keeps exactly one per broker address and hands
//! out clones (a clone is a handle, not a connection).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use strand_proto::v1::admin_client::AdminClient;
use strand_proto::v1::groups_client::GroupsClient;
use strand_proto::v1::strand_client::StrandClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ClientError, Result};
use crate::security::{Credentials, Security};

/// HTTP/2 stream window of a client connection (bytes).
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// HTTP/2 connection window of a client connection (bytes).
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Largest gRPC message the client accepts. Fetch responses carry at least
/// one whole batch even when it exceeds `fetch_max_bytes`, so the bound is
/// far above the fetch sizes; it only protects against a runaway broker.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// Splits a bootstrap string `"host:port[,host:port...]"` into addresses.
///
/// # Errors
/// [`ClientError::InvalidArgument`] if the list is empty.
pub(crate) fn parse_bootstrap(bootstrap: &str) -> Result<Vec<String>> {
    let addrs: Vec<String> = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if addrs.is_empty() {
        return Err(ClientError::invalid(format!(
            "bootstrap {bootstrap:?} names no broker (expected host:port[,host:port...])"
        )));
    }
    Ok(addrs)
}

/// How connections are made.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionConfig {
    /// Limit on establishing a TCP + HTTP/2 connection.
    pub connect_timeout: Duration,
    /// Limit on one request/response round trip (long polls add their wait).
    pub request_timeout: Duration,
    /// Plaintext or TLS.
    pub security: Security,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            security: Security::default(),
        }
    }
}

/// The cache of channels, keyed by `host:port`. Thread-safe.
#[derive(Debug)]
pub(crate) struct Connections {
    config: ConnectionConfig,
    channels: Mutex<HashMap<Arc<str>, Channel>>,
}

impl Connections {
    pub(crate) fn new(config: ConnectionConfig) -> Self {
        Connections {
            config,
            channels: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// The channel to `addr`, connecting first if there is none.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the broker cannot be reached within the
    /// connect timeout; [`ClientError::InvalidArgument`] for a malformed address.
    pub(crate) async fn channel(&self, addr: &str) -> Result<Link> {
        let channel = self.transport(addr).await?;
        let credentials = self.config.security.credentials.clone();
        if let Some(c) = &credentials
            && let Err(e) = c.ensure_login(&channel, self.config.request_timeout).await
        {
            if e.reason() != "AUTHENTICATION_FAILED" {
                self.invalidate(addr);
            }
            return Err(e);
        }
        Ok(Link { channel, credentials })
    }

    /// The connection to `addr`, connecting first if there is none.
    async fn transport(&self, addr: &str) -> Result<Channel> {
        if let Some(ch) = self.lock().get(addr) {
            return Ok(ch.clone());
        }
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| ClientError::invalid(format!("broker address {addr:?}: {e}")))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            // Wide windows: a fetch of thousands of partitions answers
            // megabytes at once, which the 64 KiB HTTP/2 default would
            // throttle to a trickle of small frames (docs/ARCHITECTURE.md,
            // "HTTP/2 settings").
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let connect_err = |source: Arc<dyn std::error::Error + Send + Sync>| ClientError::Connect {
            addrs: vec![addr.to_owned()],
            source,
        };
        let connecting = self.config.security.dialer.connect(endpoint);
        let channel = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(connect_err(Arc::new(e))),
            Err(elapsed) => return Err(connect_err(Arc::new(elapsed))),
        };
        self.lock().insert(Arc::from(addr), channel.clone());
        Ok(channel)
    }

    /// Forgets the channel to `addr` so the next request reconnects.
    pub(crate) fn invalidate(&self, addr: &str) {
        self.lock().remove(addr);
    }

    /// A `Strand` service client for `addr`.
    pub(crate) async fn strand(&self, addr: &str) -> Result<StrandClient<Link>> {
        let ch = self.channel(addr).await?;
        Ok(StrandClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// An `Admin` service client for `addr`.
    pub(crate) async fn admin(&self, addr: &str) -> Result<AdminClient<Link>> {
        let ch = self.channel(addr).await?;
        Ok(AdminClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A `Groups` service client for `addr`.
    pub(crate) async fn groups(&self, addr: &str) -> Result<GroupsClient<Link>> {
        let ch = self.channel(addr).await?;
        Ok(GroupsClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Channel>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.channels.lock()
    }
}

/// A connection as requests use it: the channel, and the password token
/// (if the client logs in with one) added to every request.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    channel: Channel,
    credentials: Option<Arc<Credentials>>,
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Link {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as tower_service::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(h) = self.credentials.as_ref().and_then(|c| c.header()) {
            req.headers_mut().insert(http::header::AUTHORIZATION, h);
        }
        self.channel.call(req)
    }
}

/// Runs `call` within `limit`, turning expiry into [`ClientError::Timeout`]
/// (`what` names the operation and is only built on expiry).
pub(crate) async fn with_timeout<T>(
    what: impl FnOnce() -> String,
    limit: Duration,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            what: what(),
            after: limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_are_split_and_trimmed() {
        let cases: [(&str, &[&str]); 4] = [
            ("127.0.0.1:9292", &["127.0.0.1:9292"]),
            ("a:1,b:2", &["a:1", "b:2"]),
            (" a:1 , ,b:2,", &["a:1", "b:2"]),
            ("http://a:1", &["http://a:1"]),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            let got = parse_bootstrap(input).expect("valid bootstrap");
            assert_eq!(got, want, "#{i}: {input:?}");
        }
        for bad in ["", " , "] {
            let err = parse_bootstrap(bad).expect_err("empty bootstrap");
            assert_eq!(err.reason(), "INVALID_ARGUMENT", "{bad:?}");
        }
    }
}
