//! Contiguous ranges of the 64-bit id hash: what a shard owns.

use serde::{Deserialize, Serialize};

/// A contiguous range of the 64-bit id hash, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HashRange {
    pub first: u64,
    pub last: u64,
}

impl HashRange {
    /// The whole hash space.
    pub const FULL: HashRange = HashRange {
        first: 0,
        last: u64::MAX,
    };

    /// The `n` ranges `shoal_core::routing::shard_of(_, n)` maps to shards `0..n`:
    /// shard `s` holds the hashes `h` with `floor(h * n / 2^64) == s`.
    pub fn even(n: u32) -> Vec<HashRange> {
        let n = u128::from(n.max(1));
        // First hash of shard s: ceil(s * 2^64 / n).
        let start = |s: u128| -> u128 { (s << 64).div_ceil(n) };
        (0..n)
            .map(|s| HashRange {
                first: start(s) as u64,
                last: (start(s + 1) - 1) as u64,
            })
            .collect()
    }

    /// True if `hash` falls in the range.
    pub fn contains(&self, hash: u64) -> bool {
        self.first <= hash && hash <= self.last
    }

    /// How many hashes the range holds, minus one (the full space does not fit a
    /// `u64`).
    pub fn span(&self) -> u64 {
        self.last - self.first
    }

    /// The range cut in two halves of (nearly) equal span, or `None` if it holds a
    /// single hash.
    pub fn halves(&self) -> Option<(HashRange, HashRange)> {
        if self.first == self.last {
            return None;
        }
        let mid = self.first + self.span() / 2;
        Some((
            HashRange {
                first: self.first,
                last: mid,
            },
            HashRange {
                first: mid + 1,
                last: self.last,
            },
        ))
    }
}

impl std::fmt::Display for HashRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}..={:016x}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn halves_cover_the_range_without_overlap(a in any::<u64>(), b in any::<u64>()) {
            let r = HashRange { first: a.min(b), last: a.max(b) };
            match r.halves() {
                None => prop_assert_eq!(r.first, r.last),
                Some((lo, hi)) => {
                    prop_assert_eq!(lo.first, r.first);
                    prop_assert_eq!(hi.last, r.last);
                    prop_assert_eq!(lo.last + 1, hi.first);
                    prop_assert!(lo.first <= lo.last && hi.first <= hi.last);
                    prop_assert!(lo.span().abs_diff(hi.span()) <= 1);
                }
            }
        }
    }

    #[test]
    fn the_full_range_splits_in_the_middle() {
        let (lo, hi) = HashRange::FULL.halves().unwrap();
        assert_eq!(lo.last, u64::MAX / 2);
        assert_eq!(hi.first, u64::MAX / 2 + 1);
        assert_eq!(HashRange::even(2), vec![lo, hi]);
    }
}
