//! Property tests: every tensor op against a plain, obviously-correct reference written with loops over
//! multi-indices, on random shapes (broadcasting, size-1 and empty axes) and on non-contiguous inputs
//! (transposed and narrowed views), on every backend: `Cpu<f64>`, `Cpu<f32>`, `Reference<f64>` (the
//! primitives in plain loops, every fused op composed from them) and `Wgpu` (skipped with a
//! message on a machine without a GPU adapter, unless `LOWRANK_REQUIRE_WGPU=1`).

use lowrank::wgpu::{test_device, Wgpu};
use lowrank_tensor::{
    AdamwStep, AttentionSaved, Backend, BinaryOp, Cpu, Element, Layout, Reference, Shape, Tensor,
};
use proptest::prelude::*;

// ---- the reference: a dense row-major array of f64 with naive indexing ------------------------------------

#[derive(Clone, Debug)]
struct Nd {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut flat| {
            let mut idx = vec![0; shape.len()];
            for a in (0..shape.len()).rev() {
                idx[a] = flat % shape[a];
                flat /= shape[a];
            }
            idx
        })
        .collect()
}

impl Nd {
    fn from_fn(shape: &[usize], f: impl Fn(&[usize]) -> f64) -> Nd {
        Nd {
            shape: shape.to_vec(),
            data: indices(shape).iter().map(|i| f(i)).collect(),
        }
    }

    fn at(&self, idx: &[usize]) -> f64 {
        let mut flat = 0;
        for (a, &i) in idx.iter().enumerate() {
            flat = flat * self.shape[a] + i;
        }
        self.data[flat]
    }

    /// Reads `idx` of a broadcast output shape: axes aligned at the end, size-1 axes read index 0.
    fn at_broadcast(&self, idx: &[usize]) -> f64 {
        let skip = idx.len() - self.shape.len();
        let own: Vec<usize> = self
            .shape
            .iter()
            .enumerate()
            .map(|(a, &d)| if d == 1 { 0 } else { idx[skip + a] })
            .collect();
        self.at(&own)
    }
}

fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            if da == 1 {
                db
            } else {
                da
            }
        })
        .collect()
}

// ---- building tensors whose layout is contiguous, transposed or narrowed ------------------------------------

/// How the test tensor is stored: 0 row-major, 1 a transposed view, 2 a narrowed view of a larger tensor.
fn make<B: Backend>(nd: &Nd, how: u8, dev: &B) -> Tensor<B> {
    let data = nd.data.iter().map(|&v| B::Elem::from_f64(v)).collect();
    let t = Tensor::from_vec(data, nd.shape.clone(), dev).unwrap();
    let r = t.rank();
    let out = match how {
        1 if r >= 2 => t.t().copy().t(),
        2 if r >= 1 => {
            let mut pad_dims = nd.shape.clone();
            pad_dims[0] = 1;
            let pad = Tensor::full(pad_dims, 7.0, dev);
            Tensor::concat(&[&pad, &t, &pad], 0).narrow(0, 1, nd.shape[0])
        }
        _ => t,
    };
    assert_eq!(out.dims(), &nd.shape[..]);
    out
}

/// As `close`, for a sum whose terms' sizes add up to `size` (elementwise): f32 may also be off by 1e-5 of
/// it (f64 by 1e-12), as rounding scales with the terms, not with the result.
fn close_to<B: Backend>(got: &Tensor<B>, want: &Nd, size: Option<&Nd>, what: &str) {
    assert_eq!(got.dims(), &want.shape[..], "{what}: shape");
    let (tol, of_size) = if B::Elem::DTYPE == lowrank_tensor::DType::F32 {
        (1e-4, 1e-5)
    } else {
        (1e-10, 1e-12)
    };
    for (i, (g, w)) in got.to_vec().iter().zip(&want.data).enumerate() {
        let (g, s) = (g.to_f64(), size.map_or(0.0, |s| s.data[i]));
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) + of_size * s
            || (g.is_nan() && w.is_nan())
            || g == *w;
        let terms = size.map_or(String::new(), |_| format!(" (terms of size {s})"));
        assert!(ok, "{what}: element {i}: got {g}, want {w}{terms}");
    }
}

/// `got` equals `want` to 1e-4 (f32) or 1e-10 (f64) relative, NaN where `want` is NaN.
fn close<B: Backend>(got: &Tensor<B>, want: &Nd, what: &str) {
    close_to(got, want, None, what)
}

// ---- strategies ----------------------------------------------------------------------------------------------

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..5, 1 => Just(1usize), 1 => Just(0usize)]
}

/// Rows long enough for the kernels' wide paths: more than one 16-lane SIMD step with a ragged tail on the
/// CPU, more than one 64-thread workgroup on the GPU (lengths seldom a multiple of 16 or 64).
fn long_row() -> impl Strategy<Value = usize> {
    100usize..600
}

/// Mostly small axes; one case in six ends in a long row (after at most two small axes).
fn shape(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        5 => prop::collection::vec(dim(), 0..=max_rank),
        1 => with_long_row(prop::collection::vec(dim(), 0..max_rank.min(3))),
    ]
}

fn nonempty_shape(min_rank: usize, max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        5 => prop::collection::vec(1usize..5, min_rank..=max_rank),
        1 => with_long_row(prop::collection::vec(1usize..4, min_rank.max(1) - 1..max_rank.min(3))),
    ]
}

fn with_long_row(lead: impl Strategy<Value = Vec<usize>>) -> impl Strategy<Value = Vec<usize>> {
    (lead, long_row()).prop_map(|(mut dims, n)| {
        dims.push(n);
        dims
    })
}

fn values(shape: Vec<usize>) -> impl Strategy<Value = Nd> {
    let n = shape.iter().product::<usize>();
    prop::collection::vec(-3.0f64..3.0, n).prop_map(move |data| Nd {
        shape: shape.clone(),
        data,
    })
}

fn arb(max_rank: usize) -> impl Strategy<Value = (Nd, u8)> {
    shape(max_rank)
        .prop_flat_map(values)
        .prop_flat_map(|nd| (Just(nd), 0u8..3))
}

/// Two shapes that broadcast: the second drops some leading axes and sets some axes to 1.
fn broadcast_pair() -> impl Strategy<Value = ((Nd, u8), (Nd, u8))> {
    shape(4)
        .prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..=r, prop::collection::vec(any::<bool>(), r))
        })
        .prop_flat_map(|(s, drop, ones)| {
            let t: Vec<usize> = s
                .iter()
                .enumerate()
                .skip(drop)
                .map(|(i, &d)| if ones[i] { 1 } else { d })
                .collect();
            let (a, b) = if ones.first() == Some(&true) {
                (t, s)
            } else {
                (s, t)
            };
            ((values(a), 0u8..3), (values(b), 0u8..3))
        })
}

// ---- the properties, generic over the backend ------------------------------------------------------------

