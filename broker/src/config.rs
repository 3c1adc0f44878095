//! Broker settings: a TOML file (`--config strand.toml`) whose keys the
//! command-line flags override. Every field has a documented default.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strand_cluster::NodeId;
use strand_storage::LogConfig;

use crate::error::{BrokerError, Result};
pub use crate::security::config::{ClientAuthMode, SecurityConfig};

/// Settings of one broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id in the cluster. Default 1.
    pub node_id: u64,
    /// Where topic metadata and partition logs live. Default `./strand-data`.
    pub data_dir: PathBuf,
    /// Address the gRPC server binds. Default `127.0.0.1:9292`.
    pub listen: String,
    /// Address clients and peers are told to use for this broker; default:
    /// the bound listen address.
    pub advertised_addr: Option<String>,
    /// Every broker of the cluster as `id@host:port`, this one included.
    /// Empty: a single-broker cluster of this node alone.
    pub peers: Vec<String>,
    /// Join a running cluster through these brokers (`host:port[,…]`)
    /// instead of forming one with `peers`. Default: none.
    pub join: Option<String>,
    /// One Raft tick (ms); elections start after 10–20 ticks without a
    /// leader. Default 100.
    pub raft_tick_ms: u64,
    /// How often a leader checks whether the preferred replica (the first of
    /// the assignment) is back in sync and hands leadership to it, so leaders
    /// stay spread after failures (ms). Default 30 s.
    pub leader_balance_interval_ms: u64,
    /// Address of the HTTP endpoint serving `/metrics` (Prometheus text),
    /// `/health/live` and `/health/ready`. Default: off.
    pub metrics_listen: Option<String>,
    /// Limits that keep one client from exhausting the broker.
    pub limits: Limits,
    /// Log settings of new topics (topic configs override them per topic).
    pub log: LogConfig,
    /// How often retention runs over every partition (ms). Default 5 minutes.
    pub retention_check_interval_ms: u64,
    /// Smallest gap between two fsyncs of one partition (ms). 0 (default)
    /// syncs as soon as the previous sync ends: group commit, where one
    /// fsync covers every batch that arrived while the last one ran.
    pub min_fsync_interval_ms: u64,
    /// Consumer groups.
    pub groups: GroupConfig,
    /// TLS and client authentication.
    pub security: SecurityConfig,
}

/// Consumer-group coordinator settings (Kafka's names in parentheses).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Partitions of `__consumer_offsets`, fixed when it is first created
    /// (`offsets.topic.num.partitions`). Default 8.
    pub offsets_partitions: u32,
    /// Its replication factor, capped by the brokers of the cluster
    /// (`offsets.topic.replication.factor`). Default 3.
    pub offsets_replication_factor: u32,
    /// The first rebalance of an empty group waits this long so consumers
    /// started together join one generation
    /// (`group.initial.rebalance.delay.ms`). Default 3 s.
    pub initial_rebalance_delay_ms: u64,
    /// Allowed member session timeouts (`group.min/max.session.timeout.ms`).
    /// Default 1 s ..= 5 min.
    pub min_session_timeout_ms: u64,
    /// See `min_session_timeout_ms`.
    pub max_session_timeout_ms: u64,
    /// How often members are told to heartbeat (ms). Default 1 s; never more
    /// than a third of a member's session timeout.
    pub heartbeat_interval_ms: u64,
    /// How long a share-group member holds a record it acquired, unless it
    /// asks otherwise (`group.share.record.lock.duration.ms`). Default 30 s.
    pub share_record_lock_duration_ms: u64,
    /// The longest lock a member may ask for. Default 5 min.
    pub share_max_record_lock_duration_ms: u64,
    /// Deliveries of a record before it is archived to the dead-letter
    /// topic (`group.share.delivery.count.limit`). Default 5.
    pub share_delivery_count_limit: u32,
    /// Records read and not done per share-partition, at most
    /// (`group.share.partition.max.record.locks`): acquiring new records
    /// waits while the window is full. Default 2,000.
    pub share_partition_max_record_locks: u64,
    /// A share-group member that sends nothing this long leaves the group
    /// and its records are released, unless it asks otherwise
    /// (`group.share.session.timeout.ms`). Default 45 s.
    pub share_session_timeout_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_partitions: 8,
            offsets_replication_factor: 3,
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 300_000,
            heartbeat_interval_ms: 1_000,
            share_record_lock_duration_ms: 30_000,
            share_max_record_lock_duration_ms: 300_000,
            share_delivery_count_limit: 5,
            share_partition_max_record_locks: 2_000,
            share_session_timeout_ms: 45_000,
        }
    }
}

