//! The shape of one training step, for accounting without running it: the model's sizes, how each Linear
//! trains, and (following the graph) which tensors need a gradient, layer by layer. FLOP accounting
//! (`crate::flops`) and memory accounting (`crate::memory`) both fold over this one walk.
//!
//! The residual stream needs a gradient from the first place anything upstream trains: from the start when
//! the token embedding trains (full fine-tuning), else from the first adapted layer's output on. So a LoRA
//! model's first block computes no input gradient for q, k and v, and saves less for backward.

use crate::gpt::GptConfig;

/// The sizes of a Llama-layout decoder. `n_kv_heads < n_heads` is grouped-query attention (k and v
/// projections of `n_kv_heads * head_dim` outputs), as Hugging Face configs of larger models have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelShape {
    pub vocab: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub tie_embeddings: bool,
}

impl From<&GptConfig> for ModelShape {
    fn from(c: &GptConfig) -> Self {
        ModelShape {
            vocab: c.vocab_size,
            d_model: c.d_model,
            d_ff: c.d_ff,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_heads,
            tie_embeddings: c.tie_embeddings,
        }
    }
}

/// The Linear layers of a block, in forward order (Hugging Face's names).
pub const BLOCK_LINEARS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl ModelShape {
    /// (name, in, out) of one block's Linear layers, in forward order (`BLOCK_LINEARS`).
    pub fn block_linears(&self) -> [(&'static str, usize, usize); 7] {
        let (c, f) = (self.d_model, self.d_ff);
        let kv = self.n_kv_heads * (c / self.n_heads);
        let dims = [(c, c), (c, kv), (c, kv), (c, c), (c, f), (c, f), (f, c)];
        std::array::from_fn(|i| (BLOCK_LINEARS[i], dims[i].0, dims[i].1))
    }

    /// Every parameter: embedding, blocks (Linears and two norm gains each), final norm, head.
    pub fn num_params(&self) -> usize {
        let block: usize = self
            .block_linears()
            .iter()
            .map(|(_, i, o)| i * o)
            .sum::<usize>()
            + 2 * self.d_model;
        let embed = self.vocab * self.d_model;
        embed * (1 + !self.tie_embeddings as usize) + self.n_layers * block + self.d_model
    }
}

/// How one Linear layer trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearTraining {
    Frozen,
    /// A LoRA adapter of rank r on a frozen weight.
    Lora {
        r: usize,
    },
    /// The weight itself trains (full fine-tuning).
    Full,
}

impl LinearTraining {
    /// Does the layer need its input for a weight gradient (dW = g^T x, or LoRA's dA = g_down^T x)?
    pub fn keeps_input(self) -> bool {
        self != LinearTraining::Frozen
    }
}

/// One place in the step the walk reports, with what needs a gradient there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// A decoder block begins.
    Block,
    /// The block ends.
    BlockEnd,
    /// An RMSNorm over `d_model`: whether its input is tracked, whether its gain trains.
    Norm {
        input_tracked: bool,
        gain_trains: bool,
    },
    /// A Linear (in, out): whether its input is tracked, how it trains, and whether it reads the same
    /// input as the Linear before it (k and v after q, up after gate).
    Linear {
        d_in: usize,
        d_out: usize,
        input_tracked: bool,
        training: LinearTraining,
        shared_input: bool,
    },
    /// Causal attention over the block's q, k, v (tracked or not).
    Attention { q: bool, k: bool, v: bool },
    /// SwiGLU of gate and up (tracked or not).
    Swiglu { gate: bool, up: bool },
    /// The head: logits (`vocab` wide) from the final norm's output (`d_model`), a Linear of its own or
    /// the tied embedding.
    Head {
        input_tracked: bool,
        training: LinearTraining,
    },
}

/// Calls `visit` for every site of one forward pass, in order. `linear(name)` says how each Linear trains
/// (`"q_proj"`, ..., `"lm_head"`); the norms' gains and the embedding train with full fine-tuning only
/// (`full`).
pub fn walk(
    shape: &ModelShape,
    linear: impl Fn(&str) -> LinearTraining,
    full: bool,
    visit: &mut dyn FnMut(Site),
) {
    // Reports one Linear; returns whether its output is tracked.
    let lin = |(name, d_in, d_out): (&str, usize, usize),
               input_tracked: bool,
               shared_input: bool,
               visit: &mut dyn FnMut(Site)| {
        let training = linear(name);
        visit(Site::Linear {
            d_in,
            d_out,
            input_tracked,
            training,
            shared_input,
        });
        input_tracked || training != LinearTraining::Frozen
    };
    let mut stream = full; // does the residual stream need a gradient?
    for _ in 0..shape.n_layers {
        let [q, k, v, o, gate, up, down] = shape.block_linears();
        visit(Site::Block);
        visit(Site::Norm {
            input_tracked: stream,
            gain_trains: full,
        });
        let (qt, kt, vt) = (
            lin(q, stream, false, visit),
            lin(k, stream, true, visit),
            lin(v, stream, true, visit),
        );
        visit(Site::Attention {
            q: qt,
            k: kt,
            v: vt,
        });
        stream |= lin(o, qt || kt || vt, false, visit);
        visit(Site::Norm {
            input_tracked: stream,
            gain_trains: full,
        });
        let (gt, ut) = (
            lin(gate, stream, false, visit),
            lin(up, stream, true, visit),
        );
        visit(Site::Swiglu { gate: gt, up: ut });
        stream |= lin(down, gt || ut, false, visit);
        visit(Site::BlockEnd);
    }
    visit(Site::Norm {
        input_tracked: stream,
        gain_trains: full,
    });
    let training = match (shape.tie_embeddings, full) {
        (false, _) => linear("lm_head"),
        (true, true) => LinearTraining::Full, // the tied embedding trains
        (true, false) => LinearTraining::Frozen,
    };
    visit(Site::Head {
        input_tracked: stream,
        training,
    });
}
