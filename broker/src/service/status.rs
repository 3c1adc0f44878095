//! Cluster status: every broker reports the groups it hosts
//! (`Peer/LocalStatus`); the broker asked merges the reports, taking each
//! partition's leadership and replica lag from the replica that leads it.

use std::collections::HashMap;
use std::time::Duration;

use strand_proto::v1::{
    BrokerStatus, ClusterStatusResponse, LocalGroupStatus, LocalStatusRequest, LocalStatusResponse, PartitionStatus,
    ReplicaLag, peer_client::PeerClient,
};

use crate::state::BrokerState;

/// A replica more than this many Raft entries behind its leader is lagging.
pub const MAX_IN_SYNC_LAG: u64 = 1_000;

/// How long a peer gets to answer a status request.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// This broker's view of the groups it hosts.
pub fn local_status(state: &BrokerState) -> LocalStatusResponse {
    let groups = state
        .all_partitions()
        .iter()
        .map(|p| {
            let s = p.status();
            LocalGroupStatus {
                topic: p.topic().to_string(),
                partition: p.id(),
                leader: s.leader.unwrap_or(0),
                term: s.term,
                is_leader: s.is_leader,
                last_index: s.last_index,
                high_watermark: p.high_watermark(),
                replicas: s
                    .replicas
                    .iter()
                    .map(|r| {
                        let lag = s.last_index.saturating_sub(r.matched);
                        ReplicaLag {
                            node_id: r.node,
                            lag,
                            in_sync: r.active && lag <= MAX_IN_SYNC_LAG,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    LocalStatusResponse {
        node_id: state.node_id,
        controller_id: state.controller_leader().unwrap_or(0),
        groups,
    }
}

async fn ask(addr: String) -> Option<LocalStatusResponse> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(PEER_TIMEOUT)
        .timeout(PEER_TIMEOUT);
    let channel = endpoint.connect().await.ok()?;
    let r = PeerClient::new(channel)
        .local_status(LocalStatusRequest {})
        .await
        .ok()?;
    Some(r.into_inner())
}

/// Every broker's report (`None`: it did not answer).
pub async fn gather(state: &BrokerState) -> Vec<(u64, String, Option<LocalStatusResponse>)> {
    let brokers = state.brokers();
    let asks = brokers.iter().map(|(&id, addr)| {
        let addr = if id == state.node_id {
            state.advertised_addr.clone()
        } else {
            addr.clone()
        };
        async move {
            let view = if id == state.node_id {
                Some(local_status(state))
            } else {
                ask(addr.clone()).await
            };
            (id, addr, view)
        }
    });
    futures::future::join_all(asks).await
}

/// The leading replica's report per partition (highest term wins).
pub fn leaders(views: &[(u64, String, Option<LocalStatusResponse>)]) -> HashMap<(String, u32), LocalGroupStatus> {
    let mut out: HashMap<(String, u32), LocalGroupStatus> = HashMap::new();
    for g in views.iter().filter_map(|(_, _, v)| v.as_ref()).flat_map(|v| &v.groups) {
        if !g.is_leader {
            continue;
        }
        let key = (g.topic.clone(), g.partition);
        if out.get(&key).is_none_or(|cur| cur.term < g.term) {
            out.insert(key, g.clone());
        }
    }
    out
}

/// Brokers, controller, and every partition's leader and lagging replicas.
pub async fn cluster_status(state: &BrokerState) -> ClusterStatusResponse {
    let views = gather(state).await;
    let up: HashMap<u64, bool> = views.iter().map(|(id, _, v)| (*id, v.is_some())).collect();
    let leaders = leaders(&views);
    let mut partitions = Vec::new();
    for t in state.metadata().topics.values() {
        for (p, replicas) in t.assignment.iter().enumerate() {
            let lead = leaders.get(&(t.meta.name.clone(), p as u32));
            let lagging: Vec<u64> = replicas
                .iter()
                .copied()
                .filter(|r| {
                    let down = !up.get(r).copied().unwrap_or(false);
                    let behind = match lead {
                        Some(l) => l.replicas.iter().find(|x| x.node_id == *r).is_none_or(|x| !x.in_sync),
                        None => true,
                    };
                    down || behind
                })
                .collect();
            partitions.push(PartitionStatus {
                topic: t.meta.name.clone(),
                partition: p as u32,
                leader: lead.map_or(0, |l| l.leader),
                replicas: replicas.clone(),
                lagging,
                high_watermark: lead.map_or(0, |l| l.high_watermark),
            });
        }
    }
    let under_replicated = partitions.iter().filter(|p| !p.lagging.is_empty()).count() as u32;
    let controller_id = state
        .controller_leader()
        .or_else(|| {
            views
                .iter()
                .filter_map(|(_, _, v)| v.as_ref())
                .map(|v| v.controller_id)
                .find(|&c| c != 0)
        })
        .unwrap_or(0);
    ClusterStatusResponse {
        cluster_id: state.cluster_id.clone(),
        controller_id,
        brokers: views
            .iter()
            .map(|(id, addr, v)| BrokerStatus {
                node_id: *id,
                addr: addr.clone(),
                up: v.is_some(),
            })
            .collect(),
        partitions,
        under_replicated,
    }
}
