//! The `hnsw_rs` backend.
//!
//! What it adds around `hnsw_rs::hnsw::Hnsw`:
//! - **Our own distances.** The graph uses [`HnswDist`], built on this crate's
//!   kernels. `hnsw_rs` asserts that every distance is `>= 0` and panics on NaN, so
//!   the graph sees a *monotone non-negative image* of the index distance (see
//!   [`graph_distance`]); it only ever compares distances, so the graph is the same
//!   as with the true ones. Hits report the true distance, recomputed from the arena.
//! - **A vector arena** ([`crate::arena`]) with the deleted set: `vector()`, exact
//!   scans and dumps read it; the graph keeps its own copy of every vector (so each
//!   vector is held twice).
//! - **Tombstones.** `hnsw_rs` cannot delete: a deleted id stays in the graph. A
//!   search with a caller filter passes `hnsw_rs` a filter rejecting tombstones and
//!   unaccepted ids; it keeps exploring until it has `ef` accepted candidates (or has
//!   seen everything reachable) and never stops early, so it costs several times an
//!   unfiltered search (on siftsmall at ef 64: 2.3x with 10% tombstones, 4.5x with a
//!   filter accepting half the ids, where an exact scan is 7x cheaper). So a search
//!   without a caller filter instead runs unfiltered with `ef` widened by
//!   `present / live` and drops tombstones from the candidates, falling back to the
//!   filtered search if fewer than `k` live hits remain.
//! - **A safe first insertion.** `hnsw_rs` leaves any point inserted while the graph
//!   has no entry point unlinked (and so unreachable); the first point is inserted
//!   alone, under a lock, before any other. Batches are inserted with a rayon
//!   `par_iter` over `insert_slice` (what `parallel_insert_slice` does), so that each
//!   insertion can hold the dump gate on its own.
//! - **Dumps** through `hnsw_rs`'s own `file_dump` / `HnswIo`, plus the arena, with
//!   a manifest of checksums verified before `hnsw_rs` parses anything (see
//!   [`crate::meta`]). The reloaded graph borrows from its `HnswIo` loader; both live
//!   in one [`self_cell`], so nothing is leaked. A dump taken while a batch was
//!   half inserted holds arena vectors the graph lacks; loading inserts them.
//!
//! It must never hand `hnsw_rs` a NaN or negative distance, an unchecked dump, or two
//! insertions racing for the first entry point.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use hnsw_rs::api::AnnT;
use hnsw_rs::filter::FilterT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::Distance;
use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;
use shoal_core::Metric;

use crate::arena::Arena;
use crate::distance::{self, Kernels};
use crate::exact::{TopK, sort_hits};
use crate::meta::{self, Meta};
use crate::{Backend, Hit, IdFilter, IndexError, IndexParams, InternalId, VectorIndex};

/// `hnsw_rs`'s layer count. Its dump format insists on exactly 16.
const MAX_LAYER: usize = 16;
/// Largest `m` handed to `hnsw_rs` (it stores `m` in a byte and exits the process
/// above 256).
const MAX_M: usize = 255;
/// Batches at least this long are inserted in parallel.
const PARALLEL_MIN: usize = 16;
/// Unfiltered searches skip tombstones by searching wider (see `search`) while live
/// points are at least `1 / this` of the graph; beyond, they use the filtered search.
const TOMBSTONE_FAST_PATH_MAX_RATIO: usize = 4;
/// Upper bound of the pre-allocation hint handed to `hnsw_rs`.
const MAX_CAPACITY_HINT: usize = 1 << 20;

const GRAPH_BASENAME: &str = "graph";
const GRAPH_FILES: [&str; 2] = ["graph.hnsw.graph", "graph.hnsw.data"];
const ARENA_FILE: &str = "arena.bin";

/// The distance `hnsw_rs` sees: [`graph_distance`] of the index's metric.
///
/// Its type name is written into dumps and checked on load, so it must keep this
/// name and module path.
#[derive(Clone, Copy)]
pub struct HnswDist {
    metric: Metric,
    kernels: &'static Kernels,
}

impl Distance<f32> for HnswDist {
    #[inline]
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        graph_distance(self.kernels, self.metric, a, b)
    }
}

