//! Topic names and per-topic configs (`key=value`, Kafka's key names).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strand_storage::LogConfig;

use crate::error::{BrokerError, Result};

/// Longest topic name (as Kafka), so `<topic>-<partition>` fits a file name.
pub const MAX_TOPIC_NAME: usize = 249;
/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Topic settings a user may set, by their Kafka names.
pub const TOPIC_CONFIG_KEYS: [&str; 5] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
];

/// What the broker stores about a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Overrides of the broker's log defaults, by Kafka key.
    pub configs: BTreeMap<String, String>,
}

/// Checks a topic name: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or
/// `..` (the same rule as Kafka, so names are safe as directory names).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(BrokerError::InvalidTopic {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.len() > MAX_TOPIC_NAME {
        return bad("the name is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.starts_with("__") {
        return bad("names starting with '__' are reserved for internal topics");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

fn parse_ms_or_forever(key: &str, v: &str) -> Result<Option<u64>> {
    match v.trim().parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n >= 0 => Ok(Some(n as u64)),
        _ => Err(BrokerError::InvalidConfig {
            key: key.into(),
            reason: format!("{v:?} is not a non-negative integer or -1"),
        }),
    }
}

fn parse_u64(key: &str, v: &str) -> Result<u64> {
    v.trim().parse::<u64>().map_err(|_| BrokerError::InvalidConfig {
        key: key.into(),
        reason: format!("{v:?} is not a non-negative integer"),
    })
}

/// The log settings of a topic: the broker defaults with the topic's
/// overrides applied, validated.
pub fn log_config(defaults: &LogConfig, configs: &BTreeMap<String, String>) -> Result<LogConfig> {
    let mut c = defaults.clone();
    for (k, v) in configs {
        match k.as_str() {
            "retention.ms" => c.retention_ms = parse_ms_or_forever(k, v)?,
            "retention.bytes" => c.retention_bytes = parse_ms_or_forever(k, v)?,
            "segment.ms" => c.segment_ms = Some(parse_u64(k, v)?),
            "segment.bytes" => c.segment_bytes = parse_u64(k, v)?,
            "max.message.bytes" => {
                c.max_batch_bytes = u32::try_from(parse_u64(k, v)?).map_err(|_| BrokerError::InvalidConfig {
                    key: k.clone(),
                    reason: "larger than 4 GiB".into(),
                })?
            }
            other => {
                return Err(BrokerError::InvalidConfig {
                    key: other.into(),
                    reason: format!("unknown topic config (known: {})", TOPIC_CONFIG_KEYS.join(", ")),
                });
            }
        }
    }
    c.validate().map_err(|e| BrokerError::InvalidConfig {
        key: "topic config".into(),
        reason: e.to_string(),
    })?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        let long = "x".repeat(250);
        let cases = [
            ("orders", true),
            ("a.b_c-9", true),
            ("", false),
            (".", false),
            ("..", false),
            ("with space", false),
            ("slash/name", false),
            ("__internal", false),
            (long.as_str(), false),
        ];
        for (i, (name, ok)) in cases.into_iter().enumerate() {
            assert_eq!(validate_name(name).is_ok(), ok, "#{i}: {name:?}");
        }
    }

    #[test]
    fn topic_configs_override_defaults_and_unknown_keys_are_refused() {
        let d = LogConfig::default();
        let mut m = BTreeMap::new();
        m.insert("retention.ms".to_string(), "-1".to_string());
        m.insert("segment.bytes".to_string(), "1048576".to_string());
        let c = log_config(&d, &m).unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 1 << 20);
        m.insert("cleanup.policy".to_string(), "compact".to_string());
        assert!(matches!(log_config(&d, &m), Err(BrokerError::InvalidConfig { .. })));
        let mut m = BTreeMap::new();
        m.insert("retention.ms".to_string(), "soon".to_string());
        assert!(matches!(log_config(&d, &m), Err(BrokerError::InvalidConfig { .. })));
    }
}
