//! matmul: GPU against its f64 CPU twin.

mod common;

use common::{gpu, normal};
use gpuprep::cpu::covariance::frobenius_rel_error;
use gpuprep::ops::matmul::encode_matmul_into;
use gpuprep::ops::{Activation, MatmulConfig, MatmulOptions};
use gpuprep::{cpu, ops, Error, GpuMatrix};
use ndarray::{Array1, Array2, Axis};

/// Runs the GPU product with the given flags (1 center, 2 scale, 4 bias,
/// 8 transposed w, 16 tanh, 32 relu, 64 transposed x) into a NaN-poisoned
/// output and returns the Frobenius relative error against the twin.
fn check(n: usize, k: usize, m: usize, flags: u32, config: MatmulConfig, seed: u64) -> f64 {
    check_on(gpu(), n, k, m, flags, config, seed)
}

fn check_on(
    g: &gpuprep::Gpu,
    n: usize,
    k: usize,
    m: usize,
    flags: u32,
    config: MatmulConfig,
    seed: u64,
) -> f64 {
    let transpose_x = flags & 64 != 0;
    // Stored K x N when transposed: the product reads it as its N x K transpose.
    let x = if transpose_x {
        normal(k, n, 50.0, 2.0, seed)
    } else {
        normal(n, k, 50.0, 2.0, seed)
    };
    let transpose_w = flags & 8 != 0;
    let w = if transpose_w {
        normal(m, k, 0.0, 1.0, seed + 1)
    } else {
        normal(k, m, 0.0, 1.0, seed + 1)
    };
    let activation = match flags & 48 {
        16 => Activation::Tanh,
        32 => Activation::Relu,
        _ => Activation::Identity,
    };
    let center: Array1<f32> = (0..k).map(|i| 50.0 + 0.01 * i as f32).collect();
    let scale: Array1<f32> = (0..m).map(|j| 0.5 + 0.25 * j as f32).collect();
    let bias: Array1<f32> = (0..m).map(|j| j as f32 - 3.0).collect();
    let row = |a: &Array1<f32>| GpuMatrix::upload(g, a.view().insert_axis(Axis(0))).unwrap();
    let (cg, sg, bg) = (row(&center), row(&scale), row(&bias));
    let opts = MatmulOptions {
        center: (flags & 1 != 0).then_some(&cg),
        scale: (flags & 2 != 0).then_some(&sg),
        bias: (flags & 4 != 0).then_some(&bg),
        transpose_w,
        transpose_x,
        activation,
        tuning: None,
    };
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let wg = GpuMatrix::upload(g, w.view()).unwrap();
    let out = GpuMatrix::filled(g, n, m, f32::NAN).unwrap();
    let mut enc = g.encoder("test");
    encode_matmul_into(
        g,
        &mut enc,
        &xg,
        &wg,
        &out,
        &MatmulOptions {
            tuning: Some(config),
            ..opts
        },
    )
    .unwrap();
    let what = format!("{n}x{k} @ {k}x{m} flags {flags}");
    let got = common::submit_and_read_written(g, enc, &out, &what);
    let want = twin_matmul_flagged(
        &x,
        &w,
        flags,
        [&center, &scale, &bias],
        cpu::MatmulOptions {
            transpose_w,
            transpose_x,
            activation,
            ..Default::default()
        },
    );
    frobenius_rel_error(got.view(), want.view())
}

/// N x K @ K x M shapes with a one in N, K or M.
const ONES: [(usize, usize, usize); 4] = [(1, 1, 1), (1, 5, 3), (7, 1, 4), (5, 4, 1)];

/// [`check`] of every N x K @ K x M shape under every flag set, on the
/// default tiles (seed `seed + 10 i + flags` for the i-th shape): within
/// 1e-5 relative error. `what` starts the message.
fn check_shapes(what: &str, shapes: &[(usize, usize, usize)], flag_sets: &[u32], seed: u64) {
    for (i, &(n, k, m)) in shapes.iter().enumerate() {
        for &flags in flag_sets {
            let seed = seed + 10 * i as u64 + flags as u64;
            let err = check(n, k, m, flags, MatmulConfig::default(), seed);
            assert!(
                err <= 1e-5,
                "{what}{n}x{k} @ {k}x{m} flags {flags}: rel error {err:e}"
            );
        }
    }
}

