//! How a broker whose data directory is empty learns its cluster: a
//! founder asks the other founders (`Peer/Identity`), a joining broker asks
//! any broker to admit it (`Admin/JoinCluster`). Either answer also says
//! whether the cluster already knew this node id with a registered data
//! directory: then this directory replaced one that was lost, and every
//! replica here must recover before it votes.
//!
//! The cluster id is made once: by a broker of one, or by the lowest-numbered
//! founder when no other founder has one yet (at creation the others wait
//! for it, since they have nothing to answer with).

use std::collections::BTreeMap;
use std::time::Duration;

use strand_cluster::NodeId;

use super::identity;
use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use strand_security::Dialer;

/// How long a founder creating its data directory waits for a founder that
/// knows the cluster id to answer (brokers of a new cluster start in any
/// order).
const FOUNDING_WAIT: Duration = Duration::from_secs(300);

/// What a broker with an empty data directory learned.
#[derive(Clone, Debug)]
pub(super) struct Discovered {
    /// The cluster's id.
    pub(super) cluster_id: String,
    /// The brokers the cluster was formed with.
    pub(super) founders: BTreeMap<NodeId, String>,
    /// The cluster had registered a data directory for this node id before:
    /// this one replaces a lost disk.
    pub(super) known: bool,
}

fn endpoint(addr: &str, key: &str, config: &BrokerConfig) -> Result<tonic::transport::Endpoint> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BrokerError::InvalidConfig {
            key: key.into(),
            reason: format!("bad address {addr:?}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(2))
        .timeout(config.request_timeout().min(Duration::from_secs(5))))
}

/// One founder's answer, `None` when it could not give one (not started,
/// or starting itself).
async fn ask_founder(addr: &str, me: NodeId, config: &BrokerConfig, dialer: &Dialer) -> Result<Option<(String, bool)>> {
    use strand_proto::v1::{IdentityRequest, peer_client::PeerClient};
    let Ok(channel) = dialer.connect(endpoint(addr, "peers", config)?).await else {
        return Ok(None);
    };
    match PeerClient::new(channel)
        .identity(IdentityRequest { from: me.get() })
        .await
    {
        Ok(resp) => {
            let r = resp.into_inner();
            Ok((!r.cluster_id.is_empty()).then_some((r.cluster_id, r.known)))
        }
        Err(status) if status.code() == tonic::Code::PermissionDenied => Err(BrokerError::DataDir {
            path: config.data_dir.clone(),
            reason: format!(
                "the broker at {addr} refused to tell its cluster id: {}",
                status.message()
            ),
        }),
        Err(_) => Ok(None),
    }
}

/// A founder with an empty data directory: the cluster id from any founder
/// that has one, or a new one when this is the lowest-numbered founder and
/// none has.
pub(super) async fn founding(
    me: NodeId,
    founders: &BTreeMap<NodeId, String>,
    config: &BrokerConfig,
    dialer: &Dialer,
) -> Result<Discovered> {
    let others: Vec<(NodeId, String)> = founders
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    let made_here = identity::id_maker(founders).is_none_or(|maker| maker == me);
    let deadline = tokio::time::Instant::now() + FOUNDING_WAIT;
    let mut waiting_logged = false;
    loop {
        let answers =
            futures::future::join_all(others.iter().map(|(_, addr)| ask_founder(addr, me, config, dialer))).await;
        let mut found: Option<(String, bool)> = None;
        for (answer, (id, _)) in answers.into_iter().zip(&others) {
            let Some((cluster_id, known)) = answer? else { continue };
            match &mut found {
                Some((seen, k)) if *seen == cluster_id => *k |= known,
                Some((seen, _)) => {
                    return Err(BrokerError::DataDir {
                        path: config.data_dir.clone(),
                        reason: format!(
                            "founders disagree on the cluster id ({seen} and, from node {id}, {cluster_id})"
                        ),
                    });
                }
                None => found = Some((cluster_id, known)),
            }
        }
        if let Some((cluster_id, known)) = found {
            tracing::info!(node = %me, cluster = %cluster_id, known, "learned the cluster id from the other founders");
            return Ok(Discovered {
                cluster_id,
                founders: founders.clone(),
                known,
            });
        }
        if made_here {
            let cluster_id = identity::new_cluster_id();
            tracing::info!(node = %me, cluster = %cluster_id, "created the cluster id");
            return Ok(Discovered {
                cluster_id,
                founders: founders.clone(),
                known: false,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::DataDir {
                path: config.data_dir.clone(),
                reason: format!(
                    "no founder answered with the cluster id within {} s (the lowest-numbered founder creates it and must be started)",
                    FOUNDING_WAIT.as_secs()
                ),
            });
        }
        if !waiting_logged {
            tracing::info!(node = %me, "waiting for a founder that knows the cluster id (the lowest-numbered one creates it)");
            waiting_logged = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks a running cluster (through any of `seeds`) to admit this broker.
pub(super) async fn join_cluster(
    seeds: &str,
    node_id: NodeId,
    addr: &str,
    config: &BrokerConfig,
    dialer: &Dialer,
) -> Result<Discovered> {
    use strand_proto::v1::{JoinClusterRequest, admin_client::AdminClient};
    let seeds: Vec<&str> = seeds.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let deadline = tokio::time::Instant::now() + config.request_timeout();
    let mut last = String::from("no seed broker given");
    loop {
        for seed in &seeds {
            let channel = match dialer.connect(endpoint(seed, "join", config)?).await {
                Ok(c) => c,
                Err(e) => {
                    last = format!("{seed}: {e}");
                    continue;
                }
            };
            let req = JoinClusterRequest {
                node_id: node_id.get(),
                addr: addr.to_string(),
            };
            match AdminClient::new(channel).join_cluster(req).await {
                Ok(resp) => {
                    let r = resp.into_inner();
                    tracing::info!(node = %node_id, via = %seed, cluster = %r.cluster_id, known = r.known, "joined the cluster");
                    return Ok(Discovered {
                        cluster_id: r.cluster_id,
                        founders: r.founders.into_iter().map(|b| (NodeId(b.node_id), b.addr)).collect(),
                        known: r.known,
                    });
                }
                Err(status) => {
                    let e = BrokerError::from(status);
                    if e.code() == strand_proto::v1::ErrorCode::InvalidRequest {
                        // Refused (e.g. the node id is taken): retrying cannot help.
                        return Err(e);
                    }
                    last = format!("{seed}: {e}");
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::DataDir {
                path: config.data_dir.clone(),
                reason: format!("could not join the cluster through {seeds:?}: {last}"),
            });
        }
        // The seeds may still be starting: try again shortly.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
