//! The HNSW graph of the native backend (Malkov & Yashunin; the hnswlib variant):
//! levels, layer search, the neighbour-selection heuristic, and insertion.
//!
//! - **Levels** come from a hash of the id: `floor(-ln(u) / ln(M))` with `u` in
//!   `(0, 1]` from xxh3 of the id's bytes, so every replica that inserts the same ids
//!   gets the same levels. Level 0 lists hold up to `2M` links, upper ones `M`.
//! - **Distances** are the crate's [`distance::distance_with`] of the index metric,
//!   the very values exact scans return, so graph hits and exact hits agree bit for
//!   bit. Candidates are ordered by a `u64` *key* (distance in the high half, made
//!   order-preserving, id in the low half): nearer first, ties by the lower id, the
//!   order of [`crate::exact::cmp_hits`].
//! - **Insertion** (`insert_node`): greedy descent to the node's level, then on each
//!   layer a search with `ef_construction`, the heuristic picks `M` neighbours, the
//!   node links to them and each links back (pruning its list with the same heuristic
//!   when full). A node's lock is held only while its own list is rewritten, one node
//!   at a time, so insertions never wait on each other in a cycle. Deleted nodes stay
//!   in the graph and are linked like any other.
//! - **Search** (`search_layer`): the hnswlib best-first search; a node the `accept`
//!   predicate rejects is still expanded but never enters the results. Memory latency,
//!   not arithmetic, bounds it once the graph outgrows the caches: expanding a node
//!   first marks its unvisited neighbours and prefetches their whole vectors, then
//!   computes the distances; on layer 0 the next candidate's link list is prefetched
//!   meanwhile.
//!
//! It must never do IO, lock two nodes at once, or panic on a graph state another
//! thread may be changing: every id read from a list is looked up fallibly.

use std::cmp::{Ordering, Reverse};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};

use parking_lot::Mutex;
use shoal_core::Metric;

use super::store::{Store, count, used, write_list};
use super::visited::Scratch;
use crate::InternalId;
use crate::distance::{self, Kernels};

/// Highest level a node can draw (a node at level 16 is a 1-in-M^16 event).
pub(super) const MAX_LEVEL: usize = 16;
const LEVEL_SEED: u64 = 0x5348_4f41_4c4c_564c; // "SHOALLVL"
const NO_ENTRY: u64 = 0;

/// Order-preserving key of a (distance, id) pair: comparing keys as integers is
/// comparing distances with `f32::total_cmp`, then ids.
#[inline]
pub(super) fn key(d: f32, id: InternalId) -> u64 {
    let b = d.to_bits();
    let o = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    (o as u64) << 32 | id as u64
}

#[inline]
pub(super) fn key_distance(k: u64) -> f32 {
    let o = (k >> 32) as u32;
    f32::from_bits(if o & 0x8000_0000 != 0 {
        o & 0x7fff_ffff
    } else {
        !o
    })
}

#[inline]
pub(super) fn key_id(k: u64) -> InternalId {
    k as u32
}

/// The level of `id` for links-per-node `m`: deterministic, independent of anything
/// else in the index.
pub(super) fn level_for(id: InternalId, m: usize) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(&id.to_le_bytes(), LEVEL_SEED);
    // 53 random bits, shifted into (0, 1].
    let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let mult = 1.0 / (m.max(2) as f64).ln();
    ((-u.ln() * mult) as usize).min(MAX_LEVEL)
}

/// What a layer search explores: the layer, the result list size, and (for filtered
/// searches) how many distances it may compute before giving up.
#[derive(Clone, Copy)]
pub(super) struct Layer {
    pub level: usize,
    pub ef: usize,
    pub budget: usize,
}

/// How a layer search ended.
pub(super) struct LayerOutcome {
    /// Nodes whose distance was computed.
    pub visited: usize,
    /// Stopped because it computed more than its budget of distances.
    pub aborted: bool,
}

pub(super) struct Graph {
    pub store: Store,
    metric: Metric,
    kernels: &'static Kernels,
    m: usize,
    ef_construction: usize,
    /// Entry point and top level, packed (`1 << 63 | level << 32 | id`), or 0.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
}

fn pack(id: InternalId, level: usize) -> u64 {
    1 << 63 | (level as u64) << 32 | id as u64
}

fn unpack(e: u64) -> (InternalId, usize) {
    (e as u32, ((e >> 32) & 0xff) as usize)
}