type UnaryCase<B> = (&'static str, fn(&Tensor<B>) -> Tensor<B>, fn(f64) -> f64);

fn unary_cases<B: Backend>() -> Vec<UnaryCase<B>> {
    vec![
        ("neg", |t: &Tensor<B>| t.neg(), |x| -x),
        ("exp", |t| t.exp(), |x| x.exp()),
        (
            "log",
            |t| t.abs().add_scalar(0.1).log(),
            |x| (x.abs() + 0.1).ln(),
        ),
        ("sqrt", |t| t.abs().sqrt(), |x| x.abs().sqrt()),
        (
            "rsqrt",
            |t| t.abs().add_scalar(0.5).rsqrt(),
            |x| 1.0 / (x.abs() + 0.5).sqrt(),
        ),
        ("tanh", |t| t.tanh(), |x| x.tanh()),
        ("sigmoid", |t| t.sigmoid(), |x| 1.0 / (1.0 + (-x).exp())),
        ("silu", |t| t.silu(), |x| x / (1.0 + (-x).exp())),
        (
            "gelu",
            |t| t.gelu(),
            |x| {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            },
        ),
        ("relu", |t| t.relu(), |x| x.max(0.0)),
        ("abs", |t| t.abs(), |x| x.abs()),
        (
            "sign",
            |t| t.sign(),
            |x| {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            },
        ),
        (
            "recip",
            |t| t.abs().add_scalar(0.5).recip(),
            |x| 1.0 / (x.abs() + 0.5),
        ),
        ("sqr", |t| t.sqr(), |x| x * x),
        ("powf", |t| t.abs().powf(1.7), |x| x.abs().powf(1.7)),
        ("add_scalar", |t| t + 2.5, |x| x + 2.5),
        ("mul_scalar", |t| t * -1.5, |x| x * -1.5),
        ("sub_scalar", |t| t - 1.0, |x| x - 1.0),
        ("div_scalar", |t| t / 4.0, |x| x / 4.0),
    ]
}

fn check_unary<B: Backend>(dev: &B, nd: &Nd, how: u8) {
    let t = make(nd, how, dev);
    for (name, f, r) in unary_cases::<B>() {
        let want = Nd {
            shape: nd.shape.clone(),
            data: nd.data.iter().map(|&x| r(x)).collect(),
        };
        close(&f(&t), &want, name);
    }
}

fn check_binary<B: Backend>(dev: &B, a: &(Nd, u8), b: &(Nd, u8)) {
    let (ta, tb) = (make(&a.0, a.1, dev), make(&b.0, b.1, dev));
    let out = broadcast(&a.0.shape, &b.0.shape);
    type Case<B> = (&'static str, Tensor<B>, fn(f64, f64) -> f64);
    let cases: Vec<Case<B>> = vec![
        ("add", &ta + &tb, |x, y| x + y),
        ("sub", &ta - &tb, |x, y| x - y),
        ("mul", &ta * &tb, |x, y| x * y),
        ("div", ta.div(&tb.abs().add_scalar(0.5)), |x, y| {
            x / (y.abs() + 0.5)
        }),
        ("maximum", ta.maximum(&tb), f64::max),
        ("minimum", ta.minimum(&tb), f64::min),
        ("pow", ta.abs().add_scalar(0.1).pow(&tb), |x, y| {
            (x.abs() + 0.1).powf(y)
        }),
        ("silu_mul", ta.silu_mul(&tb), |x, y| {
            x / (1.0 + (-x).exp()) * y
        }),
        ("lt", ta.lt(&tb), |x, y| if x < y { 1.0 } else { 0.0 }),
        ("ge", ta.ge(&tb), |x, y| if x >= y { 1.0 } else { 0.0 }),
        ("equal", ta.equal(&ta.maximum(&tb)), |x, y| {
            if x >= y {
                1.0
            } else {
                0.0
            }
        }),
    ];
    for (name, got, f) in cases {
        let want = Nd::from_fn(&out, |i| f(a.0.at_broadcast(i), b.0.at_broadcast(i)));
        close(&got, &want, name);
    }
    check_swiglu_backward(&ta, &tb, &a.0, &b.0);
    // add_assign: in place into a tensor of its own, into a new storage when a clone shares it
    let want_sum = Nd::from_fn(&out, |i| {
        let (x, y) = (a.0.at_broadcast(i), b.0.at_broadcast(i));
        x + y + x * y
    });
    let mut own = &ta + &tb;
    own.add_assign(&(&ta * &tb));
    close(&own, &want_sum, "add_assign");
    let mut shared = &ta + &tb;
    let before = shared.clone();
    shared.add_assign(&(&ta * &tb));
    close(&shared, &want_sum, "add_assign (shared)");
    let want_before = Nd::from_fn(&out, |i| a.0.at_broadcast(i) + b.0.at_broadcast(i));
    close(&before, &want_before, "add_assign leaves a clone alone");
    // a strided source: b broadcast to the output's shape (stride 0 on its size-1 axes)
    let mut own = &ta + &tb;
    own.add_assign(&tb.broadcast_to(out.clone()));
    let want = Nd::from_fn(&out, |i| a.0.at_broadcast(i) + 2.0 * b.0.at_broadcast(i));
    close(&own, &want, "add_assign of a broadcast view");
    // where_cond and masked_fill with the comparison as the condition.
    let cond = ta.gt(&tb);
    let got = Tensor::where_cond(&cond, &ta, &tb);
    let want = Nd::from_fn(&out, |i| a.0.at_broadcast(i).max(b.0.at_broadcast(i)));
    close(&got, &want, "where_cond");
    let got = ta.masked_fill(&cond, -9.0);
    let want = Nd::from_fn(&out, |i| {
        let (x, y) = (a.0.at_broadcast(i), b.0.at_broadcast(i));
        if x > y {
            -9.0
        } else {
            x
        }
    });
    close(&got, &want, "masked_fill");
}

fn check_reduce<B: Backend>(dev: &B, nd: &Nd, how: u8, axis: usize, keepdim: bool) {
    let t = make(nd, how, dev);
    let mut out = nd.shape.clone();
    let len = out[axis];
    out[axis] = 1;
    let fold = |f: &dyn Fn(&[f64]) -> f64| {
        Nd::from_fn(&out, |i| {
            let run: Vec<f64> = (0..len)
                .map(|k| {
                    let mut j = i.to_vec();
                    j[axis] = k;
                    nd.at(&j)
                })
                .collect();
            f(&run)
        })
    };
    let shaped = |mut n: Nd| {
        if !keepdim {
            n.shape.remove(axis);
        }
        n
    };
    let ax = axis as isize;
    let sum = |r: &[f64]| r.iter().sum::<f64>();
    close(&t.sum(ax, keepdim), &shaped(fold(&sum)), "sum");
    if len == 0 {
        return;
    }
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    close(&t.mean(ax, keepdim), &shaped(fold(&mean)), "mean");
    close(
        &t.max(ax, keepdim),
        &shaped(fold(&|r| r.iter().cloned().fold(f64::MIN, f64::max))),
        "max",
    );
    close(
        &t.min(ax, keepdim),
        &shaped(fold(&|r| r.iter().cloned().fold(f64::MAX, f64::min))),
        "min",
    );
    let argmax = |r: &[f64]| (0..r.len()).fold(0, |b, k| if r[k] > r[b] { k } else { b }) as f64;
    close(&t.argmax(ax, keepdim), &shaped(fold(&argmax)), "argmax");
    let argmin = |r: &[f64]| (0..r.len()).fold(0, |b, k| if r[k] < r[b] { k } else { b }) as f64;
    close(&t.argmin(ax, keepdim), &shaped(fold(&argmin)), "argmin");
    let var = |r: &[f64]| {
        let m = mean(r);
        r.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / r.len() as f64
    };
    close(&t.var(ax, keepdim), &shaped(fold(&var)), "var");
}

fn check_matmul<B: Backend>(dev: &B, a: &(Nd, u8), b: &(Nd, u8)) {
    let (ta, tb) = (make(&a.0, a.1, dev), make(&b.0, b.1, dev));
    let (ra, rb) = (a.0.shape.len(), b.0.shape.len());
    let (m, k, n) = (a.0.shape[ra - 2], a.0.shape[ra - 1], b.0.shape[rb - 1]);
    let batch = broadcast(&a.0.shape[..ra - 2], &b.0.shape[..rb - 2]);
    let out = [batch.clone(), vec![m, n]].concat();
    let want = Nd::from_fn(&out, |i| {
        let nb = batch.len();
        (0..k)
            .map(|p| {
                let ia = [&i[..nb], &[i[nb], p]].concat();
                let ib = [&i[..nb], &[p, i[nb + 1]]].concat();
                a.0.at_broadcast(&ia) * b.0.at_broadcast(&ib)
            })
            .sum()
    });
    close(&ta.matmul(&tb), &want, "matmul");
}

/// Shapes (.., m, k) and (.., k, n) whose batch axes broadcast.
fn matmul_pair() -> impl Strategy<Value = ((Nd, u8), (Nd, u8))> {
    (
        prop::collection::vec(dim(), 0..=2),
        0usize..6,
        prop_oneof![5 => 0usize..6, 1 => 60usize..300], // long sums: the GEMM's k-blocking and tails
        0usize..6,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(batch, m, k, n, drop, ones)| {
            let other: Vec<usize> = batch
                .iter()
                .skip(drop as usize)
                .map(|&d| if ones { 1 } else { d })
                .collect();
            let a = [batch, vec![m, k]].concat();
            let b = [other, vec![k, n]].concat();
            ((values(a), 0u8..3), (values(b), 0u8..3))
        })
}

fn check_views<B: Backend>(dev: &B, nd: &Nd, how: u8, perm_seed: usize) {
    let t = make(nd, how, dev);
    let r = nd.shape.len();
    // permute by a rotation of the axes
    let rot = if r == 0 { 0 } else { perm_seed % r };
    let perm: Vec<usize> = (0..r).map(|i| (i + rot) % r).collect();
    let pshape: Vec<usize> = perm.iter().map(|&p| nd.shape[p]).collect();
    let want = Nd::from_fn(&pshape, |i| {
        let mut src = vec![0; r];
        for (o, &p) in perm.iter().enumerate() {
            src[p] = i[o];
        }
        nd.at(&src)
    });
    let p = t.permute(&perm);
    close(&p, &want, "permute");
    close(&p.contiguous(), &want, "contiguous");
    close(
        &p.reshape([p.numel()]).reshape(pshape.clone()),
        &want,
        "reshape",
    );
    // unsqueeze / squeeze / broadcast
    let u = t.unsqueeze(0);
    close(&u.squeeze(0), nd, "squeeze(unsqueeze)");
    let bshape = [vec![2], nd.shape.clone()].concat();
    close(
        &u.broadcast_to(bshape.clone()),
        &Nd::from_fn(&bshape, |i| nd.at(&i[1..])),
        "broadcast_to",
    );
    // narrow / split / chunk / concat along the last axis
    if r >= 1 {
        let d = nd.shape[r - 1];
        let (s, l) = (d / 3, d - d / 3);
        let mut nshape = nd.shape.clone();
        nshape[r - 1] = l;
        let want = Nd::from_fn(&nshape, |i| {
            let mut j = i.to_vec();
            j[r - 1] += s;
            nd.at(&j)
        });
        close(&t.narrow(-1, s, l), &want, "narrow");
        let parts = t.split(&[s, l], -1);
        close(
            &Tensor::concat(&[&parts[0], &parts[1]], -1),
            nd,
            "concat(split)",
        );
        let chunks = t.chunk(2, -1);
        let refs: Vec<&Tensor<B>> = chunks.iter().collect();
        close(&Tensor::concat(&refs, -1), nd, "concat(chunk)");
        close(
            &t.sum_to(&Shape::from(&nshape[..0])),
            &Nd {
                shape: vec![],
                data: vec![nd.data.iter().sum()],
            },
            "sum_to scalar",
        );
    }
}

fn check_index<B: Backend>(dev: &B, nd: &Nd, how: u8, ids: &[u32]) {
    let t = make(nd, how, dev);
    let d0 = nd.shape[0] as u32;
    let ids: Vec<u32> = ids.iter().map(|i| i % d0).collect();
    let mut oshape = nd.shape.clone();
    oshape[0] = ids.len();
    let want = Nd::from_fn(&oshape, |i| {
        let mut j = i.to_vec();
        j[0] = ids[i[0]] as usize;
        nd.at(&j)
    });
    let sel = t.index_select(0, &ids);
    close(&sel, &want, "index_select");
    // index_add of the selection back onto the tensor: each row gains itself once per occurrence in ids.
    let want = Nd::from_fn(&nd.shape, |i| {
        let count = ids.iter().filter(|&&id| id as usize == i[0]).count() as f64;
        nd.at(i) * (1.0 + count)
    });
    close(&t.index_add(0, &ids, &sel), &want, "index_add");
}

/// One cross-entropy target per row: the ids wrap into range, and the first row is ignored (target 999).
fn row_targets(rows: usize, n: usize, targets: &[u32]) -> Vec<u32> {
    (0..rows)
        .map(|i| {
            if i == 0 {
                999
            } else {
                targets[i % targets.len()] % n as u32
            }
        })
        .collect()
}

fn check_fused<B: Backend>(dev: &B, nd: &Nd, how: u8, targets: &[u32]) {
    let t = make(nd, how, dev);
    let r = nd.shape.len();
    let n = nd.shape[r - 1];
    let row = |i: &[usize]| -> Vec<f64> {
        (0..n)
            .map(|k| {
                let mut j = i.to_vec();
                j[r - 1] = k;
                nd.at(&j)
            })
            .collect()
    };
    let lse = |v: &[f64]| {
        let m = v.iter().cloned().fold(f64::MIN, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    close(
        &t.softmax(),
        &Nd::from_fn(&nd.shape, |i| (nd.at(i) - lse(&row(i))).exp()),
        "softmax",
    );
    close(
        &t.log_softmax(),
        &Nd::from_fn(&nd.shape, |i| nd.at(i) - lse(&row(i))),
        "log_softmax",
    );
    if r >= 2 {
        let q = nd.shape[r - 2];
        let want = Nd::from_fn(&nd.shape, |i| {
            let visible = (i[r - 2] + n + 1).saturating_sub(q).min(n);
            if i[r - 1] >= visible {
                return 0.0;
            }
            (nd.at(i) - lse(&row(i)[..visible])).exp()
        });
        close(&t.causal_softmax(), &want, "causal_softmax");
    }
    // rope against its definition, with arbitrary tables: (T, d) for positions on axis r-2, and (T, 1, d)
    // for positions on axis r-3 repeated across axis r-2 (heads laid out as (B, T, H, d))
    for (gap, what) in [(0, "rope (T, d) tables"), (1, "rope (T, 1, d) tables")] {
        if r < 2 + gap || !n.is_multiple_of(2) {
            continue;
        }
        let steps = nd.shape[r - 2 - gap];
        let table_shape = [&[steps][..], &vec![1; gap], &[n]].concat();
        let table = |f: fn(f64) -> f64, a: f64, b: f64| {
            Nd::from_fn(&table_shape, |i| f(i[0] as f64 * a + b * i[gap + 1] as f64))
        };
        let (cos, sin) = (table(f64::cos, 0.7, 1.0), table(f64::sin, 0.3, -1.0));
        let h = n / 2;
        let want = Nd::from_fn(&nd.shape, |i| {
            let (pos, k) = (i[r - 2 - gap], i[r - 1]);
            let mut j = i.to_vec();
            j[r - 1] = if k < h { k + h } else { k - h };
            let rotated = if k < h { -nd.at(&j) } else { nd.at(&j) };
            let at = [&[pos][..], &vec![0; gap], &[k]].concat();
            nd.at(i) * cos.at(&at) + rotated * sin.at(&at)
        });
        close(&t_rope(&t, &cos, &sin, dev), &want, what);
    }
    let w = Nd::from_fn(&[n], |i| 0.5 + i[0] as f64 * 0.25);
    let tw = make(&w, 0, dev);
    let want = Nd::from_fn(&nd.shape, |i| {
        let ms = row(i).iter().map(|x| x * x).sum::<f64>() / n as f64;
        nd.at(i) / (ms + 1e-5).sqrt() * w.at(&[i[r - 1]])
    });
    close(&t.rms_norm(&tw, 1e-5), &want, "rms_norm");
    // cross-entropy on the tensor flattened to rows
    let rows = nd.data.len() / n;
    let logits = t.reshape([rows, n]);
    let tg = row_targets(rows, n, targets);
    let flat = Nd {
        shape: vec![rows, n],
        data: nd.data.clone(),
    };
    let want = Nd::from_fn(&[rows], |i| {
        if i[0] == 0 {
            return 0.0;
        }
        let v: Vec<f64> = (0..n).map(|k| flat.at(&[i[0], k])).collect();
        lse(&v) - v[tg[i[0]] as usize]
    });
    close(
        &logits.cross_entropy_rows(&tg, Some(999)),
        &want,
        "cross_entropy_rows",
    );
}

/// The backward kernels and the AdamW step on backend `D`, for `check_backward`.
fn backward_outputs<D: Backend>(
    dev: &D,
    nd: &Nd,
    how: u8,
    targets: &[u32],
) -> Vec<(&'static str, Tensor<D>)> {
    let t = make(nd, how, dev);
    let r = nd.shape.len();
    let n = nd.shape[r - 1];
    // an upstream gradient of the same shape, and a weight of the last axis' size
    let g = make(
        &Nd::from_fn(&nd.shape, |i| (i.iter().sum::<usize>() as f64 * 0.7).sin()),
        how,
        dev,
    );
    let w = make(&Nd::from_fn(&[n], |i| 0.5 + i[0] as f64 * 0.25), 0, dev);
    let (dx, dw) = t.rms_norm_backward(&w, &g, 1e-5, true);
    let dw = dw.expect("dw was asked for");
    // a frozen gain: the same dx, and no dw computed at all
    let (dx_frozen, no_dw) = t.rms_norm_backward(&w, &g, 1e-5, false);
    assert!(no_dw.is_none());
    let rows = nd.data.len() / n;
    let tg = row_targets(rows, n, targets);
    let row_grads = Tensor::full([rows], 0.3, dev).add_scalar(0.1); // row-major, unlike a broadcast scalar
    let logits = t.contiguous().reshape([rows, n]);
    let step = AdamwStep {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
        bias_correction1: 0.1,
        bias_correction2: 0.01,
    };
    let scale = Tensor::scalar(0.5, dev);
    let (p, m, v) = Tensor::adamw_step(t.copy(), g.copy(), g.sqr(), &g, &step, &scale);
    let causal = (r >= 2).then(|| {
        (
            "causal softmax_backward",
            t.causal_softmax().softmax_backward(&g),
        )
    });
    let mut outputs = vec![
        ("softmax_backward", t.softmax().softmax_backward(&g)),
        (
            "log_softmax_backward",
            t.log_softmax().log_softmax_backward(&g),
        ),
        ("rms_norm_backward dx", dx),
        ("rms_norm_backward dw", dw),
        ("rms_norm_backward dx, frozen gain", dx_frozen),
        (
            "cross_entropy_backward",
            logits.cross_entropy_backward(&tg, Some(999), &row_grads),
        ),
        (
            "silu_backward",
            t.binary(&g, BinaryOp::SiluBackward, "silu_backward"),
        ),
        (
            "gelu_backward",
            t.binary(&g, BinaryOp::GeluBackward, "gelu_backward"),
        ),
        ("adamw param", p),
        ("adamw m", m),
        ("adamw v", v),
    ];
    outputs.extend(causal);
    outputs
}

/// Backward kernels against `Cpu<f64>`'s, whose gradients tests/gradients.rs checks by finite differences.
fn check_backward<B: Backend>(dev: &B, nd: &Nd, how: u8, targets: &[u32]) {
    let want = backward_outputs(&Cpu::<f64>::new(), nd, how, targets);
    for ((name, got), (_, want)) in backward_outputs(dev, nd, how, targets).iter().zip(want) {
        let want = Nd {
            shape: want.dims().to_vec(),
            data: want.to_vec(),
        };
        close(got, &want, name);
    }
}

/// q, k, v (B, H, T, D) and an upstream gradient; `how` 3 lays a tensor out as the model does, (B, T, H, D)
/// memory seen through a permute; `how` 4 (k and v only, with an even H) is grouped-query attention's
/// sharing: H / 2 heads, each repeated for 2 query heads as `gpt::repeat_kv` does.
type AttentionCase = ([(Nd, u8); 4], bool);

fn check_attention<B: Backend>(dev: &B, (inputs, causal): &AttentionCase) {
    let t_of = |(nd, how): &(Nd, u8)| -> (Tensor<B>, Nd) {
        let s = &nd.shape;
        match how {
            3 => {
                let heads = Nd::from_fn(&[s[0], s[2], s[1], s[3]], |i| {
                    nd.at(&[i[0], i[2], i[1], i[3]])
                });
                (make(&heads, 0, dev).permute(&[0, 2, 1, 3]), nd.clone())
            }
            4 if s[1] % 2 == 0 => {
                let kv = Nd::from_fn(&[s[0], s[1] / 2, s[2], s[3]], |i| nd.at(i));
                let shared = Nd::from_fn(s, |i| kv.at(&[i[0], i[1] / 2, i[2], i[3]]));
                let t = make(&kv, 0, dev)
                    .unsqueeze(2)
                    .broadcast_to([s[0], s[1] / 2, 2, s[2], s[3]])
                    .reshape(s.clone());
                (t, shared)
            }
            _ => (make(nd, *how % 3, dev), nd.clone()),
        }
    };
    let [(tq, q), (tk, k), (tv, v), (tg, g)] = [0, 1, 2, 3].map(|i| t_of(&inputs[i]));
    let (q, k, v, g) = (&q, &k, &v, &g);
    let (t, d) = (q.shape[2], q.shape[3]);
    let scale = 0.6;
    let visible = |i: usize| if *causal { i + 1 } else { t };
    // P[b, h, i, j] by the definition, zero where masked (scores, row maxima and sums each built once)
    let pshape = [q.shape[0], q.shape[1], t, t];
    let scores = Nd::from_fn(&pshape, |x| {
        scale
            * (0..d)
                .map(|e| q.at(&[x[0], x[1], x[2], e]) * k.at(&[x[0], x[1], x[3], e]))
                .sum::<f64>()
    });
    let row = |x: &[usize]| -> Vec<f64> {
        (0..visible(x[2]))
            .map(|j| scores.at(&[x[0], x[1], x[2], j]))
            .collect()
    };
    let max = Nd::from_fn(&pshape[..3], |x| {
        row(x).into_iter().fold(f64::NEG_INFINITY, f64::max)
    });
    let sum = Nd::from_fn(&pshape[..3], |x| {
        row(x).iter().map(|s| (s - max.at(x)).exp()).sum()
    });
    let probs = Nd::from_fn(&pshape, |x| {
        if x[3] < visible(x[2]) {
            (scores.at(x) - max.at(&x[..3])).exp() / sum.at(&x[..3])
        } else {
            0.0
        }
    });
    let p = |b: usize, h: usize, i: usize, j: usize| probs.at(&[b, h, i, j]);
    let want_out = Nd::from_fn(&q.shape, |x| {
        (0..t)
            .map(|j| p(x[0], x[1], x[2], j) * v.at(&[x[0], x[1], j, x[3]]))
            .sum()
    });
    let (out, tp) = Tensor::attention(&tq, &tk, &tv, scale, *causal);
    close(&out, &want_out, "attention out");
    match dev.attention_saves() {
        AttentionSaved::Probs => close(&tp, &probs, "attention probabilities"),
        AttentionSaved::OutputAndLogSumExp => {
            // row i: O_i, then L_i
            let saved = Nd::from_fn(&[pshape[0], pshape[1], t, d + 1], |x| {
                if x[3] < d {
                    want_out.at(x)
                } else {
                    max.at(&x[..3]) + sum.at(&x[..3]).ln()
                }
            });
            close(&tp, &saved, "attention output and log-sum-exp")
        }
    }
    // dS[b, h, i, j] = P (dP - sum_j P dP),  dP = g v^T (each built once: O(T^2 D), not O(T^3 D))
    let dp = Nd::from_fn(&probs.shape, |x| {
        (0..d)
            .map(|e| g.at(&[x[0], x[1], x[2], e]) * v.at(&[x[0], x[1], x[3], e]))
            .sum::<f64>()
    });
    let dot = Nd::from_fn(&probs.shape[..3], |x| {
        (0..t)
            .map(|j| p(x[0], x[1], x[2], j) * dp.at(&[x[0], x[1], x[2], j]))
            .sum()
    });
    let ds = Nd::from_fn(&probs.shape, |x| probs.at(x) * (dp.at(x) - dot.at(&x[..3])));
    let want = [
        Nd::from_fn(&q.shape, |x| {
            scale
                * (0..t)
                    .map(|j| ds.at(&[x[0], x[1], x[2], j]) * k.at(&[x[0], x[1], j, x[3]]))
                    .sum::<f64>()
        }),
        Nd::from_fn(&q.shape, |x| {
            scale
                * (0..t)
                    .map(|i| ds.at(&[x[0], x[1], i, x[2]]) * q.at(&[x[0], x[1], i, x[3]]))
                    .sum::<f64>()
        }),
        Nd::from_fn(&q.shape, |x| {
            (0..t)
                .map(|i| p(x[0], x[1], i, x[2]) * g.at(&[x[0], x[1], i, x[3]]))
                .sum()
        }),
    ];
    // each gradient is a sum of terms that nearly cancel where P is sharp: f32 rounding scales with the
    // sum of their sizes, not with the result
    let size = [
        Nd::from_fn(&q.shape, |x| {
            scale
                * (0..t)
                    .map(|j| (ds.at(&[x[0], x[1], x[2], j]) * k.at(&[x[0], x[1], j, x[3]])).abs())
                    .sum::<f64>()
        }),
        Nd::from_fn(&q.shape, |x| {
            scale
                * (0..t)
                    .map(|i| (ds.at(&[x[0], x[1], i, x[2]]) * q.at(&[x[0], x[1], i, x[3]])).abs())
                    .sum::<f64>()
        }),
        Nd::from_fn(&q.shape, |x| {
            (0..t)
                .map(|i| (p(x[0], x[1], i, x[2]) * g.at(&[x[0], x[1], i, x[3]])).abs())
                .sum()
        }),
    ];
    for need in [
        [true, true, true],
        [true, false, true],
        [false, false, true],
        [false, true, false],
        [true, false, false],
    ] {
        // only the inputs a requested gradient reads, as the autograd op keeps them
        let reads = dev.attention_saves().reads(need);
        let qkv = [(&tq, reads[0]), (&tk, reads[1]), (&tv, reads[2])].map(|(x, r)| r.then_some(x));
        let grads = Tensor::attention_backward(qkv, &tp, &tg, scale, *causal, need);
        for (i, name) in ["dq", "dk", "dv"].into_iter().enumerate() {
            match &grads[i] {
                Some(got) => close_to(got, &want[i], Some(&size[i]), &format!("attention {name}")),
                None => assert!(!need[i], "attention {name} was asked for"),
            }
        }
    }
}

fn t_rope<B: Backend>(x: &Tensor<B>, cos: &Nd, sin: &Nd, dev: &B) -> Tensor<B> {
    x.rope(&make(cos, 0, dev), &make(sin, 1, dev))
}

/// `swiglu_backward` of a broadcast pair against silu's derivative, for each set of wanted gradients.
fn check_swiglu_backward<B: Backend>(ta: &Tensor<B>, tb: &Tensor<B>, a: &Nd, b: &Nd) {
    let out = broadcast(&a.shape, &b.shape);
    let g = (ta * tb).add_scalar(0.3); // any upstream gradient of the output's shape
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (av, bv) = (
        |i: &[usize]| a.at_broadcast(i),
        |i: &[usize]| b.at_broadcast(i),
    );
    let gv = |i: &[usize]| av(i) * bv(i) + 0.3;
    let want_da = Nd::from_fn(&out, |i| {
        let (x, s) = (av(i), sig(av(i)));
        gv(i) * bv(i) * s * (1.0 + x * (1.0 - s))
    });
    let want_db = Nd::from_fn(&out, |i| gv(i) * av(i) * sig(av(i)));
    for need in [[true, true], [true, false], [false, true]] {
        let b_given = need[0].then_some(tb);
        let [da, db] = ta.swiglu_backward(b_given, &g, need);
        assert_eq!(
            [da.is_some(), db.is_some()],
            need,
            "swiglu_backward: {need:?}"
        );
        da.inspect(|da| close(da, &want_da, "swiglu_backward da"));
        db.inspect(|db| close(db, &want_db, "swiglu_backward db"));
    }
}

/// The GPU, looked up once per test binary.
fn gpu() -> Option<Wgpu> {
    static DEV: std::sync::OnceLock<Option<Wgpu>> = std::sync::OnceLock::new();
    DEV.get_or_init(test_device).clone()
}

macro_rules! on_every_backend {
    ($($name:ident => |$dev:ident| $body:expr;)*) => {
        $(
            mod $name {
                use super::*;
                proptest! {
                    #[test]
                    fn f64(case in $crate::strategies::$name()) {
                        let $dev = Cpu::<f64>::new();
                        ($body)(case);
                    }
                    #[test]
                    fn f32(case in $crate::strategies::$name()) {
                        let $dev = Cpu::<f32>::new();
                        ($body)(case);
                    }
                }
                proptest! {
                    // Fewer cases: plain loops, and every fused op composed from the primitives.
                    #![proptest_config(ProptestConfig::with_cases(64))]
                    #[test]
                    fn reference(case in $crate::strategies::$name()) {
                        let $dev = Reference::<f64>::new();
                        ($body)(case);
                    }
                }
                proptest! {
                    // Fewer cases: a software Vulkan driver (CI's) runs each kernel on the CPU, slowly.
                    #![proptest_config(ProptestConfig::with_cases(48))]
                    #[test]
                    fn wgpu(case in $crate::strategies::$name()) {
                        if let Some($dev) = gpu() {
                            ($body)(case);
                        }
                    }
                }
            }
        )*
    };
}

mod strategies {
    use super::*;
    pub fn unary() -> impl Strategy<Value = (Nd, u8)> {
        arb(4)
    }
    pub fn binary() -> impl Strategy<Value = ((Nd, u8), (Nd, u8))> {
        broadcast_pair()
    }
    pub fn reduce() -> impl Strategy<Value = ((Nd, u8), usize, bool)> {
        shape(4)
            .prop_filter("needs an axis", |s| !s.is_empty())
            .prop_flat_map(|s| {
                let r = s.len();
                ((values(s), 0u8..3), 0..r, any::<bool>())
            })
    }
    pub fn matmul() -> impl Strategy<Value = ((Nd, u8), (Nd, u8))> {
        matmul_pair()
    }
    pub fn views() -> impl Strategy<Value = ((Nd, u8), usize)> {
        (arb(4), 0usize..4)
    }
    pub fn index() -> impl Strategy<Value = ((Nd, u8), Vec<u32>)> {
        (nonempty_shape(1, 3).prop_flat_map(values), 0u8..3)
            .prop_flat_map(|nd| (Just(nd), prop::collection::vec(0u32..100, 0..6)))
    }
    /// T sometimes spans several of the kernel's 32-query blocks, with a partial last one.
    /// Head dims 32 and 64 (the toy's and SmolLM2's) beside tiny ones, with a single batch and head.
    pub fn attention() -> impl Strategy<Value = AttentionCase> {
        prop_oneof![
            4 => (1usize..3, 1usize..3, prop_oneof![3 => 0usize..6, 1 => 30usize..70], 1usize..5),
            1 => (Just(1usize), Just(2usize), 20usize..45, prop_oneof![Just(32usize), Just(64)]),
        ]
        .prop_flat_map(|(b, h, t, d)| {
            let one = |hows: std::ops::Range<u8>| (values(vec![b, h, t, d]), hows);
            ([one(0..4), one(0..5), one(0..5), one(0..4)], any::<bool>())
        })
    }
    pub fn backward() -> impl Strategy<Value = ((Nd, u8), Vec<u32>)> {
        fused()
    }
    pub fn fused() -> impl Strategy<Value = ((Nd, u8), Vec<u32>)> {
        (nonempty_shape(1, 3).prop_flat_map(values), 0u8..3)
            .prop_flat_map(|nd| (Just(nd), prop::collection::vec(0u32..100, 1..6)))
    }
}

on_every_backend! {
    unary => |dev| |(nd, how): (Nd, u8)| check_unary(&dev, &nd, how);
    binary => |dev| |(a, b): ((Nd, u8), (Nd, u8))| check_binary(&dev, &a, &b);
    reduce => |dev| |((nd, how), axis, keep): ((Nd, u8), usize, bool)| check_reduce(&dev, &nd, how, axis, keep);
    matmul => |dev| |(a, b): ((Nd, u8), (Nd, u8))| check_matmul(&dev, &a, &b);
    views => |dev| |((nd, how), p): ((Nd, u8), usize)| check_views(&dev, &nd, how, p);
    index => |dev| |((nd, how), ids): ((Nd, u8), Vec<u32>)| check_index(&dev, &nd, how, &ids);
    fused => |dev| |((nd, how), tg): ((Nd, u8), Vec<u32>)| check_fused(&dev, &nd, how, &tg);
    backward => |dev| |((nd, how), tg): ((Nd, u8), Vec<u32>)| check_backward(&dev, &nd, how, &tg);
    attention => |dev| |case: AttentionCase| check_attention(&dev, &case);
}

/// The row kernels (softmax, RMSNorm, cross-entropy: `fused` and `backward`; sum, max and min over the
/// last axis: `reduce`) on the GPU with the lanes combined through workgroup memory: `gpu()` combines them
/// with subgroup operations where the adapter has them, so both ways are tested (on an adapter without
/// subgroups this repeats the path `wgpu` took). The name starts with `wgpu` so that
/// `scripts/valgrind.sh` (`--skip wgpu`) leaves the GPU driver out of its memcheck, as it does for the others.
mod wgpu_workgroup_lanes {
    use super::*;
    use lowrank::wgpu::Lanes;
    fn dev() -> Option<Wgpu> {
        gpu().map(|g| {
            g.with_lanes(Lanes::Workgroup)
                .expect("every adapter has workgroup memory")
        })
    }
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn fused(((nd, how), tg) in strategies::fused()) {
            if let Some(dev) = dev() {
                check_fused(&dev, &nd, how, &tg);
            }
        }
        #[test]
        fn backward(((nd, how), tg) in strategies::backward()) {
            if let Some(dev) = dev() {
                check_backward(&dev, &nd, how, &tg);
            }
        }
        #[test]
        fn reduce(((nd, how), axis, keep) in strategies::reduce()) {
            if let Some(dev) = dev() {
                check_reduce(&dev, &nd, how, axis, keep);
            }
        }
    }
}

// ---- large inputs take the parallel paths ------------------------------------------------------------------

#[test]
fn large_tensors_take_parallel_paths_and_agree() {
    let dev = Cpu::<f64>::new();
    let mut rng = lowrank_tensor::rng(3);
    let a = Tensor::randn([96, 700], 0.0, 1.0, &mut rng, &dev);
    let b = Tensor::randn([700, 96], 0.0, 1.0, &mut rng, &dev);
    let (va, vb) = (a.to_vec(), b.to_vec());
    let c = a.matmul(&b).to_vec();
    for (i, j) in [(0, 0), (95, 95), (40, 7)] {
        let want: f64 = (0..700).map(|p| va[i * 700 + p] * vb[p * 96 + j]).sum();
        assert!((c[i * 96 + j] - want).abs() < 1e-9);
    }
    let total: f64 = va.iter().sum();
    assert!((a.sum_all().to_scalar() - total).abs() < 1e-8);
    let col0: f64 = (0..96).map(|i| va[i * 700]).sum();
    assert!((a.sum(0, false).to_vec()[0] - col0).abs() < 1e-10);
    let e = a.t().exp().to_vec();
    assert!((e[1] - va[700].exp()).abs() < 1e-12);
    // In-place accumulation, split across threads.
    let mut acc = a.mul_scalar(2.0);
    acc.add_assign(&a.t().t());
    let tripled = acc.to_vec();
    assert!(va
        .iter()
        .zip(&tripled)
        .all(|(x, y)| (3.0 * x - y).abs() < 1e-12));
    // SwiGLU's one-pass backward, split across threads, against the composed kernels.
    let (x, y) = (a.reshape([700, 96]), b.mul_scalar(0.5));
    let g = &x - &y;
    let [da, db] = x
        .swiglu_backward(Some(&y), &g, [true, true])
        .map(Option::unwrap);
    let silu_grad = x.binary(&g.mul(&y), BinaryOp::SiluBackward, "silu_grad");
    let worst = |p: &Tensor<Cpu<f64>>, q: &Tensor<Cpu<f64>>| {
        let (p, q) = (p.to_vec(), q.to_vec());
        p.iter()
            .zip(&q)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max)
    };
    assert!(worst(&da, &silu_grad) < 1e-12);
    assert!(worst(&db, &x.silu_mul(&g)) < 1e-12);
}

/// A product with few rows and many columns (a LoRA factor's gradient, (r, in) = (r, N) (N, in)) is split
/// across threads by columns, one with many rows by rows: every element agrees with the plain sum, with
/// either operand transposed.
#[test]
fn large_products_split_by_rows_or_columns_and_agree() {
    let dev = Cpu::<f64>::new();
    let mut rng = lowrank_tensor::rng(5);
    for (m, k, n) in [(8, 700, 300), (300, 700, 8), (33, 500, 97)] {
        let a = Tensor::randn([m, k], 0.0, 1.0, &mut rng, &dev);
        let b = Tensor::randn([k, n], 0.0, 1.0, &mut rng, &dev);
        let (va, vb) = (a.to_vec(), b.to_vec());
        let want: Vec<f64> = (0..m * n)
            .map(|i| (0..k).map(|p| va[i / n * k + p] * vb[p * n + i % n]).sum())
            .collect();
        let (at, bt) = (a.t().contiguous(), b.t().contiguous()); // the same values, stored transposed
        for (got, how) in [
            (a.matmul(&b), "a b"),
            (at.t().matmul(&b), "(a^T)^T b"),
            (a.matmul(&bt.t()), "a (b^T)^T"),
        ] {
            let got = got.to_vec();
            let worst = (0..m * n)
                .map(|i| (got[i] - want[i]).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < 1e-9,
                "({m}, {k}) @ ({k}, {n}), {how}: off by {worst}"
            );
        }
    }
}

// ---- errors --------------------------------------------------------------------------------------------------

#[test]
fn from_vec_with_wrong_length_is_an_error() {
    let err = Tensor::from_vec(vec![1.0f32; 5], [2, 3], &Cpu::<f32>::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "from_vec: 5 values cannot fill shape (2, 3) (6 elements)"
    );
}

#[test]
#[should_panic(expected = "matmul: lhs (2, 3) and rhs (4, 5) do not align")]
fn matmul_mismatch_names_both_shapes() {
    let dev = Cpu::<f32>::new();
    Tensor::zeros([2, 3], &dev).matmul(&Tensor::zeros([4, 5], &dev));
}

#[test]
#[should_panic(expected = "index_select: index 3 is out of range for axis 0 of shape (3, 2)")]
fn index_out_of_range_names_op_and_shape() {
    let dev = Cpu::<f32>::new();
    Tensor::zeros([3, 2], &dev).index_select(0, &[3]);
}

#[test]
fn views_share_storage() {
    let dev = Cpu::<f32>::new();
    let a = Tensor::arange(12, &dev).reshape([3, 4]);
    for v in [
        a.t(),
        a.narrow(1, 1, 2),
        a.unsqueeze(0),
        a.broadcast_to([2, 3, 4]),
        a.reshape([12]),
    ] {
        assert!(v.shares_storage(&a));
    }
    assert!(a.contiguous().shares_storage(&a));
    assert!(!a.t().contiguous().shares_storage(&a));
}

#[test]
fn random_tensors_are_seeded() {
    let dev = Cpu::<f32>::new();
    let a = Tensor::randn([100], 0.0, 1.0, &mut lowrank_tensor::rng(7), &dev).to_vec();
    let b = Tensor::randn([100], 0.0, 1.0, &mut lowrank_tensor::rng(7), &dev).to_vec();
    assert_eq!(a, b);
    let u = Tensor::rand_uniform([1000], -1.0, 2.0, &mut lowrank_tensor::rng(1), &dev).to_vec();
    assert!(u.iter().all(|&x| (-1.0..2.0).contains(&x)));
    let mean = u.iter().sum::<f32>() / 1000.0;
    assert!((mean - 0.5).abs() < 0.1, "uniform mean {mean}");
}

// ---- soundness: a safe call with a layout past its storage panics, never reads out of bounds ------------------
// (scripts/valgrind.sh runs these too: before the checks, each read past the end of its storage.)

#[test]
#[should_panic(
    expected = "Tensor::from_storage: storage of shape (64, 64) (strides [64, 1], offset 0) \
                           reaches 4096 elements, its storage holds 1"
)]
fn from_storage_shorter_than_its_shape_panics() {
    let dev = Cpu::<f32>::new();
    let t = Tensor::from_storage(vec![0f32], [64, 64], &dev);
    t.matmul(&t); // before the check: a GEMM over 4096 elements of a 1-element buffer
}