#[test]
fn matches_cpu_on_awkward_shapes() {
    let more = [(63, 65, 9), (257, 129, 130), (1025, 33, 17), (300, 256, 2)];
    let shapes = [&ONES[..], &more].concat();
    check_shapes("", &shapes, &[0, 1, 3, 7, 8, 8 + 4 + 16, 1 + 8 + 32], 0);
}

#[test]
fn transposed_x_matches_cpu_on_awkward_shapes() {
    // dW = dY^T X: x is stored K x N. Every flag combines with it.
    let shapes = [&ONES[..], &[(10, 64, 64), (63, 65, 9), (130, 257, 33)]].concat();
    let flag_sets = [64, 64 + 7, 64 + 8 + 4 + 16, 64 + 1 + 8 + 32];
    check_shapes("x^T: ", &shapes, &flag_sets, 900);
    for (wx, wy, k_step) in [(1, 32, 8), (4, 8, 32), (16, 16, 16)] {
        let config = MatmulConfig {
            threads: Some((wx, wy)),
            k_step: Some(k_step),
            ..Default::default()
        };
        let err = check(70, 33, 20, 64 + 7, config, 77);
        assert!(err <= 1e-5, "x^T {wx}x{wy}/{k_step}: rel error {err:e}");
    }
}

#[test]
fn transposed_x_splits_the_output_into_pieces() {
    // Pieces of 3 rows of out (stored columns of x), each at its row_base; the
    // unaligned ones are staged through scratch.
    let g = gpuprep::Gpu::new().unwrap().with_max_piece_bytes(3 * 17 * 4);
    for flags in [64, 64 + 5, 64 + 8 + 32] {
        let err = check_on(&g, 40, 9, 17, flags, MatmulConfig::default(), 31 + flags as u64);
        assert!(err <= 1e-5, "x^T split, flags {flags}: rel error {err:e}");
    }
}

