//! Tests of the deployment artifacts in `deploy/`:
//!
//! - `deploy/local-cluster.sh` starts and stops a real 3-broker cluster twice
//!   (the second start reopens the data of the first), and leaves no broker
//!   process of its pid files running;
//! - `deploy/k8s/validate.py` accepts the Kubernetes, compose and Prometheus
//!   files;
//! - `deploy/compose-test.sh` runs end to end where a Docker engine answers.
//!
//! Both run the `strand` binary Cargo built for these tests (`STRAND_BIN`),
//! so they build nothing: the compose test packages it, with the shared
//! libraries it links, into the `FROM scratch` image. Building and running
//! three containers still takes a minute or two, so the compose test is
//! `#[ignore]`d (`.ci/run` runs it). The tests run one at a time.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn found(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Output {
    ok: bool,
    text: String,
}

/// Runs `cmd` to completion within `limit`, stdout and stderr (merged) in a
/// file so that nothing a script leaves running can hold a pipe open.
fn run(cmd: Command, limit: Duration) -> Output {
    run_with_stdin(cmd, limit, Stdio::null())
}

fn run_with_stdin(mut cmd: Command, limit: Duration, stdin: Stdio) -> Output {
    let mut log = tempfile::NamedTempFile::new().expect("temp file");
    let out = log.reopen().expect("reopen");
    let err = out.try_clone().expect("clone");
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(stdin)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut text = String::new();
            let _ = log.read_to_string(&mut text);
            panic!("{what} did not finish within {limit:?}; output:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    log.as_file_mut().read_to_string(&mut text).expect("read output");
    Output {
        ok: status.success(),
        text,
    }
}

/// A live (not zombie) process: the script's brokers are orphans, so their
/// parent may never reap them.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}

/// `base..base+3` and `base+100..base+103` all free (client and metrics ports).
fn free_port_base() -> u16 {
    (24_000u16..60_000)
        .step_by(7)
        .find(|&base| {
            let ports = (0..3).flat_map(|i| [base + i, base + 100 + i]);
            let held: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
            held.iter().all(Result::is_ok)
        })
        .expect("no free ports")
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `deploy/local-cluster.sh` with its own state directory and ports; stops
/// whatever it started when dropped, also when the test fails.
struct LocalCluster {
    state: tempfile::TempDir,
    port: u16,
    metrics_port: u16,
}

impl LocalCluster {
    fn new() -> Self {
        let port = free_port_base();
        LocalCluster {
            state: tempfile::tempdir().expect("tempdir"),
            port,
            metrics_port: port + 100,
        }
    }

    fn script(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(deploy_dir().join("local-cluster.sh"))
            .args(args)
            .env("STRAND_LOCAL_DIR", self.state.path())
            .env("STRAND_LOCAL_PORT", self.port.to_string())
            .env("STRAND_LOCAL_METRICS_PORT", self.metrics_port.to_string())
            .env("STRAND_BIN", env!("CARGO_BIN_EXE_strand"))
            .env_remove("STRAND_BOOTSTRAP");
        run(cmd, limit)
    }

    fn bootstrap(&self) -> String {
        (0..3)
            .map(|i| format!("127.0.0.1:{}", self.port + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn pids(&self) -> Vec<u32> {
        (1..=3)
            .filter_map(|i| std::fs::read_to_string(self.state.path().join(format!("node-{i}.pid"))).ok())
            .map(|s| s.trim().parse().expect("pid file holds a pid"))
            .collect()
    }

    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strand"));
        cmd.args(["--bootstrap", &self.bootstrap()]).args(args);
        match stdin {
            None => run(cmd, Duration::from_secs(60)),
            Some(input) => {
                let mut f = tempfile::NamedTempFile::new().expect("temp file");
                f.write_all(input.as_bytes()).expect("write stdin");
                let file = File::open(f.path()).expect("open stdin");
                run_with_stdin(cmd, Duration::from_secs(60), Stdio::from(file))
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let pids = self.pids();
        let _ = self.script(&["stop"], Duration::from_secs(60));
        for pid in pids {
            if alive(pid) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

#[test]
fn local_cluster_starts_and_stops_twice() {
    let _serial = serial();
    let c = LocalCluster::new();
    let build_and_start = Duration::from_secs(120); // the script uses the binary Cargo built for this test
    let mut all_pids = Vec::new();

    for round in 1..=2 {
        let out = c.script(&["start", "3"], build_and_start);
        assert!(out.ok, "round {round}: start failed:\n{}", out.text);
        assert!(
            out.text.contains(&format!("bootstrap: {}", c.bootstrap())),
            "round {round}: start does not print the bootstrap list:\n{}",
            out.text
        );
        let pids = c.pids();
        assert_eq!(pids.len(), 3, "round {round}: three pid files");
        assert!(pids.iter().all(|&p| alive(p)), "round {round}: brokers run after start");
        all_pids.extend(&pids);

        let again = c.script(&["start", "3"], Duration::from_secs(60));
        assert!(
            again.ok && again.text.contains("already running"),
            "second start:\n{}",
            again.text
        );
        assert_eq!(c.pids(), pids, "a second start starts nothing");

        let status = c.script(&["status"], Duration::from_secs(60));
        assert!(status.ok, "status failed:\n{}", status.text);
        assert_eq!(
            status.text.matches(" up").count(),
            3,
            "three brokers up:\n{}",
            status.text
        );

        if round == 1 {
            let out = c.cli(
                &[
                    "topic",
                    "create",
                    "deploy-test",
                    "--partitions",
                    "2",
                    "--replication-factor",
                    "3",
                ],
                None,
            );
            assert!(out.ok, "topic create:\n{}", out.text);
            let out = c.cli(&["produce", "deploy-test"], Some("one\ntwo\nthree\n"));
            assert!(out.ok && out.text.contains("3 of 3"), "produce:\n{}", out.text);
            check_metrics(&c);
        } else {
            // The second start reopened the first one's data.
            let out = c.cli(
                &[
                    "consume",
                    "deploy-test",
                    "--from-beginning",
                    "--max-messages",
                    "3",
                    "--timeout-ms",
                    "30000",
                ],
                None,
            );
            assert!(out.ok, "consume after restart:\n{}", out.text);
            let mut got: Vec<&str> = out.text.lines().filter(|l| !l.starts_with("consumed")).collect();
            got.sort_unstable();
            assert_eq!(got, ["one", "three", "two"], "records after restart:\n{}", out.text);
        }

        let out = c.script(&["stop"], Duration::from_secs(60));
        assert!(out.ok, "stop failed:\n{}", out.text);
        assert!(c.pids().is_empty(), "stop removes the pid files");
        for &pid in &pids {
            assert!(!alive(pid), "round {round}: broker pid {pid} still runs after stop");
        }
        let out = c.script(&["stop"], Duration::from_secs(60));
        assert!(out.ok && out.text.contains("not running"), "second stop:\n{}", out.text);
    }
    for pid in all_pids {
        assert!(!alive(pid), "broker pid {pid} still runs");
    }
}

/// Health endpoints, and every metric the alerts and dashboard use exists.
fn check_metrics(c: &LocalCluster) {
    let supports = Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(["broker", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--metrics-listen"));
    if !supports {
        eprintln!("strand has no --metrics-listen: metrics not checked");
        return;
    }
    for i in 0..3 {
        let port = c.metrics_port + i;
        assert_eq!(http_get(port, "/health/live").map(|r| r.0), Some(200), "live on {port}");
        wait_until("ready", Duration::from_secs(30), || {
            (http_get(port, "/health/ready")?.0 == 200).then_some(())
        });
    }
    // Per-topic counters appear with the first request; the leaders that
    // served them count them, so the three scrapes together hold every name.
    let out = c.cli(
        &[
            "consume",
            "deploy-test",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "30000",
        ],
        None,
    );
    assert!(out.ok, "consume:\n{}", out.text);
    let body = wait_until("produce and fetch metrics", Duration::from_secs(30), || {
        let all: String = (0..3)
            .map(|i| {
                http_get(c.metrics_port + i, "/metrics")
                    .filter(|r| r.0 == 200)
                    .map(|r| r.1)
            })
            .collect::<Option<Vec<_>>>()?
            .concat();
        (all.contains("strand_produce_records_total{topic=\"deploy-test\"}")
            && all.contains("strand_fetch_bytes_total{topic=\"deploy-test\"}"))
        .then_some(all)
    });
    if !found("python3") {
        eprintln!("python3 not found: metric names of the alerts and dashboard not checked");
        return;
    }
    let mut scrape = tempfile::NamedTempFile::new().expect("temp file");
    scrape.write_all(body.as_bytes()).expect("write scrape");
    let mut cmd = Command::new("python3");
    cmd.arg(deploy_dir().join("k8s/validate.py"))
        .arg("--no-promtool")
        .arg("--metrics")
        .arg(scrape.path());
    let out = run(cmd, Duration::from_secs(300));
    assert!(
        out.ok,
        "alerts/dashboard use metrics the broker does not export:\n{}",
        out.text
    );
}

#[test]
fn manifests_validate() {
    let _serial = serial();
    if !found("python3") {
        eprintln!("SKIP: python3 not found; deploy/k8s/validate.py not run");
        return;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(deploy_dir().join("k8s/validate.py"));
    let out = run(cmd, Duration::from_secs(300));
    assert!(out.ok, "validate.py failed:\n{}", out.text);
    assert!(out.text.contains("OK:"), "{}", out.text);
}

#[test]
#[ignore = "slow: builds a container image and runs three brokers in it; run by .ci/run"]
fn compose_cluster_survives_a_broker_restart() {
    let _serial = serial();
    let docker = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !docker {
        eprintln!("SKIP: no Docker engine reachable (docker info failed); deploy/compose-test.sh not run");
        return;
    }
    let mut cmd = Command::new("bash");
    cmd.arg(deploy_dir().join("compose-test.sh"))
        .env_remove("KEEP")
        .env("STRAND_BIN", env!("CARGO_BIN_EXE_strand"));
    let out = run(cmd, Duration::from_secs(30 * 60));
    let _ = File::create(std::env::temp_dir().join("strand-compose-test.log"))
        .and_then(|mut f| f.write_all(out.text.as_bytes()));
    assert!(out.ok, "compose-test.sh failed:\n{}", out.text);
    assert!(out.text.contains("compose-test: PASSED"), "{}", out.text);
}
