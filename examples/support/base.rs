//! The base model the fine-tuning examples start from: the checkpoint in `dir` if there is one, else a
//! model pretrained on the generated general corpus and saved there, with its held-out text.

use lowrank::gpt::{save_validation_text, train, Dataset, Gpt, GptConfig, TrainConfig};
use lowrank::nn::Module;
use lowrank::tensor::Backend;
use std::path::Path;

/// Loads the checkpoint in `dir`, or pretrains a small model for `steps` steps on `(train, val)` and
/// saves it there.
pub fn load_or_pretrain<B: Backend>(
    dir: &Path,
    steps: usize,
    seed: u64,
    (train_set, val): (&Dataset, &Dataset),
    dev: &B,
) -> Result<Gpt<B>, Box<dyn std::error::Error>> {
    if dir.join(lowrank::gpt::CONFIG_FILE).exists() {
        let model = Gpt::load(dir, dev)?;
        println!(
            "base model: loaded {} ({} parameters)",
            dir.display(),
            model.num_params()
        );
        return Ok(model);
    }
    let config = GptConfig::small();
    println!(
        "base model: none at {}, pretraining one ({steps} steps)",
        dir.display()
    );
    let model = Gpt::new(config.clone(), seed, dev);
    let cfg = TrainConfig {
        steps,
        seq: config.max_seq_len,
        eval_every: 0,
        seed,
        ..TrainConfig::default()
    };
    let report = train(&model, train_set, Some(val), &cfg)?;
    let last = report.evals.last().expect("train evaluates at the end");
    println!(
        "pretrained in {:.1}s: val loss {:.3}",
        report.seconds, last.val_loss
    );
    // one unit: never a checkpoint beside another run's validation text
    lowrank::nn::save_dir_atomic(dir, |staging| {
        model.save_into(staging)?;
        save_validation_text(staging, val)
    })?;
    println!("saved base checkpoint to {}", dir.display());
    Ok(model)
}
