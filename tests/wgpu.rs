//! The GPU backend end to end: the same model code trains a LoRA / DoRA adapter on `Wgpu` and on `Cpu<f32>`
//! with the same losses step by step; an adapter trained on the GPU loads on the CPU with the same logits;
//! tensors stay on the GPU (no read-back inside a step but the loss); buffers and pipelines are reused.
//! Skipped with a message on a machine without a GPU adapter, unless `LOWRANK_REQUIRE_WGPU=1` (CI sets it,
//! and runs them on Mesa's software Vulkan driver).

use lowrank::gpt::{train_step, Batch, Gpt, GptConfig};
use lowrank::lora::qlora::QuantizedWeight;
use lowrank::lora::quant::Quantized;
use lowrank::lora::{
    load_adapter, quantize_base, save_adapter, LoraConfig, LoraModel, QuantConfig, QuantType,
    Targets,
};
use lowrank::nn::CompressedWeight;
use lowrank::nn::{AdamW, AdamWConfig, Module};
use lowrank::tensor::{rng, Backend, Cpu, Element, Tensor};
use lowrank::wgpu::{test_device, Gemm, Wgpu};
use std::sync::{Mutex, MutexGuard};

/// The GPU, held by one test at a time so that each test's work counters are its own.
fn gpu() -> Option<(MutexGuard<'static, ()>, Wgpu)> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    test_device().map(|dev| (guard, dev))
}

/// A tiny model, big enough that every kernel sees more than one workgroup's worth of some axis.
fn config() -> GptConfig {
    GptConfig {
        d_model: 32,
        n_heads: 4,
        n_kv_heads: 4,
        d_ff: 80,
        max_seq_len: 16,
        ..GptConfig::tiny()
    }
}

/// How the base is adapted in a test.
#[derive(Clone, Copy, PartialEq)]
enum Method {
    Lora,
    Dora,
    /// LoRA over an NF4, double-quantized base.
    Qlora,
}

/// LoRA on q and v with alpha != r, or DoRA, or QLoRA; B random and non-zero so that every path carries
/// gradient.
fn model_with_adapter<B: Backend<Elem = f32>>(dev: &B, method: Method) -> Gpt<B> {
    let mut model = Gpt::new(config(), 3, dev);
    if method == Method::Qlora {
        quantize_base(&mut model, &QuantConfig::default()).expect("finite weights");
    }
    let use_dora = method == Method::Dora;
    let lora = LoraConfig {
        r: 4,
        alpha: 6.0,
        use_dora,
        targets: Targets::Names(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]),
        ..LoraConfig::default()
    };
    model
        .add_adapter("default", &lora, 5)
        .expect("valid config");
    for (i, (name, p)) in model.named_params().into_iter().enumerate() {
        if name.contains("lora_B") {
            p.set_value(Tensor::randn(p.shape(), 0.0, 0.1, &mut rng(i as u64), dev));
        }
    }
    model
}

/// One batch of tokens per step, the same on every device.
fn batch(step: usize) -> (Vec<u32>, Vec<u32>) {
    let (b, t) = (2, config().max_seq_len);
    let ids: Vec<u32> = (0..b * t + 1)
        .map(|i| ((i * 37 + step * 11) % 256) as u32)
        .collect();
    (ids[..b * t].to_vec(), ids[1..].to_vec())
}

/// Trains `steps` steps (`gpt::train_step`: forward, backward, clipping, AdamW) and returns the losses.
fn train<B: Backend>(model: &Gpt<B>, steps: usize) -> Vec<f64> {
    let mut opt = AdamW::new(
        model.trainable_params(),
        AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        },
    );
    (0..steps)
        .map(|step| {
            let (inputs, targets) = batch(step);
            let b = Batch {
                inputs,
                targets,
                batch: 2,
                seq: config().max_seq_len,
            };
            train_step(model, &mut opt, &b, 1.0).expect("a finite step")
        })
        .collect()
}