impl Graph {
    pub fn new(dim: usize, metric: Metric, m: usize, ef_construction: usize) -> Self {
        Graph {
            store: Store::new(dim, m, 2 * m),
            metric,
            kernels: distance::selected(),
            m,
            ef_construction: ef_construction.max(m),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
        }
    }

    pub fn m(&self) -> usize {
        self.m
    }

    #[inline]
    pub fn dist(&self, a: &[f32], b: &[f32]) -> f32 {
        distance::distance_with(self.kernels, self.metric, a, b)
    }

    /// The entry point and the top level of the graph.
    #[inline]
    pub fn entry(&self) -> Option<(InternalId, usize)> {
        let e = self.entry.load(Acquire);
        (e != NO_ENTRY).then(|| unpack(e))
    }

    /// Sets the entry point of a graph being restored.
    pub fn restore_entry(&self, entry: Option<(InternalId, usize)>) {
        self.entry
            .store(entry.map_or(NO_ENTRY, |(id, l)| pack(id, l)), Release);
    }

    /// Key of `id` seen from `q`, if it exists.
    #[inline]
    fn key_of(&self, q: &[f32], id: InternalId) -> Option<u64> {
        Some(key(self.dist(q, self.store.graph_vector(id)?), id))
    }

    /// Greedy walk on `level` from `cur` to a local minimum of the distance to `q`.
    pub fn greedy(&self, q: &[f32], mut cur: u64, level: usize) -> u64 {
        loop {
            let list = self.store.links(key_id(cur), level);
            let mut best = cur;
            for l in used(list) {
                let nb = l.load(Acquire);
                if let Some(k) = self.key_of(q, nb)
                    && k < best
                {
                    best = k;
                }
            }
            if best == cur {
                return cur;
            }
            cur = best;
        }
    }

    /// Walks from the entry point down to layer 1 and returns the key of the node to
    /// start the layer-0 search from, or `None` if the graph is empty.
    pub fn descend(&self, q: &[f32]) -> Option<u64> {
        let (ep, top) = self.entry()?;
        let mut cur = self.key_of(q, ep)?;
        for level in (1..=top).rev() {
            cur = self.greedy(q, cur, level);
        }
        Some(cur)
    }

    /// Best-first search of `at.level` from the node of key `start`, keeping the
    /// `at.ef` nearest accepted nodes in `s.top`. With `FILTERED`, gives up once more
    /// than `at.budget` distances were computed.
    #[inline]
    pub fn search_layer<const FILTERED: bool>(
        &self,
        q: &[f32],
        start: u64,
        at: Layer,
        s: &mut Scratch,
        accept: impl Fn(InternalId) -> bool,
    ) -> LayerOutcome {
        let Layer { level, ef, budget } = at;
        s.top.clear();
        s.candidates.clear();
        s.new_visit(self.store.bound());
        s.first_visit(key_id(start));
        if !FILTERED || accept(key_id(start)) {
            s.top.push(start);
        }
        s.candidates.push(Reverse(start));
        let mut visited = 1usize;
        while let Some(Reverse(ck)) = s.candidates.pop() {
            if s.top.len() >= ef && s.top.peek().is_some_and(|&w| ck > w) {
                break;
            }
            // The nearest candidate left is likely the next one expanded: start fetching
            // its link list now, while this node's distances are computed (hnswlib does
            // the same; see `Store::prefetch_links`).
            if let (0, Some(&Reverse(next))) = (level, s.candidates.peek()) {
                self.store.prefetch_links(key_id(next));
            }
            let list = self.store.links(key_id(ck), level);
            // Mark the unvisited neighbours and start fetching their vectors, then
            // compute the distances while the later ones arrive.
            s.batch.clear();
            for l in used(list) {
                let nb = l.load(Acquire);
                if s.first_visit(nb) {
                    self.store.prefetch(nb);
                    s.batch.push(nb);
                }
            }
            for &nb in &s.batch {
                let Some(v) = self.store.graph_vector(nb) else {
                    continue;
                };
                visited += 1;
                let nk = key(self.dist(q, v), nb);
                if s.top.len() < ef || s.top.peek().is_some_and(|&w| nk < w) {
                    s.candidates.push(Reverse(nk));
                    if level == 0 && s.candidates.peek() == Some(&Reverse(nk)) {
                        // A new nearest candidate: it will be expanded next.
                        self.store.prefetch_links(nb);
                    }
                    if !FILTERED || accept(nb) {
                        s.top.push(nk);
                        if s.top.len() > ef {
                            s.top.pop();
                        }
                    }
                }
            }
            if FILTERED && visited > budget {
                return LayerOutcome {
                    visited,
                    aborted: true,
                };
            }
        }
        LayerOutcome {
            visited,
            aborted: false,
        }
    }