/// The backend's methods are public and take any `Layout` (`Layout::new` is public too).
#[test]
#[should_panic(
    expected = "matmul: rhs of shape (64, 64) (strides [64, 1], offset 0) reaches 4096 \
                           elements, its storage holds 16"
)]
fn matmul_with_a_layout_past_its_storage_panics() {
    let dev = Cpu::<f32>::new();
    let a = vec![1f32; 64 * 64];
    let la = Layout::contiguous([64, 64]);
    dev.matmul(&a, &la, &vec![1f32; 16], &la);
}

#[test]
#[should_panic(expected = "matmul: cannot multiply shapes (4, 8) and (4, 8)")]
fn matmul_backend_with_misaligned_shapes_panics() {
    let dev = Cpu::<f32>::new();
    let l = Layout::contiguous([4, 8]);
    dev.matmul(&vec![0f32; 32], &l, &vec![0f32; 32], &l);
}

#[test]
#[should_panic(
    expected = "attention: v of shape (1, 2, 40, 32) (strides [2560, 1280, 32, 1], offset 8) \
                           reaches 2568 elements, its storage holds 2560"
)]
fn attention_with_an_offset_past_its_storage_panics() {
    let dev = Cpu::<f32>::new();
    let shape = Shape::new(vec![1, 2, 40, 32]);
    let x = vec![0.5f32; shape.numel()];
    let ok = Layout::contiguous(shape.clone());
    let shifted = Layout::new(shape, vec![2560, 1280, 32, 1], 8);
    dev.attention((&x, &ok), (&x, &ok), (&x, &shifted), 0.1, true);
}

