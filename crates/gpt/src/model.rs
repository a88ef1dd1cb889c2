//! `Gpt`: token embedding -> N decoder blocks -> final RmsNorm -> lm_head, in the Hugging Face Llama layout
//! and with its parameter names, so checkpoints load in other tools.

use crate::attention::Attention;
use crate::block::Block;
use crate::data::IGNORE;
use crate::kv_cache::KvCache;
use crate::mlp::Mlp;
use crate::prompt::{PromptTuning, PromptTuningError};
use crate::rope::Rope;
use crate::GptConfig;
use lowrank_autograd::Var;
use lowrank_nn::{
    children, cross_entropy, cross_entropy_plain, linear_cross_entropy, Embedding, Kernels, Linear,
    Module, RmsNorm,
};
use lowrank_tensor::{Backend, Tensor};

pub struct Gpt<B: Backend> {
    pub config: GptConfig,
    /// Fused kernels or plain compositions in `forward` and `loss` (not saved: it changes no weight).
    pub kernels: Kernels,
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when tied to the token embedding.
    pub lm_head: Option<Linear<B>>,
    /// Prompt tuning's virtual tokens, put before every sequence (`add_prompt_tuning`).
    pub prompt: Option<PromptTuning<B>>,
    /// The tied output projection kept in the embedding's GGUF blocks (`Weights::Blocks`), used in place
    /// of the f32 table while that is frozen and has no active copy. Not a child: it holds no parameter.
    pub(crate) tied_head: Option<Linear<B>>,
    rope: Rope<B>,
}

impl<B: Backend> Gpt<B> {
    /// A freshly initialised model: weights ~ N(0, 0.02^2), the projections that write into the residual
    /// stream (o_proj, down_proj) scaled down by sqrt(2 n_layers) as in GPT-2, norms at 1.
    pub fn new(config: GptConfig, seed: u64, backend: &B) -> Self {
        Self::build(config, Some(seed), backend)
    }

    /// A model whose weights are all zero (norms at 1), for a loader to fill in: nothing is drawn, and
    /// the zeroed memory of a weight the loader replaces is never touched (so never resident).
    pub fn zeros(config: GptConfig, backend: &B) -> Self {
        Self::build(config, None, backend)
    }

    /// The model, its weights random from `seed` or, without one, zero.
    fn build(config: GptConfig, seed: Option<u64>, backend: &B) -> Self {
        config
            .validate()
            .unwrap_or_else(|e| panic!("GptConfig: {e}"));
        let (c, kv, ff, std) = (config.d_model, config.kv_dim(), config.d_ff, 0.02);
        let resid_std = std / (2.0 * config.n_layers as f64).sqrt();
        let mut next_seed = seed.unwrap_or(0);
        let mut linear = |d_in, d_out, std| {
            next_seed += 1;
            match seed {
                Some(_) => Linear::new(d_in, d_out, std, next_seed, backend),
                None => Linear::from_weight(Var::param(Tensor::zeros([d_out, d_in], backend))),
            }
        };
        let layers = (0..config.n_layers)
            .map(|_| Block {
                input_layernorm: RmsNorm::new(c, config.norm_eps, backend),
                self_attn: Attention {
                    q_proj: linear(c, c, std),
                    k_proj: linear(c, kv, std),
                    v_proj: linear(c, kv, std),
                    o_proj: linear(c, c, resid_std),
                    n_heads: config.n_heads,
                    n_kv_heads: config.n_kv_heads,
                },
                post_attention_layernorm: RmsNorm::new(c, config.norm_eps, backend),
                mlp: Mlp {
                    gate_proj: linear(c, ff, std),
                    up_proj: linear(c, ff, std),
                    down_proj: linear(ff, c, resid_std),
                },
            })
            .collect();
        let lm_head = (!config.tie_embeddings).then(|| linear(c, config.vocab_size, std));
        Gpt {
            kernels: Kernels::Fused,
            embed_tokens: match seed {
                Some(seed) => Embedding::new(config.vocab_size, c, std, seed, backend),
                None => Embedding::from_weight(Tensor::zeros([config.vocab_size, c], backend)),
            },
            layers,
            norm: RmsNorm::new(c, config.norm_eps, backend),
            lm_head,
            prompt: None,
            tied_head: None,
            rope: Rope::new(
                config.head_dim(),
                config.max_seq_len,
                config.rope_theta,
                backend,
            ),
            config,
        }
    }

