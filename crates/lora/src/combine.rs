//! Combining adapters into a new one (PEFT's `add_weighted_adapter`, with its names and its arithmetic).
//!
//! Adapters `i` with weights `w_i` and scales `s_i` (alpha / r) on the same base. Two families:
//!
//! ```text
//! on the factors (same r; the new adapter has r, alpha = r, so its scale is 1):
//!     A = merge_i( sign(w_i s_i) sqrt|w_i s_i| A_i ),   B = merge_i( sqrt|w_i s_i| B_i )
//! cat: A = [w_i s_i A_i] stacked (sum of the ranks), B = [B_i] side by side:  B A = sum_i w_i s_i B_i A_i
//! on the updates (`_svd`, and `svd`): dW = merge_i( w_i, s_i B_i A_i ), then its truncated SVD
//!     dW ≈ U_k S_k Vt_k:   B = U_k S_k,  A = Vt_k       (k = svd_rank, default the largest r)
//! ```
//!
//! `merge` is one of (Yadav et al., 2023, TIES; Yu et al., 2024, DARE):
//! - **linear** (task arithmetic): `sum_i w_i t_i`;
//! - **magnitude_prune**: keep each tensor's `density` fraction of largest |values|, then the weighted sum;
//! - **ties**: trim as magnitude_prune; elect a sign per entry (`total`: the sign of `sum_i t_i`;
//!   `frequency`: of `sum_i sign(t_i)`); disjoint merge: the mean of the weighted entries that agree with it;
//! - **dare_linear** / **dare_ties**: drop each entry with probability `1 - density` and rescale the rest by
//!   `1 / density`, then the weighted sum / TIES' election and disjoint merge.
//!
//! Note that the first family combines A's and B's separately, so its `B A` is not the weighted sum of the
//! updates (cross terms `B_i A_j` appear): that is PEFT's definition, kept here; `cat` and the `_svd` forms
//! combine the updates themselves.

use crate::model::{lora_layer_mut, AdapterState};
use crate::{linalg, LoraConfig, LoraError, LoraModel, Targets};
use lowrank_tensor::{Backend, Element, Tensor};

/// How the adapters are combined (PEFT's `combination_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combination {
    Linear,
    Cat,
    Svd,
    Ties,
    TiesSvd,
    DareLinear,
    DareTies,
    DareLinearSvd,
    DareTiesSvd,
    MagnitudePrune,
    MagnitudePruneSvd,
}

/// The merge applied to a list of same-shaped tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Merge {
    Linear,
    Ties,
    DareLinear,
    DareTies,
    MagnitudePrune,
}

const NAMES: [(&str, Combination); 11] = [
    ("linear", Combination::Linear),
    ("cat", Combination::Cat),
    ("svd", Combination::Svd),
    ("ties", Combination::Ties),
    ("ties_svd", Combination::TiesSvd),
    ("dare_linear", Combination::DareLinear),
    ("dare_ties", Combination::DareTies),
    ("dare_linear_svd", Combination::DareLinearSvd),
    ("dare_ties_svd", Combination::DareTiesSvd),
    ("magnitude_prune", Combination::MagnitudePrune),
    ("magnitude_prune_svd", Combination::MagnitudePruneSvd),
];

impl Combination {
    /// PEFT's name, e.g. `dare_ties_svd`.
    pub fn parse(name: &str) -> Result<Self, LoraError> {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                LoraError::InvalidConfig(format!(
                    "unknown combination_type `{name}` (one of {})",
                    known.join(", ")
                ))
            })
    }

    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(_, c)| *c == self).expect("listed").0
    }

    /// The merge, and whether it runs on the updates followed by an SVD (`None` for `cat`).
    fn merge(self) -> Option<(Merge, bool)> {
        use Combination::*;
        Some(match self {
            Cat => return None,
            Linear => (Merge::Linear, false),
            Svd => (Merge::Linear, true),
            Ties => (Merge::Ties, false),
            TiesSvd => (Merge::Ties, true),
            DareLinear => (Merge::DareLinear, false),
            DareTies => (Merge::DareTies, false),
            DareLinearSvd => (Merge::DareLinear, true),
            DareTiesSvd => (Merge::DareTies, true),
            MagnitudePrune => (Merge::MagnitudePrune, false),
            MagnitudePruneSvd => (Merge::MagnitudePrune, true),
        })
    }
}

/// How TIES elects each entry's sign (PEFT's `majority_sign_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MajoritySign {
    /// The sign of the sum of the entries.
    Total,
    /// The sign held by more tensors.
    Frequency,
}

