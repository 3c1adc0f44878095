//! `InitProducerId`: ids and epochs for idempotent producers.
//!
//! A producer without a key gets the next id of the block this broker was
//! granted by the controller (a block of 1,000 costs one controller round
//! trip); asking again with its id and epoch gives the next epoch of the
//! same id (nobody else holds it). A producer with a stable key goes
//! through the controller every time, which keeps its id and fences every
//! earlier epoch (see `controller::producer_ids`).

use super::{Admin, MetadataRequest};
use crate::error::{BrokerError, Result};

impl Admin {
    /// An id and epoch for a producer with `key` (if any) whose current id
    /// and epoch are `current` (if it has some).
    ///
    /// # Errors
    /// `PRODUCER_FENCED` when a keyed producer's `current` epoch is not its
    /// newest; the controller's errors (`NOT_LEADER`, timeouts).
    pub async fn init_producer_id(&self, key: Option<&str>, current: Option<(i64, i16)>) -> Result<(i64, i16)> {
        if let Some(key) = key {
            return self.init_keyed_producer(key, current).await;
        }
        match current {
            Some((id, epoch)) if id > 0 && (0..i16::MAX).contains(&epoch) => Ok((id, epoch + 1)),
            _ => Ok((self.fresh_producer_id().await?, 0)),
        }
    }

    async fn fresh_producer_id(&self) -> Result<i64> {
        let node = &self.node;
        for _ in 0..3 {
            if let Some(id) = node.take_producer_id() {
                return Ok(id);
            }
            self.submit(MetadataRequest::AllocateProducerIds { broker: node.id() })
                .await?;
            if let Some((first, count)) = node.with_metadata(|m| m.producer_ids.blocks.get(&node.id()).copied()) {
                node.grant_producer_ids(first, count);
            }
        }
        Err(BrokerError::Timeout {
            what: "a block of producer ids from the controller",
            waited_ms: node.config().request_timeout().as_millis() as u64,
        })
    }

    async fn init_keyed_producer(&self, key: &str, current: Option<(i64, i16)>) -> Result<(i64, i16)> {
        let nonce = rand::random::<u64>();
        self.submit(MetadataRequest::InitProducerKey {
            key: key.to_string(),
            nonce,
            expected: current,
        })
        .await?;
        let got = self.node.with_metadata(|m| m.producer_ids.keyed.get(key).copied());
        match got {
            Some(p) if p.nonce == nonce => Ok((p.id, p.epoch)),
            // Another incarnation asked right after this one: it is newer.
            Some(p) => Err(BrokerError::ProducerFenced {
                producer_id: p.id,
                epoch: current.map_or(-1, |c| c.1),
                current: p.epoch,
            }),
            None => Err(BrokerError::Timeout {
                what: "the controller to record the producer's key",
                waited_ms: self.node.config().request_timeout().as_millis() as u64,
            }),
        }
    }
}
