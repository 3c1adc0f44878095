//! What the benchmark programs share: brokers as real processes of the
//! release `strand` binary, on loopback ports, each with its own data
//! directory and log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strand_client::Admin;

/// The `strand` binary: `STRAND_BIN`, else `target/release/strand`.
pub fn strand_bin() -> Result<PathBuf> {
    let bin = std::env::var_os("STRAND_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/strand"));
    if !bin.exists() {
        bail!(
            "no strand binary at {} (cargo build --release, or set STRAND_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// One broker process.
pub struct Broker {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    peers: Option<String>,
    join: Option<String>,
    child: Option<Child>,
}

impl Broker {
    pub fn start(&mut self, bin: &Path, log_dir: &Path) -> Result<()> {
        let log = std::fs::File::create(log_dir.join(format!("node-{}.log", self.id)))?;
        let mut cmd = Command::new(bin);
        cmd.args(["--log-format", "json", "broker", "--node-id", &self.id.to_string()])
            .args(["--listen", &self.addr, "--data-dir"])
            .arg(&self.dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(p) = &self.peers {
            cmd.args(["--peers", p]);
        }
        if let Some(j) = &self.join {
            cmd.args(["--join", j]);
        }
        self.child = Some(cmd.spawn().context("start broker")?);
        Ok(())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process gracefully (SIGTERM) and waits for it to exit;
    /// how long that took.
    pub fn stop(&mut self) -> Result<Duration> {
        let Some(mut c) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let start = std::time::Instant::now();
        let sent = Command::new("kill").args(["-TERM", &c.id().to_string()]).status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {} failed", c.id());
        c.wait()?;
        Ok(start.elapsed())
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Brokers started together with one `--peers` list.
pub struct Cluster {
    bin: PathBuf,
    pub tmp: tempfile::TempDir,
    pub brokers: Vec<Broker>,
}

/// A free loopback port.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    /// Starts `n` brokers.
    pub fn start(bin: PathBuf, n: u64) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let peers = (1..=n)
            .zip(&ports)
            .map(|(i, p)| format!("{i}@127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            bin,
            brokers: Vec::new(),
            tmp,
        };
        for (i, p) in (1..=n).zip(ports) {
            let mut b = Broker {
                id: i,
                addr: format!("127.0.0.1:{p}"),
                dir: c.tmp.path().join(format!("data-{i}")),
                peers: Some(peers.clone()),
                join: None,
                child: None,
            };
            b.start(&c.bin, c.tmp.path())?;
            c.brokers.push(b);
        }
        Ok(c)
    }

    /// Every broker address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Broker `id` (1-based).
    pub fn broker(&mut self, id: u64) -> &mut Broker {
        &mut self.brokers[(id - 1) as usize]
    }

    /// Kills every broker and hands over their data directories (deleted
    /// when dropped).
    pub fn into_data(mut self) -> tempfile::TempDir {
        for b in &mut self.brokers {
            b.kill();
        }
        self.tmp
    }

    /// Starts broker `id` again on its data directory.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        let (bin, logs) = (self.bin.clone(), self.tmp.path().to_path_buf());
        self.broker(id).start(&bin, &logs)
    }

    /// Starts a new broker that joins with `--join`.
    pub fn join(&mut self) -> Result<u64> {
        let id = self.brokers.len() as u64 + 1;
        let mut b = Broker {
            id,
            addr: format!("127.0.0.1:{}", free_port()?),
            dir: self.tmp.path().join(format!("data-{id}")),
            peers: None,
            join: Some(self.brokers[0].addr.clone()),
            child: None,
        };
        b.start(&self.bin, self.tmp.path())?;
        self.brokers.push(b);
        Ok(id)
    }
}

/// An admin client, once a broker answers (within 30 s).
pub async fn admin(c: &Cluster) -> Result<Admin> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Admin::connect(c.bootstrap()).await {
            Ok(a) => return Ok(a),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
