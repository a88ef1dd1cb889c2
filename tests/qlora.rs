//! QLoRA: 4-bit quantization (NF4 / FP4 / E2M1 / Int4, blocks of 64, double quantization) and LoRA / DoRA trained
//! over a quantized base — levels, packing, error bounds, gradients, and a short end-to-end fine-tune.

use lowrank::autograd::{gradcheck_params, Tolerance, Var, F64};
use lowrank::gpt::{Gpt, GptConfig};
use lowrank::lora::quant::{Absmax, Quantized, BLOCK, DOUBLE_BLOCK, NF4_LEVELS};
use lowrank::lora::{
    load_adapter, quantize_base, save_adapter, LoraConfig, LoraError, LoraModel, QuantConfig,
    QuantType, Targets,
};
use lowrank::nn::{children, AdamW, AdamWConfig, Linear, Module};
use lowrank::tensor::dynamic_map::DynamicMap;
use lowrank::tensor::{rng, Backend, Cpu, Tensor};
use proptest::prelude::*;
use rand_distr::{Distribution, StandardNormal};

/// 8-bit AdamW against bitsandbytes (a module here, not its own test binary: one link less in CI).
#[path = "qlora/adamw8bit.rs"]
mod adamw8bit;

const KINDS: [QuantType; 4] = [
    QuantType::Nf4,
    QuantType::Fp4,
    QuantType::E2m1,
    QuantType::Int4,
];

/// Gaussian weights, as a trained layer's roughly are.
fn normal(n: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut r);
            (std * z) as f32
        })
        .collect()
}

/// The inverse of the standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_ppf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[test]
fn nf4_levels_are_the_normal_quantiles_bitsandbytes_uses() {
    // bitsandbytes' create_normal_map(offset = 0.9677083): 8 positive quantiles from linspace(offset, 0.5, 9),
    // 7 negative ones from linspace(offset, 0.5, 8), an exact zero, all divided by the largest.
    let offset = 0.9677083;
    let linspace = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| offset + (0.5 - offset) * i as f64 / (n - 1) as f64)
            .collect()
    };
    let mut v: Vec<f64> = linspace(9)[..8].iter().map(|&p| normal_ppf(p)).collect();
    v.extend(linspace(8)[..7].iter().map(|&p| -normal_ppf(p)));
    v.push(0.0);
    v.sort_by(f64::total_cmp);
    let max = v[15];
    for (k, (&got, want)) in NF4_LEVELS.iter().zip(v.iter().map(|x| x / max)).enumerate() {
        assert!(
            (got as f64 - want).abs() < 2e-6,
            "level {k}: table {got}, quantile {want}"
        );
    }
    assert_eq!(NF4_LEVELS[7], 0.0, "an exact zero");
    assert_eq!(NF4_LEVELS.iter().filter(|&&l| l < 0.0).count(), 7);
}

proptest! {
    /// Every value decodes to the level nearest to it (ties to the lower level), for every level set.
    #[test]
    fn every_value_maps_to_its_nearest_level(values in prop::collection::vec(-5.0f32..5.0, 1..200)) {
        for kind in KINDS {
            let q = Quantized::new(&values, &[values.len()], kind, false).unwrap();
            let absmax = q.absmax.values();
            let levels = kind.levels();
            for (i, &x) in values.iter().enumerate() {
                let a = absmax[i / BLOCK];
                let v = x / a;
                let chosen = (v - levels[q.code(i) as usize]).abs();
                for (k, &l) in levels.iter().enumerate() {
                    let d = (v - l).abs();
                    prop_assert!(
                        chosen < d || (chosen == d && (q.code(i) as usize) <= k) || chosen - d < 1e-7,
                        "{kind:?}: {x} (scaled {v}) -> level {}, but level {k} = {l} is nearer",
                        levels[q.code(i) as usize]
                    );
                }
            }
        }
    }
}

