//! Fine-tuning data on the tiny GGUF fixture model (its BPE tokenizer and ChatML template): JSON lines
//! read or refused line by line, assistant-only targets, right-padded batches, and the masked loss
//! against one computed by hand from the logits (CPU and wgpu, fused and plain kernels).

use lowrank::autograd::no_grad;
use lowrank::gpt::{
    encode_chat, encode_records, read_jsonl, velmora_held_out, velmora_train, DataError,
    ExampleSet, Kernels, Message, Pretrained, Record, Tokenizer, IGNORE,
};
use lowrank::tensor::{Backend, Cpu, Element};
use lowrank::wgpu::test_device;
use std::path::{Path, PathBuf};

#[path = "support/models.rs"]
mod models;

/// A file in a fresh temporary folder holding `text`.
fn file_with(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowrank-chat-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn read_error(name: &str, text: &str) -> String {
    let path = file_with(name, text);
    let err = read_jsonl(&path).expect_err("bad data is refused");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    message
}

#[test]
fn good_lines_are_read_and_blank_lines_skipped() {
    let path = file_with(
        "good.jsonl",
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, \
         {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}]}\n\
         \n   \n{\"text\": \"Plain text.\"}\n",
    );
    let records = read_jsonl(&path).unwrap();
    assert_eq!(
        records,
        [
            Record::Chat(vec![
                Message::new("system", "Be brief."),
                Message::new("user", "Hi"),
                Message::new("assistant", "Hello."),
            ]),
            Record::Text("Plain text.".into()),
        ]
    );
}

#[test]
fn bad_data_is_refused_with_the_line_and_the_problem() {
    let ok = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}]}";
    let cases = [
        ("empty.jsonl", String::new(), "no examples"),
        ("blank.jsonl", "\n  \n".into(), "no examples"),
        (
            "json.jsonl",
            format!("{ok}\n{ok}\n{{\"messages\": [}}\n"),
            "line 3: invalid JSON",
        ),
        (
            "content.jsonl",
            format!("{ok}\n{{\"messages\": [{{\"role\": \"user\"}}]}}\n"),
            "line 2: message 1: no \"content\"",
        ),
        (
            "role.jsonl",
            "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}".into(),
            "line 1: message 1: unknown role \"wizard\"",
        ),
        (
            "number.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": 7}]}".into(),
            "line 1: message 1: \"content\" must be a string",
        ),
        (
            "no_answer.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}".into(),
            "line 1: the conversation has no assistant message",
        ),
        (
            "both.jsonl",
            "{\"messages\": [], \"text\": \"x\"}".into(),
            "line 1: a line holds \"messages\" or \"text\", not both",
        ),
        (
            "neither.jsonl",
            "{}".into(),
            "line 1: expected {\"messages\"",
        ),
        (
            "unknown.jsonl",
            "{\"txt\": \"x\"}".into(),
            "line 1: invalid JSON: unknown field `txt`",
        ),
    ];
    for (name, text, expected) in cases {
        let message = read_error(name, &text);
        assert!(message.contains(expected), "{name}: {message}");
    }
    let missing = std::env::temp_dir().join("lowrank-no-such-data.jsonl");
    assert!(matches!(read_jsonl(&missing), Err(DataError::Io { .. })));
}

fn tiny() -> Option<Pretrained<Cpu<f64>>> {
    let path = models::model_file(models::TINY)?;
    Some(Pretrained::load(&path, &Cpu::<f64>::new()).unwrap())
}

fn conversation() -> Vec<Message> {
    vec![
        Message::new("system", "You answer in one word."),
        Message::new("user", "What colour is the sky?"),
        Message::new("assistant", "Blue."),
        Message::new("user", "And grass?"),
        Message::new("assistant", "Green, mostly."),
    ]
}

/// The targets are exactly the assistant's answers with their end-of-turn markers, and the ids are the
/// whole rendered conversation's ids.
#[test]
fn only_assistant_turns_are_targets() {
    let Some(p) = tiny() else { return };
    let messages = conversation();
    let ex = encode_chat(&messages, &p.tokenizer, &p.chat).unwrap();
    let whole = p.chat.render(&messages, false).unwrap();
    assert_eq!(ex.ids, p.tokenizer.encode(&whole));
    let counted: Vec<u32> = ex
        .ids
        .iter()
        .zip(&ex.counted)
        .filter(|(_, &c)| c)
        .map(|(&id, _)| id)
        .collect();
    assert_eq!(
        p.tokenizer.decode(&counted),
        "Blue.<|im_end|>\nGreen, mostly.<|im_end|>\n"
    );
    // the user's question and the system prompt are never targets
    let first_target = ex.counted.iter().position(|&c| c).unwrap();
    let prompt = p.tokenizer.decode(&ex.ids[..first_target]);
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    assert!(prompt.contains("What colour is the sky?"));
}

