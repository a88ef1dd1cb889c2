//! `Var<B>`: a tensor that may be tracked by the graph.
//!
//! A *leaf* is a Var the user made (`Var::leaf`, e.g. a weight); it has no node and, if it requires a gradient,
//! receives one in `grad()` after `backward()`. Every op on Vars returns a new Var whose *node* remembers the
//! inputs and a closure computing the inputs' gradients from the output's. If no input needs a gradient (a
//! frozen weight times a constant, or anything inside `no_grad`), the op records nothing at all.
//!
//! The graph links each Var's `GradMeta` (what backward needs: the node, the gradient slot, the shape), never
//! the Var itself. So an intermediate value lives only as long as a handle to it or a backward rule that
//! saved it: the graph alone keeps no activation alive (as in PyTorch, where the graph holds `grad_fn`s).

use crate::graph::{self, GradMeta, Node};
use crate::AutogradError;
use lowrank_tensor::{Backend, Shape, Tensor};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub struct Var<B: Backend>(pub(crate) Rc<VarInner<B>>);

pub(crate) struct VarInner<B: Backend> {
    pub(crate) value: RefCell<Tensor<B>>,
    pub(crate) meta: Rc<GradMeta<B>>,
}

impl<B: Backend> Var<B> {
    /// Backpropagates from a one-element Var (a loss): fills `grad()` of every leaf that requires one.
    pub fn backward(&self) -> Result<(), AutogradError> {
        if self.numel() != 1 {
            return Err(AutogradError::NonScalar {
                shape: self.shape(),
            });
        }
        self.backward_with(Tensor::ones(self.shape(), &self.backend()))
    }

    /// Backpropagates a given output gradient (the seed), for non-scalar outputs.
    pub fn backward_with(&self, seed: Tensor<B>) -> Result<(), AutogradError> {
        self.run_backward(seed, false)
    }

    /// Like `backward_with`, but keeps the graph so that backward can run through it again.
    pub fn backward_retain_graph(&self, seed: Tensor<B>) -> Result<(), AutogradError> {
        self.run_backward(seed, true)
    }

    fn run_backward(&self, seed: Tensor<B>, retain: bool) -> Result<(), AutogradError> {
        graph::backward(&self.0.meta, seed, retain)
    }
}

impl<B: Backend> Clone for Var<B> {
    fn clone(&self) -> Self {
        Var(self.0.clone())
    }
}

impl<B: Backend> std::fmt::Debug for Var<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Var({}, requires_grad={}) {:?}",
            self.op(),
            self.requires_grad(),
            self.value()
        )
    }
}

impl<B: Backend> Var<B> {
    /// A user-made Var. With `requires_grad`, `backward()` fills its `grad()`; without, it is a constant
    /// (a frozen weight, an input) and costs nothing in backward.
    pub fn leaf(value: Tensor<B>, requires_grad: bool) -> Self {
        Self::new(value, "leaf", requires_grad, None)
    }

    fn new(value: Tensor<B>, op: &'static str, requires_grad: bool, node: Option<Node<B>>) -> Self {
        let meta = GradMeta {
            requires_grad: Cell::new(requires_grad),
            grad: RefCell::new(None),
            node: RefCell::new(node),
            op,
            shape: value.shape().clone(),
        };
        Var(Rc::new(VarInner {
            value: RefCell::new(value),
            meta: Rc::new(meta),
        }))
    }

    /// A trainable leaf.
    pub fn param(value: Tensor<B>) -> Self {
        Self::leaf(value, true)
    }

    /// A leaf that never receives a gradient.
    pub fn constant(value: Tensor<B>) -> Self {
        Self::leaf(value, false)
    }

    /// The result of an op — the extension point for new differentiable ops. `make_backward` builds the rule that maps the output's gradient to one gradient
    /// per input (`None` for an input that needs none). It is called only if some input requires a gradient
    /// and grad mode is on, so an op on frozen inputs saves nothing and records nothing.
    pub fn from_op<F>(
        op: &'static str,
        value: Tensor<B>,
        inputs: &[&Var<B>],
        make_backward: impl FnOnce() -> F,
    ) -> Self
    where
        F: Fn(&Tensor<B>) -> Vec<Option<Tensor<B>>> + 'static,
    {
        let tracked = graph::grad_enabled() && inputs.iter().any(|v| v.requires_grad());
        let node = tracked.then(|| Node {
            inputs: inputs.iter().map(|v| v.0.meta.clone()).collect(),
            backward: Box::new(make_backward()),
        });
        Self::new(value, op, tracked, node)
    }

