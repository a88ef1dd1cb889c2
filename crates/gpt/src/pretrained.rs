//! Real pretrained models: a Llama-family model from a GGUF file or a Hugging Face folder, with its
//! tokenizer and chat template. Both routes give the same [`Gpt`] as the toy model; what differs is where
//! the weights and the vocabulary come from.
//!
//! GGUF names its tensors after llama.cpp (`blk.3.attn_q.weight`); [`gguf_name`] maps each Hugging Face
//! name to its GGUF one. llama.cpp also stores q_proj's and k_proj's rows permuted: its RoPE rotates
//! adjacent pairs (dimensions 2i, 2i + 1) where Hugging Face's rotates halves (i, i + head_dim / 2), and the
//! converter reorders each head's rows so that both give the same attention. [`unpermute_rows`] undoes it.

use crate::checkpoint::check_backed;
use crate::{BpeTokenizer, ChatTemplate, Gpt, GptConfig, CHATML, CONFIG_FILE};
use lowrank_autograd::Var;
use lowrank_nn::{BlockWeight, CompressedWeight, GgufFile, Linear, Module, NnError};
use lowrank_tensor::{Backend, Element, Shape, Tensor};
use std::path::Path;
use std::rc::Rc;

/// The GGUF name of a model parameter given by its Hugging Face name (`None` for a name llama.cpp's
/// Llama layout does not have).
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, param) = rest.split_once('.')?;
    let g = match param {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.weight"))
}

/// Undoes llama.cpp's row order of a q_proj or k_proj weight (`heads` x head_dim rows of `cols` values):
/// within each head, GGUF row `2 i + j` is Hugging Face row `j * head_dim / 2 + i` (i < head_dim / 2,
/// j = 0 or 1).
pub fn unpermute_rows<T: Copy + Default>(w: &[T], heads: usize, cols: usize) -> Vec<T> {
    reorder_rows(w, heads, cols, |gguf, hf| (gguf, hf))
}

/// `unpermute_rows`'s inverse: Hugging Face's row order to llama.cpp's (for writing GGUF files).
pub fn permute_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    reorder_rows(w, heads, cols, |gguf, hf| (hf, gguf))
}

