//! Reading a shard: searches (with the strategy choice between exact scan and graph),
//! gets, scrolls and counts.
//!
//! Reads take only the state lock, for reading, and never the writer lock: they run on
//! any thread, the shard's pool included, and never wait for a write's index inserts.
//! A filter is always answered from the payload index, never by a pass over every
//! payload.

use shoal_core::{Filter, PointId, RetrievedPoint, ScoredPoint, SearchRequest};
use shoal_index::{Hit, IdFilter, InternalId};

use super::Shard;

impl Shard {
    /// Nearest neighbours of a validated query within this shard, nearest first.
    pub fn search(&self, req: &SearchRequest) -> Vec<ScoredPoint> {
        // With no bound on the scan, every strategy is light: never `None`.
        self.search_if_light(req, usize::MAX).unwrap_or_default()
    }

    /// [`Shard::search`] if it is a bounded amount of work — a graph search (its cost
    /// bounded by `ef`) or an exact scan of at most `max_scan` vectors — else `None`,
    /// decided before any distance is computed (declined: an exact scan of more than
    /// `max_scan` vectors in a shard larger than the exact threshold). Callers use it
    /// to run light searches on their own thread and hand the others to a pool.
    pub fn search_if_light(
        &self,
        req: &SearchRequest,
        max_scan: usize,
    ) -> Option<Vec<ScoredPoint>> {
        let st = self.inner.state.read();
        let opts = &self.inner.options;
        let k = req.top_k as usize;
        let ef = req.effective_ef();
        let q = req.vector.as_slice();
        let live_count = st.ids.len();
        let hits: Vec<Hit> = match &req.filter {
            None => {
                let live = |id: InternalId| st.is_live(id);
                if live_count <= opts.exact_threshold {
                    st.index.exact_search(q, k, Some(&live))
                } else {
                    // Unfiltered graph search (a filter makes backends take a slower
                    // path). Hits not yet published by a concurrent write are dropped;
                    // only if that leaves fewer than k is the search redone with the
                    // liveness check in the loop.
                    let mut hits = st.index.search(q, k, ef, None);
                    hits.retain(|h| st.is_live(h.id));
                    if hits.len() < k.min(live_count) {
                        hits = st.index.search(q, k, ef, Some(&live));
                    }
                    hits
                }
            }
            Some(filter) => {
                let matches = st.matching(filter);
                let count = matches.len() as usize;
                let among = || matches.iter().collect::<Vec<InternalId>>();
                let small = count <= k
                    || live_count <= opts.exact_threshold
                    || (count as f64) <= opts.filter_exact_fraction * live_count as f64;
                if small {
                    // A shard within the exact threshold is always cheap to scan.
                    if count > max_scan && live_count > opts.exact_threshold.max(max_scan) {
                        return None;
                    }
                    st.index.exact_search_among(q, k, &among())
                } else {
                    let accept = |id: InternalId| matches.contains(id);
                    let hits = st.index.search(q, k, ef, Some(&accept as &dyn IdFilter));
                    if hits.len() < k.min(count) {
                        st.index.exact_search_among(q, k, &among())
                    } else {
                        hits
                    }
                }
            }
        };
        let metric = self.inner.config.metric;
        Some(
            hits.into_iter()
                .filter_map(|h| {
                    let rec = st.record(h.id)?;
                    Some(ScoredPoint {
                        id: rec.id,
                        score: metric.score_from_distance(h.distance),
                        payload: req.with_payload.then(|| rec.payload.clone()),
                        vector: if req.with_vector {
                            st.index.vector(h.id)
                        } else {
                            None
                        },
                    })
                })
                .collect(),
        )
    }

    /// The points with these ids that exist here, in the order asked.
    pub fn get(
        &self,
        ids: &[PointId],
        with_payload: bool,
        with_vector: bool,
    ) -> Vec<RetrievedPoint> {
        let st = self.inner.state.read();
        ids.iter()
            .filter_map(|id| st.retrieved(*st.ids.get(id)?, with_payload, with_vector))
            .collect()
    }

    /// Up to `limit` points with id `>= offset` matching `filter`, in id order.
    pub fn scroll(
        &self,
        offset: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
        with_payload: bool,
        with_vector: bool,
    ) -> Vec<RetrievedPoint> {
        let st = self.inner.state.read();
        let range = match offset {
            Some(o) => st.ids.range(o..),
            None => st.ids.range(..),
        };
        let matches = filter.map(|f| st.matching(f));
        range
            .filter(|(_, iid)| matches.as_ref().is_none_or(|m| m.contains(**iid)))
            .take(limit)
            .filter_map(|(_, iid)| st.retrieved(*iid, with_payload, with_vector))
            .collect()
    }

    /// Number of points, or of points matching `filter`.
    pub fn count(&self, filter: Option<&Filter>) -> u64 {
        let st = self.inner.state.read();
        match filter {
            None => st.ids.len() as u64,
            Some(f) => st.matching(f).len(),
        }
    }
}
