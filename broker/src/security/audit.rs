//! Who was refused: authentication failures (TLS handshakes that failed)
//! and authorization denials per principal, for the metrics, and a log line
//! per principal at most every few seconds (a client retrying in a loop must
//! not flood the log).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strand_security::Principal;

use crate::error::BrokerError;

/// Least time between two log lines about one principal.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Denials {
    count: u64,
    /// Since the last log line.
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// Counts of refusals.
#[derive(Debug, Default)]
pub struct Audit {
    handshake_failures: AtomicU64,
    denials: Mutex<HashMap<String, Denials>>,
    /// Failed password exchanges and bad tokens, per claimed user.
    failures: Mutex<HashMap<String, Denials>>,
}

impl Audit {
    /// A TLS handshake failed: no or a bad certificate, a plaintext client.
    pub fn handshake_failed(&self) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Handshakes that failed so far.
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// `who` was refused with `err`.
    pub fn denied(&self, who: &Principal, err: &BrokerError) {
        let mut denials = self.denials.lock();
        let d = denials.entry(who.to_string()).or_default();
        d.count += 1;
        d.unlogged += 1;
        let now = Instant::now();
        if d.logged_at.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            tracing::warn!(principal = %who, denied = d.unlogged, last = %err, "authorization denied");
            d.logged_at = Some(now);
            d.unlogged = 0;
        }
    }

    /// Authentication as `claimed` failed for `reason`.
    pub fn authentication_failed(&self, claimed: &str, reason: &str) {
        let mut failures = self.failures.lock();
        let d = failures.entry(claimed.to_string()).or_default();
        d.count += 1;
        d.unlogged += 1;
        let now = Instant::now();
        if d.logged_at.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            tracing::warn!(principal = %claimed, failed = d.unlogged, reason, "authentication failed");
            d.logged_at = Some(now);
            d.unlogged = 0;
        }
    }

    /// Failed authentications so far per claimed principal.
    pub fn authentication_failures(&self) -> Vec<(String, u64)> {
        self.failures.lock().iter().map(|(p, d)| (p.clone(), d.count)).collect()
    }

    /// Denials so far per principal.
    pub fn denials(&self) -> Vec<(String, u64)> {
        self.denials.lock().iter().map(|(p, d)| (p.clone(), d.count)).collect()
    }
}