    /// The neighbour-selection heuristic: from `cands` (keys seen from the base node,
    /// sorted nearest first) keep a candidate only if it is nearer to the base than to
    /// every candidate kept before it, up to `m`. Fewer than `m` candidates are all
    /// kept.
    fn select(&self, cands: &[u64], m: usize, out: &mut Vec<u64>) {
        out.clear();
        if cands.len() <= m {
            out.extend_from_slice(cands);
            return;
        }
        for &c in cands {
            if out.len() >= m {
                break;
            }
            let Some(vc) = self.store.graph_vector(key_id(c)) else {
                continue;
            };
            let dc = key_distance(c);
            let good = out.iter().all(|&r| {
                self.store
                    .graph_vector(key_id(r))
                    .is_none_or(|vr| self.dist(vc, vr).partial_cmp(&dc) != Some(Ordering::Less))
            });
            if good {
                out.push(c);
            }
        }
    }

    /// Inserts a present node into the graph. The caller holds whatever keeps dumps
    /// out (see `NativeIndex`).
    pub fn insert_node(&self, id: InternalId, s: &mut Scratch) {
        let Some(q) = self.store.graph_vector(id) else {
            return;
        };
        let level = self.store.level(id);
        let (ep, top) = match self.entry() {
            Some(e) => e,
            None => {
                let _g = self.entry_lock.lock();
                match self.entry() {
                    Some(e) => e,
                    None => {
                        self.store.set_in_graph(id);
                        self.entry.store(pack(id, level), Release);
                        return;
                    }
                }
            }
        };
        let Some(mut cur) = self.key_of(q, ep) else {
            return;
        };
        for l in (level + 1..=top).rev() {
            cur = self.greedy(q, cur, l);
        }
        for l in (0..=level.min(top)).rev() {
            let at = Layer {
                level: l,
                ef: self.ef_construction,
                budget: usize::MAX,
            };
            self.search_layer::<false>(q, cur, at, s, |_| true);
            s.found.clear();
            s.found.extend(s.top.drain().filter(|&k| key_id(k) != id));
            s.found.sort_unstable();
            let Some(&nearest) = s.found.first() else {
                continue;
            };
            cur = nearest;
            let mut selected = std::mem::take(&mut s.selected);
            self.select(&s.found, self.m, &mut selected);
            self.set_own_links(id, q, l, &selected, s);
            for &nk in &selected {
                self.link_back(key_id(nk), id, key_distance(nk), l, s);
            }
            s.selected = selected;
        }
        self.store.set_in_graph(id);
        if level > top {
            let _g = self.entry_lock.lock();
            if self.entry().is_none_or(|(_, t)| level > t) {
                self.entry.store(pack(id, level), Release);
            }
        }
    }

    /// Gives `id` (vector `q`) the links `selected` on `level`, keeping any link
    /// another insertion added meanwhile (pruned by the heuristic if over capacity).
    fn set_own_links(
        &self,
        id: InternalId,
        q: &[f32],
        level: usize,
        selected: &[u64],
        s: &mut Scratch,
    ) {
        let Some(_lock) = self.store.lock(id) else {
            return;
        };
        let list = self.store.links(id, level);
        let n = count(list);
        if n == 0 {
            write_list(list, selected.iter().map(|&k| key_id(k)));
            return;
        }
        s.pool.clear();
        s.pool.extend_from_slice(selected);
        for l in used(list) {
            let x = l.load(Acquire);
            if !selected.iter().any(|&k| key_id(k) == x)
                && let Some(k) = self.key_of(q, x)
            {
                s.pool.push(k);
            }
        }
        s.pool.sort_unstable();
        let mut kept = std::mem::take(&mut s.kept);
        self.select(&s.pool, self.store.cap(level), &mut kept);
        write_list(list, kept.iter().map(|&k| key_id(k)));
        s.kept = kept;
    }

