//! Random numbers as a pure function of (seed, index): `u = hash(seed, i) / 2^24`, the same on every device.
//!
//! A dropout mask is drawn anew every step for every adapted layer. Drawn on the host, it would be
//! uploaded each time; a counter-based generator lets the device that holds the tensor draw it itself
//! (`Backend::uniform_hashed`, one WGSL kernel on the GPU), and gives bit-identical masks on CPU and GPU for
//! the same seed. The hash is two rounds of the `lowbias32` integer mixer (Chris Wellons' hash prospector),
//! keyed by the two halves of the seed: plain 32-bit integer arithmetic, which WGSL has too
//! (`kernels/elementwise.wgsl`, `uniform`).

/// `lowbias32`: a bijective mix of the bits of x.
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Uniform in [0, 1) with 24 random bits (every value exactly an f32) for element `i` of draw `seed`.
pub fn hashed_uniform(seed: u64, i: u32) -> f32 {
    let (lo, hi) = (seed as u32, (seed >> 32) as u32);
    let h = mix32(mix32(i.wrapping_mul(0x9e37_79b9) ^ lo) ^ hi);
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_and_depend_on_seed_and_index() {
        let n = 100_000;
        let u: Vec<f32> = (0..n).map(|i| hashed_uniform(7, i)).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        // each tenth of [0, 1) holds about a tenth of the draws
        for d in 0..10 {
            let count = u.iter().filter(|&&x| (x * 10.0) as usize == d).count();
            assert!(
                (count as f64 / n as f64 - 0.1).abs() < 0.005,
                "decile {d}: {count}"
            );
        }
        assert_ne!(hashed_uniform(7, 0), hashed_uniform(8, 0));
        assert_ne!(hashed_uniform(7, 0), hashed_uniform(7 | 1 << 40, 0));
        assert_ne!(hashed_uniform(7, 0), hashed_uniform(7, 1));
    }
}
