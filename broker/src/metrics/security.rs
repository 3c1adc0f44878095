//! Security counters at scrape time: failed TLS handshakes (clients without
//! a valid certificate, plaintext clients) and authorization denials per
//! principal.

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use crate::security::quota::{QuotaKind, Throttled};

/// The security counters of a scrape.
#[derive(Clone, Debug, Default)]
pub struct SecurityCounts {
    /// TLS handshakes that failed (see `security::audit`).
    pub tls_handshake_failures: u64,
    /// Failed logins and bad tokens per claimed principal.
    pub authentication_failures: Vec<(String, u64)>,
    /// Authorization denials per principal.
    pub authorization_denials: Vec<(String, u64)>,
    /// Quota throttling per principal and kind.
    pub throttled: Vec<(String, QuotaKind, Throttled)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrincipalLabel {
    principal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabel {
    principal: String,
    kind: &'static str,
}

/// Encodes `strand_tls_handshake_failures_total`,
/// `strand_authentication_failures_total{principal}`,
/// `strand_authorization_denied_total{principal}` and the quota counters
/// `strand_quota_throttled_responses_total{principal,kind}` and
/// `strand_quota_throttle_seconds_total{principal,kind}`.
pub(super) fn encode(e: &mut DescriptorEncoder, s: &SecurityCounts) -> Result<(), std::fmt::Error> {
    let (handshake_failures, denials, throttled) = (s.tls_handshake_failures, &s.authorization_denials, &s.throttled);
    let m = e.encode_descriptor(
        "strand_tls_handshake_failures",
        "TLS handshakes that failed: no or an untrusted client certificate, a plaintext client",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(handshake_failures).encode(m)?;
    let mut m = e.encode_descriptor(
        "strand_authorization_denied",
        "Requests refused with AUTHORIZATION_FAILED, per principal",
        None,
        MetricType::Counter,
    )?;
    for (principal, n) in denials {
        let label = PrincipalLabel {
            principal: principal.clone(),
        };
        ConstCounter::new(*n).encode(m.encode_family(&label)?)?;
    }
    let mut m = e.encode_descriptor(
        "strand_authentication_failures",
        "Failed password logins and rejected tokens, per claimed principal",
        None,
        MetricType::Counter,
    )?;
    for (principal, n) in &s.authentication_failures {
        let label = PrincipalLabel {
            principal: principal.clone(),
        };
        ConstCounter::new(*n).encode(m.encode_family(&label)?)?;
    }
    let label = |p: &str, k: QuotaKind| QuotaLabel {
        principal: p.to_string(),
        kind: k.as_str(),
    };
    let mut m = e.encode_descriptor(
        "strand_quota_throttled_responses",
        "Answers delayed because their principal was over a quota, per principal and kind",
        None,
        MetricType::Counter,
    )?;
    for (p, k, t) in throttled {
        ConstCounter::new(t.responses).encode(m.encode_family(&label(p, *k))?)?;
    }
    let mut m = e.encode_descriptor(
        "strand_quota_throttle_seconds",
        "Time answers were delayed by quotas, per principal and kind",
        None,
        MetricType::Counter,
    )?;
    for (p, k, t) in throttled {
        ConstCounter::new(t.seconds).encode(m.encode_family(&label(p, *k))?)?;
    }
    Ok(())
}
