//! Prompt tuning (Lester et al. 2021; PEFT's `PROMPT_TUNING`): P trainable "virtual token" embeddings
//! placed before every sequence, the whole model frozen. The model reads `[v_1 .. v_P, x_1 .. x_T]` and
//! the loss and logits cover the real tokens only; the virtual tokens steer it through attention alone.
//! It trains `P d` parameters and leaves `max_seq_len - P` positions for real tokens.

use lowrank_autograd::Var;
use lowrank_nn::Module;
use lowrank_tensor::{Backend, Tensor};

/// Why `Gpt::add_prompt_tuning` refused (the model is left as it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptTuningError {
    #[error(
        "prompt tuning: {n} virtual tokens asked for; 1 to {most} leave room for real tokens \
         (max_seq_len {max_seq_len})"
    )]
    Length {
        n: usize,
        most: usize,
        max_seq_len: usize,
    },
    #[error("prompt tuning: the model already has {0} virtual tokens (one prompt per model)")]
    AlreadyAdded(usize),
    #[error(
        "prompt tuning: no initial tokens given (the virtual tokens start from their embeddings)"
    )]
    NoInitTokens,
    #[error("prompt tuning: initial token {token} is outside the vocabulary of {vocab}")]
    InitToken { token: u32, vocab: usize },
}

/// The virtual tokens: an (P, d) table of trainable embeddings.
pub struct PromptTuning<B: Backend> {
    /// (P, d)
    pub embedding: Var<B>,
}

impl<B: Backend> PromptTuning<B> {
    /// Starts from the embeddings of the real tokens `init` (the vocabulary initialisation that works
    /// better than random vectors), taken from the (vocab, d) table `token_embeddings`.
    pub fn from_tokens(token_embeddings: &Tensor<B>, init: &[u32]) -> Self {
        PromptTuning {
            embedding: Var::param(token_embeddings.index_select(0, init).copy()),
        }
    }

    /// The virtual tokens `embeddings` (P, d) as they are (a saved prompt), trainable.
    pub fn from_embeddings(embeddings: Tensor<B>) -> Self {
        PromptTuning {
            embedding: Var::param(embeddings),
        }
    }

    /// P, the number of virtual tokens.
    pub fn len(&self) -> usize {
        self.embedding.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The virtual tokens before every sequence of `x` (B, T, d) -> (B, P + T, d).
    pub fn prepend(&self, x: &Var<B>) -> Var<B> {
        let (b, d) = (x.dims()[0], x.dims()[2]);
        let virtual_tokens =
            self.embedding
                .reshape([1, self.len(), d])
                .broadcast_to([b, self.len(), d]); // (B, P, d), a view
        Var::concat(&[&virtual_tokens, x], 1) // (B, P + T, d)
    }
}

impl<B: Backend> Module<B> for PromptTuning<B> {
    fn own_params(&self, f: &mut dyn FnMut(&str, &Var<B>)) {
        f("embedding.weight", &self.embedding);
    }
}
