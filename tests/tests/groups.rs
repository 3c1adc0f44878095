//! Consumer groups against a real broker (issue "Consumer groups"): the
//! partitions of a topic are split between members, every record is
//! processed, no partition is held by two live members at once, a crashed
//! member's partitions move after its session timeout, a cooperative
//! rebalance moves only what it must, a static member gets its partitions
//! back, zombies cannot commit, offsets can be rewound by time, and poison
//! records end in the dead-letter topic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::dlq::{HEADER_ATTEMPTS, HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC};
use strand_client::{
    Admin, Consumer, DeadLetterQueue, OffsetReset, Outcome, Producer, ProducerRecord, RebalanceEvent, ResetTo,
    RetryPolicy,
};
use strand_proto::v1::groups_client::GroupsClient;
use strand_proto::v1::{CommitOffsetsRequest, GroupHeartbeatRequest, OffsetCommit, TopicPartitions};

use crate::harness::{TestBroker, reason, test_config};

const SESSION: Duration = Duration::from_millis(1500);

/// A broker with short group timers so tests run in seconds.
async fn broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.groups.initial_rebalance_delay_ms = 300;
    config.groups.heartbeat_interval_ms = 100;
    config.groups.min_session_timeout_ms = 100;
    config.groups.offsets_partitions = 2;
    TestBroker::start_with(dir, config).await
}

async fn create(b: &TestBroker, topic: &str, partitions: u32) {
    Admin::connect(b.addr())
        .await
        .unwrap()
        .create_topic(topic, partitions, 1, BTreeMap::new())
        .await
        .unwrap();
}

