//! Starting brokers for tests: each gets its own data directory and an
//! ephemeral port, and stops (flushing its logs) when asked.

use strand_broker::{BrokerConfig, RunningBroker};
use strand_proto::v1::{admin_client::AdminClient, strand_client::StrandClient};
use tonic::transport::Channel;

/// A broker on `127.0.0.1:0` over a temporary data directory.
pub struct TestBroker {
    pub broker: Option<RunningBroker>,
    pub dir: tempfile::TempDir,
    pub config: BrokerConfig,
}

pub fn test_config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..BrokerConfig::default()
    }
}

/// Logs to stderr when `RUST_LOG` is set (once per test binary).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl TestBroker {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = test_config(dir.path());
        Self::start_with(dir, config).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: BrokerConfig) -> Self {
        init_logs();
        let broker = RunningBroker::start(config.clone()).await.expect("broker starts");
        TestBroker {
            broker: Some(broker),
            dir,
            config,
        }
    }

    pub fn addr(&self) -> String {
        self.broker.as_ref().expect("running").addr.to_string()
    }

    /// Stops gracefully and starts again on the same data dir (new port).
    pub async fn restart(mut self) -> Self {
        if let Some(b) = self.broker.take() {
            b.stop().await.expect("clean stop");
        }
        let config = self.config.clone();
        Self::start_with(self.dir, config).await
    }

    pub async fn stop(mut self) {
        if let Some(b) = self.broker.take() {
            b.stop().await.expect("clean stop");
        }
    }

    pub async fn raw(&self) -> StrandClient<Channel> {
        StrandClient::connect(format!("http://{}", self.addr()))
            .await
            .expect("connect")
    }

    pub async fn raw_admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(format!("http://{}", self.addr()))
            .await
            .expect("connect")
    }
}

/// One uncompressed batch of `(key, value)` records stamped `ts`.
pub fn batch(records: &[(&str, &str)], ts: i64) -> bytes::Bytes {
    let mut b = strand_storage::BatchBuilder::new(strand_storage::Compression::None);
    for (k, v) in records {
        b.push(&strand_storage::NewRecord {
            timestamp_ms: ts,
            key: Some(k.as_bytes()),
            value: Some(v.as_bytes()),
            headers: &[],
        });
    }
    bytes::Bytes::from(b.build().expect("batch"))
}

/// The stable reason a failed request carries.
pub fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("strand-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}
