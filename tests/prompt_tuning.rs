//! Prompt tuning: virtual tokens that equal real tokens' embeddings give exactly the base model's logits
//! on the longer sequence; gradients against finite differences; the base stays frozen; save / load
//! round-trips; bad requests are errors that change nothing.

use lowrank::autograd::{no_grad, F64};
use lowrank::gpt::{Gpt, GptConfig, PromptTuningError};
use lowrank::nn::{load_module, save_module, Module, TensorFile};
use lowrank::tensor::{rng, Tensor};

#[path = "support/whole_model.rs"]
mod whole_model;

fn dev() -> F64 {
    F64::new()
}

fn logits(model: &Gpt<F64>, ids: &[u32], batch: usize) -> Vec<f64> {
    no_grad(|| model.forward(ids, batch, ids.len() / batch))
        .value()
        .to_vec()
}

/// Virtual tokens initialised from tokens u are the base reading `u ++ x`: same logits for x's positions.
#[test]
fn virtual_tokens_are_tokens_the_model_reads_first() {
    let base = Gpt::new(GptConfig::tiny(), 1, &dev());
    let mut tuned = Gpt::new(GptConfig::tiny(), 1, &dev());
    let virtual_ids = [7u32, 200, 31];
    assert_eq!(
        tuned.add_prompt_tuning(3, &virtual_ids).unwrap(),
        3 * GptConfig::tiny().d_model
    );
    assert_eq!(tuned.context_len(), GptConfig::tiny().max_seq_len - 3);
    let (x, y) = ([5u32, 80, 9, 41, 2], [60u32, 61, 62, 63, 64]);
    let ours = logits(&tuned, &[x, y].concat(), 2); // (2, 5, V)
    let vocab = GptConfig::tiny().vocab_size;
    for (row, seq) in [x, y].iter().enumerate() {
        let full = logits(&base, &[&virtual_ids[..], seq].concat(), 1); // (1, 8, V)
        let want = &full[3 * vocab..]; // positions 3..8
        let got = &ours[row * 5 * vocab..(row + 1) * 5 * vocab];
        let diff = want
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-12, "row {row}: {diff}");
    }
}

#[test]
fn gradients_wrt_the_virtual_tokens_and_a_frozen_base() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    model.add_prompt_tuning(2, &[3, 4]).unwrap();
    let p = &model.prompt.as_ref().unwrap().embedding;
    p.set_value(Tensor::randn(p.shape(), 0.0, 0.5, &mut rng(3), &dev()));
    assert_eq!(
        model.trainable_params().len(),
        1,
        "only the virtual tokens train"
    );
    whole_model::gradcheck_trainable(&model, &[5, 80, 3, 200, 17, 9, 44, 120, 7, 1, 60, 2], 2);
}

#[test]
fn saved_virtual_tokens_load_back_and_bad_requests_change_nothing() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let max_seq_len = GptConfig::tiny().max_seq_len;
    let length = |n| PromptTuningError::Length {
        n,
        most: max_seq_len - 1,
        max_seq_len,
    };
    for (n, init, expected) in [
        (0, &[1u32][..], length(0)),
        (max_seq_len, &[1][..], length(max_seq_len)),
        (2, &[][..], PromptTuningError::NoInitTokens),
        (
            2,
            &[3, 999][..],
            PromptTuningError::InitToken {
                token: 999,
                vocab: 256,
            },
        ),
    ] {
        let err = model.add_prompt_tuning(n, init).unwrap_err();
        assert_eq!(err, expected);
        assert!(err.to_string().starts_with("prompt tuning: "), "{err}");
        assert!(model.prompt.is_none() && model.num_trainable_params() == model.num_params());
    }
    model.add_prompt_tuning(2, &[9, 10]).unwrap();
    assert_eq!(
        model.add_prompt_tuning(2, &[9]),
        Err(PromptTuningError::AlreadyAdded(2)),
        "one prompt per model"
    );
    let p = &model.prompt.as_ref().unwrap().embedding;
    p.set_value(Tensor::randn(p.shape(), 0.0, 0.5, &mut rng(4), &dev()));
    let ids: Vec<u32> = (1..7).collect();
    let before = logits(&model, &ids, 1);
    let dir = std::env::temp_dir().join(format!("lowrank-prompt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.safetensors");
    save_module(&model, &file, None).unwrap();
    let mut reloaded = Gpt::new(GptConfig::tiny(), 2, &dev());
    reloaded.add_prompt_tuning(2, &[0]).unwrap();
    load_module(&reloaded, &TensorFile::open(&file).unwrap()).unwrap();
    assert_eq!(logits(&reloaded, &ids, 1), before);
    std::fs::remove_dir_all(&dir).ok();
}
