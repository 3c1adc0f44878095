//! Who may talk to this broker: TLS on the listener and to peers, the
//! principal of every connection, and the checks peer RPCs make.
//!
//! Invariants:
//! - With TLS on, a connection's principal is read from its client
//!   certificate once, at the handshake, and carried in [`Connection`]
//!   (tonic puts it in every request's extensions).
//! - With TLS on, only a connection whose certificate names broker `n` may
//!   speak for broker `n` on the peer RPCs (Raft traffic, catch-up,
//!   metadata submission, joining).
//! - With TLS off, the broker serves loopback only, unless told otherwise
//!   (`allow_insecure`), and peers are told apart by the cluster id alone.

pub mod audit;
pub mod config;
pub mod quota;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::controller::acl::{AclOperation, AclSet, ResourceType};

use strand_security::{ClientAuth, Dialer, Principal, TlsContext, TlsFiles};
use tonic::{Request, Status};

use crate::error::{BrokerError, Result};
pub use config::{ClientAuthMode, SecurityConfig};

/// What the broker knows about a connection, from its accept.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The principal its certificate names (`None` without TLS or without
    /// a client certificate).
    pub principal: Option<Principal>,
}

/// The principal a request proved with a password token (set by the
/// server's token check, read by [`principal`]).
#[derive(Clone, Debug)]
pub struct Authenticated(pub Principal);

/// The broker's transport security.
#[derive(Debug)]
pub struct Security {
    config: SecurityConfig,
    tls: Option<Arc<TlsContext>>,
    dialer: Dialer,
    audit: audit::Audit,
    throttle: quota::Throttle,
    /// Makes the salt an unknown user's password exchange gets (see
    /// `strand_security::scram::ScramServer::start`).
    decoy_key: Vec<u8>,
}

impl Security {
    /// Loads the TLS files named by `config` (if any).
    ///
    /// # Errors
    /// `InvalidConfig` naming the file that cannot be used.
    pub fn load(config: &SecurityConfig) -> Result<Arc<Security>> {
        let tls = match (&config.tls_ca, &config.tls_cert, &config.tls_key) {
            (Some(ca), Some(cert), Some(key)) => {
                let files = TlsFiles {
                    ca: ca.clone(),
                    cert: Some(cert.clone()),
                    key: Some(key.clone()),
                };
                let auth = match config.client_auth {
                    ClientAuthMode::Required => ClientAuth::Required,
                    ClientAuthMode::Optional => ClientAuth::Optional,
                    ClientAuthMode::None => ClientAuth::None,
                };
                Some(TlsContext::load(files, auth).map_err(|e| BrokerError::InvalidConfig {
                    key: "security".into(),
                    reason: e.to_string(),
                })?)
            }
            _ => None,
        };
        let dialer = tls.clone().map_or_else(Dialer::plaintext, Dialer::tls);
        Ok(Arc::new(Security {
            config: config.clone(),
            tls,
            dialer,
            audit: audit::Audit::default(),
            throttle: quota::Throttle::default(),
            decoy_key: strand_security::scram::new_key(),
        }))
    }

    /// Plaintext, no checks (tests of layers below the server).
    pub fn plaintext() -> Arc<Security> {
        Arc::new(Security {
            config: SecurityConfig::default(),
            tls: None,
            dialer: Dialer::plaintext(),
            audit: audit::Audit::default(),
            throttle: quota::Throttle::default(),
            decoy_key: strand_security::scram::new_key(),
        })
    }

    /// Starts reloading the certificate files when they change.
    pub fn spawn_reloader(&self) {
        if let Some(tls) = &self.tls {
            tls.spawn_reloader(Duration::from_millis(self.config.tls_reload_interval_ms));
        }
    }

    /// Authentication failures and authorization denials so far.
    pub fn audit(&self) -> &audit::Audit {
        &self.audit
    }

    /// The settings.
    pub fn config(&self) -> &SecurityConfig {
        &self.config
    }

    /// See [`Security::decoy_key`]'s field.
    pub fn decoy_key(&self) -> &[u8] {
        &self.decoy_key
    }

    /// Quota buckets and what they throttled.
    pub fn throttle(&self) -> &quota::Throttle {
        &self.throttle
    }

    /// Whether ACLs are enforced.
    pub fn authorization_enabled(&self) -> bool {
        self.config.authorization
    }

