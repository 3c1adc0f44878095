//! The cluster a command talks to: the bootstrap brokers and how to
//! connect to them (the global `--tls-*` flags or `STRAND_TLS_*`).

use std::path::PathBuf;

use clap::Args;
use strand_client::{Admin, ConsumerBuilder, Producer, ProducerBuilder, Security, ShareConsumer, ShareConsumerBuilder};

/// Connection flags shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// CA bundle (PEM) that brokers' certificates must chain to; turns TLS on.
    #[arg(long, global = true, env = "STRAND_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; its common name is the user.
    #[arg(long, global = true, env = "STRAND_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "STRAND_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log in as this user with a password (SCRAM-SHA-256; the password is
    /// never sent). Use with TLS.
    #[arg(long, global = true, env = "STRAND_USER", requires = "password")]
    pub user: Option<String>,
    /// The password of --user (prefer the STRAND_PASSWORD variable: a flag
    /// shows in the process list).
    #[arg(long, global = true, env = "STRAND_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    bootstrap: String,
    security: Security,
}

impl Target {
    /// From the global flags.
    pub fn new(bootstrap: String, args: &ConnectArgs) -> anyhow::Result<Self> {
        let security = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
            (None, None, None) => Security::plaintext(),
            (Some(ca), Some(cert), Some(key)) => Security::mutual_tls(ca, cert, key)?,
            (Some(ca), None, None) => Security::tls(ca)?,
            (None, _, _) => anyhow::bail!("--tls-cert needs --tls-ca (the CA that signed the brokers' certificates)"),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let security = match (&args.user, &args.password) {
            (Some(user), Some(password)) => security.with_user(user, password),
            _ => security,
        };
        Ok(Target { bootstrap, security })
    }

    /// An admin client.
    pub async fn admin(&self) -> strand_client::Result<Admin> {
        Admin::connect_with(self.bootstrap.clone(), self.security.clone()).await
    }

    /// A producer builder.
    pub fn producer(&self) -> ProducerBuilder {
        Producer::builder(self.bootstrap.clone()).security(self.security.clone())
    }

    /// A consumer builder.
    pub fn consumer(&self) -> ConsumerBuilder {
        strand_client::Consumer::builder(self.bootstrap.clone()).security(self.security.clone())
    }

    /// A share-consumer builder for `group`.
    pub fn share_consumer(&self, group: String) -> ShareConsumerBuilder {
        ShareConsumer::builder(self.bootstrap.clone(), group).security(self.security.clone())
    }
}
