//! Training batches: random windows of a token stream, inputs and next-token targets side by side.

use lowrank_tensor::StdRng;
use rand_distr::{Distribution, Uniform};

/// Target id that contributes no loss (prompt positions in fine-tuning data).
pub const IGNORE: u32 = u32::MAX;

/// A batch of `batch` sequences of `seq` tokens, row-major; `targets[i]` is the token after `inputs[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub batch: usize,
    pub seq: usize,
}

/// Where training batches come from: random windows of a token stream ([`Dataset`]) or whole examples
/// (`ExampleSet`, for chat data).
pub trait BatchSource {
    /// A batch of `batch` sequences; `seq` is the window length for sources that cut windows.
    fn sample(&self, batch: usize, seq: usize, rng: &mut StdRng) -> Batch;
}

impl BatchSource for Dataset {
    fn sample(&self, batch: usize, seq: usize, rng: &mut StdRng) -> Batch {
        Dataset::sample(self, batch, seq, rng)
    }
}

/// A token stream with, per token, whether predicting it counts toward the loss.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub tokens: Vec<u32>,
    /// `false` where the token should not be predicted (e.g. a prompt); empty means every token counts.
    pub counted: Vec<bool>,
}

impl Dataset {
    pub fn new(tokens: Vec<u32>) -> Self {
        Dataset {
            tokens,
            counted: Vec::new(),
        }
    }

    pub fn with_mask(tokens: Vec<u32>, counted: Vec<bool>) -> Self {
        assert_eq!(
            tokens.len(),
            counted.len(),
            "dataset: one mask entry per token"
        );
        Dataset { tokens, counted }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Splits off the last `fraction` of the stream (for validation).
    pub fn split(&self, fraction: f64) -> (Dataset, Dataset) {
        let cut = ((1.0 - fraction) * self.len() as f64) as usize;
        let part = |r: std::ops::Range<usize>| Dataset {
            tokens: self.tokens[r.clone()].to_vec(),
            counted: if self.counted.is_empty() {
                vec![]
            } else {
                self.counted[r].to_vec()
            },
        };
        (part(0..cut), part(cut..self.len()))
    }

    /// `batch` windows of `seq + 1` tokens at uniformly random offsets.
    pub fn sample(&self, batch: usize, seq: usize, rng: &mut StdRng) -> Batch {
        assert!(
            self.len() > seq,
            "dataset: {} tokens are too few for windows of {} (+1 target)",
            self.len(),
            seq
        );
        let start = Uniform::new(0, self.len() - seq).expect("non-empty range");
        let (mut inputs, mut targets) = (
            Vec::with_capacity(batch * seq),
            Vec::with_capacity(batch * seq),
        );
        for _ in 0..batch {
            let s = start.sample(rng);
            inputs.extend_from_slice(&self.tokens[s..s + seq]);
            for i in s + 1..s + seq + 1 {
                let counted = self.counted.is_empty() || self.counted[i];
                targets.push(if counted { self.tokens[i] } else { IGNORE });
            }
        }
        Batch {
            inputs,
            targets,
            batch,
            seq,
        }
    }
}
