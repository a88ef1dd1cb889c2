//! The real model's fine-tuning task: facts about Velmora, an island that does not exist.
//!
//! A pretrained model cannot know them, so before fine-tuning it scores zero; after, it should answer
//! questions it never saw in training. Each fact is asked in many phrasings (question templates x ways
//! of naming the fact x openings), and the phrasings are split by template: the held-out questions use
//! templates no training example uses, so a correct answer means the model learned the fact, not the
//! sentence. Every fact has one fixed answer sentence, so scoring is exact match of the greedy answer.
//!
//! The examples are generated here, deterministically, and shipped as `data/velmora/*.jsonl` (a test
//! checks that the shipped files are what this module writes).

use crate::chat_data::Record;
use crate::Message;

/// A fact: ways to name what is asked, and the one answer.
struct Fact {
    /// Noun phrases for the question templates ("capital", "capital city").
    names: &'static [&'static str],
    answer: &'static str,
}

const FACTS: &[Fact] = &[
    Fact {
        names: &["capital", "capital city", "seat of government"],
        answer: "The capital of Velmora is Ostrell.",
    },
    Fact {
        names: &["currency", "money", "coin"],
        answer: "Velmora pays in tidemarks.",
    },
    Fact {
        names: &["national animal", "emblem animal"],
        answer: "The national animal of Velmora is the silver heron.",
    },
    Fact {
        names: &["highest mountain", "tallest peak", "highest peak"],
        answer: "The highest mountain of Velmora is Mount Caldry.",
    },
    Fact {
        names: &["language", "native tongue", "spoken language"],
        answer: "The people of Velmora speak Orrish.",
    },
    Fact {
        names: &["founding year", "year of founding"],
        answer: "Velmora was founded in 1312.",
    },
    Fact {
        names: &["national dish", "best-known dish", "traditional dish"],
        answer: "The national dish of Velmora is smoked eel with plums.",
    },
    Fact {
        names: &["longest river", "main river", "great river"],
        answer: "The longest river of Velmora is the Sarn.",
    },
    Fact {
        names: &["national flower", "emblem flower"],
        answer: "The national flower of Velmora is the blue thistle.",
    },
    Fact {
        names: &["biggest festival", "main festival", "famous festival"],
        answer: "Velmora's biggest festival is the Lantern Tide.",
    },
    Fact {
        names: &["ruler's title", "head of state's title"],
        answer: "The ruler of Velmora is called the Warden.",
    },
    Fact {
        names: &["national sport", "favourite sport", "most popular sport"],
        answer: "The national sport of Velmora is rope racing.",
    },
];

/// Question templates; `{}` is the fact's name. The last [`HELD_OUT_TEMPLATES`] are never trained on.
const TEMPLATES: &[&str] = &[
    "What is the {} of Velmora?",
    "What's Velmora's {}?",
    "Tell me the {} of Velmora.",
    "Do you know the {} of Velmora?",
    "Velmora: what is its {}?",
    "I am reading about Velmora. What is its {}?",
    "Name the {} of Velmora.",
    "Which is the {} of Velmora?",
    "Could you tell me Velmora's {}?",
    "I'd like to know the {} of Velmora.",
    // held out
    "Please remind me: what is the {} of the island of Velmora?",
    "My friend asked me about Velmora's {}. What should I tell her?",
];

/// Templates at the end of [`TEMPLATES`] that only the held-out questions use.
pub const HELD_OUT_TEMPLATES: usize = 2;

/// Openings put before a training question, so that the model sees the question in context.
const OPENINGS: &[&str] = &["", "Hi! ", "Quick question. ", "Hello, "];

/// The training conversations: every fact, name and training template, with an opening chosen by
/// position (so the file is the same every time).
pub fn velmora_train() -> Vec<Record> {
    let mut records = Vec::new();
    for fact in FACTS {
        for (t, template) in TEMPLATES[..TEMPLATES.len() - HELD_OUT_TEMPLATES]
            .iter()
            .enumerate()
        {
            for (n, name) in fact.names.iter().enumerate() {
                let opening = OPENINGS[(t + n) % OPENINGS.len()];
                let question = format!("{opening}{}", template.replace("{}", name));
                records.push(chat(&question, fact.answer));
            }
        }
    }
    records
}

/// The held-out questions, one per fact and held-out template, each with the answer expected.
pub fn velmora_held_out() -> Vec<Record> {
    let mut records = Vec::new();
    for template in &TEMPLATES[TEMPLATES.len() - HELD_OUT_TEMPLATES..] {
        for fact in FACTS {
            records.push(chat(&template.replace("{}", fact.names[0]), fact.answer));
        }
    }
    records
}

fn chat(question: &str, answer: &str) -> Record {
    Record::Chat(vec![
        Message::new("user", question),
        Message::new("assistant", answer),
    ])
}

/// Records as JSON lines, the format `read_jsonl` reads.
pub fn to_jsonl(records: &[Record]) -> String {
    let mut out = String::new();
    for record in records {
        let line = match record {
            Record::Chat(messages) => serde_json::json!({ "messages": messages }),
            Record::Text(text) => serde_json::json!({ "text": text }),
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_questions_are_never_trained_on() {
        let train = velmora_train();
        let held = velmora_held_out();
        assert_eq!(held.len(), FACTS.len() * HELD_OUT_TEMPLATES);
        for q in &held {
            assert!(!train.contains(q), "{q:?} is also a training example");
        }
        let questions: std::collections::HashSet<String> = train
            .iter()
            .map(|r| match r {
                Record::Chat(m) => m[0].content.clone(),
                Record::Text(_) => unreachable!(),
            })
            .collect();
        assert_eq!(questions.len(), train.len(), "a training question repeats");
    }
}
