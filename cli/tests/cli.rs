//! The `strand` binary end to end: a broker process on an ephemeral port and
//! the CLI commands a user types (issue: "The CLI round trip is tested too").

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct BrokerProcess {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strand() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strand"))
}

/// Starts `strand broker` on port 0 and reads the bound address from its
/// JSON log.
fn start_broker() -> BrokerProcess {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = strand()
        .args([
            "--log-format",
            "json",
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn broker");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "broker did not report its address");
        let line = lines.next().expect("broker exited early").expect("read log");
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v["fields"]["message"] == "broker serving" {
            break v["fields"]["addr"].as_str().expect("addr").to_string();
        }
    };
    // Keep draining the log so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    BrokerProcess { child, addr, _dir: dir }
}

fn run(b: &BrokerProcess, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = strand();
    cmd.env("STRAND_BOOTSTRAP", &b.addr).args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cli");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("cli output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn create_produce_consume_describe_delete() {
    let b = start_broker();
    let o = run(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=86400000",
        ],
        None,
    );
    assert!(o.status.success(), "create: {}", stderr(&o));

    let o = run(
        &b,
        &["produce", "orders", "--key-separator", ":"],
        Some("k1:first\nk2:second\nk1:third\n"),
    );
    assert!(o.status.success(), "produce: {}", stderr(&o));
    assert!(stdout(&o).contains("3 of 3 records acknowledged"), "{}", stdout(&o));

    let o = run(
        &b,
        &[
            "produce", "orders", "--key", "k3", "--value", "single", "--acks", "leader",
        ],
        None,
    );
    assert!(o.status.success(), "produce --value: {}", stderr(&o));

    let o = run(
        &b,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "4",
            "--format",
            "json",
        ],
        None,
    );
    assert!(o.status.success(), "consume: {}", stderr(&o));
    let records: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 4);
    for r in &records {
        for field in ["topic", "partition", "offset", "timestamp", "key", "value", "headers"] {
            assert!(r.get(field).is_some(), "field {field} in {r}");
        }
    }
    let k1: Vec<&str> = records
        .iter()
        .filter(|r| r["key"] == "k1")
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(k1, ["first", "third"], "one key's records in order");

    // Text format with a timeout: exits on idleness.
    let o = run(
        &b,
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--from-beginning",
            "--timeout-ms",
            "300",
        ],
        None,
    );
    assert!(o.status.success(), "consume --timeout-ms: {}", stderr(&o));

    let o = run(&b, &["topic", "describe", "orders", "--format", "json"], None);
    assert!(o.status.success());
    let d: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(3));
    assert_eq!(d["configs"]["retention.ms"], "86400000");
    let hw: u64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .sum();
    assert_eq!(hw, 4);

    let o = run(&b, &["topic", "list"], None);
    assert!(stdout(&o).contains("orders"));
    let o = run(&b, &["topic", "delete", "orders"], None);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    let o = run(&b, &["topic", "list"], None);
    assert!(!stdout(&o).contains("orders"));
}

#[test]
fn errors_are_one_readable_line_and_a_failing_exit_code() {
    let b = start_broker();
    for (args, reason) in [
        (vec!["consume", "missing", "--max-messages", "1"], "UNKNOWN_TOPIC"),
        (vec!["topic", "describe", "missing"], "UNKNOWN_TOPIC"),
        (vec!["topic", "create", "bad name"], "INVALID_TOPIC"),
        (vec!["topic", "create", "t", "--config", "nope=1"], "INVALID_CONFIG"),
    ] {
        let o = run(&b, &args, None);
        assert!(!o.status.success(), "{args:?} must fail");
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {err:?}");
        assert!(lines[0].contains(reason), "{args:?}: {err}");
    }
    let o = run(&b, &["topic", "create", "t"], None);
    assert!(o.status.success());
    let o = run(&b, &["produce", "t", "--value", "x", "--partition", "5"], None);
    assert!(!o.status.success(), "produce to a missing partition fails");
    assert!(stderr(&o).contains("UNKNOWN_PARTITION"), "{}", stderr(&o));
    assert!(stdout(&o).contains("0 of 1 records acknowledged"), "{}", stdout(&o));
}

