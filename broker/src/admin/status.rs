//! Cluster status: every broker reports the replicas it hosts
//! (`Peer/LocalStatus`); the broker asked merges the reports, taking each
//! partition's leadership and replica lag from the replica that leads it.

use std::collections::HashMap;
use std::time::Duration;

use strand_cluster::NodeId;
use strand_proto::v1 as pb;
use strand_storage::{Offset, RaftIndex, Term};

use super::Admin;
use crate::node::Node;
use crate::partition::in_sync;
use crate::security::Security;
use strand_security::Dialer;

/// How long a peer gets to answer a status request.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// A follower's lag as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaLag {
    /// The follower.
    pub node: NodeId,
    /// Raft entries behind the leader.
    pub lag: u64,
    /// Whether it counts as in sync ([`in_sync`]).
    pub in_sync: bool,
}

/// One hosted replica, as the broker hosting it reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The group's leader as this replica knows it.
    pub leader: Option<NodeId>,
    /// Term.
    pub term: Term,
    /// Whether this replica leads.
    pub is_leader: bool,
    /// Last Raft index stored here.
    pub last_index: RaftIndex,
    /// High watermark here.
    pub high_watermark: Offset,
    /// Every replica's lag (on the leader only).
    pub replicas: Vec<ReplicaLag>,
    /// Recovering: no votes until a leader brought it up to date.
    pub recovering: bool,
    /// Its storage failed: stopped.
    pub failed: bool,
}

/// One broker's report: `None` replicas when it did not answer.
#[derive(Clone, Debug)]
pub struct BrokerReport {
    /// The broker.
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// The controller leader it knows of.
    pub controller: Option<NodeId>,
    /// Its controller replica is recovering.
    pub controller_recovering: bool,
    /// Its controller replica's term (0 when it did not answer).
    pub controller_term: Term,
    /// Its replicas, if it answered.
    pub replicas: Option<Vec<ReplicaReport>>,
}

/// A partition's health in the merged view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionHealth {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Leader, if one reported leading.
    pub leader: Option<NodeId>,
    /// Assigned replicas.
    pub replicas: Vec<NodeId>,
    /// Replicas down, out of sync, unknown to the leader, recovering or
    /// failed.
    pub lagging: Vec<NodeId>,
    /// Replicas recovering from a lost or damaged disk.
    pub recovering: Vec<NodeId>,
    /// Replicas whose storage failed.
    pub failed: Vec<NodeId>,
    /// The leader's high watermark.
    pub high_watermark: Offset,
}

/// The whole cluster as the asked broker sees it.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// Cluster id.
    pub cluster_id: String,
    /// The controller's leader.
    pub controller: Option<NodeId>,
    /// Brokers: id, address, whether it answered, whether its controller
    /// replica is recovering.
    pub brokers: Vec<(NodeId, String, bool, bool)>,
    /// Every partition.
    pub partitions: Vec<PartitionHealth>,
}

impl ClusterView {
    /// Partitions with a lagging replica.
    pub fn under_replicated(&self) -> usize {
        self.partitions.iter().filter(|p| !p.lagging.is_empty()).count()
    }
}

/// This broker's report of the replicas it hosts.
pub fn local_report(node: &Node) -> Vec<ReplicaReport> {
    node.all_partitions()
        .iter()
        .map(|p| {
            let s = p.status();
            ReplicaReport {
                topic: p.topic().to_string(),
                partition: p.id(),
                leader: s.leader,
                term: s.term,
                is_leader: s.is_leader,
                last_index: s.last_index,
                high_watermark: p.high_watermark(),
                replicas: s
                    .replicas
                    .iter()
                    .map(|r| ReplicaLag {
                        node: r.node,
                        lag: s.last_index.since(r.matched),
                        in_sync: in_sync(s.last_index, r),
                    })
                    .collect(),
                recovering: s.recovering,
                failed: s.failed,
            }
        })
        .collect()
}

/// The wire form of a report (`Peer/LocalStatus`).
pub fn report_to_proto(node: &Node, replicas: Vec<ReplicaReport>) -> pb::LocalStatusResponse {
    pb::LocalStatusResponse {
        node_id: node.id().get(),
        controller_id: node.controller_leader().map_or(0, NodeId::get),
        controller_recovering: node.controller_status().recovering,
        controller_term: node.controller_status().term.get(),
        groups: replicas
            .into_iter()
            .map(|r| pb::LocalGroupStatus {
                topic: r.topic,
                partition: r.partition,
                leader: r.leader.map_or(0, NodeId::get),
                term: r.term.get(),
                is_leader: r.is_leader,
                last_index: r.last_index.get(),
                high_watermark: r.high_watermark.get(),
                replicas: r
                    .replicas
                    .into_iter()
                    .map(|l| pb::ReplicaLag {
                        node_id: l.node.get(),
                        lag: l.lag,
                        in_sync: l.in_sync,
                    })
                    .collect(),
                recovering: r.recovering,
                failed: r.failed,
            })
            .collect(),
    }
}

