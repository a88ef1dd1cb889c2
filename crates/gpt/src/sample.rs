//! Generation with a KV cache: greedy, or sampled with temperature, top-k and top-p (nucleus) from a seeded
//! generator.
//!
//! The prompt is run once (the prefill), keeping each layer's keys and values; every new token is then one
//! forward pass over that token alone (decoding). A sequence longer than the context keeps its last
//! `context_len()` tokens, which are run afresh at positions 0.. for each further token.

use crate::{ByteTokenizer, Gpt, KvCache, Tokenizer};
use lowrank_autograd::no_grad;
use lowrank_tensor::{rng, Backend, Element, Tensor};
use rand_distr::{Distribution, Uniform};

#[derive(Clone, Copy, Debug)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy (always the most likely token).
    pub temperature: f64,
    /// Sample only among the k most likely tokens (0: all).
    pub top_k: usize,
    /// Sample only among the most likely tokens whose probabilities add up to `top_p` (1: all).
    pub top_p: f64,
    pub seed: u64,
    /// Stop after emitting this token (e.g. b'\n', or a chat model's `<|im_end|>`).
    pub stop: Option<u32>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 100,
            temperature: 0.8,
            top_k: 40,
            top_p: 1.0,
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

/// Feeds sequences that grow by one token per step to the model through a KV cache.
pub struct Decoder<'m, B: Backend> {
    model: &'m Gpt<B>,
    cache: KvCache<B>,
    /// How many tokens of each sequence the cache holds.
    fed: usize,
}

impl<'m, B: Backend> Decoder<'m, B> {
    pub fn new(model: &'m Gpt<B>) -> Self {
        Decoder {
            model,
            cache: model.new_cache(),
            fed: 0,
        }
    }

    /// The next-token logits (N, V) of `seqs` (N sequences of equal length): only the tokens the cache has
    /// not seen are run (all of them the first time: the prefill).
    pub fn next_logits(&mut self, seqs: &[Vec<u32>]) -> Tensor<B> {
        let (n, len) = (seqs.len(), seqs[0].len());
        assert!(
            seqs.iter().all(|s| s.len() == len) && len > self.fed,
            "decoder: sequences must have equal lengths, longer than the {} tokens already fed",
            self.fed
        );
        let window = self.model.context_len();
        let start = if len > window || self.fed == 0 {
            // the first pass, or the context is full: run the last `window` tokens afresh
            self.cache.clear();
            len.saturating_sub(window)
        } else {
            self.fed
        };
        let t = len - start;
        let ids: Vec<u32> = seqs
            .iter()
            .flat_map(|s| s[start..].iter().copied())
            .collect();
        // only the last position's logits are needed: the output projection runs on it alone
        let logits = no_grad(|| {
            let x = self.model.hidden_cached(&ids, n, t, Some(&mut self.cache)); // (N, t, C)
            self.model.head(&x.narrow(1, t - 1, 1)) // (N, 1, V)
        });
        self.fed = len;
        let vocab = logits.dims()[2];
        logits.value().reshape([n, vocab]) // (N, V)
    }
}

/// Continues `prompt`, returning only the new tokens.
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
    let mut seq = vec![prompt.to_vec()];
    let mut decoder = Decoder::new(model);
    for generated in 0..cfg.max_new_tokens {
        let logits: Vec<f64> = decoder
            .next_logits(&seq)
            .to_vec()
            .iter()
            .map(|v| v.to_f64())
            .collect(); // (V,)
        if logits.iter().any(|l| !l.is_finite()) {
            return Err(GenerateError::NotFinite { generated });
        }
        let next = choose(&logits, cfg, &mut r);
        seq[0].push(next);
        on_token(next);
        if Some(next) == cfg.stop {
            break;
        }
    }
    Ok(seq[0][prompt.len()..].to_vec())
}

