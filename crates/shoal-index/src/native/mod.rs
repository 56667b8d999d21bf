//! The native HNSW backend ([`NativeIndex`]): Shoal's own graph, built for this
//! crate's kernels and for the shard's needs.
//!
//! - [`store`]: every node's vector (the only copy), links, level, lock and flags in
//!   64-byte aligned chunks that never move, readable without a lock.
//! - [`graph`]: levels from a hash of the id, hnswlib's layer search and neighbour
//!   heuristic, concurrent insertion with one small lock per node.
//! - [`visited`]: per-thread visited sets and heaps, so a search allocates only its
//!   result.
//! - [`pages`]: the zeroed memory behind the store's big arrays, on transparent huge
//!   pages for every chunk after a store's first (fewer TLB misses per search).
//! - [`dump`]: one checksummed file under the crate's manifest.
//!
//! Semantics are those of [`VectorIndex`], identical to the `hnsw_rs` backend's:
//! a delete marks the node (never returned again, still traversed), an update is a
//! delete plus an insert under a fresh id, and the shard rebuilds once tombstones pile
//! up. Searches check the caller's filter (and deletions) on every candidate during
//! the traversal; a search that has to look at more than half the nodes to fill its
//! results, or that cannot reach every node while its result list is not full, is
//! answered by an exact scan instead, so a filtered search returns `min(k, accepted)`
//! hits.
//!
//! Dumps and inserts exclude each other through `gate`: an insertion holds it shared
//! for one node at a time, a dump exclusively, so a dump sees every node either fully
//! linked or not in the graph (loading inserts the latter).
//!
//! It must never do IO except in `dump` and `load`, and never panic on input that
//! passed validation (or on any dump: [`crate::meta`] checks it, `dump::read` checks
//! every field again).

mod dump;
mod graph;
mod pages;
mod store;
mod visited;

use std::path::Path;

use parking_lot::RwLock;
use rayon::prelude::*;

use crate::exact::TopK;
use crate::meta::Meta;
use crate::{Hit, IdFilter, IndexError, IndexParams, InternalId, VectorIndex};
use graph::{Graph, Layer, key_distance, key_id, level_for};
use visited::with_scratch;

/// Largest `m` (as for `hnsw_rs`).
const MAX_M: usize = 255;
/// Batches at least this long are inserted in parallel.
const PARALLEL_MIN: usize = 16;
/// A filtered (or tombstoned) search that computes more distances than this share of
/// the nodes gives up for an exact scan.
const FILTERED_BUDGET_DIVISOR: usize = 2;

/// The native HNSW index.
pub struct NativeIndex {
    params: IndexParams,
    graph: Graph,
    gate: RwLock<()>,
}

impl NativeIndex {
    /// An empty index. `m` is clamped to `2..=255` and `ef_construction` to at least
    /// 1; [`VectorIndex::params`] reports the values in use.
    pub fn new(params: IndexParams) -> Self {
        let params = Self::clamp(params);
        NativeIndex {
            graph: Graph::new(params.dim, params.metric, params.m, params.ef_construction),
            params,
            gate: RwLock::new(()),
        }
    }

    fn clamp(params: IndexParams) -> IndexParams {
        IndexParams {
            m: params.m.clamp(2, MAX_M),
            ef_construction: params.ef_construction.max(1),
            ..params
        }
    }

    /// Restores an index from a dump whose manifest [`crate::meta::read`] verified.
    pub(crate) fn load(dir: &Path, meta: &Meta) -> Result<Self, IndexError> {
        Self::check_params(meta.params)?;
        let index = NativeIndex::new(meta.params);
        dump::read(&index.graph, dir, meta)?;
        Ok(index.finish_load())
    }

    /// Restores an index from the bytes of its dump file (`native.graph`) as if a
    /// manifest for `params` had vouched for them: only the parser's own checks stand
    /// between the bytes and the index. For the fuzz targets (`crates/shoal-fuzz`); a
    /// node loads dumps with [`crate::load`], which verifies the manifest first.
    pub fn from_dump_bytes(params: IndexParams, bytes: &[u8]) -> Result<Self, IndexError> {
        Self::check_params(params)?;
        let index = NativeIndex::new(params);
        dump::parse(&index.graph, bytes, params.dim, params.m)?;
        Ok(index.finish_load())
    }

    /// Refuses parameters this backend cannot have written.
    fn check_params(params: IndexParams) -> Result<(), IndexError> {
        if params.dim == 0 || u32::try_from(params.dim).is_err() {
            return Err(IndexError::corrupt(format!(
                "dimension {} cannot have been written by this backend",
                params.dim
            )));
        }
        if Self::clamp(params) != params {
            return Err(IndexError::corrupt(format!(
                "parameters m {} / ef_construction {} cannot have been written by this backend",
                params.m, params.ef_construction
            )));
        }
        Ok(())
    }

