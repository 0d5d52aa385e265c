//! Batch, layer, instance, group and RMS norm: the f64 twin against centered
//! finite differences, then the GPU against the twin, and both against
//! PyTorch's own results.

mod common;

use common::{gpu, host_norm, normal, twin_norm};
use gpuprep::cpu::norm::norm_forward;
use gpuprep::model::norm::{NormKind, NormPlan, NormShape};
use gpuprep::ops::{Norm, NormForward, NormGrads, NormStats};
use gpuprep::{Error, GpuMatrix};
use ndarray::{Array1, Array2, ArrayD, IxDyn};

fn tensor(dims: &[usize], offset: f32, scale: f32, seed: u64) -> ArrayD<f64> {
    let rest: usize = dims[1..].iter().product();
    let m = normal(dims[0], rest, offset, scale, seed);
    ArrayD::from_shape_vec(IxDyn(dims), m.iter().map(|&v| v as f64).collect()).unwrap()
}

fn vector(len: usize, offset: f32, scale: f32, seed: u64) -> Array1<f64> {
    normal(1, len, offset, scale, seed).row(0).mapv(f64::from)
}

fn affine_len(kind: NormKind, dims: &[usize]) -> usize {
    match kind {
        NormKind::Layer => dims[1..].iter().product(),
        NormKind::LayerTrailing { len } | NormKind::Rms { len } => len,
        _ => dims[1],
    }
}