fn report_from_proto(r: pb::LocalStatusResponse) -> (Option<NodeId>, bool, Term, Vec<ReplicaReport>) {
    let controller = (r.controller_id != 0).then_some(NodeId(r.controller_id));
    let controller_recovering = r.controller_recovering;
    let controller_term = Term(r.controller_term);
    let replicas = r
        .groups
        .into_iter()
        .map(|g| ReplicaReport {
            topic: g.topic,
            partition: g.partition,
            leader: (g.leader != 0).then_some(NodeId(g.leader)),
            term: Term(g.term),
            is_leader: g.is_leader,
            last_index: RaftIndex(g.last_index),
            high_watermark: Offset(g.high_watermark),
            replicas: g
                .replicas
                .into_iter()
                .map(|l| ReplicaLag {
                    node: NodeId(l.node_id),
                    lag: l.lag,
                    in_sync: l.in_sync,
                })
                .collect(),
            recovering: g.recovering,
            failed: g.failed,
        })
        .collect();
    (controller, controller_recovering, controller_term, replicas)
}

async fn ask(dialer: &Dialer, addr: String, request: pb::LocalStatusRequest) -> Option<pb::LocalStatusResponse> {
    let endpoint = Security::endpoint(&addr)
        .ok()?
        .connect_timeout(PEER_TIMEOUT)
        .timeout(PEER_TIMEOUT);
    let channel = dialer.connect(endpoint).await.ok()?;
    let r = pb::peer_client::PeerClient::new(channel)
        .local_status(request)
        .await
        .ok()?;
    Some(r.into_inner())
}

/// The leading replica's report per partition (highest term wins).
pub fn leaders(reports: &[BrokerReport]) -> HashMap<(String, u32), ReplicaReport> {
    let mut out: HashMap<(String, u32), ReplicaReport> = HashMap::new();
    for r in reports.iter().filter_map(|b| b.replicas.as_ref()).flatten() {
        if !r.is_leader {
            continue;
        }
        let key = (r.topic.clone(), r.partition);
        if out.get(&key).is_none_or(|cur| cur.term < r.term) {
            out.insert(key, r.clone());
        }
    }
    out
}

impl Admin {
    /// Every broker's report (those that did not answer have none).
    pub async fn gather(&self) -> Vec<BrokerReport> {
        let node = &self.node;
        let asks = node.brokers().into_iter().map(|(id, addr)| async move {
            if id == node.id() {
                return BrokerReport {
                    node: id,
                    addr: node.advertised_addr().to_string(),
                    controller: node.controller_leader(),
                    controller_recovering: node.controller_status().recovering,
                    controller_term: node.controller_status().term,
                    replicas: Some(local_report(node)),
                };
            }
            let request = pb::LocalStatusRequest {
                cluster_id: node.cluster_id().to_string(),
                from: node.id().get(),
            };
            let answer = ask(node.security().dialer(), addr.clone(), request)
                .await
                .map(report_from_proto);
            BrokerReport {
                node: id,
                addr,
                controller: answer.as_ref().and_then(|(c, _, _, _)| *c),
                controller_recovering: answer.as_ref().is_some_and(|(_, r, _, _)| *r),
                controller_term: answer.as_ref().map_or(Term(0), |(_, _, t, _)| *t),
                replicas: answer.map(|(_, _, _, r)| r),
            }
        });
        futures::future::join_all(asks).await
    }

    /// Brokers, controller, and every partition's leader and lagging
    /// replicas.
    pub async fn cluster_status(&self) -> ClusterView {
        let reports = self.gather().await;
        let up: HashMap<NodeId, bool> = reports.iter().map(|b| (b.node, b.replicas.is_some())).collect();
        let leaders = leaders(&reports);
        // Each replica's own word on whether it recovers or failed.
        let mut own: HashMap<(String, u32, NodeId), (bool, bool)> = HashMap::new();
        for b in &reports {
            for r in b.replicas.iter().flatten() {
                own.insert((r.topic.clone(), r.partition, b.node), (r.recovering, r.failed));
            }
        }
        let mut partitions = Vec::new();
        for t in self.node.metadata().topics.values() {
            for (p, replicas) in t.assignment.iter().enumerate() {
                let lead = leaders.get(&(t.meta.name.clone(), p as u32));
                let state = |r: &NodeId| {
                    own.get(&(t.meta.name.clone(), p as u32, *r))
                        .copied()
                        .unwrap_or_default()
                };
                let recovering: Vec<NodeId> = replicas.iter().copied().filter(|r| state(r).0).collect();
                let failed: Vec<NodeId> = replicas.iter().copied().filter(|r| state(r).1).collect();
                let lagging = replicas
                    .iter()
                    .copied()
                    .filter(|r| {
                        let down = !up.get(r).copied().unwrap_or(false);
                        let behind = match lead {
                            Some(l) => l.replicas.iter().find(|x| x.node == *r).is_none_or(|x| !x.in_sync),
                            None => true,
                        };
                        down || behind || recovering.contains(r) || failed.contains(r)
                    })
                    .collect();
                partitions.push(PartitionHealth {
                    topic: t.meta.name.clone(),
                    partition: p as u32,
                    leader: lead.and_then(|l| l.leader),
                    replicas: replicas.clone(),
                    lagging,
                    recovering,
                    failed,
                    high_watermark: lead.map_or(Offset::ZERO, |l| l.high_watermark),
                });
            }
        }
        let controller = self
            .node
            .controller_leader()
            .or_else(|| reports.iter().find_map(|b| b.controller));
        ClusterView {
            cluster_id: self.node.cluster_id().to_string(),
            controller,
            brokers: reports
                .iter()
                .map(|b| (b.node, b.addr.clone(), b.replicas.is_some(), b.controller_recovering))
                .collect(),
            partitions,
        }
    }
}
