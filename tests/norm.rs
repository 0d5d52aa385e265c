//! Batch, layer, instance and group norm: the f64 twin against centered
//! finite differences, then the GPU against the twin.

mod common;

use common::{gpu, normal};
use gpuprep::cpu::norm::{norm_backward, norm_forward};
use gpuprep::model::norm::NormKind;
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
        _ => dims[1],
    }
}

/// The lecture's rel_error: max over elements of |a - b| / max(1e-8, |a| + |b|).
fn rel_error<'a>(a: impl IntoIterator<Item = &'a f64>, b: impl IntoIterator<Item = &'a f64>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (x.abs() + y.abs()).max(1e-8))
        .fold(0.0, f64::max)
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
    let fw = norm_forward(kind, x.view(), gamma.view(), beta.view(), eps).unwrap();
    let g = norm_backward(
        kind,
        x.view(),
        dy.view(),
        gamma.view(),
        fw.stats.mean.view(),
        fw.stats.invstd.view(),
    )
    .unwrap();
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
    let dims = x.shape();
    let (n, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    let groups = match kind {
        NormKind::Batch => c,
        NormKind::Layer => 1,
        NormKind::Instance => c,
        NormKind::Group { groups } => groups,
    };
    let a_len = gamma.len();
    let (mut sdx, mut sg, mut sb) = (0.0f64, vec![0.0; a_len], vec![0.0; a_len]);
    for (e, (xv, dv)) in x.iter().zip(dy.iter()).enumerate() {
        let (ni, ci, si) = (e / (c * s), (e / s) % c, e % s);
        let k = match kind {
            NormKind::Batch => ci,
            _ => ni * groups + ci / (c / groups),
        };
        let a = if kind == NormKind::Layer { ci * s + si } else { ci };
        let xh = (xv - stats.mean[k]) * stats.invstd[k];
        sdx = sdx.max((gamma[a] * stats.invstd[k] * dv).abs());
        sg[a] += (dv * xh).powi(2);
        sb[a] += dv * dv;
    }
    let _ = n;
    let m = |v: Vec<f64>| v.into_iter().fold(0.0f64, f64::max).sqrt();
    [sdx, m(sg), m(sb)]
}

/// Forward and backward of `kind` on the GPU (outputs poisoned with NaN)
/// against the f64 twin; returns the worst relative error.
fn gpu_case(kind: NormKind, dims: &[usize], offset: f32, seed: u64) -> f64 {
    let g = gpu();
    let a = affine_len(kind, dims);
    let x = tensor(dims, offset, 1.0, seed);
    let dy = tensor(dims, 0.0, 1.0, seed + 1);
    let gamma = vector(a, 1.0, 0.3, seed + 2).mapv(|v| v as f32 as f64);
    let beta = vector(a, 0.0, 0.3, seed + 3).mapv(|v| v as f32 as f64);
    let fw = norm_forward(kind, x.view(), gamma.view(), beta.view(), 1e-5).unwrap();
    let gr = norm_backward(
        kind,
        x.view(),
        dy.view(),
        gamma.view(),
        fw.stats.mean.view(),
        fw.stats.invstd.view(),
    )
    .unwrap();

    let norm = Norm::new(kind, dims[1]);
    let xg = GpuMatrix::upload(g, matrix(&x).view()).unwrap();
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
    let [sdx, sg, sb] = scales(kind, &x, &dy, &gamma, &fw.stats);
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
        assert!(
            e <= 1e-5,
            "{kind:?} {dims:?} offset {offset}: {what} rel error {e:e}"
        );
        worst = worst.max(e);
    }
    println!(
        "{:>8} {dims:?} offset {offset}: worst rel error {worst:.2e}",
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