/// The lecture's rel_error: max over elements of |a - b| / max(1e-8, |a| + |b|).
fn rel_error<'a>(a: impl IntoIterator<Item = &'a f64>, b: impl IntoIterator<Item = &'a f64>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (x.abs() + y.abs()).max(1e-8))
        .fold(
            0.0,
            |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

/// Centered differences with h = 1e-5 at every element of `p`, dividing by
/// the step actually taken ((v + h) - (v - h) is not exactly 2h in floating point).
fn numeric_grad(p: &ArrayD<f64>, mut f: impl FnMut(&ArrayD<f64>) -> f64) -> ArrayD<f64> {
    let h = 1e-5;
    let mut q = p.clone();
    let mut g = ArrayD::zeros(p.raw_dim());
    for (i, gi) in g.iter_mut().enumerate() {
        let v = q.as_slice().unwrap()[i];
        q.as_slice_mut().unwrap()[i] = v + h;
        let fp = f(&q);
        q.as_slice_mut().unwrap()[i] = v - h;
        let fm = f(&q);
        q.as_slice_mut().unwrap()[i] = v;
        *gi = (fp - fm) / ((v + h) - (v - h));
    }
    g
}

/// rel_error of dx, dgamma, dbeta against finite differences of sum(y * dy).
fn grad_check(kind: NormKind, dims: &[usize], seed: u64, offset: f32) -> [f64; 3] {
    let x = tensor(dims, offset, 1.5, seed);
    let a = affine_len(kind, dims);
    let gamma = vector(a, 1.0, 0.5, seed + 1);
    let beta = vector(a, 0.0, 0.5, seed + 2);
    let dy = tensor(dims, 0.0, 1.0, seed + 3);
    let eps = 1e-5;
    let (_, g) = twin_norm(kind, &x, &dy, &gamma, &beta, eps);
    let loss = |x: &ArrayD<f64>, gm: &Array1<f64>, bt: &Array1<f64>| -> f64 {
        let y = norm_forward(kind, x.view(), gm.view(), bt.view(), eps).unwrap().y;
        (&y * &dy).sum()
    };
    let as1 = |p: &ArrayD<f64>| p.clone().into_dimensionality::<ndarray::Ix1>().unwrap();
    let ndx = numeric_grad(&x, |xp| loss(xp, &gamma, &beta));
    let ndg = numeric_grad(&gamma.clone().into_dyn(), |gp| loss(&x, &as1(gp), &beta));
    let ndb = numeric_grad(&beta.clone().into_dyn(), |bp| loss(&x, &gamma, &as1(bp)));
    [
        rel_error(&g.dx, &ndx),
        rel_error(&g.dgamma, &ndg),
        rel_error(&g.dbeta, &ndb),
    ]
}

#[test]
fn twin_gradient_check_every_kind() {
    let cases: &[(NormKind, &[usize])] = &[
        (NormKind::Batch, &[4, 5]),
        (NormKind::Batch, &[3, 2, 2, 3]),
        (NormKind::Batch, &[8, 1]),
        (NormKind::Layer, &[4, 5]),
        (NormKind::Layer, &[2, 3, 2, 2]),
        (NormKind::Instance, &[2, 3, 2, 3]),
        (NormKind::Group { groups: 2 }, &[2, 4, 3, 2]),
        (NormKind::Group { groups: 3 }, &[3, 6, 2]),
        (NormKind::Group { groups: 1 }, &[2, 3, 5]),
    ];
    let mut worst = [0.0f64; 3];
    for (i, (kind, dims)) in cases.iter().enumerate() {
        for offset in [0.0, 10.0] {
            let r = grad_check(*kind, dims, 10 + i as u64, offset);
            println!(
                "{:>8} {dims:?} offset {offset}: rel_error dx {:.1e} dgamma {:.1e} dbeta {:.1e}",
                kind.name(),
                r[0],
                r[1],
                r[2]
            );
            for k in 0..3 {
                assert!(r[k] <= 1e-7, "{kind:?} {dims:?} offset {offset}: {r:?}");
                worst[k] = worst[k].max(r[k]);
            }
        }
    }
    println!(
        "worst rel_error: dx {:.1e}, dgamma {:.1e}, dbeta {:.1e}",
        worst[0], worst[1], worst[2]
    );
}

#[test]
fn twin_rejects_bad_input() {
    let x = tensor(&[4, 6], 0.0, 1.0, 1);
    let g = Array1::<f64>::ones(6);
    let b = Array1::<f64>::zeros(6);
    let fw = |k| norm_forward(k, x.view(), g.view(), b.view(), 1e-5);
    assert!(matches!(
        fw(NormKind::Group { groups: 4 }),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        fw(NormKind::Group { groups: 0 }),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        fw(NormKind::Instance),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(norm_forward(NormKind::Batch, x.view(), g.view(), b.view(), -1.0).is_err());
    assert!(norm_forward(
        NormKind::Batch,
        x.view(),
        g.slice(ndarray::s![..5]),
        b.view(),
        1e-5
    )
    .is_err());
    let x1 = tensor(&[6, 1], 0.0, 1.0, 1)
        .into_shape_with_order(IxDyn(&[6]))
        .unwrap();
    assert!(matches!(
        norm_forward(NormKind::Layer, x1.view(), g.view(), b.view(), 1e-5),
        Err(Error::ShapeMismatch { .. })
    ));
    // layer norm over one feature is allowed: it outputs beta
    let x2 = tensor(&[3, 1], 0.0, 1.0, 1);
    let y = norm_forward(
        NormKind::Layer,
        x2.view(),
        Array1::ones(1).view(),
        Array1::from_elem(1, 0.5).view(),
        1e-5,
    )
    .unwrap();
    assert!(y.y.iter().all(|&v| v == 0.5));
}

fn matrix(t: &ArrayD<f64>) -> Array2<f32> {
    let n = t.shape()[0];
    Array2::from_shape_vec((n, t.len() / n), t.iter().map(|&v| v as f32).collect()).unwrap()
}

fn row(v: &Array1<f64>) -> Array2<f32> {
    v.mapv(|x| x as f32).insert_axis(ndarray::Axis(0))
}

/// `norm`'s forward and backward passes on the GPU, from the f32 rounding of
/// `x`, `dy`, `gamma` and `beta`.
fn gpu_norm(
    g: &gpuprep::Gpu,
    norm: &Norm,
    x: &ArrayD<f64>,
    dy: &ArrayD<f64>,
    gamma: &Array1<f64>,
    beta: &Array1<f64>,
) -> (NormForward, NormGrads) {
    let xg = GpuMatrix::upload(g, matrix(x).view()).unwrap();
    let (gg, bg) = (
        GpuMatrix::upload(g, row(gamma).view()).unwrap(),
        GpuMatrix::upload(g, row(beta).view()).unwrap(),
    );
    let f = norm.forward(g, &xg, &gg, &bg).unwrap();
    let b = norm
        .backward(
            g,
            &xg,
            &GpuMatrix::upload(g, matrix(dy).view()).unwrap(),
            &gg,
            &f.stats,
        )
        .unwrap();
    (f, b)
}

/// max |gpu - cpu| / max(scale, max |cpu|).
fn rel_err(gpu: impl IntoIterator<Item = f32>, cpu: &[f64], scale: f64) -> f64 {
    let cmax = cpu.iter().fold(scale, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = 0.0f64;
    let mut count = 0;
    for (g, c) in gpu.into_iter().zip(cpu) {
        worst = worst.max(if g.is_finite() {
            (g as f64 - c).abs()
        } else {
            f64::INFINITY
        });
        count += 1;
    }
    assert_eq!(count, cpu.len());
    worst / cmax
}

/// Scales for dx (largest |gamma * invstd * dy|), dgamma and dbeta (largest
/// l2 norm of the terms of one sum): the size of the terms these quantities
/// are differences or sums of, which they fall far below when they cancel.
fn scales(
    kind: NormKind,
    x: &ArrayD<f64>,
    dy: &ArrayD<f64>,
    gamma: &Array1<f64>,
    stats: &gpuprep::model::norm::NormSummary,
) -> [f64; 3] {
    let plan = plan_of(kind, x.shape());
    let NormShape { c, s, .. } = plan.shape;
    let a_len = gamma.len();
    let (mut sdx, mut sg, mut sb) = (0.0f64, vec![0.0; a_len], vec![0.0; a_len]);
    for (e, (xv, dv)) in x.iter().zip(dy.iter()).enumerate() {
        let (ni, ci, si) = (e / (c * s), (e / s) % c, e % s);
        let k = plan.stat_group(ni, ci, si);
        let a = plan.affine_index(ci, si);
        let xh = (xv - stats.mean[k]) * stats.invstd[k];
        sdx = sdx.max((gamma[a] * stats.invstd[k] * dv).abs());
        sg[a] += (dv * xh).powi(2);
        sb[a] += dv * dv;
    }
    let m = |v: Vec<f64>| v.into_iter().fold(0.0f64, f64::max).sqrt();
    [sdx, m(sg), m(sb)]
}

fn plan_of(kind: NormKind, dims: &[usize]) -> NormPlan {
    NormPlan::new("test", kind, NormShape::from_dims("test", dims).unwrap(), true).unwrap()
}

/// Forward and backward of `kind` on the GPU (outputs poisoned with NaN)
/// against the f64 twin; returns the worst relative error.
fn gpu_case(kind: NormKind, dims: &[usize], offset: f32, seed: u64) -> f64 {
    gpu_check(kind, &tensor(dims, offset, 1.0, seed), seed)
}

/// [`gpu_case`] on a given input `x` (f32 values held as f64).
fn gpu_check(kind: NormKind, x: &ArrayD<f64>, seed: u64) -> f64 {
    gpu_check_on(gpu(), kind, x, seed)
}

/// [`gpu_check`] on a given context.
fn gpu_check_on(g: &gpuprep::Gpu, kind: NormKind, x: &ArrayD<f64>, seed: u64) -> f64 {
    let dims = x.shape();
    let a = affine_len(kind, dims);
    let dy = tensor(dims, 0.0, 1.0, seed + 1);
    let gamma = vector(a, 1.0, 0.3, seed + 2).mapv(|v| v as f32 as f64);
    let beta = vector(a, 0.0, 0.3, seed + 3).mapv(|v| v as f32 as f64);
    let (fw, gr) = twin_norm(kind, x, &dy, &gamma, &beta, 1e-5);

    let norm = Norm::new(kind, dims[1]);
    let xg = GpuMatrix::upload(g, matrix(x).view()).unwrap();
    let dyg = GpuMatrix::upload(g, matrix(&dy).view()).unwrap();
    let gg = GpuMatrix::upload(g, row(&gamma).view()).unwrap();
    let bg = GpuMatrix::upload(g, row(&beta).view()).unwrap();
    let groups = fw.stats.mean.len();
    let out = NormForward {
        y: GpuMatrix::filled(g, xg.rows(), xg.cols(), f32::NAN).unwrap(),
        stats: NormStats {
            kind,
            buffer: GpuMatrix::filled(g, groups, 4, f32::NAN).unwrap(),
        },
    };
    let grads = NormGrads {
        dx: GpuMatrix::filled(g, xg.rows(), xg.cols(), f32::NAN).unwrap(),
        dgamma: GpuMatrix::filled(g, 1, a, f32::NAN).unwrap(),
        dbeta: GpuMatrix::filled(g, 1, a, f32::NAN).unwrap(),
    };
    let mut enc = g.encoder("t");
    norm.encode_forward_into(g, &mut enc, &xg, &gg, &bg, &out)
        .unwrap();
    norm.encode_backward_into(g, &mut enc, &xg, &dyg, &gg, &out.stats, &grads)
        .unwrap();
    g.submit("t", enc).unwrap();

    let st = out.stats.download(g).unwrap();
    let [sdx, sg, sb] = scales(kind, x, &dy, &gamma, &fw.stats);
    let std_max = fw.stats.var.iter().fold(0.0f64, |m, v| m.max(v.sqrt()));
    let errs = [
        (
            "y",
            rel_err(out.y.download(g).unwrap(), fw.y.as_slice().unwrap(), 0.0),
        ),
        // the mean relative to |mean| + std (a mean near 0 is known to about std * 1e-7 in f32)
        (
            "mean",
            rel_err(
                st.mean.iter().map(|&v| v as f32),
                fw.stats.mean.as_slice().unwrap(),
                std_max,
            ),
        ),
        (
            "invstd",
            rel_err(
                st.invstd.iter().map(|&v| v as f32),
                fw.stats.invstd.as_slice().unwrap(),
                0.0,
            ),
        ),
        (
            "dx",
            rel_err(grads.dx.download(g).unwrap(), gr.dx.as_slice().unwrap(), sdx),
        ),
        (
            "dgamma",
            rel_err(
                grads.dgamma.download(g).unwrap(),
                gr.dgamma.as_slice().unwrap(),
                sg,
            ),
        ),
        (
            "dbeta",
            rel_err(grads.dbeta.download(g).unwrap(), gr.dbeta.as_slice().unwrap(), sb),
        ),
    ];
    let mut worst = 0.0f64;
    for (what, e) in errs {
        assert!(e <= 1e-5, "{kind:?} {dims:?} seed {seed}: {what} rel error {e:e}");
        worst = worst.max(e);
    }
    // the variance: f32's rounding of the twin's (+inf beyond f32's range)
    for (gv, cv) in st.var.iter().zip(&fw.stats.var) {
        if *cv > f64::from(f32::MAX) {
            assert_eq!(*gv, f64::INFINITY, "{kind:?} {dims:?}: var {cv:e} beyond f32");
        } else {
            let e = (gv - cv).abs() / cv.max(1e-30);
            assert!(e <= 1e-5, "{kind:?} {dims:?}: var {gv:e} vs {cv:e}");
        }
    }
    println!(
        "{:>8} {kind:?} {dims:?}: worst rel error {worst:.2e}",
        kind.name()
    );
    worst
}

const KINDS: &[NormKind] = &[
    NormKind::Batch,
    NormKind::Layer,
    NormKind::Instance,
    NormKind::Group { groups: 2 },
];

/// Shapes for the row family: one sample, one feature, lengths that do not
/// divide the workgroup, many rows (several row blocks per dispatch).
const SHAPES: &[&[usize]] = &[
    &[1, 2, 3, 1],
    &[3, 2, 1, 2],
    &[5, 4, 4, 4],
    &[2, 6, 13, 11],
    &[70, 8, 3, 3],
    &[1000, 2, 1, 3],
    &[4, 2, 1000],
];

#[test]
fn gpu_matches_twin_every_kind() {
    let mut worst = 0.0f64;
    for (i, dims) in SHAPES.iter().enumerate() {
        for (j, &kind) in KINDS.iter().enumerate() {
            worst = worst.max(gpu_case(kind, dims, 0.5, 1000 + 100 * i as u64 + j as u64));
        }
    }
    // (N, D) input for layer and group norm (instance norm needs positions)
    for (i, dims) in [
        &[1usize, 1][..],
        &[7, 1],
        &[5, 7],
        &[3, 1000],
        &[600, 300],
        &[2, 257],
    ]
    .iter()
    .enumerate()
    {
        worst = worst.max(gpu_case(NormKind::Layer, dims, 0.5, 3000 + i as u64));
    }
    worst = worst.max(gpu_case(NormKind::Group { groups: 3 }, &[40, 9], 0.5, 3100));
    worst = worst.max(gpu_case(NormKind::Group { groups: 1 }, &[3, 5, 7], 0.5, 3101));
    println!("every kind, offset 0.5: worst GPU rel error {worst:.2e}");
}

#[test]
fn gpu_large_offset_every_kind() {
    let mut worst = 0.0f64;
    for (i, dims) in [&[3usize, 4, 5, 5][..], &[64, 6, 2, 2], &[2, 4, 40, 30]]
        .iter()
        .enumerate()
    {
        for (j, &kind) in KINDS.iter().enumerate() {
            worst = worst.max(gpu_case(kind, dims, 1e4, 5000 + 100 * i as u64 + j as u64));
        }
    }
    println!("every kind, offset 1e4: worst GPU rel error {worst:.2e}");
}

#[test]
fn gpu_many_affine_columns_use_a_2d_grid() {
    // layer norm's dgamma/dbeta finalize needs one workgroup per feature: 70,000 > 65,535.
    gpu_case(NormKind::Layer, &[3, 70_000], 0.0, 7);
}

#[test]
fn gpu_bad_input_is_an_error_not_a_panic() {
    let g = gpu();
    let x = GpuMatrix::filled(g, 4, 6, 1.0).unwrap();
    let ones = |n| GpuMatrix::filled(g, 1, n, 1.0).unwrap();
    let err = |r: gpuprep::Result<NormForward>| r.unwrap_err();
    assert!(matches!(
        err(Norm::new(NormKind::Group { groups: 4 }, 6).forward(g, &x, &ones(6), &ones(6))),
        Error::InvalidArgument { .. }
    ));
    assert!(matches!(
        err(Norm::new(NormKind::Batch, 4).forward(g, &x, &ones(4), &ones(4))),
        Error::ShapeMismatch { .. }
    ));
    assert!(matches!(
        err(Norm::new(NormKind::Layer, 6).forward(g, &x, &ones(5), &ones(6))),
        Error::ShapeMismatch { .. }
    ));
    assert!(matches!(
        err(Norm::new(NormKind::Instance, 6).forward(g, &x, &ones(6), &ones(6))),
        Error::InvalidArgument { .. }
    ));
    assert!(matches!(
        err(Norm::new(NormKind::Layer, 6)
            .with_eps(f32::NAN)
            .forward(g, &x, &ones(6), &ones(6))),
        Error::InvalidArgument { .. }
    ));
    let one = GpuMatrix::filled(g, 1, 6, 1.0).unwrap();
    assert!(matches!(
        err(Norm::new(NormKind::Batch, 6).forward(g, &one, &ones(6), &ones(6))),
        Error::InvalidArgument { .. }
    ));
    // statistics of another kind, and an output aliasing an input
    let layer = Norm::new(NormKind::Layer, 6);
    let f = layer.forward(g, &x, &ones(6), &ones(6)).unwrap();
    let group = Norm::new(NormKind::Group { groups: 6 }, 6);
    assert!(group.backward(g, &x, &x, &ones(6), &f.stats).is_err());
    let mut enc = g.encoder("t");
    let alias = NormForward {
        y: x.clone(),
        stats: f.stats.clone(),
    };
    assert!(matches!(
        layer.encode_forward_into(g, &mut enc, &x, &ones(6), &ones(6), &alias),
        Err(Error::InvalidArgument { .. })
    ));
}

/// PyTorch's `LayerNorm(normalized_shape)`: the shape is the tail of the
/// input's after dimension 0; all of `x.shape[1:]` is plain layer norm.
#[test]
fn layer_norm_normalized_shape_follows_pytorch() {
    let dims = [2usize, 3, 4, 5];
    assert_eq!(NormKind::layer("t", &dims, &[3, 4, 5]).unwrap(), NormKind::Layer);
    assert_eq!(
        NormKind::layer("t", &dims, &[4, 5]).unwrap(),
        NormKind::LayerTrailing { len: 20 }
    );
    assert_eq!(
        NormKind::layer("t", &dims, &[5]).unwrap(),
        NormKind::LayerTrailing { len: 5 }
    );
    for bad in [&[][..], &[4], &[5, 4], &[2, 3, 4, 5], &[3, 4, 6]] {
        let e = NormKind::layer("t", &dims, bad).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{bad:?}: {e}");
    }
    // the twin checks len against the dimensions themselves
    let x = tensor(&dims, 0.0, 1.0, 1);
    let k = NormKind::LayerTrailing { len: 10 }; // divides 60 but is no tail
    let e = norm_forward(
        k,
        x.view(),
        Array1::ones(10).view(),
        Array1::zeros(10).view(),
        1e-5,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // mean / invstd are shaped as the leading dimensions
    let plan = plan_of(NormKind::LayerTrailing { len: 20 }, &dims);
    assert_eq!((plan.stat_groups, plan.group_len, plan.affine_len), (6, 20, 20));
    assert_eq!(plan.stats_dims(&dims), vec![2, 3]);
    assert_eq!(
        plan_of(NormKind::LayerTrailing { len: 5 }, &dims).stats_dims(&dims),
        vec![2, 3, 4]
    );
    assert_eq!(
        plan_of(NormKind::LayerTrailing { len: 1 }, &[2, 3, 1]).stats_dims(&[2, 3, 1]),
        vec![2, 3]
    );
    // on the GPU: a length that does not divide the row, and gamma of the wrong length
    let g = gpu();
    let xg = GpuMatrix::filled(g, 4, 6, 1.0).unwrap();
    let ones = |n| GpuMatrix::filled(g, 1, n, 1.0).unwrap();
    assert!(matches!(
        Norm::layer(&[4]).forward(g, &xg, &ones(4), &ones(4)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Norm::layer(&[3]).forward(g, &xg, &ones(6), &ones(6)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(Norm::layer(&[3]).forward(g, &xg, &ones(3), &ones(3)).is_ok());
    assert!(matches!(
        Norm::layer(&[]).forward(g, &xg, &ones(1), &ones(1)),
        Err(Error::ShapeMismatch { .. })
    ));
}

fn layer_trailing(len: usize) -> NormKind {
    NormKind::LayerTrailing { len }
}

fn rms(len: usize) -> NormKind {
    NormKind::Rms { len }
}

/// [`grad_check`] of `kind(len)` over each `(dims, len)` of `cases` at both
/// offsets (seed `seed0` + the case's index): every rel_error within 1e-7.
fn grad_check_runs(
    name: &str,
    kind: fn(usize) -> NormKind,
    cases: &[(&[usize], usize)],
    offsets: [f32; 2],
    seed0: u64,
) {
    for (i, &(dims, len)) in cases.iter().enumerate() {
        for offset in offsets {
            let r = grad_check(kind(len), dims, seed0 + i as u64, offset);
            println!("{name} over {len} of {dims:?} offset {offset}: rel_error {r:?}");
            assert!(r.iter().all(|&e| e <= 1e-7), "{dims:?} {len}: {r:?}");
        }
    }
}

/// The worst of [`gpu_case`] of `kind(len)` over each `(dims, len)` of
/// `cases`, at offsets 0.5 and 1e4 (seed `seed0` + the case's index).
fn gpu_cases_runs(kind: fn(usize) -> NormKind, cases: &[(&[usize], usize)], seed0: u64) -> f64 {
    let mut worst = 0.0f64;
    for (i, &(dims, len)) in cases.iter().enumerate() {
        for offset in [0.5, 1e4] {
            worst = worst.max(gpu_case(kind(len), dims, offset, seed0 + i as u64));
        }
    }
    worst
}

#[test]
fn layer_norm_over_trailing_dims_twin_gradient_check_and_gpu() {
    let cases: &[(&[usize], usize)] = &[
        (&[2, 3, 2, 2], 4),
        (&[2, 3, 2, 3], 3),
        (&[3, 2, 1, 3], 3),
        (&[4, 3, 5], 5),
        (&[2, 2, 3, 1], 1),
    ];
    grad_check_runs("layer", layer_trailing, cases, [0.0, 10.0], 40);
    // GPU: rows of several runs, runs that do not divide the workgroup, many runs
    let mut worst = gpu_cases_runs(
        layer_trailing,
        &[
            (&[3, 4, 5, 5], 25),
            (&[2, 6, 13, 11], 11),
            (&[2, 6, 13, 11], 143),
            (&[70, 8, 3, 3], 9),
            (&[1000, 2, 1, 3], 3),
            (&[4, 2, 1000], 1000),
            (&[3, 7, 300], 300),
            (&[5, 64, 1, 1], 1),
        ],
        6000,
    );
    // layer norm's dgamma/dbeta over 70,000 affine entries: a 2-D finalize grid
    worst = worst.max(gpu_case(
        NormKind::LayerTrailing { len: 70_000 },
        &[2, 2, 70_000],
        0.0,
        6100,
    ));
    println!("layer norm over trailing dims: worst GPU rel error {worst:.2e}");
}

/// Issue 11: an eps of 0, or one that rounds to 0 (or to a subnormal) in f32,
/// made a constant group divide 0 by 0 and write NaN silently. Refused on
/// both paths; the smallest normal f32 works.
#[test]
fn eps_must_be_a_positive_normal_f32() {
    let g = gpu();
    let x = GpuMatrix::filled(g, 4, 6, 2.0).unwrap();
    let ones = |n| GpuMatrix::filled(g, 1, n, 1.0).unwrap();
    let xt = tensor(&[4, 6], 0.0, 1.0, 1).mapv(|_| 2.0);
    for kind in [NormKind::Batch, NormKind::Layer, NormKind::Group { groups: 2 }] {
        for eps in [0.0f64, -1e-5, 1e-50, 1e-40, f64::NAN, f64::INFINITY, 1e39] {
            let e = Norm::new(kind, 6)
                .with_eps(eps as f32)
                .forward(g, &x, &ones(6), &ones(6))
                .unwrap_err();
            assert!(
                matches!(e, Error::InvalidArgument { .. }),
                "{kind:?} eps {eps}: {e}"
            );
            let a = Array1::ones(6);
            let e = norm_forward(kind, xt.view(), a.view(), a.view(), eps).unwrap_err();
            assert!(e.to_string().contains("eps"), "{kind:?} eps {eps}: {e}");
        }
        // the smallest normal f32: a constant group gives y = beta exactly
        let f = Norm::new(kind, 6)
            .with_eps(f32::MIN_POSITIVE)
            .forward(g, &x, &ones(6), &GpuMatrix::filled(g, 1, 6, 0.25).unwrap())
            .unwrap();
        assert!(f.y.download(g).unwrap().iter().all(|&v| v == 0.25), "{kind:?}");
        let a = Array1::ones(6);
        let y = norm_forward(
            kind,
            xt.view(),
            a.view(),
            (0.25 * &a).view(),
            f64::from(f32::MIN_POSITIVE),
        )
        .unwrap();
        assert!(y.y.iter().all(|&v| v == 0.25));
    }
}

/// Issue 11: a NaN in a group gave the GPU a finite invstd of 1/sqrt(eps)
/// (WGSL's max(var, 0) drops NaN) where the twin has NaN. Now the group's
/// mean, variance and invstd are NaN on both, the other groups untouched.
#[test]
fn gpu_nan_group_has_nan_statistics_as_the_twin() {
    nan_group_has_nan_statistics(gpu());
}

fn nan_group_has_nan_statistics(g: &gpuprep::Gpu) {
    let dims = [6usize, 4, 3];
    for kind in [
        NormKind::Batch,
        NormKind::Layer,
        NormKind::Instance,
        NormKind::Group { groups: 2 },
        NormKind::LayerTrailing { len: 3 },
    ] {
        for bad in [f64::NAN, f64::INFINITY] {
            let mut x = tensor(&dims, 1.0, 1.0, 3);
            // element (n = 1, c = 2, s = 1)
            x[[1, 2, 1]] = bad;
            let a = affine_len(kind, &dims);
            let (gm, bt) = (Array1::<f64>::ones(a), Array1::<f64>::zeros(a));
            let want = norm_forward(kind, x.view(), gm.view(), bt.view(), 1e-5).unwrap();
            let xg = GpuMatrix::upload(g, matrix(&x).view()).unwrap();
            let f = Norm::new(kind, dims[1])
                .forward(
                    g,
                    &xg,
                    &GpuMatrix::filled(g, 1, a, 1.0).unwrap(),
                    &GpuMatrix::filled(g, 1, a, 0.0).unwrap(),
                )
                .unwrap();
            let st = f.stats.download(g).unwrap();
            let nan_groups = want.stats.invstd.iter().filter(|v| v.is_nan()).count();
            assert_eq!(nan_groups, 1, "{kind:?}");
            for (i, (gv, cv)) in st.invstd.iter().zip(&want.stats.invstd).enumerate() {
                assert_eq!(
                    gv.is_nan(),
                    cv.is_nan(),
                    "{kind:?} {bad}: invstd[{i}] GPU {gv} twin {cv}"
                );
                if !cv.is_nan() {
                    assert!((gv - cv).abs() <= 1e-5 * cv, "{kind:?} invstd[{i}] {gv} vs {cv}");
                }
                assert_eq!(
                    st.var[i].is_nan(),
                    want.stats.var[i].is_nan(),
                    "{kind:?} var[{i}]"
                );
                // (an inf makes the twin's mean inf and the GPU's Welford mean NaN)
                assert_eq!(
                    st.mean[i].is_finite(),
                    want.stats.mean[i].is_finite(),
                    "{kind:?} mean[{i}]"
                );
            }
            let y = f.y.download(g).unwrap();
            for (e, (gv, cv)) in y.iter().zip(want.y.iter()).enumerate() {
                assert_eq!(
                    gv.is_nan(),
                    cv.is_nan(),
                    "{kind:?} {bad}: y[{e}] GPU {gv} twin {cv}"
                );
            }
        }
    }
}

/// A seeded tensor of `scale * N(0, 1)`, with every third element moved to
/// `shift`: finite f32 data whose squared deviations overflow f32.
fn wide_tensor(dims: &[usize], scale: f32, shift: f32, seed: u64) -> ArrayD<f64> {
    let mut t = tensor(dims, 0.0, scale, seed);
    for (i, v) in t.iter_mut().enumerate() {
        if i % 3 == 1 {
            *v = f64::from(shift);
        }
        *v = f64::from((*v).clamp(-3.3e38, 3.3e38) as f32);
    }
    t
}

/// Issue 11: finite data whose squared deviations overflow f32 (a spread of
/// 1e20, values near +-3e38) gave inf variances and zero or NaN outputs on
/// the GPU. Those groups are now computed in units of 2^96: y, mean, invstd
/// and the gradients match the twin, the variance is +inf only where the
/// twin's exceeds f32's range.
#[test]
fn gpu_overflowing_spread_matches_the_twin() {
    let mut worst = 0.0f64;
    let kinds = [
        NormKind::Batch,
        NormKind::Layer,
        NormKind::Instance,
        NormKind::Group { groups: 2 },
        NormKind::LayerTrailing { len: 12 },
    ];
    for (i, &(scale, shift)) in [
        (1e20f32, 0.0f32),
        (1e20, 3e20),
        (1e38, 3e38),
        (1e38, -3.2e38),
        (3e19, 1.0),
    ]
    .iter()
    .enumerate()
    {
        for dims in [&[9usize, 4, 12][..], &[300, 2, 12]] {
            for (j, &kind) in kinds.iter().enumerate() {
                let x = wide_tensor(dims, scale, shift, 7000 + 10 * i as u64 + j as u64);
                worst = worst.max(gpu_check(kind, &x, 7000 + i as u64));
            }
        }
    }
    // one overflowing group among ordinary ones (the scaled and unscaled paths side by side)
    let mut x = tensor(&[40, 4, 12], 1.0, 1.0, 7100);
    for v in x.slice_mut(ndarray::s![.., 1, ..]).iter_mut() {
        *v = f64::from((*v * 1e25) as f32);
    }
    for &kind in &kinds {
        worst = worst.max(gpu_check(kind, &x, 7101));
    }
    println!("overflowing spreads: worst GPU rel error {worst:.2e}");
}

/// The row passes' workgroup-memory kernels, which a device with subgroups
/// (lavapipe has them) takes only for rows longer than 16 lanes of its
/// smallest subgroup: the row cases again on a context that keeps every row
/// on them (the subgroup kernels take the short rows above).
#[test]
fn workgroup_row_passes_match_twin_without_subgroups() {
    let g = gpuprep::Gpu::new().unwrap().without_subgroups();
    assert_eq!(g.subgroup_sizes(), None);
    let row_kinds = [NormKind::Layer, NormKind::Instance, NormKind::Group { groups: 2 }];
    let mut worst = 0.0f64;
    for (i, dims) in SHAPES.iter().enumerate() {
        for (j, &kind) in row_kinds.iter().enumerate() {
            let seed = 9000 + 100 * i as u64 + j as u64;
            for offset in [0.5, 1e4] {
                worst = worst.max(gpu_check_on(&g, kind, &tensor(dims, offset, 1.0, seed), seed));
            }
        }
    }
    for (i, &(scale, shift)) in [(1e20f32, 3e20f32), (1e38, -3.2e38)].iter().enumerate() {
        for (j, &kind) in row_kinds
            .iter()
            .chain(&[NormKind::LayerTrailing { len: 12 }])
            .enumerate()
        {
            let x = wide_tensor(&[9, 4, 12], scale, shift, 9500 + 10 * i as u64 + j as u64);
            worst = worst.max(gpu_check_on(&g, kind, &x, 9500 + i as u64));
        }
    }
    nan_group_has_nan_statistics(&g);
    println!("workgroup row passes: worst GPU rel error {worst:.2e}");
}

fn torch_npy(case: &str, name: &str) -> ArrayD<f64> {
    let p = format!(
        "{}/tests/data/torch/layer_norm/{case}/{name}.npy",
        env!("CARGO_MANIFEST_DIR")
    );
    ndarray_npy::read_npy(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// max |a - b| / max(scale, max |b|).
fn rel_to(a: impl IntoIterator<Item = f64>, b: &ArrayD<f64>, scale: f64) -> f64 {
    let bmax = b.iter().fold(scale, |m, v| m.max(v.abs())).max(1e-300);
    a.into_iter()
        .zip(b.iter())
        .map(|(x, y)| {
            if x.is_finite() {
                (x - y).abs()
            } else {
                f64::INFINITY
            }
        })
        .fold(
            0.0,
            |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
        / bmax
}

/// PyTorch's F.layer_norm over several normalized_shapes, forward and
/// autograd backward in f64 (tests/data/torch_conventions.py): the twin to
/// f64 rounding, the GPU to f32's.
#[test]
fn layer_norm_matches_pytorch() {
    let g = gpu();
    let cases: &[(&str, &[usize])] = &[
        ("nd_d", &[6]),
        ("nchw_w", &[5]),
        ("nchw_hw", &[4, 5]),
        ("nchw_chw", &[3, 4, 5]),
        ("ncl_l_offset", &[7]),
    ];
    for (case, ns) in cases {
        let t = |n| torch_npy(case, n);
        let x = t("x");
        let kind = NormKind::layer("test", x.shape(), ns).unwrap();
        let flat1 = |a: ArrayD<f64>| Array1::from_iter(a.iter().copied());
        let (gamma, beta, dy) = (flat1(t("gamma")), flat1(t("beta")), t("dy"));
        let (fw, gr) = twin_norm(kind, &x, &dy, &gamma, &beta, 1e-5);
        let [sdx, sg, sb] = scales(kind, &x, &dy, &gamma, &fw.stats);
        let cpu = [
            rel_to(fw.y.iter().copied(), &t("y"), 0.0),
            rel_to(gr.dx.iter().copied(), &t("dx"), sdx),
            rel_to(gr.dgamma.iter().copied(), &t("dgamma"), sg),
            rel_to(gr.dbeta.iter().copied(), &t("dbeta"), sb),
            rel_to(fw.stats.mean.iter().copied(), &t("mean"), 0.0),
            rel_to(fw.stats.invstd.iter().copied(), &t("rstd"), 0.0),
        ];
        // the GPU, from the f32 rounding of the same tensors
        let (f, b) = gpu_norm(g, &Norm::new(kind, x.shape()[1]), &x, &dy, &gamma, &beta);
        let st = f.stats.download(g).unwrap();
        let f64s = |m: Array2<f32>| m.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
        let std_max = fw.stats.var.iter().fold(0.0f64, |m, v| m.max(v.sqrt()));
        let gpu = [
            rel_to(f64s(f.y.download(g).unwrap()), &t("y"), 0.0),
            rel_to(f64s(b.dx.download(g).unwrap()), &t("dx"), sdx),
            rel_to(f64s(b.dgamma.download(g).unwrap()), &t("dgamma"), sg),
            rel_to(f64s(b.dbeta.download(g).unwrap()), &t("dbeta"), sb),
            rel_to(st.mean.iter().copied(), &t("mean"), std_max),
            rel_to(st.invstd.iter().copied(), &t("rstd"), 0.0),
        ];
        println!(
            "layer norm {case} {:?} normalized_shape {ns:?} vs PyTorch (y, dx, dgamma, dbeta, mean, rstd): \
             twin {:.1e}, GPU {:.1e}",
            x.shape(),
            cpu.iter().fold(0.0f64, |m, v| m.max(*v)),
            gpu.iter().fold(0.0f64, |m, v| m.max(*v))
        );
        assert!(cpu.iter().all(|&e| e <= 1e-12), "{case}: twin {cpu:?}");
        assert!(gpu.iter().all(|&e| e <= 1e-5), "{case}: GPU {gpu:?}");
    }
}

#[test]
fn rows_too_long_for_the_loop_limit_are_refused() {
    // Lavapipe ends every loop of an invocation after 65,535 iterations in
    // all: an instance norm of 1 x 1 x 8,500,000 (one row, 33,204 elements
    // per lane) left 225,600 gradients unwritten. Where the adapter has such
    // a limit, rows that would run an invocation past half of it are
    // refused. A context held to 2,000 iterations draws the line at small
    // shapes: rows of 100,000 run (and match the twin), rows of 153,600 run
    // forward (1.5 iterations per element per lane) but not backward (2),
    // rows of 200,000 run neither.
    let small = gpuprep::Gpu::new().unwrap().with_loop_limit(Some(2000));
    let err = gpu_check_on(&small, NormKind::Layer, &tensor(&[2, 100_000], 1.0e3, 1.0, 5), 5);
    assert!(err <= 1e-5);
    for (len, forward_ok) in [(153_600, true), (200_000, false)] {
        let norm = Norm::new(NormKind::Layer, len);
        let x = GpuMatrix::filled(&small, 2, len, 1.0).unwrap();
        let ones = GpuMatrix::filled(&small, 1, len, 1.0).unwrap();
        let out = norm.alloc_forward(&small, &x).unwrap();
        let grads = norm.alloc_backward(&small, &x).unwrap();
        let mut enc = small.encoder("t");
        let fwd = norm.encode_forward_into(&small, &mut enc, &x, &ones, &ones, &out);
        assert_eq!(fwd.is_ok(), forward_ok, "rows of {len} forward: {fwd:?}");
        let bwd = norm.encode_backward_into(&small, &mut enc, &x, &x, &ones, &out.stats, &grads);
        assert!(
            matches!(bwd, Err(Error::ExceedsLimit { .. })),
            "rows of {len} backward: {bwd:?}"
        );
    }
    // The adapter's own limit, where it has one: a row of 6 million.
    let g = gpu();
    if g.loop_limit().is_some() {
        let len = 6_000_000;
        let norm = Norm::new(NormKind::Layer, len);
        let x = GpuMatrix::filled(g, 1, len, 1.0).unwrap();
        let ones = GpuMatrix::filled(g, 1, len, 1.0).unwrap();
        assert!(matches!(
            norm.forward(g, &x, &ones, &ones),
            Err(Error::ExceedsLimit { .. })
        ));
    }
}

#[test]
fn parameter_gradients_over_many_partials() {
    // 64 samples of 2^18 positions in pieces of 1 MiB: 2^24 partials for the
    // one channel's dgamma and dbeta, which grad_finalize's threads walk.
    // One at a time that was 65,536 loop iterations per thread, and lavapipe
    // (65,535 per invocation) stopped short: dgamma rel error 0.93, dbeta
    // 0.89. Four at a time it is 16,384.
    let g = gpuprep::Gpu::new().unwrap().with_max_piece_bytes(1 << 20);
    let x = tensor(&[64, 1, 1 << 18], 3.0, 1.0, 17);
    let err = gpu_check_on(&g, NormKind::Instance, &x, 17);
    assert!(err <= 1e-5);
}

fn torch_rms(case: &str, name: &str) -> Option<ArrayD<f64>> {
    let p = format!(
        "{}/tests/data/torch/rms_norm/{case}/{name}.npy",
        env!("CARGO_MANIFEST_DIR")
    );
    std::path::Path::new(&p)
        .exists()
        .then(|| ndarray_npy::read_npy(&p).unwrap_or_else(|e| panic!("{p}: {e}")))
}

/// RMS norm, the twin against centered finite differences and the GPU
/// against the twin: rows of several runs, runs that do not divide the
/// workgroup, many runs, one element per run, a large offset.
#[test]
fn rms_norm_twin_gradient_check_and_gpu() {
    let cases: &[(&[usize], usize)] = &[
        (&[4, 5], 5),
        (&[2, 3, 2, 2], 4),
        (&[2, 3, 2, 3], 18),
        (&[3, 2, 1, 3], 3),
        (&[1, 7], 7),
    ];
    // (An offset of 10 over runs of three makes the rows nearly parallel
    // to their normalization: dx, orthogonal to x, is then mostly
    // cancellation, and the differences' h^2 error dominates it.)
    grad_check_runs("rms", rms, cases, [0.0, 2.0], 70);
    let worst = gpu_cases_runs(
        rms,
        &[
            (&[1, 1], 1),
            (&[3, 4, 5, 5], 25),
            (&[2, 6, 13, 11], 11),
            (&[2, 6, 13, 11], 858),
            (&[70, 8, 3, 3], 9),
            (&[1000, 2, 1, 3], 3),
            (&[4, 2, 1000], 2000),
            (&[5, 64, 1, 1], 1),
        ],
        7000,
    );
    println!("rms norm: worst GPU rel error {worst:.2e}");
}

/// RMS norm against PyTorch's `F.rms_norm` in float64 with autograd
/// (tests/data/torch_rms_norm.py), 2-D to 4-D, with and without a weight,
/// eps given or PyTorch's default (the dtype's machine epsilon): the f64
/// twin and the host path in f64 to 1e-12, the host path in f32 to 1e-6,
/// the GPU to 1e-5.
#[test]
fn rms_norm_matches_pytorch() {
    let g = gpu();
    let cases: &[(&str, &[usize])] = &[
        ("nd_d", &[8]),
        ("nd_d_noweight", &[8]),
        ("ntd_d", &[7]),
        ("nchw_hw", &[4, 5]),
        ("nchw_chw_noweight", &[3, 4, 5]),
        ("offset_d", &[6]),
    ];
    let flat1 = |a: ArrayD<f64>| Array1::from_iter(a.iter().copied());
    for (case, ns) in cases {
        let t = |n| torch_rms(case, n).unwrap_or_else(|| panic!("{case}/{n}.npy"));
        let x = t("x");
        let kind = NormKind::rms("test", x.shape(), ns).unwrap();
        let len: usize = ns.iter().product();
        assert_eq!(kind, NormKind::Rms { len });
        let weighted = torch_rms(case, "weight").is_some();
        let gamma = torch_rms(case, "weight").map_or_else(|| Array1::ones(len), flat1);
        let beta = Array1::<f64>::zeros(len);
        let eps = t("eps").into_iter().next().unwrap();
        let dy = t("dy");
        // the rstd PyTorch's leading dimensions shape
        let rstd = t("rstd");
        let (fw, gr) = twin_norm(kind, &x, &dy, &gamma, &beta, eps);
        assert!(fw.stats.mean.iter().all(|&m| m == 0.0), "RMS norm has no mean");
        let [sdx, sg, _] = scales(kind, &x, &dy, &gamma, &fw.stats);
        let mut cpu = vec![
            rel_to(fw.y.iter().copied(), &t("y"), 0.0),
            rel_to(gr.dx.iter().copied(), &t("dx"), sdx),
            rel_to(fw.stats.invstd.iter().copied(), &rstd, 0.0),
        ];
        if weighted {
            cpu.push(rel_to(gr.dgamma.iter().copied(), &t("dweight"), sg));
        }
        // the host path, in f64 and in f32
        let (hy, _, (hdx, hdg, _)) = host_norm(kind, x.view(), dy.view(), &gamma, &beta, eps);
        let mut host = vec![
            rel_to(hy.iter().copied(), &t("y"), 0.0),
            rel_to(hdx.iter().copied(), &t("dx"), sdx),
        ];
        if weighted {
            host.push(rel_to(hdg.iter().copied(), &t("dweight"), sg));
        }
        let (x32, dy32) = (x.mapv(|v| v as f32), dy.mapv(|v| v as f32));
        let (fy, _, (fdx, fdg, _)) = host_norm(kind, x32.view(), dy32.view(), &gamma, &beta, eps);
        let f64s = |a: ArrayD<f32>| a.mapv(f64::from);
        let mut host32 = vec![
            rel_to(f64s(fy).iter().copied(), &t("y"), 0.0),
            rel_to(f64s(fdx).iter().copied(), &t("dx"), sdx),
        ];
        if weighted {
            host32.push(rel_to(fdg.iter().copied(), &t("dweight"), sg));
        }
        // the GPU, from the f32 rounding of the same tensors
        let (f, b) = gpu_norm(g, &Norm::rms(ns).with_eps(eps as f32), &x, &dy, &gamma, &beta);
        let st = f.stats.download(g).unwrap();
        let f32s = |m: Array2<f32>| m.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
        let mut gpu = vec![
            rel_to(f32s(f.y.download(g).unwrap()), &t("y"), 0.0),
            rel_to(f32s(b.dx.download(g).unwrap()), &t("dx"), sdx),
            rel_to(st.invstd.iter().copied(), &rstd, 0.0),
        ];
        if weighted {
            gpu.push(rel_to(f32s(b.dgamma.download(g).unwrap()), &t("dweight"), sg));
        }
        let worst = |v: &[f64]| v.iter().fold(0.0f64, |m, e| m.max(*e));
        println!(
            "rms norm {case} {:?} normalized_shape {ns:?} eps {eps:e} vs PyTorch (y, dx, rstd[, dweight]): \
             twin {:.1e}, host f64 {:.1e}, host f32 {:.1e}, GPU {:.1e}",
            x.shape(),
            worst(&cpu),
            worst(&host),
            worst(&host32),
            worst(&gpu)
        );
        assert!(worst(&cpu) <= 1e-12, "{case}: twin {cpu:?}");
        assert!(worst(&host) <= 1e-12, "{case}: host {host:?}");
        assert!(worst(&host32) <= 1e-6, "{case}: host f32 {host32:?}");
        assert!(worst(&gpu) <= 1e-5, "{case}: GPU {gpu:?}");
    }
}

#[test]
fn rms_norm_needs_a_tail_of_the_shape_and_defaults_to_f32_epsilon() {
    let dims = [2, 3, 4, 5];
    assert_eq!(
        NormKind::rms("t", &dims, &[3, 4, 5]).unwrap(),
        NormKind::Rms { len: 60 }
    );
    assert_eq!(NormKind::rms("t", &dims, &[5]).unwrap(), NormKind::Rms { len: 5 });
    for bad in [&[][..], &[4][..], &[2, 3, 4, 5][..]] {
        assert!(NormKind::rms("t", &dims, bad).is_err(), "{bad:?}");
    }
    assert!(!NormKind::Rms { len: 5 }.centers() && NormKind::Layer.centers());
    assert_eq!(NormKind::Rms { len: 5 }.name(), "rms");
    assert_eq!(Norm::rms(&[4, 5]).eps, f32::EPSILON);
    assert_eq!(Norm::rms(&[4, 5]).kind, NormKind::Rms { len: 20 });
}