    /// Adds `new` (at distance `d`) to the list of `node` on `level`, pruning the list
    /// with the heuristic when it is full.
    fn link_back(&self, node: InternalId, new: InternalId, d: f32, level: usize, s: &mut Scratch) {
        let Some(_lock) = self.store.lock(node) else {
            return;
        };
        let list = self.store.links(node, level);
        let cap = list.len().saturating_sub(1);
        let links = used(list);
        let n = links.len();
        if cap == 0 {
            return;
        }
        if links.iter().any(|l| l.load(Acquire) == new) {
            return;
        }
        if n < cap {
            list[1 + n].store(new, Release);
            list[0].store(n as u32 + 1, Release);
            return;
        }
        let Some(vn) = self.store.graph_vector(node) else {
            return;
        };
        s.pool.clear();
        s.pool.push(key(d, new));
        for l in links {
            let x = l.load(Acquire);
            if let Some(k) = self.key_of(vn, x) {
                s.pool.push(k);
            }
        }
        s.pool.sort_unstable();
        let mut kept = std::mem::take(&mut s.kept);
        self.select(&s.pool, cap, &mut kept);
        write_list(list, kept.iter().map(|&k| key_id(k)));
        s.kept = kept;
    }

    /// Sets a restored node's links on `level` (single-threaded load).
    pub fn restore_links(&self, id: InternalId, level: usize, links: &[InternalId]) -> bool {
        let list = self.store.links(id, level);
        if list.len() < 1 + links.len() {
            return false;
        }
        write_list(list, links.iter().copied());
        true
    }

    /// The links of `id` on `level`, for dumps.
    pub fn links_of(&self, id: InternalId, level: usize) -> impl Iterator<Item = InternalId> + '_ {
        used(self.store.links(id, level))
            .iter()
            .map(|l: &AtomicU32| l.load(Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_total_cmp_then_id() {
        let ds = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            -0.0,
            0.0,
            1e-40,
            1.0,
            1.0 + f32::EPSILON,
            7e20,
            f32::INFINITY,
            f32::NAN,
        ];
        for (i, &a) in ds.iter().enumerate() {
            assert_eq!(key_distance(key(a, 9)).to_bits(), a.to_bits());
            assert_eq!(key_id(key(a, 9)), 9);
            for &b in &ds[i..] {
                for (ia, ib) in [(0u32, 1u32), (1, 0), (5, 5)] {
                    let want = a.total_cmp(&b).then(ia.cmp(&ib));
                    assert_eq!(key(a, ia).cmp(&key(b, ib)), want, "{a} {ia} vs {b} {ib}");
                }
            }
        }
    }

    #[test]
    fn levels_are_deterministic_and_geometric() {
        let m = 16;
        let levels: Vec<usize> = (0..200_000u32).map(|id| level_for(id, m)).collect();
        assert_eq!(
            levels,
            (0..200_000u32)
                .map(|id| level_for(id, m))
                .collect::<Vec<_>>()
        );
        let above0 = levels.iter().filter(|&&l| l >= 1).count() as f64 / 200_000.0;
        let above1 = levels.iter().filter(|&&l| l >= 2).count() as f64 / 200_000.0;
        assert!((above0 - 1.0 / 16.0).abs() < 0.005, "{above0}");
        assert!((above1 - 1.0 / 256.0).abs() < 0.001, "{above1}");
        assert!(levels.iter().all(|&l| l <= MAX_LEVEL));
        assert!(level_for(u32::MAX, 2) <= MAX_LEVEL);
    }

    #[test]
    fn heuristic_skips_candidates_shadowed_by_kept_ones() {
        let g = Graph::new(1, Metric::L2, 2, 10);
        let xs = [1.0f32, 1.1, 3.0, -2.0];
        let items: Vec<(InternalId, Vec<f32>)> = xs
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, vec![x]))
            .collect();
        let refs: Vec<(InternalId, &[f32])> =
            items.iter().map(|(id, v)| (*id, v.as_slice())).collect();
        g.store.insert_batch(&refs, |_| 0).unwrap();
        // Seen from 0.0: 1.0 (d 1), 1.1 (d 1.21), -2.0 (d 4), 3.0 (d 9).
        let mut cands: Vec<u64> = items
            .iter()
            .map(|(id, v)| key(g.dist(&[0.0], v), *id))
            .collect();
        cands.sort_unstable();
        let mut out = Vec::new();
        g.select(&cands, 2, &mut out);
        // 1.1 is nearer to 1.0 than to the base, so -2.0 is chosen instead.
        assert_eq!(
            out.iter().map(|&k| key_id(k)).collect::<Vec<_>>(),
            vec![0, 3]
        );
        g.select(&cands[..2], 2, &mut out);
        assert_eq!(out.len(), 2);
    }
}
