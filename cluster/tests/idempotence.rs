//! Idempotent producers through Raft: a retried batch is answered with its
//! original offsets and stored once, by the leader that stored it and by the
//! next one; gaps, old epochs and unknown producers are refused; the state
//! reaches a follower restored from a snapshot (DESIGN.md, "Idempotent
//! producers").

mod support;

use strand_cluster::ClusterError;
use strand_storage::{ProducerInfo, SequenceError, StorageError, set_producer};
use support::*;

fn sequenced(tag: &str, n: u32, id: i64, epoch: i16, seq: i32) -> RecordBatch {
    let mut bytes = batch(tag, n).bytes().to_vec();
    set_producer(
        &mut bytes,
        ProducerInfo {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        },
    )
    .expect("one batch");
    RecordBatch::validate(Bytes::from(bytes)).expect("valid")
}

fn sequence_error(r: Result<strand_storage::AppendInfo, ClusterError>) -> SequenceError {
    match r {
        Err(ClusterError::Storage(StorageError::Sequence(e))) => e,
        other => panic!("expected a sequence error, got {other:?}"),
    }
}

/// Records stored below `upper` on `m`.
fn records(m: &Member, upper: Offset) -> usize {
    let raw = raw(&m.log, upper);
    batches(&raw).map(|b| b.expect("valid").record_count() as usize).sum()
}

#[tokio::test]
async fn a_retry_is_answered_with_the_original_offsets_and_bad_sequences_are_refused() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let node = &c.member(leader).node;
    let first = node
        .propose(GROUP, sequenced("a", 3, 9, 0, 0), Ack::All)
        .await
        .expect("stored");
    let again = node
        .propose(GROUP, sequenced("a", 3, 9, 0, 0), Ack::All)
        .await
        .expect("answered");
    assert_eq!(again, first, "the retry gets the original offsets");
    let second = node
        .propose(GROUP, sequenced("b", 2, 9, 0, 3), Ack::Leader)
        .await
        .expect("stored");
    assert_eq!(second.base_offset, first.last_offset.next());
    // Two retries in a row, one waiting for the fsync only.
    let leader_ack = node
        .propose(GROUP, sequenced("b", 2, 9, 0, 3), Ack::Leader)
        .await
        .expect("answered");
    assert_eq!(leader_ack.base_offset, second.base_offset);

    let gap = node.propose(GROUP, sequenced("c", 1, 9, 0, 9), Ack::All).await;
    assert_eq!(
        sequence_error(gap),
        SequenceError::OutOfOrderSequence {
            producer_id: 9,
            expected: 5,
            got: 9
        }
    );
    let bumped = node
        .propose(GROUP, sequenced("d", 1, 9, 1, 0), Ack::All)
        .await
        .expect("a new epoch starts at 0");
    let fenced = node.propose(GROUP, sequenced("e", 1, 9, 0, 5), Ack::All).await;
    assert_eq!(
        sequence_error(fenced),
        SequenceError::ProducerFenced {
            producer_id: 9,
            epoch: 0,
            current: 1
        }
    );
    let unknown = node.propose(GROUP, sequenced("f", 1, 10, 0, 4), Ack::All).await;
    assert_eq!(
        sequence_error(unknown),
        SequenceError::UnknownProducerId { producer_id: 10 }
    );
    let end = bumped.last_offset.next();
    for id in 1..=3 {
        wait_hw(&c.member(id).handle, end).await;
        assert_eq!(records(c.member(id), end), 6, "replica {id}: every batch once");
    }
}

/// The batch reaches every replica, its leader dies before the producer
/// hears back, and the retry goes to the next leader: it answers with the
/// offsets the first leader gave, and nothing is stored twice.
#[tokio::test]
async fn the_next_leader_answers_a_retry_of_the_old_leaders_batch() {
    let mut c = Cluster::start(3).await;
    let old = c.leader().await;
    let mut stored = Vec::new();
    for i in 0..4 {
        let info = c
            .member(old)
            .node
            .propose(GROUP, sequenced(&format!("k{i}"), 5, 21, 0, i * 5), Ack::All)
            .await
            .expect("stored");
        stored.push(info);
    }
    let end = stored[3].last_offset.next();
    for id in 1..=3 {
        wait_hw(&c.member(id).handle, end).await;
    }
    c.kill(old);
    let new = c.leader_other_than(old).await;
    for (i, original) in stored.iter().enumerate() {
        let retry = c
            .member(new)
            .node
            .propose(GROUP, sequenced(&format!("k{i}"), 5, 21, 0, i as i32 * 5), Ack::All)
            .await
            .expect("answered");
        assert_eq!(retry.base_offset, original.base_offset, "batch {i}");
        assert_eq!(retry.last_offset, original.last_offset, "batch {i}");
    }
    let next = c
        .member(new)
        .node
        .propose(GROUP, sequenced("k4", 5, 21, 0, 20), Ack::All)
        .await
        .expect("the sequence goes on");
    assert_eq!(next.base_offset, end);
    assert_eq!(records(c.member(new), next.last_offset.next()), 25);
}