fn logits<B: Backend>(model: &Gpt<B>) -> Vec<f64> {
    let (ids, _) = batch(99);
    let out = model.forward(&ids, 2, config().max_seq_len);
    out.value().to_vec().iter().map(|&v| v.to_f64()).collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f64::max)
}

fn trains_the_same_on_both_devices(method: Method) {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    let (on_cpu, on_gpu) = (
        model_with_adapter(&cpu, method),
        model_with_adapter(&gpu, method),
    );
    let diff = max_diff(&logits(&on_cpu), &logits(&on_gpu));
    assert!(diff < 1e-4, "initial logits differ by {diff}");
    let steps = 6;
    let (l_cpu, l_gpu) = (train(&on_cpu, steps), train(&on_gpu, steps));
    for (step, (c, g)) in l_cpu.iter().zip(&l_gpu).enumerate() {
        assert!(
            (c - g).abs() < 1e-4 * c.abs().max(1.0),
            "step {step}: loss {c} on the CPU, {g} on the GPU"
        );
    }
    assert!(l_gpu[steps - 1] < l_gpu[0], "the adapter learns: {l_gpu:?}");

    // The adapter saved from the GPU run loads onto the same base on the CPU and gives the same logits.
    let dir = std::env::temp_dir().join(format!(
        "lowrank-wgpu-test-{}-{}",
        std::process::id(),
        method as u8
    ));
    save_adapter(&on_gpu, "default", &dir).expect("save");
    let mut reloaded = Gpt::new(config(), 3, &cpu);
    if method == Method::Qlora {
        quantize_base(&mut reloaded, &QuantConfig::default()).expect("finite weights");
    }
    load_adapter(&mut reloaded, &dir, "default").expect("load");
    let diff = max_diff(&logits(&reloaded), &logits(&on_gpu));
    assert!(diff < 1e-4, "reloaded on the CPU, logits differ by {diff}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn lora_trains_the_same_on_gpu_and_cpu() {
    trains_the_same_on_both_devices(Method::Lora);
}

#[test]
fn qlora_trains_the_same_on_gpu_and_cpu() {
    trains_the_same_on_both_devices(Method::Qlora);
}

#[test]
fn dora_trains_the_same_on_gpu_and_cpu() {
    trains_the_same_on_both_devices(Method::Dora);
}

#[test]
fn the_adapter_is_vulkan_where_ci_requires_it() {
    let Some((_one, gpu)) = gpu() else { return };
    let backend = gpu.adapter_info().backend;
    eprintln!(
        "wgpu adapter: {}, row kernels' lanes: {:?}",
        gpu.adapter_name(),
        gpu.lanes()
    );
    if std::env::var("LOWRANK_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
        assert_eq!(
            backend,
            lowrank::wgpu::wgpu::Backend::Vulkan,
            "CI runs the GPU tests on Vulkan (lavapipe), got {}",
            gpu.adapter_name()
        );
        // tests/ops.rs runs the row kernels both ways only where the default is the subgroup one
        if gpu.adapter_info().name.starts_with("llvmpipe") {
            assert_eq!(
                gpu.lanes(),
                lowrank::wgpu::Lanes::Subgroup,
                "lavapipe has subgroup operations (Mesa 22 and later): without them CI would test only \
                 the row kernels' workgroup-memory path"
            );
        }
    }
}

#[test]
fn a_training_step_reads_back_only_the_loss() {
    let Some((_one, gpu)) = gpu() else { return };
    let model = model_with_adapter(&gpu, Method::Lora);
    train(&model, 2); // compile the pipelines, fill the buffer pool
    let before = gpu.stats();
    train(&model, 1);
    let after = gpu.stats();
    // Hundreds of dispatches (clipping's factor and the divergence guard included), submitted once, at
    // the one read-back of the step (the loss, after the update is queued); every kernel output of a warm
    // step comes from the pool.
    assert!(after.dispatches - before.dispatches > 100);
    assert_eq!(after.readbacks - before.readbacks, 1);
    assert_eq!(after.submits - before.submits, 1);
    assert_eq!(
        after.pool_misses, before.pool_misses,
        "the pool serves a warm step"
    );
}

#[test]
fn profiling_times_every_dispatch_of_a_step_and_then_stops() {
    let Some((_one, gpu)) = gpu() else { return };
    let model = model_with_adapter(&gpu, Method::Lora);
    train(&model, 1);
    if let Err(e) = gpu.start_profiling() {
        // lavapipe has timestamp queries: CI always takes the path below
        assert!(!gpu.adapter_info().name.starts_with("llvmpipe"), "{e}");
        return eprintln!("skipping: {e}");
    }
    let before = gpu.stats();
    train(&model, 1);
    let times = gpu.stop_profiling();
    let dispatches = gpu.stats().dispatches - before.dispatches;
    assert_eq!(
        times.iter().map(|t| t.dispatches).sum::<u64>(),
        dispatches,
        "each dispatch of the step is timed once"
    );
    assert!(times.iter().all(|t| t.seconds >= 0.0 && t.dispatches > 0));
    assert!(
        times.windows(2).all(|w| w[0].seconds >= w[1].seconds),
        "longest first"
    );
    let gemm = times.iter().find(|t| t.file.starts_with("matmul"));
    assert!(
        gemm.is_some_and(|t| t.seconds > 0.0),
        "the products take GPU time: {times:?}"
    );
    // stopped: the next step is not timed, and stopping again gives nothing
    train(&model, 1);
    assert!(gpu.stop_profiling().is_empty());
}

/// Every step uploads token ids, targets and (with dropout) masks, and frees its activations: the pool
/// reuses their buffers, so the device memory it holds stops growing once training is warm.
#[test]
fn the_buffer_pool_does_not_grow_with_training() {
    let Some((_one, gpu)) = gpu() else { return };
    let mut model = Gpt::new(config(), 3, &gpu);
    let lora = LoraConfig {
        r: 4,
        alpha: 6.0,
        dropout: 0.1,
        targets: Targets::AllLinear,
        ..LoraConfig::default()
    };
    model
        .add_adapter("default", &lora, 5)
        .expect("valid config");
    train(&model, 50);
    let (at50, uploads50) = (gpu.stats().pool_bytes, gpu.stats().uploads);
    train(&model, 450);
    let (at500, uploads500) = (gpu.stats().pool_bytes, gpu.stats().uploads);
    let per_step = (uploads500 - uploads50) as f64 / 450.0;
    eprintln!(
        "pool: {at50} bytes after step 50, {at500} after step 500; {per_step} uploads per step"
    );
    assert!(per_step >= 2.0, "ids and targets are uploaded every step");
    assert!(
        at500 <= at50,
        "the pool grew from {at50} to {at500} bytes between steps 50 and 500"
    );
}

/// Dropout masks are drawn where the tensor lives, by the same counter-based hash on every device.
#[test]
fn hashed_uniform_draws_are_the_same_on_the_gpu_and_the_cpu() {
    let Some((_one, gpu)) = gpu() else { return };
    for (len, seed) in [(1, 0), (1000, 7), (70_001, 0xdead_beef_0123_4567)] {
        let on_gpu = Tensor::uniform_hashed([len], seed, &gpu).to_vec();
        let on_cpu = Tensor::uniform_hashed([len], seed, &Cpu::<f32>::new()).to_vec();
        assert!(
            on_gpu
                .iter()
                .zip(&on_cpu)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "seed {seed}"
        );
    }
}

/// `x`, or its view with the last two axes swapped.
fn maybe_transposed<B: Backend>(x: Tensor<B>, t: bool) -> Tensor<B> {
    if t {
        x.transpose(1, 2)
    } else {
        x
    }
}

/// `a @ b` on the GPU (`Gemm::Auto`'s kernels and the first one) against the CPU, for `(batch, m, k, n)` shapes with A and B
/// given as (batch, m, k) / (batch, k, n) or as transposed views of (batch, k, m) / (batch, n, k).
fn matmuls_match_the_cpu(shapes: &[(usize, usize, usize, usize)]) {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    for &(bt, m, k, n) in shapes {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            // the stored matrix (transposed when `t`), and the operand as a view of it
            let stored = |rows, cols, t: bool, seed| {
                let dims = if t {
                    [bt, cols, rows]
                } else {
                    [bt, rows, cols]
                };
                Tensor::randn(dims, 0.0, 1.0, &mut rng(seed), &cpu)
            };
            let (a, b) = (stored(m, k, ta, 1), stored(k, n, tb, 2));
            let want = maybe_transposed(a.clone(), ta)
                .matmul(&maybe_transposed(b.clone(), tb))
                .to_vec();
            for gemm in [Gemm::Auto, Gemm::Tiled] {
                let dev = gpu.with_gemm(gemm);
                let up = |x: &Tensor<Cpu<f32>>| {
                    Tensor::from_vec(x.to_vec(), x.shape().clone(), &dev).unwrap()
                };
                let got = maybe_transposed(up(&a), ta)
                    .matmul(&maybe_transposed(up(&b), tb))
                    .to_vec();
                let diff = got
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    diff < 1e-4 * k as f32,
                    "{gemm:?} ({bt}, {m}, {k}, {n}), transposed {ta} {tb}: max diff {diff}"
                );
            }
        }
    }
}

