//! Bottleneck adapter layers (Houlsby), the LoRA paper's latency baseline: gradients against finite
//! differences (random non-zero D and U), a fresh adapter leaves the model unchanged, save / load round
//! trips, and bad requests are errors that change nothing.

use lowrank::autograd::{no_grad, F64};
use lowrank::gpt::{Gpt, GptConfig};
use lowrank::lora::adapter_layer::add_bottleneck_adapters;
use lowrank::nn::{load_module, save_module, Module, TensorFile};
use lowrank::tensor::{rng, Tensor};

#[path = "support/whole_model.rs"]
mod whole_model;

fn dev() -> F64 {
    F64::new()
}

const PLACES: [&str; 2] = ["o_proj", "down_proj"];

fn logits(model: &Gpt<F64>) -> Vec<f64> {
    let ids: Vec<u32> = (1..13).collect();
    no_grad(|| model.forward(&ids, 2, 6)).value().to_vec()
}

/// Random non-zero values for every adapter parameter (U = 0 would hide D's gradient).
fn randomize(model: &Gpt<F64>, seed: u64) {
    for (i, (name, p)) in model.named_params().into_iter().enumerate() {
        if name.contains(".adapter.") {
            p.set_value(Tensor::randn(
                p.shape(),
                0.0,
                0.5,
                &mut rng(seed + i as u64),
                &dev(),
            ));
        }
    }
}

#[test]
fn whole_model_loss_gradients_wrt_the_adapters() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let trainable = add_bottleneck_adapters(&mut model, &PLACES, 3, 2).unwrap();
    let config = GptConfig::tiny();
    assert_eq!(trainable, config.n_layers * 2 * 2 * 3 * config.d_model); // 2 places, D and U, m d each
    randomize(&model, 7);
    assert_eq!(model.trainable_params().len(), config.n_layers * 2 * 2);
    assert!(model
        .named_params()
        .iter()
        .all(|(n, p)| p.requires_grad() == n.contains(".adapter.")));
    whole_model::gradcheck_trainable(&model, &[5, 80, 3, 200, 17, 9, 44, 120, 7, 1], 2);
}

#[test]
fn a_fresh_adapter_is_the_base_and_a_trained_one_round_trips() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let base = logits(&model);
    add_bottleneck_adapters(&mut model, &PLACES, 4, 3).unwrap();
    assert_eq!(logits(&model), base, "U = 0: the model starts as the base");
    randomize(&model, 11);
    let adapted = logits(&model);
    assert!(adapted.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3));

    let dir = std::env::temp_dir().join(format!("lowrank-adapter-layer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.safetensors");
    save_module(&model, &file, None).unwrap();
    let mut reloaded = Gpt::new(GptConfig::tiny(), 1, &dev());
    add_bottleneck_adapters(&mut reloaded, &PLACES, 4, 99).unwrap();
    load_module(&reloaded, &TensorFile::open(&file).unwrap()).unwrap();
    assert_eq!(logits(&reloaded), adapted);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_requests_change_nothing() {
    let mut model = Gpt::new(GptConfig::tiny(), 1, &dev());
    let before = model.num_trainable_params();
    for (targets, m) in [(&["o_proj"][..], 0), (&["no_such_proj"][..], 4)] {
        let err = add_bottleneck_adapters(&mut model, targets, m, 1).unwrap_err();
        assert!(err.to_string().contains("bottleneck adapters"), "{err}");
        assert_eq!(model.num_trainable_params(), before);
    }
    add_bottleneck_adapters(&mut model, &["o_proj"], 2, 1).unwrap();
    let err = add_bottleneck_adapters(&mut model, &["o_proj"], 2, 1).unwrap_err();
    assert!(
        err.to_string().contains("already holds an adapter"),
        "{err}"
    );
}
