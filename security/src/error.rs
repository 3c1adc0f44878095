//! The security crate's one error type.

use std::path::PathBuf;

/// What went wrong loading, checking or creating security material.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A certificate, key or CA file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file ("certificate", "private key", "CA bundle").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file was read but holds nothing usable.
    #[error("{what} {path}: {reason}")]
    Invalid {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match the
    /// certificate, an empty trust store).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// A file could not be written (certificate creation).
    #[error("cannot write {path}: {source}")]
    Write {
        /// Its path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Creating a certificate failed.
    #[error("creating a certificate: {0}")]
    Generate(String),
}

/// Results of this crate.
pub type Result<T, E = SecurityError> = std::result::Result<T, E>;
