//! Exact top-k selection shared by every backend's brute-force scan.
//!
//! Order is by distance, then by id: of two hits at the same distance the lower id
//! is nearer. NaN distances sort after every number.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::{Hit, InternalId};

/// Total order of hits: nearer first, ties by the lower id.
pub fn cmp_hits(a: &Hit, b: &Hit) -> Ordering {
    a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id))
}

/// Sorts hits nearest first (ties by the lower id).
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_unstable_by(cmp_hits);
}

/// A heap entry ordered by [`cmp_hits`], so the heap's top is the worst kept hit.
#[derive(Clone, Copy)]
struct Entry(Hit);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        cmp_hits(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_hits(&self.0, &other.0)
    }
}

/// Keeps the `k` nearest of the hits pushed into it (a bounded max-heap).
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// The distance a new hit must beat (or tie with a lower id) to be kept, once
    /// `k` hits are held.
    pub fn worst(&self) -> Option<Hit> {
        (self.heap.len() == self.k)
            .then(|| self.heap.peek().map(|e| e.0))
            .flatten()
    }

    /// Offers a hit.
    #[inline]
    pub fn push(&mut self, id: InternalId, distance: f32) {
        if self.k == 0 {
            return;
        }
        let hit = Hit { id, distance };
        if self.heap.len() < self.k {
            self.heap.push(Entry(hit));
        } else if let Some(mut top) = self.heap.peek_mut()
            && cmp_hits(&hit, &top.0) == Ordering::Less
        {
            *top = Entry(hit);
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The kept hits, nearest first.
    pub fn into_sorted(self) -> Vec<Hit> {
        // `into_sorted_vec` is ascending in `Ord`, i.e. nearest first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| e.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_nearest_with_ties_to_the_lower_id() {
        let mut t = TopK::new(3);
        assert!(t.is_empty() && t.worst().is_none());
        for (id, d) in [
            (9, 1.0),
            (1, 5.0),
            (4, 1.0),
            (2, 0.5),
            (3, 1.0),
            (0, f32::NAN),
            (7, 1.0),
        ] {
            t.push(id, d);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.worst(),
            Some(Hit {
                id: 4,
                distance: 1.0
            })
        );
        let ids: Vec<_> = t.into_sorted().iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![2, 3, 4]);

        let mut none = TopK::new(0);
        none.push(1, 0.0);
        assert!(none.into_sorted().is_empty());
    }

    #[test]
    fn equals_a_full_sort() {
        let mut s = 12345u64;
        let mut all = Vec::new();
        let mut t = TopK::new(17);
        for id in 0..500u32 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Few distinct values, so many ties.
            let d = ((s >> 33) % 50) as f32;
            all.push(Hit { id, distance: d });
            t.push(id, d);
        }
        sort_hits(&mut all);
        assert_eq!(t.into_sorted(), all[..17].to_vec());
    }
}
