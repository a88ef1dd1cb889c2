//! The graph and the backward pass.
//!
//! Each op result holds a `Node`: its inputs' `GradMeta` (the part of a Var the backward pass needs; never
//! the value) and a closure from the output's gradient to the inputs'.
//! `backward()` sorts the Vars reachable from the root in topological order (every Var after everything
//! computed from it), then walks them from the root down: each node's closure turns its gradient into its
//! inputs' gradients, which are summed into a map (a value used twice gets both contributions: `+=`). A
//! gradient whose shape differs from its input's was broadcast in the forward pass; it is summed back to the
//! input's shape here, in this one place, so no op has to think about broadcasting. Leaves that require a
//! gradient keep theirs in `grad()`. Nodes are freed as they are used, unless the graph is retained.

use crate::AutogradError;
use lowrank_tensor::{Backend, Shape, Tensor};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

pub(crate) type BackwardFn<B> = Box<dyn Fn(&Tensor<B>) -> Vec<Option<Tensor<B>>>>;

pub(crate) struct Node<B: Backend> {
    /// The inputs as the backward pass sees them (not their values: those stay alive only if saved).
    pub(crate) inputs: Vec<Rc<GradMeta<B>>>,
    pub(crate) backward: BackwardFn<B>,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record the graph (false inside `no_grad`).
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` without recording anything: for evaluation, sampling and optimizer updates.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    lowrank_tensor::threads::scoped(&GRAD_ENABLED, false, f)
}

/// A Var as the backward pass sees it: everything but the value.
pub(crate) struct GradMeta<B: Backend> {
    /// A leaf that requires a gradient, or an op result with at least one such input.
    pub(crate) requires_grad: Cell<bool>,
    /// The accumulated gradient (leaves only).
    pub(crate) grad: RefCell<Option<Tensor<B>>>,
    /// How this Var was computed; `None` for leaves, untracked results, and after the graph is freed.
    pub(crate) node: RefCell<Option<Node<B>>>,
    /// The op that produced it ("leaf" for leaves), for error messages.
    pub(crate) op: &'static str,
    /// The value's shape: a gradient broadcast in the forward pass is summed back to it.
    pub(crate) shape: Shape,
}

impl<B: Backend> GradMeta<B> {
    /// True if gradients flow to or through this Var (and grad mode is on).
    pub(crate) fn requires_grad(&self) -> bool {
        self.requires_grad.get() && grad_enabled()
    }

    pub(crate) fn is_leaf(&self) -> bool {
        self.op == "leaf"
    }

    /// Adds `g` to the accumulated gradient: gradients from every use of a value sum up.
    pub(crate) fn accumulate_grad(&self, g: Tensor<B>) {
        let mut slot = self.grad.borrow_mut();
        *slot = Some(match slot.take() {
            Some(mut acc) => {
                acc.add_assign(&g);
                acc
            }
            None => g.contiguous(),
        });
    }

    /// A stable identity while it lives (used to key gradients during backward).
    pub(crate) fn id(self: &Rc<Self>) -> usize {
        Rc::as_ptr(self) as *const () as usize
    }
}

/// The backward pass from `root` with output gradient `seed`; `retain` keeps the nodes for another pass.
pub(crate) fn backward<B: Backend>(
    root: &Rc<GradMeta<B>>,
    seed: Tensor<B>,
    retain: bool,
) -> Result<(), AutogradError> {
    if !root.requires_grad() {
        return Err(AutogradError::NothingRequiresGrad { op: root.op });
    }
    if seed.shape() != &root.shape {
        return Err(AutogradError::SeedShape {
            seed: seed.shape().clone(),
            output: root.shape.clone(),
        });
    }
    let order = topological_order(root);
    let mut grads: HashMap<usize, Tensor<B>> = HashMap::from([(root.id(), seed)]);
    for var in order.iter().rev() {
        let Some(g) = grads.remove(&var.id()) else {
            continue;
        };
        if var.is_leaf() {
            var.accumulate_grad(g);
            continue;
        }
        let node = if retain {
            None
        } else {
            var.node.borrow_mut().take()
        };
        let guard = var.node.borrow();
        let node = match (&node, guard.as_ref()) {
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => return Err(AutogradError::GraphFreed { op: var.op }),
        };
        let input_grads = (node.backward)(&g);
        for (input, ig) in node.inputs.iter().zip(input_grads) {
            let Some(ig) = ig else { continue };
            if !input.requires_grad() {
                continue;
            }
            // The one place broadcasting is undone: sum the gradient back to the input's shape.
            let ig = ig.sum_to(&input.shape);
            let slot = grads.entry(input.id());
            slot.and_modify(|acc| acc.add_assign(&ig)).or_insert(ig);
        }
    }
    Ok(())
}

/// Every tracked Var reachable from `root`, each after all of its inputs (iterative depth-first search).
fn topological_order<B: Backend>(root: &Rc<GradMeta<B>>) -> Vec<Rc<GradMeta<B>>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![(root.clone(), false)];
    while let Some((var, inputs_done)) = stack.pop() {
        if inputs_done {
            order.push(var);
            continue;
        }
        if !visited.insert(var.id()) {
            continue;
        }
        stack.push((var.clone(), true));
        if let Some(node) = var.node.borrow().as_ref() {
            for input in &node.inputs {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}
