//! The `[security]` settings of a broker.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether the broker asks clients for a certificate (see
/// `strand_security::ClientAuth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// Every client presents a certificate from the CA (mutual TLS).
    #[default]
    Required,
    /// A client may present one; without, it is anonymous.
    Optional,
    /// Clients are not asked.
    None,
}

/// TLS and authentication of one broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// PEM bundle of the CA that client and peer certificates chain to.
    /// With `tls_cert` and `tls_key`, turns TLS on for the gRPC listener and
    /// for connections to peers. Default: none (plaintext).
    pub tls_ca: Option<PathBuf>,
    /// This broker's PEM certificate chain. It names the node id in the URI
    /// subject alternative name `urn:strand:node:<id>` (`strand cert
    /// broker` writes one), which peers check.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Whether clients must present a certificate. Default `required`.
    pub client_auth: ClientAuthMode,
    /// How often the certificate files are checked for a change and
    /// reloaded (ms); connections opened after a reload use the new
    /// certificate. Default 10 s.
    pub tls_reload_interval_ms: u64,
    /// Serve without TLS or without client authentication on an address
    /// other than loopback. Default false: such a broker refuses to start.
    pub allow_insecure: bool,
    /// Enforce ACLs on every request (`strand acl`): a principal may do
    /// only what an ACL allows. Default false: every authenticated client
    /// may do anything.
    pub authorization: bool,
    /// Principals allowed everything whatever the ACLs say, as
    /// `User:<name>`. Brokers (`Broker:<id>`) always are.
    pub super_users: Vec<String>,
    /// Refuse requests from clients that proved no identity (neither a
    /// client certificate nor a password token): with `client_auth =
    /// "optional"`, clients log in with a certificate or a password.
    /// Default false.
    pub require_authentication: bool,
    /// How long a token from a password exchange is valid (ms); the client
    /// logs in again before it expires. Default 1 hour.
    pub token_lifetime_ms: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            client_auth: ClientAuthMode::Required,
            tls_reload_interval_ms: 10_000,
            allow_insecure: false,
            authorization: false,
            super_users: Vec::new(),
            require_authentication: false,
            token_lifetime_ms: 3_600_000,
        }
    }
}

impl SecurityConfig {
    /// Whether TLS is configured.
    pub fn tls_enabled(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()
    }

    /// Whether every client is authenticated (by certificate, or by
    /// certificate or password).
    pub fn clients_authenticated(&self) -> bool {
        self.tls_enabled() && (self.client_auth == ClientAuthMode::Required || self.require_authentication)
    }

    /// Why these settings are refused for a broker listening on `listen`,
    /// as `(key, reason)`.
    pub fn problem(&self, listen: &str) -> Option<(&'static str, String)> {
        if self.tls_enabled() && (self.tls_ca.is_none() || self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Some(("security", "TLS needs all of tls_ca, tls_cert and tls_key".into()));
        }
        if let Some(bad) = self.super_users.iter().find(|u| {
            !matches!(
                strand_security::Principal::parse(u),
                Some(strand_security::Principal::User(_))
            )
        }) {
            return Some(("security.super_users", format!("{bad:?} is not User:<name>")));
        }
        if self.authorization && !self.tls_enabled() {
            return Some((
                "security.authorization",
                "ACLs need TLS: brokers prove who they are to each other with their certificates".into(),
            ));
        }
        if self.token_lifetime_ms < 60_000 {
            return Some(("security.token_lifetime_ms", "must be at least a minute".into()));
        }
        if self.tls_reload_interval_ms == 0 {
            return Some(("security.tls_reload_interval_ms", "must be positive".into()));
        }
        if !self.allow_insecure && !is_loopback(listen) {
            if !self.tls_enabled() {
                return Some((
                    "security",
                    format!(
                        "refusing to serve plaintext on {listen}, which is not a loopback address: \
                         configure TLS (tls_ca, tls_cert, tls_key; `strand cert` makes development \
                         certificates) or set allow_insecure (--allow-insecure) to accept the risk"
                    ),
                ));
            }
            if !self.clients_authenticated() {
                return Some((
                    "security.client_auth",
                    format!(
                        "refusing to serve unauthenticated clients on {listen}, which is not a \
                         loopback address: set client_auth = \"required\", or \
                         require_authentication (certificates or passwords), or allow_insecure"
                    ),
                ));
            }
        }
        None
    }
}

/// Whether `listen` (`host:port`) binds only the loopback interface.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_serve_without_authentication() {
        for l in ["127.0.0.1:9292", "localhost:1", "[::1]:9292", "127.0.0.2:0"] {
            assert!(is_loopback(l), "{l}");
            assert_eq!(SecurityConfig::default().problem(l), None, "{l}");
        }
        for l in ["0.0.0.0:9292", "[::]:9292", "10.0.0.1:9292", "strand-0:9292"] {
            assert!(!is_loopback(l), "{l}");
            let (key, _) = SecurityConfig::default().problem(l).expect("refused");
            assert_eq!(key, "security");
            let insecure = SecurityConfig {
                allow_insecure: true,
                ..SecurityConfig::default()
            };
            assert_eq!(insecure.problem(l), None);
        }
        let tls = SecurityConfig {
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..SecurityConfig::default()
        };
        assert_eq!(tls.problem("0.0.0.0:1"), None);
        let optional = SecurityConfig {
            client_auth: ClientAuthMode::Optional,
            ..tls.clone()
        };
        assert_eq!(optional.problem("0.0.0.0:1").map(|p| p.0), Some("security.client_auth"));
        let half = SecurityConfig { tls_key: None, ..tls };
        assert!(half.problem("127.0.0.1:1").is_some());
    }
}
