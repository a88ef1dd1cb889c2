//! The product of a few rows by a weight kept in GGUF blocks (`BlockWeight::product`, decoding's
//! kernel) against the f32 GEMM on the same weight expanded, at SmolLM2-135M's shapes: a token's decoding
//! is bound by the bytes it reads, so the throughput is in bytes of weight per second (criterion's
//! "bytes"/s), the blocks' bytes for the direct product and the f32 bytes for the GEMM.
//!
//! `cargo bench --bench block_product`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lowrank::nn::{BlockWeight, CompressedWeight, GgmlType};
use lowrank::tensor::{rng, Cpu, Tensor};
use std::hint::black_box;

/// Blocks of random codes with small scales (and minimums) of either sign.
fn blocks(ty: GgmlType, [out, d_in]: [usize; 2]) -> BlockWeight {
    let size = ty.block().expect("a block type").1;
    let mut state = 1u32;
    let bytes: Vec<u8> = (0..out * d_in / 32)
        .flat_map(|b| {
            let mut block: Vec<u8> = (0..size)
                .map(|_| {
                    state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                    (state >> 24) as u8
                })
                .collect();
            let scale = half::f16::from_f32(((b % 13) as f32 - 6.0) / 512.0);
            block[..2].copy_from_slice(&scale.to_le_bytes());
            if ty == GgmlType::Q4_1 {
                block[2..4].copy_from_slice(&scale.to_le_bytes());
            }
            block
        })
        .collect();
    BlockWeight::new(ty, [out, d_in], &bytes)
}

fn block_product(c: &mut Criterion) {
    let dev = Cpu::<f32>::new();
    let mut g = c.benchmark_group("block_product");
    // (name, type, (out, in)): an MLP's up projection and down projection, the tied output projection
    let shapes = [
        ("up", GgmlType::Q4_1, [1536, 576]),
        ("down", GgmlType::Q4_1, [576, 1536]),
        ("head", GgmlType::Q8_0, [49152, 576]),
    ];
    for (name, ty, dims) in shapes {
        let w = blocks(ty, dims);
        let dense = CompressedWeight::<Cpu<f32>>::decompress(&w, &dev);
        for rows in [1, 4] {
            let id = format!("{name}_{ty}_rows{rows}");
            let x = Tensor::randn([rows, dims[1]], 0.0, 1.0, &mut rng(2), &dev);
            let xs = x.to_vec();
            g.throughput(Throughput::Bytes(
                CompressedWeight::<Cpu<f32>>::size_in_bytes(&w) as u64,
            ));
            g.bench_function(BenchmarkId::new("blocks", &id), |b| {
                b.iter(|| black_box(w.product(&xs, rows)))
            });
            g.throughput(Throughput::Bytes((dims[0] * dims[1] * 4) as u64));
            g.bench_function(BenchmarkId::new("f32_gemm", &id), |b| {
                b.iter(|| black_box(x.matmul(&dense.t())))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, block_product);
criterion_main!(benches);
