//! Replication of one partition across three in-process nodes over a
//! memory network (DESIGN.md, "Replication").

mod support;

#[allow(unused_imports)]
use support::*;

#[tokio::test]
async fn a_committed_batch_is_on_every_replica_byte_for_byte() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let mut next = Offset::ZERO;
    for i in 0..50 {
        let info = c
            .member(leader)
            .node
            .propose(GROUP, batch(&format!("b{i}"), 4), Ack::All)
            .await
            .expect("committed");
        assert_eq!(info.base_offset, next, "offsets are contiguous");
        next = info.last_offset.next();
    }
    for id in 1..=3 {
        wait_hw(&c.member(id).handle, next).await;
    }
    let reference = raw(&c.member(1).log, next);
    assert!(!reference.is_empty());
    for id in 2..=3 {
        assert_eq!(raw(&c.member(id).log, next), reference, "replica {id} differs");
    }
    // A follower refuses proposals and names the leader.
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    match c.member(follower).node.propose(GROUP, batch("x", 1), Ack::All).await {
        Err(ClusterError::NotLeader { leader: Some(l), .. }) => assert_eq!(l, NodeId(leader)),
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

#[tokio::test]
async fn an_isolated_leader_cannot_commit_and_its_tail_is_replaced() {
    let c = Cluster::start(3).await;
    let old = c.leader().await;
    c.write(old, "before", 1, 3).await;
    c.net.isolate(NodeId(old));
    // The minority leader accepts the proposal into its log but can never
    // commit it; it steps down (check_quorum) and the proposal fails.
    let stranded = c.member(old).node.propose(GROUP, batch("stranded", 3), Ack::All).await;
    assert!(
        stranded.is_err(),
        "a minority must not acknowledge acks=all: {stranded:?}"
    );
    let new = c.leader_other_than(old).await;
    let end = c.write(new, "after", 10, 2).await;
    c.net.heal();
    wait_hw(&c.member(old).handle, end).await;
    let reference = raw(&c.member(new).log, end);
    assert_eq!(
        raw(&c.member(old).log, end),
        reference,
        "the old leader's stranded tail was truncated"
    );
    let text = String::from_utf8_lossy(&reference);
    assert!(!text.contains("stranded"), "the unacknowledged batch is gone");
}

#[tokio::test]
async fn a_killed_leader_is_replaced_and_rejoins_from_its_data() {
    let mut c = Cluster::start(3).await;
    let old = c.leader().await;
    c.write(old, "a", 20, 5).await;
    let dir = c.kill(old);
    let new = c.leader_other_than(old).await;
    let end = c.write(new, "b", 20, 5).await;
    // Restart the old leader on its data directory.
    let m = c.start_member(old, dir, 3).await;
    c.members[(old - 1) as usize] = Some(m);
    wait_hw(&c.member(old).handle, end).await;
    assert_eq!(raw(&c.member(old).log, end), raw(&c.member(new).log, end));
    // Offsets never repeat across leaders.
    let bytes = raw(&c.member(new).log, end);
    let mut expected = Offset::ZERO;
    for b in batches(&bytes) {
        let b = b.expect("valid");
        assert_eq!(b.base_offset(), expected);
        expected = b.next_offset();
    }
    assert_eq!(expected, end);
}

#[tokio::test]
async fn acks_leader_answers_after_the_local_fsync() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let info = c
        .member(leader)
        .node
        .propose(GROUP, batch("l", 2), Ack::Leader)
        .await
        .expect("stored");
    assert_eq!(info.base_offset, Offset::ZERO);
    assert!(c.member(leader).log.read().durable_offset() >= Offset(2));
}

