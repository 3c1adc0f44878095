//! The cluster a command talks to: the bootstrap brokers and how to
//! connect to them: flags, else `STRAND_*` variables, else the client
//! config file (`--client-config`, `STRAND_CLIENT_CONFIG`), a TOML file of
//! the same names:
//!
//! ```toml
//! bootstrap = "broker-1:9292,broker-2:9292"
//! tls_ca = "/etc/strand/ca.pem"
//! tls_cert = "/etc/strand/alice.pem"
//! tls_key = "/etc/strand/alice-key.pem"
//! user = "alice"            # with password_file: a password login
//! password_file = "/etc/strand/alice.password"
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use strand_client::{Admin, ConsumerBuilder, Producer, ProducerBuilder, Security, ShareConsumer, ShareConsumerBuilder};

/// Connection flags shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// A TOML file with any of bootstrap, tls_ca, tls_cert, tls_key, user,
    /// password_file (flags and variables win over it).
    #[arg(long, global = true, env = "STRAND_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// CA bundle (PEM) that brokers' certificates must chain to; turns TLS on.
    #[arg(long, global = true, env = "STRAND_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; its common name is the user.
    #[arg(long, global = true, env = "STRAND_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "STRAND_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Log in as this user with a password (SCRAM-SHA-256; the password is
    /// never sent). Use with TLS.
    #[arg(long, global = true, env = "STRAND_USER")]
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

/// The client config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    bootstrap: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
}

impl Target {
    /// From the global flags (and the client config file they name).
    pub fn new(bootstrap: Option<String>, flags: &ConnectArgs) -> anyhow::Result<Self> {
        let file: ClientConfig = match &flags.client_config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("client config {}", p.display()))?
            }
            None => ClientConfig::default(),
        };
        let password = match (&flags.password, &file.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        let args = ConnectArgs {
            client_config: None,
            tls_ca: flags.tls_ca.clone().or(file.tls_ca),
            tls_cert: flags.tls_cert.clone().or(file.tls_cert),
            tls_key: flags.tls_key.clone().or(file.tls_key),
            user: flags.user.clone().or(file.user),
            password,
        };
        let bootstrap = bootstrap.or(file.bootstrap).unwrap_or_else(|| "127.0.0.1:9292".into());
        let args = &args;
        let security = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
            (None, None, None) => Security::plaintext(),
            (Some(ca), Some(cert), Some(key)) => Security::mutual_tls(ca, cert, key)?,
            (Some(ca), None, None) => Security::tls(ca)?,
            (None, _, _) => anyhow::bail!("--tls-cert needs --tls-ca (the CA that signed the brokers' certificates)"),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let security = match (&args.user, &args.password) {
            (Some(user), Some(password)) => security.with_user(user, password),
            (Some(_), None) => anyhow::bail!("--user needs a password: STRAND_PASSWORD, --password or password_file"),
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