#[test]
fn two_codes_per_byte_first_in_the_high_nibble() {
    // 1.0 is the top level (15) and -1.0 the bottom one (0) of NF4.
    let q = Quantized::new(&[1.0, -1.0, 0.0], &[3], QuantType::Nf4, false).unwrap();
    assert_eq!(q.codes, vec![0xf0, 0x77]); // [15 | 0], [7 (zero) | padding: the code of 0, as bitsandbytes]
    assert_eq!((q.code(0), q.code(1), q.code(2)), (15, 0, 7));
}

#[test]
fn a_partial_last_block_round_trips_within_half_the_widest_gap() {
    let values = normal(2 * BLOCK + 7, 0.05, 1);
    for kind in KINDS {
        let q = Quantized::new(&values, &[values.len()], kind, false).unwrap();
        assert_eq!(q.codes.len(), values.len().div_ceil(2));
        assert_eq!(q.absmax.values().len(), 3);
        let levels = kind.levels();
        let widest = levels.windows(2).map(|w| w[1] - w[0]).fold(0.0, f32::max);
        let absmax = q.absmax.values();
        for (i, (x, y)) in values.iter().zip(q.dequantize()).enumerate() {
            let bound = absmax[i / BLOCK] * widest / 2.0 + 1e-7;
            assert!((x - y).abs() <= bound, "{kind:?} value {i}: {x} -> {y}");
        }
    }
}

#[test]
fn an_all_zero_block_stays_zero() {
    let mut values = vec![0.0f32; BLOCK];
    values.extend(normal(BLOCK, 1.0, 2));
    for kind in KINDS {
        let q = Quantized::new(&values, &[2, BLOCK], kind, true).unwrap();
        assert!(
            q.dequantize()[..BLOCK].iter().all(|&v| v == 0.0),
            "{kind:?}"
        );
    }
}

#[test]
fn nan_or_infinity_is_an_error_naming_the_index() {
    let mut values = normal(100, 1.0, 3);
    values[42] = f32::NAN;
    let err = Quantized::new(&values, &[100], QuantType::Nf4, false).unwrap_err();
    assert_eq!(err.index, 42);
    values[42] = f32::INFINITY;
    assert!(Quantized::new(&values, &[100], QuantType::Nf4, false)
        .unwrap_err()
        .to_string()
        .contains("index 42"));
}

#[test]
fn double_quantization_keeps_absmax_within_half_a_map_step_and_costs_4_127_bits() {
    let n = BLOCK * DOUBLE_BLOCK * 4;
    let values = normal(n, 0.02, 4);
    let plain = Quantized::new(&values, &[n], QuantType::Nf4, false).unwrap();
    let double = Quantized::new(&values, &[n], QuantType::Nf4, true).unwrap();
    let (exact, approx) = (plain.absmax.values(), double.absmax.values());
    let Absmax::Double { scales, .. } = &double.absmax else {
        panic!("double-quantized")
    };
    // the widest gap between neighbouring values of the dynamic map is 0.014 (near 1)
    let map = &DynamicMap::signed().values;
    let half_gap = map.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max) / 2.0;
    assert!(half_gap < 0.0071, "{half_gap}");
    for (i, (a, b)) in exact.iter().zip(&approx).enumerate() {
        let step = scales[i / DOUBLE_BLOCK] * half_gap;
        assert!(
            (a - b).abs() <= step * 1.0001 + 1e-7,
            "absmax {i}: {a} -> {b}"
        );
    }
    // bits per parameter: 4 + 32/64 without; 4 + 8/64 + 32/(64 * 256) (+ one f32 mean) with
    assert_eq!(plain.bits_per_param(), 4.5);
    let want = 4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0) + 32.0 / n as f64;
    assert!((double.bits_per_param() - want).abs() < 1e-9);
    assert!((double.bits_per_param() - 4.127).abs() < 1e-3);
}

#[test]
fn for_normal_weights_nf4_has_the_lowest_error() {
    let values = normal(BLOCK * 512, 1.0, 5);
    let mse = |kind| {
        let q = Quantized::new(&values, &[values.len()], kind, false).unwrap();
        let d = q.dequantize();
        values
            .iter()
            .zip(&d)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            / values.len() as f64
    };
    let (nf4, fp4, e2m1, int4) = (
        mse(QuantType::Nf4),
        mse(QuantType::Fp4),
        mse(QuantType::E2m1),
        mse(QuantType::Int4),
    );
    // measured: nf4 0.0085, e2m1 0.0113, int4 0.0113, fp4 0.0148 (bitsandbytes' FP4 spends a level on
    // 0.0052 and has none between 0.67 and 1)
    assert!(
        nf4 < fp4.min(e2m1).min(int4),
        "mse nf4 {nf4}, fp4 {fp4}, e2m1 {e2m1}, int4 {int4}"
    );
}