    /// A dump taken while a batch was being inserted holds nodes the graph had not
    /// received yet: gives them to it now.
    fn finish_load(self) -> Self {
        let mut missing = Vec::new();
        self.graph.store.for_each_live(|id, _| {
            if !self.graph.store.in_graph(id) {
                missing.push(id);
            }
        });
        self.insert_graph(&missing);
        self
    }

    fn insert_graph(&self, ids: &[InternalId]) {
        let one = |&id: &InternalId| {
            let _gate = self.gate.read();
            with_scratch(|s| self.graph.insert_node(id, s));
        };
        if ids.len() >= PARALLEL_MIN {
            ids.par_iter().for_each(one);
        } else {
            ids.iter().for_each(one);
        }
    }

    /// The graph search; `None` when an exact scan must answer instead.
    fn graph_search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&dyn IdFilter>,
    ) -> Option<Vec<Hit>> {
        let store = &self.graph.store;
        let start = self.graph.descend(q)?;
        let present = store.present_count();
        with_scratch(|s| {
            let at = Layer {
                level: 0,
                ef,
                budget: (present / FILTERED_BUDGET_DIVISOR).max(ef),
            };
            let outcome = match filter {
                None if store.deleted_count() == 0 => {
                    self.graph.search_layer::<false>(q, start, at, s, |_| true)
                }
                None => self
                    .graph
                    .search_layer::<true>(q, start, at, s, |id| !store.is_deleted(id)),
                // The caller's filter first: usually a compact bitmap, where a node's
                // deleted flag is a read into its chunk.
                Some(f) => self.graph.search_layer::<true>(q, start, at, s, |id| {
                    f.accept(id) && !store.is_deleted(id)
                }),
            };
            // Fewer than ef results means every reachable node was expanded: if some
            // nodes were not reached, only a scan can be sure to find them.
            if outcome.aborted || (s.top.len() < ef && outcome.visited < present) {
                return None;
            }
            s.found.clear();
            s.found.extend(s.top.drain());
            s.found.sort_unstable();
            Some(
                s.found
                    .iter()
                    .take(k)
                    .map(|&key| Hit {
                        id: key_id(key),
                        distance: key_distance(key),
                    })
                    .collect(),
            )
        })
    }
}

impl VectorIndex for NativeIndex {
    fn params(&self) -> &IndexParams {
        &self.params
    }

    fn insert(&self, items: &[(InternalId, &[f32])]) -> Result<(), IndexError> {
        let dim = self.params.dim;
        if let Some((_, v)) = items.iter().find(|(_, v)| v.len() != dim) {
            return Err(IndexError::DimensionMismatch {
                expected: dim,
                got: v.len(),
            });
        }
        {
            let _gate = self.gate.read();
            let m = self.params.m;
            self.graph
                .store
                .insert_batch(items, |id| level_for(id, m))?;
        }
        let ids: Vec<InternalId> = items.iter().map(|(id, _)| *id).collect();
        self.insert_graph(&ids);
        Ok(())
    }

    fn delete(&self, id: InternalId) -> bool {
        let _gate = self.gate.read();
        self.graph.store.delete(id)
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&dyn IdFilter>,
    ) -> Vec<Hit> {
        if k == 0 || query.len() != self.params.dim || self.graph.store.live_count() == 0 {
            return Vec::new();
        }
        match self.graph_search(query, k, ef.max(k), filter) {
            Some(hits) => hits,
            None => self.exact_search(query, k, filter),
        }
    }

    fn exact_search(&self, query: &[f32], k: usize, filter: Option<&dyn IdFilter>) -> Vec<Hit> {
        if k == 0 || query.len() != self.params.dim {
            return Vec::new();
        }
        let mut top = TopK::new(k);
        self.graph.store.for_each_live(|id, v| {
            if filter.is_none_or(|f| f.accept(id)) {
                top.push(id, self.graph.dist(query, v));
            }
        });
        top.into_sorted()
    }

    fn exact_search_among(&self, query: &[f32], k: usize, ids: &[InternalId]) -> Vec<Hit> {
        if k == 0 || query.len() != self.params.dim {
            return Vec::new();
        }
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut top = TopK::new(k);
        for id in ids {
            if let Some(v) = self.graph.store.live_vector(id) {
                top.push(id, self.graph.dist(query, v));
            }
        }
        top.into_sorted()
    }

    fn vector(&self, id: InternalId) -> Option<Vec<f32>> {
        self.graph.store.live_vector(id).map(<[f32]>::to_vec)
    }

    fn len(&self) -> usize {
        self.graph.store.live_count()
    }

    fn tombstones(&self) -> usize {
        self.graph.store.deleted_count()
    }

    fn dump(&self, dir: &Path) -> Result<(), IndexError> {
        let _gate = self.gate.write();
        dump::write(&self.graph, &self.params, dir)
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::Metric;

    use super::*;
    use crate::meta;

    fn params(dim: usize) -> IndexParams {
        IndexParams {
            dim,
            metric: Metric::L2,
            m: 6,
            ef_construction: 40,
            capacity_hint: 0,
        }
    }

    fn grid(n: u32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| vec![(i % 17) as f32, (i / 17) as f32])
            .collect()
    }

