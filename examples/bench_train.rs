//! Prints one JSON line per (config, variant), in the format of benches/reference/torch_llama_bench.py, so the
//! two can be compared in one sitting: ms/step (median), tokens/s, parameters, the bytes held for weights +
//! gradients + optimizer state, and peak RSS. Each variant runs in its own process so its peak RSS is its own.
//!
//! On the CPU each line also gives the step's matrix-product FLOPs against the machine's measured FMA peak
//! (`pct_of_peak`), and where the time went (`time_in`, means per step): in `Tensor::matmul`, in the fused
//! attention kernels, and the rest (norms, RoPE, SwiGLU, adds, the loss, the optimizer, the graph), with
//! the % of peak the products reached while they ran.
//!
//! With `--device wgpu` the steps run on the GPU, and each line adds the GPU work of one step: compute
//! dispatches, queue submits and read-backs (the loss is the one read-back a step needs). Where the adapter
//! has timestamp queries, `gpu_time_in` gives where the GPU's time went, from as many steps again with each
//! kernel timed (so not in `ms_per_step`: a timed submission waits for the GPU): ms per step in the GEMMs
//! (with their GFLOP/s), in attention, in the rest, and by kernel. `--gemm tiled` and `--lanes workgroup`
//! run the first GEMM kernel and the workgroup-memory reductions instead, to compare them in the step;
//! `gpu_kernels` records which ran.
//!
//! `cargo run --release --example bench_train -- --configs small,medium --steps 20`
//! `cargo run --release --example bench_train -- --configs smollm2 --steps 5` (SmolLM2 from its GGUF)

use clap::{Parser, ValueEnum};
use lowrank::bench::{Variant, Workload};
use lowrank::flops::fma_peak_gflops;
use lowrank::nn::Module;
use lowrank::tensor::flops::{self, Tally};
use lowrank::tensor::Backend;
use std::time::Instant;

#[path = "support/cli.rs"]
mod cli;
#[path = "support/device.rs"]
mod device;
#[path = "support/flags.rs"]
mod flags;
#[path = "support/model_file.rs"]
mod model_file;
#[path = "support/process.rs"]
mod process;