#[test]
#[should_panic(expected = "attention_backward: k has shape (1, 1, 8, 4), q (1, 1, 40, 4)")]
fn attention_backward_with_mismatched_operands_panics() {
    let dev = Cpu::<f32>::new();
    let (big, small) = ([1, 1, 40, 4], [1, 1, 8, 4]);
    let (lb, ls) = (Layout::contiguous(big), Layout::contiguous(small));
    let (x, y, p) = (vec![0f32; 160], vec![0f32; 32], vec![0f32; 1600]);
    dev.attention_backward(
        [None, Some((&y, &ls)), Some((&x, &lb))],
        &p,
        (&x, &lb),
        0.5,
        false,
        [true, false, false],
    );
}

/// RoPE marks its whole output initialised after writing the tables' runs: tables of another shape would
/// leave part of it uninitialised.
#[test]
#[should_panic(
    expected = "rope: the cos (2, 4) and sin (2, 4) tables must be broadcast to x's shape (8, 4)"
)]
fn rope_with_tables_of_another_shape_panics() {
    let dev = Cpu::<f32>::new();
    let (lx, lt) = (Layout::contiguous([8, 4]), Layout::contiguous([2, 4]));
    let (x, t) = (vec![1f32; 32], vec![1f32; 8]);
    dev.rope((&x, &lx), (&t, &lt), (&t, &lt));
}

