//! Exact ground truth by brute force, and recall against it.

use rayon::prelude::*;
use shoal_core::Metric;

/// The ids (row numbers in `base`) of the exact `k` nearest base vectors of every
/// query, nearest first, ties broken by the lower id. Rows have `min(k, base.len())`
/// ids.
///
/// Scores are accumulated in f64: squared distance for `L2` (exact on integer data
/// such as SIFT), the inner product for `DOT`, and the cosine similarity of the
/// vectors as given (normalised here; a zero vector has similarity 0) for `COSINE`.
/// Queries run in parallel on the current rayon pool.
///
/// # Panics
/// If a vector's length differs from the first base vector's.
pub fn ground_truth(
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    k: usize,
    metric: Metric,
) -> Vec<Vec<u32>> {
    let dim = base.first().map_or(0, Vec::len);
    assert!(
        base.iter().chain(queries).all(|v| v.len() == dim),
        "ground_truth: every base and query vector must have {dim} components"
    );
    assert!(
        base.len() <= u32::MAX as usize,
        "ground_truth: too many base vectors"
    );
    let base_norms: Vec<f64> = match metric {
        Metric::Cosine => base.par_iter().map(|v| norm(v)).collect(),
        _ => Vec::new(),
    };
    queries
        .par_iter()
        .map(|q| {
            let q_norm = norm(q);
            // Smaller key is nearer.
            let mut keyed: Vec<(f64, u32)> = base
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let key = match metric {
                        Metric::L2 => q
                            .iter()
                            .zip(b)
                            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                            .sum(),
                        Metric::Dot => -dot(q, b),
                        Metric::Cosine => {
                            let denom = q_norm * base_norms[i];
                            if denom > 0.0 { -dot(q, b) / denom } else { 0.0 }
                        }
                    };
                    // `+ 0.0` turns -0.0 into 0.0 so that total_cmp sees them as a tie.
                    (key + 0.0, i as u32)
                })
                .collect();
            let cmp = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            let k = k.min(keyed.len());
            if k == 0 {
                return Vec::new();
            }
            if k < keyed.len() {
                keyed.select_nth_unstable_by(k - 1, cmp);
                keyed.truncate(k);
            }
            keyed.sort_unstable_by(cmp);
            keyed.into_iter().map(|(_, id)| id).collect()
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn norm(v: &[f32]) -> f64 {
    dot(v, v).sqrt()
}

/// Mean over the queries of `truth` of `|found[..k] ∩ truth[..k]| / k` (rows shorter
/// than `k` count what they have; a missing `found` row counts 0; repeated ids in a
/// `found` row count once). Returns 0 when `k` is 0 or there are no queries.
pub fn recall_at_k(found: &[Vec<u32>], truth: &[Vec<u32>], k: usize) -> f64 {
    if k == 0 || truth.is_empty() {
        return 0.0;
    }
    let hits: usize = truth
        .iter()
        .enumerate()
        .map(|(q, t)| {
            let t = &t[..k.min(t.len())];
            let Some(f) = found.get(q) else { return 0 };
            let mut f: Vec<u32> = f[..k.min(f.len())].to_vec();
            f.sort_unstable();
            f.dedup();
            f.iter().filter(|id| t.contains(id)).count()
        })
        .sum();
    hits as f64 / (k * truth.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_dot_and_cosine_on_a_hand_made_set() {
        let base = vec![
            vec![0.0, 0.0], // 0
            vec![1.0, 0.0], // 1
            vec![0.0, 2.0], // 2
            vec![3.0, 3.0], // 3
            vec![1.0, 0.0], // 4: duplicate of 1, loses ties to it
        ];
        let q = vec![vec![1.0, 0.1]];
        assert_eq!(ground_truth(&base, &q, 3, Metric::L2), vec![vec![1, 4, 0]]);
        assert_eq!(
            ground_truth(&base, &q, 10, Metric::L2),
            vec![vec![1, 4, 0, 2, 3]]
        );
        // Inner products with (1, .1): 0, 1, .2, 3.3, 1.
        assert_eq!(ground_truth(&base, &q, 3, Metric::Dot), vec![vec![3, 1, 4]]);
        // Cosine: 1 and 4 point almost the way of the query (0.995), then 3 (0.774),
        // then 2 (0.0995); the zero vector has similarity 0.
        assert_eq!(
            ground_truth(&base, &q, 5, Metric::Cosine),
            vec![vec![1, 4, 3, 2, 0]]
        );
        // A zero-similarity tie goes to the lower id.
        let q0 = vec![vec![0.0, -1.0]];
        assert_eq!(
            ground_truth(&base, &q0, 2, Metric::Cosine),
            vec![vec![0, 1]]
        );
        assert_eq!(
            ground_truth(&base, &q, 0, Metric::L2),
            vec![Vec::<u32>::new()]
        );
        assert!(ground_truth(&base, &[], 3, Metric::L2).is_empty());
    }

    #[test]
    fn recall() {
        let truth = vec![vec![1, 2, 3], vec![4, 5, 6]];
        assert_eq!(recall_at_k(&truth, &truth, 3), 1.0);
        let found = vec![vec![1, 9, 3], vec![6, 6, 6]];
        // (2 + 1) / 6
        assert!((recall_at_k(&found, &truth, 3) - 0.5).abs() < 1e-12);
        assert_eq!(recall_at_k(&found, &truth, 1), 0.5);
        assert_eq!(recall_at_k(&found[..1], &truth, 3), 2.0 / 6.0);
        assert_eq!(recall_at_k(&found, &truth, 0), 0.0);
    }
}
