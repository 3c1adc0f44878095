//! Security counters at scrape time: failed TLS handshakes (clients without
//! a valid certificate, plaintext clients) and authorization denials per
//! principal.

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrincipalLabel {
    principal: String,
}

/// Encodes `strand_tls_handshake_failures_total` and
/// `strand_authorization_denied_total{principal}`.
pub(super) fn encode(
    e: &mut DescriptorEncoder,
    handshake_failures: u64,
    denials: &[(String, u64)],
) -> Result<(), std::fmt::Error> {
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
    Ok(())
}
