//! The checker: reads a history and reports every anomaly Jepsen's Kafka,
//! Redpanda and NATS JetStream analyses looked for, with a count and the
//! first counterexamples of each.
//!
//! Assumptions of the workload (see `tests/FAULTS.md`): record values are
//! unique ids, an id is only re-sent (same id) after a failed or unknown
//! send, one producer process owns a key, and every offset below the high
//! watermark holds a record (control entries take no offset).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::Event;
pub use crate::report::{Kind, Report};

/// What happened to one id. Event positions in the history order events in
/// real time (each is recorded when it happens, under one lock), finer than
/// their millisecond stamps.
#[derive(Default)]
struct Send {
    key: String,
    process: u64,
    invokes: usize,
    /// Position of the first invoke in the history.
    first_invoke: usize,
    /// (partition, offset, position of the acknowledgement).
    oks: Vec<(u32, u64, usize)>,
    failed: bool,
    unknown: bool,
    idempotent: bool,
}

/// Checks a history.
pub fn check(events: &[Event]) -> Report {
    let mut r = Report::default();
    let mut sends: HashMap<&str, Send> = HashMap::new();
    let mut at: BTreeMap<(u32, u64), Vec<&str>> = BTreeMap::new();
    let mut positions: HashMap<&str, Vec<(u32, u64)>> = HashMap::new();
    let mut log_start: HashMap<u32, u64> = HashMap::new();
    for (seq, e) in events.iter().enumerate() {
        match e {
            Event::Invoke {
                process,
                id,
                key,
                idempotent,
                ..
            } => {
                let s = sends.entry(id).or_default();
                if s.invokes == 0 {
                    s.first_invoke = seq;
                }
                s.invokes += 1;
                s.key.clone_from(key);
                s.process = *process;
                s.idempotent |= *idempotent;
            }
            Event::Ok {
                id, partition, offset, ..
            } => sends.entry(id).or_default().oks.push((*partition, *offset, seq)),
            Event::Fail { id, .. } => sends.entry(id).or_default().failed = true,
            Event::Unknown { id, .. } => sends.entry(id).or_default().unknown = true,
            Event::Read {
                partition, offset, id, ..
            } => {
                at.entry((*partition, *offset)).or_default().push(id);
                positions.entry(id).or_default().push((*partition, *offset));
            }
            Event::LogStart { partition, offset } => {
                log_start.insert(*partition, *offset);
            }
            _ => {}
        }
    }
    r.read = at.values().map(Vec::len).sum();
    r.acknowledged = sends.values().filter(|s| !s.oks.is_empty()).count();
    r.unknown = sends.values().filter(|s| s.unknown && s.oks.is_empty()).count();
    r.retried_sends = sends.values().map(|s| s.invokes.saturating_sub(1)).sum();
    r.idempotent_sends = sends.values().filter(|s| s.idempotent).count();

    // Inconsistent offsets: one offset, two records.
    for ((p, o), ids) in &at {
        let distinct: BTreeSet<&&str> = ids.iter().collect();
        if distinct.len() > 1 {
            r.flag(Kind::InconsistentOffset, || format!("{p}@{o} holds {distinct:?}"));
        }
    }
    let mut ids: Vec<&&str> = sends.keys().collect();
    ids.sort();
    for id in ids {
        let s = &sends[*id];
        let read_at = positions.get(*id);
        for (p, o, _) in &s.oks {
            if let Some(found) = read_at
                && !found.contains(&(*p, *o))
            {
                r.flag(Kind::InconsistentOffset, || {
                    format!("{id} acknowledged at {p}@{o} but stored at {found:?}")
                });
            }
        }
        let expired = !s.oks.is_empty()
            && s.oks
                .iter()
                .all(|(p, o, _)| log_start.get(p).is_some_and(|start| o < start));
        match read_at {
            None if expired => r.expired += 1,
            None if !s.oks.is_empty() => {
                r.flag(Kind::Lost, || {
                    format!("{id} acknowledged at {:?} but not in the log", s.oks[0])
                });
            }
            Some(found) => {
                if s.failed && s.oks.is_empty() && !s.unknown {
                    r.flag(Kind::AbortedRead, || format!("{id} failed but is stored at {found:?}"));
                }
                let extra = found.len() - 1;
                if s.idempotent {
                    r.idempotent_duplicates += extra;
                } else {
                    r.duplicates += extra;
                }
                if extra > s.invokes.saturating_sub(1) {
                    r.flag(Kind::Duplicate, || {
                        let by = if s.idempotent { " by an idempotent producer" } else { "" };
                        format!("{id} stored at {found:?} but sent {} time(s){by}", s.invokes)
                    });
                }
            }
            None => {}
        }
    }

    check_order(&mut r, &sends, &positions);
    check_polls(&mut r, events);
    check_commits(&mut r, events);
    check_replicas(&mut r, events);
    crate::share::check_shares(&mut r, events);
    r
}

/// An acknowledged send as the order checks see it.
struct Acked<'a> {
    /// Position of its first invoke in the history.
    sent: usize,
    /// Position of its acknowledgement.
    acked: usize,
    /// Where the log holds it (first copy).
    at: (u32, u64),
    id: &'a str,
    /// Sent once (no retry that could legitimately land later).
    once: bool,
}