/// A replica that lost its log (replaced by an empty one) must not vote or
/// campaign until a leader has brought it up to date: otherwise it could help
/// a lagging candidate win and drop committed entries. Once its leader has
/// done so, it votes again.
#[tokio::test]
async fn a_recovering_replica_neither_votes_nor_campaigns_until_a_leader_brought_it_up_to_date() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let end = c.write(leader, "r", 10, 2).await;
    for id in 1..=3 {
        wait_hw(&c.member(id).handle, end).await;
    }
    let wiped = (1..=3).find(|&i| i != leader).expect("follower");
    let other = (1..=3).find(|&i| i != leader && i != wiped).expect("other follower");
    let dir = c.kill(wiped);
    // Wipe the log but keep the Raft state, as the broker's quarantine does.
    let state = std::fs::read(dir.join("raft-state.json")).expect("raft state");
    std::fs::remove_dir_all(&dir).expect("wipe");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("raft-state.json"), state).expect("restore raft state");
    let m = c.start_replica(wiped, dir, vec![1, 2, 3], true).await;
    c.members[(wiped - 1) as usize] = Some(m);
    assert!(c.member(wiped).handle.status.borrow().recovering);
    // Cut the leader off. The other follower needs the wiped replica's vote,
    // which it must not get: watch both for two seconds (at least two
    // election timeouts at this tick), failing at the first leadership.
    c.net.isolate(NodeId(leader));
    assert_no_leader(&c, &[wiped, other], Duration::from_secs(2)).await;
    c.net.heal();
    // The leader brings it up to date (an entry of its own term committed
    // and stored there): it is whole, and from then on counts as a voter.
    // Right after the heal the old leader and the other follower may still
    // trade leadership: write through whichever leads.
    let (leader, end) = c.write_via_leader("after", 3, 1).await;
    wait_hw(&c.member(wiped).handle, end).await;
    let wh = Arc::clone(&c.member(wiped).handle);
    wait_status(&wh, "recovery to end", |s| !s.recovering).await;
    assert_eq!(raw(&c.member(wiped).log, end), raw(&c.member(leader).log, end));
    // With the leader gone, the two survivors (the wiped replica among
    // them) elect one: a leader needs the wiped replica as the leader or as
    // a voter, so this fails if it still refused to vote.
    let dir = c.kill(leader);
    drop(dir);
    let next = c.leader().await;
    assert_ne!(next, leader);
}

/// The scenario of a lost disk (Jepsen-style, from the issue): follower C is
/// cut off; L and A acknowledge entries; A's disk is wiped (Raft state too)
/// and it restarts recovering; L dies; C returns. C lacks the entries and A
/// must not vote for it: the group stays without a leader (unavailable)
/// rather than lose acknowledged entries. When L returns, everything
/// acknowledged is there, on every replica.
#[tokio::test]
async fn a_wiped_replica_never_helps_a_lagging_one_win_and_nothing_acknowledged_is_lost() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let a = (1..=3).find(|&i| i != leader).expect("follower");
    let lagging = (1..=3).find(|&i| i != leader && i != a).expect("other follower");
    let before = c.write(leader, "early", 2, 1).await;
    wait_hw(&c.member(lagging).handle, before).await;
    c.net.isolate(NodeId(lagging));
    let acknowledged = c.write(leader, "acked", 30, 2).await;
    wait_hw(&c.member(a).handle, acknowledged).await;
    let a_dir = c.kill(a);
    std::fs::remove_dir_all(&a_dir).expect("wipe");
    let m = c.start_replica(a, a_dir, vec![1, 2, 3], true).await;
    c.members[(a - 1) as usize] = Some(m);
    let l_dir = c.kill(leader);
    c.net.heal();
    assert_no_leader(&c, &[a, lagging], Duration::from_secs(2)).await;
    // The replica with the data returns: it (or the lagging one, once it
    // has its log) leads, and every acknowledged entry is on every replica.
    let m = c.start_member(leader, l_dir, 3).await;
    c.members[(leader - 1) as usize] = Some(m);
    assert!(
        c.raise_term_floors(),
        "with every peer back, the wiped replica learns its term floor"
    );
    let now = c.leader().await;
    let end = c.write(now, "later", 2, 1).await;
    for id in 1..=3 {
        wait_hw(&c.member(id).handle, end).await;
    }
    let reference = raw(&c.member(leader).log, end);
    assert!(reference.len() > raw(&c.member(leader).log, acknowledged).len() - 1);
    for id in 1..=3 {
        assert_eq!(raw(&c.member(id).log, end), reference, "replica {id}");
    }
    let ah = Arc::clone(&c.member(a).handle);
    wait_status(&ah, "recovery to end", |s| !s.recovering).await;
}