/// A non-negative, never-NaN, non-decreasing function of the index distance:
/// squared L2 as is; `1 - dot` clamped at 0 (rounding can push it a hair below);
/// `-dot` through [`order_preserving_non_negative`]. NaN (from overflowing sums of
/// huge components) becomes the largest finite distance.
#[inline]
pub fn graph_distance(k: &Kernels, metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    let d = distance::distance_with(k, metric, a, b);
    if d.is_nan() {
        return f32::MAX;
    }
    match metric {
        Metric::L2 => d,
        Metric::Cosine => d.max(0.0),
        Metric::Dot => order_preserving_non_negative(d),
    }
}

/// Maps any `f32` to a finite `f32 >= 0` so that `x <= y` implies `f(x) <= f(y)`.
///
/// Finite floats ordered by value have bit patterns that, after flipping, are
/// ordered as unsigned integers; those integers span `[0x0080_0000, 0xFF7F_FFFF]`,
/// which shifted down by one bit fit the bit patterns of the finite non-negative
/// floats (whose order is again the integer order). Only neighbouring floats can
/// collide (the shift drops one bit), which is below any distance's rounding error.
#[inline]
pub fn order_preserving_non_negative(x: f32) -> f32 {
    if x.is_nan() {
        return f32::MAX;
    }
    let bits = x.clamp(-f32::MAX, f32::MAX).to_bits();
    let key = if bits >> 31 == 0 {
        bits | 0x8000_0000
    } else {
        !bits
    };
    f32::from_bits((key - 0x0080_0000) >> 1)
}

type Graph<'a> = Hnsw<'a, f32, HnswDist>;

self_cell::self_cell!(
    /// A graph and the loader it may borrow from (an empty `HnswIo` for a graph
    /// built in memory).
    struct GraphCell {
        owner: HnswIo,
        #[not_covariant]
        dependent: Graph,
    }
);

/// An index over `hnsw_rs`. See the module documentation.
///
/// Locking: `arena` guards vectors and deletions; searches hold its read lock for
/// their whole graph walk, so an `IdFilter` must not call back into the index.
/// `gate` is held shared by each single graph insertion, the arena update of an
/// insert, and each delete, and exclusively by `dump`; no lock is ever held across a
/// rayon join, so dumps and inserts can share one pool.
pub struct HnswRsIndex {
    params: IndexParams,
    kernels: &'static Kernels,
    graph: GraphCell,
    arena: RwLock<Arena>,
    gate: RwLock<()>,
    first: Mutex<()>,
    has_entry: AtomicBool,
}

impl HnswRsIndex {
    /// An empty index. `m` is clamped to `2..=255` and `ef_construction` to at
    /// least 1 (what `hnsw_rs` can represent); [`VectorIndex::params`] reports the
    /// values in use.
    pub fn new(params: IndexParams) -> Self {
        let params = IndexParams {
            m: params.m.clamp(2, MAX_M),
            ef_construction: params.ef_construction.max(1),
            ..params
        };
        let kernels = distance::selected();
        let dist = HnswDist {
            metric: params.metric,
            kernels,
        };
        let graph = GraphCell::new(HnswIo::default(), |_| {
            Hnsw::new(
                params.m,
                params.capacity_hint.min(MAX_CAPACITY_HINT),
                MAX_LAYER,
                params.ef_construction,
                dist,
            )
        });
        HnswRsIndex {
            params,
            kernels,
            graph,
            arena: RwLock::new(Arena::new(params.dim)),
            gate: RwLock::new(()),
            first: Mutex::new(()),
            has_entry: AtomicBool::new(false),
        }
    }