async fn produce(b: &TestBroker, topic: &str, from: usize, n: usize) {
    let p = Producer::builder(b.addr()).build().await.unwrap();
    let mut ds = Vec::new();
    for i in from..from + n {
        let r = ProducerRecord::new(topic, Bytes::from(format!("v{i}"))).key(Bytes::from(format!("k{i}")));
        ds.push(p.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    p.close().await.unwrap();
}

type Tp = (Arc<str>, u32);

/// What every consumer did, checked as it happens: a partition assigned
/// while another live consumer holds it fails the test.
#[derive(Default)]
struct World {
    holder: HashMap<Tp, String>,
    processed: Vec<(String, Tp, u64)>,
    events: Vec<(Instant, String, RebalanceEvent)>,
}

type Shared = Arc<Mutex<World>>;

fn on_event(world: &Shared, me: &str, e: &RebalanceEvent) {
    let mut w = world.lock().unwrap();
    match e {
        RebalanceEvent::Assigned(tps) => {
            for tp in tps {
                if let Some(other) = w.holder.get(tp) {
                    panic!(
                        "{tp:?} assigned to {me} while {other} holds it; events: {:#?}",
                        w.events
                    );
                }
                w.holder.insert(tp.clone(), me.to_string());
            }
        }
        RebalanceEvent::Revoked(tps) | RebalanceEvent::Lost(tps) => {
            for tp in tps {
                w.holder.remove(tp);
            }
        }
    }
    w.events.push((Instant::now(), me.to_string(), e.clone()));
}

/// A consumer task: poll, process (record), commit after processing.
struct Member {
    name: String,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

fn spawn_member(
    b: &TestBroker,
    world: &Shared,
    group: &str,
    topic: &str,
    name: &str,
    instance: Option<&str>,
) -> Member {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (addr, world, group, topic, me) = (
        b.addr(),
        Arc::clone(world),
        group.to_string(),
        topic.to_string(),
        name.to_string(),
    );
    let instance = instance.map(str::to_string);
    let task = tokio::spawn(async move {
        let w2 = Arc::clone(&world);
        let me2 = me.clone();
        let mut builder = Consumer::builder(addr)
            .group(group)
            .client_id(me.clone())
            .session_timeout(SESSION)
            .auto_commit(None)
            .auto_offset_reset(OffsetReset::Earliest)
            .max_wait(Duration::from_millis(100))
            .on_rebalance(move |e| on_event(&w2, &me2, e));
        if let Some(i) = instance {
            builder = builder.group_instance_id(i);
        }
        let mut c = builder.build().await.unwrap();
        c.subscribe(&[topic.as_str()]).await.unwrap();
        while !*stopped.borrow_and_update() {
            let records = c.poll().await.unwrap();
            if records.is_empty() {
                continue;
            }
            {
                let mut w = world.lock().unwrap();
                for r in &records {
                    let tp = (r.topic.clone(), r.partition);
                    assert_eq!(
                        w.holder.get(&tp).map(String::as_str),
                        Some(me.as_str()),
                        "processing {tp:?}"
                    );
                    w.processed.push((me.clone(), tp, r.offset));
                }
            }
            c.commit().await.unwrap();
        }
        c.close().await.unwrap();
    });
    Member {
        name: name.to_string(),
        task,
        stop,
    }
}

impl Member {
    async fn close(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("member closes")
            .unwrap();
    }

    /// A crash: the task and its consumer vanish without leaving the group.
    fn crash(self, world: &Shared) {
        self.task.abort();
        world.lock().unwrap().holder.retain(|_, h| *h != self.name);
    }
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn holdings(world: &Shared) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for h in world.lock().unwrap().holder.values() {
        *out.entry(h.clone()).or_insert(0) += 1;
    }
    out
}

fn processed_offsets(world: &Shared) -> BTreeMap<u32, BTreeSet<u64>> {
    let mut out: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for (_, tp, o) in &world.lock().unwrap().processed {
        out.entry(tp.1).or_default().insert(*o);
    }
    out
}

async fn ends(b: &TestBroker, topic: &str, partitions: u32) -> BTreeMap<u32, u64> {
    let admin = Admin::connect(b.addr()).await.unwrap();
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let o = admin
            .list_offsets(topic, p, strand_client::OffsetSpec::Latest)
            .await
            .unwrap();
        out.insert(p, o.offset);
    }
    out
}

fn all_processed(world: &Shared, ends: &BTreeMap<u32, u64>) -> bool {
    let got = processed_offsets(world);
    ends.iter()
        .all(|(p, end)| got.get(p).map_or(*end == 0, |s| (0..*end).all(|o| s.contains(&o))))
}

#[tokio::test]
async fn three_members_split_six_partitions_and_process_every_record() {
    let b = broker().await;
    create(&b, "orders", 6).await;
    produce(&b, "orders", 0, 3_000).await;
    let world = Shared::default();
    let members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| spawn_member(&b, &world, "g", "orders", n, None))
        .collect();
    let end = ends(&b, "orders", 6).await;
    wait_for("every record processed", Duration::from_secs(30), || {
        all_processed(&world, &end)
    })
    .await;
    wait_for("2 partitions each", Duration::from_secs(10), || {
        holdings(&world).values().copied().collect::<Vec<_>>() == vec![2, 2, 2]
    })
    .await;
    // Started together within the initial rebalance delay: one generation,
    // so no partition was processed twice.
    {
        let w = world.lock().unwrap();
        assert_eq!(w.processed.len(), 3_000, "each record processed exactly once");
        assert!(
            w.events
                .iter()
                .all(|(_, _, e)| matches!(e, RebalanceEvent::Assigned(_))),
            "no revocation: {:?}",
            w.events
        );
    }
    for m in members {
        m.close().await;
    }
    let committed = Admin::connect(b.addr())
        .await
        .unwrap()
        .group_offsets("g")
        .await
        .unwrap();
    let committed: BTreeMap<u32, u64> = committed.into_iter().map(|(_, p, o)| (p, o)).collect();
    assert_eq!(committed, end, "every partition committed up to its end");
}

#[tokio::test]
async fn a_crashed_members_partitions_move_within_the_session_timeout_and_nothing_is_skipped() {
    let b = broker().await;
    create(&b, "jobs", 6).await;
    let world = Shared::default();
    let mut members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| spawn_member(&b, &world, "g", "jobs", n, None))
        .collect();
    wait_for("2 partitions each", Duration::from_secs(10), || {
        holdings(&world).values().copied().collect::<Vec<_>>() == vec![2, 2, 2]
    })
    .await;
    produce(&b, "jobs", 0, 1_200).await;
    let victim = members.remove(2);
    let victim_name = victim.name.clone();
    let victims_partitions: Vec<Tp> = world
        .lock()
        .unwrap()
        .holder
        .iter()
        .filter(|(_, h)| **h == victim_name)
        .map(|(tp, _)| tp.clone())
        .collect();
    let crashed_at = Instant::now();
    victim.crash(&world);
    produce(&b, "jobs", 1_200, 1_200).await;
    wait_for("its partitions reassigned", SESSION + Duration::from_secs(5), || {
        let w = world.lock().unwrap();
        victims_partitions.iter().all(|tp| w.holder.contains_key(tp))
    })
    .await;
    let moved_after = crashed_at.elapsed();
    assert!(
        moved_after <= SESSION + Duration::from_secs(1),
        "reassigned after {moved_after:?}, session timeout {SESSION:?}"
    );
    let end = ends(&b, "jobs", 6).await;
    wait_for("every record processed", Duration::from_secs(30), || {
        all_processed(&world, &end)
    })
    .await;
    // Duplicates only where the crashed member had not committed yet.
    {
        let w = world.lock().unwrap();
        let mut seen: HashMap<(u32, u64), usize> = HashMap::new();
        for (_, tp, o) in &w.processed {
            *seen.entry((tp.1, *o)).or_default() += 1;
        }
        for ((p, o), n) in &seen {
            if *n > 1 {
                assert!(
                    victims_partitions.iter().any(|tp| tp.1 == *p),
                    "{p}@{o} processed {n} times but its partition never moved"
                );
            }
        }
    }
    for m in members {
        m.close().await;
    }
}