/// A leader deposed while it was cut off keeps believing it leads until its
/// quorum check runs out (here it is made slow, as a paused process is).
/// A replica that lost its disk meanwhile forgot the newer term it had
/// helped commit in, so it must not take that stale leader's messages:
/// with them, the stale leader would commit in its old term on the wiped
/// replica's acknowledgement while the real leader commits in the new one
/// (the fault suite's `wipe-kill-leader` found this). The wiped replica
/// waits for a term floor from its peers, which it cannot have while the
/// real leader is out of reach; once it is back, nothing is lost.
#[tokio::test]
async fn a_wiped_replica_never_helps_a_deposed_leader_commit_in_its_stale_term() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster {
        net: MemoryNetwork::new(),
        members: Vec::new(),
        config: fast(),
        _tmp: tmp,
    };
    // Node 1 leads and notices the loss of its quorum only after 20 s.
    let slow = NodeConfig {
        election_ticks: 1000,
        ..fast()
    };
    for id in 1..=3u64 {
        let dir = c._tmp.path().join(format!("node-{id}"));
        let config = if id == 1 { slow.clone() } else { fast() };
        let m = c.start_replica_with(id, dir, vec![1, 2, 3], false, config).await;
        c.members.push(Some(m));
    }
    c.member(1).node.campaign(GROUP).expect("campaign");
    let h1 = Arc::clone(&c.member(1).handle);
    wait_status(&h1, "node 1 leads", |s| s.is_leader).await;
    let first = c.write(1, "first", 3, 1).await;
    for id in 1..=3 {
        wait_hw(&c.member(id).handle, first).await;
    }
    // Node 1 is cut off; 2 and 3 elect a leader and commit more.
    c.net.isolate(NodeId(1));
    let new_leader = c.leader_other_than(1).await;
    let a = if new_leader == 2 { 3 } else { 2 };
    let committed = c.write(new_leader, "new-term", 5, 2).await;
    wait_hw(&c.member(a).handle, committed).await;
    assert!(h1.status.borrow().is_leader, "node 1 still believes it leads");
    // A loses its disk; the real leader is cut off and node 1 reaches A.
    let a_dir = c.kill(a);
    std::fs::remove_dir_all(&a_dir).expect("wipe");
    let m = c.start_replica(a, a_dir, vec![1, 2, 3], true).await;
    c.members[(a - 1) as usize] = Some(m);
    c.net.heal();
    c.net.isolate(NodeId(new_leader));
    assert!(!c.raise_term_floors(), "the real leader is out of reach: no floor");
    assert!(c.member(a).handle.status.borrow().awaiting_term);
    let stale = tokio::time::timeout(
        Duration::from_secs(2),
        c.member(1).node.propose(GROUP, batch("stale", 1), Ack::All),
    )
    .await;
    assert!(
        !matches!(stale, Ok(Ok(_))),
        "a deposed leader committed in its stale term: {stale:?}"
    );
    // Everyone reachable again: A learns its floor and the group goes on
    // with everything the real leader committed.
    c.net.heal();
    assert!(c.raise_term_floors());
    let now = c.leader_other_than(1).await;
    let end = c.write(now, "after", 2, 1).await;
    for id in 1..=3 {
        wait_hw(&c.member(id).handle, end).await;
    }
    let reference = raw(&c.member(new_leader).log, end);
    assert!(reference.len() >= raw(&c.member(new_leader).log, committed).len());
    for id in 1..=3 {
        assert_eq!(raw(&c.member(id).log, end), reference, "replica {id}");
    }
    assert!(
        reference.windows(b"new-term".len()).any(|w| w == b"new-term"),
        "the new term's entries survived"
    );
}

