//! Tensor-engine benchmarks: GEMM against a direct single-threaded `Element::gemm` call (the `gemm`
//! crate) on the same buffers
//! (FLOP/s, as criterion's "elements"/s), transposed operands, and memory-bound elementwise / reduction /
//! softmax kernels against a plain copy of the same size (bytes/s).
//!
//! The `wgpu_*` groups run on the GPU (skipped with a message when there is no adapter): the GEMM as
//! `tiled` (the first kernel) and `auto` (what `Gemm::Auto` picks: vec4, or narrow for LoRA's rank) at
//! 256-4096 (FLOP/s; up to 1024 on a software adapter such as lavapipe) and at SmolLM2's LoRA-step
//! shapes, and the fused kernels at the medium config's sizes. Each GPU iteration ends by reading one
//! value back, so it times finished work.
//!
//! `cargo bench --bench tensor_ops` (`-- wgpu` for the GPU groups only)

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lowrank::tensor::{rng, Backend, Cpu, Element, Tensor};
use lowrank::wgpu::{wgpu::DeviceType, Gemm, Lanes, Wgpu};
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
            // SAFETY: va is (m, k) and vb (k, n) row-major, out holds m x n: every element the sizes and
            // strides reach lies inside them.
            bench.iter(|| unsafe {
                f32::gemm(
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
    // RoPE on (B, T, H, d) = (8, 128, 32, 32), the (T, 1, d) tables broadcast across heads
    let x = a.reshape([8, 128, 32, 32]);
    let table = |seed| rand([128, 32], seed).reshape([128, 1, 32]);
    let (cos, sin) = (table(7), table(8));
    g.bench_function("rope", |bench| bench.iter(|| black_box(x.rope(&cos, &sin))));
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

/// Attention at the medium config's sizes (B 16, H 8, T 128, d 32), causal: the fused op against the same math
/// composed from batched matmuls, the causal softmax and the head-merge copy, forward and backward.
fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_medium");
    let dev = Cpu::<f32>::new();
    let (b, h, t, d) = (16, 8, 128, 32);
    let heads = |seed| {
        // (B, T, H, d) memory seen as (B, H, T, d), as the model feeds it
        Tensor::randn([b, t, h, d], 0.0, 1.0, &mut rng(seed), &dev).permute(&[0, 2, 1, 3])
    };
    let (q, k, v, dy) = (heads(7), heads(8), heads(9), heads(10));
    let scale = 1.0 / (d as f64).sqrt();
    let merge = |y: &T| y.permute(&[0, 2, 1, 3]).reshape([b, t, h * d]);
    g.bench_function("fused_forward", |bench| {
        bench.iter(|| black_box(merge(&Tensor::attention(&q, &k, &v, scale, true).0)))
    });
    let (_, probs) = Tensor::attention(&q, &k, &v, scale, true);
    g.bench_function("fused_backward", |bench| {
        let need = [true, true, true];
        bench.iter(|| {
            black_box(Tensor::attention_backward(
                [Some(&q), Some(&k), Some(&v)],
                &probs,
                &dy,
                scale,
                true,
                need,
            ))
        })
    });
    g.bench_function("composed_forward", |bench| {
        bench.iter(|| {
            let p = q.matmul(&k.t()).mul_scalar(scale).causal_softmax(); // (B, H, T, T)
            black_box(merge(&p.matmul(&v)))
        })
    });
    let p = q.matmul(&k.t()).mul_scalar(scale).causal_softmax();
    g.bench_function("composed_backward", |bench| {
        bench.iter(|| {
            let dv = p.t().matmul(&dy);
            let ds = p.softmax_backward(&dy.matmul(&v.t())).mul_scalar(scale);
            black_box((ds.matmul(&k), ds.t().matmul(&q), dv))
        })
    });
    g.finish();
}

/// One value of `t` read back: waits until the GPU has finished everything that produced it.
fn finish<B: Backend>(t: &Tensor<B>) -> f64 {
    let mut first = t.clone();
    while first.rank() > 0 {
        first = first.narrow(0, 0, 1).squeeze(0);
    }
    first.to_scalar()
}

fn wgpu_kernels(c: &mut Criterion) {
    let gpu = match Wgpu::new() {
        Ok(gpu) => gpu,
        Err(e) => return eprintln!("skipping the wgpu benchmarks: {e}"),
    };
    eprintln!("wgpu benchmarks on {}", gpu.adapter_name());
    let software = gpu.adapter_info().device_type == DeviceType::Cpu;
    let randn_on =
        |dev: &Wgpu, dims: &[usize], seed| Tensor::randn(dims, 0.0, 1.0, &mut rng(seed), dev);
    let randn = |dims: &[usize], seed| randn_on(&gpu, dims, seed);
    // matmul.wgsl (`tiled`, the first version) and what `Gemm::Auto` picks (matmul_vec4.wgsl, or
    // matmul_narrow.wgsl for LoRA's skinny products)
    let kernels = [
        ("tiled", gpu.with_gemm(Gemm::Tiled)),
        ("auto", gpu.with_gemm(Gemm::Auto)),
    ];
    let mut g = c.benchmark_group("wgpu_matmul");
    g.sample_size(10);
    for n in [256, 512, 1024, 2048, 4096] {
        if software && n > 1024 {
            continue;
        }
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        for (name, dev) in &kernels {
            let (a, b) = (randn_on(dev, &[n, n], 1), randn_on(dev, &[n, n], 2));
            g.bench_function(BenchmarkId::new(*name, n), |bench| {
                bench.iter(|| black_box(finish(&a.matmul(&b))))
            });
        }
    }
    g.finish();

    // SmolLM2's LoRA step at batch 4 x 256 tokens (BT 1024, d 576, SwiGLU 1536, r 8): x @ W^T of q_proj,
    // gate_proj and down_proj, the head (software adapters skip it), LoRA's x @ A^T, and the gradients
    // dW-shaped dy^T @ x and dA = (dy B)^T @ x, whose long K (BT) is split
    let mut g = c.benchmark_group("wgpu_matmul_smollm2");
    g.sample_size(10);
    let shapes: [(&str, [usize; 3], bool); 7] = [
        ("q_proj", [1024, 576, 576], true),
        ("gate_proj", [1024, 576, 1536], true),
        ("down_proj", [1024, 1536, 576], true),
        ("lm_head", [1024, 576, 49152], true),
        ("lora_a", [1024, 576, 8], true),
        ("grad_w", [576, 1024, 576], false),
        ("grad_lora_a", [8, 1024, 576], false),
    ];
    for (name, [m, k, n], weight_rhs) in shapes {
        if software && n > 4096 {
            continue;
        }
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        // a Linear's right operand is W^T, a view of the (n, k) weight; a gradient's left one is dy^T
        for (kernel, dev) in &kernels {
            let randn = |dims: &[usize], seed| randn_on(dev, dims, seed);
            let a = if weight_rhs {
                randn(&[m, k], 11)
            } else {
                randn(&[k, m], 11).t()
            };
            let b = if weight_rhs {
                randn(&[n, k], 12).t()
            } else {
                randn(&[k, n], 12)
            };
            g.bench_function(BenchmarkId::new(*kernel, name), |bench| {
                bench.iter(|| black_box(finish(&a.matmul(&b))))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("wgpu_fused_medium");
    g.sample_size(10);
    // the medium config: 16 x 128 tokens, d 256, 8 heads of 32, vocab 256
    let (b, t, h, d) = (16, 128, 8, 32);
    let x = randn(&[b * t, h * d], 3);
    // the embedding's gradient: every token's row scattered onto its id (`index_add`, repeated ids)
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 256) as u32).collect();
    let table = randn(&[256, h * d], 6);
    g.bench_function("index_add", |bench| {
        bench.iter(|| black_box(finish(&table.index_add(0, &ids, &x))))
    });
    // a column sum over the tokens (a broadcast operand's gradient, `sum_to`)
    g.bench_function("sum_over_tokens", |bench| {
        bench.iter(|| black_box(finish(&x.sum(0, false))))
    });
    let heads = |seed| randn(&[b, t, h, d], seed).permute(&[0, 2, 1, 3]);
    let (q, k, v, dy) = (heads(7), heads(8), heads(9), heads(10));
    let scale = 1.0 / (d as f64).sqrt();
    g.bench_function("attention_forward", |bench| {
        bench.iter(|| black_box(finish(&Tensor::attention(&q, &k, &v, scale, true).0)))
    });
    let (_, probs) = Tensor::attention(&q, &k, &v, scale, true);
    g.bench_function("attention_backward", |bench| {
        bench.iter(|| {
            let grads = Tensor::attention_backward(
                [Some(&q), Some(&k), Some(&v)],
                &probs,
                &dy,
                scale,
                true,
                [true; 3],
            );
            black_box(grads.map(|g| g.map(|g| finish(&g))))
        })
    });
    g.finish();

    // The row kernels (one workgroup per row), their lanes combined with subgroup operations (where the
    // adapter has them) and through workgroup memory: the medium config's rows (width 256, vocab 256) and
    // SmolLM2's (width 576, vocab 49152) over 1024 tokens.
    let mut lanes = vec![(
        "workgroup",
        gpu.with_lanes(Lanes::Workgroup).expect("always"),
    )];
    lanes.extend(
        gpu.with_lanes(Lanes::Subgroup)
            .ok()
            .map(|dev| ("subgroup", dev)),
    );
    let mut g = c.benchmark_group("wgpu_rows");
    g.sample_size(10);
    for (size, width, vocab) in [("medium", 256, 256), ("smollm2", 576, 49152)] {
        let tokens = if software && vocab > 256 { 256 } else { 1024 };
        let targets: Vec<u32> = (0..tokens).map(|i| (i * 7 % vocab) as u32).collect();
        for (name, dev) in &lanes {
            let x = randn_on(dev, &[tokens, width], 3);
            let w = randn_on(dev, &[width], 4);
            let logits = randn_on(dev, &[tokens, vocab], 5);
            let id = |op: &str| BenchmarkId::new(*name, format!("{op}/{size}"));
            g.bench_function(id("rms_norm"), |bench| {
                bench.iter(|| black_box(finish(&x.rms_norm(&w, 1e-5))))
            });
            g.bench_function(id("rms_norm_backward"), |bench| {
                bench.iter(|| black_box(finish(&x.rms_norm_backward(&w, &x, 1e-5, true).0)))
            });
            g.bench_function(id("cross_entropy"), |bench| {
                bench.iter(|| black_box(finish(&logits.cross_entropy(&targets, None))))
            });
            g.bench_function(id("softmax"), |bench| {
                bench.iter(|| black_box(finish(&logits.softmax())))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, matmul, memory_bound, attention, wgpu_kernels);
criterion_main!(benches);
