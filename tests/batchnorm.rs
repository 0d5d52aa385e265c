//! Batch norm: the CPU twin's staged graph against its closed form, the
//! running-statistics conventions, and the GPU layer against the f64 twin.

mod common;

use common::{gpu, normal, twin_norm};
use gpuprep::cpu::batchnorm::{
    backward_closed, backward_staged, forward_staged, from_channels_last, to_channels_last,
};
use gpuprep::model::norm::NormKind;
use gpuprep::model::norm::RunningStatsConfig;
use gpuprep::ops::{BatchNorm, NormGrads};
use gpuprep::{Error, GpuMatrix};
use ndarray::{Array1, Array2, ArrayD, IxDyn};

/// A seeded tensor of `offset + scale * N(0, 1)` in f32, held as f64 (so GPU and CPU see the same values).
fn tensor(dims: &[usize], offset: f32, scale: f32, seed: u64) -> ArrayD<f64> {
    let n = dims[0];
    let rest: usize = dims[1..].iter().product();
    let m = normal(n, rest, offset, scale, seed);
    ArrayD::from_shape_vec(IxDyn(dims), m.iter().map(|&v| v as f64).collect()).unwrap()
}

fn max_abs_diff<'a>(a: impl IntoIterator<Item = &'a f64>, b: impl IntoIterator<Item = &'a f64>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

