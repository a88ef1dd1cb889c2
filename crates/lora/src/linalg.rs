//! The two matrix factorizations that adapter initialisations need, on the host in f64 (they run once per
//! layer when an adapter is created, on matrices of at most a few thousand rows):
//!
//! - `svd`: `W = U diag(S) Vt`, by one-sided Jacobi (Hestenes): rotate pairs of columns of W until every
//!   pair is orthogonal; the rotations, multiplied up, are V; the column norms are S; the normalised columns
//!   are U. Simple, and accurate to rounding for any matrix. PiSSA starts an adapter from the top singular
//!   triplets.
//! - `qr`: `W = Q R` (Q orthonormal columns, R upper triangular), by Householder reflections. OLoRA starts an
//!   adapter from the first columns of Q.
//!
//! Matrices are row-major `Vec<f64>` with explicit (rows, cols).

/// The thin SVD of `w` (m, n): U (m, k), S (k,) in decreasing order, Vt (k, n), with k = min(m, n).
pub fn svd(w: &[f64], m: usize, n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(
        w.len(),
        m * n,
        "svd: {} values for a ({m}, {n}) matrix",
        w.len()
    );
    if m < n {
        // W^T = V S U^T: factor the transpose, which has more rows than columns
        let (v, s, ut) = svd(&transpose(w, m, n), n, m);
        return (transpose(&ut, m, m), s, transpose(&v, n, m));
    }
    // columns of a (m, n) as rows of `cols` (n, m): rotations then touch contiguous memory
    let mut cols = transpose(w, m, n);
    let mut v = identity(n); // rows of `v` are columns of V
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (cp, cq) = (&cols[p * m..(p + 1) * m], &cols[q * m..(q + 1) * m]);
                let (alpha, beta, gamma) = (dot(cp, cp), dot(cq, cq), dot(cp, cq));
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                // the rotation that makes columns p and q orthogonal
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt()); // the smaller root
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                rotate(&mut cols, m, p, q, c, s);
                rotate(&mut v, n, p, q, c, s);
            }
        }
        if !rotated {
            break;
        }
    }
    // S = column norms, U = normalised columns, sorted by S descending
    let norms: Vec<f64> = (0..n)
        .map(|j| dot(&cols[j * m..(j + 1) * m], &cols[j * m..(j + 1) * m]).sqrt())
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]));
    let mut u = vec![0.0; m * n];
    let mut vt = vec![0.0; n * n];
    let mut s = vec![0.0; n];
    for (k, &j) in order.iter().enumerate() {
        s[k] = norms[j];
        for i in 0..m {
            u[i * n + k] = if norms[j] > 0.0 {
                cols[j * m + i] / norms[j]
            } else {
                0.0
            };
        }
        vt[k * n..(k + 1) * n].copy_from_slice(&v[j * n..(j + 1) * n]);
    }
    (u, s, vt)
}

/// Rows p and q of `rows` (each of length `len`) become `c p - s q` and `s p + c q`.
fn rotate(rows: &mut [f64], len: usize, p: usize, q: usize, c: f64, s: f64) {
    for i in 0..len {
        let (x, y) = (rows[p * len + i], rows[q * len + i]);
        rows[p * len + i] = c * x - s * y;
        rows[q * len + i] = s * x + c * y;
    }
}