/// Retention removes the start of the leader's log while a follower is down;
/// when it returns it is sent a snapshot (the offset where the retained log
/// starts), restarts its log there and catches up byte for byte.
#[tokio::test]
async fn a_follower_behind_the_retained_log_catches_up_by_snapshot() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let lagger = (1..=3).find(|&i| i != leader).expect("follower");
    let dir = c.kill(lagger);
    let end = c.write(leader, "s", 400, 20).await;
    c.compact_all_but(lagger, end).await;
    let leader_start = c.member(leader).log.read().earliest();
    assert!(leader_start > Offset::ZERO);
    let m = c.start_member(lagger, dir, 3).await;
    c.members[(lagger - 1) as usize] = Some(m);
    wait_hw(&c.member(lagger).handle, end).await;
    let lagger_log = &c.member(lagger).log;
    assert_eq!(
        lagger_log.read().earliest(),
        leader_start,
        "restarted at the leader's log start"
    );
    assert_eq!(raw(lagger_log, end), raw(&c.member(leader).log, end));
    // And it keeps replicating afterwards.
    let more = c
        .member(leader)
        .node
        .propose(GROUP, batch("after", 3), Ack::All)
        .await
        .expect("ok")
        .last_offset
        .next();
    wait_hw(&c.member(lagger).handle, more).await;
    assert_eq!(raw(lagger_log, more), raw(&c.member(leader).log, more));
}

#[tokio::test]
async fn replicas_move_to_a_new_node_that_ends_byte_identical_and_votes() {
    use strand_cluster::ReplicaChange;
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let next = c.write(leader, "before-", 30, 4).await;
    // Node 4 starts empty, with the group's original configuration (which
    // does not include it): it cannot campaign, and replaying the log's
    // membership changes from there gives it the group's real configuration.
    let dir = c._tmp.path().join("node-4");
    let m4 = c.start_member_with(4, dir, vec![1, 2, 3]).await;
    c.members.push(Some(m4));
    let lh = Arc::clone(&c.member(leader).handle);
    c.member(leader)
        .node
        .change_replicas(GROUP, ReplicaChange::AddLearner(NodeId(4)))
        .await
        .expect("learner proposed");
    wait_status(&lh, "node 4 caught up as a learner", |s| {
        s.learners == [NodeId(4)]
            && s.replicas
                .iter()
                .any(|r| r.node == NodeId(4) && r.matched == s.last_index)
    })
    .await;
    wait_hw(&c.member(4).handle, next).await;
    c.member(leader)
        .node
        .change_replicas(GROUP, ReplicaChange::Promote(NodeId(4)))
        .await
        .expect("promotion proposed");
    wait_status(&lh, "node 4 voting", |s| {
        s.voters.contains(&NodeId(4)) && s.learners.is_empty()
    })
    .await;
    let victim = (1..=3).find(|&i| i != leader).expect("a follower");
    c.member(leader)
        .node
        .change_replicas(GROUP, ReplicaChange::Remove(NodeId(victim)))
        .await
        .expect("removal proposed");
    wait_status(&lh, "victim removed", |s| {
        !s.voters.contains(&NodeId(victim)) && s.voters.len() == 3
    })
    .await;
    c.kill(victim);
    let next = c.write(leader, "after-", 10, 4).await;
    wait_hw(&c.member(4).handle, next).await;
    assert_eq!(
        raw(&c.member(4).log, next),
        raw(&c.member(leader).log, next),
        "node 4 differs"
    );
    let st4 = c.member(4).handle.status.borrow().clone();
    assert!(
        st4.voters.contains(&NodeId(4)) && !st4.voters.contains(&NodeId(victim)),
        "node 4's own view: {st4:?}"
    );
    // Node 4 votes: with the old leader gone, the two left elect one of them.
    c.kill(leader);
    let new_leader = c.leader_other_than(leader).await;
    assert_ne!(new_leader, victim);
    c.member(new_leader)
        .node
        .propose(GROUP, batch("last", 1), Ack::All)
        .await
        .expect("a majority of the new configuration commits");
}

