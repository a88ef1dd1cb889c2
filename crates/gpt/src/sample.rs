//! Generation: greedy, or sampled with temperature and top-k from a seeded generator.

use crate::Gpt;
use lowrank_autograd::no_grad;
use lowrank_tensor::{rng, Backend, Element};
use rand_distr::{Distribution, Uniform};

#[derive(Clone, Copy, Debug)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy (always the most likely token).
    pub temperature: f64,
    /// Sample only among the k most likely tokens (0: all).
    pub top_k: usize,
    pub seed: u64,
    /// Stop after emitting this token (e.g. b'\n').
    pub stop: Option<u32>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 100,
            temperature: 0.8,
            top_k: 40,
            seed: 0,
            stop: None,
        }
    }
}

/// Why `generate` could not continue a prompt.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty: generation continues a prompt of at least one token")]
    EmptyPrompt,
    #[error(
        "the model's logits are not finite after {generated} new tokens: its weights are damaged"
    )]
    NotFinite { generated: usize },
}

/// Continues `prompt`, returning only the new tokens. The context is the last `context_len()` tokens.
pub fn generate<B: Backend>(
    model: &Gpt<B>,
    prompt: &[u32],
    cfg: &GenerateConfig,
) -> Result<Vec<u32>, GenerateError> {
    generate_streaming(model, prompt, cfg, |_| {})
}

/// `generate`, calling `on_token` with each new token as soon as it is chosen (to print while generating).
pub fn generate_streaming<B: Backend>(
    model: &Gpt<B>,
    prompt: &[u32],
    cfg: &GenerateConfig,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let mut r = rng(cfg.seed);
    let mut tokens = prompt.to_vec();
    let window = model.context_len();
    no_grad(|| {
        for generated in 0..cfg.max_new_tokens {
            let ctx = &tokens[tokens.len().saturating_sub(window)..];
            let logits = model.forward(ctx, 1, ctx.len()); // (1, T, V)
            let last = logits.value().narrow(1, ctx.len() - 1, 1).to_vec(); // (V,)
            let logits: Vec<f64> = last.iter().map(|v| v.to_f64()).collect();
            if logits.iter().any(|l| !l.is_finite()) {
                return Err(GenerateError::NotFinite { generated });
            }
            let next = choose(&logits, cfg, &mut r);
            tokens.push(next);
            on_token(next);
            if Some(next) == cfg.stop {
                break;
            }
        }
        Ok(())
    })?;
    Ok(tokens[prompt.len()..].to_vec())
}

/// Picks a token from one row of logits.
fn choose(logits: &[f64], cfg: &GenerateConfig, r: &mut lowrank_tensor::StdRng) -> u32 {
    let argmax = |xs: &[f64]| (0..xs.len()).fold(0, |b, i| if xs[i] > xs[b] { i } else { b });
    if cfg.temperature <= 0.0 {
        return argmax(logits) as u32;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if cfg.top_k > 0 {
        order.truncate(cfg.top_k);
    }
    let max = logits[order[0]];
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] - max) / cfg.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = Uniform::new(0.0, total).expect("positive total").sample(r);
    for (&i, w) in order.iter().zip(&weights) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    order[order.len() - 1] as u32
}

/// Greedy continuation of many prompts of equal length at once (one batched forward per new token).
pub fn greedy_batch<B: Backend>(
    model: &Gpt<B>,
    prompts: &[Vec<u32>],
    new_tokens: usize,
) -> Vec<Vec<u32>> {
    let n = prompts.len();
    if n == 0 {
        return vec![];
    }
    let len = prompts[0].len();
    assert!(
        prompts.iter().all(|p| p.len() == len),
        "greedy_batch: prompts must have equal length"
    );
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    no_grad(|| {
        for step in 0..new_tokens {
            let t = (len + step).min(model.context_len());
            let ids: Vec<u32> = seqs
                .iter()
                .flat_map(|s| s[s.len() - t..].iter().copied())
                .collect();
            let logits = model.forward(&ids, n, t).value(); // (N, T, V)
            let next = logits.narrow(1, t - 1, 1).argmax(-1, false).to_vec(); // (N, 1)
            for (s, v) in seqs.iter_mut().zip(next) {
                s.push(v.to_f64() as u32);
            }
        }
    });
    seqs.into_iter().map(|s| s[len..].to_vec()).collect()
}

/// Fraction of `(prompt, answer)` pairs whose greedy continuation starts with exactly the answer.
pub fn exact_match<B: Backend>(model: &Gpt<B>, pairs: &[(String, String)]) -> f64 {
    let tok = crate::ByteTokenizer;
    // Prompts grouped by length, so that each group runs as one batch.
    type Pairs = Vec<(Vec<u32>, Vec<u32>)>;
    let mut by_len: std::collections::BTreeMap<usize, Pairs> = Default::default();
    for (p, a) in pairs {
        let p = tok.encode(p);
        by_len.entry(p.len()).or_default().push((p, tok.encode(a)));
    }
    let mut correct = 0;
    for group in by_len.values() {
        let longest = group.iter().map(|(_, a)| a.len()).max().unwrap_or(0);
        let prompts: Vec<Vec<u32>> = group.iter().map(|(p, _)| p.clone()).collect();
        let outs = greedy_batch(model, &prompts, longest);
        correct += group
            .iter()
            .zip(&outs)
            .filter(|((_, a), o)| o.starts_with(a))
            .count();
    }
    correct as f64 / pairs.len().max(1) as f64
}