/// Per key: one process's sends (sent once) stored in send order, and a
/// record acknowledged before another was first sent stored before it.
fn check_order(r: &mut Report, sends: &HashMap<&str, Send>, positions: &HashMap<&str, Vec<(u32, u64)>>) {
    let mut by_key: BTreeMap<&str, Vec<Acked<'_>>> = BTreeMap::new();
    for (id, s) in sends {
        let (Some(ok), Some(pos)) = (s.oks.first(), positions.get(id).and_then(|p| p.iter().min())) else {
            continue;
        };
        by_key.entry(&s.key).or_default().push(Acked {
            sent: s.first_invoke,
            acked: ok.2,
            at: *pos,
            id,
            once: s.invokes == 1,
        });
    }
    for (key, mut list) in by_key {
        // Send order (ids of one key come from one process, in order).
        list.sort_by_key(|x| x.sent);
        let mut last: Option<&Acked<'_>> = None;
        for x in list.iter().filter(|x| x.once) {
            if let Some(prev) = last
                && x.at <= prev.at
            {
                r.flag(Kind::Reorder, || {
                    format!(
                        "key {key}: {} sent after {} but stored at {:?} before {:?}",
                        x.id, prev.id, x.at, prev.at
                    )
                });
            }
            last = Some(x);
        }
        // Real time: acknowledged before b was first sent => stored before b.
        let mut by_ack: Vec<&Acked<'_>> = list.iter().collect();
        by_ack.sort_by_key(|x| x.acked);
        let mut i = 0;
        let mut latest_done: Option<&Acked<'_>> = None;
        for b in &list {
            while i < by_ack.len() && by_ack[i].acked < b.sent {
                if latest_done.is_none_or(|m| by_ack[i].at > m.at) {
                    latest_done = Some(by_ack[i]);
                }
                i += 1;
            }
            if let Some(a) = latest_done
                && b.at <= a.at
            {
                r.flag(Kind::Reorder, || {
                    format!(
                        "key {key}: {} was acknowledged (event {}) before {} was sent (event {}) but is stored after it ({:?} vs {:?})",
                        a.id, a.acked, b.id, b.sent, a.at, b.at
                    )
                });
            }
        }
    }
}

/// Within one assignment, a consumer's polled offsets are consecutive.
fn check_polls(r: &mut Report, events: &[Event]) {
    // A consumer that fell behind retention jumps to the log start: what it
    // skipped is below the final log start, so retention removed it.
    let log_start: HashMap<u32, u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::LogStart { partition, offset } => Some((*partition, *offset)),
            _ => None,
        })
        .collect();
    // (consumer, partition) -> last polled offset in the current assignment
    let mut last: HashMap<(u64, u32), Option<u64>> = HashMap::new();
    for e in events {
        match e {
            Event::Assigned {
                consumer, partition, ..
            } => {
                last.insert((*consumer, *partition), None);
            }
            Event::Revoked {
                consumer, partition, ..
            } => {
                last.remove(&(*consumer, *partition));
            }
            Event::Poll {
                consumer,
                partition,
                offset,
                ..
            } => {
                let Some(prev) = last.get_mut(&(*consumer, *partition)) else {
                    r.flag(Kind::PollGap, || {
                        format!("consumer {consumer} polled {partition}@{offset} without holding the partition")
                    });
                    continue;
                };
                if let Some(p) = *prev
                    && *offset > p + 1
                    && log_start.get(partition).is_none_or(|start| offset > start)
                {
                    r.flag(Kind::PollGap, || {
                        format!("consumer {consumer} skipped {partition}@{}..{offset}", p + 1)
                    });
                }
                *prev = Some(*offset);
            }
            _ => {}
        }
    }
}

/// A group's acknowledged commits never go backwards except by a reset.
fn check_commits(r: &mut Report, events: &[Event]) {
    let mut commits: Vec<(&u64, &str, u32, u64, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Commit {
                time_ms,
                group,
                partition,
                offset,
                reset,
                ..
            } => Some((time_ms, group.as_str(), *partition, *offset, *reset)),
            _ => None,
        })
        .collect();
    commits.sort_by_key(|c| *c.0);
    let mut high: HashMap<(&str, u32), u64> = HashMap::new();
    for (t, group, p, offset, reset) in commits {
        let h = high.entry((group, p)).or_insert(offset);
        if reset {
            *h = offset;
        } else if offset < *h {
            let was = *h;
            r.flag(Kind::OffsetRegress, || {
                format!("group {group} partition {p}: committed {offset} at {t} ms after {was}")
            });
        } else {
            *h = offset;
        }
    }
}

/// Replicas agree below the high watermark; one leader per group and term.
fn check_replicas(r: &mut Report, events: &[Event]) {
    let mut stored: BTreeMap<(u32, u64), BTreeMap<u64, (u64, u32)>> = BTreeMap::new();
    let mut leaders: BTreeMap<(u64, u64), BTreeSet<u64>> = BTreeMap::new();
    for e in events {
        match e {
            Event::Replica {
                node,
                partition,
                offset,
                term,
                crc,
            } => {
                stored
                    .entry((*partition, *offset))
                    .or_default()
                    .insert(*node, (*term, *crc));
            }
            Event::Leader { node, group, term } => {
                leaders.entry((*group, *term)).or_default().insert(*node);
            }
            _ => {}
        }
    }
    for ((p, o), by_node) in stored {
        let distinct: BTreeSet<&(u64, u32)> = by_node.values().collect();
        if distinct.len() > 1 {
            r.flag(Kind::Divergence, || format!("{p}@{o}: (term, crc) by node {by_node:?}"));
        }
    }
    for ((group, term), nodes) in leaders {
        if nodes.len() > 1 {
            r.flag(Kind::SplitBrain, || {
                format!("group {group} term {term} led by {nodes:?}")
            });
        }
    }
}