#[test]
fn matmul_matches_the_cpu_across_tile_edges() {
    // around matmul.wgsl's 64 x 64 tile and 16-deep K slice, and sizes not multiples of 4 (which
    // matmul_vec4.wgsl leaves to it)
    matmuls_match_the_cpu(&[
        (1, 1, 1, 1),
        (2, 65, 17, 63),
        (3, 130, 70, 97),
        (1, 64, 128, 64),
    ]);
}

#[test]
fn vec4_matmul_matches_the_cpu_across_tiles_and_splits() {
    // multiples of 4 around matmul_vec4.wgsl's 128 x 128 tile and 8-deep K step, a batch, and skinny
    // products with a long K, which split K (LoRA's gradients: (r, BT) @ (BT, in))
    matmuls_match_the_cpu(&[
        (1, 4, 4, 4),
        (2, 132, 12, 260),
        (1, 128, 264, 124),
        (1, 20, 1028, 96),
    ]);
}

#[test]
fn narrow_matmul_matches_the_cpu_for_lora_ranks() {
    // N <= 16 (x A^T with r = 8, an odd r, a batch), M <= 16 run as the transpose ((r, BT) @ (BT, in)),
    // with and without split-K (M N not a multiple of 4 takes one split), and both sides small
    matmuls_match_the_cpu(&[
        (3, 130, 70, 8),
        (1, 1000, 600, 12),
        (2, 40, 33, 5),
        (1, 7, 1030, 300),
        (1, 5, 700, 33),
        (2, 16, 40, 16),
    ]);
}

