//! LoRA end to end in one page, no flags: pretrain a small GPT, adapt it (`h = W0 x + (alpha/r) B A x`) with
//! a hand-written loop, save the adapter as PEFT does, reload it, merge it, and compare the logits.
//! `cargo run --release --example lora_minimal`
use lowrank::autograd::no_grad;
use lowrank::gpt::{corpus, corpus::PirateTask, train, ByteTokenizer, Dataset, Gpt, GptConfig};
use lowrank::gpt::{Tokenizer, TrainConfig};
use lowrank::lora::{load_adapter, save_adapter, LoraConfig, LoraModel, Targets};
use lowrank::nn::{clip_scale, AdamW, AdamWConfig, Module};
use lowrank::tensor::{rng, Cpu};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Cpu::<f32>::new();
    let dir = std::env::temp_dir().join(format!("lowrank-minimal-{}", std::process::id()));
    // 1. A base: the small GPT (d 128, 4 layers; bytes are its tokens) pretrained briefly on English.
    let base = Gpt::new(GptConfig::small(), 0, &dev);
    let english = Dataset::new(ByteTokenizer.encode(&corpus::general_corpus(100_000, 0)));
    let mut pretrain = TrainConfig::default(); // AdamW at 3e-3, warmup then cosine decay, clipping
    (pretrain.steps, pretrain.batch, pretrain.progress) = (120, 8, false);
    train(&base, &english, None, &pretrain)?;
    base.save(&dir.join("base"))?;

    // 2. LoRA on q_proj and v_proj: A (r, in) random, B (out, r) zero, so training starts at the base.
    let mut model = Gpt::load(&dir.join("base"), &dev)?;
    let targets = Targets::Names(vec!["q_proj".into(), "v_proj".into()]);
    let lora = LoraConfig {
        targets,
        ..LoraConfig::default()
    }; // r 8, alpha 16: scale alpha / r = 2
    model.add_adapter("default", &lora, 0)?; // freezes every base weight
    let (trainable, total) = (model.num_trainable_params(), model.num_params());
    println!("trainable parameters: {trainable} of {total}");

    // 3. The training loop: sample, loss, backward, clip, AdamW, zero the gradients.
    let task = PirateTask.dataset(100_000, 1); // English turned into pirate speech
    let mut opt = AdamW::new(model.trainable_params(), AdamWConfig::default());
    opt.set_lr(3e-3);
    let (mut r, mut window) = (rng(2), 0.0);
    for step in 1..=120 {
        let b = task.sample(8, 64, &mut r); // 8 windows of 64 token ids, and the tokens that follow
        let loss = model.loss(&b.inputs, &b.targets, b.batch, b.seq);
        loss.backward()?; // gradients reach A and B only
        let (scale, _norm) = clip_scale(opt.params(), 1.0).expect("A and B have gradients");
        opt.step_scaled(&scale); // AdamW on the clipped gradients
        opt.zero_grad();
        window += loss.value().to_scalar() / 30.0;
        if step % 30 == 0 {
            println!("steps {:>3}-{step:>3}: mean loss {window:.3}", step - 29);
            window = 0.0;
        }
    }

    // 4. Save (adapter_config.json + adapter_model.safetensors), reload onto the base, merge.
    save_adapter(&model, "default", &dir.join("adapter"))?;
    let mut reloaded = Gpt::load(&dir.join("base"), &dev)?;
    load_adapter(&mut reloaded, &dir.join("adapter"), "default")?;
    let ids = ByteTokenizer.encode("The cat sat on the mat.");
    let logits = |m: &Gpt<Cpu>| no_grad(|| m.forward(&ids, 1, ids.len())).value().to_vec();
    let unmerged = logits(&reloaded);
    let reload_diff = max_diff(&unmerged, &logits(&model));
    println!("reloaded vs trained: max |logit diff| {reload_diff:e}");
    reloaded.merge_adapter()?; // W = W0 + (alpha/r) B A: inference costs exactly the base model's
    let diff = max_diff(&logits(&reloaded), &unmerged);
    println!("merged vs unmerged:  max |logit diff| {diff:e}");
    std::fs::remove_dir_all(&dir)?;
    if reload_diff > 0.0 || diff > 1e-4 {
        return Err(
            format!("reloading ({reload_diff}) or merging ({diff}) changed the logits").into(),
        );
    }
    Ok(())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
