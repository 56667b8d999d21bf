//! Distance kernels: squared L2 and inner product over `f32` slices, and the
//! per-metric [`distance`] every backend returns (smaller is nearer).
//!
//! The kernel is chosen once per process at first use: AVX-512F, else AVX2 + FMA,
//! else a portable loop written so that the compiler vectorises it for the baseline
//! target. Every kernel sums in a different order, so results differ from each other
//! in the last bits; none of them is bit-identical to a sequential sum.
//!
//! Kernels read `min(a.len(), b.len())` components and never index out of bounds;
//! callers pass slices of equal length.

use std::sync::OnceLock;

use shoal_core::Metric;

/// A pair of kernels of one instruction set. Only this module builds them, after
/// checking that the CPU runs them.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct Kernels {
    /// Short name for benchmarks and logs: `avx512f`, `avx2+fma` or `portable`.
    pub name: &'static str,
    /// Squared Euclidean distance.
    pub l2_sq: fn(&[f32], &[f32]) -> f32,
    /// Inner product.
    pub dot: fn(&[f32], &[f32]) -> f32,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("name", &self.name).finish()
    }
}

/// The portable kernels, available everywhere.
pub const PORTABLE: Kernels = Kernels {
    name: "portable",
    l2_sq: portable::l2_sq,
    dot: portable::dot,
};

/// Every kernel set this CPU can run, fastest first; the last is [`PORTABLE`].
pub fn available() -> Vec<Kernels> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            out.push(Kernels {
                name: "avx512f",
                l2_sq: x86::l2_sq_avx512,
                dot: x86::dot_avx512,
            });
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            out.push(Kernels {
                name: "avx2+fma",
                l2_sq: x86::l2_sq_avx2,
                dot: x86::dot_avx2,
            });
        }
    }
    out.push(PORTABLE);
    out
}

/// The kernels in use: the fastest of [`available`], chosen once.
pub fn selected() -> &'static Kernels {
    static SELECTED: OnceLock<Kernels> = OnceLock::new();
    SELECTED.get_or_init(|| available()[0])
}

/// Squared Euclidean distance with the selected kernel.
#[inline]
pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    (selected().l2_sq)(a, b)
}

/// Inner product with the selected kernel.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (selected().dot)(a, b)
}

/// The index distance of `metric`, smaller is nearer: squared L2 for `L2`, `1 - dot`
/// for `COSINE` (vectors are unit length), `-dot` for `DOT`.
#[inline]
pub fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    distance_with(selected(), metric, a, b)
}

/// [`distance`] with the given kernels.
#[inline]
pub fn distance_with(k: &Kernels, metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::L2 => (k.l2_sq)(a, b),
        Metric::Cosine => 1.0 - (k.dot)(a, b),
        Metric::Dot => -(k.dot)(a, b),
    }
}

/// Plain loops with 16 independent accumulators, which the compiler turns into SIMD
/// for whatever the target guarantees (SSE2 on x86-64, NEON on aarch64).
pub mod portable {
    const LANES: usize = 16;