#[test]
fn vec4_matmul_takes_unaligned_views_to_the_first_kernel() {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    // a narrow view starting one element in: rows contiguous but not 16-byte aligned
    let a = Tensor::randn([40, 37], 0.0, 1.0, &mut rng(3), &cpu);
    let b = Tensor::randn([36, 20], 0.0, 1.0, &mut rng(4), &cpu);
    let want = a.narrow(1, 1, 36).matmul(&b).to_vec();
    let up = |x: &Tensor<Cpu<f32>>| Tensor::from_vec(x.to_vec(), x.shape().clone(), &gpu).unwrap();
    let (ga, gb) = (up(&a), up(&b));
    let got = ga.narrow(1, 1, 36).matmul(&gb).to_vec();
    let diff = got
        .iter()
        .zip(&want)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4 * 36.0, "max diff {diff}");
}

#[test]
fn grids_past_65535_workgroups_cover_every_row() {
    let Some((_one, gpu)) = gpu() else { return };
    // 70_000 rows: one workgroup per row needs a second grid dimension.
    let rows = 70_000;
    let data: Vec<f32> = (0..rows * 2).map(|i| (i % 7) as f32).collect();
    let x = Tensor::from_vec(data.clone(), [rows, 2], &gpu).unwrap();
    let want: Vec<f32> = data.chunks(2).map(|r| r[0] + r[1]).collect();
    assert_eq!(x.sum(1, false).to_vec(), want);
    assert_eq!(x.softmax().to_vec().len(), rows * 2);
}