/// max |gpu - cpu| / max(scale, max |cpu|): the error relative to the size of
/// the reference (or of the terms it is computed from, `scale`).
fn rel_err(gpu: impl IntoIterator<Item = f32>, cpu: &[f64], scale: f64) -> f64 {
    let cmax = cpu.iter().fold(scale, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = 0.0f64;
    let mut count = 0;
    for (g, c) in gpu.into_iter().zip(cpu) {
        let e = if g.is_finite() {
            (g as f64 - c).abs()
        } else {
            f64::INFINITY
        };
        worst = worst.max(e);
        count += 1;
    }
    assert_eq!(count, cpu.len(), "length");
    worst / cmax
}

fn matrix(t: &ArrayD<f64>) -> Array2<f32> {
    let n = t.shape()[0];
    let rest = t.len() / n;
    Array2::from_shape_vec((n, rest), t.iter().map(|&v| v as f32).collect()).unwrap()
}

#[test]
fn staged_graph_and_closed_form_agree() {
    for (i, dims) in [
        vec![4usize, 5],
        vec![7, 3],
        vec![2, 3, 4, 5],
        vec![16, 1],
        vec![1, 2, 3, 3],
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 + i as u64;
        let x = tensor(dims, 3.0, 2.0, seed);
        let dy = tensor(dims, 0.0, 1.0, seed + 1);
        let c = dims[1];
        let gamma = Array1::from_iter((0..c).map(|j| 0.5 + j as f64 * 0.25));
        let beta = Array1::from_iter((0..c).map(|j| j as f64 * 0.1 - 0.2));
        let xm = to_channels_last(x.view()).unwrap();
        let dym = to_channels_last(dy.view()).unwrap();
        let (out, cache) = forward_staged(xm.view(), gamma.view(), beta.view(), 1e-5).unwrap();
        let (dx_s, dg_s, db_s) = backward_staged(dym.view(), &cache).unwrap();
        let (dx_c, dg_c, db_c) =
            backward_closed(dym.view(), cache.xhat.view(), gamma.view(), cache.ivar.view()).unwrap();
        let (fw, g) = twin_norm(NormKind::Batch, &x, &dy, &gamma, &beta, 1e-5);
        let errs = [
            max_abs_diff(&dx_s, &dx_c),
            max_abs_diff(&dg_s, &dg_c),
            max_abs_diff(&db_s, &db_c),
            max_abs_diff(&from_channels_last(out.view(), dims).unwrap(), &fw.y),
            max_abs_diff(&from_channels_last(dx_s.view(), dims).unwrap(), &g.dx),
            max_abs_diff(&dg_s, &g.dgamma),
            max_abs_diff(&db_s, &g.dbeta),
        ];
        println!("{dims:?}: staged vs closed form, max |diff| {errs:?}");
        assert!(errs.iter().all(|&e| e <= 1e-12), "{dims:?}: {errs:?}");
    }
}

#[test]
fn running_statistics_conventions() {
    let dims = [6usize, 3, 2, 2];
    let x1 = tensor(&dims, 1.0, 2.0, 7);
    let x2 = tensor(&dims, -3.0, 0.5, 8);
    let m = 24.0;
    let train2 = |config| {
        let mut bn = gpuprep::cpu::batchnorm::BatchNorm::new(3, config);
        let (_, s1) = bn.forward_train(x1.view()).unwrap();
        let (_, s2) = bn.forward_train(x2.view()).unwrap();
        (bn, s1, s2)
    };
    // PyTorch: momentum 0.1 weights the new batch; unbiased running variance; starts at (0, 1)
    let (bn, s1, s2) = train2(RunningStatsConfig::pytorch());
    assert_eq!(bn.num_batches_tracked, 2);
    for c in 0..3 {
        let rm = 0.9 * (0.1 * s1.mean[c]) + 0.1 * s2.mean[c];
        let rv = 0.9 * (0.9 + 0.1 * s1.var[c] * m / (m - 1.0)) + 0.1 * s2.var[c] * m / (m - 1.0);
        assert!((bn.running_mean[c] - rm).abs() < 1e-14 && (bn.running_var[c] - rv).abs() < 1e-14);
    }
    // the lecture: running = 0.9 * running + 0.1 * batch, biased variance, starts at 0
    let (bn, s1, s2) = train2(RunningStatsConfig::lecture());
    for c in 0..3 {
        let rm = 0.9 * (0.1 * s1.mean[c]) + 0.1 * s2.mean[c];
        let rv = 0.9 * (0.1 * s1.var[c]) + 0.1 * s2.var[c];
        assert!((bn.running_mean[c] - rm).abs() < 1e-14 && (bn.running_var[c] - rv).abs() < 1e-14);
    }
    // momentum None: the plain average of the batches
    let (bn, s1, s2) = train2(RunningStatsConfig::cumulative());
    for c in 0..3 {
        let rm = 0.5 * (s1.mean[c] + s2.mean[c]);
        let rv = 0.5 * (s1.var[c] + s2.var[c]) * m / (m - 1.0);
        assert!((bn.running_mean[c] - rm).abs() < 1e-14 && (bn.running_var[c] - rv).abs() < 1e-14);
    }
    // eval normalizes with the running statistics
    let y = bn.forward_eval(x1.view()).unwrap();
    for (e, (v, xv)) in y.iter().zip(x1.iter()).enumerate() {
        let c = (e / 4) % 3;
        let want = (xv - bn.running_mean[c]) / (bn.running_var[c] + 1e-5).sqrt();
        assert!((v - want).abs() < 1e-13);
    }
}

#[test]
fn one_value_per_channel_in_training_is_an_error() {
    let mut bn = gpuprep::cpu::batchnorm::BatchNorm::new(3, RunningStatsConfig::pytorch());
    for dims in [vec![1usize, 3], vec![1, 3, 1, 1]] {
        let x = tensor(&dims, 0.0, 1.0, 1);
        let e = bn.forward_train(x.view()).unwrap_err().to_string();
        assert!(
            e.contains("Expected more than 1 value per channel when training"),
            "{e}"
        );
        assert!(bn.forward_eval(x.view()).is_ok());
    }
    // N = 1 with several positions is fine
    assert!(bn
        .forward_train(tensor(&[1, 3, 2, 1], 0.0, 1.0, 2).view())
        .is_ok());

    let g = gpu();
    let mut gbn = BatchNorm::new(g, 3, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    let x = GpuMatrix::filled(g, 1, 3, 1.0).unwrap();
    let e = gbn.forward_train(g, &x).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e
        .to_string()
        .contains("Expected more than 1 value per channel when training"));
    assert!(gbn.forward_eval(g, &x).is_ok());
    assert_eq!(gbn.num_batches_tracked(), 0);
}

#[test]
fn gpu_bad_input_is_an_error_not_a_panic() {
    let g = gpu();
    let mut bn = BatchNorm::new(g, 4, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    let x = GpuMatrix::filled(g, 5, 6, 1.0).unwrap(); // 6 columns are not 4 channels x S
    assert!(matches!(
        bn.forward_train(g, &x),
        Err(Error::ShapeMismatch { .. })
    ));
    // No forward_train yet: no saved statistics to differentiate with.
    let x = GpuMatrix::filled(g, 5, 8, 1.0).unwrap();
    assert!(matches!(
        bn.backward(g, &x, &x),
        Err(Error::InvalidArgument { .. })
    ));
    let y = bn.forward_train(g, &x).unwrap();
    // The saved statistics are of a 5-row batch, not of this one.
    let other = GpuMatrix::filled(g, 10, 8, 1.0).unwrap();
    assert!(matches!(
        bn.backward(g, &other, &other),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(bn.backward(g, &x, &y).is_ok());
    let dy = GpuMatrix::filled(g, 5, 4, 1.0).unwrap();
    assert!(matches!(
        bn.backward(g, &x, &dy),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut enc = g.encoder("t");
    assert!(matches!(
        bn.encode_forward_train_into(g, &mut enc, &x, &x),
        Err(Error::InvalidArgument { .. })
    ));
    let bad = NormGrads {
        dx: y.clone(),
        dgamma: GpuMatrix::uninit(g, 1, 3).unwrap(),
        dbeta: GpuMatrix::uninit(g, 1, 4).unwrap(),
    };
    assert!(matches!(
        bn.encode_backward_into(g, &mut enc, &x, &y, &bad),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(BatchNorm::new(g, 0, RunningStatsConfig::pytorch(), 1e-5).is_err());
    assert!(BatchNorm::new(g, 2, RunningStatsConfig::pytorch(), -1.0).is_err());
    let mut bad_m = RunningStatsConfig::pytorch();
    bad_m.momentum = Some(1.5);
    assert!(BatchNorm::new(g, 2, bad_m, 1e-5).is_err());
}

/// The largest |gamma * invstd * dy|: the size of the terms dx is the
/// difference of (dx itself is tiny when N * S is 2).
fn dx_scale(dy: &ArrayD<f64>, gamma: &Array1<f64>, invstd: &Array1<f64>) -> f64 {
    let c = dy.shape()[1];
    let s: usize = dy.shape()[2..].iter().product();
    dy.iter()
        .enumerate()
        .map(|(e, v)| (gamma[(e / s) % c] * invstd[(e / s) % c] * v).abs())
        .fold(0.0, f64::max)
}

/// The l2 norms of the terms of dgamma = sum(dy * xhat) and dbeta = sum(dy)
/// (largest over channels): the size of a sum of random-sign terms, which a
/// sum that cancels by chance falls far below (its f32 error does not).
fn sum_scales(x: &ArrayD<f64>, dy: &ArrayD<f64>, mean: &Array1<f64>, invstd: &Array1<f64>) -> (f64, f64) {
    let c = x.shape()[1];
    let s: usize = x.shape()[2..].iter().product();
    let mut sg = vec![0.0; c];
    let mut sb = vec![0.0; c];
    for (e, (xv, dv)) in x.iter().zip(dy.iter()).enumerate() {
        let ch = (e / s) % c;
        let t = dv * (xv - mean[ch]) * invstd[ch];
        sg[ch] += t * t;
        sb[ch] += dv * dv;
    }
    let m = |v: Vec<f64>| v.into_iter().fold(0.0f64, f64::max).sqrt();
    (m(sg), m(sb))
}

/// The checks of one case, each of a relative error of at most 1e-5.
struct Checks {
    case: String,
    worst: f64,
}

impl Checks {
    /// Checks `what` ([`rel_err`] of `gpu` against `cpu`) and notes its error.
    fn note(&mut self, what: &str, gpu: impl IntoIterator<Item = f32>, cpu: &[f64], scale: f64) {
        let e = rel_err(gpu, cpu, scale);
        assert!(e <= 1e-5, "{}: {what} rel error {e:e}", self.case);
        self.worst = self.worst.max(e);
    }
}

/// Three training steps, eval, and a backward pass: GPU layer against the
/// f64 layer. Returns the worst relative error seen.
fn gpu_layer_case(dims: &[usize], offset: f32, config: RunningStatsConfig, seed: u64) -> f64 {
    let g = gpu();
    let c = dims[1];
    let gamma = Array1::from_iter((0..c).map(|j| 0.75 + 0.5 * ((j * 7 % 5) as f64) / 5.0));
    let beta = Array1::from_iter((0..c).map(|j| ((j * 3 % 7) as f64) / 7.0 - 0.5));
    let gf = gamma.mapv(|v| v as f32);
    let bf = beta.mapv(|v| v as f32);
    let mut cpu = gpuprep::cpu::batchnorm::BatchNorm::new(c, config);
    cpu.gamma = gf.mapv(f64::from);
    cpu.beta = bf.mapv(f64::from);
    let mut bn = BatchNorm::with_affine(g, gf.view(), bf.view(), config, 1e-5).unwrap();
    let mut checks = Checks {
        case: format!("{dims:?} offset {offset} {config:?}"),
        worst: 0.0,
    };
    let mut last = None;
    for step in 0..3u64 {
        let x = tensor(dims, offset, 1.0 + step as f32 * 0.5, seed + step);
        let (y_cpu, saved) = cpu.forward_train(x.view()).unwrap();
        let xg = GpuMatrix::upload(g, matrix(&x).view()).unwrap();
        let yg = GpuMatrix::filled(g, xg.rows(), xg.cols(), f32::NAN).unwrap();
        bn.saved_stats().buffer.fill(g, f32::NAN).unwrap();
        let mut enc = g.encoder("t");
        bn.encode_forward_train_into(g, &mut enc, &xg, &yg).unwrap();
        g.submit("t", enc).unwrap();
        checks.note("y", yg.download(g).unwrap(), y_cpu.as_slice().unwrap(), 0.0);
        let st = bn.saved_stats().download(g).unwrap();
        // the mean relative to |mean| + std (a mean near 0 is known to about std * 1e-7 in f32)
        let std_max = saved.var.iter().fold(0.0f64, |m, v| m.max(v.sqrt()));
        checks.note(
            "mean",
            st.mean.iter().map(|&v| v as f32),
            saved.mean.as_slice().unwrap(),
            std_max,
        );
        checks.note(
            "invstd",
            st.invstd.iter().map(|&v| v as f32),
            saved.invstd.as_slice().unwrap(),
            0.0,
        );
        last = Some((x, xg, saved));
    }
    assert_eq!(bn.num_batches_tracked(), 3);
    checks.note(
        "running_mean",
        bn.running_mean(g).unwrap(),
        cpu.running_mean.as_slice().unwrap(),
        0.0,
    );
    checks.note(
        "running_var",
        bn.running_var(g).unwrap(),
        cpu.running_var.as_slice().unwrap(),
        0.0,
    );
    let (x, xg, saved) = last.unwrap();
    // eval mode
    let ye_cpu = cpu.forward_eval(x.view()).unwrap();
    let ye = GpuMatrix::filled(g, xg.rows(), xg.cols(), f32::NAN).unwrap();
    let mut enc = g.encoder("t");
    bn.encode_forward_eval_into(g, &mut enc, &xg, &ye).unwrap();
    g.submit("t", enc).unwrap();
    checks.note("y_eval", ye.download(g).unwrap(), ye_cpu.as_slice().unwrap(), 0.0);
    // backward of the last training step
    let dy = tensor(dims, 0.0, 1.0, seed + 100);
    let (dx, dgamma, dbeta) = cpu.backward(x.view(), dy.view(), &saved).unwrap();
    let dyg = GpuMatrix::upload(g, matrix(&dy).view()).unwrap();
    let grads = NormGrads {
        dx: GpuMatrix::filled(g, xg.rows(), xg.cols(), f32::NAN).unwrap(),
        dgamma: GpuMatrix::filled(g, 1, c, f32::NAN).unwrap(),
        dbeta: GpuMatrix::filled(g, 1, c, f32::NAN).unwrap(),
    };
    let mut enc = g.encoder("t");
    bn.encode_backward_into(g, &mut enc, &xg, &dyg, &grads).unwrap();
    g.submit("t", enc).unwrap();
    let scale = dx_scale(&dy, &cpu.gamma, &saved.invstd);
    checks.note("dx", grads.dx.download(g).unwrap(), dx.as_slice().unwrap(), scale);
    let (sg, sb) = sum_scales(&x, &dy, &saved.mean, &saved.invstd);
    checks.note(
        "dgamma",
        grads.dgamma.download(g).unwrap(),
        dgamma.as_slice().unwrap(),
        sg,
    );
    checks.note(
        "dbeta",
        grads.dbeta.download(g).unwrap(),
        dbeta.as_slice().unwrap(),
        sb,
    );
    println!("{dims:?} offset {offset}: worst rel error {:.2e}", checks.worst);
    checks.worst
}

/// (N, D) and (N, C, H, W) shapes: N = 2 and N = 1 with positions, D = 1,
/// sizes that do not divide the workgroup, several workgroups on both axes.
const SHAPES: &[&[usize]] = &[
    &[2, 1],
    &[7, 1],
    &[5, 3],
    &[1000, 1],
    &[3, 64],
    &[63, 65],
    &[1025, 130],
    &[4099, 300],
    &[1, 2, 3, 1],
    &[2, 3, 1, 1],
    &[5, 3, 4, 4],
    &[9, 16, 7, 7],
    &[33, 5, 1, 3],
];

/// [`gpu_layer_case`] under PyTorch's running statistics on each of `shapes`
/// (seeds `seed`, `seed + 10`, ...); prints the worst relative error.
fn gpu_layer_cases(shapes: &[&[usize]], offset: f32, seed: u64) {
    let mut worst = 0.0f64;
    for (i, dims) in shapes.iter().enumerate() {
        let config = RunningStatsConfig::pytorch();
        worst = worst.max(gpu_layer_case(dims, offset, config, seed + 10 * i as u64));
    }
    println!("batch norm, offset {offset}: worst GPU rel error {worst:.2e}");
}

#[test]
fn gpu_layer_matches_twin_on_awkward_shapes() {
    gpu_layer_cases(SHAPES, 0.5, 100);
}

#[test]
fn gpu_layer_large_offset_keeps_precision() {
    // 1e4 + unit noise: x - mean must not lose the noise in f32.
    let shapes: &[&[usize]] = &[&[2, 3], &[1000, 7], &[4099, 70], &[20000, 3], &[6, 4, 5, 5]];
    gpu_layer_cases(shapes, 1e4, 500);
}

#[test]
fn gpu_layer_running_conventions() {
    for config in [RunningStatsConfig::lecture(), RunningStatsConfig::cumulative()] {
        gpu_layer_case(&[40, 3, 2, 2], 2.0, config, 900);
        gpu_layer_case(&[300, 9], -1.0, config, 910);
    }
}

/// Issue 11: eval mode with a NaN or negative running variance gave a finite
/// invstd of 1/sqrt(eps) on the GPU (WGSL's max(var, 0) drops NaN and clamps
/// a negative variance) where the twin gives NaN. Now the channels agree:
/// NaN for NaN and for a variance below -eps, finite above.
#[test]
fn gpu_eval_with_nan_or_negative_running_var_agrees_with_twin() {
    let g = gpu();
    let c = 5;
    let mean = Array1::from(vec![0.5f32, 0.0, 1.0, -1.0, f32::NAN]);
    let var = Array1::from(vec![f32::NAN, -1.0, -1e-6, 2.0, 1.0]);
    let mut bn = BatchNorm::new(g, c, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    bn.set_running(g, mean.view(), var.view()).unwrap();
    let mut cpu = gpuprep::cpu::batchnorm::BatchNorm::new(c, RunningStatsConfig::pytorch());
    cpu.running_mean = mean.mapv(f64::from);
    cpu.running_var = var.mapv(f64::from);
    let x = tensor(&[7, c, 2], 0.0, 1.0, 3);
    let want = cpu.forward_eval(x.view()).unwrap();
    let y = bn
        .forward_eval(g, &GpuMatrix::upload(g, matrix(&x).view()).unwrap())
        .unwrap();
    let y = y.download(g).unwrap();
    for (e, (gv, cv)) in y.iter().zip(want.iter()).enumerate() {
        let ch = (e / 2) % c;
        assert_eq!(gv.is_nan(), cv.is_nan(), "channel {ch}: GPU {gv}, twin {cv}");
        if !cv.is_nan() {
            assert!(
                (f64::from(*gv) - cv).abs() <= 1e-5 * cv.abs().max(1.0),
                "channel {ch}: {gv} vs {cv}"
            );
        }
    }
    // channels 0, 1 and 4 are NaN, 2 and 3 finite
    let nan_channels: Vec<usize> = (0..c).filter(|&ch| want[[0, ch, 0]].is_nan()).collect();
    assert_eq!(nan_channels, vec![0, 1, 4]);
}

/// Issue 11: a NaN in a channel of a training batch: the GPU's invstd and
/// running variance are NaN, as the twin's, and the other channels are exact.
#[test]
fn gpu_training_with_a_nan_channel_agrees_with_twin() {
    let g = gpu();
    let c = 3;
    let mut x = tensor(&[6, c, 4], 1.0, 2.0, 5);
    x[[2, 1, 3]] = f64::NAN;
    let mut cpu = gpuprep::cpu::batchnorm::BatchNorm::new(c, RunningStatsConfig::pytorch());
    let (_, saved) = cpu.forward_train(x.view()).unwrap();
    let mut bn = BatchNorm::new(g, c, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    bn.forward_train(g, &GpuMatrix::upload(g, matrix(&x).view()).unwrap())
        .unwrap();
    let st = bn.saved_stats().download(g).unwrap();
    let rv = bn.running_var(g).unwrap();
    for ch in 0..c {
        assert_eq!(st.invstd[ch].is_nan(), saved.invstd[ch].is_nan(), "invstd[{ch}]");
        assert_eq!(rv[ch].is_nan(), cpu.running_var[ch].is_nan(), "running_var[{ch}]");
    }
    assert!(saved.invstd[1].is_nan() && st.invstd[1].is_nan());
    assert!((st.invstd[0] - saved.invstd[0]).abs() <= 1e-6 * saved.invstd[0]);
}

/// Issue 11: eps 0 (or one that is 0 or subnormal in f32) is refused by the
/// GPU layer and the twin alike.
#[test]
fn eps_that_is_not_a_positive_normal_f32_is_refused() {
    let g = gpu();
    for eps in [0.0f32, -1e-5, 1e-40, f32::NAN, f32::INFINITY] {
        let e = BatchNorm::new(g, 2, RunningStatsConfig::pytorch(), eps).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "eps {eps}: {e}");
    }
    let x = tensor(&[4, 2], 0.0, 1.0, 1);
    for eps in [0.0f64, 1e-50, 1e-40, -1.0] {
        let mut bn = gpuprep::cpu::batchnorm::BatchNorm::new(2, RunningStatsConfig::pytorch());
        bn.eps = eps;
        assert!(bn.forward_train(x.view()).is_err(), "eps {eps}");
        assert!(bn.forward_eval(x.view()).is_err(), "eps {eps}");
        let xm = to_channels_last(x.view()).unwrap();
        let ones = Array1::ones(2);
        assert!(forward_staged(xm.view(), ones.view(), ones.view(), eps).is_err());
    }
    // a constant channel with the smallest normal eps: y = beta, exactly
    let mut bn = BatchNorm::new(g, 2, RunningStatsConfig::pytorch(), f32::MIN_POSITIVE).unwrap();
    let y = bn
        .forward_train(g, &GpuMatrix::filled(g, 5, 2, 3.0).unwrap())
        .unwrap();
    assert!(y.download(g).unwrap().iter().all(|&v| v == 0.0));
}

/// Issue 11: a batch whose squared deviations overflow f32 (std 1e20): the
/// GPU layer's y, mean, invstd, running mean and gradients match the twin;
/// the variances beyond f32's range are +inf (f32 holds no more).
#[test]
fn gpu_layer_overflowing_spread_matches_twin() {
    let g = gpu();
    let dims = [50usize, 3, 4];
    let c = dims[1];
    let mut x = tensor(&dims, 0.0, 1e20, 9);
    // channel 2: ordinary data beside the scaled channels
    for v in x.slice_mut(ndarray::s![.., 2, ..]).iter_mut() {
        *v = f64::from((*v * 1e-20) as f32);
    }
    let mut cpu = gpuprep::cpu::batchnorm::BatchNorm::new(c, RunningStatsConfig::pytorch());
    let (y_cpu, saved) = cpu.forward_train(x.view()).unwrap();
    let mut bn = BatchNorm::new(g, c, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    let xg = GpuMatrix::upload(g, matrix(&x).view()).unwrap();
    let y = bn.forward_train(g, &xg).unwrap();
    let e = rel_err(y.download(g).unwrap(), y_cpu.as_slice().unwrap(), 0.0);
    assert!(e <= 1e-5, "y {e:e}");
    let st = bn.saved_stats().download(g).unwrap();
    for ch in 0..c {
        let s = saved.var[ch].sqrt();
        assert!((st.mean[ch] - saved.mean[ch]).abs() <= 1e-6 * s, "mean[{ch}]");
        assert!(
            (st.invstd[ch] - saved.invstd[ch]).abs() <= 1e-5 * saved.invstd[ch],
            "invstd[{ch}]"
        );
    }
    let rm = bn.running_mean(g).unwrap();
    let rv = bn.running_var(g).unwrap();
    for ch in 0..c {
        let s = saved.var[ch].sqrt();
        assert!(
            (f64::from(rm[ch]) - cpu.running_mean[ch]).abs() <= 1e-6 * s,
            "running_mean[{ch}]"
        );
        if cpu.running_var[ch] > f64::from(f32::MAX) {
            assert_eq!(rv[ch], f32::INFINITY, "running_var[{ch}]");
        } else {
            assert!((f64::from(rv[ch]) - cpu.running_var[ch]).abs() <= 1e-5 * cpu.running_var[ch]);
        }
    }
    let dy = tensor(&dims, 0.0, 1.0, 10);
    let errs = backward_both(&bn, &cpu, &x, &xg, &saved, &dy).map(|(_, cv, gv, s)| rel_err(gv, &cv, s));
    println!("batch norm, std 1e20: y {e:.1e}, dx / dgamma / dbeta {errs:?}");
    assert!(errs.iter().all(|&e| e <= 1e-5), "{errs:?}");
}

/// The backward pass with `dy` of the training step that saved `saved` from
/// `x` (on the device: `xg`), by the GPU layer and by the twin: for dx,
/// dgamma and dbeta, (name, twin, GPU, the scale its error is taken against).
fn backward_both(
    bn: &BatchNorm,
    twin: &gpuprep::cpu::batchnorm::BatchNorm,
    x: &ArrayD<f64>,
    xg: &GpuMatrix,
    saved: &gpuprep::cpu::batchnorm::BatchNormSaved,
    dy: &ArrayD<f64>,
) -> [(&'static str, Vec<f64>, Array2<f32>, f64); 3] {
    let g = gpu();
    let (dx, dgamma, dbeta) = twin.backward(x.view(), dy.view(), saved).unwrap();
    let gr = bn
        .backward(g, xg, &GpuMatrix::upload(g, matrix(dy).view()).unwrap())
        .unwrap();
    let scale = dx_scale(dy, &twin.gamma, &saved.invstd);
    let (sg, sb) = sum_scales(x, dy, &saved.mean, &saved.invstd);
    [
        (
            "dx",
            dx.as_slice().unwrap().to_vec(),
            gr.dx.download(g).unwrap(),
            scale,
        ),
        ("dgamma", dgamma.to_vec(), gr.dgamma.download(g).unwrap(), sg),
        ("dbeta", dbeta.to_vec(), gr.dbeta.download(g).unwrap(), sb),
    ]
}

fn torch_npy(case: &str, name: &str) -> ArrayD<f64> {
    let p = format!(
        "{}/tests/data/torch/batch_norm/{case}/{name}.npy",
        env!("CARGO_MANIFEST_DIR")
    );
    ndarray_npy::read_npy(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// PyTorch's nn.BatchNorm1d / 2d over three training steps (y and the running
/// statistics after each), the backward pass of the third, and eval mode
/// (tests/data/torch_conventions.py, f64), and the lecture's convention in
/// numpy: the twin to f64 rounding, the GPU layer to f32's.
#[test]
fn batch_norm_matches_pytorch_and_the_lecture() {
    let g = gpu();
    for (case, config) in [
        ("bn2d", RunningStatsConfig::pytorch()),
        ("bn1d", RunningStatsConfig::pytorch()),
        (
            "bn2d_momentum_0_3",
            RunningStatsConfig {
                momentum: Some(0.3),
                ..RunningStatsConfig::pytorch()
            },
        ),
        ("lecture", RunningStatsConfig::lecture()),
    ] {
        let t = |n: &str| torch_npy(case, n);
        let flat1 = |a: ArrayD<f64>| Array1::from_iter(a.iter().copied());
        let (gamma, beta) = (flat1(t("gamma")), flat1(t("beta")));
        let c = gamma.len();
        let mut cpu = gpuprep::cpu::batchnorm::BatchNorm::new(c, config);
        cpu.gamma = gamma.clone();
        cpu.beta = beta.clone();
        let mut bn = BatchNorm::with_affine(
            g,
            gamma.mapv(|v| v as f32).view(),
            beta.mapv(|v| v as f32).view(),
            config,
            1e-5,
        )
        .unwrap();
        let (mut worst_cpu, mut worst_gpu) = (0.0f64, 0.0f64);
        let mut note = |what: &str, e_cpu: f64, e_gpu: f64| {
            assert!(e_cpu <= 1e-12, "{case} {what}: twin {e_cpu:e}");
            assert!(e_gpu <= 1e-5, "{case} {what}: GPU {e_gpu:e}");
            worst_cpu = worst_cpu.max(e_cpu);
            worst_gpu = worst_gpu.max(e_gpu);
        };
        // max |a - b| / max(scale, max |b|), in f64
        let rel64 = |a: &[f64], b: &ArrayD<f64>, scale: f64| {
            let bmax = b.iter().fold(scale, |m, v| m.max(v.abs())).max(1e-300);
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y).abs())
                .fold(
                    0.0,
                    |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
                )
                / bmax
        };
        let mut last = None;
        for k in 1..=3 {
            let x = t(&format!("x{k}"));
            let (y, saved) = cpu.forward_train(x.view()).unwrap();
            let xg = GpuMatrix::upload(g, matrix(&x).view()).unwrap();
            let yg = bn.forward_train(g, &xg).unwrap();
            let want = t(&format!("y{k}"));
            note(
                &format!("y{k}"),
                rel64(y.as_slice().unwrap(), &want, 0.0),
                rel_err(yg.download(g).unwrap(), want.as_slice().unwrap(), 0.0),
            );
            for (name, cv, gv) in [
                ("running_mean", &cpu.running_mean, bn.running_mean(g).unwrap()),
                ("running_var", &cpu.running_var, bn.running_var(g).unwrap()),
            ] {
                let want = t(&format!("{name}{k}"));
                note(
                    &format!("{name}{k}"),
                    rel64(cv.as_slice().unwrap(), &want, 0.0),
                    rel_err(gv, want.as_slice().unwrap(), 0.0),
                );
            }
            last = Some((x, xg, saved));
        }
        if case != "lecture" {
            let (x, xg, saved) = last.unwrap();
            for (name, cv, gv, s) in backward_both(&bn, &cpu, &x, &xg, &saved, &t("dy")) {
                let want = t(name);
                note(
                    name,
                    rel64(&cv, &want, s),
                    rel_err(gv, want.as_slice().unwrap(), s),
                );
            }
        }
        let xe = t("x_eval");
        let want = t("y_eval");
        let ye = cpu.forward_eval(xe.view()).unwrap();
        let yg = bn
            .forward_eval(g, &GpuMatrix::upload(g, matrix(&xe).view()).unwrap())
            .unwrap();
        note(
            "y_eval",
            rel64(ye.as_slice().unwrap(), &want, 0.0),
            rel_err(yg.download(g).unwrap(), want.as_slice().unwrap(), 0.0),
        );
        println!("batch norm {case} vs reference: worst twin {worst_cpu:.1e}, GPU {worst_gpu:.1e}");
    }
}

#[test]
fn statistics_past_the_loop_limit_are_refused() {
    // stats_finalize merges each channel's partials, every 256th per thread:
    // a context held to 200 loop iterations refuses a channel of 60,000
    // positions (at least 60,000 partials, 251 iterations) instead of merging
    // part of them; the adapter's own limit takes it.
    let small = gpuprep::Gpu::new().unwrap().with_loop_limit(Some(200));
    for (g, ok) in [(&small, false), (gpu(), true)] {
        let mut bn = BatchNorm::new(g, 1, RunningStatsConfig::pytorch(), 1e-5).unwrap();
        let x = GpuMatrix::filled(g, 2, 60_000, 1.0).unwrap();
        let got = bn.forward_train(g, &x);
        assert_eq!(got.is_ok(), ok, "{got:?}");
        if !ok {
            assert!(matches!(got, Err(Error::ExceedsLimit { .. })));
        }
    }
}

#[test]
fn set_running_with_another_context_is_an_error_not_a_panic() {
    // It wrote through the other context's queue (a wgpu validation panic).
    let other = gpuprep::Gpu::new().unwrap();
    let mut bn = BatchNorm::new(gpu(), 2, RunningStatsConfig::pytorch(), 1e-5).unwrap();
    let (mean, var) = (Array1::from(vec![0.0f32, 1.0]), Array1::from(vec![1.0f32, 2.0]));
    let got = bn.set_running(&other, mean.view(), var.view());
    assert!(matches!(got, Err(Error::InvalidArgument { .. })), "{got:?}");
    bn.set_running(gpu(), mean.view(), var.view()).unwrap();
    assert_eq!(bn.running_var(gpu()).unwrap(), var);
    other.wait().unwrap();
}