/// LoftQ on random normal weights: the 4-bit base plus the adapter's start `s B A` is strictly closer to W
/// than plain NF4 (one round or three); on a layer with an adapter (r 4, alpha 7, so s != 1) the 4-bit base
/// plus `s B A` gives outputs closer to W's than plain NF4's error; zero rounds is an error.
#[test]
fn loftq_starts_closer_to_the_weight_than_plain_nf4() {
    use lowrank::lora::loftq::loftq_start;
    let dims = [48, 80];
    let values = normal(48 * 80, 0.05, 21);
    let quant = QuantConfig::default();
    for iterations in [1, 3] {
        let start = loftq_start(&values, dims, 4, &quant, iterations).unwrap();
        assert!(
            start.loftq_squared_error < start.plain_squared_error,
            "{iterations} rounds: LoftQ {} vs plain {}",
            start.loftq_squared_error,
            start.plain_squared_error
        );
    }
    // on a model: the adapted q_proj gets a 4-bit LoftQ base, its output is W's within LoftQ's error
    let dev = F64::new();
    let w = Tensor::from_vec(values.iter().map(|&v| v as f64).collect(), dims, &dev).unwrap();
    let mut one = One {
        q_proj: Linear::from_weight(Var::param(w.clone())),
    };
    let config = LoraConfig {
        r: 4,
        alpha: 7.0,
        ..lora(false)
    };
    one.add_adapter("default", &config, 3).unwrap();
    let report = lowrank::lora::loftq(&mut one, &quant, 2).unwrap();
    assert_eq!(report.layers, ["q_proj"]);
    assert!(report.loftq_error() < report.plain_error());
    assert!(
        one.q_proj.compressed_weight().is_some(),
        "the base is now 4-bit"
    );
    let x = Tensor::randn([5, 80], 0.0, 1.0, &mut rng(4), &dev);
    let exact = x.matmul(&w.t()).to_vec();
    let adapted = one.q_proj.forward(&Var::constant(x)).value().to_vec();
    let err: f64 = exact
        .iter()
        .zip(&adapted)
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    let norm: f64 = exact.iter().map(|a| a * a).sum();
    assert!(
        (err / norm).sqrt() < 0.9 * report.plain_error(),
        "output error {}",
        (err / norm).sqrt()
    );
    let err = lowrank::lora::loftq(&mut one, &quant, 0).unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}

/// A lone Linear named `q_proj`, so adapters can target it.
struct One<B: Backend> {
    q_proj: Linear<B>,
}

impl<B: Backend> Module<B> for One<B> {
    children! { "q_proj" => q_proj }
}

fn lora(use_dora: bool) -> LoraConfig {
    LoraConfig {
        r: 2,
        alpha: 3.0,
        use_dora,
        targets: Targets::Names(vec!["q_proj".into()]),
        ..LoraConfig::default()
    }
}