/// The largest |got - want| relative to 1 + |want|.
fn max_rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

/// `x.sum`, `x.max` or `x.min` over `axis`.
fn reduced<B: Backend<Elem = f32>>(x: &Tensor<B>, op: &str, axis: isize) -> Vec<f32> {
    match op {
        "sum" => x.sum(axis, false),
        "max" => x.max(axis, false),
        _ => x.min(axis, false),
    }
    .to_vec()
}

#[test]
fn column_reductions_match_the_cpu_through_every_pass() {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    // (dims, axis): one chunk of rows; 79 chunks (two passes); 300_000 rows (four passes); a middle axis
    // with a batch before it; and a transposed view (copied to rows first)
    let cases: [(&[usize], isize, bool); 5] = [
        (&[40, 70], 0, false),
        (&[5000, 70], 0, false),
        (&[300_000, 3], 0, false),
        (&[3, 300, 37], 1, false),
        (&[70, 130], 1, true),
    ];
    for (dims, axis, transposed) in cases {
        let x = Tensor::randn(dims, 0.0, 1.0, &mut rng(dims[0] as u64), &cpu);
        let g = Tensor::from_vec(x.to_vec(), x.shape().clone(), &gpu).unwrap();
        let (x, g) = if transposed { (x.t(), g.t()) } else { (x, g) };
        for name in ["sum", "max", "min"] {
            let (want, got) = (reduced(&x, name, axis), reduced(&g, name, axis));
            // a sum of n standard normals is off by about sqrt(n) ulps of its size
            let diff = max_rel_diff(&got, &want);
            assert!(
                diff < 1e-4,
                "{name} over axis {axis} of {dims:?}: max diff {diff}"
            );
        }
    }
}

#[test]
fn index_add_sums_repeated_ids_as_the_cpu_does() {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    // 3000 ids into 50 of 61 rows (an embedding's gradient: repeated tokens), on the middle axis of
    // (2, 61, 70), onto a non-zero tensor
    let ids: Vec<u32> = (0..3000u32)
        .map(|i| (i * 7919 + i / 3) % 50 + 11 * (i % 2))
        .collect();
    let base = Tensor::randn([2, 61, 70], 0.0, 1.0, &mut rng(5), &cpu);
    let src = Tensor::randn([2, 3000, 70], 0.0, 1.0, &mut rng(6), &cpu);
    let up = |x: &Tensor<Cpu<f32>>| Tensor::from_vec(x.to_vec(), x.shape().clone(), &gpu).unwrap();
    let want = base.index_add(1, &ids, &src).to_vec();
    let got = up(&base).index_add(1, &ids, &up(&src)).to_vec();
    let diff = max_rel_diff(&got, &want);
    assert!(diff < 1e-6, "max diff {diff}");
}

