//! lowrank-gpt: a small decoder-only transformer in the Llama layout.
//!
//! ```text
//! ids (B, T) -> embed_tokens -> (B, T, C)
//!   N x [ x + attn(rms_norm(x)) ; x + mlp(rms_norm(x)) ]     attention: q/k/v/o projections, RoPE, causal
//!   -> norm -> lm_head -> logits (B, T, vocab)                 mlp: down(silu(gate(x)) * up(x))
//! ```
//!
//! Also: a byte tokenizer, toy corpora generated from a seed, batch sampling, a training loop, generation,
//! and checkpoints that Hugging Face tools can load. Nothing here knows about LoRA: adapters plug into the
//! `Linear` layers from the outside.

mod attention;
mod block;
mod bpe;
mod chat;
mod chat_data;
mod checkpoint;
mod config;
pub mod corpus;
mod data;
mod facts;
mod gguf_export;
mod kv_cache;
mod mlp;
mod model;
mod pretrained;
mod progress;
mod prompt;
mod prompt_file;
mod rope;
mod sample;
mod tokenizer;
mod train;

pub use attention::{attention_plain, repeat_kv, softmax_plain, Attention};
pub use block::Block;
pub use bpe::{byte_alphabet, BpeTokenizer};
pub use chat::{ChatTemplate, Message, CHATML};
pub use chat_data::{
    encode_chat, encode_records, read_jsonl, DataError, Encoded, Example, ExampleSet, Record, ROLES,
};
pub use checkpoint::{
    load_validation_text, save_validation_text, CONFIG_FILE, VALIDATION_TEXT_FILE, WEIGHTS_FILE,
};
pub use config::{GptConfig, HfLlamaConfig};
pub use data::{Batch, BatchSource, Dataset, IGNORE};
pub use facts::{to_jsonl, velmora_held_out, velmora_train, HELD_OUT_TEMPLATES};
pub use gguf_export::write_gguf;
pub use kv_cache::{KvCache, LayerCache};
pub use lowrank_nn::Kernels;
pub use mlp::{swiglu_plain, Mlp};
pub use model::Gpt;
pub use pretrained::{gguf_name, permute_rows, unpermute_rows, Pretrained, Weights};
pub use progress::Progress;
pub use prompt::{PromptTuning, PromptTuningError};
pub use prompt_file::{PROMPT_CONFIG_FILE, PROMPT_WEIGHTS_FILE};
pub use rope::Rope;
pub use sample::{
    exact_match, generate, generate_batch, generate_streaming, greedy_batch, Decoder,
    GenerateConfig, GenerateError,
};
pub use tokenizer::{printable, ByteTokenizer, Tokenizer};
pub use train::{
    evaluate, evaluate_all, train, train_observed, train_step, Diverged, Eval, StepFailed,
    TrainConfig, TrainError, TrainReport,
};
