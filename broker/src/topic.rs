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
pub const TOPIC_CONFIG_KEYS: [&str; 6] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "producer.id.expiration.ms",
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
            "producer.id.expiration.ms" => c.producer_id_expiration_ms = parse_u64(k, v)?,
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

/// A topic's id as clients see it: 128 bits made once when the topic is
/// created (a random UUID, version 4), shown as `8-4-4-4-12` hex. A topic
/// deleted and created again under the same name has another id, so
/// requests and committed offsets that name the id never reach the wrong
/// topic (Kafka's KIP-516).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicUuid([u8; 16]);

impl TopicUuid {
    /// A new random id.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        TopicUuid(b)
    }

    /// The id of a topic created before topics had one, derived from its
    /// cluster-internal id (which is never reused within a cluster).
    pub fn legacy(internal_id: u64) -> Self {
        let mut b = [0u8; 16];
        b[8..].copy_from_slice(&internal_id.to_be_bytes());
        TopicUuid(b)
    }

    /// Parses `8-4-4-4-12` hex (either case).
    pub fn parse(s: &str) -> Option<Self> {
        let groups: Vec<&str> = s.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex: String = groups.concat();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(TopicUuid(b))
    }
}

/// A request's optional topic id: empty is none, anything else must be a
/// UUID (`INVALID_REQUEST` otherwise).
pub fn requested_topic_id(topic: &str, text: &str) -> Result<Option<TopicUuid>> {
    if text.is_empty() {
        return Ok(None);
    }
    TopicUuid::parse(text)
        .map(Some)
        .ok_or_else(|| BrokerError::InvalidRequest {
            reason: format!("topic_id {text:?} (topic {topic:?}) is not a UUID (8-4-4-4-12 hex)"),
        })
}

impl std::fmt::Display for TopicUuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for TopicUuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopicUuid({self})")
    }
}

impl Serialize for TopicUuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicUuid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TopicUuid::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a topic id: {s:?}")))
    }
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

    #[test]
    fn topic_ids_print_and_parse_as_uuids() {
        let id = TopicUuid::random();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4", "version 4");
        assert_eq!(TopicUuid::parse(&text), Some(id));
        assert_eq!(TopicUuid::parse(&text.to_uppercase()), Some(id));
        assert_ne!(TopicUuid::random(), id);
        assert_eq!(TopicUuid::legacy(7).to_string(), "00000000-0000-0000-0000-000000000007");
        for bad in [
            "",
            "7",
            "00000000-0000-0000-0000-00000000000g",
            "000000000000-0000-0000-000000000007",
        ] {
            assert_eq!(TopicUuid::parse(bad), None, "{bad:?}");
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<TopicUuid>(&json).unwrap(), id);
    }
}