#[test]
fn bench_produce_prints_a_json_summary() {
    let b = start_broker();
    let o = run(
        &b,
        &[
            "bench",
            "produce",
            "--topic",
            "bench",
            "--records",
            "2000",
            "--record-size",
            "100",
            "--keys",
            "10",
        ],
        None,
    );
    assert!(o.status.success(), "bench: {}", stderr(&o));
    let last = stdout(&o).lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&last).expect("json summary");
    assert_eq!(v["records"], 2000);
    for f in ["msgs_per_sec", "mb_per_sec", "p50_ms", "p99_ms", "p999_ms"] {
        assert!(v[f].as_f64().is_some(), "{f} in {v}");
    }
    for f in ["cpu_s", "cores", "cores_per_million_per_s"] {
        assert!(v["client"][f].as_f64().is_some(), "client {f} in {v}");
    }
    let o = run(&b, &["bench", "consume", "--topic", "bench", "--records", "2000"], None);
    assert!(o.status.success(), "bench consume: {}", stderr(&o));
}

#[test]
fn sigterm_stops_the_broker_cleanly() {
    let mut b = start_broker();
    let o = run(&b, &["topic", "create", "t"], None);
    assert!(o.status.success());
    let pid = b.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = b.child.try_wait().expect("wait") {
            assert!(s.success(), "graceful exit, got {s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "broker did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(stdout(o).trim()).expect("json output")
}

fn sum(v: &serde_json::Value, field: &str) -> i64 {
    v["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o[field].as_i64().expect("number"))
        .sum()
}

#[test]
fn consume_with_a_group_describe_reset_delete_and_replay_dead_letters() {
    let b = start_broker();
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    ok(run(&b, &["topic", "create", "clicks", "--partitions", "2"], None));
    let lines: String = (0..10).map(|i| format!("c{i}\n")).collect();
    ok(run(&b, &["produce", "clicks", "--key-separator", ":"], Some(&lines)));

    // Six records, committed exactly as printed.
    let first = ok(run(
        &b,
        &[
            "consume",
            "clicks",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "6",
        ],
        None,
    ));
    assert_eq!(first.lines().count(), 6);
    let d = json_of(&run(&b, &["group", "describe", "g", "--format", "json"], None));
    assert_eq!(d["state"], "Empty");
    assert_eq!(sum(&d, "committed"), 6, "{d}");
    assert_eq!(sum(&d, "lag"), 4, "{d}");
    let listed = ok(run(&b, &["group", "list"], None));
    assert!(listed.starts_with('g'), "{listed}");

    // The rest, from the committed offsets.
    let rest = ok(run(
        &b,
        &["consume", "clicks", "--group", "g", "--timeout-ms", "1500"],
        None,
    ));
    let mut all: Vec<&str> = first.lines().chain(rest.lines()).collect();
    all.sort_unstable();
    let mut want: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    want.sort_unstable();
    assert_eq!(all, want, "every record once across the two runs");

    // Rewind and read everything again.
    ok(run(
        &b,
        &["group", "reset-offsets", "g", "--topic", "clicks", "--to-earliest"],
        None,
    ));
    let again = ok(run(
        &b,
        &["consume", "clicks", "--group", "g", "--timeout-ms", "1500"],
        None,
    ));
    assert_eq!(again.lines().count(), 10);
    let o = run(&b, &["group", "reset-offsets", "g", "--topic", "clicks"], None);
    assert!(!o.status.success(), "a reset needs a target");

    // A dead letter goes back to its topic, once.
    ok(run(&b, &["topic", "create", "clicks.dlq", "--partitions", "1"], None));
    ok(run(
        &b,
        &[
            "produce",
            "clicks.dlq",
            "--value",
            "c-retry",
            "--header",
            "strand.dlq.topic=clicks",
            "--header",
            "strand.dlq.error=timeout",
        ],
        None,
    ));
    let o = run(&b, &["dlq", "replay", "clicks.dlq", "--timeout-ms", "1000"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("replayed 1 dead letters"), "{}", stderr(&o));
    let o = run(&b, &["dlq", "replay", "clicks.dlq", "--timeout-ms", "1000"], None);
    assert!(stderr(&o).contains("replayed 0 dead letters"), "{}", stderr(&o));
    let after = ok(run(
        &b,
        &["consume", "clicks", "--group", "g", "--timeout-ms", "1500"],
        None,
    ));
    assert_eq!(after.trim(), "c-retry");

    // Deleting: the group and its offsets are gone.
    ok(run(&b, &["group", "delete", "g"], None));
    let o = run(&b, &["group", "describe", "g"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("UNKNOWN_GROUP"), "{}", stderr(&o));
}

/// The topic-id issue's scenario, as a user types it: a group reads topic
/// `t`, `t` is deleted (the group's offsets for it are forgotten, with a
/// tombstone in `__consumer_offsets`) and created again with a new id, and
/// the group reads every record of the new topic by its reset policy,
/// never from the old topic's committed offset. `group describe` never
/// shows an offset past the log end as lag 0.
#[test]
fn a_recreated_topic_is_a_new_topic_for_its_groups() {
    let b = start_broker();
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let topic_id = |b: &BrokerProcess| {
        let v = json_of(&run(b, &["topic", "list", "--format", "json"], None));
        let t = v
            .as_array()
            .expect("topics")
            .iter()
            .find(|t| t["name"] == "t")
            .expect("t listed")
            .clone();
        t["topic_id"].as_str().expect("an id").to_string()
    };
    ok(run(&b, &["topic", "create", "t"], None));
    let old_id = topic_id(&b);
    assert_eq!(old_id.len(), 36, "a UUID: {old_id}");
    let d = json_of(&run(&b, &["topic", "describe", "t", "--format", "json"], None));
    assert_eq!(d["topic_id"], old_id.as_str());
    let first: String = (1..=10).map(|i| format!("{i}\n")).collect();
    ok(run(&b, &["produce", "t"], Some(&first)));
    let read = ok(run(
        &b,
        &[
            "consume",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "10",
        ],
        None,
    ));
    assert_eq!(read.lines().count(), 10);
    let d = json_of(&run(&b, &["group", "describe", "g", "--format", "json"], None));
    assert_eq!(sum(&d, "committed"), 10, "{d}");

    ok(run(&b, &["topic", "delete", "t"], None));
    // The coordinator forgets the deleted topic's offsets durably.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = ok(run(
            &b,
            &[
                "consume",
                "__consumer_offsets",
                "--from-beginning",
                "--timeout-ms",
                "1000",
            ],
            None,
        ));
        let records: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let last_offset = records.iter().rposition(|r| r["type"] == "offset" && r["topic"] == "t");
        let tombstone = records
            .iter()
            .rposition(|r| r["type"] == "topic_deleted" && r["topic"] == "t" && r["topic_id"] == old_id.as_str());
        if tombstone.is_some() && tombstone > last_offset {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no tombstone for the deleted topic's offsets: {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let d = json_of(&run(&b, &["group", "describe", "g", "--format", "json"], None));
    assert!(
        d["offsets"]
            .as_array()
            .is_none_or(|o| o.iter().all(|o| o["topic"] != "t")),
        "the group keeps no offset of the deleted topic: {d}"
    );

    ok(run(&b, &["topic", "create", "t"], None));
    let new_id = topic_id(&b);
    assert_ne!(new_id, old_id, "a topic created again has a new id");
    let second: String = (101..=112).map(|i| format!("{i}\n")).collect();
    ok(run(&b, &["produce", "t"], Some(&second)));
    let read = ok(run(
        &b,
        &[
            "consume",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--timeout-ms",
            "1500",
        ],
        None,
    ));
    let got: Vec<&str> = read.lines().collect();
    let want: Vec<String> = (101..=112).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "all 12 records of the new topic, none skipped");

    // An offset past the log end shows as out of range, not as lag 0.
    ok(run(
        &b,
        &["group", "reset-offsets", "g", "--topic", "t", "--to-offset", "50"],
        None,
    ));
    let d = json_of(&run(&b, &["group", "describe", "g", "--format", "json"], None));
    let o = &d["offsets"][0];
    assert_eq!(
        (o["committed"].as_i64(), o["lag"].as_i64()),
        (Some(50), Some(-1)),
        "{d}"
    );
    assert_eq!(o["out_of_range"], true, "{d}");
    let text = ok(run(&b, &["group", "describe", "g"], None));
    assert!(text.contains("OUT-OF-RANGE"), "{text}");
}

/// A queue from the command line: `produce --delay-ms`, two share-group
/// consumers splitting the work, `share-group describe` showing the delayed
/// record, and `--ack reject` sending a record to the dead-letter topic.
#[test]
fn consume_with_a_share_group_delays_describe_and_dead_letters() {
    let b = start_broker();
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    ok(run(&b, &["topic", "create", "tasks", "--partitions", "1"], None));
    let lines: String = (0..10).map(|i| format!("t{i}\n")).collect();
    ok(run(&b, &["produce", "tasks"], Some(&lines)));
    ok(run(
        &b,
        &["produce", "tasks", "--value", "later", "--delay-ms", "600000"],
        None,
    ));
    let consume = |n: &str, ack: &str| {
        ok(run(
            &b,
            &[
                "consume",
                "tasks",
                "--share-group",
                "workers",
                "--from-beginning",
                "--max-messages",
                n,
                "--timeout-ms",
                "3000",
                "--ack",
                ack,
                "--format",
                "json",
            ],
            None,
        ))
    };
    let first = consume("4", "accept");
    let second = consume("100", "accept");
    let values = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["value"]
                    .as_str()
                    .expect("value")
                    .to_string()
            })
            .collect()
    };
    let (a, b2) = (values(&first), values(&second));
    assert_eq!(a, vec!["t0", "t1", "t2", "t3"]);
    assert_eq!(
        b2,
        (4..10).map(|i| format!("t{i}")).collect::<Vec<_>>(),
        "the rest, and not the delayed one"
    );

    let d = json_of(&run(
        &b,
        &["share-group", "describe", "workers", "--format", "json"],
        None,
    ));
    let p = &d["partitions"][0];
    assert_eq!(
        (p["start_offset"].as_u64(), p["delayed"].as_u64()),
        (Some(11), Some(1)),
        "{d}"
    );
    let listed = ok(run(&b, &["share-group", "list"], None));
    assert!(listed.lines().any(|l| l == "workers"), "{listed}");

    // Another group rejects what it reads: the records go to tasks.dlq.
    ok(run(
        &b,
        &[
            "consume",
            "tasks",
            "--share-group",
            "rejecters",
            "--from-beginning",
            "--max-messages",
            "2",
            "--timeout-ms",
            "3000",
            "--ack",
            "reject",
        ],
        None,
    ));
    let dead = ok(run(
        &b,
        &[
            "consume",
            "tasks.dlq",
            "--from-beginning",
            "--timeout-ms",
            "2000",
            "--format",
            "json",
        ],
        None,
    ));
    let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead[0]["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .any(|h| h["key"] == "strand.dlq.error")
    );

    let bad = run(
        &b,
        &["produce", "tasks", "--value", "x", "--deliver-at", "tomorrow"],
        None,
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));
}
