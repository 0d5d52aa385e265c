//! The training kernels and the GPU training loop against their f64 CPU twins.

mod common;

use common::{gpu, max_rel, normal};
use gpuprep::cpu::train as twin;
use gpuprep::model::train::{MlpConfig, SgdOptions};
use gpuprep::ops::train::{self as train, Labeled, Mlp, XentOptions};
use gpuprep::{Error, Gpu, GpuMatrix, Scheme};
use ndarray::{Array1, Array2};

fn up(g: &Gpu, a: &Array2<f32>) -> GpuMatrix {
    GpuMatrix::upload(g, a.view()).unwrap()
}

fn down(g: &Gpu, m: &GpuMatrix) -> Array2<f64> {
    m.download(g).unwrap().mapv(f64::from)
}

fn poisoned(g: &Gpu, r: usize, c: usize) -> GpuMatrix {
    GpuMatrix::filled(g, r, c, f32::NAN).unwrap()
}

const SHAPES: &[(usize, usize)] = &[(1, 1), (1, 10), (7, 3), (5, 4), (257, 10), (300, 1), (1025, 7)];

#[test]
fn relu_forward_and_backward_match_the_twin() {
    let g = gpu();
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        let x = normal(n, d, 0.0, 1.0, 10 + i as u64);
        let dy = normal(n, d, 0.0, 1.0, 20 + i as u64);
        let (xg, dyg) = (up(g, &x), up(g, &dy));
        let y = poisoned(g, n, d);
        let mut e = g.encoder("t");
        train::encode_relu_into(g, &mut e, &xg, &y).unwrap();
        let dx = poisoned(g, n, d);
        train::encode_relu_backward_into(g, &mut e, &dyg, &y, &dx).unwrap();
        g.submit("t", e).unwrap();
        let want_y = twin::relu(x.mapv(f64::from).view());
        let want_dx = twin::relu_backward(dy.mapv(f64::from).view(), want_y.view()).unwrap();
        // Exact: a max and a select.
        assert_eq!(down(g, &y), want_y, "{n}x{d}");
        assert_eq!(down(g, &dx), want_dx, "{n}x{d}");
    }
    // NaN passes through the forward pass.
    let x = ndarray::array![[f32::NAN, -1.0, 2.0]];
    let y = train::relu(g, &up(g, &x)).unwrap().download(g).unwrap();
    assert!(y[[0, 0]].is_nan() && y[[0, 1]] == 0.0 && y[[0, 2]] == 2.0);
}

fn labels_for(n: usize, c: usize, seed: u64) -> Array2<f32> {
    Array2::from_shape_fn((n, 1), |(i, _)| ((i as u64 * 7 + seed) % c as u64) as f32)
}

#[test]
fn softmax_xent_matches_the_twin() {
    let g = gpu();
    for (i, &(n, c)) in SHAPES.iter().enumerate() {
        // Large logits: the kernel must subtract the max.
        let z = normal(n, c, 30.0, 4.0, 40 + i as u64);
        let labels = labels_for(n, c, i as u64);
        let (zg, lg) = (up(g, &z), up(g, &labels));
        let dz = poisoned(g, n, c);
        let metrics = GpuMatrix::filled(g, 1, 8, 0.0).unwrap();
        let scale = 1.0 / n as f32;
        let opts = XentOptions {
            slot: 4,
            grad_scale: scale,
        };
        let mut e = g.encoder("t");
        train::encode_softmax_xent_into(g, &mut e, &zg, &lg, Some(&dz), &metrics, &opts).unwrap();
        // A second pass without the gradient adds to the same sums.
        train::encode_softmax_xent_into(g, &mut e, &zg, &lg, None, &metrics, &opts).unwrap();
        g.submit("t", e).unwrap();
        let want = twin::softmax_xent(
            z.mapv(f64::from).view(),
            labels.column(0).mapv(f64::from).view(),
            f64::from(scale),
        )
        .unwrap();
        let got = down(g, &dz);
        let err = max_rel(
            got.iter().copied(),
            want.dlogits.iter().copied(),
            f64::from(scale),
        );
        assert!(err < 1e-5, "{n}x{c}: dlogits rel error {err:e}");
        let m = down(g, &metrics);
        assert_eq!(m[[0, 0]], 0.0, "slot 4 only");
        let loss_err = (m[[0, 4]] - 2.0 * want.sums.loss).abs() / (2.0 * want.sums.loss).max(1.0);
        assert!(
            loss_err < 1e-5,
            "{n}x{c}: loss {} vs {}",
            m[[0, 4]],
            2.0 * want.sums.loss
        );
        assert_eq!(m[[0, 5]], 2.0 * want.sums.correct, "{n}x{c}: correct");
        assert_eq!(m[[0, 6]], 2.0 * n as f64, "{n}x{c}: rows");
    }
}