#[test]
fn qlora_layer_gradients_wrt_x_a_b_and_no_weight_gradient() {
    for use_dora in [false, true] {
        let dev = F64::new();
        let mut m = One {
            q_proj: Linear::new(70, 6, 0.5, 1, &dev),
        }; // 420 values: 7 blocks, the last one partial
        let report = quantize_base(&mut m, &QuantConfig::default()).unwrap();
        assert_eq!(report.layers, vec!["q_proj".to_string()]);
        m.add_adapter("a", &lora(use_dora), 2).unwrap();
        for (i, (name, p)) in m.named_params().into_iter().enumerate() {
            assert!(
                name.contains("lora_"),
                "{name} is a parameter of a 4-bit layer"
            );
            let noise = Tensor::randn(p.shape(), 0.0, 0.5, &mut rng(10 + i as u64), &dev);
            p.set_value(&p.value() + &noise);
        }
        m.for_each_lora_layer(&mut |_, w0, layer| {
            layer.get("a").unwrap().freeze_dora_norm(Some(&w0.value()))
        });
        let x = Var::param(Tensor::randn([2, 3, 70], 0.0, 1.0, &mut rng(4), &dev));
        let r = Var::constant(Tensor::randn([2, 3, 6], 0.0, 1.0, &mut rng(5), &dev));
        let mut params = vec![x.clone()];
        params.extend(m.named_params().into_iter().map(|(_, p)| p));
        gradcheck_params(
            || (&m.q_proj.forward(&x) * &r).sum_all(),
            &params,
            Tolerance::default(),
        )
        .unwrap_or_else(|e| panic!("dora={use_dora}: {e}"));
    }
}

#[test]
fn quantizing_a_weight_with_nan_is_an_error_naming_the_layer() {
    let dev = Cpu::<f32>::new();
    let mut m = Gpt::new(GptConfig::tiny(), 1, &dev);
    let w = m.layers[1].mlp.up_proj.weight().param().unwrap().clone();
    let mut v = w.value().to_vec();
    v[3] = f32::NAN;
    w.set_value(Tensor::from_vec(v, w.shape(), &dev).unwrap());
    let err = quantize_base(&mut m, &QuantConfig::default()).unwrap_err();
    assert!(matches!(err, LoraError::Quantize { .. }));
    assert!(
        err.to_string().contains("model.layers.1.mlp.up_proj") && err.to_string().contains("NaN"),
        "{err}"
    );
    assert!(
        m.layers[0].self_attn.q_proj.compressed_weight().is_none(),
        "a failed quantization changes nothing"
    );
}

#[test]
fn qlora_fine_tunes_and_its_adapter_loads_on_the_f32_base() {
    let dev = Cpu::<f32>::new();
    let config = GptConfig {
        d_model: 32,
        n_heads: 2,
        n_kv_heads: 2,
        d_ff: 64,
        max_seq_len: 16,
        ..GptConfig::tiny()
    };
    let mut model = Gpt::new(config.clone(), 7, &dev);
    let before = model.num_params();
    let report = quantize_base(&mut model, &QuantConfig::default()).unwrap();
    assert_eq!(report.layers.len(), 2 * 7); // q, k, v, o, gate, up, down per layer; lm_head stays f32
    assert!(
        report.quantized_bytes * 100 <= 15 * report.f32_bytes,
        "{}",
        report.bits_per_param()
    );
    assert!(
        model.num_params() < before,
        "4-bit weights are not parameters"
    );
    // the report names its format and measures its error: NF4 of normal weights is within about 10%
    assert_eq!(report.config, QuantConfig::default());
    assert_eq!(
        report.config.to_string(),
        "NF4 (blocks of 64), double-quantized"
    );
    let err = report.relative_error();
    assert!(err > 0.02 && err < 0.15, "relative error {err}");
    model
        .add_adapter(
            "default",
            &LoraConfig {
                targets: Targets::AllLinear,
                ..LoraConfig::default()
            },
            3,
        )
        .unwrap();
    let mut opt = AdamW::new(
        model.trainable_params(),
        AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        },
    );
    // a short repeating text: easy to fit
    let text: Vec<u32> = b"the cat sat on the mat. "
        .iter()
        .cycle()
        .take(4 * 16 + 1)
        .map(|&b| b as u32)
        .collect();
    let (ids, targets) = (&text[..64], &text[1..65]);
    let losses: Vec<f64> = (0..30)
        .map(|_| {
            let loss = model.loss(ids, targets, 4, 16);
            loss.backward().unwrap();
            opt.step();
            opt.zero_grad();
            loss.value().to_scalar()
        })
        .collect();
    assert!(losses[29] < losses[0] - 0.3, "the loss falls: {losses:?}");

    let dir = std::env::temp_dir().join(format!("lowrank-qlora-test-{}", std::process::id()));
    save_adapter(&model, "default", &dir).unwrap();
    let mut f32_base = Gpt::new(config, 7, &dev);
    load_adapter(&mut f32_base, &dir, "default").unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let on_f32: std::collections::BTreeMap<String, Vec<f32>> = f32_base
        .named_params()
        .into_iter()
        .map(|(n, p)| (n, p.value().to_vec()))
        .collect();
    let mut compared = 0;
    for (name, p) in model.named_params() {
        if name.contains("lora_") {
            assert!(
                on_f32[&name] == p.value().to_vec(),
                "{name} differs after loading"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 2 * 2 * 7); // A and B on the 7 Linear layers of each of 2 blocks
                                     // merged on the 4-bit base: the base is expanded to f32 and merged; outputs agree with unmerged.
    let logits = |m: &Gpt<Cpu<f32>>| {
        lowrank::autograd::no_grad(|| m.forward(ids, 4, 16))
            .value()
            .to_vec()
    };
    let unmerged = logits(&model);
    model.merge_adapter().unwrap();
    assert!(model.layers[0]
        .self_attn
        .q_proj
        .compressed_weight()
        .is_none());
    let diff = unmerged
        .iter()
        .zip(logits(&model))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "merged vs unmerged: {diff}");
}