#[test]
fn rms_norm_weight_gradient_sums_every_chunk_of_rows() {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    for rows in [1, 64, 65, 5000] {
        let n = 72;
        let randn = |dims: &[usize], seed| Tensor::randn(dims, 0.0, 1.0, &mut rng(seed), &cpu);
        let (x, w, g) = (randn(&[rows, n], 1), randn(&[n], 2), randn(&[rows, n], 3));
        let up =
            |x: &Tensor<Cpu<f32>>| Tensor::from_vec(x.to_vec(), x.shape().clone(), &gpu).unwrap();
        let (dx, dw) = x.rms_norm_backward(&w, &g, 1e-5, true);
        let (gdx, gdw) = up(&x).rms_norm_backward(&up(&w), &up(&g), 1e-5, true);
        let diff = max_rel_diff(&gdw.unwrap().to_vec(), &dw.unwrap().to_vec());
        assert!(diff < 1e-4, "dw over {rows} rows: max diff {diff}");
        let diff = max_rel_diff(&gdx.to_vec(), &dx.to_vec());
        assert!(diff < 1e-4, "dx over {rows} rows: max diff {diff}");
    }
}

#[test]
fn a_second_identical_op_reuses_buffers_and_pipelines() {
    let Some((_one, gpu)) = gpu() else { return };
    let x = Tensor::randn([33, 17], 0.0, 1.0, &mut rng(0), &gpu);
    let step = |x: &Tensor<Wgpu>| x.matmul(&x.t()).softmax().sum_all().to_scalar();
    let first = step(&x);
    let before = gpu.stats();
    let second = step(&x);
    assert_eq!(first, second);
    let after = gpu.stats();
    assert_eq!(after.pool_misses, before.pool_misses);
    assert_eq!(after.pipelines, before.pipelines);
    assert_eq!(after.readbacks - before.readbacks, 1);
}

#[test]
fn data_over_the_device_limit_is_an_error_naming_the_shape() {
    let Some((_one, gpu)) = gpu() else { return };
    let limit = gpu.max_storage_len();
    if limit > 1 << 28 {
        return eprintln!(
            "this device takes {limit} values per buffer: too many to allocate in a test"
        );
    }
    let err = Tensor::from_vec(vec![0.0; limit + 1], [limit + 1], &gpu).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("shape ({})", limit + 1)) && msg.contains(&limit.to_string()),
        "{msg}"
    );
}

#[test]
fn dequantizing_4_bit_weights_on_the_gpu_matches_the_cpu() {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    // 70 x 300 values: 329 blocks of 64 (the last one partial), two double-quantization blocks
    let dims = [70, 300];
    let values: Vec<f32> = Tensor::randn(dims, 0.0, 0.05, &mut rng(8), &cpu).to_vec();
    for kind in [
        QuantType::Nf4,
        QuantType::Fp4,
        QuantType::E2m1,
        QuantType::Int4,
    ] {
        for double in [false, true] {
            let q = Quantized::new(&values, &dims, kind, double).unwrap();
            let host = q.dequantize();
            let on_cpu = QuantizedWeight::new(&q, &cpu).decompress(&cpu).to_vec();
            let on_gpu = QuantizedWeight::new(&q, &gpu).decompress(&gpu).to_vec();
            assert_eq!(on_cpu, host, "{kind:?} double={double}: the CPU kernel");
            for (i, (g, h)) in on_gpu.iter().zip(&host).enumerate() {
                assert!(
                    (g - h).abs() <= 1e-6 * h.abs(),
                    "{kind:?} double={double}: value {i}: GPU {g}, host {h}"
                );
            }
        }
    }
}

