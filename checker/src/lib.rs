//! Histories of Strand under faults, and a checker for them.
//!
//! Jepsen (Clojure) cannot run here, so the fault suite records its own
//! history ([`history::Event`], JSON lines) and [`check`] looks for the
//! anomalies Jepsen's analyses of Kafka, Redpanda and NATS JetStream found:
//! inconsistent offsets, lost acknowledged writes, aborted reads,
//! duplicates beyond retries, reordering, consumer poll gaps, committed
//! offsets going backwards, diverging replicas and split brain.
//! [`malformed`] makes the bad batches the suite's malformed producer sends;
//! [`generations`] checks a group reading a topic deleted and created again.
//! Share groups (queues) are checked too: no record handed out after its
//! acknowledgement was confirmed, delivery counts that grow with every
//! delivery, and every record of the log accepted or archived in the end.

pub mod check;
pub mod generations;
pub mod history;
pub mod malformed;
mod report;
mod share;

pub use check::{Kind, Report, check};
pub use history::{Event, Recorder, read_jsonl, write_jsonl};

#[cfg(test)]
mod tests {
    use super::*;

    fn send(process: u64, t: u64, id: &str, key: &str, partition: u32, offset: u64) -> Vec<Event> {
        vec![
            Event::Invoke {
                process,
                time_ms: t,
                id: id.into(),
                key: key.into(),
                idempotent: false,
            },
            Event::Ok {
                process,
                time_ms: t + 1,
                id: id.into(),
                partition,
                offset,
            },
        ]
    }

    fn read(partition: u32, offset: u64, id: &str, key: &str) -> Event {
        Event::Read {
            partition,
            offset,
            id: id.into(),
            key: key.into(),
        }
    }

    /// Three acknowledged sends of one key, read back in order; a consumer
    /// polling them in one assignment; growing commits; agreeing replicas;
    /// one leader per term.
    fn clean() -> Vec<Event> {
        let mut h = Vec::new();
        h.extend(send(1, 10, "a", "k", 0, 0));
        h.extend(send(1, 20, "b", "k", 0, 1));
        h.extend(send(1, 30, "c", "k", 0, 2));
        h.push(Event::Assigned {
            consumer: 7,
            time_ms: 40,
            partition: 0,
        });
        for (o, id) in ["a", "b", "c"].iter().enumerate() {
            h.push(Event::Poll {
                consumer: 7,
                time_ms: 41 + o as u64,
                partition: 0,
                offset: o as u64,
                id: (*id).into(),
            });
        }
        for (t, o) in [(45, 2), (50, 3)] {
            h.push(Event::Commit {
                consumer: 7,
                time_ms: t,
                group: "g".into(),
                partition: 0,
                offset: o,
                reset: false,
            });
        }
        for (o, id) in ["a", "b", "c"].iter().enumerate() {
            h.push(read(0, o as u64, id, "k"));
        }
        for node in 1..=3 {
            h.push(Event::Replica {
                node,
                partition: 0,
                offset: 0,
                term: 2,
                crc: 99,
            });
        }
        h.push(Event::Leader {
            node: 1,
            group: 5,
            term: 2,
        });
        h.push(Event::Leader {
            node: 2,
            group: 5,
            term: 3,
        });
        h
    }

