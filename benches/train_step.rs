//! Training-step benchmarks on the shapes of benches/reference/torch_llama_bench.py: one step (forward,
//! backward, AdamW) for the small (d 128, 4 layers, seq 64, batch 16) and medium (d 256, 6 layers, seq 128,
//! batch 16) configs — full fine-tuning, LoRA r=8 alpha=16 on q+v, LoRA on all linear layers, DoRA on q+v —
//! and greedy forward throughput of the merged model. Throughput is in tokens.
//!
//! The `wgpu` groups run the same steps on the GPU (skipped with a message when there is no adapter).
//!
//! `cargo bench --bench train_step`; `examples/bench_train.rs` prints the same runs as JSON lines, with
//! memory, for a side-by-side comparison with the PyTorch script.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lowrank::bench::{Variant, Workload};
use lowrank::tensor::{Backend, Cpu};
use lowrank::wgpu::Wgpu;
use std::time::Duration;

#[path = "../examples/support/process.rs"]
mod process;

fn steps_on<B: Backend>(c: &mut Criterion, device: &str, dev: &B) {
    for config in ["small", "medium"] {
        let mut g = c.benchmark_group(format!("train_step_{config}{device}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(if config == "small" { 4 } else { 12 }));
        for variant in Variant::ALL {
            let mut w = Workload::new(config, variant, dev);
            g.throughput(Throughput::Elements(w.tokens() as u64));
            g.bench_function(variant.name(), |b| {
                b.iter(|| w.step().expect("a random batch trains"))
            });
        }
        g.finish();
    }
}

fn steps(c: &mut Criterion) {
    process::setup();
    steps_on(c, "", &Cpu::<f32>::new());
    match Wgpu::new() {
        Ok(gpu) => steps_on(c, "_wgpu", &gpu),
        Err(e) => eprintln!("skipping the wgpu train steps: {e}"),
    }
}

criterion_group!(benches, steps);
criterion_main!(benches);