#[tokio::test]
async fn a_fourth_member_takes_only_the_partitions_it_must() {
    let b = broker().await;
    create(&b, "coop", 6).await;
    let world = Shared::default();
    let mut members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| spawn_member(&b, &world, "g", "coop", n, None))
        .collect();
    wait_for("2 partitions each", Duration::from_secs(10), || {
        holdings(&world).values().copied().collect::<Vec<_>>() == vec![2, 2, 2]
    })
    .await;
    let before: BTreeMap<Tp, String> = world
        .lock()
        .unwrap()
        .holder
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let events_before = world.lock().unwrap().events.len();
    members.push(spawn_member(&b, &world, "g", "coop", "d", None));
    wait_for("d holds a partition", Duration::from_secs(10), || {
        holdings(&world).get("d").is_some_and(|n| *n >= 1)
    })
    .await;
    // The group settles at 1, 1, 2, 2 partitions per member.
    wait_for("the group to settle at 1, 1, 2, 2", Duration::from_secs(10), || {
        let mut counts: Vec<usize> = holdings(&world).into_values().collect();
        counts.sort_unstable();
        counts == [1, 1, 2, 2]
    })
    .await;
    {
        let w = world.lock().unwrap();
        let revoked: Vec<&RebalanceEvent> = w.events[events_before..]
            .iter()
            .filter(|(_, _, e)| matches!(e, RebalanceEvent::Revoked(_) | RebalanceEvent::Lost(_)))
            .map(|(_, _, e)| e)
            .collect();
        let moved: usize = revoked
            .iter()
            .map(|e| match e {
                RebalanceEvent::Revoked(t) | RebalanceEvent::Lost(t) => t.len(),
                RebalanceEvent::Assigned(_) => 0,
            })
            .sum();
        assert_eq!(moved, 1, "only one partition revoked: {revoked:?}");
        let kept = before.iter().filter(|(tp, h)| w.holder.get(*tp) == Some(h)).count();
        assert_eq!(kept, 5, "the other five partitions stayed where they were");
    }
    for m in members {
        m.close().await;
    }
}

