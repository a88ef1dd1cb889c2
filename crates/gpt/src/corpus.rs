//! Toy corpora, generated deterministically from a seed (no downloads).
//!
//! - [`general_corpus`]: simple English-like stories from a small grammar. Each story introduces a made-up
//!   name and repeats it.
//! - [`PirateTask`]: the same stories in pirate speak (`the` -> `ye`, `hello` -> `ahoy`, ...): a style the
//!   base model never produces, so it scores zero; an adapter learns it. Accuracy is exact match of the next
//!   word on held-out stories, at the places where the grammar fixes that word.

use crate::data::Dataset;
use crate::{ByteTokenizer, Tokenizer};
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
const KINDS: &[&str] = &["girl", "boy", "fox", "painter", "sailor", "baker"];
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

/// A pronounceable made-up name of 2 or 3 syllables, e.g. "tazumi".
fn made_up_name(r: &mut StdRng) -> String {
    const CONSONANTS: &[&str] = &[
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u"];
    let syllables = Uniform::new(2, 4).expect("range").sample(r);
    (0..syllables)
        .map(|_| format!("{}{}", pick(r, CONSONANTS), pick(r, VOWELS)))
        .collect()
}

/// One short story: a known character and a newcomer with a made-up name, a few sentences, names repeated.
fn story(r: &mut StdRng) -> String {
    let newcomer = made_up_name(r);
    let a = newcomer.as_str();
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
        format!("{b} was {} to see {a}.", pick(r, FEELINGS)),
        format!("{b} said hello to {a} and {a} smiled."),
        format!("then {a} and {b} went home {}.", pick(r, TIMES)),
        format!(
            "{b} {} {} and {a} was {}.",
            pick(r, VERBS),
            pick(r, THINGS),
            pick(r, FEELINGS)
        ),
        format!("everyone liked {a}."),
    ];
    let n = Uniform::new(4, sentences.len() + 1)
        .expect("range")
        .sample(r);
    let mut text = vec![format!("There was a {} named {a}.", pick(r, KINDS))];
    text.extend(sentences[..n].iter().map(|s| capitalize(s)));
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

/// Pirate speak: the general corpus's stories in a dialect that swaps a few words (`the` -> `ye`,
/// `hello` -> `ahoy`, `home` -> `aboard`, ...). A style shift of the kind adapters are made for: the base
/// model knows the stories but never says `ye`; the adapter learns when to.
#[derive(Clone, Copy, Debug, Default)]
pub struct PirateTask;

/// English word -> pirate word.
pub const PIRATE_WORDS: &[(&str, &str)] = &[
    ("the", "ye"),
    ("hello", "ahoy"),
    ("home", "aboard"),
    ("happy", "jolly"),
    ("glad", "merry"),
    ("school", "tavern"),
];

/// English words after which the grammar fixes the next word, so a prompt ending there has one answer:
/// `near/by/under/in -> the`, `said -> hello`, `went -> home`.
const TRIGGERS: &[(&str, &str)] = &[
    ("near", "the"),
    ("by", "the"),
    ("under", "the"),
    ("in", "the"),
    ("said", "hello"),
    ("went", "home"),
];

impl PirateTask {
    /// Translates English text word by word (a capitalised word stays capitalised).
    pub fn translate(english: &str) -> String {
        Dialect::PIRATE.translate(english)
    }

    /// About `n_bytes` of pirate stories.
    pub fn corpus(&self, n_bytes: usize, seed: u64) -> String {
        Dialect::PIRATE.corpus(n_bytes, seed)
    }

    /// A training stream of pirate stories (every token counts).
    pub fn dataset(&self, n_bytes: usize, seed: u64) -> Dataset {
        Dialect::PIRATE.dataset(n_bytes, seed)
    }

    /// `n` (prompt, answer) pairs: a pirate story cut after a trigger word, and the pirate word that must
    /// follow (` ye`, ` ahoy`, ` aboard`). Use a seed never used for training to get held-out stories.
    pub fn examples(&self, n: usize, seed: u64) -> Vec<(String, String)> {
        Dialect::PIRATE.examples(n, seed)
    }
}

/// A dialect of the general corpus's stories: some English words swapped, word by word. Pirate speak is
/// all of `PIRATE_WORDS`; a part of them is a task of its own (two such tasks make two adapters to
/// combine, examples/combine_adapters.rs).
#[derive(Clone, Copy, Debug)]
pub struct Dialect {
    /// English word -> the dialect's word.
    pub words: &'static [(&'static str, &'static str)],
}

impl Dialect {
    pub const PIRATE: Dialect = Dialect {
        words: PIRATE_WORDS,
    };

    /// Translates English text word by word (a capitalised word stays capitalised).
    pub fn translate(&self, english: &str) -> String {
        let swap = |w: &str| -> String {
            let lower = w.to_lowercase();
            match self.words.iter().find(|(e, _)| *e == lower) {
                Some((_, p)) if w.starts_with(|c: char| c.is_uppercase()) => capitalize(p),
                Some((_, p)) => p.to_string(),
                None => w.to_string(),
            }
        };
        let mut out = String::with_capacity(english.len());
        let mut word = String::new();
        for c in english.chars() {
            if c.is_alphabetic() {
                word.push(c);
            } else {
                out.push_str(&swap(&word));
                word.clear();
                out.push(c);
            }
        }
        out.push_str(&swap(&word));
        out
    }

    /// About `n_bytes` of stories in this dialect.
    pub fn corpus(&self, n_bytes: usize, seed: u64) -> String {
        self.translate(&general_corpus(n_bytes, seed))
    }

    /// A training stream of stories in this dialect (every token counts).
    pub fn dataset(&self, n_bytes: usize, seed: u64) -> Dataset {
        Dataset::new(ByteTokenizer.encode(&self.corpus(n_bytes, seed)))
    }

    /// `n` (prompt, answer) pairs: a story in this dialect cut after a trigger word whose fixed next word
    /// the dialect swaps, and the swapped word that must follow.
    pub fn examples(&self, n: usize, seed: u64) -> Vec<(String, String)> {
        let swapped = |w: &str| self.words.iter().any(|(e, _)| *e == w);
        assert!(
            TRIGGERS.iter().any(|&(_, w)| swapped(w)),
            "examples: the dialect {:?} swaps no word a trigger fixes",
            self.words
        );
        let mut r = rng(seed);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let english = story(&mut r);
            let words: Vec<&str> = english.split(' ').collect();
            for i in 1..words.len() {
                let (prev, next) = (words[i - 1], words[i].trim_end_matches(['.', '\n']));
                let fixed = TRIGGERS.iter().any(|&(t, w)| t == prev && w == next);
                if fixed && swapped(next) && out.len() < n {
                    let prompt = self.translate(&words[..i].join(" "));
                    out.push((prompt, format!(" {}", self.translate(next))));
                }
            }
        }
        out
    }
}

/// The first `words` words of `text` (a sample prompt that follows the data): up to the `words`-th
/// whitespace after the first non-blank character, at most 40 bytes, ending on a character boundary.
pub fn opening_words(text: &str, words: usize) -> &str {
    let text = text.trim_start();
    let mut end = text.len();
    let mut seen = 0;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() && i > 0 && !text[..i].ends_with(char::is_whitespace) {
            seen += 1;
            if seen == words {
                end = i;
                break;
            }
        }
    }
    let mut end = end.min(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::opening_words;

    #[test]
    fn opening_words_cut_on_words_and_characters() {
        assert_eq!(opening_words("  The quick  brown fox", 2), "The quick");
        assert_eq!(opening_words("one", 3), "one");
        assert_eq!(opening_words("\n\nGNU GENERAL PUBLIC", 1), "GNU");
        let korean = "가나다라마바사아자차카타파하가나다라마바사"; // 3 bytes a character
        assert_eq!(opening_words(korean, 2).len(), 39);
        assert_eq!(opening_words("", 2), "");
    }
}
