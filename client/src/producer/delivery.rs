//! A batch's outcome, shared by the delivery futures of its records.
//!
//! The broker answers per batch, so the producer settles per batch: one
//! allocation when a batch opens and one pass over the waiting tasks when
//! it is answered, instead of a channel per record. A record's
//! [`DeliveryFuture`] holds the shared outcome and its index in the batch,
//! and derives its own offset (`base_offset + index`).
//!
//! Invariants: an outcome is settled exactly once (the first settlement
//! wins); a [`Completion`] dropped unsettled settles its records with
//! [`ClientError::Closed`], so no future waits forever; a waker registered
//! before the outcome is settled is woken after it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::record::RecordMetadata;
use crate::error::{ClientError, Result};

/// What the broker said about one batch: the offset of its first record
/// (`None` with `acks=none`), or why it failed.
type BatchResult = Result<Option<u64>>;

struct BatchOutcome {
    topic: Arc<str>,
    partition: u32,
    result: OnceLock<BatchResult>,
    /// Tasks waiting for `result`; taken when it is set.
    wakers: Mutex<Vec<Waker>>,
}

impl BatchOutcome {
    fn settle(&self, result: BatchResult) {
        if self.result.set(result).is_err() {
            return;
        }
        // Taken under the lock that pollers check `result` under, so a
        // waker is either seen here or its poller saw the result.
        let wakers = std::mem::take(&mut *self.wakers.lock());
        for w in wakers {
            w.wake();
        }
    }
}

/// The producer's side of a batch's outcome.
pub(crate) struct Completion(Arc<BatchOutcome>);

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("topic", &self.0.topic)
            .field("partition", &self.0.partition)
            .field("settled", &self.0.result.get().is_some())
            .finish()
    }
}

impl Completion {
    pub(crate) fn new(topic: Arc<str>, partition: u32) -> Self {
        Completion(Arc::new(BatchOutcome {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }))
    }

    /// The future of the batch's record number `index`.
    pub(crate) fn delivery(&self, index: u32, timestamp_ms: i64) -> DeliveryFuture {
        DeliveryFuture {
            outcome: Arc::clone(&self.0),
            index,
            timestamp_ms,
            slot: None,
        }
    }

    /// Settles every record of the batch: stored from `base_offset` on.
    pub(crate) fn succeed(self, base_offset: Option<u64>) {
        self.0.settle(Ok(base_offset));
    }

    /// Settles every record of the batch with `err`.
    pub(crate) fn fail(self, err: ClientError) {
        self.0.settle(Err(err));
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // No effect when settled already; otherwise nothing will send the
        // batch any more (the producer's task is gone).
        self.0.settle(Err(ClientError::Closed));
    }
}

/// Resolves when the record is acknowledged (per the producer's
/// [`crate::Acks`]) or has failed for good.
///
/// Dropping it does not cancel the send.
#[must_use = "the delivery result is only known by awaiting the future"]
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    index: u32,
    timestamp_ms: i64,
    /// Where this future's waker sits in the outcome's list, once polled.
    slot: Option<usize>,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.outcome.topic)
            .field("partition", &self.outcome.partition)
            .field("index", &self.index)
            .field("settled", &self.is_settled())
            .finish()
    }
}

impl DeliveryFuture {
    /// Whether the outcome is known, so that awaiting the future returns at
    /// once. Lets a caller drain its futures in order without waiting.
    pub fn is_settled(&self) -> bool {
        self.outcome.result.get().is_some()
    }

    fn output(&self, result: &BatchResult) -> Result<RecordMetadata> {
        match result {
            Ok(base) => Ok(RecordMetadata {
                topic: Arc::clone(&self.outcome.topic),
                partition: self.outcome.partition,
                offset: base.map(|b| b + u64::from(self.index)),
                timestamp_ms: self.timestamp_ms,
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.outcome.result.get() {
            return Poll::Ready(self.output(r));
        }
        let outcome = Arc::clone(&self.outcome);
        let mut wakers = outcome.wakers.lock();
        if let Some(r) = outcome.result.get() {
            drop(wakers);
            return Poll::Ready(self.output(r));
        }
        // Polled again (e.g. in a `select!`): replace this future's waker
        // rather than adding one per poll.
        match self.slot.and_then(|i| wakers.get_mut(i)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    w.clone_from(cx.waker());
                }
            }
            None => {
                self.slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn every_record_gets_its_own_offset_from_one_settlement() {
        let c = Completion::new("t".into(), 3);
        let futures: Vec<_> = (0..3).map(|i| c.delivery(i, 100 + i64::from(i))).collect();
        assert!(futures.iter().all(|f| !f.is_settled()));
        let waiter = tokio::spawn(futures::future::join_all(futures));
        tokio::task::yield_now().await;
        c.succeed(Some(40));
        let got = waiter.await.expect("joined");
        let offsets: Vec<_> = got
            .into_iter()
            .map(|r| {
                let m = r.expect("stored");
                assert_eq!((&*m.topic, m.partition), ("t", 3));
                (m.offset, m.timestamp_ms)
            })
            .collect();
        assert_eq!(offsets, [(Some(40), 100), (Some(41), 101), (Some(42), 102)]);
    }

    #[tokio::test]
    async fn a_failure_reaches_every_record_and_a_dropped_completion_closes() {
        let c = Completion::new("t".into(), 0);
        let f = c.delivery(0, 0);
        c.fail(ClientError::invalid("nope"));
        assert!(f.is_settled());
        assert!(matches!(f.await, Err(ClientError::InvalidArgument { .. })));

        let c = Completion::new("t".into(), 0);
        let f = c.delivery(0, 0);
        drop(c);
        assert!(matches!(f.await, Err(ClientError::Closed)));
    }

    #[test]
    fn polling_again_does_not_grow_the_waker_list() {
        let c = Completion::new("t".into(), 0);
        let mut f = c.delivery(0, 0);
        for _ in 0..10 {
            assert!((&mut f).now_or_never().is_none());
        }
        assert_eq!(c.0.wakers.lock().len(), 1);
        c.succeed(None);
        let offset = f.now_or_never().map(|r| r.map(|m| m.offset));
        assert!(matches!(offset, Some(Ok(None))), "{offset:?}");
    }
}
