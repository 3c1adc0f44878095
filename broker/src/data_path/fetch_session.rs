//! Fetch sessions (Kafka's incremental fetch, KIP-227): the broker remembers
//! the partitions a consumer fetches and their positions, so that a consumer
//! of thousands of partitions sends only what changed and hears only about
//! partitions with something new.
//!
//! A session is opened by a full request (`session_id` 0, `session_epoch` 1)
//! and answered with its id. Each later request carries the id and the next
//! epoch (previous + 1), the partitions whose position changed or that are
//! new, and the ones to forget. The broker reads the whole session and
//! answers only partitions with records, an error, or a high watermark or
//! log start that moved since it last answered them. The broker never moves
//! a position itself: a lost answer costs a re-read, never a record.
//!
//! Invariants: one request at a time per session (a concurrent one, or one
//! with another epoch, is refused and the client opens a new session); at
//! most `MAX_SESSIONS` sessions, the least recently used evicted first, and a
//! session idle for `IDLE` is dropped; a restarted broker knows no session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strand_storage::Offset;

use super::fetch::{FetchPartition, PartitionRead};
use crate::error::{BrokerError, Result};

/// Sessions one broker keeps.
pub const MAX_SESSIONS: usize = 1000;
/// A session unused this long is dropped.
pub const IDLE: Duration = Duration::from_secs(120);

/// One consumer's session on this broker.
#[derive(Debug, Default)]
pub struct FetchSession {
    epoch: u32,
    parts: Vec<FetchPartition>,
    /// What the client last heard per partition: (high watermark, log start).
    heard: Vec<Option<(Offset, Offset)>>,
    slot: HashMap<(String, u32), usize>,
    /// Where the next read starts spending the byte budget.
    first: usize,
}

impl FetchSession {
    fn new(parts: Vec<FetchPartition>) -> Self {
        let mut s = FetchSession {
            epoch: 1,
            ..Default::default()
        };
        s.update(parts, &[]);
        s
    }

    /// Adds or repositions `changed` and drops `forgotten`.
    fn update(&mut self, changed: Vec<FetchPartition>, forgotten: &[(String, u32)]) {
        for key in forgotten {
            if let Some(i) = self.slot.remove(key) {
                self.parts.swap_remove(i);
                self.heard.swap_remove(i);
                if let Some(moved) = self.parts.get(i) {
                    self.slot.insert((moved.topic.clone(), moved.partition), i);
                }
            }
        }
        for fp in changed {
            match self.slot.get(&(fp.topic.clone(), fp.partition)) {
                Some(&i) => {
                    // Another topic under the same name: the client must hear
                    // about it as if new.
                    if self.parts[i].topic_id != fp.topic_id {
                        self.heard[i] = None;
                    }
                    self.parts[i] = fp;
                }
                None => {
                    self.slot.insert((fp.topic.clone(), fp.partition), self.parts.len());
                    self.parts.push(fp);
                    self.heard.push(None);
                }
            }
        }
    }

    /// The session's partitions, in the order reads return them.
    pub fn partitions(&self) -> &[FetchPartition] {
        &self.parts
    }

    /// Where this read starts spending its budget; moves on for the next one,
    /// so every partition gets served first in turn.
    pub fn next_first(&mut self) -> usize {
        let first = self.first;
        self.first = (self.first + 1) % self.parts.len().max(1);
        first
    }

    /// Which of `reads` (one per partition, in session order) are worth
    /// answering: records, an error, or news about the partition's bounds.
    /// Notes what the client hears.
    pub fn news(&mut self, reads: &[Result<PartitionRead>]) -> Vec<bool> {
        reads
            .iter()
            .zip(self.heard.iter_mut())
            .map(|(read, heard)| match read {
                Err(_) => {
                    *heard = None;
                    true
                }
                Ok(r) => {
                    let now = Some((r.high_watermark, r.log_start_offset));
                    let news = !r.records.is_empty() || *heard != now;
                    *heard = now;
                    news
                }
            })
            .collect()
    }
}

struct Entry {
    session: Arc<tokio::sync::Mutex<FetchSession>>,
    used: Instant,
}

/// The sessions of one broker.
pub struct FetchSessions {
    entries: Mutex<HashMap<u64, Entry>>,
    /// Ids start from the boot time, so a client of the broker's previous
    /// run never finds its old id handed to someone else.
    next_id: std::sync::atomic::AtomicU64,
}

impl Default for FetchSessions {
    fn default() -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        FetchSessions {
            entries: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(boot.max(1) << 8),
        }
    }
}

impl std::fmt::Debug for FetchSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchSessions")
            .field("open", &self.entries.lock().len())
            .finish()
    }
}

/// A session held for one request.
pub type HeldSession = tokio::sync::OwnedMutexGuard<FetchSession>;

