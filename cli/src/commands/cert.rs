//! `strand cert`: a development CA and the certificates a TLS cluster
//! needs (`strand_security::dev_ca`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use strand_security::dev_ca::{self, Subject};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a CA: DIR/ca.pem and DIR/ca-key.pem.
    Ca(CaArgs),
    /// Issue a broker certificate (naming its node id, for serving and for
    /// its peers): DIR/broker-<ID>.pem and DIR/broker-<ID>-key.pem.
    Broker(BrokerCertArgs),
    /// Issue a client certificate for a user (the common name):
    /// DIR/<USER>.pem and DIR/<USER>-key.pem.
    Client(ClientCertArgs),
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Where the CA is written.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

#[derive(Debug, Args)]
pub struct BrokerCertArgs {
    /// The CA's directory; the certificate is written there too.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// The broker's node id.
    #[arg(long)]
    node_id: u64,
    /// A DNS name or IP address clients and peers reach the broker by
    /// (repeat for several).
    #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    hosts: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

#[derive(Debug, Args)]
pub struct ClientCertArgs {
    /// The CA's directory; the certificate is written there too.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// The user the certificate names.
    #[arg(long)]
    user: String,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

pub fn run(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    let written = match cmd {
        CertCommand::Ca(a) => {
            if a.dir.join("ca-key.pem").exists() {
                anyhow::bail!(
                    "{} already holds a CA; remove it first (certificates it signed stop being trusted)",
                    a.dir.display()
                );
            }
            dev_ca::create_ca(&a.dir, a.days)?
        }
        CertCommand::Broker(a) => {
            if a.node_id == 0 {
                anyhow::bail!("node ids start at 1");
            }
            let subject = Subject::Broker {
                node_id: a.node_id,
                hosts: a.hosts,
            };
            dev_ca::issue(&a.dir, &subject, &a.dir, &format!("broker-{}", a.node_id), a.days)?
        }
        CertCommand::Client(a) => {
            let valid = !a.user.is_empty() && a.user.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
            if !valid {
                anyhow::bail!("user names are letters, digits and -_.@");
            }
            let subject = Subject::User { name: a.user.clone() };
            dev_ca::issue(&a.dir, &subject, &a.dir, &a.user, a.days)?
        }
    };
    println!("{}\n{}", written.cert.display(), written.key.display());
    Ok(ExitCode::SUCCESS)
}
