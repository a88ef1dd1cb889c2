//! What a trained adapter did, measured as the papers measure it, on f64 row-major matrices (`linalg`):
//!
//! - `subspace_similarity` (LoRA, Hu et al. 2021, Section 7.2): how much two adapters' A matrices share
//!   the directions they read, `phi(i, j) = ||U_i^T V_j||_F^2 / min(i, j)` for the top-i and top-j
//!   right-singular vectors of each. 1: one subspace contains the other; 0: orthogonal.
//! - `amplification` (Section 7.3): how the update relates to the weight it updates. Project W onto
//!   dW's own top-r singular directions, `||U^T W V||_F`: small next to `||dW||_F` means the update
//!   amplifies directions W did not stress (the paper's factor `||dW||_F / ||U^T W V||_F`, about 21 for
//!   r = 4 on GPT-3's Wq); random directions of the same rank give the baseline.
//! - `magnitude_direction_change` (DoRA, Liu et al. 2024, Section 2.1): split each weight into per-output
//!   magnitudes and unit directions and report the mean change of each, `dM` and `dD` (1 - cosine). The
//!   paper's Figure 2 plots dD against dM for full fine-tuning, LoRA and DoRA.

use crate::linalg::{matmul, qr, svd, transpose};
use lowrank_tensor::{rng, Cpu, Tensor};

/// `phi(i, j)` for i in 1..=r1 (rows) and j in 1..=r2 (columns), for `a1` (r1, d_in) and `a2` (r2, d_in).
pub fn subspace_similarity(
    a1: &[f64],
    r1: usize,
    a2: &[f64],
    r2: usize,
    d_in: usize,
) -> Vec<Vec<f64>> {
    // rows of Vt: the right-singular vectors, in the input space, strongest first
    let (_, _, v1) = svd(a1, r1, d_in);
    let (_, _, v2) = svd(a2, r2, d_in);
    let (k1, k2) = (r1.min(d_in), r2.min(d_in));
    let g = matmul(&v1, &transpose(&v2, k2, d_in), k1, d_in, k2); // (k1, k2): cosines between the vectors

    // prefix sums of g^2: the squared Frobenius norm of every top-left block
    let mut sums = vec![vec![0.0; k2 + 1]; k1 + 1];
    for i in 0..k1 {
        for j in 0..k2 {
            sums[i + 1][j + 1] =
                g[i * k2 + j].powi(2) + sums[i][j + 1] + sums[i + 1][j] - sums[i][j];
        }
    }
    (1..=r1)
        .map(|i| {
            (1..=r2)
                .map(|j| sums[i.min(k1)][j.min(k2)] / i.min(j) as f64)
                .collect()
        })
        .collect()
}

/// How an update `delta` (out, d_in) relates to the weight `w` it updates, along `r` directions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Amplification {
    /// `||dW||_F`
    pub delta_norm: f64,
    /// `||W||_F`
    pub weight_norm: f64,
    /// `||U^T W V||_F` for U, V the top-r left and right singular vectors of dW.
    pub along_delta: f64,
    /// The same for random orthonormal U, V of rank r.
    pub along_random: f64,
}

impl Amplification {
    /// `||dW||_F / ||U^T W V||_F`: how much more the update puts on its directions than W had there.
    pub fn factor(&self) -> f64 {
        self.delta_norm / self.along_delta
    }
}

/// Measures `delta` against `w`, both (out, d_in), along `r` directions; `seed` picks the random ones.
pub fn amplification(
    w: &[f64],
    delta: &[f64],
    out: usize,
    d_in: usize,
    r: usize,
    seed: u64,
) -> Amplification {
    let k = out.min(d_in);
    let r = r.min(k);
    let (u, _, vt) = svd(delta, out, d_in); // u (out, k), vt (k, d_in)
    let top_u: Vec<f64> = (0..out)
        .flat_map(|i| u[i * k..i * k + r].to_vec())
        .collect(); // (out, r)
    let top_v = transpose(&vt[..r * d_in], r, d_in); // (d_in, r)
    let random = |rows: usize, seed: u64| {
        let g = Tensor::randn([rows, r], 0.0, 1.0, &mut rng(seed), &Cpu::<f64>::new()).to_vec();
        qr(&g, rows, r).0 // (rows, r), orthonormal columns
    };
    let project = |u: &[f64], v: &[f64]| {
        let wv = matmul(w, v, out, d_in, r); // (out, r)
        norm(&matmul(&transpose(u, out, r), &wv, r, out, r))
    };
    Amplification {
        delta_norm: norm(delta),
        weight_norm: norm(w),
        along_delta: project(&top_u, &top_v),
        along_random: project(&random(out, seed), &random(d_in, seed + 1)),
    }
}

