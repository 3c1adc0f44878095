//! How the client proves who it is and checks whom it talks to.
//!
//! ```no_run
//! # async fn f() -> strand_client::Result<()> {
//! use strand_client::{Admin, Security};
//! // Mutual TLS: the broker's certificate is checked against ca.pem, and
//! // the client's own certificate names its user (the common name).
//! let security = Security::mutual_tls("certs/ca.pem", "certs/alice.pem", "certs/alice-key.pem")?;
//! let admin = Admin::connect_with("broker-1:9292", security).await?;
//! # Ok(()) }
//! ```
//!
//! Certificate files are read again when they change: the next connection
//! uses the new ones.
//!
//! With [`Security::with_user`] the client logs in with a password
//! (SCRAM-SHA-256: the password never leaves the process) and sends the
//! token it earns with every request, logging in again before it expires.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use strand_proto::v1::AuthMessage;
use strand_proto::v1::auth_client::AuthClient;
use strand_security::scram::{self, ScramClient};
use strand_security::{ClientAuth, Dialer, TlsContext, TlsFiles};
use tonic::transport::Channel;

use crate::error::{ClientError, Result};

/// A token is renewed when less than this is left of it.
const RENEW_BEFORE_MS: i64 = 5 * 60 * 1000;

/// Transport security of a client's connections. Default: plaintext.
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub(crate) dialer: Dialer,
    pub(crate) credentials: Option<Arc<Credentials>>,
}

/// A user's password and the token it earned.
pub(crate) struct Credentials {
    user: String,
    password: String,
    /// `Bearer <token>` and when it expires (ms since the epoch).
    token: RwLock<Option<(http::HeaderValue, i64)>>,
    /// One login at a time.
    login: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Credentials {
    /// The header to send, while the token is valid.
    pub(crate) fn header(&self) -> Option<http::HeaderValue> {
        self.token
            .read()
            .as_ref()
            .filter(|(_, exp)| *exp > now_ms())
            .map(|(h, _)| h.clone())
    }

    fn fresh(&self) -> bool {
        self.token
            .read()
            .as_ref()
            .is_some_and(|(_, exp)| *exp - now_ms() > RENEW_BEFORE_MS)
    }

    /// Logs in through `channel` unless the token is fresh.
    pub(crate) async fn ensure_login(&self, channel: &Channel, limit: Duration) -> Result<()> {
        if self.fresh() {
            return Ok(());
        }
        let _one = self.login.lock().await;
        if self.fresh() {
            return Ok(());
        }
        let (header, expires) = match tokio::time::timeout(limit, self.exchange(channel.clone())).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    what: "password login".into(),
                    after: limit,
                });
            }
        };
        *self.token.write() = Some((header, expires));
        Ok(())
    }

    /// One SCRAM-SHA-256 exchange (see the `Auth` service of the protobuf API).
    async fn exchange(&self, channel: Channel) -> Result<(http::HeaderValue, i64)> {
        let client = ScramClient::new(&self.user, &self.password);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let _ = tx
            .send(AuthMessage {
                mechanism: scram::MECHANISM.into(),
                payload: client.client_first(),
                ..Default::default()
            })
            .await;
        let mut answers = AuthClient::new(channel)
            .authenticate(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let refused =
            |why: &str| ClientError::broker(strand_proto::v1::ErrorCode::AuthenticationFailed, why.to_string());
        let server_first = answers
            .message()
            .await?
            .ok_or_else(|| refused("the broker ended the login"))?;
        let (client_final, expected) = client
            .client_final(&server_first.payload)
            .map_err(|e| refused(&e.to_string()))?;
        let _ = tx
            .send(AuthMessage {
                payload: client_final,
                ..Default::default()
            })
            .await;
        let last = answers
            .message()
            .await?
            .ok_or_else(|| refused("the broker ended the login"))?;
        if last.payload != expected {
            return Err(refused(
                "the broker could not prove it knows the password: not this cluster",
            ));
        }
        let header = http::HeaderValue::from_str(&format!("Bearer {}", last.token))
            .map_err(|_| refused("the broker's token is not a header value"))?;
        Ok((header, last.token_expires_ms))
    }
}

impl Security {
    /// Plaintext (a broker on loopback without TLS).
    pub fn plaintext() -> Self {
        Security::default()
    }

    /// TLS: brokers' certificates must chain to the CA bundle `ca` (PEM); the
    /// client presents no certificate.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] naming a file that cannot be used.
    pub fn tls(ca: impl Into<PathBuf>) -> Result<Self> {
        Self::load(TlsFiles {
            ca: ca.into(),
            cert: None,
            key: None,
        })
    }

    /// Mutual TLS: as [`Security::tls`], and the client presents `cert`
    /// (PEM chain) with its private key `key`; the broker takes the
    /// certificate's common name as the user.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] naming a file that cannot be used,
    /// or a key that does not match the certificate.
    pub fn mutual_tls(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self> {
        Self::load(TlsFiles {
            ca: ca.into(),
            cert: Some(cert.into()),
            key: Some(key.into()),
        })
    }

    fn load(files: TlsFiles) -> Result<Self> {
        let ctx = TlsContext::load(files, ClientAuth::None).map_err(|e| ClientError::invalid(e.to_string()))?;
        Ok(Security {
            dialer: Dialer::tls(ctx),
            credentials: None,
        })
    }

    /// Logs in as `user` with `password` (SCRAM-SHA-256) and sends the
    /// token it earns with every request. Use it over TLS: the password is
    /// never sent, but the token is a bearer credential.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Arc::new(Credentials {
            user: user.into(),
            password: password.into(),
            token: RwLock::new(None),
            login: tokio::sync::Mutex::new(()),
        }));
        self
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.dialer.is_tls()
    }

    /// A tonic channel to `endpoint` (an `http://host:port` endpoint, with
    /// whatever timeouts it sets), secured as this says: for the generated
    /// clients of [`crate::proto`] when the Rust API is not enough.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the broker cannot be reached or the
    /// handshake fails.
    pub async fn channel(&self, endpoint: tonic::transport::Endpoint) -> Result<tonic::transport::Channel> {
        let addr = endpoint.uri().to_string();
        self.dialer.connect(endpoint).await.map_err(|e| ClientError::Connect {
            addrs: vec![addr],
            source: std::sync::Arc::new(e),
        })
    }
}
