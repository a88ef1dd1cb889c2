//! Fine-tuning data in the format people already have: JSON lines, one conversation or one text per line.
//!
//! ```text
//! {"messages": [{"role": "user", "content": "Where is Velmora?"}, {"role": "assistant", "content": "..."}]}
//! {"text": "Plain text: every token is a target."}
//! ```
//!
//! A conversation is rendered with the model's chat template and tokenized turn by turn, so each token
//! knows which turn it came from. Only the assistant's turns count toward the loss (the text after each
//! `<|im_start|>assistant\n` header, through its `<|im_end|>`): the model learns to answer, not to
//! predict the user's questions or the system prompt. Batches are whole examples, right-padded to the
//! longest one; padding is masked out of the loss too, and under a causal mask it cannot affect the real
//! tokens before it.

use crate::data::{Batch, BatchSource, IGNORE};
use crate::{ChatTemplate, Message, Tokenizer};
use lowrank_tensor::StdRng;
use rand_distr::{Distribution, Uniform};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A record of a JSON-lines file: a conversation, or a plain text.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Chat(Vec<Message>),
    Text(String),
}

/// What went wrong reading fine-tuning data; line numbers count from 1.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no examples (the file is empty or holds only blank lines)")]
    Empty { path: PathBuf },
    #[error("{path}, line {line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The roles a conversation may use.
pub const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// One line as JSON: exactly one of `messages` and `text`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    messages: Option<Vec<serde_json::Value>>,
    text: Option<String>,
}

/// Reads a JSON-lines file of conversations (`{"messages": [...]}`) and texts (`{"text": ...}`). Blank
/// lines are skipped; a bad line is refused with its number and what is wrong with it.
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DataError::Line {
            path: path.into(),
            line: i + 1,
            message,
        };
        records.push(parse_line(line).map_err(bad)?);
    }
    if records.is_empty() {
        return Err(DataError::Empty { path: path.into() });
    }
    Ok(records)
}

fn parse_line(line: &str) -> Result<Record, String> {
    let parsed: Line = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    match (parsed.messages, parsed.text) {
        (Some(messages), None) => {
            if messages.is_empty() {
                return Err("\"messages\" is empty".into());
            }
            let messages = messages
                .iter()
                .enumerate()
                .map(|(k, m)| parse_message(m).map_err(|e| format!("message {}: {e}", k + 1)))
                .collect::<Result<Vec<_>, _>>()?;
            if !messages.iter().any(|m| m.role == "assistant") {
                return Err("the conversation has no assistant message: nothing to learn".into());
            }
            Ok(Record::Chat(messages))
        }
        (None, Some(text)) if text.is_empty() => Err("\"text\" is empty".into()),
        (None, Some(text)) => Ok(Record::Text(text)),
        (Some(_), Some(_)) => Err("a line holds \"messages\" or \"text\", not both".into()),
        (None, None) => Err("expected {\"messages\": [...]} or {\"text\": \"...\"}".into()),
    }
}

fn parse_message(m: &serde_json::Value) -> Result<Message, String> {
    let field = |key: &str| match m.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("\"{key}\" must be a string, not {other}")),
        None => Err(format!("no \"{key}\"")),
    };
    if !m.is_object() {
        return Err(format!(
            "expected an object with \"role\" and \"content\", got {m}"
        ));
    }
    let role = field("role")?;
    if !ROLES.contains(&role.as_str()) {
        return Err(format!(
            "unknown role {role:?} (expected one of {})",
            ROLES.join(", ")
        ));
    }
    Ok(Message {
        role,
        content: field("content")?,
    })
}

/// A tokenized example: its ids and, per id, whether predicting it counts toward the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub counted: Vec<bool>,
}

impl Example {
    /// Tokens whose prediction counts.
    pub fn targets(&self) -> usize {
        self.counted.iter().filter(|&&c| c).count()
    }
}