/// Copies each row of `w` to its place in the other order: `from_to(gguf row, hf row)` says which of the
/// two is read and which written.
fn reorder_rows<T: Copy + Default>(
    w: &[T],
    heads: usize,
    cols: usize,
    from_to: impl Fn(usize, usize) -> (usize, usize),
) -> Vec<T> {
    let rows = w.len() / cols;
    let (hd, half) = (rows / heads, rows / heads / 2);
    let mut out = vec![T::default(); w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (from, to) = from_to(h * hd + 2 * i + j, h * hd + j * half + i);
                out[to * cols..(to + 1) * cols].copy_from_slice(&w[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

impl GptConfig {
    /// The model's sizes from a GGUF file's `llama.*` metadata. A tied model has no `output.weight`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, NnError> {
        let arch = file.str("general.architecture")?;
        if arch != "llama" {
            return Err(file.error(format!(
                "general.architecture is \"{arch}\": lowrank runs the Llama layout (\"llama\")"
            )));
        }
        let key = |k: &str| format!("llama.{k}");
        let vocab_size = match file.get("llama.vocab_size") {
            Some(_) => file.usize("llama.vocab_size")?,
            None => file.array("tokenizer.ggml.tokens")?.len(),
        };
        let n_heads = file.usize(&key("attention.head_count"))?;
        let d_model = file.usize(&key("embedding_length"))?;
        if let Some(dims) = file.get("llama.rope.dimension_count") {
            let head_dim = d_model / n_heads.max(1);
            if dims.as_u64() != Some(head_dim as u64) {
                return Err(file.error(format!(
                    "llama.rope.dimension_count is {dims:?}, not the head dimension {head_dim}: partial \
                     rotary embeddings are not supported"
                )));
            }
        }
        if file.get("llama.rope.scaling.type").is_some()
            || file.tensor_info("rope_freqs.weight").is_some()
        {
            return Err(
                file.error("RoPE scaling (llama.rope.scaling.*, rope_freqs) is not supported")
            );
        }
        let config = GptConfig {
            vocab_size,
            d_model,
            n_layers: file.usize(&key("block_count"))?,
            n_heads,
            n_kv_heads: match file.get("llama.attention.head_count_kv") {
                Some(_) => file.usize(&key("attention.head_count_kv"))?,
                None => n_heads,
            },
            d_ff: file.usize(&key("feed_forward_length"))?,
            max_seq_len: file.usize(&key("context_length"))?,
            rope_theta: match file.get("llama.rope.freq_base") {
                Some(_) => file.f64(&key("rope.freq_base"))?,
                None => 10000.0,
            },
            // an f32 in the file (1e-5 reads 9.999999747378752e-06), taken as it is, as transformers does
            norm_eps: file.f64(&key("attention.layer_norm_rms_epsilon"))?,
            tie_embeddings: file.tensor_info("output.weight").is_none(),
        };
        config.validate().map_err(|m| file.error(m))?;
        Ok(config)
    }
}

/// How a GGUF model holds its block-quantized matrices (Q8_0, Q4_0, Q4_1); other tensors are f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weights {
    /// Decoded to f32 parameters: what training the base needs, and what the GPU's kernels multiply.
    #[default]
    F32,
    /// Kept in their blocks, frozen ([`BlockWeight`]): a token's decoding reads a fifth of the bytes. The
    /// tied output projection multiplies by the embedding's blocks while the embedding itself (a row
    /// lookup) stays f32. Adapters train over such a base as QLoRA's do over NF4; saving writes the
    /// matrices expanded (`Gpt::weights`), and `Gpt::decompress_weights` turns them into f32 weights.
    Blocks,
}

impl<B: Backend> Gpt<B> {
    /// A Llama model from a GGUF file, every weight decoded to f32 (`from_gguf_with` and `Weights::F32`).
    pub fn from_gguf(file: &GgufFile, backend: &B) -> Result<Self, NnError> {
        Self::from_gguf_with(file, backend, Weights::F32)
    }

    /// A Llama model from a GGUF file: config from its metadata, every weight checked (name, shape,
    /// finite values) and decoded to f32 or, for `Weights::Blocks`, the block-quantized matrices kept as
    /// they are; q_proj and k_proj rows put back in Hugging Face's order. Every tensor of the file must be
    /// used: one this model has no place for is an error, not silently dropped.
    pub fn from_gguf_with(file: &GgufFile, backend: &B, weights: Weights) -> Result<Self, NnError> {
        let config = GptConfig::from_gguf(file)?;
        // The model is built only once the file is known to hold as many values as the config asks for.
        let stored: u128 = file.tensors.iter().map(|t| t.numel() as u128).sum();
        check_backed(&config, stored, file.path(), file.path())?;
        let mut model = Gpt::zeros(config, backend);
        let heads = |hf: &str| match hf.rsplit('.').nth(1) {
            Some("q_proj") => Some(model.config.n_heads),
            Some("k_proj") => Some(model.config.n_kv_heads),
            _ => None,
        };
        let in_blocks = |name: &str| {
            weights == Weights::Blocks
                && file
                    .tensor_info(name)
                    .is_some_and(|t| t.block_matrix().is_some())
        };
        let mut used = std::collections::HashSet::new();
        let mut blocks = vec![]; // (Hugging Face path of the Linear, its weight in blocks)
        for (hf, param) in &model.named_params() {
            let name = gguf_name(hf).expect("every Llama parameter has a GGUF name");
            let expected = param.shape();
            check_shape(file, &name, &expected)?;
            if in_blocks(&name) {
                let (ty, dims, mut bytes) = file.read_blocks(&name)?;
                if let Some(heads) = heads(hf) {
                    // rows of an (out, in) matrix in blocks: out runs of bytes, each whole blocks
                    bytes = unpermute_rows(&bytes, heads, bytes.len() / dims[0]);
                }
                blocks.push((hf.clone(), BlockWeight::new(ty, dims, &bytes)));
            } else {
                let tensor = match heads(hf) {
                    Some(heads) => {
                        let (values, _) = file.read_f32(&name)?;
                        let values = unpermute_rows(&values, heads, expected.dims()[1]);
                        tensor_from(file, &name, values, expected, backend)?
                    }
                    None => file.tensor(&name, Some(&expected), backend)?,
                };
                param.set_value(tensor);
            }
            used.insert(name);
        }
        for (hf, weight) in blocks {
            let weight = Rc::new(weight);
            let path = hf
                .strip_suffix(".weight")
                .expect("Llama parameter names end in .weight");
            if path == "model.embed_tokens" {
                // the table stays f32 (a lookup); a tied output projection multiplies by its blocks
                model.embed_tokens.weight = Var::constant(weight.decompress(backend));
                if model.lm_head.is_none() {
                    model.tied_head = Some(Linear::from_compressed(weight, backend));
                }
            } else {
                let linear = model
                    .find_module(path)
                    .and_then(|m| m.as_any_mut().downcast_mut::<Linear<B>>())
                    .expect("a block-quantized matrix of a Llama is a Linear's or the embedding's");
                linear.set_compressed_weight(weight);
            }
        }
        let extra: Vec<String> = file
            .tensors
            .iter()
            .filter(|t| !used.contains(&t.name))
            .map(|t| t.name.clone())
            .collect();
        if !extra.is_empty() {
            return Err(NnError::UnexpectedTensors {
                path: file.path().into(),
                names: extra,
            });
        }
        Ok(model)
    }
}

fn check_shape(file: &GgufFile, name: &str, expected: &Shape) -> Result<(), NnError> {
    match file.tensor_info(name) {
        Some(info) if info.dims != expected.dims() => Err(NnError::ShapeMismatch {
            path: file.path().into(),
            name: name.into(),
            expected: expected.clone(),
            found: Shape::from(info.dims.clone()),
        }),
        _ => Ok(()),
    }
}

fn tensor_from<B: Backend>(
    file: &GgufFile,
    name: &str,
    values: Vec<f32>,
    shape: Shape,
    backend: &B,
) -> Result<Tensor<B>, NnError> {
    let values = values
        .into_iter()
        .map(|v| B::Elem::from_f64(v.into()))
        .collect();
    Tensor::from_vec(values, shape, backend).map_err(|source| NnError::Tensor {
        path: file.path().into(),
        name: name.into(),
        source,
    })
}

/// A pretrained chat model: weights, tokenizer, chat template.
pub struct Pretrained<B: Backend> {
    pub model: Gpt<B>,
    pub tokenizer: BpeTokenizer,
    pub chat: ChatTemplate,
}

impl<B: Backend> Pretrained<B> {
    /// Loads a GGUF file (`*.gguf`) or a Hugging Face folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`, and `tokenizer_config.json` for the chat template and end-of-turn token).
    pub fn load(path: &Path, backend: &B) -> Result<Self, NnError> {
        Self::load_with(path, backend, Weights::F32)
    }

    /// `load`, with a GGUF file's block-quantized matrices held as `weights` says (a folder's weights
    /// are f32 either way).
    pub fn load_with(path: &Path, backend: &B, weights: Weights) -> Result<Self, NnError> {
        if path.is_dir() {
            return Self::load_hf_folder(path, backend);
        }
        let file = GgufFile::open(path)?;
        let model = Gpt::from_gguf_with(&file, backend, weights)?;
        let tokenizer = BpeTokenizer::from_gguf(&file)?;
        let chat = match file.get("tokenizer.chat_template") {
            Some(_) => file.str("tokenizer.chat_template")?,
            None => CHATML,
        };
        let chat = ChatTemplate::new(chat).map_err(|m| file.error(m))?;
        Self::checked(path, model, tokenizer, chat)
    }

    fn load_hf_folder(dir: &Path, backend: &B) -> Result<Self, NnError> {
        let model = Gpt::load_any_vocab(dir, backend)?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| NnError::config(&config_path, format!("not JSON: {e}")))?,
            Err(_) => serde_json::Value::Null,
        };
        // a special token is written as its text, or as {"content": text, ...}
        let token = |key: &str| {
            let v = &config[key];
            v.as_str()
                .or_else(|| v["content"].as_str())
                .map(String::from)
        };
        let mut tokenizer = BpeTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let eos = token("eos_token").and_then(|t| tokenizer.token_id(&t));
        tokenizer.set_eos(eos);
        let chat = config["chat_template"].as_str().unwrap_or(CHATML);
        let chat = ChatTemplate::new(chat).map_err(|m| NnError::config(&config_path, m))?;
        Self::checked(dir, model, tokenizer, chat)
    }

    /// Saves the model as a Hugging Face folder that `load` (and transformers) read back: config.json and
    /// model.safetensors (`Gpt::save`), tokenizer.json, and tokenizer_config.json with the chat template and
    /// the end-of-turn token. Written as one unit: a kill leaves no half-written folder.
    pub fn save_hf_folder(&self, dir: &Path) -> Result<(), NnError> {
        lowrank_nn::save_dir_atomic(dir, |staging| self.save_hf_into(staging))
    }

    /// Writes the files of `save_hf_folder` into `dir`, a staging folder of `save_dir_atomic` (see
    /// `Gpt::save_into`).
    pub fn save_hf_into(&self, dir: &Path) -> Result<(), NnError> {
        use crate::Tokenizer;
        let eos = self
            .tokenizer
            .eos()
            .and_then(|id| self.tokenizer.id_to_token(id));
        let mut config = serde_json::json!({
            "tokenizer_class": "GPT2Tokenizer",
            "chat_template": self.chat.source(),
            "model_max_length": self.model.config.max_seq_len,
        });
        if let Some(eos) = eos {
            config["eos_token"] = serde_json::Value::String(eos);
        }
        self.model.save_into(dir)?;
        let write =
            |name: &str, text: &str| lowrank_nn::write_atomic(&dir.join(name), text.as_bytes());
        write("tokenizer.json", self.tokenizer.to_json())?;
        write("tokenizer_config.json", &config.to_string())
    }

    /// The tokenizer's ids must all have a row in the embedding.
    fn checked(
        path: &Path,
        model: Gpt<B>,
        tokenizer: BpeTokenizer,
        chat: ChatTemplate,
    ) -> Result<Self, NnError> {
        use crate::Tokenizer;
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(NnError::config(
                path,
                format!(
                    "the tokenizer has {} tokens but the model's embedding only {} rows",
                    tokenizer.vocab_size(),
                    model.config.vocab_size
                ),
            ));
        }
        Ok(Pretrained {
            model,
            tokenizer,
            chat,
        })
    }
}

