//! The one way a metadata change reaches the controller log: route the
//! request to the controller's leader (here, or forwarded once over
//! `Peer/SubmitMetadata`), let the leader plan and commit it, then wait until
//! this broker applied the result, so that a `describe` right after a
//! `create` on the same broker sees the topic.
//!
//! Waiting uses the watch channels the node already publishes (the
//! controller's status for its leader, the applied offset for the outcome);
//! nothing polls.

use std::time::Duration;

use strand_cluster::{NodeId, ReplicaChange};
use strand_proto::v1::{SubmitMetadataRequest, peer_client::PeerClient};
use strand_storage::Offset;

use super::Admin;
use super::request::{MetadataRequest, PlanContext};
use crate::controller::CONTROLLER_GROUP;
use crate::error::{BrokerError, Result};
use crate::security::Security;

/// Where a request must go.
enum Route {
    Local,
    Forward(String),
}

fn no_controller(addr: Option<String>) -> BrokerError {
    BrokerError::NotLeader {
        topic: "__controller".into(),
        partition: 0,
        leader_addr: addr,
    }
}

impl Admin {
    /// Submits `req` to the controller's leader and returns once this broker
    /// applied its outcome.
    ///
    /// # Errors
    /// The leader's refusal (with its stable reason), or `NOT_LEADER` /
    /// `REQUEST_TIMED_OUT` when no controller leader could take it in time.
    pub async fn submit(&self, req: MetadataRequest) -> Result<()> {
        req.check()?;
        let node = &self.node;
        let deadline = tokio::time::Instant::now() + node.config().request_timeout();
        loop {
            let applied = match self.route(deadline).await? {
                Route::Local => match self.execute_on_leader(&req).await {
                    // Leadership moved between routing and proposing: route again.
                    Err(BrokerError::NotLeader { .. }) if tokio::time::Instant::now() < deadline => continue,
                    other => other?,
                },
                Route::Forward(addr) => self.forward(&addr, &req).await?,
            };
            return node.wait_applied(applied).await;
        }
    }

    /// Waits (until `deadline`) for the controller to have a leader and says
    /// where it is.
    async fn route(&self, deadline: tokio::time::Instant) -> Result<Route> {
        let node = &self.node;
        let mut status = node.watch_controller();
        let known = status.wait_for(|s| s.leader.is_some_and(|l| node.addr_of(l).is_some()));
        let leader = match tokio::time::timeout_at(deadline, known).await {
            Ok(Ok(s)) => s.leader,
            Ok(Err(_)) => return Err(BrokerError::ShuttingDown),
            Err(_) => return Err(no_controller(None)),
        };
        match leader {
            Some(l) if l == node.id() => Ok(Route::Local),
            Some(l) => node.addr_of(l).map(Route::Forward).ok_or_else(|| no_controller(None)),
            None => Err(no_controller(None)),
        }
    }

    /// Sends `req` to the controller's leader at `addr`; returns the
    /// controller-log offset after the committed change.
    async fn forward(&self, addr: &str, req: &MetadataRequest) -> Result<Offset> {
        let node = &self.node;
        let max = node.config().limits.max_message_bytes;
        let endpoint = Security::endpoint(addr)?
            .connect_timeout(Duration::from_secs(2))
            .timeout(node.config().request_timeout());
        let channel = node
            .security()
            .dialer()
            .connect(endpoint)
            .await
            .map_err(|_| no_controller(Some(addr.to_string())))?;
        let request = serde_json::to_vec(req).map_err(|e| BrokerError::InvalidRequest {
            reason: format!("cannot encode the request: {e}"),
        })?;
        let answer = PeerClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
            .submit_metadata(SubmitMetadataRequest {
                cluster_id: node.cluster_id().to_string(),
                from: node.id().get(),
                request: request.into(),
            })
            .await?;
        Ok(Offset(answer.into_inner().applied_offset))
    }

    /// Carries out `req` on this broker, which must lead the controller:
    /// waits until everything committed is applied, plans the command from
    /// the applied metadata, commits it and applies it here. Returns the
    /// controller-log offset after it.
    ///
    /// # Errors
    /// `NOT_LEADER` if this broker does not lead the controller; the plan's
    /// refusal.
    pub async fn execute_on_leader(&self, req: &MetadataRequest) -> Result<Offset> {
        let node = &self.node;
        let _serial = node.proposal_lock().await;
        self.catch_up_as_leader().await?;
        let brokers: Vec<NodeId> = node.brokers().keys().copied().collect();
        let founders: Vec<NodeId> = node.founders().keys().copied().collect();
        let ctx = PlanContext {
            brokers: &brokers,
            founders: &founders,
            log_defaults: &node.config().log,
        };
        let cmd = req.plan(&node.metadata(), &ctx)?;
        let applied = node.propose_metadata(&cmd).await?;
        node.wait_applied(applied).await?;
        if let MetadataRequest::AddBroker { id, .. } = req {
            self.add_controller_learner(*id).await?;
        }
        tracing::info!(?req, "metadata change committed");
        Ok(applied)
    }

    /// As the controller's leader, waits until the entry this leader
    /// appended in its term is committed and everything committed is
    /// applied, so a plan never reads metadata older than the log.
    async fn catch_up_as_leader(&self) -> Result<()> {
        let node = &self.node;
        let mut status = node.watch_controller();
        let (term, last) = {
            let s = status.borrow_and_update();
            if !s.is_leader {
                return Err(no_controller(s.leader.and_then(|l| node.addr_of(l))));
            }
            (s.term, s.last_index)
        };
        let committed = status.wait_for(|s| !s.is_leader || s.term != term || s.commit >= last);
        let timeout = node.config().request_timeout();
        match tokio::time::timeout(timeout, committed).await {
            Ok(Ok(s)) if s.is_leader && s.term == term => {}
            Ok(Ok(s)) => return Err(no_controller(s.leader.and_then(|l| node.addr_of(l)))),
            Ok(Err(_)) => return Err(BrokerError::ShuttingDown),
            Err(_) => return Err(no_controller(None)),
        }
        node.wait_applied(node.controller_high_watermark()).await
    }

    /// Adds a joining broker as a learner of the controller group, so it
    /// receives the metadata (it never votes there: the controller's voters
    /// are the brokers the cluster was formed with).
    async fn add_controller_learner(&self, id: NodeId) -> Result<()> {
        let node = &self.node;
        let has = |s: &strand_cluster::ReplicaStatus| s.learners.contains(&id) || s.voters.contains(&id);
        let timeout = node.config().request_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut status = node.watch_controller();
        while !has(&status.borrow_and_update()) {
            // raft-rs refuses a change while another is pending; a status
            // change (the pending one applied, or this one) says when to look
            // again.
            if let Err(e) = node
                .raft()
                .change_replicas(CONTROLLER_GROUP, ReplicaChange::AddLearner(id))
                .await
            {
                tracing::debug!(node = %id, error = %e, "controller learner not added yet");
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(BrokerError::ShuttingDown),
                Err(_) => {
                    return Err(BrokerError::Timeout {
                        what: "the joining broker to become a controller learner",
                        waited_ms: timeout.as_millis() as u64,
                    });
                }
            }
        }
        Ok(())
    }
}