/// The thin QR of `w` (m, n): Q (m, k) with orthonormal columns and R (k, n) upper triangular, k = min(m, n).
pub fn qr(w: &[f64], m: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(
        w.len(),
        m * n,
        "qr: {} values for a ({m}, {n}) matrix",
        w.len()
    );
    let k = m.min(n);
    let mut r = w.to_vec(); // becomes R in its first k rows
    let mut reflectors: Vec<Vec<f64>> = Vec::with_capacity(k);
    for j in 0..k {
        // the reflection H = I - 2 v v^T / (v^T v) that zeroes column j below the diagonal
        let mut v: Vec<f64> = (j..m).map(|i| r[i * n + j]).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            v[0] += if v[0] >= 0.0 { norm } else { -norm };
        }
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv > 0.0 {
            for col in j..n {
                let d: f64 = (j..m).map(|i| v[i - j] * r[i * n + col]).sum::<f64>() * 2.0 / vv;
                for i in j..m {
                    r[i * n + col] -= d * v[i - j];
                }
            }
        }
        reflectors.push(v);
    }
    // Q = H_0 H_1 ... H_{k-1} applied to the first k columns of the identity
    let mut q = vec![0.0; m * k];
    for i in 0..k {
        q[i * k + i] = 1.0;
    }
    for (j, v) in reflectors.iter().enumerate().rev() {
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv == 0.0 {
            continue;
        }
        for col in 0..k {
            let d: f64 = (j..m).map(|i| v[i - j] * q[i * k + col]).sum::<f64>() * 2.0 / vv;
            for i in j..m {
                q[i * k + col] -= d * v[i - j];
            }
        }
    }
    let mut r_top = r[..k * n].to_vec();
    for i in 0..k {
        for j in 0..i.min(n) {
            r_top[i * n + j] = 0.0; // exact zeros below the diagonal (rounding leaves ~1e-17 there)
        }
    }
    (q, r_top)
}

pub fn transpose(w: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut t = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            t[j * m + i] = w[i * n + j];
        }
    }
    t
}

fn identity(n: usize) -> Vec<f64> {
    let mut e = vec![0.0; n * n];
    for i in 0..n {
        e[i * n + i] = 1.0;
    }
    e
}

/// (m, k) times (k, n), for tests and for forming B A.
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j];
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    /// X^T X (columns of X are orthonormal iff this is the identity)
    fn gram(x: &[f64], m: usize, k: usize) -> Vec<f64> {
        matmul(&transpose(x, m, k), x, k, m, k)
    }

    fn matrix() -> impl Strategy<Value = (Vec<f64>, usize, usize)> {
        (1usize..9, 1usize..9)
            .prop_flat_map(|(m, n)| (prop::collection::vec(-3.0f64..3.0, m * n), Just(m), Just(n)))
    }

    proptest! {
        #[test]
        fn svd_reconstructs_with_orthonormal_factors((w, m, n) in matrix()) {
            let k = m.min(n);
            let (u, s, vt) = svd(&w, m, n);
            let us: Vec<f64> = (0..m * k).map(|i| u[i] * s[i % k]).collect();
            prop_assert!(max_diff(&matmul(&us, &vt, m, k, n), &w) < 1e-9);
            prop_assert!(s.windows(2).all(|p| p[0] >= p[1]) && s.iter().all(|&x| x >= 0.0));
            let vtt = transpose(&vt, k, n);
            prop_assert!(max_diff(&gram(&vtt, n, k), &identity(k)) < 1e-9);
            // U's columns for non-zero singular values are orthonormal
            let rank = s.iter().filter(|&&x| x > 1e-9).count();
            let g = gram(&u, m, k);
            for i in 0..rank {
                for j in 0..rank {
                    prop_assert!((g[i * k + j] - f64::from(u8::from(i == j))).abs() < 1e-9);
                }
            }
        }

        #[test]
        fn qr_reconstructs_with_orthonormal_q_and_triangular_r((w, m, n) in matrix()) {
            let k = m.min(n);
            let (q, r) = qr(&w, m, n);
            prop_assert!(max_diff(&matmul(&q, &r, m, k, n), &w) < 1e-9);
            prop_assert!(max_diff(&gram(&q, m, k), &identity(k)) < 1e-9);
            for i in 0..k {
                for j in 0..i.min(n) {
                    prop_assert_eq!(r[i * n + j], 0.0);
                }
            }
        }
    }

    #[test]
    fn svd_finds_a_planted_spectrum() {
        // W = U diag(5, 2, 0) V^T with U, V rotations: the singular values come back exactly
        let (c, s) = (0.6f64, 0.8f64);
        let u = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let v = [1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c];
        let d = [5.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0];
        let w = matmul(&matmul(&u, &d, 3, 3, 3), &transpose(&v, 3, 3), 3, 3, 3);
        let (_, sv, _) = svd(&w, 3, 3);
        assert!(max_diff(&sv, &[5.0, 2.0, 0.0]) < 1e-12, "{sv:?}");
    }
}