    fn insert(index: &NativeIndex, vs: &[Vec<f32>]) {
        let items: Vec<(InternalId, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as InternalId, v.as_slice()))
            .collect();
        index.insert(&items).unwrap();
    }

    fn reload(index: &NativeIndex) -> NativeIndex {
        let dir = tempfile::tempdir().unwrap();
        index.dump(dir.path()).unwrap();
        NativeIndex::load(dir.path(), &meta::read(dir.path()).unwrap()).unwrap()
    }

    #[test]
    fn load_links_the_nodes_a_dump_caught_in_flight() {
        let index = NativeIndex::new(params(2));
        insert(&index, &grid(300));
        // Stored but not yet in the graph, as in the middle of a batch.
        index
            .graph
            .store
            .insert_batch(
                &[(300, &[100.0, 100.0][..]), (301, &[-50.0, 3.0][..])],
                |_| 1,
            )
            .unwrap();
        index.graph.store.delete(301);
        assert!(!index.graph.store.in_graph(300));
        let loaded = reload(&index);
        assert!(loaded.graph.store.in_graph(300) && !loaded.graph.store.in_graph(301));
        let hits = loaded.search(&[99.0, 99.0], 1, 16, None);
        assert_eq!(hits[0].id, 300);
        assert_eq!((loaded.len(), loaded.tombstones()), (301, 1));

        // Nothing in the graph at all.
        let index = NativeIndex::new(params(2));
        index
            .graph
            .store
            .insert_batch(&[(0, &[0.0, 1.0][..]), (1, &[1.0, 0.0][..])], |_| 0)
            .unwrap();
        let loaded = reload(&index);
        assert!(loaded.graph.entry().is_some());
        let hits = loaded.search(&[1.0, 0.1], 2, 4, None);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1, 0]);
    }

    #[test]
    fn unreachable_nodes_are_found_by_the_fallback_scan() {
        let index = NativeIndex::new(params(2));
        insert(&index, &grid(100));
        // Cut node 5 off: no list names it any more.
        for id in 0..100 {
            for level in 0..=index.graph.store.level(id) {
                let keep: Vec<InternalId> = index
                    .graph
                    .links_of(id, level)
                    .filter(|&x| x != 5)
                    .collect();
                index.graph.restore_links(id, level, &keep);
            }
        }
        let v = index.vector(5).unwrap();
        // ef larger than the graph: the search expands everything it can reach,
        // sees that it missed a node, and scans.
        assert_eq!(index.search(&v, 1, 200, None)[0].id, 5);
    }

    /// Rewrites the dump file with `edit` applied and a fresh manifest, so only the
    /// backend's own checks stand between the bytes and the index.
    fn load_edited(index: &NativeIndex, edit: impl Fn(&mut Vec<u8>)) -> Result<(), IndexError> {
        let dir = tempfile::tempdir().unwrap();
        index.dump(dir.path()).unwrap();
        let path = dir.path().join(dump::FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        edit(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        meta::write(
            dir.path(),
            &Meta {
                backend: crate::Backend::Native,
                params: *index.params(),
                files: vec![dump::FILE.to_string()],
            },
        )
        .unwrap();
        NativeIndex::load(dir.path(), &meta::read(dir.path()).unwrap()).map(drop)
    }

    type Edit = dyn Fn(&mut Vec<u8>);

    #[test]
    fn damaged_dump_contents_are_refused_without_panicking() {
        let index = NativeIndex::new(params(2));
        insert(&index, &grid(40));
        index.delete(3);
        let header = 8 + 4 * 5 + 8;
        let first_links = header + 4 + 1 + 1 + 8;
        let cases: Vec<(&str, Box<Edit>)> = vec![
            ("magic", Box::new(|b| b[0] ^= 1)),
            ("version", Box::new(|b| b[8] = 9)),
            ("dim", Box::new(|b| b[12] = 3)),
            ("count", Box::new(move |b| b[header - 8] = 41)),
            ("truncated", Box::new(|b| b.truncate(b.len() - 3))),
            ("trailing", Box::new(|b| b.push(0))),
            ("flags", Box::new(move |b| b[header + 4] = 9)),
            ("level", Box::new(move |b| b[header + 5] = 200)),
            ("link count", Box::new(move |b| b[first_links] = 99)),
            (
                "link target",
                Box::new(move |b| {
                    b[first_links + 4..first_links + 8].copy_from_slice(&77u32.to_le_bytes())
                }),
            ),
            (
                "self link",
                Box::new(move |b| {
                    b[first_links + 4..first_links + 8].copy_from_slice(&0u32.to_le_bytes())
                }),
            ),
            ("entry", Box::new(|b| b[24] = 0xff)),
        ];
        for (what, edit) in cases {
            let got = load_edited(&index, edit);
            assert!(
                matches!(got, Err(IndexError::Corrupt(_))),
                "{what}: {got:?}"
            );
        }
        assert!(load_edited(&index, |_| {}).is_ok());
    }
}
