//! Bottleneck adapter layers (Houlsby et al. 2019): the method the LoRA paper measures its "no inference
//! latency" claim against. After a projection with output y (.., d), a small two-layer network adds
//!
//! ```text
//! h = y + U relu(D y)          D (m, d), U (d, m), m << d
//! ```
//!
//! with U = 0 at the start, so the model starts as the base. Placed after each block's attention output
//! projection and MLP down projection (Houlsby's two places), it trains `4 m d` parameters per block. Unlike
//! LoRA, the update is not linear in the input, so it cannot be merged into W: every forward pass pays two
//! more sequential products per place.

use crate::LoraError;
use lowrank_autograd::Var;
use lowrank_nn::{join, Adapter, Linear, Module};
use lowrank_tensor::{rng, Backend, Tensor};
use std::any::Any;

/// One bottleneck adapter in a Linear's adapter slot.
pub struct BottleneckAdapter<B: Backend> {
    /// D (m, d): into the bottleneck.
    pub down: Var<B>,
    /// U (d, m): back out; zero at the start.
    pub up: Var<B>,
}

impl<B: Backend> Adapter<B> for BottleneckAdapter<B> {
    fn forward(&self, _x: &Var<B>, _base: &Linear<B>, base_out: Var<B>) -> Var<B> {
        let dims = base_out.dims();
        let d = dims[dims.len() - 1];
        let y = base_out.reshape([base_out.numel() / d.max(1), d]); // (rows, d)
        let hidden = y.matmul(&self.down.t()).relu(); // (rows, m)
        let h = &y + &hidden.matmul(&self.up.t()); // (rows, d)
        h.reshape(dims)
    }

    /// Names: `<layer>.adapter.down.weight`, `<layer>.adapter.up.weight`.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>)) {
        f(&join(prefix, "adapter.down.weight"), &self.down);
        f(&join(prefix, "adapter.up.weight"), &self.up);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Freezes `model` and puts a bottleneck adapter of width `m` after every Linear whose path ends with one
/// of `targets` (e.g. `o_proj`, `down_proj`). D ~ N(0, 1/d), U = 0. Returns the number of trainable
/// parameters. Fails, changing nothing, when no layer matches, one already holds an adapter, or `m` is 0.
pub fn add_bottleneck_adapters<B: Backend, M: Module<B> + ?Sized>(
    model: &mut M,
    targets: &[&str],
    m: usize,
    seed: u64,
) -> Result<usize, LoraError> {
    let mut matched = Vec::new();
    model.visit_linears("", &mut |path, linear| {
        if targets.iter().any(|t| path.ends_with(t)) {
            matched.push((path.to_string(), linear.adapter().is_some()));
        }
    });
    if m == 0 || matched.is_empty() || matched.iter().any(|(_, taken)| *taken) {
        return Err(LoraError::InvalidConfig(format!(
            "bottleneck adapters of width {m} on {targets:?}: need a width of at least 1 and free \
             layers to match, found {matched:?} (path, already holds an adapter)"
        )));
    }
    model.set_trainable(false);
    let mut i = 0;
    model.visit_linears_mut("", &mut |path, linear| {
        if targets.iter().any(|t| path.ends_with(t)) {
            i += 1;
            let (d, backend) = (linear.out_features(), linear.weight().backend());
            let std = 1.0 / (d as f64).sqrt();
            let down = Tensor::randn([m, d], 0.0, std, &mut rng(seed.wrapping_add(i)), &backend);
            linear.set_adapter(Box::new(BottleneckAdapter {
                down: Var::param(down),
                up: Var::param(Tensor::zeros([d, m], &backend)),
            }));
        }
    });
    Ok(model.num_trainable_params())
}