    /// Squared Euclidean distance.
    pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        let mut tail = 0.0;
        for (x, y) in ra.iter().zip(rb) {
            let d = x - y;
            tail += d * d;
        }
        acc.iter().sum::<f32>() + tail
    }

    /// Inner product.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        let mut tail = 0.0;
        for (x, y) in ra.iter().zip(rb) {
            tail += x * y;
        }
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The safe wrappers here are only ever placed in a [`super::Kernels`] after
    //! `is_x86_feature_detected!` confirmed the features they enable.

    use std::arch::x86_64::*;

    pub fn l2_sq_avx512(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only reachable through `available()`, which checked avx512f.
        unsafe { l2_sq_avx512_impl(a, b) }
    }

    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { dot_avx512_impl(a, b) }
    }

    pub fn l2_sq_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only reachable through `available()`, which checked avx2 and fma.
        unsafe { l2_sq_avx2_impl(a, b) }
    }

    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { dot_avx2_impl(a, b) }
    }

    /// Sums 64 components per step in four registers, then 16 at a time, then the
    /// last `n % 16` with a masked load (masked-off lanes are not read).
    #[target_feature(enable = "avx512f")]
    unsafe fn l2_sq_avx512_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: every load below reads lanes `i..i + 16` with `i + 16 <= n`, or
        // masks off the lanes at and beyond `n`.
        unsafe {
            let mut s0 = _mm512_setzero_ps();
            let mut s1 = _mm512_setzero_ps();
            let mut s2 = _mm512_setzero_ps();
            let mut s3 = _mm512_setzero_ps();
            while i + 64 <= n {
                let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
                let d1 = _mm512_sub_ps(
                    _mm512_loadu_ps(pa.add(i + 16)),
                    _mm512_loadu_ps(pb.add(i + 16)),
                );
                let d2 = _mm512_sub_ps(
                    _mm512_loadu_ps(pa.add(i + 32)),
                    _mm512_loadu_ps(pb.add(i + 32)),
                );
                let d3 = _mm512_sub_ps(
                    _mm512_loadu_ps(pa.add(i + 48)),
                    _mm512_loadu_ps(pb.add(i + 48)),
                );
                s0 = _mm512_fmadd_ps(d0, d0, s0);
                s1 = _mm512_fmadd_ps(d1, d1, s1);
                s2 = _mm512_fmadd_ps(d2, d2, s2);
                s3 = _mm512_fmadd_ps(d3, d3, s3);
                i += 64;
            }
            while i + 16 <= n {
                let d = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
                s0 = _mm512_fmadd_ps(d, d, s0);
                i += 16;
            }
            if i < n {
                let mask: __mmask16 = (1u16 << (n - i)) - 1;
                let d = _mm512_sub_ps(
                    _mm512_maskz_loadu_ps(mask, pa.add(i)),
                    _mm512_maskz_loadu_ps(mask, pb.add(i)),
                );
                s1 = _mm512_fmadd_ps(d, d, s1);
            }
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)))
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_avx512_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: as in `l2_sq_avx512_impl`.
        unsafe {
            let mut s0 = _mm512_setzero_ps();
            let mut s1 = _mm512_setzero_ps();
            let mut s2 = _mm512_setzero_ps();
            let mut s3 = _mm512_setzero_ps();
            while i + 64 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                s1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16)),
                    _mm512_loadu_ps(pb.add(i + 16)),
                    s1,
                );
                s2 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 32)),
                    _mm512_loadu_ps(pb.add(i + 32)),
                    s2,
                );
                s3 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 48)),
                    _mm512_loadu_ps(pb.add(i + 48)),
                    s3,
                );
                i += 64;
            }
            while i + 16 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                i += 16;
            }
            if i < n {
                let mask: __mmask16 = (1u16 << (n - i)) - 1;
                s1 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(mask, pa.add(i)),
                    _mm512_maskz_loadu_ps(mask, pb.add(i)),
                    s1,
                );
            }
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)))
        }
    }

    /// Horizontal sum of 8 lanes.
    #[target_feature(enable = "avx2")]
    fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// 32 components per step in four registers, then 8 at a time, then a scalar
    /// tail of `n % 8`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_sq_avx2_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: every load reads lanes `i..i + 8` with `i + 8 <= n`.
        let mut sum = unsafe {
            let mut s0 = _mm256_setzero_ps();
            let mut s1 = _mm256_setzero_ps();
            let mut s2 = _mm256_setzero_ps();
            let mut s3 = _mm256_setzero_ps();
            while i + 32 <= n {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                let d1 = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                );
                let d2 = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 16)),
                    _mm256_loadu_ps(pb.add(i + 16)),
                );
                let d3 = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 24)),
                    _mm256_loadu_ps(pb.add(i + 24)),
                );
                s0 = _mm256_fmadd_ps(d0, d0, s0);
                s1 = _mm256_fmadd_ps(d1, d1, s1);
                s2 = _mm256_fmadd_ps(d2, d2, s2);
                s3 = _mm256_fmadd_ps(d3, d3, s3);
                i += 32;
            }
            while i + 8 <= n {
                let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                s0 = _mm256_fmadd_ps(d, d, s0);
                i += 8;
            }
            hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)))
        };
        for j in i..n {
            let d = a[j] - b[j];
            sum += d * d;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: as in `l2_sq_avx2_impl`.
        let mut sum = unsafe {
            let mut s0 = _mm256_setzero_ps();
            let mut s1 = _mm256_setzero_ps();
            let mut s2 = _mm256_setzero_ps();
            let mut s3 = _mm256_setzero_ps();
            while i + 32 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    s1,
                );
                s2 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 16)),
                    _mm256_loadu_ps(pb.add(i + 16)),
                    s2,
                );
                s3 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 24)),
                    _mm256_loadu_ps(pb.add(i + 24)),
                    s3,
                );
                i += 32;
            }
            while i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                i += 8;
            }
            hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)))
        };
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_l2(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum()
    }

    fn reference_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    /// Deterministic pseudo-random components in [-2, 2).
    fn vector(seed: u64, dim: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn every_kernel_matches_the_f64_reference() {
        let kernels = available();
        assert_eq!(kernels.last().unwrap().name, "portable");
        eprintln!("kernels: {:?}, selected {}", kernels, selected().name);
        for dim in 1..=300 {
            let a = vector(dim as u64, dim);
            let b = vector(dim as u64 + 1000, dim);
            let (rl2, rdot) = (reference_l2(&a, &b), reference_dot(&a, &b));
            // The error of an f32 sum grows with the number of terms and their size
            // (each term is at most 16 here).
            let tol = 1e-5 * (1.0 + dim as f64 * 16.0);
            for k in &kernels {
                let l2 = (k.l2_sq)(&a, &b) as f64;
                let d = (k.dot)(&a, &b) as f64;
                assert!(
                    (l2 - rl2).abs() <= tol,
                    "{} l2 dim {dim}: {l2} vs {rl2}",
                    k.name
                );
                assert!(
                    (d - rdot).abs() <= tol,
                    "{} dot dim {dim}: {d} vs {rdot}",
                    k.name
                );
            }
        }
    }

    #[test]
    fn exact_on_small_integers_and_every_tail_length() {
        // Small integers are summed exactly in f32 whatever the order, so every
        // kernel must agree exactly; this checks each lane and each tail is counted
        // once.
        for k in available() {
            for dim in 0..=150 {
                let a: Vec<f32> = (0..dim).map(|i| (i % 7) as f32).collect();
                let b: Vec<f32> = (0..dim).map(|i| (i % 5) as f32 - 2.0).collect();
                let want_l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
                let want_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                assert_eq!((k.l2_sq)(&a, &b), want_l2, "{} dim {dim}", k.name);
                assert_eq!((k.dot)(&a, &b), want_dot, "{} dim {dim}", k.name);
            }
        }
    }

    #[test]
    fn unequal_lengths_use_the_common_prefix() {
        for k in available() {
            assert_eq!((k.dot)(&[1.0, 2.0, 3.0], &[1.0, 1.0]), 3.0, "{}", k.name);
            assert_eq!((k.l2_sq)(&[1.0; 40], &[0.0; 17]), 17.0, "{}", k.name);
        }
    }

    #[test]
    fn metric_distances() {
        let a = [0.6, 0.8];
        let b = [1.0, 0.0];
        assert!((distance(Metric::L2, &a, &b) - 0.8).abs() < 1e-6);
        assert!((distance(Metric::Cosine, &a, &b) - 0.4).abs() < 1e-6);
        assert!((distance(Metric::Dot, &a, &b) + 0.6).abs() < 1e-6);
        assert!((l2_sq(&a, &b) - 0.8).abs() < 1e-6);
        assert!((dot(&a, &b) - 0.6).abs() < 1e-6);
    }

    mod finite_scores {
        //! Any vector and query that pass `shoal_core::validate` give a finite score
        //! with every metric and every kernel.

        use proptest::prelude::*;
        use shoal_core::vector::{MAX_COMPONENT, MAX_DIM};
        use shoal_core::{CollectionConfig, HnswParams, Metric, validate};

        use super::super::{available, distance_with};

        fn config(metric: Metric, dim: usize) -> CollectionConfig {
            CollectionConfig {
                name: "c".into(),
                dim: dim as u32,
                metric,
                shard_count: 1,
                replication_factor: 1,
                hnsw: HnswParams::default(),
            }
        }

        /// Components of every scale an adversary might send: zeros, subnormals,
        /// tiny, ordinary, around the bound, near `f32::MAX`, and raw bit patterns.
        fn component() -> impl Strategy<Value = f32> {
            prop_oneof![
                Just(0.0f32),
                (1u32..0x0080_0000).prop_map(f32::from_bits),
                -1e-30f32..1e-30,
                -10.0f32..10.0,
                (0.5f32..1.5).prop_map(|x| x * MAX_COMPONENT),
                (-1.5f32..-0.5).prop_map(|x| x * MAX_COMPONENT),
                (0.5f32..1.0).prop_map(|x| x * f32::MAX),
                any::<u32>().prop_map(f32::from_bits),
            ]
        }

        fn metric() -> impl Strategy<Value = Metric> {
            prop_oneof![Just(Metric::L2), Just(Metric::Dot), Just(Metric::Cosine)]
        }

        fn assert_finite(metric: Metric, a: &[f32], b: &[f32]) {
            for k in available() {
                let d = distance_with(&k, metric, a, b);
                let score = metric.score_from_distance(d);
                assert!(
                    d.is_finite() && score.is_finite(),
                    "{metric:?} with {}: distance {d}, score {score}",
                    k.name
                );
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn validated_vectors_score_finitely(
                metric in metric(),
                pair in (1usize..40).prop_flat_map(|dim| (
                    prop::collection::vec(component(), dim),
                    prop::collection::vec(component(), dim),
                )),
            ) {
                let cfg = config(metric, pair.0.len());
                let stored = validate::vector(&cfg, "v", pair.0);
                let query = validate::vector(&cfg, "q", pair.1);
                if let (Ok(a), Ok(b)) = (stored, query) {
                    assert_finite(metric, &a, &b);
                    assert_finite(metric, &a, &a);
                }
            }
        }

        /// The worst case the bound allows: the widest collection, every component
        /// at the bound with opposite signs.
        #[test]
        fn the_widest_extreme_vectors_score_finitely() {
            let dim = MAX_DIM as usize;
            for metric in [Metric::L2, Metric::Dot, Metric::Cosine] {
                let cfg = config(metric, dim);
                let a = validate::vector(&cfg, "v", vec![MAX_COMPONENT; dim]).unwrap();
                let b = validate::vector(&cfg, "q", vec![-MAX_COMPONENT; dim]).unwrap();
                assert_finite(metric, &a, &b);
                assert_finite(metric, &a, &a);
            }
        }
    }
}