#[test]
fn softmax_xent_stays_under_the_loop_limit() {
    // The kernel is one workgroup; each thread walks every 256th row and each
    // row's classes three times. Lavapipe ends an invocation's loops after
    // 65,535 iterations in all: 6,400 rows of 1,000 classes (25 rows of
    // 3,003 iterations per thread) left gradient rows unwritten before the
    // launcher cut such inputs into launches of fewer rows. A context held
    // to a small limit takes that path at small shapes (2,000: 7,424 rows of
    // 10 classes per launch), and refuses rows too long for even one per
    // thread.
    let small = Gpu::new().unwrap().with_loop_limit(Some(2000));
    for (g, n, c) in [(gpu(), 6400, 1000), (&small, 20_000, 10), (&small, 300, 7)] {
        let z = normal(n, c, 30.0, 4.0, n as u64 + c as u64);
        let labels = labels_for(n, c, 3);
        let (zg, lg) = (up(g, &z), up(g, &labels));
        let (dz, m) = train::softmax_xent(g, &zg, &lg).unwrap();
        let scale = 1.0 / n as f64;
        let want = twin::softmax_xent(
            z.mapv(f64::from).view(),
            labels.column(0).mapv(f64::from).view(),
            scale,
        )
        .unwrap();
        let got = down(g, &dz);
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{n}x{c}: a gradient was never written"
        );
        let err = max_rel(got.iter().copied(), want.dlogits.iter().copied(), scale);
        assert!(err < 1e-5, "{n}x{c}: dlogits rel error {err:e}");
        let m = down(g, &m);
        let loss_err = (m[[0, 0]] - want.sums.loss).abs() / want.sums.loss.max(1.0);
        assert!(
            loss_err < 1e-5,
            "{n}x{c}: loss {} vs {}",
            m[[0, 0]],
            want.sums.loss
        );
        assert_eq!(m[[0, 1]], want.sums.correct, "{n}x{c}: correct");
        assert_eq!(m[[0, 2]], n as f64, "{n}x{c}: rows");
    }
    let z = up(&small, &normal(4, 400, 0.0, 1.0, 1));
    let labels = up(&small, &labels_for(4, 400, 0));
    assert!(matches!(
        train::softmax_xent(&small, &z, &labels),
        Err(gpuprep::Error::ExceedsLimit { .. })
    ));
}

#[test]
fn softmax_xent_invalid_labels_give_nan() {
    let g = gpu();
    let z = normal(4, 3, 0.0, 1.0, 5);
    for bad in [3.0f32, -1.0, 0.5, f32::NAN] {
        let labels = ndarray::array![[0.0f32], [bad], [2.0], [1.0]];
        let (dz, m) = train::softmax_xent(g, &up(g, &z), &up(g, &labels)).unwrap();
        let dz = down(g, &dz);
        let m = down(g, &m);
        assert!(m[[0, 0]].is_nan(), "label {bad}: loss {}", m[[0, 0]]);
        assert!(dz.row(1).iter().all(|v| v.is_nan()), "label {bad}");
        assert!(dz.row(0).iter().all(|v| v.is_finite()), "label {bad}");
    }
}

#[test]
fn sgd_matches_the_twin() {
    let g = gpu();
    for (i, &(n, d)) in [(1usize, 1usize), (3, 5), (64, 65), (10, 1000)]
        .iter()
        .enumerate()
    {
        let p = normal(n, d, 0.0, 1.0, 60 + i as u64);
        let grad = normal(n, d, 0.0, 1.0, 70 + i as u64);
        let v = normal(n, d, 0.0, 0.1, 80 + i as u64);
        let o = SgdOptions {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-3,
        };
        let (pg, gg, vg) = (up(g, &p), up(g, &grad), up(g, &v));
        // Two steps: the second reads the velocity the first wrote.
        let mut e = g.encoder("t");
        train::encode_sgd_into(g, &mut e, &pg, &gg, &vg, &o).unwrap();
        train::encode_sgd_into(g, &mut e, &pg, &gg, &vg, &o).unwrap();
        g.submit("t", e).unwrap();
        let (mut p64, g64, mut v64) = (p.mapv(f64::from), grad.mapv(f64::from), v.mapv(f64::from));
        for _ in 0..2 {
            let (pf, vf) = (p64.as_slice_mut().unwrap(), v64.as_slice_mut().unwrap());
            twin::sgd(pf.into(), g64.as_slice().unwrap().into(), vf.into(), &o).unwrap();
        }
        let ep = max_rel(down(g, &pg).iter().copied(), p64.iter().copied(), 1e-2);
        let ev = max_rel(down(g, &vg).iter().copied(), v64.iter().copied(), 1e-2);
        assert!(ep < 1e-5 && ev < 1e-5, "{n}x{d}: {ep:e} {ev:e}");
    }
}