/// NaN logits are what training's divergence guard looks for: exp, softmax, log-softmax and SiLU keep them.
#[test]
fn nan_in_gives_nan_out() {
    assert!(f32::NAN.fast_exp().is_nan() && (-f32::NAN).fast_exp().is_nan());
    let dev = Cpu::<f32>::new();
    let x = Tensor::from_vec(vec![0.5, f32::NAN, -1.0, 2.0], [1, 4], &dev).unwrap();
    for (name, y) in [
        ("exp", x.exp()),
        ("softmax", x.softmax()),
        ("log_softmax", x.log_softmax()),
        ("silu", x.silu()),
    ] {
        assert!(
            y.to_vec()[1].is_nan(),
            "{name}({:?}) = {:?}",
            x.to_vec(),
            y.to_vec()
        );
    }
}

// ---- block-wise codes on a backend without kernels for them ------------------------------------------------

/// `Reference` has no quantization kernels: `Backend`'s defaults decode on the host. 4-bit codes (plain
/// and double-quantized absmax, a partial last block) and 8-bit codes both ways give the CPU's values.
#[test]
fn block_codes_by_the_default_methods_equal_the_cpus() {
    use lowrank_tensor::dynamic_map::DynamicMap;
    use lowrank_tensor::{Packed4bit, Packed8bit, PackedAbsmax};
    fn expand<B: Backend<Elem = f32>>(dev: &B, double: bool) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
        let (numel, block) = (200, 64); // 4 absmax blocks, the last of 8 values
        let codes: Vec<u8> = (0..numel / 2).map(|i| (i * 37 % 256) as u8).collect();
        let levels: [f32; 16] = std::array::from_fn(|i| i as f32 / 7.5 - 1.0);
        let absmax = dev.storage_from_vec(vec![0.5, 1.5, 2.0, 0.25]);
        let (a_codes, map) = (dev.bytes_storage(&[3, 200, 17, 255]), DynamicMap::signed());
        let (values, scales) = (
            dev.storage_from_vec(map.values.to_vec()),
            dev.storage_from_vec(vec![0.7, 1.3]),
        );
        let absmax = match double {
            false => PackedAbsmax::Plain(&absmax),
            true => PackedAbsmax::Double {
                codes: &a_codes,
                map: &values,
                scales: &scales,
                offset: 0.1,
                block: 2,
            },
        };
        let codes = dev.bytes_storage(&codes);
        let q = Packed4bit {
            codes: &codes,
            numel,
            block,
            levels,
            absmax,
        };
        let four = Tensor::from_storage(dev.dequantize_4bit(&q), [numel], dev).to_vec();
        // 8 bits: 5000 values in blocks of 256 (the last partial), quantized and expanded again
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let q8 = dev.quantize_8bit(
            &dev.storage_from_vec(x),
            5000,
            256,
            &dev.bytes_storage(map.table()),
        );
        let eight = Tensor::from_storage(dev.dequantize_8bit(&q8, &values), [5000], dev).to_vec();
        let Packed8bit { codes, .. } = q8;
        let len = dev.storage_len(&codes);
        let codes = Tensor::from_storage(codes, [len], dev).to_vec();
        (four, eight, codes.iter().map(|c| c.to_bits()).collect()) // the code bytes, 4 per element
    }
    for double in [false, true] {
        let (cpu, reference) = (
            expand(&Cpu::<f32>::new(), double),
            expand(&Reference::<f32>::new(), double),
        );
        assert_eq!(cpu, reference, "double-quantized absmax: {double}");
    }
}
