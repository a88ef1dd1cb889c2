//! Toy corpora, generated deterministically from a seed (no downloads).
//!
//! - [`general_corpus`]: simple English-like stories from a small grammar. Names recur within a story, so a
//!   model trained on it learns to look back and copy — the skill the fine-tuning task reuses.
//! - [`EchoTask`]: a different domain with an exact answer: `echo: qzvxk -> qzvxk`. Random letter strings
//!   never occur in the general corpus and the format is new, so the base model scores near zero; an adapter
//!   learns the format and the copy. Accuracy is exact match on held-out strings.

use crate::data::Dataset;
use crate::ByteTokenizer;
use lowrank_tensor::{rng, StdRng};
use rand_distr::{Distribution, Uniform};

const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "henry", "ivy", "jack",
];
const THINGS: &[&str] = &[
    "a red ball",
    "the old book",
    "a small dog",
    "the blue cup",
    "a warm coat",
    "the green apple",
    "a long letter",
    "the wooden box",
    "a bright lamp",
    "the little cat",
];
const VERBS: &[&str] = &[
    "found",
    "liked",
    "wanted",
    "carried",
    "saw",
    "painted",
    "lost",
    "kept",
    "gave away",
    "opened",
];
const PLACES: &[&str] = &[
    "in the park",
    "near the river",
    "at home",
    "on the hill",
    "by the sea",
    "in the garden",
    "at school",
    "under the tree",
];
const TIMES: &[&str] = &[
    "yesterday",
    "today",
    "in the morning",
    "at night",
    "after lunch",
    "on monday",
];
const FEELINGS: &[&str] = &["happy", "tired", "surprised", "quiet", "glad", "sleepy"];

fn pick<'a>(r: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[Uniform::new(0, xs.len()).expect("non-empty").sample(r)]
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// One short story: two characters, a few sentences, names repeated.
fn story(r: &mut StdRng) -> String {
    let a = pick(r, NAMES);
    let b = loop {
        let b = pick(r, NAMES);
        if b != a {
            break b;
        }
    };
    let thing = pick(r, THINGS);
    let sentences = [
        format!("{a} {} {thing} {}.", pick(r, VERBS), pick(r, PLACES)),
        format!("{} {a} met {b} {}.", pick(r, TIMES), pick(r, PLACES)),
        format!("{b} was {} to see {thing}.", pick(r, FEELINGS)),
        format!("then {a} and {b} went home {}.", pick(r, TIMES)),
        format!(
            "{b} {} {} and {a} was {}.",
            pick(r, VERBS),
            pick(r, THINGS),
            pick(r, FEELINGS)
        ),
    ];
    let n = Uniform::new(3, sentences.len() + 1)
        .expect("range")
        .sample(r);
    let mut text: Vec<String> = sentences[..n].iter().map(|s| capitalize(s)).collect();
    text.push("\n".into());
    text.join(" ")
}

/// About `n_bytes` of stories, the same for the same seed.
pub fn general_corpus(n_bytes: usize, seed: u64) -> String {
    let mut r = rng(seed);
    let mut out = String::with_capacity(n_bytes + 256);
    while out.len() < n_bytes {
        out.push_str(&story(&mut r));
    }
    out
}

/// Copy a random lowercase string: prompt `echo: qzvxk ->`, answer ` qzvxk\n`.
#[derive(Clone, Copy, Debug)]
pub struct EchoTask {
    pub word_len: usize,
}

impl Default for EchoTask {
    fn default() -> Self {
        EchoTask { word_len: 5 }
    }
}

impl EchoTask {
    /// One (prompt, answer) pair.
    pub fn example(&self, r: &mut StdRng) -> (String, String) {
        let letter = Uniform::new(b'a', b'z' + 1).expect("range");
        let word: String = (0..self.word_len)
            .map(|_| letter.sample(r) as char)
            .collect();
        (format!("echo: {word} ->"), format!(" {word}\n"))
    }

    /// `n` pairs from `seed` (use different seeds for training and held-out evaluation).
    pub fn examples(&self, n: usize, seed: u64) -> Vec<(String, String)> {
        let mut r = rng(seed);
        (0..n).map(|_| self.example(&mut r)).collect()
    }

    /// A training stream of `n` examples where only the answers count toward the loss.
    pub fn dataset(&self, n: usize, seed: u64) -> Dataset {
        let tok = ByteTokenizer;
        let (mut tokens, mut counted) = (Vec::new(), Vec::new());
        for (prompt, answer) in self.examples(n, seed) {
            let (p, a) = (tok.encode(&prompt), tok.encode(&answer));
            counted.extend(std::iter::repeat_n(false, p.len()));
            counted.extend(std::iter::repeat_n(true, a.len()));
            tokens.extend(p);
            tokens.extend(a);
        }
        Dataset::with_mask(tokens, counted)
    }
}
