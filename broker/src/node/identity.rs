//! This node's identity, in `<data_dir>/node.json`: node id, the peer list it
//! was started with, and the cluster id derived from it. Replaced atomically
//! (write, fsync, rename, fsync the directory).
//!
//! A broker refuses to start when its flags disagree with the stored
//! identity: joining another cluster's data, or serving this data under
//! another node id, would break Raft's assumptions silently.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strand_cluster::NodeId;

use crate::error::{BrokerError, Result};

const FILE: &str = "node.json";

/// Contents of `node.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// This node's id.
    pub node_id: NodeId,
    /// Every broker (id → address) when the data directory was created.
    pub peers: BTreeMap<NodeId, String>,
    /// Derived from the sorted peer list, so every broker of one cluster
    /// computes the same id without talking to the others.
    pub cluster_id: String,
}

/// The cluster id of a peer list: FNV-1a over the sorted `id@addr` entries.
pub fn cluster_id(peers: &BTreeMap<NodeId, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in peers {
        for b in format!("{id}@{addr};").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Loads `node.json`, or creates it; refuses a mismatch.
pub fn load_or_init(data_dir: &Path, node_id: NodeId, peers: &BTreeMap<NodeId, String>) -> Result<NodeIdentity> {
    std::fs::create_dir_all(data_dir).map_err(|source| BrokerError::Metadata {
        op: "create data dir",
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(FILE);
    let wanted = NodeIdentity {
        node_id,
        peers: peers.clone(),
        cluster_id: cluster_id(peers),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: NodeIdentity = serde_json::from_slice(&bytes).map_err(|e| BrokerError::DataDir {
                path: path.clone(),
                reason: format!("unreadable node identity: {e}"),
            })?;
            if stored.node_id != node_id {
                return Err(BrokerError::DataDir {
                    path: data_dir.to_path_buf(),
                    reason: format!(
                        "it belongs to node {} but this broker is node {node_id}",
                        stored.node_id
                    ),
                });
            }
            if stored.peers != *peers {
                return Err(BrokerError::DataDir {
                    path: data_dir.to_path_buf(),
                    reason: format!(
                        "it belongs to the cluster {} of peers {}, not to --peers {}",
                        stored.cluster_id,
                        describe(&stored.peers),
                        describe(peers)
                    ),
                });
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            store(&path, &wanted)?;
            Ok(wanted)
        }
        Err(source) => Err(BrokerError::Metadata {
            op: "read",
            path,
            source,
        }),
    }
}

/// The stored identity, if the data directory has one.
pub fn load(data_dir: &Path) -> Result<Option<NodeIdentity>> {
    let path = data_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| BrokerError::DataDir {
                path,
                reason: format!("unreadable node identity: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BrokerError::Metadata {
            op: "read",
            path,
            source,
        }),
    }
}

fn describe(peers: &BTreeMap<NodeId, String>) -> String {
    peers
        .iter()
        .map(|(i, a)| format!("{i}@{a}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn store(path: &Path, id: &NodeIdentity) -> Result<()> {
    let io = |op: &'static str, p: &Path| {
        let p: PathBuf = p.to_path_buf();
        move |source| BrokerError::Metadata { op, path: p, source }
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(id).map_err(|e| BrokerError::Metadata {
        op: "encode",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(&bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync dir", dir))?;
    }
    Ok(())
}
