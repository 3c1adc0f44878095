//! A development certificate authority: what `strand cert` writes.
//!
//! - `ca.pem` / `ca-key.pem`: a self-signed CA.
//! - A broker certificate names its node id in the URI subject alternative
//!   name `urn:strand:node:<id>` (peers check it against the id a request
//!   claims) and the hosts it is reached by; it serves and dials peers.
//! - A client certificate names its user in the common name.
//!
//! Keys are ECDSA P-256, written with mode 0600. For production, any CA
//! that issues certificates of this shape will do.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{Result, SecurityError};
use crate::principal::node_uri;

/// What a leaf certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Broker `node_id`, reached at `hosts` (DNS names or IP addresses).
    Broker {
        /// The node id it proves.
        node_id: u64,
        /// Names and addresses clients and peers dial it by.
        hosts: Vec<String>,
    },
    /// A client acting as user `name`.
    User {
        /// The user name (the certificate's common name).
        name: String,
    },
}

/// Paths of a written certificate and its key.
#[derive(Clone, Debug)]
pub struct Written {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

fn generate_err(e: rcgen::Error) -> SecurityError {
    SecurityError::Generate(e.to_string())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back: a peer whose clock is a little behind still accepts it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn write(path: &Path, text: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    let err = |source| SecurityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = secret;
    // Written beside and renamed: a broker reloading its files never reads
    // half of one.
    let tmp = path.with_extension("tmp");
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn read(path: &Path, what: &'static str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Creates a CA in `dir` (`ca.pem`, `ca-key.pem`), valid for `days`.
///
/// # Errors
/// Writing the files, or generating the key.
pub fn create_ca(dir: &Path, days: u32) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(|source| SecurityError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Strand development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(generate_err)?;
    let cert = params.self_signed(&key).map_err(generate_err)?;
    let written = Written {
        cert: dir.join("ca.pem"),
        key: dir.join("ca-key.pem"),
    };
    write(&written.key, &key.serialize_pem(), true)?;
    write(&written.cert, &cert.pem(), false)?;
    Ok(written)
}

/// Issues a certificate for `subject`, signed by the CA in `ca_dir`, written
/// to `out_dir` as `<stem>.pem` and `<stem>-key.pem`.
///
/// # Errors
/// Reading the CA, an invalid host name, writing the files.
pub fn issue(ca_dir: &Path, subject: &Subject, out_dir: &Path, stem: &str, days: u32) -> Result<Written> {
    let ca_pem = read(&ca_dir.join("ca.pem"), "CA certificate")?;
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join("ca-key.pem"), "CA key")?).map_err(generate_err)?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem).map_err(generate_err)?;
    // Re-signing the CA's own parameters rebuilds an issuer with its name
    // and key: what signing needs. The file on disk is not changed.
    let ca = ca_params.self_signed(&ca_key).map_err(generate_err)?;
    let (mut params, cn) = match subject {
        Subject::Broker { node_id, hosts } => {
            let mut p = CertificateParams::new(hosts.clone()).map_err(generate_err)?;
            let uri = node_uri(*node_id).try_into().map_err(generate_err)?;
            p.subject_alt_names.push(SanType::URI(uri));
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            (p, format!("strand-broker-{node_id}"))
        }
        Subject::User { name } => {
            let mut p = CertificateParams::new(Vec::<String>::new()).map_err(generate_err)?;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            (p, name.clone())
        }
    };
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(generate_err)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(generate_err)?;
    std::fs::create_dir_all(out_dir).map_err(|source| SecurityError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let written = Written {
        cert: out_dir.join(format!("{stem}.pem")),
        key: out_dir.join(format!("{stem}-key.pem")),
    };
    write(&written.key, &key.serialize_pem(), true)?;
    write(&written.cert, &cert.pem(), false)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Principal;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    fn principal_of(path: &Path) -> Option<Principal> {
        let der = CertificateDer::from_pem_file(path).expect("pem");
        Principal::from_certificate(&der)
    }

    #[test]
    fn issued_certificates_name_their_principal() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_ca(dir.path(), 30).expect("ca");
        let broker = Subject::Broker {
            node_id: 7,
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
        };
        let b = issue(dir.path(), &broker, dir.path(), "broker-7", 30).expect("broker cert");
        assert_eq!(principal_of(&b.cert), Some(Principal::Broker(7)));
        let u = issue(
            dir.path(),
            &Subject::User { name: "alice".into() },
            dir.path(),
            "alice",
            30,
        )
        .expect("user");
        assert_eq!(principal_of(&u.cert), Some(Principal::user("alice")));
        let files = crate::TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: Some(b.cert),
            key: Some(b.key),
        };
        let ctx = crate::TlsContext::load(files, crate::ClientAuth::Required).expect("context");
        assert!(ctx.server_config().is_some());
    }
}