    fn only(report: &Report, kind: Kind) {
        for k in Kind::ALL {
            let want = usize::from(k == kind);
            assert!(
                if want == 1 {
                    report.count(k) >= 1
                } else {
                    report.count(k) == 0
                },
                "{k:?} expected {want}: {report}"
            );
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let r = check(&clean());
        assert!(r.is_valid(), "{r}");
        assert_eq!((r.acknowledged, r.read), (3, 3));
    }

    #[test]
    fn two_records_at_one_offset_are_inconsistent() {
        let mut h = clean();
        h.extend(send(2, 60, "x", "other", 0, 2));
        h.push(read(0, 2, "x", "other"));
        only(&check(&h), Kind::InconsistentOffset);
    }

    #[test]
    fn an_acknowledged_record_missing_from_the_log_is_lost() {
        let mut h = clean();
        h.extend(send(1, 60, "d", "k", 0, 3));
        only(&check(&h), Kind::Lost);
    }

    #[test]
    fn a_record_retention_removed_is_expired_not_lost() {
        let mut h = clean();
        h.extend(send(1, 60, "d", "k", 0, 3));
        h.push(Event::LogStart {
            partition: 0,
            offset: 4,
        });
        let r = check(&h);
        assert!(r.is_valid(), "{r}");
        assert_eq!(r.expired, 1);
        // Above the log start it is lost all the same.
        let mut h = clean();
        h.extend(send(1, 60, "d", "k", 0, 3));
        h.push(Event::LogStart {
            partition: 0,
            offset: 3,
        });
        only(&check(&h), Kind::Lost);
    }

    #[test]
    fn a_failed_send_that_was_read_is_an_aborted_read() {
        let mut h = clean();
        h.push(Event::Invoke {
            process: 1,
            time_ms: 60,
            id: "f".into(),
            key: "k2".into(),
            idempotent: false,
        });
        h.push(Event::Fail {
            process: 1,
            time_ms: 61,
            id: "f".into(),
            error: "RECORD_TOO_LARGE".into(),
        });
        h.push(read(1, 0, "f", "k2"));
        only(&check(&h), Kind::AbortedRead);
        // An unknown outcome that was stored is fine.
        let mut h = clean();
        h.push(Event::Invoke {
            process: 1,
            time_ms: 60,
            id: "u".into(),
            key: "k2".into(),
            idempotent: false,
        });
        h.push(Event::Unknown {
            process: 1,
            time_ms: 61,
            id: "u".into(),
            error: "timeout".into(),
        });
        h.push(read(1, 0, "u", "k2"));
        assert!(check(&h).is_valid());
    }

    #[test]
    fn duplicates_beyond_retries_are_flagged_and_within_them_counted() {
        let mut h = clean();
        h.push(read(0, 3, "c", "k"));
        only(&check(&h), Kind::Duplicate);
        // Sent twice (a retry after an unknown outcome): one duplicate is allowed.
        let mut h = clean();
        h.push(Event::Invoke {
            process: 1,
            time_ms: 35,
            id: "c".into(),
            key: "k".into(),
            idempotent: false,
        });
        h.push(read(0, 3, "c", "k"));
        let r = check(&h);
        assert!(r.is_valid(), "{r}");
        assert_eq!((r.duplicates, r.retried_sends), (1, 1));
    }

    #[test]
    fn an_idempotent_send_stored_twice_is_flagged() {
        let mut h: Vec<Event> = clean()
            .into_iter()
            .map(|e| match e {
                Event::Invoke {
                    process,
                    time_ms,
                    id,
                    key,
                    ..
                } => Event::Invoke {
                    process,
                    time_ms,
                    id,
                    key,
                    idempotent: true,
                },
                e => e,
            })
            .collect();
        let r = check(&h);
        assert!(r.is_valid(), "{r}");
        assert_eq!(r.idempotent_sends, 3);
        h.push(read(0, 3, "c", "k"));
        let r = check(&h);
        only(&r, Kind::Duplicate);
        assert_eq!((r.idempotent_duplicates, r.duplicates), (1, 0));
        assert!(r.examples(Kind::Duplicate)[0].contains("idempotent"), "{r}");
    }

    #[test]
    fn a_key_stored_out_of_send_order_is_a_reorder() {
        let mut h: Vec<Event> = clean()
            .into_iter()
            .filter(|e| !matches!(e, Event::Read { .. } | Event::Poll { .. } | Event::Ok { .. }))
            .collect();
        // b and c swapped in the log (and acknowledged that way).
        for (id, o) in [("a", 0), ("b", 2), ("c", 1)] {
            h.push(Event::Ok {
                process: 1,
                time_ms: 100,
                id: id.into(),
                partition: 0,
                offset: o,
            });
            h.push(read(0, o, id, "k"));
        }
        only(&check(&h), Kind::Reorder);
    }

    #[test]
    fn send_order_is_history_order_not_id_order_or_equal_timestamps() {
        // p1-32 sent before p1-4 in the same millisecond, stored in that order.
        let mut h = send(1, 5, "p1-32", "k", 0, 0);
        h.extend(send(1, 5, "p1-4", "k", 0, 1));
        h.push(read(0, 0, "p1-32", "k"));
        h.push(read(0, 1, "p1-4", "k"));
        let r = check(&h);
        assert!(r.is_valid(), "{r}");
    }

    #[test]
    fn a_record_acknowledged_before_another_was_sent_must_be_stored_first() {
        // Two processes, one key: p1's x is acknowledged at 5 ms, p2 sends y
        // at 10 ms, yet y is stored before x.
        let mut h = vec![
            Event::Invoke {
                process: 1,
                time_ms: 1,
                id: "x".into(),
                key: "k".into(),
                idempotent: false,
            },
            Event::Ok {
                process: 1,
                time_ms: 5,
                id: "x".into(),
                partition: 0,
                offset: 1,
            },
        ];
        h.extend(send(2, 10, "y", "k", 0, 0));
        h.push(read(0, 0, "y", "k"));
        h.push(read(0, 1, "x", "k"));
        only(&check(&h), Kind::Reorder);
    }

    #[test]
    fn a_consumer_skipping_offsets_in_one_assignment_is_a_poll_gap() {
        let h: Vec<Event> = clean()
            .into_iter()
            .filter(|e| !matches!(e, Event::Poll { offset: 1, .. }))
            .collect();
        only(&check(&h), Kind::PollGap);
        // A new assignment may start anywhere.
        let mut h = clean();
        h.push(Event::Revoked {
            consumer: 7,
            time_ms: 60,
            partition: 0,
        });
        h.push(Event::Assigned {
            consumer: 7,
            time_ms: 61,
            partition: 0,
        });
        h.push(Event::Poll {
            consumer: 7,
            time_ms: 62,
            partition: 0,
            offset: 2,
            id: "c".into(),
        });
        assert!(check(&h).is_valid());
    }

    #[test]
    fn a_commit_going_backwards_is_a_regress_unless_it_is_a_reset() {
        let mut h = clean();
        h.push(Event::Commit {
            consumer: 7,
            time_ms: 70,
            group: "g".into(),
            partition: 0,
            offset: 1,
            reset: false,
        });
        only(&check(&h), Kind::OffsetRegress);
        let mut h = clean();
        h.push(Event::Commit {
            consumer: 0,
            time_ms: 70,
            group: "g".into(),
            partition: 0,
            offset: 0,
            reset: true,
        });
        assert!(check(&h).is_valid());
    }

    #[test]
    fn replicas_that_differ_below_the_high_watermark_diverge() {
        let mut h = clean();
        h.push(Event::Replica {
            node: 3,
            partition: 0,
            offset: 0,
            term: 2,
            crc: 100,
        });
        only(&check(&h), Kind::Divergence);
    }

    #[test]
    fn two_leaders_in_one_term_are_split_brain() {
        let mut h = clean();
        h.push(Event::Leader {
            node: 3,
            group: 5,
            term: 2,
        });
        only(&check(&h), Kind::SplitBrain);
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let h = clean();
        let mut buf = Vec::new();
        write_jsonl(&h, &mut buf).unwrap();
        assert_eq!(read_jsonl(&buf[..]).unwrap(), h);
        let err = read_jsonl(&b"{\"type\":\"nope\"}\n"[..]).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