    /// Restores an index from a dump whose manifest [`meta::read`] has verified.
    pub(crate) fn load(dir: &Path, meta: &Meta) -> Result<Self, IndexError> {
        let params = meta.params;
        if params.m != params.m.clamp(2, MAX_M) || params.ef_construction == 0 {
            return Err(IndexError::corrupt(format!(
                "parameters m {} / ef_construction {} cannot have been written by this backend",
                params.m, params.ef_construction
            )));
        }
        if !meta.has_file(ARENA_FILE) {
            return Err(IndexError::corrupt(format!(
                "{ARENA_FILE} missing from the manifest"
            )));
        }
        let arena_path = dir.join(ARENA_FILE);
        let bytes = std::fs::read(&arena_path).map_err(|e| IndexError::io(&arena_path, e))?;
        let arena = Arena::read_from(&bytes, params.dim)?;
        drop(bytes);

        let mut index = HnswRsIndex::new(params);
        let has_graph = GRAPH_FILES.iter().filter(|f| meta.has_file(f)).count();
        if has_graph == 1 {
            return Err(IndexError::corrupt(
                "only one of the two graph files is listed",
            ));
        }
        if has_graph == 2 {
            let dist = HnswDist {
                metric: params.metric,
                kernels: index.kernels,
            };
            let mut graph = GraphCell::try_new(HnswIo::new(dir, GRAPH_BASENAME), |io| {
                match catch_unwind(AssertUnwindSafe(|| {
                    io.load_hnsw_with_dist::<f32, HnswDist>(dist)
                })) {
                    Ok(Ok(g)) => Ok(g),
                    Ok(Err(e)) => Err(IndexError::corrupt(format!("hnsw_rs graph: {e:#}"))),
                    Err(_) => Err(IndexError::corrupt("hnsw_rs graph: its loader panicked")),
                }
            })?;
            // The loader turns this on; a graph built here has it off.
            graph.with_dependent_mut(|_, g| g.set_extend_candidates(false));
            check_graph(&graph, &arena, &params)?;
            index.has_entry = AtomicBool::new(graph.with_dependent(|_, g| g.get_nb_point() > 0));
            index.graph = graph;
        }
        index.arena = RwLock::new(arena);

        // A dump taken while a batch was being inserted holds vectors the graph had
        // not received yet: give them to it now.
        let missing: Vec<(InternalId, Vec<f32>)> = {
            let in_graph = index.graph_ids();
            let arena = index.arena.read();
            let mut out = Vec::new();
            arena.for_each_live(|id, v| {
                if !in_graph.get(id as usize).copied().unwrap_or(false) {
                    out.push((id, v.to_vec()));
                }
            });
            out
        };
        let items: Vec<(InternalId, &[f32])> =
            missing.iter().map(|(id, v)| (*id, v.as_slice())).collect();
        index.insert_graph(&items);
        Ok(index)
    }

    /// `result[id]` is true for every id in the graph.
    fn graph_ids(&self) -> Vec<bool> {
        let mut seen = Vec::new();
        for_each_graph_point(&self.graph, |p| {
            let id = p.get_origin_id();
            if seen.len() <= id {
                seen.resize(id + 1, false);
            }
            seen[id] = true;
            Ok(())
        })
        .expect("the closure never fails");
        seen
    }

    /// Adds arena vectors to the graph. See the module docs for the first point.
    fn insert_graph(&self, items: &[(InternalId, &[f32])]) {
        if items.is_empty() {
            return;
        }
        self.graph.with_dependent(|_, g| {
            let mut rest = items;
            if !self.has_entry.load(Ordering::Acquire) {
                let _first = self.first.lock();
                if !self.has_entry.load(Ordering::Acquire) {
                    let _gate = self.gate.read();
                    let (id, v) = rest[0];
                    g.insert_slice((v, id as usize));
                    self.has_entry.store(true, Ordering::Release);
                    rest = &rest[1..];
                }
            }
            let one = |&(id, v): &(InternalId, &[f32])| {
                let _gate = self.gate.read();
                g.insert_slice((v, id as usize));
            };
            if rest.len() >= PARALLEL_MIN {
                rest.par_iter().for_each(one);
            } else {
                rest.iter().for_each(one);
            }
        });
    }
}

/// Calls `f` for every point of the graph, layer by layer. (`hnsw_rs`'s own
/// iterator over all points panics on an empty graph and read-locks the layers
/// recursively.)
fn for_each_graph_point(
    graph: &GraphCell,
    mut f: impl FnMut(&hnsw_rs::hnsw::Point<'_, f32>) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    graph.with_dependent(|_, g| {
        if g.get_nb_point() == 0 {
            return Ok(());
        }
        let indexation = g.get_point_indexation();
        for layer in 0..=indexation.get_max_level_observed() as usize {
            for p in indexation.get_layer_iterator(layer) {
                f(&p)?;
            }
        }
        Ok(())
    })
}