/// bitsandbytes' own NF4 quantization (tests/fixtures/make_bnb_nf4.py wrote it): lowrank's levels, packed
/// codes (nibble order, tie rule, partial last block, zero block) and absmax are identical, also on the
/// adversarial tensor: scaled midpoints and the floats one ulp either side (where multiplying by 1 / absmax
/// and dividing by absmax disagree), absmax below the 1e-38 floor and near f32's top, an odd length.
#[test]
fn nf4_is_bit_identical_to_bitsandbytes() {
    let fixture = bitsandbytes_fixture();
    assert_eq!(f32s(&fixture["levels"]), NF4_LEVELS.to_vec());
    assert_matches_bitsandbytes(&fixture, QuantType::Nf4);
    assert_matches_bitsandbytes(&fixture["adversarial"], QuantType::Nf4);
}

/// bitsandbytes' FP4: its 16 values in code order (sign bit on top), and the codes of normal values, of
/// every midpoint between neighbouring levels, and of the adversarial tensor, byte for byte.
#[test]
fn fp4_is_bit_identical_to_bitsandbytes() {
    let fixture = bitsandbytes_fixture();
    let theirs = f32s(&fixture["fp4_levels"]);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(QuantType::Fp4.levels()), bits(&theirs), "to the bit");
    assert_matches_bitsandbytes(&fixture["fp4"], QuantType::Fp4);
}

/// Double quantization as bitsandbytes' `quantize_4bit(compress_statistics=True)`: the signed dynamic map,
/// the offset (the absmax values' mean), the 8-bit absmax codes and their per-256 scales, the 4-bit codes
/// and the dequantized absmax and weights, all identical, on 514 blocks (two full blocks of 256 absmax
/// values and a partial one, a zero block, outliers), rebuilt from the script's integer formula.
#[test]
fn double_quantization_is_bit_identical_to_bitsandbytes() {
    let fixture = bitsandbytes_fixture();
    let f = &fixture["double"];
    assert_eq!(
        DynamicMap::signed().values.to_vec(),
        f32s(&f["dynamic_map"])
    );
    let n = f["n"].as_u64().unwrap() as usize;
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let u = (i * 2_654_435_761) % (1 << 32);
            let w = ((u % 20001) as f32 - 10000.0) / 10000.0 * 0.02;
            let w = if i % 61 == 0 { w * 40.0 } else { w };
            if (64 * 100..64 * 101).contains(&i) {
                0.0
            } else {
                w
            }
        })
        .collect();
    let q = Quantized::new(&values, &[n], QuantType::Nf4, true).unwrap();
    let Absmax::Double {
        codes,
        scales,
        offset,
    } = &q.absmax
    else {
        panic!("double-quantized")
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(*offset, f["offset"].as_f64().unwrap() as f32, "offset");
    assert_eq!(*scales, f32s(&f["absmax_scales"]), "nested scales");
    assert_eq!(
        hex(codes),
        f["absmax_codes_hex"].as_str().unwrap(),
        "absmax codes"
    );
    assert_eq!(
        hex(&q.codes),
        f["codes_hex"].as_str().unwrap(),
        "4-bit codes"
    );
    assert_eq!(q.absmax.values(), f32s(&f["absmax"]), "dequantized absmax");
    let head = f32s(&f["dequantized_head"]);
    assert_eq!(
        q.dequantize()[..head.len()],
        head[..],
        "dequantized weights"
    );
}