    /// An op of one input: `make_backward` builds `g -> dx`.
    pub fn unary_rule<F>(
        &self,
        op: &'static str,
        value: Tensor<B>,
        make_backward: impl FnOnce() -> F,
    ) -> Self
    where
        F: Fn(&Tensor<B>) -> Tensor<B> + 'static,
    {
        Var::from_op(op, value, &[self], || {
            let rule = make_backward();
            move |g: &Tensor<B>| vec![Some(rule(g))]
        })
    }

    /// An op of two inputs: `make_backward(need_lhs, need_rhs)` builds `g -> (dlhs, drhs)`, computing (and
    /// saving what it needs for) only the gradients that are needed.
    pub fn binary_rule<F>(
        &self,
        rhs: &Var<B>,
        op: &'static str,
        value: Tensor<B>,
        make_backward: impl FnOnce(bool, bool) -> F,
    ) -> Self
    where
        F: Fn(&Tensor<B>) -> (Option<Tensor<B>>, Option<Tensor<B>>) + 'static,
    {
        let (need_l, need_r) = (self.requires_grad(), rhs.requires_grad());
        Var::from_op(op, value, &[self, rhs], || {
            let rule = make_backward(need_l, need_r);
            move |g: &Tensor<B>| {
                let (dl, dr) = rule(g);
                vec![dl, dr]
            }
        })
    }

    /// The current value (a cheap handle sharing the storage).
    pub fn value(&self) -> Tensor<B> {
        self.0.value.borrow().clone()
    }

    /// Replaces a leaf's value (optimizers do this); the graph built from the old value is unaffected.
    pub fn set_value(&self, value: Tensor<B>) {
        assert!(
            self.is_leaf(),
            "set_value: only a leaf's value can be replaced, not {}'s",
            self.op()
        );
        assert_eq!(
            value.shape(),
            self.0.value.borrow().shape(),
            "set_value: new value {} does not match the old {}",
            value.shape(),
            self.0.value.borrow().shape()
        );
        *self.0.value.borrow_mut() = value;
    }

    /// Replaces a leaf's value with `f(old)`. `f` receives the value itself (not a copy), so an optimizer can
    /// update the storage in place when nothing else shares it.
    pub fn update_value(&self, f: impl FnOnce(Tensor<B>) -> Tensor<B>) {
        assert!(
            self.is_leaf(),
            "update_value: only a leaf's value can be replaced, not {}'s",
            self.op()
        );
        let mut slot = self.0.value.borrow_mut();
        let placeholder = Tensor::zeros((), slot.backend());
        let old = std::mem::replace(&mut *slot, placeholder);
        let shape = old.shape().clone();
        let new = f(old);
        assert_eq!(
            new.shape(),
            &shape,
            "update_value: the update changed the shape"
        );
        *slot = new;
    }

    /// True if gradients flow to or through this Var (and grad mode is on).
    pub fn requires_grad(&self) -> bool {
        self.0.meta.requires_grad()
    }

    /// Freezes (`false`) or unfreezes (`true`) a leaf. A frozen leaf loses its gradient buffer.
    pub fn set_requires_grad(&self, requires_grad: bool) {
        assert!(
            self.is_leaf(),
            "set_requires_grad: `{}` is not a leaf",
            self.op()
        );
        self.0.meta.requires_grad.set(requires_grad);
        if !requires_grad {
            self.zero_grad();
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.0.meta.is_leaf()
    }

    /// The name of the op that produced this Var ("leaf" for leaves).
    pub fn op(&self) -> &'static str {
        self.0.meta.op
    }

    /// The gradient accumulated by `backward()` (leaves that require a gradient only).
    pub fn grad(&self) -> Option<Tensor<B>> {
        self.0.meta.grad.borrow().clone()
    }

    /// Forgets the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.meta.grad.borrow_mut() = None;
    }

    /// The same value as a new constant leaf: gradients stop here.
    pub fn detach(&self) -> Self {
        Self::constant(self.value())
    }

    pub fn shape(&self) -> Shape {
        self.0.value.borrow().shape().clone()
    }

    pub fn dims(&self) -> Vec<usize> {
        self.0.value.borrow().dims().to_vec()
    }

    pub fn rank(&self) -> usize {
        self.0.value.borrow().rank()
    }

    pub fn numel(&self) -> usize {
        self.0.value.borrow().numel()
    }

    pub fn backend(&self) -> B {
        self.0.value.borrow().backend().clone()
    }
}

/// Marks `t` as kept for the backward pass and counts its bytes, so that tests can prove frozen weights cost
/// nothing. Rules call it inside their `make_backward`, which runs only when the gradient will be needed.
pub fn saved<B: Backend>(t: Tensor<B>) -> Tensor<B> {
    crate::stats::record_saved(t.size_in_bytes());
    t
}