#[derive(Parser, Debug)]
#[command(
    allow_negative_numbers = true,
    about = "Time training steps of the reference model sizes, one JSON line per (config, variant)"
)]
struct Args {
    /// Model sizes, comma-separated: small, medium (those of torch_llama_bench.py), smollm2 (the real
    /// model at batch 4 x seq 256, as torch_smollm2_bench.py).
    #[arg(long, default_value = "small,medium")]
    configs: String,
    /// What to time, comma-separated: full, lora_qv, lora_all, dora_qv, qlora_qv, infer.
    #[arg(long, default_value = "full,lora_qv,lora_all,dora_qv,qlora_qv,infer")]
    variants: String,
    /// Timed steps per variant (the median is reported).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Fused kernels, or the plain compositions they optimise: the difference is what fusion buys.
    #[arg(long, value_enum, default_value_t = flags::Kernels::Fused)]
    kernels: flags::Kernels,
    /// The GGUF file (or Hugging Face folder) the smollm2 config loads.
    #[arg(long, default_value = model_file::DEFAULT_MODEL)]
    model: std::path::PathBuf,
    /// Where to run the steps.
    #[arg(long, value_enum, default_value_t = device::Device::Cpu)]
    device: device::Device,
    /// With `--device wgpu`: the GEMM kernels, `auto` (the fast ones, chosen by shape) or `tiled` (the
    /// first version for every product), to compare them in the whole step.
    #[arg(long, value_enum)]
    gemm: Option<GemmArg>,
    /// With `--device wgpu`: how the row kernels combine their lanes, `subgroup` (the default where the
    /// adapter has subgroups) or `workgroup` (workgroup memory only).
    #[arg(long, value_enum)]
    lanes: Option<LanesArg>,
    /// Internal: run one (config, variant) in this process.
    #[arg(long, num_args = 2, hide = true)]
    child: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GemmArg {
    Auto,
    Tiled,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LanesArg {
    Subgroup,
    Workgroup,
}

/// The GPU with the kernels `--gemm` and `--lanes` ask for, and those kernels as the JSON line records them.
fn gpu_device(
    args: &Args,
) -> Result<(lowrank::wgpu::Wgpu, serde_json::Value), Box<dyn std::error::Error>> {
    use lowrank::wgpu::{Gemm, Lanes, Wgpu};
    let mut gpu = Wgpu::new()?;
    if let Some(g) = args.gemm {
        gpu = gpu.with_gemm(match g {
            GemmArg::Auto => Gemm::Auto,
            GemmArg::Tiled => Gemm::Tiled,
        });
    }
    if let Some(l) = args.lanes {
        gpu = gpu.with_lanes(match l {
            LanesArg::Subgroup => Lanes::Subgroup,
            LanesArg::Workgroup => Lanes::Workgroup,
        })?;
    }
    let (gemm, lanes) = (args.gemm.unwrap_or(GemmArg::Auto), gpu.lanes());
    eprintln!(
        "device: {} (GEMM {gemm:?}, lanes {lanes:?})",
        gpu.adapter_name()
    );
    let kernels = serde_json::json!({
        "gemm": format!("{gemm:?}").to_lowercase(),
        "lanes": format!("{lanes:?}").to_lowercase(),
    });
    Ok((gpu, kernels))
}

/// GPU work counters (dispatches, submits, read-backs) when the process has a GPU context, else zeros.
fn gpu_counters(device: device::Device) -> [u64; 3] {
    match device {
        device::Device::Wgpu => lowrank::wgpu::Wgpu::new()
            .map(|g| g.stats())
            .map_or([0; 3], |s| [s.dispatches, s.submits, s.readbacks]),
        device::Device::Cpu => [0; 3],
    }
}

/// `gpu_time_in` (see the module doc): `steps` more steps with every kernel timed, or `None` when the run
/// is not on a GPU that can time its passes.
fn gpu_time_in<B: Backend>(
    device: device::Device,
    w: &mut Workload<B>,
    steps: usize,
    gflop_per_step: f64,
) -> Result<Option<serde_json::Value>, lowrank::gpt::StepFailed> {
    let gpu = match device {
        device::Device::Wgpu => lowrank::wgpu::Wgpu::new().ok(),
        device::Device::Cpu => None,
    };
    let Some(gpu) = gpu.filter(|g| g.start_profiling().is_ok()) else {
        return Ok(None);
    };
    for _ in 0..steps {
        w.step()?;
    }
    let times = gpu.stop_profiling();
    let ms = |t: &lowrank::wgpu::KernelTime| t.seconds * 1e3 / steps as f64;
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let in_files = |prefix: &str| -> f64 {
        times
            .iter()
            .filter(|t| t.file.starts_with(prefix))
            .map(ms)
            .sum()
    };
    let (total, gemm, attention) = (in_files(""), in_files("matmul"), in_files("attention"));
    let by_kernel: serde_json::Map<_, _> = times
        .iter()
        .map(|t| (format!("{}:{}", t.file, t.entry), round2(ms(t)).into()))
        .collect();
    Ok(Some(serde_json::json!({
        "total_ms": round2(total),
        "matmul_ms": round2(gemm),
        "matmul_gflops": round2(gflop_per_step / (gemm * 1e-3).max(1e-12)),
        "attention_ms": round2(attention),
        "rest_ms": round2(total - gemm - attention),
        "by_kernel": by_kernel,
    })))
}

/// One (config, variant), printed as a JSON line; `gpu_kernels` is what `gpu_device` chose (null on the CPU).
fn child<B: Backend>(
    args: &Args,
    config: &str,
    variant: Variant,
    dev: &B,
    gpu_kernels: Option<serde_json::Value>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = match config {
        "smollm2" => {
            let p = lowrank::gpt::Pretrained::load(&args.model, dev)?;
            Workload::on_model(p.model, variant, 4, 256)
        }
        _ => Workload::new(config, variant, dev),
    };
    w.model.kernels = args.kernels.into();
    w.opt.kernels = args.kernels.into();
    let (steps, warmup) = (args.steps, args.warmup);
    for _ in 0..warmup {
        w.step()?;
    }
    let before = gpu_counters(args.device);
    // the steps' matrix products, as issued: FLOPs (docs: src/flops.rs; equal to its formula,
    // tests/flops.rs) and the time spent in them
    flops::start();
    let mut times: Vec<f64> = (0..steps)
        .map(|_| {
            let t = Instant::now();
            w.step()?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, lowrank::gpt::StepFailed>>()?;
    let products = flops::stop();
    let after = gpu_counters(args.device);
    let per_step = |i: usize| (after[i] - before[i]) as f64 / steps as f64;
    let mean_ms = times.iter().sum::<f64>() / steps as f64;
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    let gflop = products.flops() as f64 / 1e9 / steps as f64;
    let (total, trainable) = (w.model.num_params(), w.model.num_trainable_params());
    // 4-bit base weights (QLoRA) are not parameters: count them and their bytes separately
    let (mut compressed, mut compressed_params) = (0, 0);
    w.model.visit_linears("", &mut |_, l| {
        if let Some(c) = l.compressed_weight() {
            compressed += c.size_in_bytes();
            compressed_params += c.dims().iter().product::<usize>();
        }
    });
    // weights + gradients + AdamW moments
    let state_bytes = 4 * total + compressed + 4 * trainable + w.opt.state_bytes();
    let total = total + compressed_params;
    let gflops = gflop / ms * 1e3;
    let gpu_time = gpu_time_in(args.device, &mut w, steps, gflop)?;
    // % of the CPU's measured FMA peak, and where the step's time went (for the CPU backend: a GPU's
    // peak is not probed, and its ops return before their kernels have run)
    let peak = matches!(args.device, device::Device::Cpu).then(|| fma_peak_gflops(0.5));
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    let ms_in = |t: Tally| t.seconds * 1e3 / steps as f64;
    let breakdown = peak.map(|peak| {
        let pct = |t: Tally| round1(100.0 * t.flops as f64 / t.seconds.max(1e-12) / 1e9 / peak);
        serde_json::json!({
            "matmul_ms": round1(ms_in(products.matmul)),
            "matmul_pct_of_peak": pct(products.matmul),
            "attention_ms": round1(ms_in(products.attention)),
            "attention_pct_of_peak": pct(products.attention),
            "rest_ms": round1(mean_ms - ms_in(products.matmul) - ms_in(products.attention)),
        })
    });
    println!(
        "{}",
        serde_json::json!({
            "config": config, "variant": variant.name(), "ms_per_step": (ms * 100.0).round() / 100.0,
            "tokens_per_s": (w.tokens() as f64 / ms * 1e3).round(), "params_total": total,
            "params_trainable": trainable, "weights_grads_optimizer_mib": state_bytes as f64 / (1 << 20) as f64,
            "peak_rss_mib": process::peak_rss_mib(), "engine": "lowrank", "device": dev.name(),
            "kernels": format!("{:?}", args.kernels).to_lowercase(),
            "dispatches_per_step": per_step(0), "submits_per_step": per_step(1),
            "readbacks_per_step": per_step(2), "gflop_per_step": (gflop * 1e3).round() / 1e3,
            "gflops": round1(gflops), "fma_peak_gflops": peak.map(round1),
            "pct_of_peak": peak.map(|p| round1(100.0 * gflops / p)), "time_in": breakdown,
            "gpu_kernels": gpu_kernels, "gpu_time_in": gpu_time
        })
    );
    Ok(())
}

fn main() {
    process::setup();
    let args = Args::parse();
    cli::exit_on_error((|| {
        if let Some(c) = &args.child {
            let variant =
                Variant::parse(&c[1]).ok_or_else(|| format!("unknown variant {}", c[1]))?;
            return match args.device {
                device::Device::Cpu => child(
                    &args,
                    &c[0],
                    variant,
                    &lowrank::tensor::Cpu::<f32>::new(),
                    None,
                ),
                device::Device::Wgpu => {
                    let (gpu, kernels) = gpu_device(&args)?;
                    child(&args, &c[0], variant, &gpu, Some(kernels))
                }
            };
        }
        run_children(&args)
    })());
}

/// Checks every flag, then runs each (config, variant) in a child process of its own.
fn run_children(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    flags::at_least_one("--steps", args.steps)?;
    if args.device == device::Device::Cpu && (args.gemm.is_some() || args.lanes.is_some()) {
        return Err("--gemm and --lanes choose GPU kernels: they need --device wgpu".into());
    }
    let configs: Vec<&str> = args.configs.split(',').map(str::trim).collect();
    if let Some(bad) = configs
        .iter()
        .find(|c| !["small", "medium", "smollm2"].contains(c))
    {
        return Err(format!(
            "--configs: unknown config `{bad}` (expected small, medium or smollm2)"
        )
        .into());
    }
    if configs.contains(&"smollm2") {
        model_file::check_exists(&args.model)?;
    }
    let variants: Vec<&str> = args.variants.split(',').map(str::trim).collect();
    if let Some(bad) = variants.iter().find(|v| Variant::parse(v).is_none()) {
        return Err(format!(
            "--variants: unknown variant `{bad}` (expected one of full, lora_qv, lora_all, dora_qv, \
             qlora_qv, infer)"
        )
        .into());
    }
    let exe = std::env::current_exe()?;
    let device = args.device.to_possible_value().expect("a listed device");
    let kernels = args.kernels.to_possible_value().expect("a listed kind");
    for config in &configs {
        for variant in &variants {
            let status = std::process::Command::new(&exe)
                .args(["--child", config, variant])
                .args(["--steps", &args.steps.to_string()])
                .args(["--warmup", &args.warmup.to_string()])
                .args(["--device", device.get_name()])
                .args(["--kernels", kernels.get_name()])
                .args(args.gemm.iter().flat_map(|g| {
                    ["--gemm", g.to_possible_value().expect("listed").get_name()].map(String::from)
                }))
                .args(args.lanes.iter().flat_map(|l| {
                    ["--lanes", l.to_possible_value().expect("listed").get_name()].map(String::from)
                }))
                .arg("--model")
                .arg(&args.model)
                .status()?;
            if !status.success() {
                return Err(format!("benchmark {config}/{variant} failed ({status})").into());
            }
        }
    }
    Ok(())
}
