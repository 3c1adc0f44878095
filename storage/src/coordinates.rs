//! The numbers that locate things in a log, as distinct types so that they
//! cannot be mixed: a record's [`Offset`] in its partition, and the
//! [`RaftIndex`] and [`Term`] of the Raft entry that carries a batch.
//!
//! A control batch (a Raft entry without records) has a Raft index but takes
//! no offset, so offsets and Raft indexes drift apart as a log ages: code that
//! passed one where the other was meant was a real class of bug.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! log_number {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// Zero.
            pub const ZERO: Self = Self(0);

            /// The plain number.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// The one after this one.
            pub const fn next(self) -> Self {
                Self(self.0 + 1)
            }

            /// `n` after this one.
            pub const fn plus(self, n: u64) -> Self {
                Self(self.0 + n)
            }

            /// How far this one is past `earlier` (0 if it is not).
            pub const fn since(self, earlier: Self) -> u64 {
                self.0.saturating_sub(earlier.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.0
            }
        }
    };
}

log_number! {
    /// A record's position in its partition: the leader assigns consecutive
    /// offsets to the records of the batches it appends, starting at 0.
    Offset
}

log_number! {
    /// The index of a Raft entry in a replicated log (one entry is one stored
    /// batch; 0 when the log is not replicated).
    RaftIndex
}

log_number! {
    /// A Raft term: the election epoch of the leader that appended an entry.
    Term
}

impl Offset {
    /// The offset before this one, or `None` at 0.
    pub const fn prev(self) -> Option<Self> {
        match self.0.checked_sub(1) {
            Some(o) => Some(Offset(o)),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_stays_in_its_own_kind() {
        assert_eq!(Offset(5).since(Offset(7)), 0);
        assert_eq!(Offset(7).since(Offset(5)), 2);
        assert_eq!(RaftIndex(3).next(), RaftIndex(4));
        assert_eq!(Term(2).plus(3), Term(5));
        assert_eq!(Offset(0).prev(), None);
        assert_eq!(Offset(9).to_string(), "9");
    }
}
