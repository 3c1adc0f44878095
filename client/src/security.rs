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

use std::path::PathBuf;

use strand_security::{ClientAuth, Dialer, TlsContext, TlsFiles};

use crate::error::{ClientError, Result};

/// Transport security of a client's connections. Default: plaintext.
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub(crate) dialer: Dialer,
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
        })
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
