//! Autograd overhead: the backward of a matmul chain against its forward (target: backward <= 2.2x forward,
//! i.e. two GEMMs per op and little else), and the per-op cost of recording and walking a graph of 10,000
//! tiny ops (target: <= 2 us per op).
//!
//! `cargo bench --bench autograd`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lowrank::autograd::Var;
use lowrank::tensor::{rng, Cpu, Tensor};
use std::hint::black_box;

type V = Var<Cpu<f32>>;

fn matmul_chain(c: &mut Criterion) {
    let dev = Cpu::<f32>::new();
    let mut r = rng(0);
    let x = V::param(Tensor::randn([512, 256], 0.0, 1.0, &mut r, &dev));
    let ws: Vec<V> = (0..4)
        .map(|_| V::param(Tensor::randn([256, 256], 0.0, 0.05, &mut r, &dev)))
        .collect();
    let forward = || ws.iter().fold(x.clone(), |h, w| h.matmul(w)).sum_all();
    let mut g = c.benchmark_group("matmul_chain_512x256x256x4");
    g.bench_function("forward", |b| b.iter(|| black_box(forward())));
    g.bench_function("backward_only", |b| {
        b.iter_batched(
            forward,
            |loss| loss.backward().unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn small_op_graph(c: &mut Criterion) {
    let dev = Cpu::<f32>::new();
    let x = V::param(Tensor::ones([4], &dev));
    let mut g = c.benchmark_group("graph_of_10000_small_ops");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("record_and_backward", |b| {
        b.iter(|| {
            let mut h = x.clone();
            for i in 0..5_000 {
                h = if i % 2 == 0 {
                    h.mul_scalar(1.0001)
                } else {
                    &h + &x
                };
            }
            // 5,000 more: 10,000 recorded ops in all (plus the final sum)
            let h = (0..5_000).fold(h, |h, _| h.add_scalar(1e-4));
            h.sum_all().backward().unwrap();
            x.zero_grad();
        })
    });
    g.finish();
}

criterion_group!(benches, matmul_chain, small_op_graph);
criterion_main!(benches);