/// Retention removed the start of the log while a follower was down; the
/// snapshot it restarts from carries the producers' state, so it would
/// judge a retry exactly as the leader does.
#[tokio::test]
async fn a_follower_restored_from_a_snapshot_knows_every_producer() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let lagger = (1..=3).find(|&i| i != leader).expect("follower");
    let dir = c.kill(lagger);
    // Producer 5 writes first: retention removes every one of its batches,
    // so only the snapshot can tell the lagger about it.
    for i in 0..3 {
        c.member(leader)
            .node
            .propose(GROUP, sequenced(&format!("early{i}"), 2, 5, 0, i * 2), Ack::All)
            .await
            .expect("stored");
    }
    let mut end = Offset::ZERO;
    for i in 0..400 {
        end = c
            .member(leader)
            .node
            .propose(GROUP, sequenced(&format!("s{i:04}"), 20, 6, 0, i * 20), Ack::All)
            .await
            .expect("stored")
            .last_offset
            .next();
    }
    c.compact_all_but(lagger, end).await;
    let m = c.start_member(lagger, dir, 3).await;
    c.members[(lagger - 1) as usize] = Some(m);
    wait_hw(&c.member(lagger).handle, end).await;
    let lagger_log = c.member(lagger).log.read();
    assert!(
        lagger_log.earliest() > Offset(6),
        "restarted from a snapshot past producer 5's batches"
    );
    let leader_log = c.member(leader).log.read();
    let (ours, theirs) = (lagger_log.producers().get(5), leader_log.producers().get(5));
    assert!(ours.is_some());
    assert_eq!(
        ours.map(|e| e
            .batches
            .iter()
            .map(|b| (b.first_seq, b.base_offset))
            .collect::<Vec<_>>()),
        theirs.map(|e| e
            .batches
            .iter()
            .map(|b| (b.first_seq, b.base_offset))
            .collect::<Vec<_>>())
    );
}

/// The batch reaches only a leader cut off from the others; the retry goes
/// to the leader the majority elects. Both leaders proposed the same
/// producer id, epoch and sequence, in different terms: only one copy is
/// ever committed, and the deposed leader's is truncated when it rejoins.
#[tokio::test]
async fn a_deposed_leaders_copy_and_the_retry_are_never_both_committed() {
    let c = Cluster::start(3).await;
    let old = c.leader().await;
    c.member(old)
        .node
        .propose(GROUP, sequenced("before", 2, 33, 0, 0), Ack::All)
        .await
        .expect("stored");
    c.net.isolate(NodeId(old));
    let stranded = c
        .member(old)
        .node
        .propose(GROUP, sequenced("twin", 3, 33, 0, 2), Ack::All)
        .await;
    assert!(stranded.is_err(), "a minority cannot commit: {stranded:?}");
    let new = c.leader_other_than(old).await;
    let retry = c
        .member(new)
        .node
        .propose(GROUP, sequenced("twin", 3, 33, 0, 2), Ack::All)
        .await
        .expect("the new leader never saw it: stored");
    let end = retry.last_offset.next();
    c.net.heal();
    for id in 1..=3 {
        wait_hw(&c.member(id).handle, end).await;
    }
    // And once more, now that every replica holds the retry.
    let again = c
        .member(new)
        .node
        .propose(GROUP, sequenced("twin", 3, 33, 0, 2), Ack::All)
        .await
        .expect("answered");
    assert_eq!(again, retry);
    for id in 1..=3 {
        assert_eq!(records(c.member(id), end), 5, "replica {id}: one copy of the twin");
    }
    // The deposed leader's truncated copy left its producer state too: it
    // would answer a retry with the offsets the log holds, not its own.
    let ranges = |id: u64| {
        let log = c.member(id).log.read();
        log.producers().get(33).map(|e| {
            e.batches
                .iter()
                .map(|b| (b.first_seq, b.base_offset))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(ranges(old), ranges(new));
}
