//! `Linear`: `y = x W^T` with W stored (out_features, in_features), no bias — and an adapter slot.
//!
//! The slot is how LoRA and friends plug in without this crate knowing them: an `Adapter` sees the layer's
//! input, its frozen base weight and the base output `W0 x`, and returns the layer's output.
//!
//! A frozen base weight may also be held compressed (QLoRA's 4-bit NF4): a `CompressedWeight` is expanded
//! to full precision when the layer runs, used, and dropped; backward expands it again for the input
//! gradient, so no full-precision copy outlives a forward or backward pass, and it never gets a gradient.

use crate::module::Module;
use crate::WeightCopies;
use lowrank_autograd::Var;
use lowrank_tensor::{rng, Backend, Tensor};
use std::any::Any;
use std::rc::Rc;

/// A frozen weight stored in a compact form, expanded to an (out, in) tensor on demand.
pub trait CompressedWeight<B: Backend> {
    /// (out_features, in_features)
    fn dims(&self) -> [usize; 2];
    /// The weight in full precision on `backend`.
    fn decompress(&self, backend: &B) -> Tensor<B>;
    /// Bytes of the compact form.
    fn size_in_bytes(&self) -> usize;
    /// `x W^T` for x (rows, in) computed from the compact form, where that beats expanding W (a few rows,
    /// as in decoding: see `BlockWeight`); `None` (the default) lets the layer expand W and run the GEMM.
    fn product(&self, _x: &Tensor<B>) -> Option<Tensor<B>> {
        None
    }
    /// `g W` for g (rows, out), the input gradient, computed from the compact form where the backend can
    /// (a 4-bit weight on the GPU); `None` (the default) lets the layer expand W.
    fn product_transposed(&self, _g: &Tensor<B>) -> Option<Tensor<B>> {
        None
    }
}

/// A layer's base weight: a (possibly trainable) tensor, or a frozen compressed one.
enum Weight<B: Backend> {
    Dense(Var<B>),
    Compressed(Rc<dyn CompressedWeight<B>>, B),
}

/// A look at a layer's base weight W0 (out, in) that expands nothing until asked: its shape and device for
/// free, its values (expanded from a compressed form) with `value`, and the parameter itself, which is
/// what `set_value` must go through, only where there is one (`param`: `None` for a compressed weight, so
/// nobody writes into a temporary expansion that nothing reads).
pub enum BaseWeight<'a, B: Backend> {
    Dense(&'a Var<B>),
    Compressed(&'a dyn CompressedWeight<B>, &'a B),
}

impl<'a, B: Backend> BaseWeight<'a, B> {
    fn of(weight: &'a Weight<B>) -> Self {
        match weight {
            Weight::Dense(w) => BaseWeight::Dense(w),
            Weight::Compressed(c, backend) => BaseWeight::Compressed(c.as_ref(), backend),
        }
    }

    /// The weight's dims: (out_features, in_features) for a Linear, (vocab, d) for an Embedding, (d) for an
    /// RmsNorm's gain (the modules whose weights `WeightCopies` can hold).
    pub fn dims(&self) -> Vec<usize> {
        match self {
            BaseWeight::Dense(w) => w.dims().to_vec(),
            BaseWeight::Compressed(c, _) => c.dims().to_vec(),
        }
    }

    pub fn backend(&self) -> B {
        match self {
            BaseWeight::Dense(w) => w.backend(),
            BaseWeight::Compressed(_, backend) => (*backend).clone(),
        }
    }

    /// The values, in full precision (a compressed weight is expanded: a temporary, read-only copy).
    pub fn value(&self) -> Tensor<B> {
        match self {
            BaseWeight::Dense(w) => w.value(),
            BaseWeight::Compressed(c, backend) => c.decompress(backend),
        }
    }

    /// The weight as a parameter (to read in a graph or to `set_value`); `None` when compressed.
    pub fn param(&self) -> Option<&'a Var<B>> {
        match self {
            BaseWeight::Dense(w) => Some(w),
            BaseWeight::Compressed(..) => None,
        }
    }
}

