//! Byte-level BPE, the tokenizer of GPT-2, Llama 3, SmolLM and most real models, run by Hugging Face's
//! `tokenizers` crate.
//!
//! Encoding: the text is split into words by GPT-2's regex (letters, digits, punctuation runs, spaces, each
//! word keeping its leading space); each byte of a word is spelt as one printable character (the
//! "byte alphabet": space is `Ġ`, newline `Ċ`), and pairs of adjacent symbols are merged in the order the
//! merge list ranks them until no listed pair is left. Each remaining symbol is a token. Special tokens
//! (`<|im_start|>`, ...) are matched in the text first and never split.
//!
//! A GGUF file stores the vocabulary (`tokenizer.ggml.tokens`), the merges (`tokenizer.ggml.merges`, "a b"
//! strings) and which tokens are control tokens (`tokenizer.ggml.token_type` 3). [`BpeTokenizer::from_gguf`]
//! builds from them the `tokenizer.json` they stand for, as transformers does when it loads a GGUF, so both
//! give the same ids (a byte the vocabulary has no token for is dropped, as there: SmolLM2's lacks a few
//! control bytes and the bytes that never occur in UTF-8); [`BpeTokenizer::from_file`] reads a Hugging Face folder's `tokenizer.json`.

use crate::Tokenizer;
use lowrank_nn::{GgufFile, GgufValue, NnError};
use serde_json::{json, Map, Value};
use std::path::Path;

pub struct BpeTokenizer {
    inner: tokenizers::Tokenizer,
    /// The tokenizer as `tokenizer.json` text (written beside a merged model).
    json: String,
    eos: Option<u32>,
    bos: Option<u32>,
    /// llama.cpp's name for the pre-tokenizer (`tokenizer.ggml.pre`, e.g. "smollm"), when read from GGUF.
    pre: Option<String>,
}

/// GGUF's token type of a control token (`<|endoftext|>`, `<|im_start|>`, ...).
const CONTROL: u64 = 3;
/// GGUF's token type of a user-defined added token (matched whole, but not special).
const USER_DEFINED: u64 = 4;

/// GPT-2's map from bytes to printable characters: the printable bytes stand for themselves, the others
/// (controls, space, DEL, ...) are moved to U+0100 onwards in byte order.
pub fn byte_alphabet() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut next = 256;
    std::array::from_fn(|b| {
        let b = b as u32;
        if printable(b) {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            next += 1;
            char::from_u32(next - 1).expect("a code point below U+0144")
        }
    })
}