/// The mean change of the per-output-feature magnitude `m_n = ||W[n, :]||` and of the direction (1 - the
/// cosine between `W0[n, :]` and `W[n, :]`) from `w0` to `w`, both (out, d_in): `(dM, dD)`. Rows are output
/// features in PEFT's layout, the paper's columns.
pub fn magnitude_direction_change(w0: &[f64], w: &[f64], out: usize, d_in: usize) -> (f64, f64) {
    let rows = |m: &[f64]| m.chunks(d_in).map(<[f64]>::to_vec).collect::<Vec<_>>();
    let (mut dm, mut dd) = (0.0, 0.0);
    for (a, b) in rows(w0).iter().zip(rows(w)) {
        let (na, nb) = (norm(a), norm(&b));
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        dm += (nb - na).abs();
        dd += 1.0 - dot / (na * nb).max(f64::MIN_POSITIVE);
    }
    (dm / out as f64, dd / out as f64)
}

fn norm(m: &[f64]) -> f64 {
    m.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn randn(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
        Tensor::randn([rows, cols], 0.0, 1.0, &mut rng(seed), &Cpu::<f64>::new()).to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// An adapter against itself, or against any mix of its own rows: phi = 1 wherever both span it.
        #[test]
        fn identical_subspaces_give_one(r in 1usize..6, extra in 1usize..8, seed in 0u64..1000) {
            let d = r + extra;
            let a = randn(r, d, seed);
            let phi = subspace_similarity(&a, r, &a, r, d);
            prop_assert!(phi.iter().flatten().all(|&p| (p - 1.0).abs() < 1e-9), "{phi:?}");
            let mix = randn(r, r, seed + 1); // invertible with probability 1
            let b = matmul(&mix, &a, r, r, d);
            let phi = subspace_similarity(&a, r, &b, r, d);
            prop_assert!((phi[r - 1][r - 1] - 1.0).abs() < 1e-9);
            prop_assert!(phi.iter().flatten().all(|&p| (-1e-12..=1.0 + 1e-9).contains(&p)));
        }

        /// Adapters reading orthogonal subspaces share nothing.
        #[test]
        fn orthogonal_subspaces_give_zero(r1 in 1usize..4, r2 in 1usize..4, seed in 0u64..1000) {
            let d = r1 + r2 + 2;
            let q = qr(&randn(d, d, seed), d, d).0; // orthonormal columns
            let rows = |from: usize, count: usize| -> Vec<f64> {
                // rows = columns from..from+count of q, each mixed at random inside its own subspace
                let basis: Vec<f64> = (from..from + count).flat_map(|c| (0..d).map(move |i| (c, i))).map(|(c, i)| q[i * d + c]).collect();
                matmul(&randn(count, count, seed + from as u64 + 7), &basis, count, count, d)
            };
            let phi = subspace_similarity(&rows(0, r1), r1, &rows(r1, r2), r2, d);
            prop_assert!(phi.iter().flatten().all(|&p| p.abs() < 1e-9), "{phi:?}");
        }
    }

    /// A planted update along W's own strongest direction is no amplification: `U^T W V` is W's top
    /// singular value, and the factor is the update's size over it.
    #[test]
    fn an_update_along_the_top_singular_direction() {
        let (out, d) = (6, 5);
        let w = randn(out, d, 3);
        let (u, s, vt) = svd(&w, out, d);
        let k = out.min(d);
        // delta = 2 u1 v1^T
        let delta: Vec<f64> = (0..out)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| 2.0 * u[i * k] * vt[j])
            .collect();
        let a = amplification(&w, &delta, out, d, 1, 9);
        assert!((a.along_delta - s[0]).abs() < 1e-9, "{a:?} vs {}", s[0]);
        assert!((a.delta_norm - 2.0).abs() < 1e-12);
        assert!((a.factor() - 2.0 / s[0]).abs() < 1e-9);
        assert!(a.along_random < a.weight_norm && a.along_delta <= a.weight_norm + 1e-12);
    }

    /// A planted update on the direction W is weakest in amplifies it: the projection is W's smallest
    /// singular value, far below the random baseline.
    #[test]
    fn an_update_along_the_weakest_direction_is_amplified() {
        let (out, d) = (8, 8);
        let w = randn(out, d, 4);
        let (u, s, vt) = svd(&w, out, d);
        let last = d - 1;
        let delta: Vec<f64> = (0..out)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| u[i * d + last] * vt[last * d + j])
            .collect();
        let a = amplification(&w, &delta, out, d, 1, 5);
        assert!((a.along_delta - s[last]).abs() < 1e-9);
        assert!(a.factor() > 1.0 / s[0]);
    }

    #[test]
    fn scaling_rows_changes_magnitude_and_rotating_them_changes_direction() {
        let w0 = vec![3.0, 4.0, 1.0, 0.0]; // rows of norm 5 and 1

        // scale: magnitudes 10 and 0.5 -> dM = (5 + 0.5) / 2, directions unchanged
        let (dm, dd) = magnitude_direction_change(&w0, &[6.0, 8.0, 0.5, 0.0], 2, 2);
        assert!((dm - 2.75).abs() < 1e-12 && dd.abs() < 1e-12);
        // rotate the second row by 90 degrees: same norms, cosine 0 -> dD = (0 + 1) / 2
        let (dm, dd) = magnitude_direction_change(&w0, &[3.0, 4.0, 0.0, 1.0], 2, 2);
        assert!(dm.abs() < 1e-12 && (dd - 0.5).abs() < 1e-12);
    }
}
