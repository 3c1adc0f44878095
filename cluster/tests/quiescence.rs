//! Idle groups stop ticking (see `quiesce`), and everything that must still
//! happen to a quiet group does: a write wakes it, a dead or cut-off leader
//! is replaced, and nothing committed is lost.

mod support;

use support::*;

async fn all_quiet(c: &Cluster) {
    for m in c.members.iter().flatten() {
        wait_status(&m.handle, "the replica to quiesce", |s| s.quiet).await;
    }
}

#[tokio::test]
async fn an_idle_group_quiesces_on_every_replica_and_a_write_wakes_it() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let end = c.write(leader, "before", 3, 2).await;
    all_quiet(&c).await;
    // Quiet for good: nothing moves it out while nothing happens.
    tokio::time::sleep(c.config.tick * 30).await;
    for m in c.members.iter().flatten() {
        let s = m.handle.status.borrow().clone();
        assert!(s.quiet, "still quiet after 30 ticks: {s:?}");
    }
    assert_eq!(c.leader().await, leader, "no election while quiet");
    let end2 = c.write(leader, "after", 2, 2).await;
    assert!(end2 > end);
    for m in c.members.iter().flatten() {
        wait_hw(&m.handle, end2).await;
    }
    // Idle again: quiet again.
    all_quiet(&c).await;
    assert_eq!(raw(&c.member(1).log, end2), raw(&c.member(2).log, end2));
    assert_eq!(raw(&c.member(1).log, end2), raw(&c.member(3).log, end2));
}

#[tokio::test]
async fn a_quiet_group_whose_leader_dies_elects_another_and_keeps_every_record() {
    let mut c = Cluster::start(3).await;
    let old = c.leader().await;
    let end = c.write(old, "a", 5, 3).await;
    all_quiet(&c).await;
    let dir = c.kill(old);
    // The survivors stop hearing the dead node, wake and elect.
    let new = c.leader_other_than(old).await;
    let end2 = c.write(new, "b", 5, 3).await;
    assert!(end2 > end);
    // The old leader comes back and catches up.
    let m = c.start_member(old, dir, 3).await;
    c.members[(old - 1) as usize] = Some(m);
    wait_hw(&c.member(old).handle, end2).await;
    assert_eq!(raw(&c.member(old).log, end2), raw(&c.member(new).log, end2));
}

#[tokio::test]
async fn a_quiet_leader_cut_off_from_its_followers_steps_down_and_they_elect_another() {
    let c = Cluster::start(3).await;
    let old = c.leader().await;
    let end = c.write(old, "a", 2, 2).await;
    all_quiet(&c).await;
    c.net.isolate(NodeId(old));
    let new = c.leader_other_than(old).await;
    // The cut-off leader notices its peers are gone, wakes, and
    // check_quorum makes it step down.
    wait_status(&c.member(old).handle, "the cut-off leader to step down", |s| {
        !s.is_leader
    })
    .await;
    let end2 = c.write(new, "b", 2, 2).await;
    assert!(end2 > end);
    c.net.heal();
    wait_hw(&c.member(old).handle, end2).await;
    assert_eq!(raw(&c.member(old).log, end2), raw(&c.member(new).log, end2));
}

#[tokio::test]
async fn a_lone_replica_quiesces_and_still_takes_writes() {
    let c = Cluster::start(1).await;
    let leader = c.leader().await;
    c.write(leader, "a", 1, 1).await;
    all_quiet(&c).await;
    let end = c.write(leader, "b", 3, 1).await;
    wait_hw(&c.member(leader).handle, end).await;
}

#[tokio::test]
async fn a_quiet_group_whose_leader_replica_is_removed_elects_another() {
    let c = Cluster::start(3).await;
    let old = c.leader().await;
    let end = c.write(old, "a", 2, 2).await;
    all_quiet(&c).await;
    // The node stays up (its node-level heartbeat goes on): only the
    // replica's own notice can wake the others.
    c.member(old).node.remove(GROUP).await.expect("remove");
    let new = c.leader_other_than(old).await;
    let end2 = c.write(new, "b", 2, 2).await;
    assert!(end2 > end);
}
