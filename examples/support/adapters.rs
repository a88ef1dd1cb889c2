//! Named adapters on the command line (`--adapter NAME=DIR`, repeated) and prompts that each choose one
//! (`--use NAME|base`, one per `--prompt`), run as mixed-adapter batches: what `generate` and `chat` share.

use lowrank::gpt::{generate_batch, GenerateConfig, Gpt};
use lowrank::lora::{load_adapter_with, LoadOptions, LoraModel};
use lowrank::tensor::Backend;
use std::collections::BTreeMap;
use std::path::Path;

/// `--use`: none, or one per `--prompt`.
pub fn check_uses(prompts: usize, uses: &[String]) -> Result<(), String> {
    if uses.is_empty() || uses.len() == prompts {
        return Ok(());
    }
    Err(format!(
        "--use: give one per --prompt ({prompts} prompts, {} choices)",
        uses.len()
    ))
}

/// Loads each `--adapter` argument, `DIR` (named adapter0, adapter1, ..) or `NAME=DIR`; the last one
/// loaded is active. With `force`, adapters saved on another base load too.
pub fn load_named<B: Backend>(
    model: &mut Gpt<B>,
    adapters: &[String],
    force: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    for (i, arg) in adapters.iter().enumerate() {
        let (name, dir) = match arg.split_once('=') {
            Some((name, dir)) if !name.is_empty() && name != "base" => (name.to_string(), dir),
            Some(_) => {
                return Err(format!(
                    "--adapter {arg}: the name before `=` must not be empty or `base`"
                )
                .into())
            }
            None => (format!("adapter{i}"), arg.as_str()),
        };
        let options = LoadOptions { check_base: !force };
        let report = load_adapter_with(model, Path::new(dir), &name, options)?;
        eprintln!("loaded {dir} as `{name}`: {report}");
    }
    Ok(())
}

/// Generates for every prompt, one batch per prompt length (the model has no padding mask); with `uses`
/// (one per prompt, a name or `base`) each row runs its own adapter in the same batch. The outputs come
/// back in the prompts' order.
pub fn generate_mixed<B: Backend>(
    model: &mut Gpt<B>,
    prompts: &[Vec<u32>],
    uses: &[String],
    cfg: &GenerateConfig,
) -> Result<Vec<Vec<u32>>, Box<dyn std::error::Error>> {
    let choice = |i: usize| uses.get(i).map(String::as_str).filter(|&u| u != "base");
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in prompts.iter().enumerate() {
        by_len.entry(p.len()).or_default().push(i);
    }
    let mut outputs = vec![Vec::new(); prompts.len()];
    for rows in by_len.values() {
        if !uses.is_empty() {
            let group: Vec<Option<&str>> = rows.iter().map(|&i| choice(i)).collect();
            model.set_batch_adapters(Some(&group))?;
        }
        let group: Vec<Vec<u32>> = rows.iter().map(|&i| prompts[i].clone()).collect();
        for (&i, out) in rows.iter().zip(generate_batch(model, &group, cfg)?) {
            outputs[i] = out;
        }
    }
    Ok(outputs)
}

/// The label a prompt's output line starts with: `[NAME] ` under `--use`, nothing otherwise.
pub fn label(uses: &[String], i: usize) -> String {
    uses.get(i).map_or(String::new(), |u| format!("[{u}] "))
}
