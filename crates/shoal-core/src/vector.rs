//! Vector preparation shared by every write and every query, and the range of vectors
//! accepted.
//!
//! The accepted range is chosen so that **no stored vector and no query can produce a
//! score that is not a finite number**, with any metric and any kernel:
//!
//! - every component is finite;
//! - for `L2` and `DOT`, `|component| ≤` [`MAX_COMPONENT`] (10^15), and no collection
//!   has more than [`MAX_DIM`] (2^20) dimensions. The largest sum a kernel forms is
//!   then `Σ (a_i − b_i)^2 ≤ 2^20 × (2 × 10^15)^2 ≈ 4.2 × 10^36`, about 80 times below
//!   `f32::MAX`; a partial sum never exceeds the sum of the absolute values of its
//!   terms, so no accumulator order can overflow either;
//! - for `COSINE`, any finite vector that is not all zeros: it is normalised in double
//!   precision (where the squares of every `f32`, subnormals included, are normal
//!   numbers), so the stored unit vector is finite and its scores lie in `[-1, 1]`
//!   (up to rounding).

use crate::Metric;

/// Largest magnitude of an `L2` or `DOT` vector component (see the module docs).
pub const MAX_COMPONENT: f32 = 1e15;

/// Largest `dim` of any collection, whatever the server's `--max-dim` (see the
/// module docs: the component bound is derived from it).
pub const MAX_DIM: u32 = 1 << 20;

/// Squared Euclidean norm, accumulated in f64 so huge components cannot overflow to
/// infinity unnoticed.
pub fn norm_sq(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum()
}

/// Returns the vector the index stores for `metric`: unit length for `COSINE`,
/// unchanged otherwise. The caller has validated that a `COSINE` vector is finite and
/// non-zero. The division happens in f64: `1 / norm` of a vector of subnormal
/// components overflows `f32` (`[1e-40, 0, …]` would become `[inf, NaN, …]`).
pub fn prepare(metric: Metric, mut v: Vec<f32>) -> Vec<f32> {
    if metric == Metric::Cosine {
        let n = norm_sq(&v).sqrt();
        if n > 0.0 && n.is_finite() {
            v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_keeps_the_widest_sum_finite() {
        let d = MAX_DIM as f32;
        let m = MAX_COMPONENT;
        assert!((d * (2.0 * m) * (2.0 * m)).is_finite());
        assert!(d * (2.0 * m) * (2.0 * m) < f32::MAX / 50.0);
    }

    #[test]
    fn tiny_cosine_vectors_normalise_finitely() {
        for tiny in [1e-40f32, f32::from_bits(1), f32::MIN_POSITIVE] {
            let v = prepare(Metric::Cosine, vec![tiny, 0.0, -tiny]);
            assert!(v.iter().all(|x| x.is_finite()), "{tiny}: {v:?}");
            assert!((norm_sq(&v) - 1.0).abs() < 1e-6, "{tiny}: {v:?}");
        }
        let v = prepare(Metric::Cosine, vec![f32::MAX, f32::MAX]);
        assert!((norm_sq(&v) - 1.0).abs() < 1e-6, "{v:?}");
    }
}