/// What to combine, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedAdapter {
    pub adapters: Vec<String>,
    pub weights: Vec<f64>,
    pub combination: Combination,
    /// The fraction of entries kept by the pruning methods, in (0, 1].
    pub density: f64,
    /// The new rank of the `_svd` forms (default: the largest rank among the adapters).
    pub svd_rank: Option<usize>,
    pub majority_sign: MajoritySign,
}

/// DARE's drop masks: given a tensor's length and the density, 1.0 where an entry is kept, 0.0 where it is
/// dropped. Called once per pruned tensor, in the order PEFT draws its masks.
pub type MaskSource<'a> = dyn FnMut(usize, f64) -> Vec<f64> + 'a;

/// Masks drawn from `seed` (each entry kept with probability `density`, by `counter_rng`).
pub fn random_masks(seed: u64) -> impl FnMut(usize, f64) -> Vec<f64> {
    let mut draw = 0u64;
    move |n, density| {
        draw += 1;
        let key = seed ^ draw.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..n)
            .map(|i| {
                let u = lowrank_tensor::counter_rng::hashed_uniform(key, i as u32) as f64;
                if u < density {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }
}

/// An adapted layer: its path, its weight's (out, in), and each requested adapter's factors (if it has it).
type Layer = (String, [usize; 2], Vec<Option<Factors>>);

/// One adapter's factors on one layer, in f64 on the host: A (r, in), B (out, r), its scale.
struct Factors {
    a: Vec<f64>,
    b: Vec<f64>,
    r: usize,
    scale: f64,
}

/// Adds adapter `name` combining `spec.adapters` (PEFT's `add_weighted_adapter`): on every layer that has
/// at least one of them, the new A and B per the module docs. The new adapter has the first adapter's
/// settings with r = alpha = the new rank; it is not made active, and it does not train. Refused, changing
/// nothing: an unknown or repeated name, weights and adapters of different lengths, a density outside
/// (0, 1], different ranks for a factor-wise method, DoRA, lora_bias or modules_to_save adapters (PEFT
/// combines none of those three parts), an SVD rank above a layer's.
pub fn add_weighted_adapter<B: Backend, M: LoraModel<B> + ?Sized>(
    model: &mut M,
    spec: &WeightedAdapter,
    name: &str,
    masks: &mut MaskSource<'_>,
) -> Result<(), LoraError> {
    let invalid = |msg: String| {
        Err(LoraError::InvalidConfig(format!(
            "add_weighted_adapter: {msg}"
        )))
    };
    if spec.adapters.is_empty() || spec.adapters.len() != spec.weights.len() {
        return invalid(format!(
            "{} adapters and {} weights: give one weight per adapter, at least one",
            spec.adapters.len(),
            spec.weights.len()
        ));
    }
    let existing = model.adapter_names();
    if existing.iter().any(|n| n == name) {
        return Err(LoraError::DuplicateAdapter(name.into()));
    }
    if let Some(unknown) = spec.adapters.iter().find(|a| !existing.contains(a)) {
        return Err(LoraError::UnknownAdapter {
            name: unknown.clone(),
            existing,
        });
    }
    // one adapter can only be scaled (PEFT turns any method into linear then)
    let combination = if spec.adapters.len() == 1 {
        Combination::Linear
    } else {
        spec.combination
    };
    let merge = combination.merge();
    let prunes = matches!(merge, Some((m, _)) if m != Merge::Linear);
    if prunes && !(spec.density > 0.0 && spec.density <= 1.0) {
        return invalid(format!("density {} is outside (0, 1]", spec.density));
    }
    // each adapter's config (from any of its layers) and the layers' factors
    let mut configs: Vec<Option<LoraConfig>> = vec![None; spec.adapters.len()];
    let mut layers: Vec<Layer> = Vec::new();
    model.for_each_lora_layer(&mut |path, weight, layer| {
        let factors: Vec<Option<Factors>> = spec
            .adapters
            .iter()
            .enumerate()
            .map(|(i, adapter)| {
                let w = layer.get(adapter)?;
                configs[i].get_or_insert_with(|| w.config.clone());
                let host = |t: Tensor<B>| t.to_vec().into_iter().map(|v| v.to_f64()).collect();
                Some(Factors {
                    a: host(w.a.value()),
                    b: host(w.b.value()),
                    r: w.rank(),
                    scale: w.scaling(),
                })
            })
            .collect();
        if factors.iter().any(Option::is_some) {
            let dims = weight.dims();
            layers.push((path.to_string(), [dims[0], dims[1]], factors));
        }
    });
    let configs: Vec<LoraConfig> = configs.into_iter().map(|c| c.expect("exists")).collect();
    if let Some((adapter, c)) = spec
        .adapters
        .iter()
        .zip(&configs)
        .find(|(_, c)| c.use_dora || c.lora_bias || !c.modules_to_save.is_empty())
    {
        let part = if c.use_dora {
            "DoRA's magnitude"
        } else if c.lora_bias {
            "lora_bias"
        } else {
            "modules_to_save"
        };
        return invalid(format!(
            "adapter `{adapter}` has {part}, which cannot be combined: only LoRA's A and B are"
        ));
    }
    let ranks: Vec<usize> = layers
        .iter()
        .flat_map(|(_, _, f)| f.iter().flatten().map(|f| f.r))
        .collect();
    let max_rank = ranks.iter().copied().max().unwrap_or(0);
    let new_rank = match merge {
        None => per_adapter_ranks(&layers, spec.adapters.len()),
        Some((_, true)) => spec.svd_rank.unwrap_or(max_rank),
        Some((_, false)) => {
            if ranks.iter().any(|&r| r != max_rank) {
                return invalid(format!(
                    "{} combines the factors themselves, so every adapter needs the same r (found {:?})",
                    combination.name(),
                    ranks
                ));
            }
            max_rank
        }
    };
    if let Some((path, [out, inp], _)) = layers.iter().find(|(_, [o, i], _)| new_rank > *o.min(i)) {
        return Err(LoraError::RankTooLarge {
            r: new_rank,
            limit: *out.min(inp),
            module: path.clone(),
        });
    }
    // compute every layer's new factors before changing the model
    let new: Vec<(String, Vec<f64>, Vec<f64>)> = layers
        .iter()
        .map(|(path, [out, inp], factors)| {
            let (a, b) = match merge {
                None => cat(factors, spec, new_rank, *out, *inp),
                Some((m, false)) => factor_wise(factors, spec, m, masks),
                Some((m, true)) => via_svd(factors, spec, m, new_rank, *out, *inp, masks),
            };
            (path.clone(), a, b)
        })
        .collect();
    let config = LoraConfig {
        r: new_rank,
        alpha: new_rank as f64,
        targets: Targets::Names(layers.iter().map(|(p, ..)| p.clone()).collect()),
        exclude: None,
        layers_to_transform: None,
        layers_pattern: Vec::new(),
        rank_pattern: Vec::new(),
        alpha_pattern: Vec::new(),
        ..configs[0].clone()
    };
    let before = AdapterState::of(model);
    model.add_adapter(name, &config, 0)?;
    let mut new = new.into_iter();
    model.visit_linears_mut("", &mut |path, linear| {
        let Some(layer) = lora_layer_mut(linear) else {
            return;
        };
        let Some(w) = layer.get(name) else { return };
        let (p, a, b) = new.next().expect("one result per adapted layer");
        debug_assert_eq!(p, path);
        let backend = w.a.backend();
        let tensor = |v: Vec<f64>, dims: Vec<usize>| {
            let v = v.into_iter().map(B::Elem::from_f64).collect();
            Tensor::from_vec(v, dims, &backend).expect("an adapter's size fits the device")
        };
        w.a.set_value(tensor(a, w.a.dims()));
        w.b.set_value(tensor(b, w.b.dims()));
    });
    // as in PEFT: the new adapter neither becomes active nor trains
    before.restore(model)
}

/// `cat`'s rank: the sum of the adapters' ranks (each adapter's largest, where it has several).
fn per_adapter_ranks(layers: &[Layer], n: usize) -> usize {
    (0..n)
        .map(|i| {
            let ranks = layers
                .iter()
                .filter_map(|(_, _, f)| f[i].as_ref().map(|f| f.r));
            ranks.max().unwrap_or(0)
        })
        .sum()
}

/// `cat`: A = [w_i s_i A_i] stacked, B = [B_i] side by side, zero-padded to `rank`.
fn cat(
    factors: &[Option<Factors>],
    spec: &WeightedAdapter,
    rank: usize,
    out: usize,
    inp: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut b) = (vec![0.0; rank * inp], vec![0.0; out * rank]);
    let mut row = 0;
    for (f, w) in factors.iter().zip(&spec.weights) {
        let Some(f) = f else { continue };
        for k in 0..f.r {
            for j in 0..inp {
                a[(row + k) * inp + j] = w * f.scale * f.a[k * inp + j];
            }
            for o in 0..out {
                b[o * rank + row + k] = f.b[o * f.r + k];
            }
        }
        row += f.r;
    }
    (a, b)
}

/// The factor-wise methods: A's and B's merged separately with weights ±sqrt|w s| and sqrt|w s|.
fn factor_wise(
    factors: &[Option<Factors>],
    spec: &WeightedAdapter,
    m: Merge,
    masks: &mut MaskSource<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let present: Vec<(&Factors, f64)> = factors
        .iter()
        .zip(&spec.weights)
        .filter_map(|(f, &w)| f.as_ref().map(|f| (f, w * f.scale)))
        .collect();
    // PEFT's sign: 1 if w s >= 0 else -1
    let weights_a: Vec<f64> = present
        .iter()
        .map(|&(_, ws)| ws.abs().sqrt() * if ws >= 0.0 { 1.0 } else { -1.0 })
        .collect();
    let weights_b: Vec<f64> = present.iter().map(|(_, ws)| ws.abs().sqrt()).collect();
    let a_list: Vec<Vec<f64>> = present.iter().map(|(f, _)| f.a.clone()).collect();
    let b_list: Vec<Vec<f64>> = present.iter().map(|(f, _)| f.b.clone()).collect();
    let a = merge(a_list, &weights_a, m, spec, masks);
    let b = merge(b_list, &weights_b, m, spec, masks);
    (a, b)
}

/// The `_svd` forms: the updates `s_i B_i A_i` merged, then `B = U_k S_k`, `A = Vt_k`.
fn via_svd(
    factors: &[Option<Factors>],
    spec: &WeightedAdapter,
    m: Merge,
    rank: usize,
    out: usize,
    inp: usize,
    masks: &mut MaskSource<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let (deltas, weights): (Vec<Vec<f64>>, Vec<f64>) = factors
        .iter()
        .zip(&spec.weights)
        .filter_map(|(f, &w)| {
            let f = f.as_ref()?;
            let ba = linalg::matmul(&f.b, &f.a, out, f.r, inp);
            Some((ba.into_iter().map(|x| x * f.scale).collect(), w))
        })
        .unzip();
    let delta = merge(deltas, &weights, m, spec, masks);
    let k = out.min(inp);
    let (u, s, vt) = linalg::svd(&delta, out, inp);
    let b = (0..out * rank)
        .map(|i| u[(i / rank) * k + i % rank] * s[i % rank])
        .collect();
    (vt[..rank * inp].to_vec(), b)
}

/// `merge` of same-shaped tensors with weights (see the module docs).
fn merge(
    mut tensors: Vec<Vec<f64>>,
    weights: &[f64],
    m: Merge,
    spec: &WeightedAdapter,
    masks: &mut MaskSource<'_>,
) -> Vec<f64> {
    let density = spec.density;
    for t in &mut tensors {
        match m {
            Merge::Linear => {}
            Merge::Ties | Merge::MagnitudePrune => magnitude_prune(t, density),
            Merge::DareLinear | Merge::DareTies => {
                if density < 1.0 {
                    let mask = masks(t.len(), density);
                    t.iter_mut()
                        .zip(mask)
                        .for_each(|(x, keep)| *x = *x * keep / density);
                }
            }
        }
    }
    let n = tensors[0].len();
    match m {
        Merge::Linear | Merge::MagnitudePrune | Merge::DareLinear => (0..n)
            .map(|j| tensors.iter().zip(weights).map(|(t, w)| w * t[j]).sum())
            .collect(),
        Merge::Ties | Merge::DareTies => (0..n)
            .map(|j| {
                // elect the sign from the unweighted entries, then average the agreeing weighted ones
                let elect: f64 = match spec.majority_sign {
                    MajoritySign::Total => tensors.iter().map(|t| t[j]).sum(),
                    MajoritySign::Frequency => tensors.iter().map(|t| sign(t[j])).sum(),
                };
                let majority = if elect >= 0.0 { 1.0 } else { -1.0 };
                let (mut sum, mut count) = (0.0, 0usize);
                for (t, w) in tensors.iter().zip(weights) {
                    if sign(t[j]) == majority {
                        sum += w * t[j];
                        count += 1;
                    }
                }
                sum / count.max(1) as f64
            })
            .collect(),
    }
}

/// torch's `sign`: -1, 0 or 1.
fn sign(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x.signum()
    }
}

/// Keeps the `density` fraction (rounded down) of entries largest in magnitude, zeroes the rest.
fn magnitude_prune(t: &mut [f64], density: f64) {
    if density >= 1.0 {
        return;
    }
    let keep = (density * t.len() as f64) as usize;
    let mut order: Vec<usize> = (0..t.len()).collect();
    order.sort_by(|&i, &j| t[j].abs().total_cmp(&t[i].abs()));
    for &i in &order[keep..] {
        t[i] = 0.0;
    }
}