/// A follower whose data was lost (a replaced disk, restarted under the same
/// node id) must not bring its node down: the leader's heartbeats name a
/// commit index past its now empty log. It re-fetches and ends identical.
#[tokio::test]
async fn a_follower_that_lost_its_data_catches_up_instead_of_crashing() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let next = c.write(leader, "b", 20, 4).await;
    let victim = (1..=3).find(|&i| i != leader).expect("a follower");
    wait_hw(&c.member(victim).handle, next).await;
    let dir = c.kill(victim);
    std::fs::remove_dir_all(&dir).expect("wipe");
    let m = c.start_member(victim, dir, 3).await;
    c.members[(victim - 1) as usize] = Some(m);
    // With nothing proposed, what reaches it first is a heartbeat (naming the
    // leader and a commit index past its empty log).
    let vh = Arc::clone(&c.member(victim).handle);
    wait_status(&vh, "the leader's heartbeat", |s| s.leader == Some(NodeId(leader))).await;
    let next = c.write(leader, "after-", 5, 4).await;
    wait_hw(&c.member(victim).handle, next).await;
    assert_eq!(raw(&c.member(victim).log, next), raw(&c.member(leader).log, next));
}

/// A follower that missed many entries catches up by streaming the leader's
/// committed log (not entry by entry through Raft's appends), ends byte for
/// byte identical, and then follows Raft's normal path again.
#[tokio::test]
async fn a_follower_far_behind_catches_up_by_streaming_the_leaders_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // Small append messages, one in flight: Raft's own path would take
    // hundreds of round trips, so the catch-up is what brings the follower
    // back.
    let mut c = Cluster::start_with(
        3,
        NodeConfig {
            max_size_per_msg: 512,
            max_inflight_msgs: 1,
            ..fast()
        },
    )
    .await;
    let leader = c.leader().await;
    let lagger = (1..=3).find(|&i| i != leader).expect("a follower");
    let dir = c.kill(lagger);
    let end = c.write(leader, "far-", 400, 5).await;
    let m = c.start_member(lagger, dir, 3).await;
    c.members[(lagger - 1) as usize] = Some(m);
    wait_hw(&c.member(lagger).handle, end).await;
    let streamed = c
        .member(lagger)
        .handle
        .caught_up_entries
        .load(std::sync::atomic::Ordering::Relaxed);
    // How much Raft's own path delivered before the catch-up order went out
    // depends on the machine's pace (a loaded CI runner saw 196 of 400
    // streamed); a quarter of the backlog is far more than one in-flight
    // 512-byte append at a time would have left to the stream otherwise.
    assert!(
        streamed >= 100,
        "the lagging follower streamed its catch-up ({streamed} entries)"
    );
    assert_eq!(raw(&c.member(lagger).log, end), raw(&c.member(leader).log, end));
    // Raft's own replication carries on from there.
    let more = c.write(leader, "after-", 10, 2).await;
    wait_hw(&c.member(lagger).handle, more).await;
    assert_eq!(raw(&c.member(lagger).log, more), raw(&c.member(leader).log, more));
}