#[test]
fn gather_rows_matches_the_twin() {
    let g = gpu();
    let x = normal(37, 5, 0.0, 1.0, 90);
    let index: Vec<u32> = vec![36, 0, 5, 5, 100, 12, 1];
    let im = Array2::from_shape_fn((index.len(), 1), |(i, _)| index[i] as f32);
    let out = poisoned(g, index.len(), 5);
    let mut e = g.encoder("t");
    train::encode_gather_rows_into(g, &mut e, &up(g, &x), &up(g, &im), &out).unwrap();
    g.submit("t", e).unwrap();
    let got = down(g, &out);
    let want = twin::gather_rows(x.mapv(f64::from).view(), &index);
    for r in 0..index.len() {
        for c in 0..5 {
            let (a, b) = (got[[r, c]], want[[r, c]]);
            assert!(a == b || (a.is_nan() && b.is_nan()), "row {r}: {a} vs {b}");
        }
    }
    assert!(got.row(4).iter().all(|v| v.is_nan()), "index 100 of 37 rows");
}

#[test]
fn kernels_on_a_context_with_tiny_pieces() {
    // Pieces of 3 rows: unaligned ones are staged through scratch, and the
    // sums of softmax_xent add up over the pieces.
    let g = Gpu::new().unwrap().with_max_piece_bytes(3 * 10 * 4);
    let z = normal(40, 10, 0.0, 2.0, 3);
    let labels = labels_for(40, 10, 1);
    let (dz, m) = train::softmax_xent(&g, &up(&g, &z), &up(&g, &labels)).unwrap();
    let want = twin::softmax_xent(
        z.mapv(f64::from).view(),
        labels.column(0).mapv(f64::from).view(),
        1.0 / 40.0,
    )
    .unwrap();
    let err = max_rel(
        down(&g, &dz).iter().copied(),
        want.dlogits.iter().copied(),
        1.0 / 40.0,
    );
    assert!(err < 1e-5, "split dlogits: {err:e}");
    let m = down(&g, &m);
    assert!((m[[0, 0]] - want.sums.loss).abs() < 1e-4 * want.sums.loss);
    assert_eq!((m[[0, 1]], m[[0, 2]]), (want.sums.correct, 40.0));
    let y = train::relu(&g, &up(&g, &z)).unwrap();
    assert_eq!(down(&g, &y), twin::relu(z.mapv(f64::from).view()));
    let idx = Array2::from_shape_fn((11, 1), |(i, _)| (39 - 3 * i) as f32);
    let gathered = train::gather_rows(&g, &up(&g, &z), &up(&g, &idx)).unwrap();
    let want = twin::gather_rows(
        z.mapv(f64::from).view(),
        &(0..11).map(|i| 39 - 3 * i).collect::<Vec<u32>>(),
    );
    assert_eq!(down(&g, &gathered), want);
}

fn digits_like(n: usize, d: usize, classes: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
    // Class means far apart plus noise: learnable, not trivial.
    let x = normal(n, d, 0.0, 1.0, seed);
    let labels: Vec<u32> = (0..n).map(|i| (i * 5 % classes) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        x[[i, j]]
            + if j % classes == labels[i] as usize {
                1.5
            } else {
                0.0
            }
    });
    (x, labels)
}

fn config(batch_norm: bool, batch: usize) -> MlpConfig {
    let mut c = MlpConfig::new(&[12, 9, 7, 4]);
    c.batch_norm = batch_norm;
    c.batch = batch;
    c.seed = 17;
    c.sgd = SgdOptions {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-4,
    };
    c
}