#[test]
fn long_conversations_are_truncated_and_texts_split() {
    let Some(p) = tiny() else { return };
    let messages = conversation();
    let full = encode_chat(&messages, &p.tokenizer, &p.chat).unwrap();
    let first_target = full.counted.iter().position(|&c| c).unwrap();
    let records = vec![Record::Chat(messages.clone())];
    // cut inside the first answer: kept, shorter
    let cut = encode_records(&records, &p.tokenizer, &p.chat, first_target + 2).unwrap();
    assert_eq!((cut.examples.len(), cut.truncated, cut.dropped), (1, 1, 0));
    assert_eq!(cut.examples[0].ids, full.ids[..first_target + 2]);
    // cut before any answer: nothing to learn, left out (and counted)
    let none = encode_records(&records, &p.tokenizer, &p.chat, first_target).unwrap();
    assert_eq!(
        (none.examples.len(), none.truncated, none.dropped),
        (0, 1, 1)
    );
    // a text becomes overlapping pieces in which every token after the very first is a target once
    let text = "one two three four five six seven eight nine ten eleven twelve";
    let ids = p.tokenizer.encode(text);
    let pieces = encode_records(&[Record::Text(text.into())], &p.tokenizer, &p.chat, 4).unwrap();
    assert!(pieces.examples.iter().all(|e| e.ids.len() <= 4));
    let targets: usize = pieces.examples.iter().map(|e| e.ids.len() - 1).sum();
    assert_eq!(targets, ids.len() - 1);
    assert_eq!(pieces.examples[0].ids, ids[..4]);
}

/// Two examples of different lengths: the batch is right-padded, padding and prompts are IGNORE, and
/// the model's loss is the mean over the counted positions of -log softmax(logits)[target], computed
/// here from the logits.
fn masked_loss_is_the_hand_computed_one<B: Backend>(dev: &B, tol: f64) {
    let Some(path) = models::model_file(models::TINY) else {
        return;
    };
    let mut p = Pretrained::load(&path, dev).unwrap();
    let records = vec![
        Record::Chat(vec![
            Message::new("user", "Sky?"),
            Message::new("assistant", "Blue."),
        ]),
        Record::Chat(vec![
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello there, my friend."),
        ]),
    ];
    // inputs are all but the last id: at most the model's context
    let max_len = p.model.config.max_seq_len + 1;
    let encoded = encode_records(&records, &p.tokenizer, &p.chat, max_len).unwrap();
    assert_eq!((encoded.examples.len(), encoded.truncated), (2, 0));
    let set = ExampleSet {
        examples: encoded.examples,
        pad: 0,
    };
    let batch = set.batch_of(&[0, 1]);
    let (n0, n1) = (set.examples[0].ids.len(), set.examples[1].ids.len());
    assert_eq!(batch.seq, n0.max(n1) - 1);
    let short = if n0 < n1 { 0 } else { 1 };
    let padded = &batch.targets[short * batch.seq..(short + 1) * batch.seq];
    assert!(padded[set.examples[short].ids.len() - 1..]
        .iter()
        .all(|&t| t == IGNORE));

    let vocab = p.model.config.vocab_size;
    let logits: Vec<f64> = no_grad(|| p.model.forward(&batch.inputs, batch.batch, batch.seq))
        .value()
        .to_vec()
        .into_iter()
        .map(|v| v.to_f64())
        .collect();
    let (mut sum, mut count) = (0.0, 0);
    for (row, &t) in logits.chunks(vocab).zip(&batch.targets) {
        if t == IGNORE {
            continue;
        }
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        sum += lse - row[t as usize];
        count += 1;
    }
    let expected_targets: usize = set.examples.iter().map(|e| e.targets()).sum();
    assert_eq!(count, expected_targets);
    let by_hand = sum / count as f64;
    for kernels in [Kernels::Fused, Kernels::Plain] {
        p.model.kernels = kernels;
        let loss = no_grad(|| {
            p.model
                .loss(&batch.inputs, &batch.targets, batch.batch, batch.seq)
        })
        .value()
        .to_vec()[0]
            .to_f64();
        assert!(
            (loss - by_hand).abs() < tol,
            "{kernels:?}: loss {loss} vs {by_hand} by hand"
        );
    }
}

#[test]
fn masked_loss_is_the_hand_computed_one_on_cpu() {
    masked_loss_is_the_hand_computed_one(&Cpu::<f64>::new(), 1e-10);
    masked_loss_is_the_hand_computed_one(&Cpu::<f32>::new(), 1e-4);
}

#[test]
fn masked_loss_is_the_hand_computed_one_on_wgpu() {
    if let Some(dev) = test_device() {
        masked_loss_is_the_hand_computed_one(&dev, 1e-4);
    }
}

/// The shipped task files are what `lowrank::gpt::facts` writes (`LOWRANK_WRITE_DATA=1` rewrites them).
#[test]
fn shipped_velmora_files_are_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/velmora");
    for (name, records) in [
        ("train.jsonl", velmora_train()),
        ("heldout.jsonl", velmora_held_out()),
    ] {
        let path = dir.join(name);
        let text = lowrank::gpt::to_jsonl(&records);
        if std::env::var("LOWRANK_WRITE_DATA").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &text).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).unwrap();
        assert!(
            shipped == text,
            "{} is not what lowrank::gpt::facts generates: rerun with LOWRANK_WRITE_DATA=1",
            path.display()
        );
        assert_eq!(read_jsonl(&path).unwrap(), records);
    }
}
