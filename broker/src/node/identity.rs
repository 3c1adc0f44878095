//! This node's identity, in `<data_dir>/node.json`: node id, the peer list it
//! was started with, and the cluster id. Written once when the data
//! directory is created, atomically (write, fsync, rename, fsync the
//! directory).
//!
//! The cluster id is random and generated once, when the cluster is
//! created: by a broker of one, by the lowest-numbered founder of a
//! `--peers` cluster (the others ask it over `Peer/Identity`), and given to
//! a joining broker by the cluster. Every peer RPC carries it, so brokers of
//! two clusters (or a founder whose data directory was recreated) never
//! exchange Raft messages.
//!
//! A broker refuses to start when its flags disagree with the stored
//! identity: joining another cluster's data, or serving this data under
//! another node id, would break Raft's assumptions silently.

use std::collections::BTreeMap;
use std::path::Path;

use rand::RngCore;
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
    /// The cluster's id, generated once when the cluster was created.
    pub cluster_id: String,
    /// This data directory's id, random, written when it was created (as
    /// Kafka's directory ids): the cluster records it, so a broker that
    /// comes back with another disk under the same node id is known to
    /// have lost what it held.
    #[serde(default)]
    pub incarnation: String,
}

/// A new cluster id: 128 random bits, hex.
pub fn new_cluster_id() -> String {
    random_id()
}

/// A new data directory incarnation: 128 random bits, hex.
pub fn new_incarnation() -> String {
    random_id()
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The founder that generates a `--peers` cluster's id: the lowest id.
pub fn id_maker(peers: &BTreeMap<NodeId, String>) -> Option<NodeId> {
    peers.keys().next().copied()
}

/// Loads `node.json` and checks it against the flags; `None` when the data
/// directory has none yet.
///
/// # Errors
/// [`BrokerError::DataDir`] when it belongs to another node or peer list, or
/// is unreadable.
pub fn load_checked(
    data_dir: &Path,
    node_id: NodeId,
    peers: &BTreeMap<NodeId, String>,
) -> Result<Option<NodeIdentity>> {
    let Some(mut stored) = load(data_dir)? else {
        return Ok(None);
    };
    if stored.incarnation.is_empty() {
        // Written before directories had incarnations: this one gets its
        // own now.
        stored.incarnation = new_incarnation();
        store(&data_dir.join(FILE), &stored)?;
    }
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
    Ok(Some(stored))
}

/// Writes `node.json` for a data directory that has none.
///
/// # Errors
/// [`BrokerError::Metadata`] when the directory or file cannot be written.
pub fn create(data_dir: &Path, identity: &NodeIdentity) -> Result<()> {
    std::fs::create_dir_all(data_dir).map_err(|source| BrokerError::Metadata {
        op: "create data dir",
        path: data_dir.to_path_buf(),
        source,
    })?;
    store(&data_dir.join(FILE), identity)
}

/// The stored identity, if the data directory has one.
///
/// # Errors
/// [`BrokerError::DataDir`] when it is unreadable.
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
    let bytes = serde_json::to_vec_pretty(id).map_err(|e| BrokerError::Metadata {
        op: "encode",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(strand_storage::replace_file(path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> BTreeMap<NodeId, String> {
        [(NodeId(2), "b:1".to_string()), (NodeId(1), "a:1".to_string())].into()
    }

    #[test]
    fn cluster_ids_are_random_and_the_lowest_founder_makes_it() {
        let (a, b) = (new_cluster_id(), new_cluster_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(id_maker(&peers()), Some(NodeId(1)));
        assert_eq!(id_maker(&BTreeMap::new()), None);
    }

    #[test]
    fn a_stored_identity_is_checked_against_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_checked(dir.path(), NodeId(1), &peers()).unwrap(), None);
        let id = NodeIdentity {
            node_id: NodeId(1),
            peers: peers(),
            cluster_id: new_cluster_id(),
            incarnation: new_incarnation(),
        };
        create(dir.path(), &id).unwrap();
        assert_eq!(load_checked(dir.path(), NodeId(1), &peers()).unwrap(), Some(id));
        assert!(matches!(
            load_checked(dir.path(), NodeId(2), &peers()),
            Err(BrokerError::DataDir { .. })
        ));
        assert!(matches!(
            load_checked(dir.path(), NodeId(1), &BTreeMap::new()),
            Err(BrokerError::DataDir { .. })
        ));
    }
}