impl<B: Backend> Gpt<B> {
    /// `Gpt::load` without the byte tokenizer's requirement of 256 tokens (for a folder with its own
    /// tokenizer).
    pub fn load_any_vocab(dir: &Path, backend: &B) -> Result<Self, NnError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| NnError::io(&path, e))?;
        let hf: crate::HfLlamaConfig = serde_json::from_str(&text)
            .map_err(|e| NnError::config(&path, format!("invalid LlamaConfig: {e}")))?;
        let config = GptConfig::from_hf(&hf).map_err(|m| NnError::config(&path, m))?;
        Self::load_with_config(dir, config, backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_permutation_is_llama_cpps_and_inverts() {
        // one head of 4 rows: Hugging Face's halves (0, 2) and (1, 3) become llama.cpp's pairs
        assert_eq!(
            permute_rows(&[0.0, 1.0, 2.0, 3.0], 1, 1),
            [0.0, 2.0, 1.0, 3.0]
        );
        let w: Vec<f32> = (0..2 * 8 * 3).map(|v| v as f32).collect(); // 2 heads of 8 rows, 3 columns
        assert_eq!(unpermute_rows(&permute_rows(&w, 2, 3), 2, 3), w);
        assert_ne!(permute_rows(&w, 2, 3), w);
    }

    #[test]
    fn gguf_names() {
        assert_eq!(
            gguf_name("model.layers.7.self_attn.k_proj.weight").as_deref(),
            Some("blk.7.attn_k.weight")
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_name("model.layers.0.mlp.nonsense.weight"), None);
    }
}