#[test]
fn the_4_bit_gemm_matches_expanding_the_weight_on_the_cpu() {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    // W (70, 300): 329 blocks of 64, the last partial, and N or K not a multiple of 4 (the first kernel);
    // W (72, 600): the fast kernel, K split in two for x W^T. x W^T and g W with 120 rows (decoded
    // inside the GEMM) and 132 (past one row block: expanded first), x contiguous or a transposed view
    for (dims, rows) in [([70, 300], 120), ([72, 600], 120), ([72, 600], 132)] {
        let values: Vec<f32> = Tensor::randn(dims, 0.0, 0.05, &mut rng(8), &cpu).to_vec();
        let up =
            |x: &Tensor<Cpu<f32>>| Tensor::from_vec(x.to_vec(), x.shape().clone(), &gpu).unwrap();
        for (kind, double) in [
            (QuantType::Nf4, true),
            (QuantType::Nf4, false),
            (QuantType::Fp4, true),
        ] {
            let q = Quantized::new(&values, &dims, kind, double).unwrap();
            let wg = QuantizedWeight::new(&q, &gpu);
            let w = QuantizedWeight::new(&q, &cpu).decompress(&cpu); // (out, in)
            for transposed in [false, true] {
                let k = dims[usize::from(!transposed)];
                let stored = Tensor::randn([k, rows], 0.0, 1.0, &mut rng(9), &cpu);
                for view in [true, false] {
                    // x (rows, k): a view of the stored (k, rows), or its contiguous copy, on both devices
                    let (x, gx) = if view {
                        (stored.t(), up(&stored).t())
                    } else {
                        (stored.t().contiguous(), up(&stored.t().contiguous()))
                    };
                    let (want, got) = if transposed {
                        (x.matmul(&w), wg.product_transposed(&gx))
                    } else {
                        (x.matmul(&w.t()), wg.product(&gx))
                    };
                    let got = got.expect("the GPU multiplies from the codes").to_vec();
                    let diff = max_rel_diff(&got, &want.to_vec());
                    assert!(
                        diff < 1e-4,
                        "{dims:?} x {rows} {kind:?} double={double} transposed={transposed} \
                         view={view}: {diff}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_paged_optimizer_keeps_its_state_on_the_host_and_trains_the_same() {
    let Some((_one, gpu)) = gpu() else { return };
    let (plain, paged) = (
        model_with_adapter(&gpu, Method::Qlora),
        model_with_adapter(&gpu, Method::Qlora),
    );
    let run = |model: &Gpt<Wgpu>, paged: bool| {
        let mut opt = AdamW::new(model.trainable_params(), AdamWConfig::default());
        if paged {
            opt = opt.paged();
        }
        for step in 0..3 {
            let (ids, targets) = batch(step);
            model
                .loss(&ids, &targets, 2, config().max_seq_len)
                .backward()
                .unwrap();
            opt.step();
            opt.zero_grad();
        }
        opt
    };
    let (a, b) = (run(&plain, false), run(&paged, true));
    assert_eq!((a.host_state_bytes(), b.device_state_bytes()), (0, 0));
    assert_eq!(a.device_state_bytes(), b.host_state_bytes());
    for ((name, p), (_, q)) in plain.named_params().iter().zip(paged.named_params()) {
        assert!(p.value().to_vec() == q.value().to_vec(), "{name} differs");
    }
}

/// 8-bit optimizer states on the GPU: `quantize_8bit` / `dequantize_8bit` (kernels/quant.wgsl) give the
/// CPU's codes (a code may differ where the grid point's rounding does: within one map step), and 8-bit
/// AdamW trains a parameter of 5000 values (blocks of 256, the last partial) as on the CPU, paged or not.
#[test]
fn eight_bit_optimizer_states_on_the_gpu_match_the_cpu() {
    use lowrank::tensor::dynamic_map::DynamicMap;
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    let n = 5000;
    let normal: Vec<f32> = Tensor::randn([n], 0.0, 0.05, &mut rng(31), &cpu).to_vec();
    let squares: Vec<f32> = normal.iter().map(|v| v * v).collect();
    for (map, values) in [
        (DynamicMap::signed(), &normal),
        (DynamicMap::unsigned(), &squares),
    ] {
        let (c, g) = (
            round_trip_8bit(&cpu, values, map),
            round_trip_8bit(&gpu, values, map),
        );
        let peak = values.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        for (i, (a, b)) in c.iter().zip(&g).enumerate() {
            assert!((a - b).abs() <= 0.015 * peak, "value {i}: CPU {a}, GPU {b}");
        }
        let same = c.iter().zip(&g).filter(|(a, b)| a == b).count();
        assert!(same * 100 >= 99 * n, "only {same} of {n} codes agree");
    }
    let (on_cpu, cpu_bytes) = adamw8bit_steps(&cpu, &normal, false);
    let (on_gpu, gpu_bytes) = adamw8bit_steps(&gpu, &normal, false);
    let (paged, paged_bytes) = adamw8bit_steps(&gpu, &normal, true);
    let bytes = 2 * (n + 4 * n.div_ceil(256));
    assert_eq!((cpu_bytes, gpu_bytes, paged_bytes), (bytes, bytes, 0));
    for (i, ((a, b), c)) in on_cpu.iter().zip(&on_gpu).zip(&paged).enumerate() {
        assert!((a - b).abs() < 1e-5, "value {i}: CPU {a}, GPU {b}");
        assert_eq!(b, c, "value {i}: paged");
    }
}

/// `values` quantized to 8-bit codes of `map` in blocks of 256 on `dev`, and expanded again.
fn round_trip_8bit<B: Backend<Elem = f32>>(
    dev: &B,
    values: &[f32],
    map: &lowrank::tensor::dynamic_map::DynamicMap,
) -> Vec<f32> {
    let n = values.len();
    let q = dev.quantize_8bit(
        &dev.storage_from_vec(values.to_vec()),
        n,
        256,
        &dev.bytes_storage(map.table()),
    );
    let expanded = dev.dequantize_8bit(&q, &dev.storage_from_vec(map.values.to_vec()));
    Tensor::from_storage(expanded, [n], dev).to_vec()
}

/// Three steps of 8-bit AdamW on one parameter starting at `start`: its values and the optimizer's device
/// state bytes.
fn adamw8bit_steps<B: Backend<Elem = f32>>(
    dev: &B,
    start: &[f32],
    paged: bool,
) -> (Vec<f32>, usize) {
    use lowrank::autograd::Var;
    let n = start.len();
    let p = Var::param(Tensor::from_vec(start.to_vec(), [n], dev).unwrap());
    let mut opt = AdamW::new(vec![p.clone()], AdamWConfig::default()).int8();
    if paged {
        opt = opt.paged();
    }
    for t in 0..3 {
        let g = Tensor::randn([n], 0.0, 0.01, &mut rng(40 + t), dev);
        p.mul(&Var::constant(g)).sum_all().backward().unwrap();
        opt.step();
        opt.zero_grad();
    }
    (p.value().to_vec(), opt.device_state_bytes())
}

/// A mixed-adapter batch on the GPU (the adapter on rows 0 and 2, the base on row 1) gives the CPU's
/// logits: the row gathers and the concat are the same ops on both devices.
#[test]
fn a_mixed_adapter_batch_on_the_gpu_matches_the_cpu() {
    let Some((_one, gpu)) = gpu() else { return };
    let cpu = Cpu::<f32>::new();
    let (c, g) = (
        mixed_batch_logits(model_with_adapter(&cpu, Method::Lora)),
        mixed_batch_logits(model_with_adapter(&gpu, Method::Lora)),
    );
    let diff = c
        .iter()
        .zip(&g)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "GPU vs CPU: {diff}");
}

fn mixed_batch_logits<B: Backend<Elem = f32>>(mut model: Gpt<B>) -> Vec<f32> {
    let rows = [Some("default"), None, Some("default")];
    model.set_batch_adapters(Some(&rows)).unwrap();
    let (ids, _) = batch(0);
    let ids: Vec<u32> = ids
        .iter()
        .chain(&ids[..config().max_seq_len])
        .copied()
        .collect();
    let out = lowrank::autograd::no_grad(|| model.forward(&ids, 3, config().max_seq_len));
    out.value().to_vec()
}