#[test]
fn transposed_x_shapes_checked() {
    let g = gpu();
    // Stored 4 x 6: the product is 6 x 4 @ w, so w needs 4 rows.
    let x = GpuMatrix::uninit(g, 4, 6).unwrap();
    let opts = MatmulOptions {
        transpose_x: true,
        ..Default::default()
    };
    let bad = GpuMatrix::uninit(g, 6, 2).unwrap();
    assert!(matches!(
        ops::matmul(g, &x, &bad, &opts),
        Err(Error::ShapeMismatch { .. })
    ));
    let w = GpuMatrix::uninit(g, 4, 2).unwrap();
    let y = ops::matmul(g, &x, &w, &opts).unwrap();
    assert_eq!(y.shape(), (6, 2));
    let wrong_out = GpuMatrix::uninit(g, 4, 2).unwrap();
    let mut enc = g.encoder("t");
    assert!(matches!(
        ops::encode_matmul_into(g, &mut enc, &x, &w, &wrong_out, &opts),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn every_thread_layout() {
    for (wx, wy, k_step) in [
        (1, 32, 8),
        (2, 32, 16),
        (4, 8, 32),
        (8, 32, 8),
        (16, 16, 16),
        (16, 4, 32),
    ] {
        let config = MatmulConfig {
            threads: Some((wx, wy)),
            k_step: Some(k_step),
            ..Default::default()
        };
        for &(n, k, m) in &[(70, 20, 3), (300, 17, 40), (9, 130, 140)] {
            for flags in [7, 7 + 8] {
                let err = check(n, k, m, flags, config, (wx * 100 + wy) as u64);
                assert!(
                    err <= 1e-5,
                    "{wx}x{wy} flags {flags}: {n}x{k} @ {k}x{m}: rel error {err:e}"
                );
            }
        }
    }
}

#[test]
fn every_register_tile() {
    // Each register tile (4 or 8 rows by 4 or 8 columns per thread: the
    // generic loop, and the written-out 8 x 8), with thread layouts that take
    // registers + two buffers, straight loads, and one row or column of
    // threads; blocks cut by N and M, K over several steps with a partial
    // last one, every load path (vec4 and scalar x and w, both transposes).
    for tile in [(4, 4), (4, 8), (8, 4), (8, 8)] {
        for (wx, wy, k_step) in [(16, 8, 8), (1, 32, 8), (8, 1, 16), (4, 16, 32)] {
            let config = MatmulConfig {
                threads: Some((wx, wy)),
                k_step: Some(k_step),
                tile: Some(tile),
                ..Default::default()
            };
            for &(n, k, m, flags) in &[
                (1usize, 1usize, 1usize, 7u32),
                (70, 37, 40, 7),
                (33, 20, 37, 1 + 16),
                (70, 21, 36, 8 + 3),
                (45, 19, 36, 64 + 5),
                (130, 64, 9, 2 + 32),
            ] {
                let err = check(n, k, m, flags, config, (n * 31 + k * 7 + m) as u64 + flags as u64);
                assert!(
                    err <= 1e-5,
                    "tile {tile:?}, {wx}x{wy}/{k_step}, flags {flags}: {n}x{k} @ {k}x{m}: rel error {err:e}"
                );
            }
        }
    }
    // Other sides are refused.
    let g = gpu();
    let xg = GpuMatrix::upload(g, normal(5, 4, 0.0, 1.0, 3).view()).unwrap();
    let wg = GpuMatrix::upload(g, normal(4, 3, 0.0, 1.0, 4).view()).unwrap();
    for tile in [(2, 4), (4, 16), (0, 8), (8, 3)] {
        let opts = MatmulOptions {
            tuning: Some(MatmulConfig {
                tile: Some(tile),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            matches!(
                ops::matmul(g, &xg, &wg, &opts),
                Err(Error::InvalidArgument { .. })
            ),
            "tile {tile:?}"
        );
    }
}

#[test]
fn every_buffering_mode_over_any_number_of_steps() {
    // The tile loads' four modes, as chosen on a device with 32 KiB of
    // workgroup memory (lavapipe): registers + two buffers (16 x 8 / 8),
    // straight loads + two buffers (1 x 32 / 8: 16 vec4 loads per thread are
    // too many to hold), straight loads + one buffer (16 x 4 / 32: two do not
    // fit), registers + one buffer (16 x 16 / 16). Each over K of 1, 2, an
    // odd number and many steps, the last step partial, with every load path
    // (vec4 and scalar x and w, both transposes). And 16 x 8 / 8 with each
    // of the two forced off.
    for (wx, wy, k_step, single_buffer, no_prefetch) in [
        (16, 8, 8, false, false),
        (16, 8, 8, true, false),
        (16, 8, 8, false, true),
        (16, 8, 8, true, true),
        (1, 32, 8, false, false),
        (16, 4, 32, false, false),
        (16, 16, 16, false, false),
    ] {
        let config = MatmulConfig {
            threads: Some((wx, wy)),
            k_step: Some(k_step),
            single_buffer,
            no_prefetch,
            ..Default::default()
        };
        for k in [
            k_step as usize,
            2 * k_step as usize,
            3 * k_step as usize + 5,
            100,
            101,
        ] {
            for (m, flags) in [(40, 7), (37, 1), (40, 8 + 3), (36, 64 + 5)] {
                let err = check(70, k, m, flags, config, (k * 7 + m) as u64 + flags as u64);
                assert!(
                    err <= 1e-5,
                    "{config:?} flags {flags}: 70x{k} @ {k}x{m}: rel error {err:e}"
                );
            }
        }
    }
}

#[test]
fn split_k_matches_the_twin_for_any_slicing() {
    // The inner dimension cut into 2, 3, 7 and more slices than it has steps
    // (capped: every slice gets at least one), over K of one step, a partial
    // last step and many steps, with every load path (vec4 and scalar x and
    // w, both transposes) and the epilogue (scale, bias, tanh, relu), which
    // the second pass must apply once to the sum, not to each slice.
    for (wx, wy, k_step) in [(16, 8, 8), (1, 32, 8), (4, 8, 32)] {
        for split in [1, 2, 3, 7, 64] {
            let config = MatmulConfig {
                threads: Some((wx, wy)),
                k_step: Some(k_step),
                split_k: Some(split),
                ..Default::default()
            };
            for k in [1, k_step as usize, 3 * k_step as usize + 5, 300] {
                for (n, m, flags) in [
                    (70, 40, 7),
                    (9, 37, 1 + 16),
                    (33, 40, 8 + 6 + 32),
                    (36, 5, 64 + 7),
                ] {
                    let err = check(
                        n,
                        k,
                        m,
                        flags,
                        config,
                        (k * 11 + m) as u64 + flags as u64 + split as u64,
                    );
                    assert!(
                        err <= 1e-5,
                        "split {split}, {wx}x{wy}/{k_step}, flags {flags}: {n}x{k} @ {k}x{m}: rel error {err:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn split_k_by_default_where_the_grid_is_small() {
    use gpuprep::ops::matmul::{split_k, SPLIT_MIN_SLICE};
    // A 256 x 256 weight gradient over a batch of 65,536: 8 blocks of 64 x
    // 128, raised to 256 workgroups; a bias gradient (one block) gets the
    // most slices its K allows; a whitening product is never split, nor a
    // product whose K is short, nor one whose partials would not fit.
    let big = 128 << 20;
    assert_eq!(split_k(8, 65_536, 256 * 256, big), 32);
    assert_eq!(split_k(1, 65_536, 256, big), 256);
    assert_eq!(split_k(1, 4096, 1, big), (4096 / SPLIT_MIN_SLICE) as u32);
    assert_eq!(split_k(16_384, 256, (1 << 20) * 256, big), 1);
    assert_eq!(split_k(1, 2 * SPLIT_MIN_SLICE - 1, 16, big), 1);
    assert_eq!(split_k(4, 1 << 20, 4096 * 4096, big), 1);
    assert_eq!(split_k(4, 1 << 20, 1024 * 1024, 16 << 20), 4);

    // The default splits such products on the device, and the twin holds
    // them, poisoned output, offset data: a bias gradient's shape (one
    // output column), a weight gradient's (x stored transposed), and a
    // plain one, each with K across several slices and a partial last one.
    for (n, k, m, flags) in [
        (20, 3001, 1, 64),
        (36, 2000, 24, 64 + 7),
        (5, 1500, 9, 1 + 4 + 16),
    ] {
        let err = check(n, k, m, flags, MatmulConfig::default(), k as u64 + flags as u64);
        assert!(err <= 1e-5, "{n}x{k} @ {k}x{m} flags {flags}: rel error {err:e}");
    }

    // What the slices are for, seen in one sum: 2^24 followed by 4095 ones.
    // Summed in one f32 accumulator every one is lost (2^24 + 1 rounds to
    // 2^24); in slices of SPLIT_MIN_SLICE only the first slice's are.
    let g = gpu();
    let k = 4096;
    let mut x = Array2::<f32>::ones((1, k));
    x[[0, 0]] = 16_777_216.0;
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let wg = GpuMatrix::upload(g, Array2::<f32>::ones((k, 1)).view()).unwrap();
    let sum = |split_k: Option<u32>| {
        let opts = MatmulOptions {
            tuning: Some(MatmulConfig {
                split_k,
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = ops::matmul(g, &xg, &wg, &opts).unwrap().download(g).unwrap()[[0, 0]];
        f64::from(got) - 16_777_216.0
    };
    let (split, whole) = (sum(None), sum(Some(1)));
    assert!(split >= 3000.0, "split by default: {split} of the 4095 ones kept");
    assert!(whole < 100.0, "one accumulator: {whole} of the 4095 ones kept");
}

#[test]
fn a_long_inner_dimension_is_summed_whole_on_any_adapter() {
    // Mesa's CPU adapters (lavapipe) end every loop of an invocation after
    // 65,535 iterations in all, silently: a product whose K runs one
    // invocation past that summed only its first part (an error of 0.9 at K
    // = 16,384 with 1 x 1 threads before the launcher bounded it). Where the
    // adapter has such a limit, even a product told not to split is cut into
    // the slices that keep each invocation under it. K = 40,000 is past the
    // limit for each layout here: one thread (32 loads per step), a column
    // of 32 threads over x stored transposed (64 loads per step), the
    // default. The tolerance is f32's accumulation over slices of up to
    // 16,384 terms, far below what a truncated sum gives.
    if let Some(limit) = gpu().loop_limit() {
        assert_eq!(limit, gpuprep::gpu::SOFTWARE_LOOP_LIMIT);
    }
    for (threads, flags, m) in [(Some((1, 1)), 1, 8), (Some((1, 32)), 64, 1), (None, 64 + 7, 3)] {
        for split_k in [Some(1), None] {
            let config = MatmulConfig {
                threads,
                split_k,
                ..Default::default()
            };
            let err = check(16, 40_000, m, flags, config, 3 + flags as u64);
            assert!(
                err <= 5e-5,
                "{threads:?} split {split_k:?} flags {flags}: 16x40000 @ 40000x{m}: rel error {err:e}"
            );
        }
    }
}

#[test]
fn split_k_over_output_pieces_shares_its_scratch() {
    // The output cut into pieces of 3 rows (x stored transposed), each piece
    // split: the pieces' passes reuse one scratch buffer in one encoder.
    let g = gpuprep::Gpu::new().unwrap().with_max_piece_bytes(3 * 17 * 4);
    for split in [None, Some(3)] {
        let config = MatmulConfig {
            split_k: split,
            ..Default::default()
        };
        let err = check_on(&g, 40, 600, 17, 64 + 7, config, 5);
        assert!(err <= 1e-5, "x^T pieces, split {split:?}: rel error {err:e}");
    }
}

#[test]
fn one_tile_buffer_where_workgroup_memory_is_small() {
    // On a device with 16 KiB of workgroup memory: 16 x 8 / 16 (12.5 KiB of
    // tiles, registers) and 4 x 8 / 32 (12.8 KiB, straight loads) get one
    // buffer and a second barrier per step; 16 x 8 / 8 still gets two.
    let g = common::small_memory_gpu();
    for (wx, wy, k_step) in [(16, 8, 16), (4, 8, 32), (16, 8, 8)] {
        let config = MatmulConfig {
            threads: Some((wx, wy)),
            k_step: Some(k_step),
            ..Default::default()
        };
        for (k, m, flags) in [(100, 40, 7), (33, 37, 8 + 1), (64, 36, 64 + 5)] {
            let err = check_on(&g, 70, k, m, flags, config, (k + m) as u64);
            assert!(
                err <= 1e-5,
                "{wx}x{wy}/{k_step} flags {flags}: 70x{k} @ {k}x{m}: rel error {err:e}"
            );
        }
    }
    // 16 x 16 / 16 needs 16.6 KiB even with one buffer: refused, not run.
    let xg = GpuMatrix::upload(&g, common::normal(20, 16, 0.0, 1.0, 3).view()).unwrap();
    let wg = GpuMatrix::upload(&g, common::normal(16, 20, 0.0, 1.0, 4).view()).unwrap();
    let too_big = MatmulOptions {
        tuning: Some(MatmulConfig {
            threads: Some((16, 16)),
            k_step: Some(16),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        ops::matmul(&g, &xg, &wg, &too_big),
        Err(Error::ExceedsLimit { .. })
    ));
}

#[test]
fn many_row_blocks_use_the_grid_stride() {
    // More row blocks than workgroups along y would be needed on a small grid is
    // exercised by N large relative to BM = 8 * wy with wy = 1.
    let config = MatmulConfig {
        threads: Some((16, 1)),
        k_step: None,
        ..Default::default()
    };
    let err = check(5000, 5, 20, 3, config, 77);
    assert!(err <= 1e-5, "rel error {err:e}");
}

#[test]
fn linear_layer_with_activations() {
    // A linear layer's (out, in) weight, tanh and relu, every thread layout
    // family; small inputs so tanh is not saturated everywhere.
    for (i, &(n, k, m)) in [(1usize, 1usize, 1usize), (33, 7, 5), (130, 70, 129)]
        .iter()
        .enumerate()
    {
        for flags in [8 + 16, 8 + 32, 8 + 2 + 4 + 32, 16] {
            let g = gpu();
            let x = normal(n, k, 0.0, 0.3, 500 + i as u64);
            let w = normal(m, k, 0.0, 0.5, 600 + i as u64);
            let b: Array1<f32> = (0..m).map(|j| 0.1 * j as f32 - 0.2).collect();
            let s: Array1<f32> = (0..m).map(|j| 1.0 + 0.01 * j as f32).collect();
            let row = |a: &Array1<f32>| GpuMatrix::upload(g, a.view().insert_axis(Axis(0))).unwrap();
            let (bg, sg) = (row(&b), row(&s));
            let activation = if flags & 16 != 0 {
                Activation::Tanh
            } else {
                Activation::Relu
            };
            let transpose_w = flags & 8 != 0;
            let w = if transpose_w { w } else { w.t().to_owned() };
            let opts = MatmulOptions {
                scale: (flags & 2 != 0).then_some(&sg),
                bias: (flags & 4 != 0).then_some(&bg),
                transpose_w,
                activation,
                ..Default::default()
            };
            let got = gpu_matmul(&x, &w, &opts);
            // (no center: flags & 1 is 0 in every case)
            let want = twin_matmul_flagged(
                &x,
                &w,
                flags,
                [&Array1::zeros(k), &s, &b],
                cpu::MatmulOptions {
                    transpose_w,
                    activation,
                    ..Default::default()
                },
            );
            let max_abs = got
                .iter()
                .zip(want.iter())
                .map(|(&a, &b)| (f64::from(a) - b).abs())
                .fold(
                    0.0,
                    |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
                );
            assert!(
                max_abs <= 1e-5,
                "{n}x{k} flags {flags}: max abs error {max_abs:e}"
            );
            if activation == Activation::Relu {
                assert!(got.iter().all(|&v| v >= 0.0));
            }
        }
    }
}

/// The f64 twin's `x @ w` (w widened to f64) under `opts`.
fn twin_matmul(x: &Array2<f32>, w: &Array2<f32>, opts: cpu::MatmulOptions) -> Array2<f64> {
    cpu::matmul(x.view(), w.mapv(f64::from).view(), &opts).unwrap()
}

/// [`twin_matmul`] under `opts` with the center, scale and bias (given in
/// f32, as the GPU has them) that bits 1, 2 and 4 of `flags` select.
fn twin_matmul_flagged(
    x: &Array2<f32>,
    w: &Array2<f32>,
    flags: u32,
    [center, scale, bias]: [&Array1<f32>; 3],
    opts: cpu::MatmulOptions,
) -> Array2<f64> {
    let (c64, s64, b64) = (
        center.mapv(f64::from),
        scale.mapv(f64::from),
        bias.mapv(f64::from),
    );
    twin_matmul(
        x,
        w,
        cpu::MatmulOptions {
            center: (flags & 1 != 0).then(|| c64.view()),
            scale: (flags & 2 != 0).then(|| s64.view()),
            bias: (flags & 4 != 0).then(|| b64.view()),
            ..opts
        },
    )
}

/// `x @ w` on the test GPU under `opts`, read back.
fn gpu_matmul(x: &Array2<f32>, w: &Array2<f32>, opts: &MatmulOptions) -> Array2<f32> {
    let g = gpu();
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let wg = GpuMatrix::upload(g, w.view()).unwrap();
    ops::matmul(g, &xg, &wg, opts).unwrap().download(g).unwrap()
}

/// The product under an activation alone.
fn activated(activation: Activation) -> MatmulOptions<'static> {
    MatmulOptions {
        activation,
        ..Default::default()
    }
}

#[test]
fn tanh_saturates_without_nan() {
    // |x @ w| up to 1e4: tanh must give +-1, not the NaN of exp overflow.
    let x = ndarray::array![[100.0f32, -100.0], [1e4, 0.0]];
    let w = ndarray::array![[1.0f32, 0.0], [0.0, 1.0]];
    let y = gpu_matmul(&x, &w, &activated(Activation::Tanh));
    assert_eq!(y, ndarray::array![[1.0f32, -1.0], [1.0, 0.0]]);
}

#[test]
fn activations_pass_nan_through() {
    let x = ndarray::array![[f32::NAN, 1.0], [-2.0, 3.0]];
    let w = ndarray::array![[1.0f32, 0.0], [0.0, 1.0]];
    for act in [Activation::Tanh, Activation::Relu] {
        let y = gpu_matmul(&x, &w, &activated(act));
        let want = twin_matmul(
            &x,
            &w,
            cpu::MatmulOptions {
                activation: act,
                ..Default::default()
            },
        );
        // Row 0 of the product is NaN (NaN * 0 is NaN); the activation must
        // not turn it into a number. Row 1 is finite.
        for j in 0..2 {
            assert!(
                y[[0, j]].is_nan() && want[[0, j]].is_nan(),
                "{act:?}: {y:?} {want:?}"
            );
            assert!(
                (f64::from(y[[1, j]]) - want[[1, j]]).abs() < 1e-6,
                "{act:?}: {y:?} {want:?}"
            );
        }
    }
}

#[test]
fn tanh_keeps_relative_accuracy_near_zero() {
    // (e^2x - 1) / (e^2x + 1) in f32 loses everything below 1e-3; the
    // lecture's small-random activations live there.
    let v: Vec<f32> = [
        1e-30f32, 1e-8, -3e-6, 1e-4, -2e-3, 0.05, 0.2499, 0.25, -0.26, 0.7, 2.0, -8.0, 14.9,
    ]
    .to_vec();
    let x = Array2::from_shape_vec((v.len(), 1), v.clone()).unwrap();
    let w = ndarray::array![[1.0f32]];
    let y = gpu_matmul(&x, &w, &activated(Activation::Tanh));
    for (&xi, &yi) in v.iter().zip(y.iter()) {
        let want = f64::from(xi).tanh();
        let rel = (f64::from(yi) - want).abs() / want.abs();
        assert!(rel <= 1e-6, "tanh({xi:e}) = {yi:e}, want {want:e} (rel {rel:e})");
    }
}

#[test]
fn plain_product_by_hand() {
    let x = ndarray::array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let w = ndarray::array![[1.0f32, 0.0], [0.0, 1.0], [1.0, -1.0]];
    let y = gpu_matmul(&x, &w, &MatmulOptions::default());
    assert_eq!(y, ndarray::array![[4.0f32, -1.0], [10.0, -1.0]]);
}

#[test]
fn zero_inner_dimension_gives_the_bias() {
    let g = gpu();
    let x = GpuMatrix::uninit(g, 3, 0).unwrap();
    let w = GpuMatrix::uninit(g, 0, 2).unwrap();
    let b = GpuMatrix::upload(g, ndarray::array![[1.5f32, -2.0]].view()).unwrap();
    let opts = MatmulOptions {
        bias: Some(&b),
        ..Default::default()
    };
    let y = ops::matmul(g, &x, &w, &opts).unwrap().download(g).unwrap();
    assert_eq!(y, Array2::from_shape_fn((3, 2), |(_, j)| [1.5f32, -2.0][j]));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let g = gpu();
    let x = GpuMatrix::uninit(g, 4, 3).unwrap();
    let w = GpuMatrix::uninit(g, 2, 5).unwrap();
    assert!(matches!(
        ops::matmul(g, &x, &w, &MatmulOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    // A transposed weight must have x's columns as its columns.
    let wt = GpuMatrix::uninit(g, 5, 2).unwrap();
    let opts = MatmulOptions {
        transpose_w: true,
        ..Default::default()
    };
    assert!(matches!(
        ops::matmul(g, &x, &wt, &opts),
        Err(Error::ShapeMismatch { .. })
    ));
    let w = GpuMatrix::uninit(g, 3, 5).unwrap();
    let v = GpuMatrix::uninit(g, 1, 4).unwrap();
    for opts in [
        MatmulOptions {
            center: Some(&v),
            ..Default::default()
        },
        MatmulOptions {
            scale: Some(&v),
            ..Default::default()
        },
        MatmulOptions {
            bias: Some(&v),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            ops::matmul(g, &x, &w, &opts),
            Err(Error::ShapeMismatch { .. })
        ));
    }
    let mut enc = g.encoder("t");
    let sq = GpuMatrix::uninit(g, 3, 3).unwrap();
    let xs = GpuMatrix::uninit(g, 3, 3).unwrap();
    assert!(matches!(
        ops::encode_matmul_into(g, &mut enc, &xs, &sq, &xs, &MatmulOptions::default()),
        Err(Error::InvalidArgument { .. })
    ));
    let out = GpuMatrix::uninit(g, 4, 5).unwrap();
    for bad in [
        MatmulConfig {
            threads: Some((3, 8)),
            k_step: None,
            ..Default::default()
        },
        MatmulConfig {
            threads: None,
            k_step: Some(12),
            ..Default::default()
        },
        MatmulConfig {
            split_k: Some(0),
            ..Default::default()
        },
    ] {
        let opts = MatmulOptions {
            tuning: Some(bad),
            ..MatmulOptions::default()
        };
        assert!(encode_matmul_into(g, &mut enc, &x, &w, &out, &opts).is_err());
    }
}
