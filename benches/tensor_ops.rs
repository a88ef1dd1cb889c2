//! Tensor-engine benchmarks: GEMM against a direct `matrixmultiply::sgemm` call on the same buffers
//! (FLOP/s, as criterion's "elements"/s), transposed operands, and memory-bound elementwise / reduction /
//! softmax kernels against a plain copy of the same size (bytes/s).
//!
//! `cargo bench --bench tensor_ops`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lowrank::tensor::{rng, Cpu, Tensor};
use std::hint::black_box;

type T = Tensor<Cpu<f32>>;

fn rand(dims: [usize; 2], seed: u64) -> T {
    Tensor::randn(dims, 0.0, 1.0, &mut rng(seed), &Cpu::new())
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    let mut shapes: Vec<(usize, usize, usize)> =
        [64, 128, 256, 512, 1024].map(|n| (n, n, n)).to_vec();
    shapes.extend([(1024, 128, 384), (2048, 256, 1024)]);
    for (m, k, n) in shapes {
        let id = format!("{m}x{k}x{n}");
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let (a, b) = (rand([m, k], 1), rand([k, n], 2));
        let bt = rand([n, k], 3).t(); // (k, n) view of an (n, k) buffer
        g.bench_function(BenchmarkId::new("lowrank", &id), |bench| {
            bench.iter(|| black_box(a.matmul(&b)))
        });
        g.bench_function(BenchmarkId::new("lowrank_rhs_transposed", &id), |bench| {
            bench.iter(|| black_box(a.matmul(&bt)))
        });
        let (va, vb) = (a.to_vec(), b.to_vec());
        let mut out = vec![0f32; m * n];
        g.bench_function(BenchmarkId::new("direct_sgemm_1thread", &id), |bench| {
            bench.iter(|| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    va.as_ptr(),
                    k as isize,
                    1,
                    vb.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                );
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn memory_bound(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_bound_1M");
    let (rows, cols) = (1024, 1024);
    let (a, b) = (rand([rows, cols], 4), rand([rows, cols], 5));
    let row = rand([1, cols], 6);
    let bytes = (rows * cols * 4) as u64;
    // A copy reads and writes each element once: the bandwidth baseline.
    let src = a.to_vec();
    let mut dst = vec![0f32; src.len()];
    g.throughput(Throughput::Bytes(2 * bytes));
    g.bench_function("baseline_copy", |bench| {
        bench.iter(|| {
            dst.copy_from_slice(&src);
            black_box(&dst);
        })
    });
    g.bench_function("exp", |bench| bench.iter(|| black_box(a.exp())));
    g.bench_function("softmax", |bench| bench.iter(|| black_box(a.softmax())));
    g.bench_function("rms_norm", |bench| {
        bench.iter(|| black_box(a.rms_norm(&row.reshape([cols]), 1e-5)))
    });
    g.bench_function("transpose_contiguous", |bench| {
        bench.iter(|| black_box(a.t().contiguous()))
    });
    g.throughput(Throughput::Bytes(3 * bytes));
    g.bench_function("add", |bench| bench.iter(|| black_box(&a + &b)));
    g.bench_function("mul_broadcast_row", |bench| {
        bench.iter(|| black_box(&a * &row))
    });
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("sum_last_axis", |bench| {
        bench.iter(|| black_box(a.sum(1, false)))
    });
    g.bench_function("sum_first_axis", |bench| {
        bench.iter(|| black_box(a.sum(0, false)))
    });
    g.bench_function("sum_all", |bench| bench.iter(|| black_box(a.sum_all())));
    g.finish();
}

/// The batched products of attention in the small config: (B*H) x (T, d) @ (d, T) and (T, T) @ (T, d).
fn attention_matmuls(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_matmul");
    let dev = Cpu::<f32>::new();
    let (bh, t, d) = (64, 64, 32);
    let q = Tensor::randn([bh, t, d], 0.0, 1.0, &mut rng(7), &dev);
    let k = Tensor::randn([bh, t, d], 0.0, 1.0, &mut rng(8), &dev);
    let att = Tensor::randn([bh, t, t], 0.0, 1.0, &mut rng(9), &dev);
    g.throughput(Throughput::Elements((2 * bh * t * t * d) as u64));
    g.bench_function("q_kT", |b| b.iter(|| black_box(q.matmul(&k.t()))));
    g.bench_function("att_v", |b| b.iter(|| black_box(att.matmul(&k))));
    g.bench_function("attT_g", |b| b.iter(|| black_box(att.t().matmul(&q))));
    g.finish();
}

criterion_group!(benches, matmul, memory_bound, attention_matmuls);
criterion_main!(benches);
