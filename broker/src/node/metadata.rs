//! Following the controller log: committed records are applied in log order
//! to this node's [`MetadataState`](crate::controller::MetadataState), then
//! the hosted replicas are reconciled with it; the applied offset is
//! published on a watch channel that admin operations wait on.
//!
//! Proposing a command here (on the local controller replica) is only
//! useful on the controller's leader; `admin::submit` routes a request there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strand_cluster::Ack;
use strand_storage::{BatchBuilder, Compression, DecodedRecords, NewRecord, Offset, RecordBatch, batches};

use super::Node;
use crate::controller::{CONTROLLER_GROUP, MetadataCommand};
use crate::error::{BrokerError, Result};

fn invalid_batch(source: strand_storage::BatchError) -> BrokerError {
    strand_storage::StorageError::InvalidBatch { source }.into()
}

impl Node {
    /// Whether the committed cluster metadata is applied here.
    pub fn metadata_caught_up(&self) -> bool {
        // A controller replica that lost its disk knows nothing until its
        // leader brought it up to date, though its own high watermark says
        // it applied everything it holds.
        self.controller_leader().is_some()
            && !self.controller.status().recovering
            && *self.applied.borrow() >= self.controller.high_watermark()
    }

    /// The controller-log offset applied so far.
    pub fn applied_offset(&self) -> Offset {
        *self.applied.borrow()
    }

    /// Proposes a metadata command on this node's controller replica (which
    /// must lead) and returns the controller-log offset after it: once a
    /// broker has applied that far, it knows the command's outcome.
    pub async fn propose_metadata(&self, cmd: &MetadataCommand) -> Result<Offset> {
        let value = serde_json::to_vec(cmd).map_err(|e| BrokerError::InvalidRequest {
            reason: format!("cannot encode command: {e}"),
        })?;
        let mut b = BatchBuilder::new(Compression::None);
        b.push(&NewRecord {
            timestamp_ms: strand_storage::now_ms(),
            key: None,
            value: Some(&value),
            headers: &[],
        });
        let batch = RecordBatch::validate(Bytes::from(b.build().map_err(invalid_batch)?)).map_err(invalid_batch)?;
        let info = self
            .raft
            .propose(CONTROLLER_GROUP, batch, Ack::All)
            .await
            .map_err(|e| self.not_leader("__controller", 0, e))?;
        Ok(info.last_offset.next())
    }

    /// Serializes this node's metadata proposals (a command is planned from
    /// the applied state, so two planned at once could conflict).
    pub async fn proposal_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.proposals.lock().await
    }

    /// The controller-log offset applied so far, as it moves.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<Offset> {
        self.applied.subscribe()
    }

    /// Waits until the controller log is applied here up to `offset`.
    pub async fn wait_applied(&self, offset: Offset) -> Result<()> {
        let mut rx = self.applied.subscribe();
        let timeout = self.config.request_timeout();
        match tokio::time::timeout(timeout, rx.wait_for(|&a| a >= offset)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BrokerError::ShuttingDown),
            Err(_) => Err(BrokerError::Timeout {
                what: "cluster metadata to be applied",
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Reads committed controller records past what was applied, applies
    /// them in order and reconciles the hosted replicas.
    pub(super) async fn apply_committed_metadata(self: &Arc<Self>) -> Result<()> {
        loop {
            let from = *self.applied.borrow();
            let bytes = self.controller.read(from, 1 << 20)?;
            if bytes.is_empty() {
                return Ok(());
            }
            let mut next = from;
            let mut changed = false;
            for b in batches(&bytes) {
                let b = b.map_err(invalid_batch)?;
                let records = DecodedRecords::new(&b).map_err(invalid_batch)?;
                for r in records.iter() {
                    let r = r.map_err(invalid_batch)?;
                    if r.offset < from {
                        continue;
                    }
                    match r.value.map(serde_json::from_slice::<MetadataCommand>) {
                        Some(Ok(cmd)) => changed |= self.metadata.write().apply(&cmd),
                        Some(Err(e)) => {
                            tracing::error!(offset = %r.offset, error = %e, "skipping an undecodable controller record")
                        }
                        None => {}
                    }
                }
                next = b.next_offset();
            }
            if changed {
                let joined = self.metadata().joined;
                for (id, addr) in joined {
                    if id != self.id && !self.founders.contains_key(&id) {
                        self.transport.set_peer_if_new(id, addr);
                    }
                }
                self.reconcile().await?;
            }
            // Published after reconciling, so a waiter sees the replicas too.
            self.applied.send_replace(next);
        }
    }

    /// Applies controller records as they commit, until shutdown.
    pub(super) async fn follow_controller(self: Arc<Self>) {
        let mut hw = self.controller.watch_high_watermark();
        let mut stop = self.shutdown.subscribe();
        loop {
            if let Err(e) = self.apply_committed_metadata().await {
                tracing::error!(error = %e, "applying cluster metadata failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            tokio::select! {
                r = hw.changed() => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