fn bitsandbytes_fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/bnb_nf4.json")).unwrap()
}

/// A JSON array of numbers as f32 (each written as the exact f64 of an f32).
fn f32s(array: &serde_json::Value) -> Vec<f32> {
    let numbers = array.as_array().expect("an array");
    numbers.iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn assert_matches_bitsandbytes(fixture: &serde_json::Value, kind: QuantType) {
    let floats = |key: &str| f32s(&fixture[key]);
    let values = floats("values");
    let q = Quantized::new(&values, &[values.len()], kind, false).unwrap();
    let codes: Vec<u8> = fixture["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    for (i, (ours, theirs)) in q.codes.iter().zip(&codes).enumerate() {
        assert_eq!(
            ours,
            theirs,
            "byte {i} (values {} and {}): lowrank {ours:#04x}, bitsandbytes {theirs:#04x}",
            values[2 * i],
            values.get(2 * i + 1).copied().unwrap_or(f32::NAN)
        );
    }
    assert_eq!(q.codes.len(), codes.len());
    assert_eq!(q.absmax.values(), floats("absmax"));
    assert_eq!(q.dequantize(), floats("dequantized"));
}

/// A compressed weight that counts its expansions.
struct Counted {
    w: Tensor<Cpu<f32>>,
    expansions: std::rc::Rc<std::cell::Cell<usize>>,
}

impl lowrank::nn::CompressedWeight<Cpu<f32>> for Counted {
    fn dims(&self) -> [usize; 2] {
        [self.w.dims()[0], self.w.dims()[1]]
    }
    fn decompress(&self, _: &Cpu<f32>) -> Tensor<Cpu<f32>> {
        self.expansions.set(self.expansions.get() + 1);
        self.w.clone()
    }
    fn size_in_bytes(&self) -> usize {
        0
    }
}

/// A LoRA-adapted layer on a compressed base expands the base weight once for the forward product and once
/// for backward's `dx = g W` (a full-precision copy is never kept between the two), not for its shape;
/// switching adapters expands nothing; and the compressed weight offers no parameter to `set_value` into.
#[test]
fn an_adapted_compressed_layer_expands_its_weight_once_per_pass() {
    let dev = Cpu::<f32>::new();
    let expansions = std::rc::Rc::new(std::cell::Cell::new(0));
    for (use_dora, per_step) in [(false, 2), (true, 3)] {
        let mut m = One {
            q_proj: Linear::new(6, 5, 0.5, 1, &dev),
        };
        let w = m.q_proj.weight().value();
        m.q_proj.set_compressed_weight(std::rc::Rc::new(Counted {
            w,
            expansions: expansions.clone(),
        }));
        assert!(
            m.q_proj.weight().param().is_none(),
            "no parameter behind a 4-bit weight"
        );
        let config = LoraConfig {
            r: 2,
            alpha: 3.0,
            use_dora,
            targets: Targets::Names(vec!["q_proj".into()]),
            ..LoraConfig::default()
        };
        m.add_adapter("a", &config, 2).unwrap();
        m.add_adapter("b", &config, 3).unwrap();
        expansions.set(0);
        m.set_active_adapter("a").unwrap();
        assert_eq!(expansions.get(), 0, "switching adapters expands nothing");
        let x = Var::param(Tensor::randn([3, 6], 0.0, 1.0, &mut rng(4), &dev));
        m.q_proj.forward(&x).sum_all().backward().unwrap();
        assert!(x.grad().is_some());
        // DoRA also reads W0 for its row norm (detached): one more
        assert_eq!(expansions.get(), per_step, "use_dora {use_dora}");
    }
}