#[tokio::test]
async fn a_static_member_restarting_gets_its_partitions_back_without_a_rebalance() {
    let b = broker().await;
    create(&b, "static", 4).await;
    let world = Shared::default();
    let a = spawn_member(&b, &world, "g", "static", "a", Some("host-a"));
    let other = spawn_member(&b, &world, "g", "static", "b", Some("host-b"));
    wait_for("2 partitions each", Duration::from_secs(10), || {
        holdings(&world).values().copied().collect::<Vec<_>>() == vec![2, 2]
    })
    .await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    let epoch = admin.describe_group("g").await.unwrap().epoch;
    let mine: BTreeSet<Tp> = world
        .lock()
        .unwrap()
        .holder
        .iter()
        .filter(|(_, h)| *h == "a")
        .map(|(tp, _)| tp.clone())
        .collect();
    let events_before = world.lock().unwrap().events.len();
    a.crash(&world);
    let again = spawn_member(&b, &world, "g", "static", "a2", Some("host-a"));
    wait_for(
        "the restarted instance holds its partitions",
        Duration::from_secs(5),
        || holdings(&world).get("a2") == Some(&2),
    )
    .await;
    {
        let w = world.lock().unwrap();
        let now_mine: BTreeSet<Tp> = w
            .holder
            .iter()
            .filter(|(_, h)| *h == "a2")
            .map(|(tp, _)| tp.clone())
            .collect();
        assert_eq!(now_mine, mine, "the same partitions");
        assert!(
            w.events[events_before..].iter().all(|(_, who, _)| who == "a2"),
            "the other member saw no rebalance: {:?}",
            &w.events[events_before..]
        );
    }
    assert_eq!(
        admin.describe_group("g").await.unwrap().epoch,
        epoch,
        "no new group epoch"
    );
    again.close().await;
    other.close().await;
}

fn tps(topic: &str, partitions: &[u32]) -> Vec<TopicPartitions> {
    vec![TopicPartitions {
        topic: topic.into(),
        partitions: partitions.to_vec(),
        topic_id: String::new(),
    }]
}

fn commit_req(member: &str, epoch: i32, partition: u32, offset: u64) -> CommitOffsetsRequest {
    CommitOffsetsRequest {
        group: "z".into(),
        member_id: member.into(),
        member_epoch: epoch,
        offsets: vec![OffsetCommit {
            topic: "zt".into(),
            partition,
            offset,
            metadata: String::new(),
            topic_id: String::new(),
        }],
    }
}