/// Resource limits of the gRPC server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest gRPC message decoded or encoded (bytes). Default 16 MiB.
    pub max_message_bytes: usize,
    /// Open client connections; more are closed at accept. Default 1024.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection. Default 256.
    pub max_concurrent_streams: u32,
    /// Deadline of a unary request (ms). Default 30 s.
    pub request_timeout_ms: u64,
    /// HTTP/2 keep-alive ping interval (ms). Default 10 s.
    pub keepalive_interval_ms: u64,
    /// Close a connection whose keep-alive ping is not answered in this long
    /// (ms). Default 20 s.
    pub keepalive_timeout_ms: u64,
    /// Longest long-poll a fetch may ask for (ms). Default 10 s.
    pub max_fetch_wait_ms: u64,
    /// Refuse records stamped more than this far ahead of the broker clock
    /// (ms). Default 1 hour.
    pub max_future_timestamp_ms: u64,
    /// Time a produce with acks=all waits for durability (ms) when the request
    /// does not say. Default 30 s.
    pub produce_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 << 20,
            max_connections: 1024,
            max_concurrent_streams: 256,
            request_timeout_ms: 30_000,
            keepalive_interval_ms: 10_000,
            keepalive_timeout_ms: 20_000,
            max_fetch_wait_ms: 10_000,
            max_future_timestamp_ms: 3_600_000,
            produce_timeout_ms: 30_000,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: PathBuf::from("./strand-data"),
            listen: "127.0.0.1:9292".into(),
            advertised_addr: None,
            peers: Vec::new(),
            join: None,
            raft_tick_ms: 100,
            leader_balance_interval_ms: 30_000,
            metrics_listen: None,
            limits: Limits::default(),
            log: LogConfig {
                // The broker owns durability with group commit (see
                // `min_fsync_interval_ms`); the log itself never syncs per append.
                fsync: strand_storage::FsyncPolicy::Never,
                ..LogConfig::default()
            },
            retention_check_interval_ms: 300_000,
            min_fsync_interval_ms: 0,
            groups: GroupConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl BrokerConfig {
    /// Reads a TOML file; missing keys keep their defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| BrokerError::Metadata {
            op: "read config",
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| BrokerError::InvalidConfig {
            key: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Checks that the settings are consistent.
    pub fn validate(&self) -> Result<()> {
        self.log.validate()?;
        let bad = |key: &str, reason: &str| {
            Err(BrokerError::InvalidConfig {
                key: key.into(),
                reason: reason.into(),
            })
        };
        let l = &self.limits;
        if l.max_message_bytes < 1024 {
            return bad("limits.max_message_bytes", "must be at least 1024");
        }
        if (l.max_message_bytes as u64) < u64::from(self.log.max_batch_bytes) {
            return bad("limits.max_message_bytes", "must be at least log.max_batch_bytes");
        }
        if l.max_connections == 0 || l.max_concurrent_streams == 0 {
            return bad("limits", "max_connections and max_concurrent_streams must be positive");
        }
        if l.request_timeout_ms == 0 || l.keepalive_interval_ms == 0 || l.keepalive_timeout_ms == 0 {
            return bad("limits", "timeouts must be positive");
        }
        if l.max_fetch_wait_ms >= l.request_timeout_ms {
            return bad("limits.max_fetch_wait_ms", "must be below limits.request_timeout_ms");
        }
        if self.retention_check_interval_ms == 0 {
            return bad("retention_check_interval_ms", "must be positive");
        }
        if self.leader_balance_interval_ms == 0 {
            return bad("leader_balance_interval_ms", "must be positive");
        }
        if self.raft_tick_ms == 0 {
            return bad("raft_tick_ms", "must be positive");
        }
        let g = &self.groups;
        if g.offsets_partitions == 0 || g.offsets_partitions > crate::topic::MAX_PARTITIONS {
            return bad(
                "groups.offsets_partitions",
                "must be positive (and at most the partition limit)",
            );
        }
        if g.offsets_replication_factor == 0 {
            return bad("groups.offsets_replication_factor", "must be positive");
        }
        if g.min_session_timeout_ms == 0 || g.min_session_timeout_ms > g.max_session_timeout_ms {
            return bad(
                "groups.min_session_timeout_ms",
                "must be positive and at most max_session_timeout_ms",
            );
        }
        if g.heartbeat_interval_ms == 0 {
            return bad("groups.heartbeat_interval_ms", "must be positive");
        }
        if self.node_id == 0 {
            return bad("node_id", "must be positive");
        }
        if let Some((key, reason)) = self.security.problem(&self.listen) {
            return bad(key, &reason);
        }
        let peers = self.parsed_peers()?;
        if self.join.is_some() && !peers.is_empty() {
            return bad(
                "join",
                "a broker either forms a cluster (peers) or joins one (join), not both",
            );
        }
        if !peers.is_empty() && !peers.contains_key(&self.node()) {
            return Err(BrokerError::InvalidConfig {
                key: "peers".into(),
                reason: format!("this broker's node id {} is not in the peer list", self.node_id),
            });
        }
        Ok(())
    }

    /// `peers` as node id → address.
    ///
    /// # Errors
    /// `InvalidConfig` for an entry that is not `id@host:port` or a repeated id.
    pub fn parsed_peers(&self) -> Result<std::collections::BTreeMap<NodeId, String>> {
        parse_peers(&self.peers)
    }

    /// This broker's node id, typed.
    pub fn node(&self) -> NodeId {
        NodeId(self.node_id)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.request_timeout_ms)
    }
}

/// Parses `id@host:port` entries (also accepts one comma-separated string).
pub fn parse_peers(entries: &[String]) -> Result<std::collections::BTreeMap<NodeId, String>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in entries
        .iter()
        .flat_map(|e| e.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let bad = |reason: String| BrokerError::InvalidConfig {
            key: "peers".into(),
            reason,
        };
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| bad(format!("{entry:?} is not id@host:port")))?;
        let id: u64 = id
            .parse()
            .map_err(|_| bad(format!("{entry:?}: {id:?} is not a node id")))?;
        if id == 0 {
            return Err(bad(format!("{entry:?}: node ids start at 1")));
        }
        if !addr.contains(':') {
            return Err(bad(format!("{entry:?}: address {addr:?} has no port")));
        }
        if out.insert(NodeId(id), addr.to_string()).is_some() {
            return Err(bad(format!("node id {id} appears twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_entries_are_named() {
        let p = parse_peers(&["1@a:1,2@b:2".into(), "3@c:3".into()]).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&NodeId(2)], "b:2");
        for bad in ["x@a:1", "1a:1", "1@a", "0@a:1", "1@a:1,1@b:2"] {
            assert!(parse_peers(&[bad.into()]).is_err(), "{bad} must be refused");
        }
    }
}
