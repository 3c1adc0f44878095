//! Client quotas, as Kafka's: byte rates of produce and fetch and a request
//! rate, per principal, with a default for principals without their own.
//! Replicated in the controller's metadata; each broker enforces them on
//! its own traffic (`security::quota`) by delaying responses.
//!
//! Pure data: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The entity whose limits apply to every principal without its own.
pub const DEFAULT_ENTITY: &str = "<default>";

/// Limits of one entity; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Bytes of record batches produced per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produce_bytes_per_sec: Option<u64>,
    /// Bytes of records fetched per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_bytes_per_sec: Option<u64>,
    /// Requests per second, of every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_sec: Option<u64>,
}

impl QuotaLimits {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.produce_bytes_per_sec.is_none() && self.fetch_bytes_per_sec.is_none() && self.requests_per_sec.is_none()
    }
}

/// Every entity's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaSet {
    limits: BTreeMap<String, QuotaLimits>,
}

impl QuotaSet {
    /// Sets `entity`'s limits (unlimited removes it); returns whether that
    /// changed anything.
    pub fn set(&mut self, entity: &str, limits: QuotaLimits) -> bool {
        if limits.is_unlimited() {
            return self.limits.remove(entity).is_some();
        }
        self.limits.insert(entity.to_string(), limits) != Some(limits)
    }

    /// The limits that apply to `principal`: its own, else the default.
    pub fn for_principal(&self, principal: &str) -> QuotaLimits {
        self.limits
            .get(principal)
            .or_else(|| self.limits.get(DEFAULT_ENTITY))
            .copied()
            .unwrap_or_default()
    }

    /// Every entity with limits.
    pub fn list(&self) -> Vec<(String, QuotaLimits)> {
        self.limits.iter().map(|(e, l)| (e.clone(), *l)).collect()
    }

    /// Whether no entity has limits.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_gets_its_own_limits_else_the_default() {
        let mut q = QuotaSet::default();
        assert!(q.for_principal("User:a").is_unlimited());
        let default = QuotaLimits {
            produce_bytes_per_sec: Some(1_000),
            ..QuotaLimits::default()
        };
        let greedy = QuotaLimits {
            produce_bytes_per_sec: Some(10),
            requests_per_sec: Some(5),
            ..QuotaLimits::default()
        };
        assert!(q.set(DEFAULT_ENTITY, default));
        assert!(q.set("User:greedy", greedy));
        assert!(!q.set("User:greedy", greedy), "same limits change nothing");
        assert_eq!(q.for_principal("User:greedy"), greedy);
        assert_eq!(q.for_principal("User:other"), default);
        assert!(q.set("User:greedy", QuotaLimits::default()), "unlimited removes");
        assert_eq!(q.for_principal("User:greedy"), default);
        assert_eq!(q.list().len(), 1);
    }
}