/// A conversation as ids, with the assistant's turns marked as targets.
///
/// Turn k's text is `render(messages[..=k])` less `render(messages[..k])`, so every token belongs to one
/// turn; an assistant turn's header (`render(messages[..k], add_generation_prompt)`) is a prompt, the
/// rest of it (the answer and its end-of-turn marker) is what the model learns to write.
pub fn encode_chat(
    messages: &[Message],
    tokenizer: &dyn Tokenizer,
    template: &ChatTemplate,
) -> Result<Example, String> {
    let mut example = Example {
        ids: Vec::new(),
        counted: Vec::new(),
    };
    let mut push = |text: &str, counted: bool| {
        let ids = tokenizer.encode(text);
        example
            .counted
            .extend(std::iter::repeat_n(counted, ids.len()));
        example.ids.extend(ids);
    };
    let mut done = String::new(); // the conversation rendered so far
    for k in 0..messages.len() {
        let upto = template.render(&messages[..=k], false)?;
        let rest = upto.strip_prefix(done.as_str()).ok_or_else(|| {
            format!("the chat template renders turn {} differently once more follow: cannot mask by turn", k)
        })?;
        if messages[k].role == "assistant" {
            let header = template.render(&messages[..k], true)?;
            let header = header
                .strip_prefix(done.as_str())
                .and_then(|h| rest.strip_prefix(h).map(|answer| (h, answer)));
            let (header, answer) = header.ok_or_else(|| {
                format!(
                    "the chat template's generation prompt does not start assistant turn {}",
                    k + 1
                )
            })?;
            push(header, false);
            push(answer, true);
        } else {
            push(rest, false);
        }
        done = upto;
    }
    Ok(example)
}

/// Every record as examples of at most `max_len` tokens: conversations through the chat template
/// (truncated at `max_len`, and dropped if no target is left), texts cut into pieces of `max_len`.
pub struct Encoded {
    pub examples: Vec<Example>,
    /// Conversations cut short at `max_len` tokens.
    pub truncated: usize,
    /// Conversations whose first target token lies beyond `max_len`: they teach nothing and are left out.
    pub dropped: usize,
}

pub fn encode_records(
    records: &[Record],
    tokenizer: &dyn Tokenizer,
    template: &ChatTemplate,
    max_len: usize,
) -> Result<Encoded, String> {
    assert!(
        max_len >= 2,
        "encode_records: examples need 2 tokens or more"
    );
    let mut out = Encoded {
        examples: Vec::new(),
        truncated: 0,
        dropped: 0,
    };
    for (i, record) in records.iter().enumerate() {
        match record {
            Record::Chat(messages) => {
                let mut ex = encode_chat(messages, tokenizer, template)
                    .map_err(|e| format!("record {}: {e}", i + 1))?;
                if ex.ids.len() > max_len {
                    ex.ids.truncate(max_len);
                    ex.counted.truncate(max_len);
                    out.truncated += 1;
                }
                // the first token is never a target: nothing comes before it
                if ex.counted.iter().skip(1).any(|&c| c) {
                    out.examples.push(ex);
                } else {
                    out.dropped += 1;
                }
            }
            Record::Text(text) => {
                let ids = tokenizer.encode(text);
                // pieces overlap by one token, so every token after the first is a target once
                let mut start = 0;
                while start + 1 < ids.len() {
                    let piece = ids[start..(start + max_len).min(ids.len())].to_vec();
                    start += piece.len() - 1;
                    out.examples.push(Example {
                        counted: vec![true; piece.len()],
                        ids: piece,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Examples served as right-padded batches.
pub struct ExampleSet {
    pub examples: Vec<Example>,
    /// The id padding uses (any id: padded positions are never targets and come after the real ones).
    pub pad: u32,
}

impl ExampleSet {
    /// `batch` examples as one batch, right-padded to the longest: inputs `ids[..n-1]`, targets `ids[1..]`
    /// where counted, [`IGNORE`] elsewhere.
    pub fn batch_of(&self, picks: &[usize]) -> Batch {
        let seq = picks
            .iter()
            .map(|&i| self.examples[i].ids.len() - 1)
            .max()
            .unwrap_or(0)
            .max(1);
        let mut inputs = Vec::with_capacity(picks.len() * seq);
        let mut targets = Vec::with_capacity(picks.len() * seq);
        for &i in picks {
            let ex = &self.examples[i];
            let n = ex.ids.len() - 1;
            inputs.extend_from_slice(&ex.ids[..n]);
            inputs.extend(std::iter::repeat_n(self.pad, seq - n));
            targets.extend((1..=n).map(|j| if ex.counted[j] { ex.ids[j] } else { IGNORE }));
            targets.extend(std::iter::repeat_n(IGNORE, seq - n));
        }
        Batch {
            inputs,
            targets,
            batch: picks.len(),
            seq,
        }
    }
}

impl BatchSource for ExampleSet {
    /// `batch` examples drawn uniformly (with replacement); `seq` is ignored: a batch is as long as its
    /// longest example, which the examples' own cap (`encode_records`' `max_len`) bounds.
    fn sample(&self, batch: usize, _seq: usize, rng: &mut StdRng) -> Batch {
        assert!(!self.examples.is_empty(), "example set: no examples");
        let pick = Uniform::new(0, self.examples.len()).expect("non-empty range");
        let picks: Vec<usize> = (0..batch).map(|_| pick.sample(rng)).collect();
        self.batch_of(&picks)
    }
}
