//! Enforcing client quotas on this broker: a token bucket per principal
//! and kind, charged with what each request did; a principal over its rate
//! gets its responses delayed by the time its debt takes to pay back (as
//! Kafka throttles: the request is served, the answer waits), which slows a
//! client that waits for answers without failing anything.
//!
//! Invariant: brokers and super users are never throttled (replication and
//! internal reads must not wait behind a client's quota).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Longest delay of one response: a deeper debt is paid by the next ones
/// (and stays under the clients' request timeouts).
pub const MAX_THROTTLE: Duration = Duration::from_secs(5);

/// What a charge counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKind {
    /// Bytes produced.
    Produce,
    /// Bytes fetched.
    Fetch,
    /// Requests.
    Requests,
}

impl QuotaKind {
    /// The label in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Produce => "produce",
            QuotaKind::Fetch => "fetch",
            QuotaKind::Requests => "request",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    /// Units that may be spent now; negative is debt.
    tokens: f64,
    updated: Instant,
}

/// Throttled responses of one principal and kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Throttled {
    /// Responses delayed.
    pub responses: u64,
    /// Their delays, summed (seconds).
    pub seconds: f64,
}

/// Every bucket of this broker.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<(String, QuotaKind), Bucket>>,
    throttled: Mutex<HashMap<(String, QuotaKind), Throttled>>,
}

impl Throttle {
    /// Charges `amount` to `principal`'s bucket of `kind` at `rate` units a
    /// second (one second's worth may be spent at once); returns how long
    /// its response waits.
    pub fn charge(&self, principal: &str, kind: QuotaKind, amount: u64, rate: u64) -> Duration {
        self.charge_at(principal, kind, amount, rate, Instant::now())
    }

    fn charge_at(&self, principal: &str, kind: QuotaKind, amount: u64, rate: u64, now: Instant) -> Duration {
        if rate == 0 {
            return Duration::ZERO;
        }
        let rate = rate as f64;
        let delay = {
            let mut buckets = self.buckets.lock();
            let b = buckets.entry((principal.to_string(), kind)).or_insert(Bucket {
                tokens: rate,
                updated: now,
            });
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(rate) - amount as f64;
            b.updated = now;
            if b.tokens >= 0.0 {
                return Duration::ZERO;
            }
            Duration::from_secs_f64(-b.tokens / rate).min(MAX_THROTTLE)
        };
        let mut t = self.throttled.lock();
        let e = t.entry((principal.to_string(), kind)).or_default();
        e.responses += 1;
        e.seconds += delay.as_secs_f64();
        delay
    }

    /// Throttling so far, per principal and kind.
    pub fn throttled(&self) -> Vec<(String, QuotaKind, Throttled)> {
        self.throttled
            .lock()
            .iter()
            .map(|((p, k), t)| (p.clone(), *k, *t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_over_its_rate_waits_for_its_debt_and_others_do_not() {
        let t = Throttle::default();
        let start = Instant::now();
        // 1,000 bytes/s: the first second's worth is free.
        assert_eq!(
            t.charge_at("User:g", QuotaKind::Produce, 1_000, 1_000, start),
            Duration::ZERO
        );
        // 500 more at once: half a second of debt.
        let d = t.charge_at("User:g", QuotaKind::Produce, 500, 1_000, start);
        assert!((d.as_secs_f64() - 0.5).abs() < 1e-6, "{d:?}");
        // Another principal is not affected.
        assert_eq!(
            t.charge_at("User:o", QuotaKind::Produce, 500, 1_000, start),
            Duration::ZERO
        );
        // After the debt is paid back (and a little), no wait.
        let later = start + Duration::from_millis(600);
        assert_eq!(
            t.charge_at("User:g", QuotaKind::Produce, 50, 1_000, later),
            Duration::ZERO
        );
        // A huge request waits at most MAX_THROTTLE.
        assert_eq!(
            t.charge_at("User:g", QuotaKind::Produce, 1 << 30, 1_000, later),
            MAX_THROTTLE
        );
        let throttled = t.throttled();
        assert_eq!(throttled.len(), 1);
        assert_eq!(throttled[0].2.responses, 2);
    }
}
