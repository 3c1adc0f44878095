//! `strand broker`: run a broker until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strand_broker::BrokerConfig;
use strand_broker::config::ClientAuthMode;

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// TOML config file; flags given here override its values.
    #[arg(long, env = "STRAND_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./strand-data].
    #[arg(long, env = "STRAND_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9292].
    #[arg(long, env = "STRAND_LISTEN")]
    listen: Option<String>,
    /// Address clients should use for this broker [default: the listen address].
    #[arg(long, env = "STRAND_ADVERTISED_ADDR")]
    advertised_addr: Option<String>,
    /// This broker's node id [default: 1].
    #[arg(long, env = "STRAND_NODE_ID")]
    node_id: Option<u64>,
    /// Every broker of the cluster, this one included:
    /// `1@host:port,2@host:port,3@host:port` [default: a cluster of one].
    #[arg(long, env = "STRAND_PEERS")]
    peers: Option<String>,
    /// Join a running cluster through any of these brokers
    /// (`host:port[,host:port…]`), with an empty data directory the first
    /// time; keep the flag on restarts. Conflicts with --peers.
    #[arg(long, env = "STRAND_JOIN", conflicts_with = "peers")]
    join: Option<String>,
    /// Serve /metrics, /health/live and /health/ready over HTTP here
    /// [default: off].
    #[arg(long, env = "STRAND_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// CA bundle (PEM) client and peer certificates chain to; with
    /// --tls-cert and --tls-key turns TLS on [default: plaintext].
    #[arg(long, env = "STRAND_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This broker's certificate (PEM), naming its node id (`strand cert broker`).
    #[arg(long, env = "STRAND_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "STRAND_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Whether clients must present a certificate [default: required].
    #[arg(long, env = "STRAND_CLIENT_AUTH", value_parser = ["required", "optional", "none"])]
    client_auth: Option<String>,
    /// Serve plaintext or unauthenticated clients on an address other than
    /// loopback (refused otherwise).
    #[arg(long, env = "STRAND_ALLOW_INSECURE")]
    allow_insecure: bool,
    /// Enforce ACLs (`strand acl`) on every request.
    #[arg(long, env = "STRAND_AUTHORIZATION")]
    authorization: bool,
    /// Refuse clients that proved no identity (no certificate, no password
    /// login); with --client-auth optional, clients use either.
    #[arg(long, env = "STRAND_REQUIRE_AUTHENTICATION")]
    require_authentication: bool,
    /// Principals allowed everything, `User:<name>[,User:<name>…]`.
    #[arg(long, env = "STRAND_SUPER_USERS", value_delimiter = ',')]
    super_users: Vec<String>,
}

impl BrokerArgs {
    fn into_config(self) -> anyhow::Result<BrokerConfig> {
        let mut c = match &self.config {
            Some(p) => BrokerConfig::from_file(p)?,
            None => BrokerConfig::default(),
        };
        if let Some(d) = self.data_dir {
            c.data_dir = d;
        }
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(a) = self.advertised_addr {
            c.advertised_addr = Some(a);
        }
        if let Some(n) = self.node_id {
            c.node_id = n;
        }
        if let Some(p) = self.peers {
            c.peers = vec![p];
        }
        if let Some(j) = self.join {
            c.join = Some(j);
        }
        if let Some(m) = self.metrics_listen {
            c.metrics_listen = Some(m);
        }
        let sec = &mut c.security;
        if let Some(p) = self.tls_ca {
            sec.tls_ca = Some(p);
        }
        if let Some(p) = self.tls_cert {
            sec.tls_cert = Some(p);
        }
        if let Some(p) = self.tls_key {
            sec.tls_key = Some(p);
        }
        sec.client_auth = match self.client_auth.as_deref() {
            Some("optional") => ClientAuthMode::Optional,
            Some("none") => ClientAuthMode::None,
            Some(_) => ClientAuthMode::Required,
            None => sec.client_auth,
        };
        sec.allow_insecure |= self.allow_insecure;
        sec.authorization |= self.authorization;
        sec.require_authentication |= self.require_authentication;
        sec.super_users.extend(self.super_users);
        c.validate()?;
        Ok(c)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    let config = args.into_config()?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    strand_broker::run(listener, config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