    /// ids (batch * seq, row-major) -> logits (batch, seq, vocab)
    pub fn forward(&self, ids: &[u32], batch: usize, seq: usize) -> Var<B> {
        self.forward_cached(ids, batch, seq, None)
    }

    /// An empty KV cache for this model (see [`KvCache`]).
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.layers.len())
    }

    /// `forward` for the `seq` tokens after those in `cache`, whose keys and values it appends: logits
    /// (batch, seq, vocab) equal to the last `seq` rows of a full forward over all the tokens. Prompt
    /// tuning's virtual tokens go before the first tokens a cache sees.
    pub fn forward_cached(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        cache: Option<&mut KvCache<B>>,
    ) -> Var<B> {
        self.head(&self.hidden_cached(ids, batch, seq, cache)) // (B, T, V)
    }

    /// `forward_cached` without the output projection: the final hidden states (B, T, C).
    pub fn hidden_cached(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Var<B> {
        assert_eq!(
            ids.len(),
            batch * seq,
            "gpt: {} ids for batch {batch} x seq {seq}",
            ids.len()
        );
        let cached = cache.as_ref().map_or(0, |c| c.len());
        let prompt = self.prompt.as_ref().filter(|_| cached == 0); // the virtual tokens, on the first pass
        let past = cached.saturating_sub(self.config.max_seq_len - self.context_len());
        assert!(
            past + seq <= self.context_len(),
            "gpt: {past} cached + {seq} new tokens exceed the context of {} tokens (max_seq_len {}, {} of \
             them virtual)",
            self.context_len(),
            self.config.max_seq_len,
            self.config.max_seq_len - self.context_len()
        );
        let mut x = self.embed_tokens.forward(ids, &[batch, seq]); // (B, T, C)
        if let Some(prompt) = prompt {
            x = prompt.prepend(&x); // (B, P + T, C)
        }
        // the layers run the kernels this model chose (`Kernels::in_force`)
        let x = self.kernels.run(|| {
            for (i, layer) in self.layers.iter().enumerate() {
                let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
                x = layer.forward_cached(&x, &self.rope, layer_cache); // (B, P + T, C)
            }
            norm(&self.norm, &x) // (B, P + T, C)
        });
        match prompt {
            Some(prompt) => x.narrow(1, prompt.len(), seq), // (B, T, C): the real tokens only, a view
            None => x,
        }
    }

    /// The output projection of hidden states (.., C) -> logits (.., V).
    pub fn head(&self, x: &Var<B>) -> Var<B> {
        let embedding = &self.embed_tokens;
        match (&self.lm_head, &self.tied_head) {
            (Some(head), _) => head.forward(x), // (.., V)
            (None, Some(blocks))
                if embedding.copies.in_use().is_none() && !embedding.weight.requires_grad() =>
            {
                blocks.forward(x) // (.., V), tied weights in their blocks
            }
            (None, _) => x.matmul(&embedding.weight_in_use().t()), // (.., V), tied weights
        }
    }

    /// Expands every compressed base weight (GGUF blocks, NF4) to a frozen f32 one (which
    /// `set_trainable` can then make trainable), and drops the tied output projection's blocks.
    pub fn decompress_weights(&mut self) {
        self.visit_linears_mut("", &mut |_, linear| linear.decompress_weight());
        self.tied_head = None;
    }

    /// How many values the base weights held compressed have (they are not parameters: `num_params`
    /// leaves them out).
    pub fn compressed_values(&self) -> usize {
        let mut n = 0;
        self.visit_linears("", &mut |_, linear| {
            if let Some(c) = linear.compressed_weight() {
                n += c.dims().iter().product::<usize>();
            }
        });
        n
    }

    /// The (V, C) weight the output projection multiplies by, when it is a plain product: the token
    /// embedding when tied, the lm_head's weight (or its active full copy) when that has no adapter.
    fn head_weight(&self) -> Option<Var<B>> {
        match &self.lm_head {
            None => Some(self.embed_tokens.weight_in_use().clone()),
            Some(head) => match head.copies.in_use() {
                Some(copy) => Some(copy.clone()),
                None => head
                    .adapter()
                    .is_none()
                    .then(|| head.weight().param().cloned())
                    .flatten(),
            },
        }
    }

    /// How many real tokens fit in one forward pass: `max_seq_len` less the virtual ones.
    pub fn context_len(&self) -> usize {
        self.config.max_seq_len - self.prompt.as_ref().map_or(0, PromptTuning::len)
    }

    /// Prompt tuning: freezes the model and puts `n` trainable virtual tokens before every sequence,
    /// starting from the embeddings of the tokens `init` (cycled to `n`). Returns the trainable count.
    /// Fails, changing nothing, when `n` is 0 or leaves no room for real tokens, the model has a prompt
    /// already, or `init` is empty or holds a token outside the vocabulary.
    pub fn add_prompt_tuning(
        &mut self,
        n: usize,
        init: &[u32],
    ) -> Result<usize, PromptTuningError> {
        self.check_prompt_room(n)?;
        let vocab = self.config.vocab_size;
        if init.is_empty() {
            return Err(PromptTuningError::NoInitTokens);
        }
        if let Some(&token) = init.iter().find(|&&t| t as usize >= vocab) {
            return Err(PromptTuningError::InitToken { token, vocab });
        }
        let ids: Vec<u32> = init.iter().copied().cycle().take(n).collect();
        let prompt = PromptTuning::from_tokens(&self.embed_tokens.weight.value(), &ids);
        Ok(self.set_prompt(prompt))
    }

    /// Whether `n` virtual tokens can be added: 1 to `max_seq_len - 1` of them, on a model without any.
    pub(crate) fn check_prompt_room(&self, n: usize) -> Result<(), PromptTuningError> {
        let max_seq_len = self.config.max_seq_len;
        if n == 0 || n >= max_seq_len {
            return Err(PromptTuningError::Length {
                n,
                most: max_seq_len.saturating_sub(1),
                max_seq_len,
            });
        }
        match &self.prompt {
            Some(prompt) => Err(PromptTuningError::AlreadyAdded(prompt.len())),
            None => Ok(()),
        }
    }

    /// Freezes the model and puts `prompt` before every sequence; returns the trainable count.
    pub(crate) fn set_prompt(&mut self, prompt: PromptTuning<B>) -> usize {
        self.set_trainable(false);
        self.prompt = Some(prompt);
        self.num_trainable_params()
    }

    /// Mean next-token cross-entropy; targets equal to [`IGNORE`] do not count.
    ///
    /// With fused kernels and a plain output projection, the logits are never built: the loss and its
    /// gradient go through the projection a chunk of rows at a time (`linear_cross_entropy`), so memory
    /// does not grow with tokens x vocabulary, and masked positions cost nothing.
    pub fn loss(&self, ids: &[u32], targets: &[u32], batch: usize, seq: usize) -> Var<B> {
        let x = self.hidden_cached(ids, batch, seq, None); // (B, T, C)
        match (self.kernels, self.head_weight()) {
            (Kernels::Fused, Some(w)) => linear_cross_entropy(&x, &w, targets, Some(IGNORE)),
            (Kernels::Fused, None) => cross_entropy(&self.head(&x), targets, Some(IGNORE)),
            (Kernels::Plain, _) => {
                let vocab = self.config.vocab_size;
                let logits = self.head(&x).reshape([batch * seq, vocab]); // (B T, V)
                cross_entropy_plain(&logits, targets, Some(IGNORE))
            }
        }
    }
}

impl<B: Backend> Module<B> for Gpt<B> {
    children! {
        "model.embed_tokens" => embed_tokens,
        "model.layers" => layers[],
        "model.norm" => norm,
        "lm_head" => lm_head?,
        "prompt_encoder" => prompt?,
    }
}

/// RMSNorm in the form in force (`Kernels::in_force`).
pub(crate) fn norm<B: Backend>(n: &RmsNorm<B>, x: &Var<B>) -> Var<B> {
    match Kernels::in_force() {
        Kernels::Fused => n.forward(x),
        Kernels::Plain => n.forward_plain(x),
    }
}
