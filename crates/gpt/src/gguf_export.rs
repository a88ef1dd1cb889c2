//! The model as a GGUF file, for llama.cpp and Ollama (and transformers, which reads GGUF too): the
//! `llama.*` sizes, the tokenizer (`tokenizer.ggml.*`) and chat template, and every weight under its
//! GGUF name, with q_proj and k_proj rows put in llama.cpp's order (`permute_rows`, the inverse of what
//! loading undoes). Matrices are F32, F16 or Q8_0; norm weights stay F32, as llama.cpp keeps them.

use crate::pretrained::{gguf_name, permute_rows};
use crate::Pretrained;
use lowrank_nn::{GgmlType, GgufValue, GgufWriter, NnError};
use lowrank_tensor::{Backend, Element};
use std::path::Path;

/// llama.cpp's `general.file_type` for a file whose matrices are all `ty`.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q8_0 => 7,
        other => panic!("write_gguf: matrices in {other} are not written"),
    }
}

/// Writes `p` to `path` (atomically) with its matrices in `ty` (F32, F16 or Q8_0). A model still carrying
/// adapter layers is refused: merge them first (`merge_and_unload`).
pub fn write_gguf<B: Backend>(p: &Pretrained<B>, path: &Path, ty: GgmlType) -> Result<(), NnError> {
    let c = &p.model.config;
    let mut w = GgufWriter::new();
    let u32_of = |v: usize| GgufValue::U32(v as u32);
    w.metadata("general.architecture", GgufValue::String("llama".into()));
    w.metadata(
        "general.name",
        GgufValue::String("lowrank merged model".into()),
    );
    w.metadata("general.file_type", GgufValue::U32(file_type(ty)));
    w.metadata("llama.vocab_size", u32_of(c.vocab_size));
    w.metadata("llama.context_length", u32_of(c.max_seq_len));
    w.metadata("llama.embedding_length", u32_of(c.d_model));
    w.metadata("llama.block_count", u32_of(c.n_layers));
    w.metadata("llama.feed_forward_length", u32_of(c.d_ff));
    w.metadata("llama.attention.head_count", u32_of(c.n_heads));
    w.metadata("llama.attention.head_count_kv", u32_of(c.n_kv_heads));
    w.metadata("llama.rope.dimension_count", u32_of(c.d_model / c.n_heads));
    w.metadata("llama.rope.freq_base", GgufValue::F32(c.rope_theta as f32));
    w.metadata(
        "llama.attention.layer_norm_rms_epsilon",
        GgufValue::F32(c.norm_eps as f32),
    );
    for (key, value) in p.tokenizer.gguf_metadata() {
        w.metadata(&key, value);
    }
    w.metadata(
        "tokenizer.chat_template",
        GgufValue::String(p.chat.source().to_string()),
    );
    for (hf, value) in p.model.weights() {
        let name = gguf_name(&hf).ok_or_else(|| {
            NnError::gguf(
                path,
                format!(
                    "parameter `{hf}` has no GGUF name: merge the adapters into the model first"
                ),
            )
        })?;
        let dims = value.dims().to_vec();
        let mut values: Vec<f32> = value.to_vec().iter().map(|v| v.to_f64() as f32).collect();
        match hf.rsplit('.').nth(1) {
            Some("q_proj") => values = permute_rows(&values, c.n_heads, dims[1]),
            Some("k_proj") => values = permute_rows(&values, c.n_kv_heads, dims[1]),
            _ => {}
        }
        let ty = if dims.len() == 1 { GgmlType::F32 } else { ty };
        w.tensor(&name, &dims, &values, ty);
    }
    w.write(path)
}
