//! `ByteTokenizer`: one token per byte of UTF-8, vocabulary 256. Any text round-trips; no training needed.

#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const VOCAB_SIZE: usize = 256;

    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    /// Bytes back to text; a sequence cut inside a multi-byte character decodes it as U+FFFD.
    /// The byte a token stands for (ids above 255, which a larger vocabulary may hold, read as 255).
    pub fn byte(&self, token: u32) -> u8 {
        token.min(255) as u8
    }

    pub fn decode(&self, tokens: &[u32]) -> String {
        let bytes: Vec<u8> = tokens.iter().map(|&t| self.byte(t)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_utf8_round_trips() {
        let t = ByteTokenizer;
        for s in ["hello", "héllo wörld ✓", ""] {
            assert_eq!(t.decode(&t.encode(s)), s);
        }
        assert_eq!(t.encode("é").len(), 2);
    }
}