/// Every parameter of the GPU network against the twin's, largest relative error.
fn compare_parameters(g: &Gpu, gpu_net: &Mlp, cpu_net: &twin::Mlp) -> f64 {
    let mut worst = 0.0f64;
    for (l, layer) in cpu_net.layers.iter().enumerate() {
        let w = gpu_net.weight(g, l).unwrap().mapv(f64::from);
        worst = worst.max(max_rel(w.iter().copied(), layer.w.iter().copied(), 1e-2));
        match (gpu_net.bias(g, l).unwrap(), &layer.b) {
            (Some(b), Some(want)) => {
                worst = worst.max(max_rel(
                    b.iter().map(|&v| f64::from(v)),
                    want.iter().copied(),
                    1e-2,
                ))
            }
            (None, None) => {}
            _ => panic!("layer {l}: bias on one side only"),
        }
        match (gpu_net.batch_norm_affine(g, l).unwrap(), &layer.bn) {
            (Some((gamma, beta)), Some(bn)) => {
                worst = worst.max(max_rel(
                    gamma.iter().map(|&v| f64::from(v)),
                    bn.gamma.iter().copied(),
                    1e-2,
                ));
                worst = worst.max(max_rel(
                    beta.iter().map(|&v| f64::from(v)),
                    bn.beta.iter().copied(),
                    1e-2,
                ));
            }
            (None, None) => {}
            _ => panic!("layer {l}: batch norm on one side only"),
        }
    }
    worst
}

#[test]
fn training_steps_match_the_twin() {
    let g = gpu();
    for batch_norm in [true, false] {
        let c = config(batch_norm, 13);
        let (x, labels) = digits_like(13, 12, 4, 5);
        let batch = Labeled::upload(g, x.view(), &labels, 4).unwrap();
        let mut gpu_net = Mlp::new(g, &c).unwrap();
        // The twin starts from the GPU's draws (they equal its own to a few ulps).
        let weights: Vec<Array2<f64>> = (0..3)
            .map(|l| gpu_net.weight(g, l).unwrap().mapv(f64::from))
            .collect();
        let own = twin::Mlp::new(&c).unwrap();
        for (l, w) in weights.iter().enumerate() {
            let e = max_rel(w.iter().copied(), own.layers[l].w.iter().copied(), 1e-3);
            assert!(e < 1e-5, "layer {l}: GPU and CPU draws differ by {e:e}");
        }
        let mut cpu_net = twin::Mlp::with_weights(&c, weights).unwrap();
        let x64 = x.mapv(f64::from);
        let l64: Array1<f64> = labels.iter().map(|&v| f64::from(v)).collect();
        // Three steps on the same batch: momentum and running statistics carry over.
        for step in 0..3 {
            let got = gpu_net.step(g, &batch).unwrap();
            let want = cpu_net.step(x64.view(), l64.view()).unwrap();
            assert!(
                (got.loss - want.loss).abs() < 1e-5 * want.loss.max(1.0),
                "bn {batch_norm} step {step}: loss {} vs {}",
                got.loss,
                want.loss
            );
            assert_eq!(got.correct, want.correct, "bn {batch_norm} step {step}");
            assert_eq!(got.rows, 13.0);
            let err = compare_parameters(g, &gpu_net, &cpu_net);
            assert!(
                err < 1e-4,
                "bn {batch_norm} step {step}: parameters differ by {err:e}"
            );
        }
        // The parameters moved (a step that did nothing would pass the above).
        let moved = max_rel(
            gpu_net.weight(g, 0).unwrap().iter().map(|&v| f64::from(v)),
            own.layers[0].w.iter().copied(),
            1e-2,
        );
        assert!(
            moved > 1e-3,
            "bn {batch_norm}: the weights did not move ({moved:e})"
        );
        // Eval mode (running statistics) agrees too.
        let got = gpu_net.evaluate(g, &batch).unwrap();
        let want = cpu_net.evaluate(x64.view(), l64.view()).unwrap();
        assert!(
            (got.loss - want.loss).abs() < 1e-4 * want.loss.max(1.0),
            "eval loss"
        );
    }
}

