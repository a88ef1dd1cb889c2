//! Tokenizers: text to token ids and back. The toy model reads bytes ([`ByteTokenizer`], vocabulary 256);
//! a real model brings its own byte-level BPE vocabulary ([`crate::BpeTokenizer`]). Both sit behind
//! [`Tokenizer`], so generation, chat and training code serve either.

/// Text to token ids and back.
pub trait Tokenizer {
    /// Token ids of `text`. Special tokens written out in the text (`<|im_start|>`, ...) become their ids,
    /// which is how a chat template's markers reach the model.
    fn encode(&self, text: &str) -> Vec<u32>;

    /// Text of `ids`; a sequence cut inside a multi-byte character decodes that character as U+FFFD.
    fn decode(&self, ids: &[u32]) -> String;

    fn vocab_size(&self) -> usize;

    /// The token that ends a turn or a text (`<|im_end|>` for a chat model), if the vocabulary has one.
    fn eos(&self) -> Option<u32>;
}

/// One token per byte of UTF-8, vocabulary 256. Any text round-trips; no training needed.
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const VOCAB_SIZE: usize = 256;

    /// The byte a token stands for (ids above 255, which a larger vocabulary may hold, read as 255).
    pub fn byte(&self, token: u32) -> u8 {
        token.min(255) as u8
    }
}

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn decode(&self, tokens: &[u32]) -> String {
        let bytes: Vec<u8> = tokens.iter().map(|&t| self.byte(t)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn vocab_size(&self) -> usize {
        Self::VOCAB_SIZE
    }

    fn eos(&self) -> Option<u32> {
        None
    }
}

/// `text` with every control character except newline and tab written as an escape (`\u{0}`, `\u{7}`,
/// `\u{1b}`), for printing what a model wrote: a byte model's output may hold any byte, and a NUL, a BEL or
/// an escape sequence must not reach a terminal as one.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_only() {
        let raw = ByteTokenizer.decode(&[72, 0, 105, 7, 10, 9, 27, 91, 50, 74, 0xc3, 0xa9]);
        assert_eq!(printable(&raw), "H\\u{0}i\\u{7}\n\t\\u{1b}[2Jé");
    }

    #[test]
    fn any_utf8_round_trips() {
        let t = ByteTokenizer;
        for s in ["hello", "héllo wörld ✓", ""] {
            assert_eq!(t.decode(&t.encode(s)), s);
        }
        assert_eq!(t.encode("é").len(), 2);
    }
}