/// A replica whose Raft state disagrees with its log (a commit index or a
/// snapshot index past the log, as a restored or hand-edited file may say)
/// or is missing beside a log starts anyway (raft-rs would panic on such a
/// state and take every group of the node down), recovers without voting,
/// and ends identical to its leader.
#[tokio::test]
async fn a_replica_with_a_raft_state_that_disagrees_with_its_log_starts_and_recovers() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let end = c.write(leader, "s", 20, 2).await;
    let victim = (1..=3).find(|&i| i != leader).expect("a follower");
    wait_hw(&c.member(victim).handle, end).await;
    for damage in ["past the log", "missing"] {
        let dir = c.kill(victim);
        let path = dir.join("raft-state.json");
        match damage {
            "missing" => std::fs::remove_file(&path).expect("remove state"),
            _ => {
                let mut st: PersistedState =
                    serde_json::from_slice(&std::fs::read(&path).expect("read state")).expect("decode state");
                st.commit = RaftIndex(1_000_000);
                st.snapshot_index = RaftIndex(500_000);
                std::fs::write(&path, serde_json::to_vec(&st).expect("encode")).expect("write state");
            }
        }
        let m = c.start_replica(victim, dir, vec![1, 2, 3], false).await;
        c.members[(victim - 1) as usize] = Some(m);
        assert!(
            c.member(victim).handle.status.borrow().recovering,
            "{damage}: it cannot know what it voted for or holds"
        );
        // A missing state lost the term too: the broker gives it a floor.
        let awaiting = c.member(victim).handle.status.borrow().awaiting_term;
        assert_eq!(awaiting, damage == "missing", "{damage}");
        c.raise_term_floors();
        let leader = c.leader().await;
        let end = c.write(leader, damage, 2, 1).await;
        wait_hw(&c.member(victim).handle, end).await;
        let vh = Arc::clone(&c.member(victim).handle);
        wait_status(&vh, "recovery to end", |s| !s.recovering).await;
        assert_eq!(
            raw(&c.member(victim).log, end),
            raw(&c.member(leader).log, end),
            "{damage}"
        );
    }
}

/// Unmounts a test's tmpfs when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A leader whose disk fills stops (it cannot store what it would
/// acknowledge), steps down and says so in its status; the other replicas
/// elect a leader and go on committing. Needs root to mount a small tmpfs.
#[tokio::test]
async fn a_leader_whose_disk_fills_steps_down_and_another_leads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let small = tmp.path().join("node-1");
    std::fs::create_dir_all(&small).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=640k", "tmpfs"])
        .arg(&small)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIP: mounting a tmpfs needs root");
        return;
    }
    let _unmount = Mounted(small);
    let c = Cluster::start_in(tmp, 3, fast()).await;
    let first = c.leader().await;
    let h1 = Arc::clone(&c.member(1).handle);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !h1.status.borrow().is_leader {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leadership never moved to node 1"
        );
        let _ = c.member(first).node.transfer_leader(GROUP, NodeId(1));
        let mut rx = h1.status.subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(300), rx.wait_for(|s| s.is_leader)).await;
    }
    // Write through node 1 until its disk is full.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0u32;
    while !h1.status.borrow().failed {
        assert!(tokio::time::Instant::now() < deadline, "node 1's disk never filled");
        let _ = c
            .member(1)
            .node
            .propose(GROUP, batch(&format!("fill{i:05}"), 20), Ack::All)
            .await;
        i += 1;
    }
    let st = h1.status.borrow().clone();
    assert!(!st.is_leader, "a failed replica does not lead: {st:?}");
    let next = c.leader_other_than(1).await;
    let end = c.write(next, "after", 5, 2).await;
    let other = (2..=3).find(|&n| n != next).expect("the third node");
    wait_hw(&c.member(other).handle, end).await;
    assert!(!h1.status.borrow().is_leader && h1.status.borrow().failed);
}

#[tokio::test]
async fn a_proposal_over_the_batch_limit_is_refused_and_the_group_goes_on() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    // 16 KiB is the tests' batch limit: 400 records of ~50 bytes exceed it.
    let big = batch(&"x".repeat(40), 400);
    assert!(big.len() > 16 * 1024);
    let refused = c.member(leader).node.propose(GROUP, big, Ack::All).await;
    assert!(
        matches!(
            refused,
            Err(ClusterError::Storage(
                strand_storage::StorageError::RecordTooLarge { .. }
            ))
        ),
        "{refused:?}"
    );
    let end = c.write(leader, "after", 3, 2).await;
    for m in c.members.iter().flatten() {
        wait_hw(&m.handle, end).await;
        assert!(!m.handle.status.borrow().failed, "no replica stopped");
    }
}
