//! A cluster of real `strand broker` processes on loopback, each with its
//! own data directory and log file, that tests can kill, pause and restart.
//! Every process it started is killed when the harness is dropped, also when
//! a test fails.

#![allow(dead_code)]

pub mod netns;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strand_client::{Admin, Security};
use strand_security::dev_ca::{self, Subject};

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    /// Seeds of a broker that joined the running cluster (`--join`).
    joins: Option<String>,
    /// Where it listens, when `addr` is its fault proxy.
    listen: Option<String>,
    child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    peers: String,
    config: PathBuf,
    tmp: tempfile::TempDir,
    /// Brokers write a durability journal (see `journal_path`).
    journal: bool,
    /// Brokers run in their own network namespaces (dropped after them).
    mesh: Option<netns::Mesh>,
    /// tmpfs mounted over data directories (unmounted after the brokers
    /// stop).
    mounts: Vec<PathBuf>,
    /// One fault proxy per broker, when every connection goes through them.
    proxies: Vec<proxy::FaultProxy>,
    /// The development CA and certificates, when the brokers serve TLS.
    certs: Option<PathBuf>,
}

/// The cluster's bootstrap list and how to connect to it, for clients on
/// other tasks.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub bootstrap: String,
    pub security: Security,
}

impl Endpoint {
    pub async fn admin(&self) -> strand_client::Result<Admin> {
        Admin::connect_with(self.bootstrap.clone(), self.security.clone()).await
    }

    pub fn producer(&self) -> strand_client::ProducerBuilder {
        strand_client::Producer::builder(self.bootstrap.clone()).security(self.security.clone())
    }

    pub fn consumer(&self) -> strand_client::ConsumerBuilder {
        strand_client::Consumer::builder(self.bootstrap.clone()).security(self.security.clone())
    }

    pub fn share_consumer(&self, group: &str) -> strand_client::ShareConsumerBuilder {
        strand_client::ShareConsumer::builder(self.bootstrap.clone(), group).security(self.security.clone())
    }
}

/// Ports the OS hands out for `n` listeners, released for the brokers.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