/// `generate` for several prompts of one length at once: one batch through the decoder, each row sampling
/// its own tokens (from one seeded generator, row by row) and stopping at its own `stop` (the stop token
/// included, as `generate` returns it). With `LoraModel::set_batch_adapters`, each row runs its own
/// adapter. Prompts of different lengths go in separate calls (the model has no padding mask).
pub fn generate_batch<B: Backend>(
    model: &Gpt<B>,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    let Some(len) = prompts.first().map(Vec::len) else {
        return Ok(Vec::new());
    };
    if len == 0 {
        return Err(GenerateError::EmptyPrompt);
    }
    assert!(
        prompts.iter().all(|p| p.len() == len),
        "generate_batch: prompts must have one length (group them by length)"
    );
    let mut r = rng(cfg.seed);
    let mut seqs = prompts.to_vec();
    let mut done = vec![false; prompts.len()];
    let mut decoder = Decoder::new(model);
    for generated in 0..cfg.max_new_tokens {
        if done.iter().all(|&d| d) {
            break;
        }
        let logits: Vec<f64> = decoder
            .next_logits(&seqs)
            .to_vec()
            .iter()
            .map(|v| v.to_f64())
            .collect(); // (N, V)
        if logits.iter().any(|l| !l.is_finite()) {
            return Err(GenerateError::NotFinite { generated });
        }
        let vocab = logits.len() / seqs.len();
        for ((seq, row), done) in seqs.iter_mut().zip(logits.chunks(vocab)).zip(&mut done) {
            // a finished row keeps its last token: the batch runs on, its output ends at the stop
            let next = if *done {
                *seq.last().expect("a prompt")
            } else {
                choose(row, cfg, &mut r)
            };
            seq.push(next);
            *done = *done || Some(next) == cfg.stop;
        }
    }
    Ok(seqs
        .into_iter()
        .map(|s| {
            let new = &s[len..];
            let end = new
                .iter()
                .position(|&t| Some(t) == cfg.stop)
                .map_or(new.len(), |i| i + 1);
            new[..end].to_vec()
        })
        .collect())
}

/// Picks a token from one row of logits: the most likely with temperature 0, else a sample from the
/// softmax at that temperature, kept to the `top_k` most likely and to the smallest set of most likely
/// tokens whose probabilities reach `top_p` (in that order, as transformers applies them).
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
    let mut weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] - max) / cfg.temperature).exp())
        .collect();
    if cfg.top_p < 1.0 {
        let total: f64 = weights.iter().sum();
        let mut mass = 0.0;
        // keep tokens while the mass before them is below top_p: at least the most likely one
        let keep = weights
            .iter()
            .take_while(|&&w| {
                let before = mass;
                mass += w / total;
                before < cfg.top_p
            })
            .count();
        weights.truncate(keep.max(1));
    }
    let total: f64 = weights.iter().sum();
    let mut u = Uniform::new(0.0, total).expect("positive total").sample(r);
    for (&i, w) in order.iter().zip(&weights) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    order[weights.len() - 1] as u32
}

/// Greedy continuation of many prompts of equal length at once (one batched forward per new token).
pub fn greedy_batch<B: Backend>(
    model: &Gpt<B>,
    prompts: &[Vec<u32>],
    new_tokens: usize,
) -> Vec<Vec<u32>> {
    if prompts.is_empty() {
        return vec![];
    }
    let len = prompts[0].len();
    assert!(
        prompts.iter().all(|p| p.len() == len),
        "greedy_batch: prompts must have equal length"
    );
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut decoder = Decoder::new(model);
    for _ in 0..new_tokens {
        let next = decoder.next_logits(&seqs).argmax(-1, false).to_vec(); // (N,)
        for (s, v) in seqs.iter_mut().zip(next) {
            s.push(v.to_f64() as u32);
        }
    }
    seqs.into_iter().map(|s| s[len..].to_vec()).collect()
}

/// Fraction of `(prompt, answer)` pairs whose greedy continuation starts with exactly the answer.
pub fn exact_match<B: Backend>(model: &Gpt<B>, pairs: &[(String, String)]) -> f64 {
    let tok = ByteTokenizer;
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
