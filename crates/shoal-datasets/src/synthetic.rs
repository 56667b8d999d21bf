//! Seeded synthetic data sets. The same `(n, dim, …, seed)` always gives the same
//! vectors (for a given version of `rand`, whose `StdRng` these use).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Standard deviation of each component around its cluster centre in [`clustered`].
pub const CLUSTER_SIGMA: f32 = 0.1;

/// `n` vectors of `dim` components drawn uniformly from `[-1, 1)`.
pub fn uniform(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

/// `n` vectors in `clusters` Gaussian blobs: centres uniform in `[-1, 1)^dim`, each
/// vector picks a centre at random and adds independent `N(0, CLUSTER_SIGMA²)`
/// noise to every component. `clusters == 0` is treated as 1.
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let clusters = clusters.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    let noise = Normal::new(0.0f32, CLUSTER_SIGMA).expect("sigma is finite and positive");
    (0..n)
        .map(|_| {
            let c = &centres[rng.random_range(0..clusters)];
            c.iter().map(|&x| x + noise.sample(&mut rng)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_deterministic_and_in_range() {
        let a = uniform(50, 7, 1);
        assert_eq!(a, uniform(50, 7, 1));
        assert_ne!(a, uniform(50, 7, 2));
        assert_eq!(a.len(), 50);
        assert!(a.iter().all(|v| v.len() == 7));
        assert!(a.iter().flatten().all(|&x| (-1.0..1.0).contains(&x)));
        // Uses the range: some components on each side of zero.
        assert!(a.iter().flatten().any(|&x| x < -0.5) && a.iter().flatten().any(|&x| x > 0.5));
    }

    #[test]
    fn clustered_is_deterministic_and_clustered() {
        let a = clustered(400, 16, 4, 9);
        assert_eq!(a, clustered(400, 16, 4, 9));
        assert_ne!(a, clustered(400, 16, 4, 10));
        assert!(a.iter().all(|v| v.len() == 16));
        // Every point is within a few sigma of its nearest other point's blob: the
        // nearest neighbour is much closer than a typical pair of uniform points.
        let d2 =
            |x: &[f32], y: &[f32]| -> f32 { x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum() };
        let nn: f32 = a[1..]
            .iter()
            .map(|v| d2(&a[0], v))
            .fold(f32::INFINITY, f32::min);
        let sigma2 = CLUSTER_SIGMA * CLUSTER_SIGMA;
        // Two points of one blob differ by N(0, 2 sigma^2) per component.
        assert!(nn < 16.0 * 2.0 * sigma2 * 2.0, "nearest {nn}");
        // Only four distinct blobs: pairwise distances are bimodal, so many pairs are
        // close.
        let close = a[1..]
            .iter()
            .filter(|v| d2(&a[0], v) < 16.0 * 2.0 * sigma2 * 2.0)
            .count();
        assert!(close > 40, "{close}");
        assert_eq!(clustered(3, 2, 0, 1).len(), 3);
    }
}
