//! What the checker reports: the kinds of anomaly, and a count and the
//! first counterexamples of each.

use std::collections::BTreeMap;
use std::fmt;

/// Kinds of anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Two different records at one partition offset, or an acknowledgement
    /// naming an offset where the log holds another record.
    InconsistentOffset,
    /// Acknowledged but absent from the final log.
    Lost,
    /// Read, although every send of it definitely failed.
    AbortedRead,
    /// One id at more offsets than it was retried.
    Duplicate,
    /// A key's records out of send order, or a record acknowledged before
    /// another was sent stored after it.
    Reorder,
    /// A consumer skipped offsets within one assignment.
    PollGap,
    /// A group's committed offset went backwards without a reset.
    OffsetRegress,
    /// Replicas hold different batches below the high watermark.
    Divergence,
    /// Two brokers led one Raft group in the same term.
    SplitBrain,
    /// A share group handed out a record after an acknowledgement of it
    /// was confirmed.
    ShareRedelivered,
    /// A record's delivery counts did not grow with every delivery.
    ShareCountRegress,
    /// A record of the final log the share group never accepted nor
    /// archived, or a share group that did not reach the end of the log.
    ShareLost,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 12] = [
        Kind::InconsistentOffset,
        Kind::Lost,
        Kind::AbortedRead,
        Kind::Duplicate,
        Kind::Reorder,
        Kind::PollGap,
        Kind::OffsetRegress,
        Kind::Divergence,
        Kind::SplitBrain,
        Kind::ShareRedelivered,
        Kind::ShareCountRegress,
        Kind::ShareLost,
    ];
}

/// Examples kept per kind.
const EXAMPLES: usize = 5;

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    counts: BTreeMap<Kind, usize>,
    examples: BTreeMap<Kind, Vec<String>>,
    /// Sends acknowledged.
    pub acknowledged: usize,
    /// Records in the final log.
    pub read: usize,
    /// Sends that were retries of an id.
    pub retried_sends: usize,
    /// Extra copies of ids in the final log (within what retries allow),
    /// sent by producers without idempotence.
    pub duplicates: usize,
    /// Extra copies of ids sent by idempotent producers (only another
    /// invoke of the same id may make one).
    pub idempotent_duplicates: usize,
    /// Ids sent by idempotent producers.
    pub idempotent_sends: usize,
    /// Sends with an unknown outcome.
    pub unknown: usize,
    /// Acknowledged sends retention removed (below the log start offset).
    pub expired: usize,
    /// Records share-group members were handed (every delivery).
    pub share_deliveries: usize,
    /// Deliveries after the first of a record.
    pub share_redeliveries: usize,
    /// Records archived to the dead-letter topic by a share group.
    pub share_archived: usize,
}

impl Report {
    pub(crate) fn flag(&mut self, kind: Kind, detail: impl FnOnce() -> String) {
        *self.counts.entry(kind).or_default() += 1;
        let ex = self.examples.entry(kind).or_default();
        if ex.len() < EXAMPLES {
            ex.push(detail());
        }
    }

    /// How many anomalies of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// The first counterexamples of `kind`.
    pub fn examples(&self, kind: Kind) -> &[String] {
        self.examples.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// No anomaly of any kind.
    pub fn is_valid(&self) -> bool {
        self.counts.values().all(|n| *n == 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} acknowledged, {} unknown, {} read, {} retried sends, {} duplicates ({} idempotent sends, {} duplicated), {} expired by retention",
            self.acknowledged,
            self.unknown,
            self.read,
            self.retried_sends,
            self.duplicates,
            self.idempotent_sends,
            self.idempotent_duplicates,
            self.expired
        )?;
        if self.share_deliveries > 0 {
            writeln!(
                f,
                "share group: {} deliveries, {} redeliveries, {} archived",
                self.share_deliveries, self.share_redeliveries, self.share_archived
            )?;
        }
        for k in Kind::ALL {
            writeln!(f, "  {k:?}: {}", self.count(k))?;
            for e in self.examples(k) {
                writeln!(f, "    {e}")?;
            }
        }
        Ok(())
    }
}
