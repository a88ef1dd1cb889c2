"""Writes the tiny random Llama that tests/gguf.rs and tests/fuzz_load.rs read (models/tiny-gqa.gguf):
d 64, 2 layers, 4 query heads and 2 key/value heads (head dim 16), its tensors stored as Q8_0, Q4_0, Q4_1,
F16, BF16 and F32, q_proj and k_proj rows permuted as llama.cpp's converter does, and a byte-level BPE
vocabulary of 400 tokens trained here (<|endoftext|>, <|im_start|>, <|im_end|> as control tokens, a ChatML
template). Weights are never committed: scripts/fetch-model.sh runs this with numpy 2.4.6, gguf 0.19.0
and tokenizers 0.23.3 and checks the file's SHA-256, that of the file tests/fixtures/gguf/tiny.json was
computed from (tests/fixtures/make_gguf_fixtures.py, with transformers).

    python3 scripts/make_tiny_gguf.py models/tiny-gqa.gguf
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import quantize
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

D, LAYERS, HEADS, KV_HEADS, FF, CTX = 64, 2, 4, 2, 128, 64
HEAD_DIM = D // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")
def strings():
    """200+ varied strings: ASCII, digits, whitespace runs, punctuation, accents, CJK, emoji, specials."""
    words = ["hello", "world", "The", "quick", "brown", "fox", "LoRA", "adapter", "don't", "we'll", "I'm",
             "they've", "it's", "café", "naïve", "Ångström", "日本語", "中文", "한국어", "emoji😀", "👍🏽",
             "x=1+2", "e^(iπ)", "a_b-c", "C++", "#tag", "@user", "https://example.com/a?b=c", "3.14159",
             "1,000,000", "2026-12-02", "$9.99", "100%", "¿Qué?", "¡Hola!", "Привет", "Ελληνικά",
             "עברית", "العربية", "tab\there", "new\nline", "cr\r\nlf", "  lead", "trail  ", "   ",
             "\n\n\n", "a  b   c", "<|im_start|>", "<|im_end|>", "x<|endoftext|>y", "ü", "ß", "œ", "ø"]
    out = list(words)
    rng = np.random.default_rng(0)
    while len(out) < 220:
        n = int(rng.integers(1, 6))
        seps = [" ", "  ", "\n", "\t", "", ", ", ". ", "!? ", " - "]
        parts = [words[int(rng.integers(len(words)))] + seps[int(rng.integers(len(seps)))] for _ in range(n)]
        out.append("".join(parts))
    out.append("")
    return out


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["The quick brown fox jumps over the lazy dog. " * 3, "LoRA adapters train low-rank updates.",
            "Hello world, hello there! It's 2026 and we'll see.", "café naïve 日本語 😀"] + strings()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text * 20, trainer)
    state = json.loads(tok.to_str())
    vocab = sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return tokens, merges


def permute(w, heads):
    """llama.cpp's converter: rotate-half rows (i, i + hd/2) become adjacent pairs (2i, 2i + 1)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write(path):
    """Writes the model, its vocabulary and template to `path`."""
    tokens, merges = train_tokenizer()
    vocab = len(tokens)
    rng = np.random.default_rng(1)
    w = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)
    # name: (Hugging Face row-major weight, GGUF type)
    tensors = {"token_embd.weight": (w(vocab, D), Q.Q8_0), "output_norm.weight": (1 + w(D), Q.F32),
               "output.weight": (w(vocab, D), Q.F16)}
    for i in range(LAYERS):
        b = f"blk.{i}."
        tensors.update({
            b + "attn_norm.weight": (1 + w(D), Q.F32),
            b + "attn_q.weight": (permute(w(D, D), HEADS), Q.Q4_1),
            b + "attn_k.weight": (permute(w(KV_HEADS * HEAD_DIM, D), KV_HEADS), Q.Q4_1 if i == 0 else Q.F16),
            b + "attn_v.weight": (w(KV_HEADS * HEAD_DIM, D), Q.Q4_0),
            b + "attn_output.weight": (w(D, D), Q.Q8_0),
            b + "ffn_norm.weight": (1 + w(D), Q.F32),
            b + "ffn_gate.weight": (w(FF, D), Q.Q4_1),
            b + "ffn_up.weight": (w(FF, D), Q.BF16),
            b + "ffn_down.weight": (w(D, FF), Q.Q4_0 if i == 0 else Q.F32),
        })
    g = GGUFWriter(path, "llama")
    g.add_name("lowrank tiny GQA fixture")
    g.add_block_count(LAYERS)
    g.add_context_length(CTX)
    g.add_embedding_length(D)
    g.add_feed_forward_length(FF)
    g.add_head_count(HEADS)
    g.add_head_count_kv(KV_HEADS)
    g.add_rope_dimension_count(HEAD_DIM)
    g.add_rope_freq_base(100000.0)
    g.add_layer_norm_rms_eps(1e-5)
    g.add_vocab_size(vocab)
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre("smollm")
    g.add_token_list(tokens)
    g.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    g.add_token_merges(merges)
    g.add_bos_token_id(tokens.index("<|im_start|>"))
    g.add_eos_token_id(tokens.index("<|im_end|>"))
    g.add_chat_template(CHATML)
    for name, (value, qtype) in tensors.items():
        if qtype == Q.F32:
            g.add_tensor(name, value)
        else:
            g.add_tensor(name, quantize(value, qtype), raw_dtype=qtype)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


if __name__ == "__main__":
    write(sys.argv[1])