    /// Whether `who` may do anything: a broker, or a configured super user.
    pub fn is_super_user(&self, who: &Principal) -> bool {
        match who {
            Principal::Broker(_) => true,
            Principal::User(_) => self.config.super_users.iter().any(|u| *u == who.to_string()),
            Principal::Anonymous => false,
        }
    }

    /// Whether `who` may do `op` on resource `name` of kind `kind` under
    /// `acls` (always, with authorization off).
    pub fn permits(&self, acls: &AclSet, who: &Principal, op: AclOperation, kind: ResourceType, name: &str) -> bool {
        !self.config.authorization || self.is_super_user(who) || acls.authorizes(&who.to_string(), op, kind, name)
    }

    /// As [`Security::permits`], as a typed refusal, counted and logged.
    ///
    /// # Errors
    /// `AuthorizationFailed`.
    pub fn authorize(
        &self,
        acls: &AclSet,
        who: &Principal,
        op: AclOperation,
        kind: ResourceType,
        name: &str,
    ) -> Result<()> {
        if self.permits(acls, who, op, kind, name) {
            return Ok(());
        }
        let err = denial(who, op, kind, name);
        self.audit.denied(who, &err);
        Err(err)
    }

    /// The TLS context, when TLS is on.
    pub fn tls(&self) -> Option<&Arc<TlsContext>> {
        self.tls.as_ref()
    }

    /// How this broker connects to its peers.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// A channel endpoint for `addr` (`host:port`); TLS comes from the
    /// dialer.
    ///
    /// # Errors
    /// `InvalidRequest` for an address that is no URI authority.
    pub fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint> {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(|e| BrokerError::InvalidRequest {
            reason: format!("bad broker address {addr:?}: {e}"),
        })
    }

    /// Refuses a peer request that does not come from broker `claimed`
    /// (when TLS is on; without it, the caller's cluster id is all there
    /// is to check). `caller` is the request's [`principal`].
    pub fn check_peer(&self, caller: &Principal, claimed: u64) -> std::result::Result<(), Status> {
        if self.tls.is_none() {
            return Ok(());
        }
        match caller {
            Principal::Broker(id) if *id == claimed => Ok(()),
            other => {
                tracing::warn!(principal = %other, claimed, "peer request from a connection that cannot speak for the node it names; refused");
                Err(Status::permission_denied(format!(
                    "{other} may not speak for broker {claimed}"
                )))
            }
        }
    }

    /// Refuses a peer request from a connection that is not a broker's.
    pub fn check_any_peer<T>(&self, req: &Request<T>) -> std::result::Result<(), Status> {
        if self.tls.is_none() {
            return Ok(());
        }
        match principal(req) {
            Principal::Broker(_) => Ok(()),
            other => {
                tracing::warn!(principal = %other, "peer request from a connection that is not a broker's; refused");
                Err(Status::permission_denied(format!("{other} is not a broker")))
            }
        }
    }
}

/// The refusal of `op` on `name` to `who`.
pub fn denial(who: &Principal, op: AclOperation, kind: ResourceType, name: &str) -> BrokerError {
    let operation = match op {
        AclOperation::All => "do everything to",
        AclOperation::Read => "read",
        AclOperation::Write => "write to",
        AclOperation::Create => "create",
        AclOperation::Delete => "delete",
        AclOperation::Alter => "alter",
        AclOperation::Describe => "describe",
    };
    let resource = match kind {
        ResourceType::Topic => format!("topic {name:?}"),
        ResourceType::Group => format!("group {name:?}"),
        ResourceType::Cluster => "the cluster".to_string(),
    };
    BrokerError::AuthorizationFailed {
        principal: who.to_string(),
        operation,
        resource,
    }
}

/// The principal a request authenticated as: its password token's user,
/// else its connection's certificate, else anonymous.
pub fn principal<T>(req: &Request<T>) -> Principal {
    principal_of(req.extensions())
}

/// As [`principal`], from the request's extensions.
pub fn principal_of(ext: &http::Extensions) -> Principal {
    if let Some(Authenticated(p)) = ext.get::<Authenticated>() {
        return p.clone();
    }
    ext.get::<Connection>()
        .and_then(|c| c.principal.clone())
        .unwrap_or(Principal::Anonymous)
}
