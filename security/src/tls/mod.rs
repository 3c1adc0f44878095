//! TLS contexts from PEM files, reloaded when the files change.
//!
//! A [`TlsContext`] holds the rustls server configuration (when it has a
//! certificate) and client configuration built from one set of files: the
//! CA bundle that certificates of the other side must chain to, and this
//! side's certificate and key. A broker uses one context for both: it
//! serves with its certificate and presents the same one to its peers.
//!
//! Invariant: the configurations in use were built from files that parsed
//! and matched. A reload that fails (a half-written file, a key that does
//! not match) keeps the previous configurations and is retried at the next
//! check, so a rotation can never leave a broker without TLS.

mod accept;
mod dial;
mod pem;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use accept::{TlsAcceptError, accept};
pub use dial::Dialer;

use crate::error::{Result, SecurityError};

/// The files of one TLS identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of the CA certificates the other side must chain to.
    pub ca: PathBuf,
    /// This side's PEM certificate chain (required to serve; optional for
    /// a client that authenticates otherwise).
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Whether a server asks connecting clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never asks: clients authenticate otherwise.
    None,
    /// Asks; a client without one connects as anonymous (or authenticates
    /// with credentials), one with a certificate not from the CA is refused.
    Optional,
    /// Refuses a client without a certificate from the CA.
    Required,
}

/// The configurations built from the files, and when they were read.
struct Loaded {
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
    stamps: Vec<Option<SystemTime>>,
}

/// A TLS identity, reloaded from its files when they change.
pub struct TlsContext {
    files: TlsFiles,
    client_auth: ClientAuth,
    loaded: RwLock<Arc<Loaded>>,
    reloading: Mutex<()>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("files", &self.files)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

/// The crypto provider of every configuration: ring, named explicitly.
/// rustls 0.23.48 deprecated it for lacking post-quantum key exchange
/// (which only its aws-lc-rs provider has); aws-lc-rs needs cmake and a C
/// build this project's machines do without. Switching is this one line
/// plus the features in the workspace manifest.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// HTTP/2 only: gRPC needs it, and ALPN makes a mismatch fail at the
/// handshake instead of as a garbled first frame.
const ALPN_H2: &[u8] = b"h2";

impl TlsContext {
    /// Reads the files and builds the configurations.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a key that does not match its
    /// certificate, a CA bundle with no certificate.
    pub fn load(files: TlsFiles, client_auth: ClientAuth) -> Result<Arc<TlsContext>> {
        let loaded = build(&files, client_auth)?;
        Ok(Arc::new(TlsContext {
            files,
            client_auth,
            loaded: RwLock::new(Arc::new(loaded)),
            reloading: Mutex::new(()),
        }))
    }

    /// The files this context reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether connecting clients are asked for a certificate.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The configuration new server connections use; `None` without a
    /// certificate.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.loaded.read().server.clone()
    }

    /// The configuration new client connections use.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.loaded.read().client)
    }

    /// Rebuilds the configurations if a file changed since they were read.
    /// Returns whether they were replaced.
    ///
    /// # Errors
    /// As [`TlsContext::load`]; the configurations in use stay.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let _one_at_a_time = self.reloading.lock();
        if stamps(&self.files) == self.loaded.read().stamps {
            return Ok(false);
        }
        let fresh = build(&self.files, self.client_auth)?;
        *self.loaded.write() = Arc::new(fresh);
        Ok(true)
    }

    /// Checks the files every `every` on the current tokio runtime and
    /// reloads them when they change, until the context is dropped.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) {
        let weak: Weak<TlsContext> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(ctx) = weak.upgrade() else { return };
                match ctx.reload_if_changed() {
                    Ok(true) => tracing::info!(cert = ?ctx.files.cert, "TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but cannot be loaded; keeping the previous ones")
                    }
                }
            }
        });
    }
}

/// Modification times of the files, to notice a change.
fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [Some(&files.ca), files.cert.as_ref(), files.key.as_ref()]
        .into_iter()
        .map(|p| p.and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()))
        .collect()
}

fn build(files: &TlsFiles, client_auth: ClientAuth) -> Result<Loaded> {
    // Stamps first: a file replaced while being read is read again next time.
    let stamps = stamps(files);
    let mut roots = RootCertStore::empty();
    for ca in pem::certificates(&files.ca, "CA bundle")? {
        roots.add(ca).map_err(|e| SecurityError::Invalid {
            what: "CA bundle",
            path: files.ca.clone(),
            reason: e.to_string(),
        })?;
    }
    let roots = Arc::new(roots);
    let identity = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some((pem::certificates(cert, "certificate")?, pem::private_key(key)?)),
        (None, None) => None,
        _ => {
            return Err(SecurityError::Config(
                "a certificate needs its private key and a key its certificate".into(),
            ));
        }
    };
    let config_err = |e: rustls::Error| SecurityError::Config(e.to_string());
    let client_builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_root_certificates(Arc::clone(&roots));
    let mut client = match &identity {
        Some((chain, key)) => client_builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(config_err)?,
        None => client_builder.with_no_client_auth(),
    };
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    let server = match identity {
        Some((chain, key)) => {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(config_err)?;
            let builder = match client_auth {
                ClientAuth::None => builder.with_no_client_auth(),
                ClientAuth::Optional | ClientAuth::Required => {
                    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider());
                    let verifier = if client_auth == ClientAuth::Optional {
                        verifier.allow_unauthenticated()
                    } else {
                        verifier
                    };
                    builder
                        .with_client_cert_verifier(verifier.build().map_err(|e| SecurityError::Config(e.to_string()))?)
                }
            };
            let mut server = builder.with_single_cert(chain, key).map_err(config_err)?;
            server.alpn_protocols = vec![ALPN_H2.to_vec()];
            Some(Arc::new(server))
        }
        None => None,
    };
    Ok(Loaded {
        server,
        client: Arc::new(client),
        stamps,
    })
}