#[tokio::test]
async fn zombies_stale_epochs_and_foreign_partitions_cannot_commit_and_offsets_never_go_back() {
    let b = broker().await;
    create(&b, "zt", 2).await;
    let mut g = GroupsClient::connect(format!("http://{}", b.addr())).await.unwrap();
    let join = |instance: &str| GroupHeartbeatRequest {
        group: "z".into(),
        member_epoch: 0,
        topics: vec!["zt".into()],
        session_timeout_ms: 600,
        instance_id: instance.into(),
        ..Default::default()
    };
    let mut a = g.heartbeat(join("")).await.unwrap().into_inner();
    // Heartbeat until the initial delay passed and partitions are granted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.assignment.is_empty() {
        assert!(Instant::now() < deadline, "no assignment");
        tokio::time::sleep(Duration::from_millis(50)).await;
        a = g
            .heartbeat(GroupHeartbeatRequest {
                member_id: a.member_id.clone(),
                member_epoch: a.member_epoch,
                owned: a.assignment.clone(),
                ..join("")
            })
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(a.assignment.len(), 1);
    assert_eq!(
        (&a.assignment[0].topic, &a.assignment[0].partitions),
        (&tps("zt", &[0, 1])[0].topic, &tps("zt", &[0, 1])[0].partitions)
    );
    assert_eq!(a.assignment[0].topic_id.len(), 36, "an assignment names the topic's id");
    g.commit_offsets(commit_req(&a.member_id, a.member_epoch, 0, 10))
        .await
        .unwrap();

    // Backwards: accepted but ignored.
    let r = g
        .commit_offsets(commit_req(&a.member_id, a.member_epoch, 0, 4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.committed[0].offset, 10, "a committed offset never goes back");

    // A stale epoch: REBALANCE_IN_PROGRESS.
    let e = g
        .commit_offsets(commit_req(&a.member_id, a.member_epoch - 1, 0, 11))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "REBALANCE_IN_PROGRESS");
    // A partition of another topic it does not hold: FENCED.
    let mut foreign = commit_req(&a.member_id, a.member_epoch, 0, 1);
    foreign.offsets[0].topic = "other".into();
    assert_eq!(reason(&g.commit_offsets(foreign).await.unwrap_err()), "FENCED");
    // A commit with no membership while the group has members: FENCED.
    assert_eq!(
        reason(&g.commit_offsets(commit_req("", -1, 0, 12)).await.unwrap_err()),
        "FENCED"
    );

    // The member goes silent past its session timeout: a zombie.
    let admin = Admin::connect(b.addr()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !admin.describe_group("z").await.unwrap().members.is_empty() {
        assert!(Instant::now() < deadline, "the silent member's session did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = g
        .commit_offsets(commit_req(&a.member_id, a.member_epoch, 0, 20))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "FENCED", "{e:?}");
    let e = g
        .heartbeat(GroupHeartbeatRequest {
            member_id: a.member_id.clone(),
            member_epoch: a.member_epoch,
            ..join("")
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "FENCED");
    let admin = Admin::connect(b.addr()).await.unwrap();
    assert_eq!(admin.group_offsets("z").await.unwrap(), vec![("zt".to_string(), 0, 10)]);

    // Bad input: an unknown assignor, an empty group id, a session timeout
    // outside the broker's bounds.
    let bad = GroupHeartbeatRequest {
        assignor: "fair".into(),
        ..join("")
    };
    assert_eq!(reason(&g.heartbeat(bad).await.unwrap_err()), "INVALID_REQUEST");
    let bad = GroupHeartbeatRequest {
        group: String::new(),
        ..join("")
    };
    assert_eq!(reason(&g.heartbeat(bad).await.unwrap_err()), "INVALID_REQUEST");
    let bad = GroupHeartbeatRequest {
        session_timeout_ms: 10,
        ..join("")
    };
    assert_eq!(reason(&g.heartbeat(bad).await.unwrap_err()), "INVALID_REQUEST");
}

#[tokio::test]
async fn reset_offsets_to_a_timestamp_replays_exactly_the_records_from_then_on() {
    let b = broker().await;
    create(&b, "events", 3).await;
    let p = Producer::builder(b.addr()).build().await.unwrap();
    let mut ds = Vec::new();
    for i in 0..300i64 {
        // The first 150 records an hour earlier than the last 150.
        let ts = if i < 150 { 1_000_000 + i } else { 5_000_000 + i };
        let r = ProducerRecord::new("events", Bytes::from(format!("e{i}")))
            .key(Bytes::from(format!("k{}", i % 17)))
            .timestamp_ms(ts);
        ds.push(p.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    p.close().await.unwrap();

    let read_all = |expect: usize| {
        let addr = b.addr();
        async move {
            let mut c = Consumer::builder(addr)
                .group("replay")
                .auto_offset_reset(OffsetReset::Earliest)
                .max_wait(Duration::from_millis(100))
                .build()
                .await
                .unwrap();
            c.subscribe(&["events"]).await.unwrap();
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while got.len() < expect {
                assert!(Instant::now() < deadline, "read {} of {expect}", got.len());
                got.extend(c.poll().await.unwrap());
            }
            (c, got)
        }
    };
    let (c, first) = read_all(300).await;
    assert_eq!(first.len(), 300);
    let admin = Admin::connect(b.addr()).await.unwrap();
    // Refused while the group has an active member.
    let e = admin
        .reset_group_offsets("replay", "events", ResetTo::Timestamp(5_000_000), false)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "GROUP_NOT_EMPTY");
    c.close().await.unwrap();
    admin
        .reset_group_offsets("replay", "events", ResetTo::Timestamp(5_000_000), false)
        .await
        .unwrap();
    let (mut c, again) = read_all(150).await;
    // Nothing more arrives than the records from that time on (one more
    // poll long-polls its 100 ms and finds nothing).
    assert!(c.poll().await.unwrap().is_empty(), "records past the reset point's end");
    let values: BTreeSet<String> = again
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())
        .collect();
    let want: BTreeSet<String> = (150..300).map(|i| format!("e{i}")).collect();
    assert_eq!(again.len(), 150);
    assert_eq!(values, want);
    assert!(again.iter().all(|r| r.timestamp_ms >= 5_000_000));
    c.close().await.unwrap();
    // Deleting: refused with members, then gone.
    admin.delete_group("replay").await.unwrap();
    assert_eq!(
        admin.describe_group("replay").await.unwrap_err().reason(),
        "UNKNOWN_GROUP"
    );
}

#[tokio::test]
async fn a_poison_record_ends_in_the_dead_letter_topic_and_the_consumer_moves_on() {
    let b = broker().await;
    create(&b, "payments", 1).await;
    let p = Producer::builder(b.addr()).build().await.unwrap();
    for v in ["ok-1", "poison", "ok-2"] {
        p.send_and_wait(ProducerRecord::new("payments", v).header("trace", "t-1"))
            .await
            .unwrap();
    }
    let admin = Admin::connect(b.addr()).await.unwrap();
    let dlq = DeadLetterQueue::new(p.clone())
        .policy(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        })
        .create_topics_with(admin.clone());
    let mut c = Consumer::builder(b.addr())
        .group("payers")
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    c.subscribe(&["payments"]).await.unwrap();
    let mut done = Vec::new();
    let tries = Arc::new(Mutex::new(0u32));
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.len() < 3 {
        assert!(Instant::now() < deadline);
        for r in c.poll().await.unwrap() {
            let tries = Arc::clone(&tries);
            let outcome = dlq
                .process(&r, |r| {
                    let tries = Arc::clone(&tries);
                    async move {
                        if r.value.as_deref() == Some(b"poison".as_slice()) {
                            *tries.lock().unwrap() += 1;
                            return Err("cannot parse amount");
                        }
                        Ok(())
                    }
                })
                .await
                .unwrap();
            done.push((r.offset, outcome));
        }
        c.commit().await.unwrap();
    }
    assert_eq!(*tries.lock().unwrap(), 3);
    assert!(matches!(done[0].1, Outcome::Processed { attempts: 1 }));
    assert!(matches!(done[1].1, Outcome::DeadLettered { attempts: 3, .. }));
    assert!(
        matches!(done[2].1, Outcome::Processed { attempts: 1 }),
        "the consumer moved on"
    );
    c.close().await.unwrap();

    let mut d = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await
        .unwrap();
    d.assign_all("payments.dlq").await.unwrap();
    let letters = loop {
        let got = d.poll().await.unwrap();
        if !got.is_empty() {
            break got;
        }
    };
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(l.value.as_deref(), Some(b"poison".as_slice()));
    let h: BTreeMap<&str, String> = l
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(h[HEADER_ERROR], "cannot parse amount");
    assert_eq!(h[HEADER_ATTEMPTS], "3");
    assert_eq!(h[HEADER_TOPIC], "payments");
    assert_eq!(h[HEADER_PARTITION], "0");
    assert_eq!(h[HEADER_OFFSET], "1");
    assert_eq!(h["trace"], "t-1", "the record's own headers are kept");
    p.close().await.unwrap();
}

#[tokio::test]
async fn members_pick_up_partitions_added_to_a_subscribed_topic_and_seek_still_replays() {
    let b = broker().await;
    create(&b, "grow", 2).await;
    let world = Shared::default();
    let w2 = Arc::clone(&world);
    let mut c = Consumer::builder(b.addr())
        .group("growers")
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .on_rebalance(move |e| on_event(&w2, "a", e))
        .build()
        .await
        .unwrap();
    c.subscribe(&["grow"]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.assignment().len() < 2 {
        assert!(Instant::now() < deadline, "no assignment");
        c.poll().await.unwrap();
    }
    let admin = Admin::connect(b.addr()).await.unwrap();
    let grown = admin.create_partitions("grow", 4).await.unwrap();
    assert_eq!(grown.partitions.len(), 4);
    assert_eq!(
        admin.create_partitions("grow", 3).await.unwrap_err().reason(),
        "INVALID_REQUEST",
        "a topic never shrinks"
    );
    let p = Producer::builder(b.addr()).build().await.unwrap();
    for part in 0..4u32 {
        p.send_and_wait(ProducerRecord::new("grow", format!("p{part}")).partition(part))
            .await
            .unwrap();
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.len() < 4 {
        assert!(Instant::now() < deadline, "saw {seen:?}, holding {:?}", c.assignment());
        for r in c.poll().await.unwrap() {
            seen.insert(String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned());
        }
    }
    assert_eq!(c.assignment().len(), 4, "the new partitions were assigned");
    // seek works inside a group: replay partition 3 from its start.
    c.seek("grow", 3, strand_client::Offset::Beginning).await.unwrap();
    let again = loop {
        let got = c.poll().await.unwrap();
        if !got.is_empty() {
            break got;
        }
    };
    assert_eq!(again[0].offset, 0);
    assert_eq!(again[0].partition, 3);
    c.close().await.unwrap();
    p.close().await.unwrap();
}

#[tokio::test]
async fn a_fenced_member_rejoins_with_a_new_identity_and_reads_from_the_reset_offsets() {
    let b = broker().await;
    create(&b, "orders", 2).await;
    produce(&b, "orders", 0, 100).await;
    let mut c = Consumer::builder(b.addr())
        .group("fenced")
        .session_timeout(SESSION)
        .auto_commit(None)
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    c.subscribe(&["orders"]).await.unwrap();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen < 100 {
        assert!(Instant::now() < deadline, "read {seen} of 100");
        seen += c.poll().await.unwrap().len();
    }
    c.commit().await.unwrap();
    let first_id = c.member_id();
    assert!(!first_id.is_empty());

    // The operator rewinds the group while it runs: the member is fenced.
    let admin = Admin::connect(b.addr()).await.unwrap();
    admin
        .reset_group_offsets("fenced", "orders", ResetTo::Earliest, true)
        .await
        .unwrap();

    // It notices (its heartbeat or its commit is refused), drops what it
    // held, joins again under a new id and reads everything from offset 0.
    let mut again = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while again.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "re-read {} of 100 after the reset",
            again.len()
        );
        match c.poll().await {
            Ok(records) => {
                again.extend(records.iter().map(|r| (r.partition, r.offset)));
                if !records.is_empty() {
                    // FENCED until the consumer rejoined: that is the signal.
                    let _ = c.commit().await;
                }
            }
            Err(e) => panic!("poll failed after the reset: {e}"),
        }
    }
    assert_ne!(
        c.member_id(),
        first_id,
        "a fenced member must not come back under its old id"
    );
    assert!(
        again.iter().any(|(_, o)| *o == 0),
        "the reset to earliest was not honoured"
    );
    c.close().await.unwrap();
}