impl BpeTokenizer {
    /// The tokenizer a GGUF file's `tokenizer.ggml.*` metadata describes (model `gpt2`: byte-level BPE).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, NnError> {
        let model = file.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(file.error(format!(
                "tokenizer.ggml.model is \"{model}\": lowrank reads byte-level BPE (\"gpt2\") vocabularies"
            )));
        }
        let strings = |key: &str| -> Result<Vec<&str>, NnError> {
            file.array(key)?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .ok_or_else(|| file.error(format!("{key}[{i}] is not a string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match file.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|t| t.as_u64()).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    file.error("tokenizer.ggml.token_type is not an array of integers")
                })?,
            None => vec![],
        };
        let alphabet = byte_alphabet();
        let spelt = |c: char| alphabet.contains(&c);
        // A token outside the byte alphabet is spelt in it, byte by byte (as transformers does).
        let mut vocab = Map::new();
        for (id, token) in tokens.iter().enumerate() {
            let key = if token.chars().all(spelt) {
                token.to_string()
            } else {
                token.bytes().map(|b| alphabet[b as usize]).collect()
            };
            vocab.insert(key, json!(id));
        }
        let merges = strings("tokenizer.ggml.merges")?
            .iter()
            .enumerate()
            .map(|(i, m)| match m.split(' ').collect::<Vec<_>>()[..] {
                [a, b] => Ok(json!([a, b])),
                _ => Err(file.error(format!(
                    "tokenizer.ggml.merges[{i}] is {m:?}, not two symbols separated by a space"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let added: Vec<Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter_map(|(id, (token, &ty))| {
                let special = ty == CONTROL && token.chars().all(spelt);
                let user = ty == USER_DEFINED;
                (special || user).then(|| {
                    json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": special})
                })
            })
            .collect();
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                                "use_regex": true});
        let json = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": null,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        let id = |key: &str| file.get(key).and_then(|v| v.as_u64()).map(|v| v as u32);
        let mut tokenizer = Self::from_json(file.path(), json.to_string())?;
        tokenizer.bos = id("tokenizer.ggml.bos_token_id");
        tokenizer.eos = id("tokenizer.ggml.eos_token_id");
        tokenizer.pre = file
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .map(String::from);
        Ok(tokenizer)
    }

    /// A Hugging Face `tokenizer.json` (its end-of-turn token comes from the folder's tokenizer_config.json:
    /// `set_eos`).
    pub fn from_file(path: &Path) -> Result<Self, NnError> {
        let text = std::fs::read_to_string(path).map_err(|e| NnError::io(path, e))?;
        Self::from_json(path, text)
    }

    fn from_json(path: &Path, json: String) -> Result<Self, NnError> {
        let inner: tokenizers::Tokenizer = json.parse().map_err(|e| {
            NnError::config(path, format!("not a tokenizer this crate can build: {e}"))
        })?;
        Ok(BpeTokenizer {
            inner,
            json,
            eos: None,
            bos: None,
            pre: None,
        })
    }

    /// The `tokenizer.ggml.*` metadata of a GGUF file holding this tokenizer: the inverse of `from_gguf`
    /// (tokens by id, their types, the merges as "a b" strings, the special ids).
    pub fn gguf_metadata(&self) -> Vec<(String, GgufValue)> {
        let json: Value = serde_json::from_str(&self.json).expect("the tokenizer's own JSON");
        let mut tokens: Vec<(String, u64)> = vec![(String::new(), 1); self.vocab_size()];
        if let Some(vocab) = json["model"]["vocab"].as_object() {
            for (token, id) in vocab {
                if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
                    *slot = (token.clone(), 1);
                }
            }
        }
        for added in json["added_tokens"].as_array().into_iter().flatten() {
            let id = added["id"].as_u64().unwrap_or(u64::MAX) as usize;
            if let (Some(slot), Some(content)) = (tokens.get_mut(id), added["content"].as_str()) {
                let special = added["special"].as_bool().unwrap_or(false);
                *slot = (
                    content.to_string(),
                    if special { CONTROL } else { USER_DEFINED },
                );
            }
        }
        let merges = json["model"]["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| match m {
                Value::String(s) => Some(s.clone()),
                Value::Array(pair) => Some(format!("{} {}", pair[0].as_str()?, pair[1].as_str()?)),
                _ => None,
            });
        let strings =
            |v: Vec<String>| GgufValue::Array(v.into_iter().map(GgufValue::String).collect());
        let mut out = vec![
            (
                "tokenizer.ggml.model".into(),
                GgufValue::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".into(),
                GgufValue::String(self.pre.clone().unwrap_or_else(|| "gpt2".into())),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                GgufValue::Array(tokens.iter().map(|t| GgufValue::I32(t.1 as i32)).collect()),
            ),
            ("tokenizer.ggml.merges".into(), strings(merges.collect())),
        ];
        out.insert(
            2,
            (
                "tokenizer.ggml.tokens".into(),
                strings(tokens.into_iter().map(|t| t.0).collect()),
            ),
        );
        for (key, id) in [("bos", self.bos), ("eos", self.eos)] {
            if let Some(id) = id {
                out.push((format!("tokenizer.ggml.{key}_token_id"), GgufValue::U32(id)));
            }
        }
        out
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> &str {
        &self.json
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The id of a token given by its text (`"<|im_end|>"`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of token `id` (`"<|im_end|>"`), if the vocabulary has it.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Overrides the end-of-turn token (a chat model's `<|im_end|>`, where the file names another).
    pub fn set_eos(&mut self, eos: Option<u32>) {
        self.eos = eos;
    }
}

impl Tokenizer for BpeTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode_fast(text, false)
            .expect("BPE without truncation or padding encodes any text")
            .get_ids()
            .to_vec()
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn eos(&self) -> Option<u32> {
        self.eos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[b'a' as usize], 'a');
        assert_eq!(a[0], '\u{100}');
        let distinct: std::collections::HashSet<char> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