/// Something that modifies a `Linear`'s output (LoRA, DoRA, ...).
pub trait Adapter<B: Backend>: Any {
    /// The layer's output, given its input `x` (.., in), the layer itself (its base weight W0 (out, in),
    /// read only where the adapter needs it: a 4-bit one is expanded only then) and `W0 x` (.., out).
    fn forward(&self, x: &Var<B>, base: &Linear<B>, base_out: Var<B>) -> Var<B>;
    /// The adapter's parameters, named under the layer's path.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<B>));
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

pub struct Linear<B: Backend> {
    /// (out_features, in_features), as PyTorch and Hugging Face store it.
    weight: Weight<B>,
    adapter: Option<Box<dyn Adapter<B>>>,
    /// Adapters' trainable full copies of the weight (`modules_to_save`), used in its place while active.
    pub copies: WeightCopies<B>,
}

impl<B: Backend> Linear<B> {
    /// Weights ~ N(0, std^2), trainable.
    pub fn new(in_features: usize, out_features: usize, std: f64, seed: u64, backend: &B) -> Self {
        let w = Tensor::randn(
            [out_features, in_features],
            0.0,
            std,
            &mut rng(seed),
            backend,
        );
        Self::from_weight(Var::param(w))
    }

    pub fn from_weight(weight: Var<B>) -> Self {
        assert_eq!(
            weight.rank(),
            2,
            "Linear: weight must be (out, in), got {}",
            weight.shape()
        );
        Linear {
            weight: Weight::Dense(weight),
            adapter: None,
            copies: WeightCopies::default(),
        }
    }

    /// A layer over a frozen compressed weight (it has no parameter of its own).
    pub fn from_compressed(weight: Rc<dyn CompressedWeight<B>>, backend: &B) -> Self {
        Linear {
            weight: Weight::Compressed(weight, backend.clone()),
            adapter: None,
            copies: WeightCopies::default(),
        }
    }

    /// The base weight W0 (out, in), dense or compressed.
    pub fn weight(&self) -> BaseWeight<'_, B> {
        BaseWeight::of(&self.weight)
    }

    /// The base weight and the adapter slot at once, the adapter mutable (what a visitor of adapted layers
    /// needs: the weight to merge into, the adapter to change).
    pub fn weight_and_adapter_mut(
        &mut self,
    ) -> (BaseWeight<'_, B>, Option<&mut (dyn Adapter<B> + 'static)>) {
        (BaseWeight::of(&self.weight), self.adapter.as_deref_mut())
    }

    /// The compressed base weight, if the layer holds one.
    pub fn compressed_weight(&self) -> Option<&dyn CompressedWeight<B>> {
        match &self.weight {
            Weight::Dense(_) => None,
            Weight::Compressed(c, _) => Some(c.as_ref()),
        }
    }

    /// Replaces the base weight by a compressed form of it (which is frozen from then on).
    pub fn set_compressed_weight(&mut self, weight: Rc<dyn CompressedWeight<B>>) {
        let backend = self.weight().backend();
        assert_eq!(
            weight.dims()[..],
            [self.out_features(), self.in_features()],
            "Linear: a compressed weight must keep the shape (out, in)"
        );
        self.weight = Weight::Compressed(weight, backend);
    }

    /// Expands a compressed base weight back to a full-precision, frozen tensor (no-op when dense).
    pub fn decompress_weight(&mut self) {
        if let Weight::Compressed(..) = self.weight {
            self.weight = Weight::Dense(Var::constant(self.weight().value()));
        }
    }

    fn dims(&self) -> [usize; 2] {
        match &self.weight {
            Weight::Dense(w) => [w.dims()[0], w.dims()[1]],
            Weight::Compressed(c, _) => c.dims(),
        }
    }

    pub fn in_features(&self) -> usize {
        self.dims()[1]
    }

    pub fn out_features(&self) -> usize {
        self.dims()[0]
    }

    /// `x W^T` for x (.., in) -> (.., out), then the adapter if one is attached; or `x W'^T` while an
    /// adapter's full copy W' is in use.
    pub fn forward(&self, x: &Var<B>) -> Var<B> {
        if let Some(copy) = self.copies.in_use() {
            return matmul_rows(x, copy);
        }
        let base = self.base_forward(x);
        match &self.adapter {
            Some(adapter) => adapter.forward(x, self, base),
            None => base,
        }
    }

    /// `x W0^T` alone, ignoring the adapter.
    pub fn base_forward(&self, x: &Var<B>) -> Var<B> {
        match &self.weight {
            Weight::Dense(w) => matmul_rows(x, w),
            Weight::Compressed(c, backend) => {
                let x2 = rows_of(x, self.dims()); // (rows, in)
                let y = compressed_matmul(&x2, c, backend); // (rows, out)
                y.reshape([&x.dims()[..x.rank() - 1], &[self.out_features()]].concat())
            }
        }
    }

    pub fn adapter(&self) -> Option<&dyn Adapter<B>> {
        self.adapter.as_deref()
    }

    pub fn adapter_mut(&mut self) -> Option<&mut (dyn Adapter<B> + 'static)> {
        self.adapter.as_deref_mut()
    }

    /// Plugs an adapter in, returning the one it replaces.
    pub fn set_adapter(&mut self, adapter: Box<dyn Adapter<B>>) -> Option<Box<dyn Adapter<B>>> {
        self.adapter.replace(adapter)
    }

    pub fn take_adapter(&mut self) -> Option<Box<dyn Adapter<B>>> {
        self.adapter.take()
    }
}

