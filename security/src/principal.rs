//! Principals: who a connection or a request acts for.
//!
//! A broker's certificate carries the URI subject alternative name
//! `urn:strand:node:<id>` ([`node_uri`]); any other certificate names a user
//! by its subject's common name. A request with neither a client
//! certificate nor credentials is [`Principal::Anonymous`].

use std::fmt;
use std::sync::Arc;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI prefix of a broker's identity in its certificate.
pub const NODE_URI_PREFIX: &str = "urn:strand:node:";

/// The URI naming broker `id` in a certificate.
pub fn node_uri(id: u64) -> String {
    format!("{NODE_URI_PREFIX}{id}")
}

/// Who acts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// No certificate and no credentials (only where the broker allows it).
    Anonymous,
    /// A broker of the cluster, by node id (proved by its certificate).
    Broker(u64),
    /// A user: a client certificate's common name or an authenticated
    /// user name.
    User(Arc<str>),
}

impl Principal {
    /// A user principal.
    pub fn user(name: &str) -> Self {
        Principal::User(Arc::from(name))
    }

    /// The principal a DER certificate names, `None` if it names none (no
    /// node URI and no common name).
    pub fn from_certificate(der: &[u8]) -> Option<Principal> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && let Some(id) = uri.strip_prefix(NODE_URI_PREFIX)
                {
                    return id.parse().ok().map(Principal::Broker);
                }
            }
        }
        let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
        (!cn.is_empty()).then(|| Principal::user(cn))
    }

    /// Parses the text form (`User:alice`, `Broker:3`, `ANONYMOUS`).
    pub fn parse(s: &str) -> Option<Principal> {
        if s == "ANONYMOUS" {
            return Some(Principal::Anonymous);
        }
        let (kind, name) = s.split_once(':')?;
        match kind {
            "User" if !name.is_empty() => Some(Principal::user(name)),
            "Broker" => name.parse().ok().map(Principal::Broker),
            _ => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("ANONYMOUS"),
            Principal::Broker(id) => write!(f, "Broker:{id}"),
            Principal::User(name) => write!(f, "User:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for p in [Principal::Anonymous, Principal::Broker(3), Principal::user("alice")] {
            assert_eq!(Principal::parse(&p.to_string()), Some(p.clone()), "{p}");
        }
        for bad in ["", "User:", "Broker:x", "alice", "Group:g"] {
            assert_eq!(Principal::parse(bad), None, "{bad:?}");
        }
    }
}
