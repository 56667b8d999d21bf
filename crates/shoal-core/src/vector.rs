//! Vector preparation shared by every write and every query.

use crate::Metric;

/// Squared Euclidean norm, accumulated in f64 so huge components cannot overflow to
/// infinity unnoticed.
pub fn norm_sq(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum()
}

/// Returns the vector the index stores for `metric`: unit length for `COSINE`,
/// unchanged otherwise. The caller has validated that a `COSINE` vector is non-zero.
pub fn prepare(metric: Metric, mut v: Vec<f32>) -> Vec<f32> {
    if metric == Metric::Cosine {
        let n = norm_sq(&v).sqrt();
        if n > 0.0 {
            let inv = (1.0 / n) as f32;
            v.iter_mut().for_each(|x| *x *= inv);
        }
    }
    v
}