/// Checks a loaded graph against the arena: right dimension and parameters, every
/// graph id inserted in the arena exactly once.
fn check_graph(graph: &GraphCell, arena: &Arena, params: &IndexParams) -> Result<(), IndexError> {
    let (m, nb_point) =
        graph.with_dependent(|_, g| (g.get_max_nb_connection() as usize, g.get_nb_point()));
    if m != params.m {
        return Err(IndexError::corrupt(format!(
            "graph has m {m}, the manifest {}",
            params.m
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for_each_graph_point(graph, |p| {
        let id = p.get_origin_id();
        let Ok(iid) = InternalId::try_from(id) else {
            return Err(IndexError::corrupt(format!(
                "graph holds id {id}, beyond u32"
            )));
        };
        if p.get_v().len() != params.dim {
            return Err(IndexError::corrupt(format!(
                "graph vector of id {id} has {} components, not {}",
                p.get_v().len(),
                params.dim
            )));
        }
        if !arena.contains(iid) {
            return Err(IndexError::corrupt(format!(
                "graph holds id {id}, the arena does not"
            )));
        }
        if !seen.insert(iid) {
            return Err(IndexError::corrupt(format!("graph holds id {id} twice")));
        }
        Ok(())
    })?;
    if seen.len() != nb_point {
        return Err(IndexError::corrupt(
            "graph point count disagrees with its layers",
        ));
    }
    Ok(())
}

impl VectorIndex for HnswRsIndex {
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
            let mut arena = self.arena.write();
            let mut batch = std::collections::HashSet::with_capacity(items.len());
            if let Some((id, _)) = items
                .iter()
                .find(|(id, _)| arena.contains(*id) || !batch.insert(*id))
            {
                return Err(IndexError::IdInUse(*id));
            }
            for (id, v) in items {
                arena.insert(*id, v);
            }
        }
        self.insert_graph(items);
        Ok(())
    }

    fn delete(&self, id: InternalId) -> bool {
        let _gate = self.gate.read();
        self.arena.write().delete(id)
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&dyn IdFilter>,
    ) -> Vec<Hit> {
        if k == 0 || query.len() != self.params.dim {
            return Vec::new();
        }
        let arena = self.arena.read();
        if arena.live_count() == 0 {
            return Vec::new();
        }
        let live = arena.live_count();
        let accepted = |id: InternalId| filter.is_none_or(|f| f.accept(id));
        // Hits among graph candidates: live, accepted, at their true distance.
        let to_hits = |found: Vec<hnsw_rs::hnsw::Neighbour>| -> Vec<Hit> {
            let mut hits: Vec<Hit> = found
                .iter()
                .filter_map(|n| {
                    let id = InternalId::try_from(n.d_id).ok()?;
                    let v = arena.live_vector(id)?;
                    accepted(id).then(|| Hit {
                        id,
                        distance: distance::distance_with(
                            self.kernels,
                            self.params.metric,
                            query,
                            v,
                        ),
                    })
                })
                .collect();
            sort_hits(&mut hits);
            hits.truncate(k);
            hits
        };
        let ef = ef.max(k);
        let present = live + arena.deleted_count();
        if filter.is_none() && live * TOMBSTONE_FAST_PATH_MAX_RATIO >= present {
            // No caller filter, and tombstones (if any) are a minority. hnsw_rs's
            // filtered search never stops early, so instead search unfiltered with
            // ef scaled up to hold `ef` live candidates on average, keep the whole
            // candidate list, and drop the tombstones; fall back to the filtered
            // search only if that leaves fewer than k hits.
            let ef = if present == live {
                ef
            } else {
                (ef * present)
                    .div_ceil(live)
                    .min(ef * TOMBSTONE_FAST_PATH_MAX_RATIO)
            };
            let knbn = if present == live { k } else { ef };
            let hits = to_hits(
                self.graph
                    .with_dependent(|_, g| g.search_filter(query, knbn, ef, None)),
            );
            if hits.len() >= k.min(live) {
                return hits;
            }
        }
        let graph_filter = |id: &usize| {
            InternalId::try_from(*id).is_ok_and(|id| arena.is_live(id) && accepted(id))
        };
        to_hits(self.graph.with_dependent(|_, g| {
            g.search_filter(query, k, ef, Some(&graph_filter as &dyn FilterT))
        }))
    }

    fn exact_search(&self, query: &[f32], k: usize, filter: Option<&dyn IdFilter>) -> Vec<Hit> {
        if k == 0 || query.len() != self.params.dim {
            return Vec::new();
        }
        let (kernels, metric) = (self.kernels, self.params.metric);
        let mut top = TopK::new(k);
        let arena = self.arena.read();
        arena.for_each_live(|id, v| {
            if filter.is_none_or(|f| f.accept(id)) {
                top.push(id, distance::distance_with(kernels, metric, query, v));
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
        let (kernels, metric) = (self.kernels, self.params.metric);
        let mut top = TopK::new(k);
        let arena = self.arena.read();
        for id in ids {
            if let Some(v) = arena.live_vector(id) {
                top.push(id, distance::distance_with(kernels, metric, query, v));
            }
        }
        top.into_sorted()
    }

    fn vector(&self, id: InternalId) -> Option<Vec<f32>> {
        self.arena.read().live_vector(id).map(<[f32]>::to_vec)
    }

    fn len(&self) -> usize {
        self.arena.read().live_count()
    }

    fn tombstones(&self) -> usize {
        self.arena.read().deleted_count()
    }

    fn dump(&self, dir: &Path) -> Result<(), IndexError> {
        // hnsw_rs panics when it cannot create its files: fail politely first.
        if !dir.is_dir() {
            return Err(IndexError::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "dump directory does not exist",
                ),
            ));
        }
        let _gate = self.gate.write();
        let mut files = Vec::new();
        if self.graph.with_dependent(|_, g| g.get_nb_point()) > 0 {
            let dumped = catch_unwind(AssertUnwindSafe(|| {
                self.graph
                    .with_dependent(|_, g| g.file_dump(dir, GRAPH_BASENAME))
            }));
            match dumped {
                Ok(Ok(name)) if name == GRAPH_BASENAME => {}
                Ok(Ok(name)) => {
                    return Err(IndexError::io(
                        dir,
                        std::io::Error::other(format!(
                            "hnsw_rs chose the dump name {name:?}: the directory was not empty"
                        )),
                    ));
                }
                Ok(Err(e)) => {
                    return Err(IndexError::io(dir, std::io::Error::other(format!("{e:#}"))));
                }
                Err(_) => {
                    return Err(IndexError::io(
                        dir,
                        std::io::Error::other(
                            "hnsw_rs panicked while dumping (could it create its files?)",
                        ),
                    ));
                }
            }
            for f in GRAPH_FILES {
                meta::sync_file(&dir.join(f))?;
                files.push(f.to_string());
            }
        }
        let arena_path = dir.join(ARENA_FILE);
        let write_arena = || -> std::io::Result<()> {
            let mut out =
                std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&arena_path)?);
            self.arena.read().write_to(&mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        };
        write_arena().map_err(|e| IndexError::io(&arena_path, e))?;
        files.push(ARENA_FILE.to_string());
        meta::write(
            dir,
            &Meta {
                backend: Backend::HnswRs,
                params: self.params,
                files,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(metric: Metric, dim: usize) -> IndexParams {
        IndexParams {
            dim,
            metric,
            m: 8,
            ef_construction: 64,
            capacity_hint: 0,
        }
    }

    #[test]
    fn order_preserving_map_is_monotone_and_non_negative() {
        let mut xs = vec![
            f32::NEG_INFINITY,
            -f32::MAX,
            -1e30,
            -2.0,
            -1.0,
            -1.0 + f32::EPSILON,
            -1e-30,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            1e-40,
            f32::MIN_POSITIVE,
            1e-7,
            0.5,
            1.0,
            3.0,
            1e30,
            f32::MAX,
            f32::INFINITY,
        ];
        let mut s = 7u64;
        for _ in 0..10_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = f32::from_bits((s >> 32) as u32);
            if !x.is_nan() {
                xs.push(x);
            }
        }
        xs.sort_by(f32::total_cmp);
        let ys: Vec<f32> = xs
            .iter()
            .map(|&x| order_preserving_non_negative(x))
            .collect();
        assert!(ys.iter().all(|y| y.is_finite() && *y >= 0.0));
        for (w, x) in ys.windows(2).zip(xs.windows(2)) {
            assert!(w[0] <= w[1], "{:?} -> {:?}", x, w);
        }
        // Values two ulps apart stay distinct (neighbours may merge).
        let two_ulps = |x: f32| f32::from_bits(x.to_bits() + 2);
        for x in [0.25f32, 1.0, 3.0e5, -1.0, -7.5e-3] {
            let y = if x > 0.0 {
                two_ulps(x)
            } else {
                -f32::from_bits((-x).to_bits() - 2)
            };
            assert!(x < y);
            assert!(
                order_preserving_non_negative(x) < order_preserving_non_negative(y),
                "{x} {y}"
            );
        }
        assert_eq!(order_preserving_non_negative(f32::NAN), f32::MAX);
    }

    #[test]
    fn graph_distances_are_never_negative_or_nan() {
        let k = distance::selected();
        let big = [f32::MAX, f32::MAX];
        assert_eq!(
            graph_distance(k, Metric::Dot, &big, &big),
            order_preserving_non_negative(f32::NEG_INFINITY)
        );
        assert!(graph_distance(k, Metric::L2, &big, &[-f32::MAX, -f32::MAX]).is_infinite());
        // inf - inf inside the sum: NaN becomes the largest distance.
        let nan = graph_distance(
            k,
            Metric::Dot,
            &[f32::MAX, -f32::MAX],
            &[f32::MAX, f32::MAX],
        );
        assert_eq!(nan, f32::MAX);
        let unit = [0.6f32, 0.8];
        assert_eq!(graph_distance(k, Metric::Cosine, &unit, &unit), 0.0);
        assert!(
            graph_distance(k, Metric::Dot, &[-3.0], &[1.0])
                > graph_distance(k, Metric::Dot, &[3.0], &[1.0])
        );
    }

    #[test]
    fn dot_metric_with_negative_distances_searches_correctly() {
        // Vectors of growing norm along one direction: the largest inner product with
        // (1, 0) is the longest vector, at distance -norm.
        let idx = HnswRsIndex::new(params(Metric::Dot, 2));
        let vs: Vec<Vec<f32>> = (0..200)
            .map(|i| vec![i as f32 * 0.5 - 20.0, (i % 7) as f32])
            .collect();
        let items: Vec<(InternalId, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, v.as_slice()))
            .collect();
        idx.insert(&items).unwrap();
        let hits = idx.search(&[1.0, 0.0], 3, 200, None);
        assert_eq!(
            hits.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![199, 198, 197]
        );
        assert_eq!(hits[0].distance, -79.5);
        assert_eq!(hits, idx.exact_search(&[1.0, 0.0], 3, None));
    }

    #[test]
    fn insert_errors_leave_the_index_unchanged() {
        let idx = HnswRsIndex::new(params(Metric::L2, 2));
        idx.insert(&[(1, &[0.0, 0.0][..])]).unwrap();
        assert!(matches!(
            idx.insert(&[(2, &[1.0][..])]),
            Err(IndexError::DimensionMismatch {
                expected: 2,
                got: 1
            })
        ));
        assert!(matches!(
            idx.insert(&[(3, &[1.0, 1.0][..]), (1, &[1.0, 1.0][..])]),
            Err(IndexError::IdInUse(1))
        ));
        assert!(matches!(
            idx.insert(&[(4, &[1.0, 1.0][..]), (4, &[1.0, 1.0][..])]),
            Err(IndexError::IdInUse(4))
        ));
        assert_eq!(idx.len(), 1);
        assert!(idx.vector(3).is_none() && idx.vector(4).is_none());
        // A deleted id stays used.
        assert!(idx.delete(1));
        assert!(matches!(
            idx.insert(&[(1, &[0.0, 0.0][..])]),
            Err(IndexError::IdInUse(1))
        ));
        assert!(idx.insert(&[]).is_ok());
        assert!(idx.search(&[0.0, 0.0], 5, 10, None).is_empty());
        assert!(idx.search(&[0.0], 5, 10, None).is_empty());
    }

    #[test]
    fn parameters_are_clamped_to_what_hnsw_rs_can_hold() {
        let idx = HnswRsIndex::new(IndexParams {
            m: 1000,
            ef_construction: 0,
            ..params(Metric::L2, 3)
        });
        assert_eq!((idx.params().m, idx.params().ef_construction), (255, 1));
        assert_eq!(
            HnswRsIndex::new(IndexParams {
                m: 0,
                ..params(Metric::L2, 3)
            })
            .params()
            .m,
            2
        );
    }

    #[test]
    fn first_points_inserted_in_parallel_are_all_reachable() {
        // Many small parallel batches into empty indexes: every point must be
        // findable by the graph search, not only by the exact scan.
        for round in 0..20u32 {
            let idx = HnswRsIndex::new(params(Metric::L2, 2));
            let vs: Vec<Vec<f32>> = (0..40)
                .map(|i| vec![(i * 7 % 40) as f32, round as f32])
                .collect();
            let items: Vec<(InternalId, &[f32])> = vs
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v.as_slice()))
                .collect();
            idx.insert(&items).unwrap();
            for (i, v) in vs.iter().enumerate() {
                let hits = idx.search(v, 1, 40, None);
                assert_eq!(hits[0].id, i as u32, "round {round}");
                assert_eq!(hits[0].distance, 0.0);
            }
        }
    }

    fn dump_and_load(idx: &HnswRsIndex) -> HnswRsIndex {
        let dir = tempfile::tempdir().unwrap();
        idx.dump(dir.path()).unwrap();
        HnswRsIndex::load(dir.path(), &meta::read(dir.path()).unwrap()).unwrap()
    }

    #[test]
    fn dumping_into_a_missing_directory_is_an_error() {
        let idx = HnswRsIndex::new(params(Metric::L2, 2));
        idx.insert(&[(0, &[1.0, 2.0][..])]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(idx.dump(&missing), Err(IndexError::Io { .. })));
    }

    #[test]
    fn load_gives_the_graph_the_vectors_a_dump_caught_in_flight() {
        // A dump taken between an insert's arena update and its graph insertions
        // holds vectors the graph lacks; simulate that by writing the arena alone.
        let idx = HnswRsIndex::new(params(Metric::L2, 2));
        let vs: Vec<Vec<f32>> = (0..50).map(|i| vec![i as f32, 0.0]).collect();
        let items: Vec<(InternalId, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, v.as_slice()))
            .collect();
        idx.insert(&items).unwrap();
        {
            let mut arena = idx.arena.write();
            arena.insert(50, &[100.0, 100.0]);
            arena.insert(51, &[-100.0, 5.0]);
            arena.delete(51);
        }
        assert!(idx.search(&[100.0, 100.0], 1, 64, None)[0].id != 50);
        let loaded = dump_and_load(&idx);
        assert_eq!(loaded.search(&[100.0, 100.0], 1, 64, None)[0].id, 50);
        let in_graph = loaded.graph_ids();
        assert!(in_graph[50] && in_graph.get(51).is_none_or(|b| !b));
        assert_eq!((loaded.len(), loaded.tombstones()), (51, 1));

        // Nothing in the graph yet (the very first batch was in flight).
        let idx = HnswRsIndex::new(params(Metric::Cosine, 2));
        idx.arena.write().insert(0, &[0.6, 0.8]);
        idx.arena.write().insert(1, &[1.0, 0.0]);
        let loaded = dump_and_load(&idx);
        let hits = loaded.search(&[1.0, 0.0], 2, 10, None);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1, 0]);
        assert!(loaded.has_entry.load(Ordering::Acquire));
    }
}