impl FetchSessions {
    /// Opens a session over `parts`: its id and the session, held.
    pub async fn open(&self, parts: Vec<FetchPartition>) -> (u64, HeldSession) {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = Arc::new(tokio::sync::Mutex::new(FetchSession::new(parts)));
        // Nobody else knows the new session yet: this does not wait.
        let held = Arc::clone(&session).lock_owned().await;
        let now = Instant::now();
        let mut entries = self.entries.lock();
        entries.retain(|_, e| now.duration_since(e.used) < IDLE);
        while entries.len() >= MAX_SESSIONS {
            let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.used).map(|(id, _)| *id) else {
                break;
            };
            entries.remove(&oldest);
        }
        entries.insert(id, Entry { session, used: now });
        (id, held)
    }

    /// Session `id` at `epoch` (the one after its last), updated with
    /// `changed` and `forgotten`, held for this request.
    pub fn resume(
        &self,
        id: u64,
        epoch: u32,
        changed: Vec<FetchPartition>,
        forgotten: &[(String, u32)],
    ) -> Result<HeldSession> {
        let session = {
            let mut entries = self.entries.lock();
            let Some(e) = entries.get_mut(&id) else {
                return Err(BrokerError::FetchSessionNotFound { session_id: id });
            };
            e.used = Instant::now();
            Arc::clone(&e.session)
        };
        let Ok(mut held) = session.try_lock_owned() else {
            return Err(BrokerError::InvalidFetchSessionEpoch {
                session_id: id,
                epoch,
                expected: None,
            });
        };
        let expected = held.epoch.wrapping_add(1);
        if epoch != expected {
            // The client lost track (an answer it never got): it must open a
            // new session, so this one is of no further use.
            self.entries.lock().remove(&id);
            return Err(BrokerError::InvalidFetchSessionEpoch {
                session_id: id,
                epoch,
                expected: Some(expected),
            });
        }
        held.epoch = epoch;
        held.update(changed, forgotten);
        Ok(held)
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(topic: &str, partition: u32, offset: u64) -> FetchPartition {
        FetchPartition {
            leader_only: false,
            topic: topic.into(),
            topic_id: None,
            partition,
            offset: Offset(offset),
            max_bytes: 1024,
        }
    }

    fn read(hw: u64, records: &'static [u8]) -> Result<PartitionRead> {
        Ok(PartitionRead {
            records: bytes::Bytes::from_static(records),
            high_watermark: Offset(hw),
            log_start_offset: Offset(0),
        })
    }

    #[test]
    fn updates_reposition_add_and_forget() {
        let mut s = FetchSession::new(vec![fp("a", 0, 0), fp("a", 1, 0), fp("b", 0, 0)]);
        s.update(vec![fp("a", 1, 7), fp("c", 0, 3)], &[("a".into(), 0)]);
        let mut got: Vec<(String, u32, u64)> = s
            .partitions()
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.offset.get()))
            .collect();
        got.sort();
        assert_eq!(got, vec![("a".into(), 1, 7), ("b".into(), 0, 0), ("c".into(), 0, 3)]);
        // The slot index follows the swap_remove.
        for (i, p) in s.partitions().iter().enumerate() {
            assert_eq!(s.slot[&(p.topic.clone(), p.partition)], i);
        }
    }

    #[test]
    fn answers_only_news() {
        let mut s = FetchSession::new(vec![fp("a", 0, 0)]);
        let mut news = |r| s.news(&[r])[0];
        assert!(news(read(5, b"")), "the first answer tells the bounds");
        assert!(!news(read(5, b"")), "nothing new");
        assert!(news(read(6, b"")), "the high watermark moved");
        assert!(news(read(6, b"x")), "records");
        assert!(news(Err(BrokerError::ShuttingDown)), "errors");
    }

    #[tokio::test]
    async fn epochs_must_follow_and_one_request_at_a_time() {
        let sessions = FetchSessions::default();
        let (id, held) = sessions.open(vec![fp("a", 0, 0)]).await;
        assert!(matches!(
            sessions.resume(id, 2, Vec::new(), &[]),
            Err(BrokerError::InvalidFetchSessionEpoch { expected: None, .. })
        ));
        drop(held);
        let held = sessions.resume(id, 2, Vec::new(), &[]).map(drop);
        assert!(held.is_ok());
        assert!(matches!(
            sessions.resume(id, 2, Vec::new(), &[]),
            Err(BrokerError::InvalidFetchSessionEpoch { expected: Some(3), .. })
        ));
        // A wrong epoch drops the session.
        assert!(matches!(
            sessions.resume(id, 3, Vec::new(), &[]),
            Err(BrokerError::FetchSessionNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn the_least_recently_used_session_makes_room() {
        let sessions = FetchSessions::default();
        let first = sessions.open(Vec::new()).await.0;
        for _ in 1..MAX_SESSIONS {
            sessions.open(Vec::new()).await;
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        sessions.open(Vec::new()).await;
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(matches!(
            sessions.resume(first, 2, Vec::new(), &[]),
            Err(BrokerError::FetchSessionNotFound { .. })
        ));
    }
}