impl Cluster {
    /// Starts `n` brokers that form one cluster.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, "")
    }

    /// Starts `n` brokers with extra TOML config lines.
    pub fn start_with(n: usize, extra_config: &str) -> Self {
        Self::start_opts(n, extra_config, false, None, None)
    }

    /// Starts `n` brokers serving mutual TLS with certificates from a
    /// development CA (see `certs_dir`, `security`).
    pub fn start_tls(n: usize, extra_config: &str) -> Self {
        Self::start_full(n, extra_config, false, None, None, true)
    }

    /// The directory of the CA (`ca.pem`, `ca-key.pem`) and the brokers'
    /// certificates, when TLS is on.
    pub fn certs_dir(&self) -> Option<&Path> {
        self.certs.as_deref()
    }

    /// How a client connects: mutual TLS as user `test-admin` when the
    /// brokers serve TLS, plaintext otherwise.
    pub fn security(&self) -> Security {
        let Some(dir) = &self.certs else {
            return Security::plaintext();
        };
        let cert = dir.join("test-admin.pem");
        if !cert.exists() {
            dev_ca::issue(
                dir,
                &Subject::User {
                    name: "test-admin".into(),
                },
                dir,
                "test-admin",
                2,
            )
            .expect("client cert");
        }
        Security::mutual_tls(dir.join("ca.pem"), cert, dir.join("test-admin-key.pem")).expect("client TLS")
    }

    /// Where and how clients connect.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            bootstrap: self.bootstrap(),
            security: self.security(),
        }
    }

    /// An admin client of broker `addr` (with the cluster's security).
    pub async fn admin_of(&self, addr: &str) -> strand_client::Result<Admin> {
        Admin::connect_with(addr, self.security()).await
    }

    /// Starts `n` journaled brokers, each in its own namespace of `mesh`
    /// (so links between them can be cut).
    pub fn start_in_mesh(mesh: netns::Mesh, n: usize, extra_config: &str) -> Self {
        Self::start_full(n, extra_config, true, Some(mesh), None, true)
    }

    /// Starts `n` journaled brokers, every connection to each (from clients
    /// and peers alike) through a seeded fault proxy (see `proxies`). Call
    /// inside a Tokio runtime.
    pub fn start_proxied(n: usize, extra_config: &str, seed: u64) -> Self {
        Self::start_full(n, extra_config, true, None, Some(seed), true)
    }

    /// The fault proxies, when started with `start_proxied`.
    pub fn proxies(&self) -> &[proxy::FaultProxy] {
        &self.proxies
    }

    /// The namespaces, when the brokers run in a mesh.
    pub fn mesh(&self) -> Option<&netns::Mesh> {
        self.mesh.as_ref()
    }

    /// Like `start_with`, each broker recording the bytes of every segment
    /// it fsynced (`STRAND_TEST_FSYNC_JOURNAL`), for power-loss tests.
    pub fn start_journaled(n: usize, extra_config: &str) -> Self {
        Self::start_full(n, extra_config, true, None, None, true)
    }

    fn start_opts(
        n: usize,
        extra_config: &str,
        journal: bool,
        mesh: Option<netns::Mesh>,
        proxy_seed: Option<u64>,
    ) -> Self {
        Self::start_full(n, extra_config, journal, mesh, proxy_seed, false)
    }

    fn start_full(
        n: usize,
        extra_config: &str,
        journal: bool,
        mesh: Option<netns::Mesh>,
        proxy_seed: Option<u64>,
        tls: bool,
    ) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut addrs: Vec<String> = match &mesh {
            Some(m) => (1..=n).map(|i| format!("{}:9292", m.addr(i))).collect(),
            None => free_ports(n).iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        };
        let mut listens: Vec<Option<String>> = vec![None; n];
        let mut proxies = Vec::new();
        if let Some(seed) = proxy_seed {
            for (i, upstream) in addrs.iter_mut().enumerate() {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
                let p = proxy::FaultProxy::start(l, upstream.clone(), seed.wrapping_add(i as u64));
                listens[i] = Some(std::mem::replace(upstream, p.addr.clone()));
                proxies.push(p);
            }
        }
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        // Faster elections than the default keep failover tests short.
        let config = tmp.path().join("strand.toml");
        std::fs::write(
            &config,
            format!("raft_tick_ms = 50\nleader_balance_interval_ms = 500\n{extra_config}"),
        )
        .expect("config");
        let mut c = Cluster {
            nodes: Vec::new(),
            peers,
            config,
            tmp,
            journal,
            mesh,
            mounts: Vec::new(),
            proxies,
            certs: None,
        };
        if tls {
            let dir = c.tmp.path().join("certs");
            dev_ca::create_ca(&dir, 2).expect("CA");
            c.certs = Some(dir);
        }
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let dir = c.tmp.path().join(format!("node-{id}"));
            c.nodes.push(Node {
                id,
                addr: addr.clone(),
                dir,
                joins: None,
                listen: listens[i].clone(),
                child: None,
            });
        }
        for id in 1..=n as u64 {
            c.issue_broker_cert(id);
            c.spawn(id);
        }
        c
    }

    /// Issues broker `id` a new certificate (same CA, new key) in place of
    /// its files, as an operator's rotation does; the running broker picks
    /// it up at its next reload check.
    pub fn rotate_broker_cert(&self, id: u64) {
        let Some(dir) = &self.certs else { return };
        let _ = std::fs::remove_file(dir.join(format!("broker-{id}.pem")));
        self.issue_broker_cert(id);
    }

    /// Broker `id`'s certificate, for the hosts of its address (TLS only).
    fn issue_broker_cert(&self, id: u64) {
        let Some(dir) = &self.certs else { return };
        if dir.join(format!("broker-{id}.pem")).exists() {
            return;
        }
        let host = self
            .node(id)
            .addr
            .rsplit_once(':')
            .map_or("127.0.0.1", |(h, _)| h)
            .to_string();
        let subject = Subject::Broker {
            node_id: id,
            hosts: vec![host, "127.0.0.1".into(), "localhost".into()],
        };
        dev_ca::issue(dir, &subject, dir, &format!("broker-{id}"), 2).expect("broker cert");
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn spawn(&mut self, id: u64) {
        let (peers, config) = (self.peers.clone(), self.config.clone());
        let journal = self.journal.then(|| self.journal_path(id));
        let log_path = self.tmp.path().join(format!("node-{id}.log"));
        let node = &mut self.nodes[(id - 1) as usize];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let (how, with) = match &node.joins {
            Some(seeds) => ("--join", seeds.clone()),
            None => ("--peers", peers),
        };
        let mut cmd = match &self.mesh {
            Some(m) => {
                let mut c = Command::new("ip");
                c.args(m.exec_prefix(id as usize)).arg(env!("CARGO_BIN_EXE_strand"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_strand")),
        };
        if let Some(j) = journal {
            cmd.env(strand_storage::JOURNAL_ENV, j);
        }
        if let Some(dir) = &self.certs {
            cmd.arg("--log-format")
                .arg("json")
                .arg("broker")
                .arg("--tls-ca")
                .arg(dir.join("ca.pem"))
                .arg("--tls-cert")
                .arg(dir.join(format!("broker-{id}.pem")))
                .arg("--tls-key")
                .arg(dir.join(format!("broker-{id}-key.pem")))
                .arg("--config");
        } else {
            cmd.args(["--log-format", "json", "broker", "--config"]);
        }
        let child = cmd
            .arg(&config)
            .args([
                "--node-id",
                &id.to_string(),
                "--listen",
                node.listen.as_deref().unwrap_or(&node.addr),
                "--advertised-addr",
                &node.addr,
                how,
                &with,
                "--data-dir",
            ])
            .arg(&node.dir)
            .env("RUST_LOG", "info,strand_broker::server=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn broker");
        node.child = Some(child);
    }

    /// Starts one more broker, with an empty data directory, that joins
    /// the running cluster; returns its node id.
    pub fn add_joining(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let port = free_ports(1)[0];
        let seeds = self.bootstrap();
        self.nodes.push(Node {
            id,
            addr: format!("127.0.0.1:{port}"),
            dir: self.tmp.path().join(format!("node-{id}")),
            joins: Some(seeds),
            listen: None,
            child: None,
        });
        self.issue_broker_cert(id);
        self.spawn(id);
        id
    }

    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",")
    }

    pub fn addr(&self, id: u64) -> String {
        self.node(id).addr.clone()
    }

    /// Moves broker `id`'s data directory (the broker must be stopped) onto
    /// a tmpfs with `free_kib` KiB free beyond what the data takes, to run it
    /// full. `false` where mounting is not allowed (not root); the directory
    /// is unchanged then.
    pub fn mount_small_disk(&mut self, id: u64, free_kib: u64) -> bool {
        let dir = self.node(id).dir.clone();
        let used = Command::new("du")
            .args(["-sk"])
            .arg(&dir)
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        let size = format!("{}k", used + free_kib);
        let aside = dir.with_extension("aside");
        if std::fs::rename(&dir, &aside).is_err() || std::fs::create_dir_all(&dir).is_err() {
            return false;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            let _ = std::fs::rename(&aside, &dir);
            return false;
        }
        self.mounts.push(dir.clone());
        let copied = Command::new("cp")
            .arg("-a")
            .arg(aside.join("."))
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(copied, "copying node {id}'s data onto its tmpfs failed");
        let _ = std::fs::remove_dir_all(&aside);
        true
    }

    /// Grows broker `id`'s tmpfs data directory to `size`.
    pub fn grow_disk(&self, id: u64, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.node(id).dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount of node {id}'s data directory failed");
    }

    /// Where a journaled broker records what it fsynced.
    pub fn journal_path(&self, id: u64) -> PathBuf {
        self.tmp.path().join(format!("node-{id}.fsync"))
    }

    /// The broker's log file (JSON lines).
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.tmp.path().join(format!("node-{id}.log"))
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).dir
    }

    fn signal(&self, id: u64, sig: &str) {
        if let Some(c) = &self.node(id).child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self, id: u64) {
        self.signal(id, "-TERM");
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(mut c) = node.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        panic!("node {id} did not stop on SIGTERM");
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    /// Waits until every running broker answers and knows a controller.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                assert!(Instant::now() < deadline, "node {} not ready", n.id);
                if let Ok(a) = self.admin_of(&n.addr).await
                    && a.metadata().await.is_ok_and(|m| m.controller_id != 0)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The leader of `topic`/`partition` as the running brokers report it.
    pub async fn leader(&self, topic: &str, partition: u32) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no leader for {topic}-{partition}");
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                if let Ok(a) = self.admin_of(&n.addr).await
                    && let Ok(t) = a.describe_topic(topic).await
                {
                    let l = t.partitions[partition as usize].leader;
                    if l != 0 && self.is_running(l) {
                        return l;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The controller leader.
    pub async fn controller(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no controller");
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                if let Ok(a) = self.admin_of(&n.addr).await
                    && let Ok(m) = a.metadata().await
                    && m.controller_id != 0
                    && self.is_running(m.controller_id)
                {
                    return m.controller_id;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the brokers' logs of a failed test for diagnosis.
            let keep = std::env::temp_dir().join(format!("strand-failed-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for n in &self.nodes {
                let log = self.tmp.path().join(format!("node-{}.log", n.id));
                let _ = std::fs::copy(&log, keep.join(format!("node-{}.log", n.id)));
            }
            if std::env::var_os("STRAND_KEEP_FAILED_DATA").is_some() {
                // The whole data directories too, to inspect the logs on disk.
                let _ = Command::new("cp")
                    .arg("-a")
                    .arg(self.tmp.path())
                    .arg(keep.join("data"))
                    .status();
            }
            eprintln!("broker logs kept in {}", keep.display());
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for m in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}