/// x (.., in) as one (rows, in) matrix (a view), so the product is one large GEMM (and dW one GEMM, not a
/// batch); panics if `in` does not fit the weight's (out, in).
fn rows_of<B: Backend>(x: &Var<B>, [out, d_in]: [usize; 2]) -> Var<B> {
    assert_eq!(
        x.dims().last(),
        Some(&d_in),
        "linear: input {} does not fit weight ({out}, {d_in})",
        x.shape()
    );
    x.reshape([x.numel() / d_in.max(1), d_in])
}

/// `x W^T` for x (.., in) and W (out, in) -> (.., out).
fn matmul_rows<B: Backend>(x: &Var<B>, w: &Var<B>) -> Var<B> {
    let dims = [w.dims()[0], w.dims()[1]];
    let y = rows_of(x, dims).matmul(&w.t()); // (rows, out); W^T is a view
    y.reshape([&x.dims()[..x.rank() - 1], &[dims[0]]].concat())
}

/// `y = x W^T` (rows, out) with W expanded from its compressed form for the product only (or not at all,
/// where the weight multiplies from its compact form). The backward rule does the same for `dx = g W`
/// instead of keeping the full-precision W alive until backward.
fn compressed_matmul<B: Backend>(
    x: &Var<B>,
    weight: &Rc<dyn CompressedWeight<B>>,
    backend: &B,
) -> Var<B> {
    let x_value = x.value();
    let y = weight
        .product(&x_value)
        .unwrap_or_else(|| x_value.matmul(&weight.decompress(backend).t())); // (rows, out)
    x.unary_rule("compressed_matmul", y, || {
        let (weight, backend) = (weight.clone(), backend.clone());
        move |g: &Tensor<B>| {
            weight
                .product_transposed(g)
                .unwrap_or_else(|| g.matmul(&weight.decompress(&backend))) // (rows, out) @ (out, in)
        }
    })
}

impl<B: Backend> Module<B> for Linear<B> {
    /// The weight is a parameter only when dense: a compressed weight is frozen data, not a parameter.
    fn own_params(&self, f: &mut dyn FnMut(&str, &Var<B>)) {
        if let Weight::Dense(w) = &self.weight {
            f("weight", w);
        }
        if let Some(adapter) = &self.adapter {
            adapter.visit_params("", f);
        }
        self.copies.visit_params(f);
    }

    fn weight_copies(&self) -> Option<(BaseWeight<'_, B>, &WeightCopies<B>)> {
        Some((self.weight(), &self.copies))
    }

    fn weight_copies_mut(&mut self) -> Option<(BaseWeight<'_, B>, &mut WeightCopies<B>)> {
        Some((BaseWeight::of(&self.weight), &mut self.copies))
    }
}
