//! Per-thread search scratch of the native backend: the visited set (a `u16` mark per
//! id and a generation counter, so starting a search clears nothing) and the heaps and
//! buffers of a graph search or insertion.
//!
//! Each thread keeps one [`Scratch`], taken out of a thread-local for the duration of
//! one operation and put back after, so graph searches allocate nothing once a thread
//! has warmed up (the marks grow to the largest id any index on the thread has seen).
//! A nested use on the same thread (a filter that searches) simply gets a fresh one.
//!
//! It must never do IO or hold anything between operations except capacity.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::InternalId;

#[derive(Default)]
pub(super) struct Scratch {
    marks: Vec<u16>,
    generation: u16,
    /// Candidates to expand, nearest first (keys, see `graph::key`).
    pub candidates: BinaryHeap<Reverse<u64>>,
    /// The best keys found, worst on top.
    pub top: BinaryHeap<u64>,
    /// Sorted results of a layer search.
    pub found: Vec<u64>,
    /// Neighbours chosen for a new node.
    pub selected: Vec<u64>,
    /// Unvisited neighbours of the node being expanded.
    pub batch: Vec<InternalId>,
    /// Candidates of a list being pruned, and the kept ones.
    pub pool: Vec<u64>,
    pub kept: Vec<u64>,
}

impl Scratch {
    /// Starts a new visited set able to hold ids below `bound` without growing.
    pub fn new_visit(&mut self, bound: usize) {
        if self.marks.len() < bound {
            self.marks.resize(bound, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `id` visited; true if it was not yet.
    #[inline]
    pub fn first_visit(&mut self, id: InternalId) -> bool {
        let i = id as usize;
        if i >= self.marks.len() {
            self.grow(i);
        }
        let g = self.generation;
        match self.marks.get_mut(i) {
            Some(m) if *m != g => {
                *m = g;
                true
            }
            _ => false,
        }
    }

    #[cold]
    fn grow(&mut self, i: usize) {
        self.marks.resize((i + 1).next_power_of_two().max(1024), 0);
    }
}

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's scratch.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.with(Cell::take).unwrap_or_default();
    let r = f(&mut s);
    SCRATCH.with(|c| c.set(Some(s)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_reset_the_set_and_wrap_around() {
        let mut s = Scratch::default();
        s.new_visit(10);
        assert!(s.first_visit(3) && !s.first_visit(3));
        assert!(s.first_visit(5000) && !s.first_visit(5000));
        for _ in 0..70_000 {
            s.new_visit(10);
        }
        assert!(s.first_visit(3) && s.first_visit(5000) && !s.first_visit(3));
        s.new_visit(0);
        assert!(s.first_visit(3));
    }

    #[test]
    fn nested_use_gets_its_own_scratch() {
        with_scratch(|outer| {
            outer.new_visit(4);
            assert!(outer.first_visit(1));
            with_scratch(|inner| {
                inner.new_visit(4);
                assert!(inner.first_visit(1));
            });
            assert!(!outer.first_visit(1));
        });
    }
}
