//! 8-bit AdamW (`AdamW::int8`, bitsandbytes' AdamW8bit) against bitsandbytes itself
//! (tests/fixtures/make_bnb_adamw8bit.py: five steps on CPU on fixed gradients): the parameters after the
//! first and the fifth step, and the final 8-bit states, within bitsandbytes' own quantization error;
//! a small parameter keeps f32 moments; paged and on-device 8-bit states train alike.

use lowrank::autograd::Var;
use lowrank::nn::{AdamW, AdamWConfig};
use lowrank::tensor::dynamic_map::DynamicMap;
use lowrank::tensor::{Cpu, Tensor};
use serde_json::Value;

type Dev = Cpu<f32>;

const SIZES: [usize; 2] = [4500, 300];

/// The script's start: ((i * 7919) mod 20001 - 10000) / 10000 * 0.1.
fn start(n: usize, offset: usize) -> Vec<f32> {
    (offset..offset + n)
        .map(|i| ((i as i64 * 7919) % 20001 - 10000) as f32 / 10000.0 * 0.1)
        .collect()
}

/// The script's gradient at step t: every 97th one times 30.
fn gradient(n: usize, offset: usize, t: u64) -> Vec<f32> {
    (offset..offset + n)
        .map(|i| {
            let u = (i as u64 * 2_654_435_761 + 40503 * t) % (1 << 32);
            let g = ((u % 20001) as i64 - 10000) as f32 / 10000.0 * 0.01;
            if i % 97 == 0 {
                g * 30.0
            } else {
                g
            }
        })
        .collect()
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/bnb_adamw8bit.json")).unwrap()
}

fn hex_f32s(hex: &str) -> Vec<f32> {
    (0..hex.len() / 8)
        .map(|k| {
            let word = u32::from_str_radix(&hex[8 * k..8 * k + 8], 16).unwrap();
            f32::from_bits(word.swap_bytes()) // little-endian bytes written as hex
        })
        .collect()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).unwrap())
        .collect()
}

/// Runs `steps` steps of 8-bit AdamW (paged or not) on the script's parameters; returns the optimizer and
/// the parameters after the first step and at the end.
fn train(steps: u64, paged: bool) -> (AdamW<Dev>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let dev = Dev::new();
    let offsets = [0, SIZES[0]];
    let params: Vec<Var<Dev>> = SIZES
        .iter()
        .zip(offsets)
        .map(|(&n, o)| Var::param(Tensor::from_vec(start(n, o), [n], &dev).unwrap()))
        .collect();
    let config = AdamWConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut opt = AdamW::new(params.clone(), config).int8();
    if paged {
        opt = opt.paged();
    }
    let mut first = Vec::new();
    for t in 1..=steps {
        for ((p, &n), o) in params.iter().zip(&SIZES).zip(offsets) {
            // d/dp sum(p * g) = g
            let g = Tensor::from_vec(gradient(n, o, t), [n], &dev).unwrap();
            p.mul(&Var::constant(g)).sum_all().backward().unwrap();
        }
        opt.step();
        opt.zero_grad();
        if t == 1 {
            first = params.iter().map(|p| p.value().to_vec()).collect();
        }
    }
    let last = params.iter().map(|p| p.value().to_vec()).collect();
    (opt, first, last)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn adamw8bit_follows_bitsandbytes() {
    let f = fixture();
    let unsigned: Vec<f32> = f["unsigned_map"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(
        DynamicMap::unsigned().values.to_vec(),
        unsigned,
        "the unsigned map, bit for bit"
    );
    let (opt, first, last) = train(5, false);
    let theirs = |k: usize| -> Vec<Vec<f32>> {
        f["params_hex"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hex_f32s(h.as_str().unwrap()))
            .collect()
    };
    let (first_theirs, last_theirs) = (theirs(0), theirs(1));
    // parameters: a few ulps apart (the f32 operations' order differs), after one step and after five
    for i in 0..2 {
        let (d1, d5) = (
            max_abs_diff(&first[i], &first_theirs[i]),
            max_abs_diff(&last[i], &last_theirs[i]),
        );
        assert!(
            d1 < 2e-7 && d5 < 2e-7,
            "param {i}: step 1 off by {d1}, step 5 by {d5}"
        );
    }
    // the 8-bit states decode to bitsandbytes' within a small fraction of one map step (0.7% of the
    // block's absmax near the top): the same codes, up to the rounding of the moments themselves
    let (m, v) = opt.moments(0).unwrap();
    let decode = |codes: &str, absmax: &str, map: &DynamicMap| -> Vec<f32> {
        let absmax: Vec<f32> = f[absmax]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        hex_bytes(f[codes].as_str().unwrap())
            .iter()
            .enumerate()
            .map(|(i, &c)| map.values[c as usize] * absmax[i / 256])
            .collect()
    };
    let peak = |x: &[f32]| x.iter().fold(0.0f32, |a, b| a.max(b.abs()));
    for (name, ours, theirs) in [
        (
            "m",
            m.to_vec(),
            decode("m_codes_hex", "m_absmax", DynamicMap::signed()),
        ),
        (
            "v",
            v.to_vec(),
            decode("v_codes_hex", "v_absmax", DynamicMap::unsigned()),
        ),
    ] {
        let diff = max_abs_diff(&ours, &theirs);
        assert!(diff <= 1e-3 * peak(&theirs), "{name}: off by {diff}");
    }
    // 4500 values: a byte per moment and value, an f32 absmax per 256; the 300-value parameter keeps f32
    assert_eq!(opt.state_bytes(), 2 * (4500 + 4 * 18) + 2 * 4 * 300);
}

/// Paging the 8-bit states to the host changes where they are, not what they compute.
#[test]
fn paged_8bit_states_live_on_the_host_and_train_the_same() {
    let (on_device, _, a) = train(3, false);
    let (paged, _, b) = train(3, true);
    assert_eq!(a, b);
    assert_eq!(paged.device_state_bytes(), 0);
    assert_eq!(paged.host_state_bytes(), on_device.state_bytes());
    assert_eq!(
        on_device.moments(0).unwrap().0.to_vec(),
        paged.moments(0).unwrap().0.to_vec()
    );
}
