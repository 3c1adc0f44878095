//! Which partition rows a text listing shows: every one of a small topic or
//! cluster, and of a large one (thousands of partitions) only the ones that
//! need attention, after per-topic totals, so a terminal gets a summary, not
//! pages. `--partition` picks rows; `--all` lists every one.

use clap::Args;

/// Listings longer than this many rows are summarized.
pub const FULL_LISTING_ROWS: usize = 100;

/// Partition selection flags shared by `topic describe` and `cluster status`.
#[derive(Debug, Args, Clone, Default)]
pub struct PartitionFilter {
    /// Show only these partitions (repeatable, or `1,5,9`).
    #[arg(long = "partition", value_delimiter = ',')]
    pub partitions: Vec<u32>,
    /// List every partition, however many (text output).
    #[arg(long)]
    pub all: bool,
}

/// What to list of `rows` (each: partition number, needs attention).
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    /// Indexes into the rows, in order.
    pub shown: Vec<usize>,
    /// Rows left out because the listing is summarized.
    pub hidden: usize,
}

impl PartitionFilter {
    /// Whether partition `p` passes the `--partition` filter.
    pub fn wants(&self, p: u32) -> bool {
        self.partitions.is_empty() || self.partitions.contains(&p)
    }

    /// The rows to print: those `--partition` names; else all of a short
    /// listing (or with `--all`); else the first [`FULL_LISTING_ROWS`] that
    /// need attention.
    pub fn select(&self, rows: &[(u32, bool)]) -> Selection {
        let wanted: Vec<usize> = (0..rows.len()).filter(|&i| self.wants(rows[i].0)).collect();
        if !self.partitions.is_empty() || self.all || wanted.len() <= FULL_LISTING_ROWS {
            return Selection {
                shown: wanted,
                hidden: 0,
            };
        }
        let shown: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| rows[i].1)
            .take(FULL_LISTING_ROWS)
            .collect();
        Selection {
            hidden: wanted.len() - shown.len(),
            shown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_listings_are_whole_long_ones_show_what_needs_attention() {
        let small: Vec<(u32, bool)> = (0..10).map(|p| (p, false)).collect();
        assert_eq!(PartitionFilter::default().select(&small).shown.len(), 10);
        let big: Vec<(u32, bool)> = (0..10_000).map(|p| (p, p == 7 || p == 9_000)).collect();
        let s = PartitionFilter::default().select(&big);
        assert_eq!(s.shown, vec![7, 9_000]);
        assert_eq!(s.hidden, 9_998);
        let all = PartitionFilter {
            all: true,
            ..Default::default()
        };
        assert_eq!(all.select(&big).shown.len(), 10_000);
        let picked = PartitionFilter {
            partitions: vec![3, 4_000],
            ..Default::default()
        };
        assert_eq!(picked.select(&big).shown, vec![3, 4_000]);
    }
}