#[test]
fn epochs_match_the_twin_and_learn() {
    let g = gpu();
    let c = config(true, 16);
    let (x, labels) = digits_like(100, 12, 4, 8);
    let (tx, tl) = digits_like(37, 12, 4, 9);
    let train_set = Labeled::upload(g, x.view(), &labels, 4).unwrap();
    let test_set = Labeled::upload(g, tx.view(), &tl, 4).unwrap();
    let mut gpu_net = Mlp::new(g, &c).unwrap();
    let weights: Vec<Array2<f64>> = (0..3)
        .map(|l| gpu_net.weight(g, l).unwrap().mapv(f64::from))
        .collect();
    let mut cpu_net = twin::Mlp::with_weights(&c, weights).unwrap();
    let l64: Array1<f64> = labels.iter().map(|&v| f64::from(v)).collect();
    let t64: Array1<f64> = tl.iter().map(|&v| f64::from(v)).collect();
    let mut first = None;
    let mut last = None;
    for epoch in 0..4 {
        let got = gpu_net.train_epoch(g, &train_set, &test_set).unwrap();
        let want = cpu_net
            .train_epoch(
                x.mapv(f64::from).view(),
                l64.view(),
                tx.mapv(f64::from).view(),
                t64.view(),
            )
            .unwrap();
        assert!(
            (got.loss - want.loss).abs() < 1e-3 * want.loss,
            "epoch {epoch}: {got:?} vs {want:?}"
        );
        assert!(
            (got.test_loss - want.test_loss).abs() < 1e-3 * want.test_loss,
            "epoch {epoch}"
        );
        assert!(
            (got.train_accuracy - want.train_accuracy).abs() <= 0.02,
            "epoch {epoch}"
        );
        assert!(
            (got.test_accuracy - want.test_accuracy).abs() <= 0.03,
            "epoch {epoch}"
        );
        first.get_or_insert(got);
        last = Some(got);
    }
    let (first, last) = (first.unwrap(), last.unwrap());
    assert!(last.loss < 0.7 * first.loss, "no learning: {first:?} -> {last:?}");
    assert!(last.train_accuracy > 0.8, "{last:?}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    common::refuses_wrong_and_aliased_outputs(train::encode_relu_into, 3, 4);
    let g = gpu();
    let a = GpuMatrix::uninit(g, 3, 4).unwrap();
    let b = GpuMatrix::uninit(g, 4, 3).unwrap();
    let mut e = g.encoder("t");
    assert!(matches!(
        train::relu_backward(g, &a, &b),
        Err(Error::ShapeMismatch { .. })
    ));
    let labels = GpuMatrix::uninit(g, 2, 1).unwrap();
    assert!(matches!(
        train::softmax_xent(g, &a, &labels),
        Err(Error::ShapeMismatch { .. })
    ));
    let metrics = GpuMatrix::uninit(g, 1, 2).unwrap();
    let l3 = GpuMatrix::uninit(g, 3, 1).unwrap();
    let o = XentOptions {
        slot: 0,
        grad_scale: 1.0,
    };
    assert!(matches!(
        train::encode_softmax_xent_into(g, &mut e, &a, &l3, None, &metrics, &o),
        Err(Error::ShapeMismatch { .. })
    ));
    let v = GpuMatrix::uninit(g, 3, 4).unwrap();
    let bad = SgdOptions {
        lr: f32::NAN,
        ..Default::default()
    };
    assert!(train::encode_sgd_into(g, &mut e, &a, &b, &v, &bad).is_err());
    assert!(train::encode_sgd_into(g, &mut e, &a, &v, &v, &SgdOptions::default()).is_err());
    let short = GpuMatrix::uninit(g, 1, 5).unwrap();
    assert!(train::encode_sgd_into(g, &mut e, &a, &short, &v, &SgdOptions::default()).is_err());
    let idx = GpuMatrix::uninit(g, 2, 2).unwrap();
    assert!(train::gather_rows(g, &a, &idx).is_err());
    // Labels outside the classes, and networks that cannot be built.
    let x = Array2::<f32>::zeros((2, 12));
    assert!(Labeled::upload(g, x.view(), &[0, 4], 4).is_err());
    assert!(Labeled::upload(g, x.view(), &[0], 4).is_err());
    let mut c = config(true, 1);
    assert!(Mlp::new(g, &c).is_err());
    c.batch = 4;
    c.scheme = Scheme::Constant { value: f64::NAN };
    assert!(Mlp::new(g, &c).is_err());
    let c = config(false, 4);
    let mut net = Mlp::new(g, &c).unwrap();
    let wrong = Labeled::upload(g, Array2::<f32>::zeros((3, 12)).view(), &[0, 1, 2], 4).unwrap();
    assert!(net.step(g, &wrong).is_err(), "a batch of 3 rows for a batch of 4");
    let narrow = Labeled::upload(g, Array2::<f32>::zeros((8, 5)).view(), &[0; 8], 4).unwrap();
    assert!(net.train_epoch(g, &narrow, &narrow).is_err());
    assert!(net.train_epoch(g, &wrong, &wrong).is_err(), "no full batch");
    assert!(net.weight(g, 3).is_err());
}
