//! Reading PEM certificates and keys, with errors that name the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Result, SecurityError};

/// Every certificate of a PEM file (at least one).
pub(super) fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(SecurityError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(super) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = std::fs::read(path).map_err(|source| SecurityError::Read {
        what: "private key",
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| SecurityError::Invalid {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
