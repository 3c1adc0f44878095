//! The broker's persistent metadata: cluster identity and the topic list,
//! in `<data_dir>/metadata.json`, replaced atomically (write, fsync, rename,
//! fsync the directory) so a crash leaves the old or the new file, never half.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::topic::TopicMeta;

const FILE: &str = "metadata.json";

/// Contents of `metadata.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Random id given to the data directory when it was created.
    pub cluster_id: String,
    /// The node id this directory belongs to.
    pub node_id: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
}

/// Loads and stores [`Metadata`].
#[derive(Debug)]
pub struct MetadataStore {
    dir: PathBuf,
}

impl MetadataStore {
    /// A store for `data_dir` (created if missing).
    pub fn new(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| BrokerError::Metadata {
            op: "create data dir",
            path: data_dir.to_path_buf(),
            source,
        })?;
        Ok(MetadataStore {
            dir: data_dir.to_path_buf(),
        })
    }

    /// Loads the metadata, or creates it for `node_id` with a new cluster id.
    ///
    /// # Errors
    /// [`BrokerError::DataDir`] if the file belongs to another node id or
    /// does not parse: the broker must not adopt another broker's data.
    pub fn load_or_init(&self, node_id: u64) -> Result<Metadata> {
        let path = self.dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let m: Metadata = serde_json::from_slice(&bytes).map_err(|e| BrokerError::DataDir {
                    path: path.clone(),
                    reason: format!("unreadable metadata: {e}"),
                })?;
                if m.node_id != node_id {
                    return Err(BrokerError::DataDir {
                        path: self.dir.clone(),
                        reason: format!("it belongs to node {} but this broker is node {node_id}", m.node_id),
                    });
                }
                Ok(m)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let m = Metadata {
                    cluster_id: new_cluster_id(),
                    node_id,
                    topics: BTreeMap::new(),
                };
                self.store(&m)?;
                Ok(m)
            }
            Err(source) => Err(BrokerError::Metadata {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Replaces the file atomically and durably.
    pub fn store(&self, m: &Metadata) -> Result<()> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| BrokerError::Metadata { op, path: p, source }
        };
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| BrokerError::Metadata {
            op: "encode",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync dir", &self.dir))?;
        Ok(())
    }
}

fn new_cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
