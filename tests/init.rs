//! Weight initialization: the GPU kernels against their CPU twins (bit-identical
//! u32 streams, normals within a few ulps, every scheme), and the CPU twin's
//! own checks: fans, statistics, normality, sparse counts, orthogonality, and
//! the lecture's evidence (symmetry, variance identity, activation statistics).

mod common;

use common::gpu;
use gpuprep::cpu::init::lecture::{
    activation_statistics, hidden_unit_spread, lecture_step, squared_loss_grad, toy_input, toy_target, train,
    variance_identity,
};
use gpuprep::cpu::init::{
    feistel_permute, init, normal_values, sparse_keeps, trunc_normal_values, uniform_values,
};
use gpuprep::model::init::{
    calculate_gain, fans, norm_cdf, FanMode, Fans, Fill, Nonlinearity, Scheme, SparseAxis, TruncNormalPlan,
    KAIMING_GAIN,
};
use gpuprep::model::init::{Experiment, LayerStats};
use gpuprep::model::matmul::Activation;
use gpuprep::ops::init as gpu_init;
use gpuprep::rng::{trunc_normal_f32, ulp_distance, Philox};
use gpuprep::{Error, GpuMatrix};
use ndarray::{Array2, Axis};

const SEED: u64 = 0x5EED_1234_ABCD_0042;

// ---------- helpers ----------

/// erf by its Maclaurin series (|x| <= 4.5 keeps the cancellation below 1e-9).
fn erf(x: f64) -> f64 {
    if x.abs() > 4.5 {
        return x.signum();
    }
    let mut term = x;
    let mut sum = x;
    let x2 = x * x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) {
        n += 1.0;
        term *= -x2 / n;
        sum += term / (2.0 * n + 1.0);
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// The Kolmogorov-Smirnov statistic of `v` against `cdf`.
fn ks_statistic(mut v: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(
            0.0,
            |m: f64, d: f64| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

/// Sample mean and variance (ddof 0).
fn moments(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n)
}

/// Mean and variance within `k` standard errors of a distribution with this
/// mean, variance and fourth central moment.
fn assert_moments(v: &[f64], mean: f64, var: f64, mu4: f64, k: f64, what: &str) {
    let n = v.len() as f64;
    let (m, s2) = moments(v);
    let se_m = (var / n).sqrt();
    let se_v = ((mu4 - var * var) / n).sqrt();
    eprintln!(
        "{what}: mean {m:.6} (want {mean}, {:.2} se), var {s2:.6e} (want {var:.6e}, {:.2} se)",
        (m - mean) / se_m,
        (s2 - var) / se_v
    );
    assert!((m - mean).abs() < k * se_m, "{what}: mean {m} vs {mean}");
    assert!((s2 - var).abs() < k * se_v, "{what}: var {s2} vs {var}");
}

fn assert_normal_moments(v: &[f64], mean: f64, std: f64, what: &str) {
    let var = std * std;
    assert_moments(v, mean, var, 3.0 * var * var, 5.0, what);
}

fn assert_uniform_moments(v: &[f64], low: f64, high: f64, what: &str) {
    let w = high - low;
    assert_moments(v, 0.5 * (low + high), w * w / 12.0, w.powi(4) / 80.0, 5.0, what);
    assert!(v.iter().all(|&x| x >= low && x <= high), "{what}: out of range");
}

fn flat(a: &ndarray::ArrayD<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

// ---------- GPU against the CPU twin ----------

fn gpu_bits(rng: Philox, offset: u64, n: usize, max_groups_x: Option<u32>) -> Vec<u32> {
    let g = gpu();
    let out = GpuMatrix::filled(g, 1, n, f32::NAN).unwrap();
    let mut enc = g.encoder("test");
    gpu_init::encode_random_bits_into(
        g,
        &mut enc,
        rng,
        &out,
        &gpu_init::FillOptions { offset, max_groups_x },
    )
    .unwrap();
    g.submit("test", enc).unwrap();
    bytemuck::pod_collect_to_vec(&g.read_bytes(out.buffer(), 0, 4 * n as u64).unwrap())
}

fn cpu_bits(rng: Philox, offset: u64, n: usize) -> Vec<u32> {
    let mut v = vec![0u32; n];
    rng.fill_bits(offset, &mut v);
    v
}

/// A fill on the GPU into a NaN-poisoned matrix.
fn gpu_fill(
    fill: &Fill,
    rng: Philox,
    offset: u64,
    rows: usize,
    cols: usize,
    max_groups_x: Option<u32>,
) -> Vec<f32> {
    let g = gpu();
    let out = GpuMatrix::filled(g, rows, cols, f32::NAN).unwrap();
    let mut enc = g.encoder("test");
    gpu_init::encode_fill_into(
        g,
        &mut enc,
        fill,
        rng,
        &out,
        &gpu_init::FillOptions { offset, max_groups_x },
    )
    .unwrap();
    g.submit("test", enc).unwrap();
    out.download(g).unwrap().into_raw_vec_and_offset().0
}

#[test]
fn gpu_u32_stream_is_bit_identical() {
    let seeds = [0u64, 1, 0x0123_4567_89AB_CDEF, u64::MAX];
    let streams = [0u64, 3, u64::MAX];
    // Offsets at every lane, one whose block index carries out of its low
    // word inside the fill, and one near the end of the counter space.
    let offsets = [0u64, 1, 2, 3, 7, (1u64 << 34) - 4 * 300 - 1, u64::MAX - 5000];
    let sizes = [1usize, 2, 3, 4, 5, 255, 1021, 1024, 1025, 4097];
    let mut checked = 0;
    for (a, &seed) in seeds.iter().enumerate() {
        for (b, &stream) in streams.iter().enumerate() {
            let rng = Philox::with_stream(seed, stream);
            for (c, &offset) in offsets.iter().enumerate() {
                let n = sizes[(a + 2 * b + 3 * c) % sizes.len()];
                assert_eq!(
                    gpu_bits(rng, offset, n, None),
                    cpu_bits(rng, offset, n),
                    "seed {seed:#x} stream {stream} offset {offset} n {n}"
                );
                checked += 1;
            }
        }
    }
    for &n in &sizes {
        let rng = Philox::new(99);
        assert_eq!(gpu_bits(rng, 5, n, None), cpu_bits(rng, 5, n), "n {n}");
    }
    eprintln!(
        "{} (seed, stream, offset, size) cases bit-identical",
        checked + sizes.len()
    );
}

/// Uniform in [0, 1): what `Philox::uniform` draws.
const UNIT_UNIFORM: Fill = Fill::Uniform {
    center: 0.5,
    half_width: 0.5,
};

#[test]
fn gpu_two_dimensional_grid_covers_everything() {
    // Capping x at 3 workgroups turns 10-20 groups into a 2-D grid with idle
    // invocations in its last row.
    for (offset, n) in [(0u64, 20_001usize), (3, 10_240), (1, 3 * 1024 + 5)] {
        let rng = Philox::with_stream(17, 4);
        assert_eq!(
            gpu_bits(rng, offset, n, Some(3)),
            cpu_bits(rng, offset, n),
            "offset {offset} n {n}"
        );
        let got = gpu_fill(&UNIT_UNIFORM, rng, offset, 1, n, Some(2));
        let want: Vec<f32> = (0..n as u64).map(|k| rng.uniform(offset + k)).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn gpu_pieces_equal_the_whole() {
    let rng = Philox::new(2024);
    let whole = gpu_fill(&Fill::Normal { mean: 0.0, std: 1.0 }, rng, 0, 1, 3000, None);
    let mut start = 0;
    for len in [1usize, 6, 250, 1023, 1720] {
        let piece = gpu_fill(
            &Fill::Normal { mean: 0.0, std: 1.0 },
            rng,
            start as u64,
            1,
            len,
            None,
        );
        assert_eq!(piece, whole[start..start + len], "piece at {start}");
        start += len;
    }
    assert_eq!(start, 3000);
}

#[test]
fn gpu_uniform_floats_are_bit_identical() {
    for (seed, offset, n) in [(5u64, 0u64, 1usize), (5, 3, 4099), (u64::MAX, 1 << 40, 777)] {
        let rng = Philox::new(seed);
        let got = gpu_fill(&UNIT_UNIFORM, rng, offset, 1, n, None);
        let want: Vec<f32> = (0..n as u64).map(|k| rng.uniform(offset + k)).collect();
        assert_eq!(got, want, "seed {seed} offset {offset}");
        // The symmetric form center 0 is one rounding of the same product.
        let got = gpu_fill(
            &Fill::Uniform {
                center: 0.0,
                half_width: 0.75,
            },
            rng,
            offset,
            1,
            n,
            None,
        );
        let want: Vec<f32> = uniform_values(rng, offset, n, 0.0, 0.75)
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn gpu_normals_within_a_few_ulps() {
    let n = 1 << 17;
    let rng = Philox::with_stream(31337, 2);
    let got = gpu_fill(&Fill::Normal { mean: 0.0, std: 1.0 }, rng, 11, 1, n, None);
    let mut worst_ref = 0;
    let mut worst_mirror = 0;
    let mut exact_mirror = 0;
    for (k, &g) in got.iter().enumerate() {
        let i = 11 + k as u64;
        worst_ref = worst_ref.max(ulp_distance(g, rng.normal(i) as f32));
        let m = ulp_distance(g, rng.normal_f32(i));
        worst_mirror = worst_mirror.max(m);
        exact_mirror += usize::from(m == 0);
    }
    eprintln!(
        "GPU normals ({}): {worst_ref} ulp from f64, {worst_mirror} ulp from the f32 mirror, {exact_mirror} of {n} identical to it",
        gpu().adapter_name()
    );
    assert!(worst_ref <= 4, "{worst_ref} ulp from the f64 reference");
}

/// |gpu - cpu| within `ulps` ulps of the random part `w - offset` (std * z or
/// half_width * s), plus 2 ulps of the offset (mean or center) and 1 of the
/// result, which the kernel rounds in f32: near `w = 0` the addition cancels,
/// and the error of the random part is what remains.
fn assert_close_f32(got: &[f32], want: &[f64], offset: f64, ulps: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let ulp = |x: f64| {
        let x = (x.abs() as f32).max(f32::MIN_POSITIVE);
        f64::from(f32::from_bits(x.to_bits() + 1) - x)
    };
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = ulps * ulp(w - offset) + 2.0 * ulp(offset) + ulp(w);
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "{what}: element {k}: GPU {g} vs CPU {w} (tolerance {tol:e})"
        );
    }
}

#[test]
fn gpu_matches_cpu_for_every_scheme() {
    let g = gpu();
    let schemes = [
        Scheme::Zeros,
        Scheme::Constant { value: 0.01 },
        Scheme::Uniform { low: -2.0, high: 3.0 },
        Scheme::Normal { mean: 1.5, std: 2.0 },
        Scheme::Normal { mean: 1e4, std: 1.0 },
        Scheme::SmallRandom,
        Scheme::Calibrated,
        Scheme::kaiming_normal(),
        Scheme::KaimingNormal {
            gain: 1.0,
            mode: FanMode::FanOut,
        },
        Scheme::kaiming_uniform(),
        Scheme::XavierNormal { gain: 1.0 },
        Scheme::XavierUniform { gain: 1.0 },
        Scheme::Sparse {
            sparsity: 0.3,
            std: 0.01,
        },
        Scheme::SparseFixed {
            connections: 1,
            std: 0.01,
        },
        Scheme::Orthogonal { gain: 1.0 },
        Scheme::trunc_normal(),
        Scheme::TruncNormal {
            mean: 1.0,
            std: 0.5,
            low: 0.9,
            high: 3.0,
        },
        Scheme::TruncNormal {
            mean: 0.0,
            std: 1.0,
            low: 3.0,
            high: 8.0,
        },
        Scheme::TruncNormal {
            mean: -1.0,
            std: 2.0,
            low: -30.0,
            high: -9.0,
        },
    ];
    let shapes: [&[usize]; 7] = [
        &[1, 1],
        &[1, 5],
        &[7, 1],
        &[63, 65],
        &[257, 129],
        &[16, 3, 3, 3],
        &[1025, 3],
    ];
    for scheme in &schemes {
        for (s, shape) in shapes.iter().enumerate() {
            let rng = Philox::with_stream(0xC0FFEE, s as u64);
            let fill = match scheme.plan(shape) {
                Ok(f) => f,
                Err(_) => continue, // sparse on 4-D: not a 2-D weight (PyTorch too)
            };
            let want = init(shape, scheme, rng).unwrap();
            let (rows, cols) = gpu_init::matrix_shape(shape).unwrap();
            let out = GpuMatrix::filled(g, rows, cols, f32::NAN).unwrap();
            let mut enc = g.encoder("test");
            gpu_init::encode_init_into(g, &mut enc, shape, scheme, rng, &out).unwrap();
            g.submit("test", enc).unwrap();
            let got = out.download(g).unwrap().into_raw_vec_and_offset().0;
            let want: Vec<f64> = want.iter().copied().collect();
            let what = format!("{scheme:?} {shape:?}");
            match fill {
                Fill::Constant { .. } | Fill::Orthogonal { .. } => {
                    let w32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                    assert_eq!(got, w32, "{what}");
                }
                Fill::Uniform { center, .. } => assert_close_f32(&got, &want, center, 2.0, &what),
                Fill::Normal { mean, .. } => assert_close_f32(&got, &want, mean, 6.0, &what),
                Fill::Sparse(_) => {
                    for (k, (&a, &b)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(a == 0.0, b == 0.0, "{what}: mask differs at {k}");
                    }
                    assert_close_f32(&got, &want, 0.0, 6.0, &what);
                }
                Fill::TruncNormal(t) => assert_trunc_close(&got, &want, &t, &what),
            }
        }
    }
}

#[test]
fn gpu_statistics_and_normality() {
    let n = 1 << 18;
    let rng = Philox::with_stream(SEED, 77);
    let z: Vec<f64> = gpu_fill(&Fill::Normal { mean: 0.0, std: 1.0 }, rng, 0, 512, n / 512, None)
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    assert_normal_moments(&z, 0.0, 1.0, "GPU normal");
    let d = ks_statistic(z, normal_cdf);
    let crit = 1.95 / (n as f64).sqrt();
    eprintln!("GPU KS normal at 2^18: D = {d:.5} (critical {crit:.5})");
    assert!(d < crit);
    let u: Vec<f64> = gpu_fill(
        &Fill::Uniform {
            center: 0.0,
            half_width: 1.0,
        },
        rng,
        0,
        512,
        n / 512,
        None,
    )
    .iter()
    .map(|&v| f64::from(v))
    .collect();
    assert_uniform_moments(&u, -1.0, 1.0, "GPU uniform");
    let g = gpu();
    let k = gpu_init::init(g, &[512, 256, 2], &Scheme::kaiming_normal(), rng).unwrap();
    let kv: Vec<f64> = k.download(g).unwrap().iter().map(|&v| f64::from(v)).collect();
    assert_normal_moments(&kv, 0.0, (2.0f64 / 512.0).sqrt(), "GPU kaiming_normal");
    // Different seeds differ.
    let a = gpu_fill(
        &Fill::Normal { mean: 0.0, std: 1.0 },
        Philox::new(1),
        0,
        1,
        1000,
        None,
    );
    let b = gpu_fill(
        &Fill::Normal { mean: 0.0, std: 1.0 },
        Philox::new(2),
        0,
        1,
        1000,
        None,
    );
    assert_eq!(a.iter().zip(&b).filter(|(x, y)| x == y).count(), 0);
}

#[test]
fn gpu_sparse_counts_are_exact() {
    let g = gpu();
    for (rows, cols, scheme) in [
        (
            300usize,
            40usize,
            Scheme::Sparse {
                sparsity: 0.9,
                std: 0.01,
            },
        ),
        (
            37,
            23,
            Scheme::Sparse {
                sparsity: 0.3,
                std: 0.01,
            },
        ),
        (
            50,
            200,
            Scheme::SparseFixed {
                connections: 10,
                std: 0.01,
            },
        ),
    ] {
        let w = gpu_init::init(g, &[rows, cols], &scheme, Philox::new(SEED))
            .unwrap()
            .download(g)
            .unwrap();
        match scheme {
            Scheme::Sparse { sparsity, .. } => {
                let keep = rows - (sparsity * rows as f64).ceil() as usize;
                for col in w.axis_iter(Axis(1)) {
                    assert_eq!(col.iter().filter(|&&v| v != 0.0).count(), keep);
                }
            }
            Scheme::SparseFixed { connections, .. } => {
                for row in w.axis_iter(Axis(0)) {
                    assert_eq!(row.iter().filter(|&&v| v != 0.0).count(), connections);
                }
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn gpu_bad_input_is_an_error_not_a_panic() {
    let g = gpu();
    let out = GpuMatrix::uninit(g, 3, 4).unwrap();
    let mut enc = g.encoder("test");
    assert!(matches!(
        gpu_init::encode_init_into(g, &mut enc, &[4, 4], &Scheme::Zeros, Philox::new(1), &out),
        Err(Error::ShapeMismatch { .. })
    ));
    // `fill` into `out` from element `offset` on.
    let mut fill_at = |fill: &Fill, offset: u64| {
        let opts = gpu_init::FillOptions {
            offset,
            max_groups_x: None,
        };
        gpu_init::encode_fill_into(g, &mut enc, fill, Philox::new(1), &out, &opts)
    };
    assert!(matches!(
        fill_at(&Fill::Normal { mean: 0.0, std: 1.0 }, u64::MAX - 3),
        Err(Error::InvalidArgument { .. })
    ));
    let plan = (Scheme::Sparse {
        sparsity: 0.5,
        std: 0.01,
    })
    .plan(&[3, 4])
    .unwrap();
    assert!(matches!(fill_at(&plan, 4), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(
        fill_at(&Fill::Normal { mean: 0.0, std: 1e39 }, 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        gpu_init::init(g, &[5], &Scheme::Calibrated, Philox::new(1)),
        Err(Error::ShapeMismatch { .. })
    ));
    // An empty tensor is a no-op.
    let e = gpu_init::init(g, &[0, 7], &Scheme::kaiming_normal(), Philox::new(1)).unwrap();
    assert_eq!(e.len(), 0);
}

// ---------- fans and plans ----------

#[test]
fn fans_follow_pytorch() {
    assert_eq!(
        fans(&[3, 5]).unwrap(),
        Fans {
            fan_in: 5,
            fan_out: 3
        }
    );
    assert_eq!(
        fans(&[64, 3, 7, 7]).unwrap(),
        Fans {
            fan_in: 147,
            fan_out: 3136
        }
    );
    assert_eq!(
        fans(&[8, 4, 5]).unwrap(),
        Fans {
            fan_in: 20,
            fan_out: 40
        }
    );
    assert!(fans(&[5]).is_err());
    assert!(fans(&[]).is_err());
    let f = fans(&[64, 3, 7, 7]).unwrap();
    assert_eq!(f.get(FanMode::FanIn), 147);
    assert_eq!(f.get(FanMode::FanOut), 3136);
}

#[test]
fn plans_resolve_gains_and_fans() {
    let shape = [256, 128, 3, 3];
    let fan_in = 128.0 * 9.0;
    let fan_out = 256.0 * 9.0;
    let normal_std = |s: Scheme| match s.plan(&shape).unwrap() {
        Fill::Normal { mean, std } => {
            assert_eq!(mean, 0.0);
            std
        }
        other => panic!("{other:?}"),
    };
    let bound = |s: Scheme| match s.plan(&shape).unwrap() {
        Fill::Uniform { center, half_width } => {
            assert_eq!(center, 0.0);
            half_width
        }
        other => panic!("{other:?}"),
    };
    let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-15 * b, "{a} vs {b}");
    close(normal_std(Scheme::SmallRandom), 0.01);
    close(normal_std(Scheme::Calibrated), 1.0 / f64::sqrt(fan_in));
    close(normal_std(Scheme::kaiming_normal()), f64::sqrt(2.0 / fan_in));
    close(
        normal_std(Scheme::KaimingNormal {
            gain: 1.0,
            mode: FanMode::FanOut,
        }),
        1.0 / f64::sqrt(fan_out),
    );
    close(bound(Scheme::kaiming_uniform()), f64::sqrt(6.0 / fan_in));
    close(
        normal_std(Scheme::XavierNormal { gain: 1.0 }),
        f64::sqrt(2.0 / (fan_in + fan_out)),
    );
    close(
        bound(Scheme::XavierUniform { gain: 2.0 }),
        2.0 * f64::sqrt(6.0 / (fan_in + fan_out)),
    );
    assert_eq!(KAIMING_GAIN, std::f64::consts::SQRT_2);
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let bad = [
        (Scheme::Calibrated, vec![10usize]),
        (Scheme::kaiming_normal(), vec![]),
        (Scheme::Uniform { low: 1.0, high: 0.0 }, vec![3, 3]),
        (Scheme::Normal { mean: 0.0, std: -1.0 }, vec![3, 3]),
        (
            Scheme::Normal {
                mean: f64::NAN,
                std: 1.0,
            },
            vec![3, 3],
        ),
        (Scheme::Constant { value: f64::INFINITY }, vec![2]),
        (
            Scheme::Sparse {
                sparsity: 1.5,
                std: 0.01,
            },
            vec![3, 3],
        ),
        (
            Scheme::Sparse {
                sparsity: 0.5,
                std: 0.01,
            },
            vec![3, 3, 3],
        ),
        (
            Scheme::SparseFixed {
                connections: 4,
                std: 0.01,
            },
            vec![3, 3],
        ),
        (Scheme::Orthogonal { gain: 1.0 }, vec![4]),
        (
            Scheme::KaimingNormal {
                gain: -1.0,
                mode: FanMode::FanIn,
            },
            vec![3, 3],
        ),
    ];
    for (scheme, shape) in bad {
        assert!(
            init(&shape, &scheme, Philox::new(1)).is_err(),
            "{scheme:?} {shape:?}"
        );
    }
    // Zero-element tensors are a no-op for every scheme (as in PyTorch).
    let empty = init(&[0, 5], &Scheme::kaiming_normal(), Philox::new(1)).unwrap();
    assert_eq!(empty.shape(), &[0, 5]);
}

#[test]
fn zeros_constant_and_bias() {
    let z = init(&[7], &Scheme::Zeros, Philox::new(1)).unwrap();
    assert!(z.iter().all(|&v| v == 0.0));
    let b = init(&[500], &Scheme::Constant { value: 0.01 }, Philox::new(1)).unwrap();
    assert!(b.iter().all(|&v| v == 0.01));
    let w = init(&[2, 3, 4], &Scheme::Constant { value: -2.5 }, Philox::new(1)).unwrap();
    assert_eq!(w.shape(), &[2, 3, 4]);
    assert!(w.iter().all(|&v| v == -2.5));
}

// ---------- statistics at 10^6 samples ----------

#[test]
fn uniform_and_normal_statistics_at_a_million() {
    let n = 1_000_000;
    let u = init(
        &[1000, 1000],
        &Scheme::Uniform { low: -2.0, high: 3.0 },
        Philox::new(SEED),
    )
    .unwrap();
    assert_uniform_moments(&flat(&u), -2.0, 3.0, "uniform(-2, 3)");
    let g = init(&[n], &Scheme::Normal { mean: 1.5, std: 2.0 }, Philox::new(SEED)).unwrap();
    assert_normal_moments(&flat(&g), 1.5, 2.0, "normal(1.5, 2)");
    let s = init(&[1000, 1000], &Scheme::SmallRandom, Philox::with_stream(SEED, 9)).unwrap();
    assert_normal_moments(&flat(&s), 0.0, 0.01, "small_random");
    let c = init(&[1000, 1000], &Scheme::Calibrated, Philox::with_stream(SEED, 10)).unwrap();
    assert_normal_moments(&flat(&c), 0.0, 1.0 / 1000f64.sqrt(), "calibrated");
    let k = init(
        &[250, 1000, 2, 2],
        &Scheme::kaiming_normal(),
        Philox::with_stream(SEED, 11),
    )
    .unwrap();
    assert_normal_moments(&flat(&k), 0.0, (2.0 / 4000f64).sqrt(), "kaiming_normal");
    let ku = init(
        &[1000, 1000],
        &Scheme::kaiming_uniform(),
        Philox::with_stream(SEED, 12),
    )
    .unwrap();
    let b = (6.0 / 1000f64).sqrt();
    assert_uniform_moments(&flat(&ku), -b, b, "kaiming_uniform");
    let xn = init(
        &[500, 2000],
        &Scheme::XavierNormal { gain: 1.0 },
        Philox::with_stream(SEED, 13),
    )
    .unwrap();
    assert_normal_moments(&flat(&xn), 0.0, (2.0 / 2500f64).sqrt(), "xavier_normal");
    let xu = init(
        &[500, 2000],
        &Scheme::XavierUniform { gain: 1.0 },
        Philox::with_stream(SEED, 14),
    )
    .unwrap();
    let b = (6.0 / 2500f64).sqrt();
    assert_uniform_moments(&flat(&xu), -b, b, "xavier_uniform");
}

#[test]
fn kolmogorov_smirnov() {
    let n = 1_000_000;
    // alpha = 0.001: D_n < 1.95 / sqrt(n).
    let crit = 1.95 / (n as f64).sqrt();
    let z = normal_values(Philox::new(SEED), 0, n, 0.0, 1.0);
    let d = ks_statistic(z, normal_cdf);
    eprintln!("KS normal: D = {d:.6} (critical {crit:.6})");
    assert!(d < crit, "normal KS D = {d}");
    let u = uniform_values(Philox::new(SEED), 0, n, 0.5, 0.5);
    let d = ks_statistic(u, |x| x.clamp(0.0, 1.0));
    eprintln!("KS uniform: D = {d:.6}");
    assert!(d < crit, "uniform KS D = {d}");
    // The check has teeth: a 2% error in the scale is rejected.
    let z = normal_values(Philox::new(SEED), 0, n, 0.0, 1.02);
    assert!(ks_statistic(z, normal_cdf) > crit);
}

#[test]
fn erf_reference_is_accurate() {
    // Known values: erf(0.5), erf(1), erf(2), erf(3).
    let known = [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.0, 0.999_977_909_503_001_4),
    ];
    for (x, want) in known {
        assert!((erf(x) - want).abs() < 1e-12, "erf({x})");
        assert!((erf(-x) + want).abs() < 1e-12);
    }
}

#[test]
fn seeds_and_streams_differ_and_chunks_agree() {
    let a = normal_values(Philox::new(1), 0, 1000, 0.0, 1.0);
    let b = normal_values(Philox::new(2), 0, 1000, 0.0, 1.0);
    let c = normal_values(Philox::with_stream(1, 1), 0, 1000, 0.0, 1.0);
    let same = |x: &[f64], y: &[f64]| x.iter().zip(y).filter(|(p, q)| p == q).count();
    assert_eq!(same(&a, &b), 0);
    assert_eq!(same(&a, &c), 0);
    let again = normal_values(Philox::new(1), 0, 1000, 0.0, 1.0);
    assert_eq!(a, again);
    // A chunk at an offset is that slice of the whole, for every lane alignment.
    let whole = uniform_values(Philox::new(7), 0, 1000, 0.0, 1.0);
    let wholez = normal_values(Philox::new(7), 0, 1000, 0.0, 1.0);
    for off in [1usize, 2, 3, 4, 5, 333] {
        assert_eq!(
            uniform_values(Philox::new(7), off as u64, 100, 0.0, 1.0),
            whole[off..off + 100]
        );
        assert_eq!(
            normal_values(Philox::new(7), off as u64, 100, 0.0, 1.0),
            wholez[off..off + 100]
        );
    }
}

// ---------- sparse ----------

#[test]
fn feistel_is_a_permutation() {
    let keys = Philox::new(3).block(0);
    for n in [1u32, 2, 3, 4, 5, 7, 16, 17, 100, 1000, 4097, 70_000] {
        let mut seen = vec![false; n as usize];
        for p in 0..n {
            let q = feistel_permute(p, n, keys) as usize;
            assert!(q < n as usize && !seen[q], "n = {n}, p = {p}");
            seen[q] = true;
        }
    }
}

#[test]
fn sparse_pytorch_counts_are_exact() {
    for (rows, cols, sparsity) in [
        (37usize, 23usize, 0.3),
        (10, 5, 0.9),
        (1, 4, 0.5),
        (64, 1, 0.0),
        (5, 3, 1.0),
    ] {
        let w = init(
            &[rows, cols],
            &Scheme::Sparse { sparsity, std: 0.01 },
            Philox::new(SEED),
        )
        .unwrap();
        let zeros = (sparsity * rows as f64).ceil() as usize;
        for (j, col) in w.axis_iter(Axis(1)).enumerate() {
            let nz = col.iter().filter(|&&v| v != 0.0).count();
            assert_eq!(nz, rows - zeros, "{rows}x{cols} sparsity {sparsity}, column {j}");
        }
    }
}

#[test]
fn sparse_fixed_counts_are_exact() {
    for (rows, cols, k) in [(20usize, 50usize, 10usize), (3, 7, 7), (5, 9, 0), (1, 1000, 13)] {
        let w = init(
            &[rows, cols],
            &Scheme::SparseFixed {
                connections: k,
                std: 0.01,
            },
            Philox::new(SEED),
        )
        .unwrap();
        for (i, row) in w.axis_iter(Axis(0)).enumerate() {
            assert_eq!(row.iter().filter(|&&v| v != 0.0).count(), k, "row {i}");
        }
    }
}

#[test]
fn sparse_positions_are_uniform_and_values_small_gaussian() {
    // 10 rows, 40 000 columns, 3 kept per column: each row is kept in a
    // column with probability 0.3, a binomial count per row.
    let (rows, cols) = (10usize, 40_000usize);
    let plan = match (Scheme::Sparse {
        sparsity: 0.7,
        std: 0.01,
    })
    .plan(&[rows, cols])
    .unwrap()
    {
        Fill::Sparse(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!((plan.keep, plan.axis), (3, SparseAxis::Columns));
    let rng = Philox::new(SEED);
    let p = 0.3;
    let sd = (cols as f64 * p * (1.0 - p)).sqrt();
    for i in 0..rows {
        let kept = (0..cols).filter(|&j| sparse_keeps(&plan, rng, i, j)).count() as f64;
        assert!((kept - p * cols as f64).abs() < 5.0 * sd, "row {i}: {kept}");
    }
    let w = init(
        &[rows, cols],
        &Scheme::Sparse {
            sparsity: 0.7,
            std: 0.01,
        },
        rng,
    )
    .unwrap();
    let nz: Vec<f64> = w.iter().copied().filter(|&v| v != 0.0).collect();
    assert_eq!(nz.len(), 3 * cols);
    assert_normal_moments(&nz, 0.0, 0.01, "sparse nonzeros");
    // A different seed moves the mask.
    let w2 = init(
        &[rows, cols],
        &Scheme::Sparse {
            sparsity: 0.7,
            std: 0.01,
        },
        Philox::new(SEED + 1),
    )
    .unwrap();
    let moved = w
        .iter()
        .zip(w2.iter())
        .filter(|(a, b)| (**a == 0.0) != (**b == 0.0))
        .count();
    assert!(moved > cols);
}

// ---------- orthogonal ----------

fn assert_orthonormal(m: &Array2<f64>, gain: f64) {
    let g = if m.nrows() <= m.ncols() {
        m.dot(&m.t())
    } else {
        m.t().dot(m)
    };
    for ((i, j), v) in g.indexed_iter() {
        let want = if i == j { gain * gain } else { 0.0 };
        assert!((v - want).abs() < 1e-12, "({i},{j}) = {v}");
    }
}

#[test]
fn orthogonal_is_orthonormal() {
    for shape in [
        vec![64usize, 64],
        vec![100, 30],
        vec![30, 100],
        vec![16, 8, 3, 3],
        vec![1, 5],
    ] {
        let w = init(&shape, &Scheme::Orthogonal { gain: 1.5 }, Philox::new(SEED)).unwrap();
        let rows = shape[0];
        let cols = w.len() / rows;
        let m = w.into_shape_with_order((rows, cols)).unwrap();
        assert_orthonormal(&m, 1.5);
    }
    // Sign-corrected: the same seed gives the same matrix, another seed another.
    let a = init(&[20, 20], &Scheme::Orthogonal { gain: 1.0 }, Philox::new(1)).unwrap();
    let b = init(&[20, 20], &Scheme::Orthogonal { gain: 1.0 }, Philox::new(1)).unwrap();
    let c = init(&[20, 20], &Scheme::Orthogonal { gain: 1.0 }, Philox::new(2)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

// ---------- the lecture: symmetry ----------

fn assert_all_close(a: &Array2<f64>, want: &Array2<f64>, tol: f64) {
    assert_eq!(a.shape(), want.shape());
    for (x, y) in a.iter().zip(want.iter()) {
        assert!((x - y).abs() <= tol, "{a}\nvs\n{want}");
    }
}

#[test]
fn lecture_symmetry_numbers() {
    let (x, t) = (toy_input(), toy_target());
    // Zero initialization.
    let (w1, w2) = lecture_step(&x, &t, &Array2::zeros((3, 4)), &Array2::zeros((4, 2))).unwrap();
    eprintln!("from zeros:\nW1 =\n{w1}\nW2 =\n{w2}");
    let rows = |a: f64, b: f64, c: f64| Array2::from_shape_fn((3, 4), |(i, _)| [a, b, c][i]);
    assert_all_close(&w1, &rows(0.5, -0.25, -0.25), 1e-15);
    assert_all_close(&w2, &Array2::from_elem((4, 2), -0.5), 1e-15);
    // Constant initialization, W1 = 0.01 and W2 = 0.09.
    let (w1, w2) = lecture_step(
        &x,
        &t,
        &Array2::from_elem((3, 4), 0.01),
        &Array2::from_elem((4, 2), 0.09),
    )
    .unwrap();
    eprintln!("from 0.01 / 0.09:\nW1 =\n{w1}\nW2 =\n{w2}");
    assert_all_close(&w1, &rows(0.51, -0.24, -0.24), 1e-15);
    assert_all_close(&w2, &Array2::from_elem((4, 2), -0.23), 1e-15);
    // Every hidden unit is still identical.
    assert_eq!(hidden_unit_spread(&w1, &w2).unwrap(), 0.0);
    // Shapes that do not chain are errors, not panics (a debug assertion once).
    assert!(lecture_step(&x, &t, &Array2::zeros((4, 4)), &Array2::zeros((4, 2))).is_err());
    assert!(train(&x, &t, Array2::zeros((3, 4)), Array2::zeros((3, 2)), 0.5, 10).is_err());
    assert!(squared_loss_grad(&x, &t, &Array2::zeros((3, 4)), &Array2::zeros((4, 3))).is_err());
    assert!(hidden_unit_spread(&Array2::zeros((3, 4)), &Array2::zeros((2, 2))).is_err());
}

#[test]
fn squared_loss_gradient_matches_finite_differences() {
    let (x, t) = (toy_input(), toy_target());
    let rng = Philox::new(SEED);
    let w1: Array2<f64> = init(&[3, 4], &Scheme::Normal { mean: 0.0, std: 0.5 }, rng)
        .unwrap()
        .into_dimensionality()
        .unwrap();
    let w2: Array2<f64> = init(
        &[4, 2],
        &Scheme::Normal { mean: 0.0, std: 0.5 },
        Philox::with_stream(SEED, 1),
    )
    .unwrap()
    .into_dimensionality()
    .unwrap();
    let g = squared_loss_grad(&x, &t, &w1, &w2).unwrap();
    let h = 1e-5;
    let mut worst = 0.0f64;
    for which in 0..2 {
        let (w, dw) = if which == 0 { (&w1, &g.dw1) } else { (&w2, &g.dw2) };
        for idx in 0..w.len() {
            let (i, j) = (idx / w.ncols(), idx % w.ncols());
            let mut wp = w.clone();
            let mut wm = w.clone();
            wp[(i, j)] += h;
            wm[(i, j)] -= h;
            let (lp, lm) = if which == 0 {
                (
                    squared_loss_grad(&x, &t, &wp, &w2).unwrap().loss,
                    squared_loss_grad(&x, &t, &wm, &w2).unwrap().loss,
                )
            } else {
                (
                    squared_loss_grad(&x, &t, &w1, &wp).unwrap().loss,
                    squared_loss_grad(&x, &t, &w1, &wm).unwrap().loss,
                )
            };
            let num = (lp - lm) / (2.0 * h);
            let a = dw[(i, j)];
            worst = worst.max((a - num).abs() / (a.abs() + num.abs()).max(1e-8));
        }
    }
    eprintln!("gradient check: max rel_error {worst:.3e}");
    assert!(worst < 1e-7, "rel_error {worst}");
}

#[test]
fn constant_init_keeps_units_identical_random_breaks_symmetry() {
    let (x, t) = (toy_input(), toy_target());
    let steps = 2000;
    let lr = 0.5;
    let (w1c, w2c, lc) = train(
        &x,
        &t,
        Array2::from_elem((3, 4), 0.01),
        Array2::from_elem((4, 2), 0.09),
        lr,
        steps,
    )
    .unwrap();
    let spread_c = hidden_unit_spread(&w1c, &w2c).unwrap();
    let rng = Philox::new(SEED);
    let w1r: Array2<f64> = init(&[3, 4], &Scheme::SmallRandom, rng)
        .unwrap()
        .into_dimensionality()
        .unwrap();
    let w2r: Array2<f64> = init(&[4, 2], &Scheme::SmallRandom, Philox::with_stream(SEED, 1))
        .unwrap()
        .into_dimensionality()
        .unwrap();
    let (w1r, w2r, lr_) = train(&x, &t, w1r, w2r, lr, steps).unwrap();
    let spread_r = hidden_unit_spread(&w1r, &w2r).unwrap();
    eprintln!(
        "after {steps} steps: constant init spread {spread_c:e}, loss {:e}; random init spread {spread_r:.3}, loss {:e}",
        lc[steps], lr_[steps]
    );
    assert_eq!(spread_c, 0.0, "constant init: hidden units must stay identical");
    assert!(spread_r > 0.1, "random init: units should differ");
    assert!(lr_[steps] < lc[steps], "random init should fit better");
}

// ---------- the lecture: variance identity and activation statistics ----------

#[test]
fn variance_identity_holds() {
    let n = 500;
    let samples = 20_000;
    for (w, x, what) in [
        (
            Fill::Normal { mean: 0.0, std: 0.05 },
            Fill::Normal { mean: 0.0, std: 2.0 },
            "normal w, normal x",
        ),
        (
            Fill::Uniform {
                center: 0.0,
                half_width: 0.1,
            },
            Fill::Normal { mean: 0.0, std: 1.0 },
            "uniform w, normal x",
        ),
        (
            Fill::Normal {
                mean: 0.0,
                std: 1.0 / (n as f64).sqrt(),
            },
            Fill::Uniform {
                center: 0.0,
                half_width: 1.0,
            },
            "calibrated w, uniform x",
        ),
    ] {
        let v = variance_identity(n, samples, &w, &x, SEED).unwrap();
        // s is nearly normal (kurtosis 3 + O(1/n)): Var(s) has standard error
        // about Var(s) sqrt(2 / samples) = 1%.
        let rel = (v.var_s - v.predicted) / v.predicted;
        eprintln!(
            "{what}: Var(s) = {:.5e}, n Var(w) Var(x) = {:.5e} ({:+.2}%)",
            v.var_s,
            v.predicted,
            100.0 * rel
        );
        assert!(rel.abs() < 5.0 * (2.0 / samples as f64).sqrt(), "{what}: {rel}");
    }
}

fn print_table(title: &str, rows: &[(&str, Vec<LayerStats>)]) {
    eprintln!("{title}");
    eprint!("layer");
    for (name, _) in rows {
        eprint!(" | {name:>22}");
    }
    eprintln!();
    for l in 0..rows[0].1.len() {
        eprint!("{:>5}", l + 1);
        for (_, s) in rows {
            eprint!(" | {:>+10.3e} {:>10.3e}", s[l].mean, s[l].std);
        }
        eprintln!();
    }
}

#[test]
fn activation_statistics_of_a_deep_network() {
    let (layers, units, batch) = (10, 500, 1000);
    let he = Scheme::kaiming_normal();
    let mut all = Vec::new();
    for nl in [Activation::Tanh, Activation::Relu] {
        let rows: Vec<(&str, Vec<LayerStats>)> = [
            ("0.01*randn", Scheme::SmallRandom),
            ("randn/sqrt(n)", Scheme::Calibrated),
            ("He randn*sqrt(2/n)", he),
        ]
        .into_iter()
        .map(|(name, s)| {
            (
                name,
                activation_statistics(&Experiment {
                    scheme: &s,
                    activation: nl,
                    layers,
                    units,
                    batch,
                    seed: SEED,
                })
                .unwrap(),
            )
        })
        .collect();
        print_table(
            &format!("{nl:?}: mean and std of each layer's activations"),
            &rows,
        );
        all.push(rows);
    }
    let (tanh, relu) = (&all[0], &all[1]);
    // Small random numbers: the activations collapse toward zero.
    assert!(tanh[0].1[9].std < 1e-5 && relu[0].1[9].std < 1e-5);
    // 1/sqrt(n) holds for tanh: the std stays order one.
    assert!(tanh[1].1[9].std > 0.1);
    // ... but halves the variance at each ReLU layer.
    let r = relu[1].1[9].std / relu[1].1[0].std;
    assert!(
        (r / 0.5f64.powf(4.5) - 1.0).abs() < 0.3,
        "ReLU with 1/sqrt(n): ratio {r}"
    );
    // He holds for ReLU.
    let r = relu[2].1[9].std / relu[2].1[0].std;
    assert!((0.7..1.4).contains(&r), "ReLU with He: ratio {r}");
}

#[test]
fn activation_statistics_gpu_matches_cpu_twin() {
    // The same network on the GPU (init, product with the activation fused,
    // column statistics) and on the f64 twin, at awkward sizes: units not a
    // multiple of the tile, a batch of one, one unit.
    let g = gpu();
    let schemes = [Scheme::SmallRandom, Scheme::Calibrated, Scheme::kaiming_normal()];
    for &(layers, units, batch) in &[(4usize, 97usize, 130usize), (3, 1, 5), (2, 20, 1)] {
        for nl in [Activation::Tanh, Activation::Relu] {
            for s in &schemes {
                let e = Experiment {
                    scheme: s,
                    activation: nl,
                    layers,
                    units,
                    batch,
                    seed: SEED,
                };
                let got = gpu_init::lecture::activation_statistics(g, &e).unwrap();
                let want = activation_statistics(&e).unwrap();
                assert_eq!(got.len(), layers);
                for (l, (a, b)) in got.iter().zip(&want).enumerate() {
                    let what =
                        format!("{s:?} {nl:?} {layers}x{units}x{batch} layer {l}: gpu {a:?} cpu {b:?}");
                    // Relative to the layer's own scale: the small-random
                    // activations shrink by orders of magnitude.
                    let scale = b.std.max(b.mean.abs());
                    if scale == 0.0 {
                        assert_eq!((a.mean, a.std), (0.0, 0.0), "{what}");
                        continue;
                    }
                    assert!((a.std - b.std).abs() <= 1e-5 * scale, "{what}");
                    assert!((a.mean - b.mean).abs() <= 1e-5 * scale, "{what}");
                }
            }
        }
    }
    let no_rows = Experiment {
        scheme: &schemes[0],
        activation: Activation::Tanh,
        layers: 2,
        units: 8,
        batch: 0,
        seed: SEED,
    };
    assert!(gpu_init::lecture::activation_statistics(g, &no_rows).is_err());
}

#[test]
fn activation_statistics_with_small_buffers_matches_cpu_twin() {
    // A device whose buffers hold 7 rows of 64 units: the layers' 5-row
    // statistics land across buffer boundaries (a copy by byte offset into
    // the first buffer ran past it).
    let g = gpuprep::Gpu::new().unwrap().with_max_block_bytes(7 * 64 * 4);
    let (layers, units, batch) = (4, 64, 30);
    let s = Scheme::kaiming_normal();
    let e = Experiment {
        scheme: &s,
        activation: Activation::Relu,
        layers,
        units,
        batch,
        seed: SEED,
    };
    let got = gpu_init::lecture::activation_statistics(&g, &e).unwrap();
    let want = activation_statistics(&e).unwrap();
    for (l, (a, b)) in got.iter().zip(&want).enumerate() {
        let scale = b.std.max(b.mean.abs());
        assert!(
            (a.std - b.std).abs() <= 1e-5 * scale,
            "layer {l}: gpu {a:?} cpu {b:?}"
        );
        assert!(
            (a.mean - b.mean).abs() <= 1e-5 * scale,
            "layer {l}: gpu {a:?} cpu {b:?}"
        );
    }
    g.wait().unwrap();
}

// ---------- the command line ----------

fn gpuprep() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gpuprep"));
    c.env(
        "XDG_RUNTIME_DIR",
        std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
    );
    c
}

#[test]
fn cli_init_writes_f32_npy_on_gpu_and_cpu() {
    let dir = std::env::temp_dir().join(format!("gpuprep-init-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // `gpuprep init ARGS -o OUT` (ARGS split at spaces), its output read back.
    let run = |args: &str, out: &str| {
        let o = gpuprep()
            .arg("init")
            .args(args.split_whitespace())
            .arg("-o")
            .arg(dir.join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let a: ndarray::ArrayD<f32> = ndarray_npy::read_npy(dir.join(out)).unwrap();
        a
    };
    let args = "--scheme kaiming_normal --shape 16,3,3,3 --seed 5";
    let g = run(args, "g.npy");
    let c = run(&format!("{args} --device cpu"), "c.npy");
    assert_eq!(g.shape(), &[16, 3, 3, 3]);
    let want = init(&[16, 3, 3, 3], &Scheme::kaiming_normal(), Philox::new(5)).unwrap();
    assert_eq!(c, want.mapv(|v| v as f32));
    assert!(g.iter().zip(c.iter()).all(|(a, b)| ulp_distance(*a, *b) <= 6));
    // The lecture's fixed-count sparse form, behind --connections.
    let s = run("--scheme sparse --connections 4 --shape 6,10 --seed 1", "s.npy");
    for row in s.axis_iter(Axis(0)) {
        assert_eq!(row.iter().filter(|&&v| v != 0.0).count(), 4);
    }
    // PyTorch's form, and a bias.
    let p = run("--scheme sparse --sparsity 0.5 --shape 7,3 --seed 1", "p.npy");
    for col in p.axis_iter(Axis(1)) {
        assert_eq!(col.iter().filter(|&&v| v != 0.0).count(), 3);
    }
    let b = run("--scheme constant --value 0.01 --shape 5 --seed 0", "b.npy");
    assert_eq!(b.as_slice().unwrap(), &[0.01f32; 5]);
    // A bad request fails cleanly and writes nothing.
    let refused = |args: &str| {
        let o = gpuprep()
            .arg("init")
            .args(args.split_whitespace())
            .arg("-o")
            .arg(dir.join("bad.npy"))
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(refused("--scheme constant --shape 3 --seed 0").contains("--value"));
    refused("--scheme calibrated --shape 3 --seed 0");
    assert!(!dir.join("bad.npy").exists());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn activation_statistics_gpu_zero_layers_is_empty() {
    let g = gpu();
    let s = Scheme::kaiming_normal();
    let no_layers = Experiment {
        scheme: &s,
        activation: Activation::Relu,
        layers: 0,
        units: 8,
        batch: 4,
        seed: SEED,
    };
    let got = gpu_init::lecture::activation_statistics(g, &no_layers).unwrap();
    assert!(got.is_empty());
    let no_units = Experiment {
        layers: 2,
        units: 0,
        ..no_layers
    };
    assert!(gpu_init::lecture::activation_statistics(g, &no_units).is_err());
}

// ---------- gains and the truncated normal (issue 10) ----------

/// |gpu - twin| within 8 * 2^-23 * std * max(1, |z|) + 2 ulps of the value and
/// of the mean: the f32 rounding of the plan's probabilities moves z by about
/// 1e-7 (central) to 1e-7 / |z| (tails), and the f32 inverse CDF by a few ulps of z.
fn assert_trunc_close(got: &[f32], want: &[f64], t: &TruncNormalPlan, what: &str) {
    let ulp = |x: f64| {
        let x = (x.abs() as f32).max(f32::MIN_POSITIVE);
        f64::from(f32::from_bits(x.to_bits() + 1) - x)
    };
    let mut worst = 0.0f64;
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let z = (w - t.mean) / t.std;
        let tol = 8.0 * t.std * z.abs().max(1.0) / 8_388_608.0 + 2.0 * ulp(w) + 2.0 * ulp(t.mean);
        let e = (f64::from(g) - w).abs();
        assert!(
            e <= tol,
            "{what}: element {k}: GPU {g} vs CPU {w} (tolerance {tol:e})"
        );
        assert!(f64::from(g) >= t.low as f32 as f64 && f64::from(g) <= t.high as f32 as f64);
        worst = worst.max(e / tol);
    }
    eprintln!("{what}: worst |GPU - twin| {worst:.2} of the tolerance");
}

#[test]
fn calculate_gain_follows_pytorch() {
    use std::f64::consts::SQRT_2;
    let want = [
        ("linear", 1.0),
        ("conv1d", 1.0),
        ("conv2d", 1.0),
        ("conv3d", 1.0),
        ("conv_transpose1d", 1.0),
        ("conv_transpose2d", 1.0),
        ("conv_transpose3d", 1.0),
        ("sigmoid", 1.0),
        ("tanh", 5.0 / 3.0),
        ("relu", SQRT_2),
        ("leaky_relu", (2.0f64 / (1.0 + 0.01 * 0.01)).sqrt()),
        ("selu", 0.75),
    ];
    assert_eq!(want.len(), Nonlinearity::NAMES.len());
    for (name, gain) in want {
        assert_eq!(calculate_gain(name, None).unwrap(), gain, "{name}");
        assert_eq!(Nonlinearity::from_name(name, None).unwrap().name(), name);
    }
    assert_eq!(
        calculate_gain("leaky_relu", Some(0.2)).unwrap(),
        (2.0f64 / 1.04).sqrt()
    );
    assert_eq!(calculate_gain("leaky_relu", Some(0.0)).unwrap(), SQRT_2);
    // as in PyTorch, the parameter is leaky_relu's alone
    assert_eq!(calculate_gain("tanh", Some(0.2)).unwrap(), 5.0 / 3.0);
    for bad in ["Relu", "softplus", ""] {
        assert!(
            matches!(calculate_gain(bad, None), Err(Error::InvalidArgument { .. })),
            "{bad}"
        );
    }
    assert!(calculate_gain("leaky_relu", Some(f64::NAN)).is_err());
    // kaiming_*_(a, mode, nonlinearity): PyTorch's defaults are a = 0, fan_in, leaky_relu
    let std = |s: Scheme| match s.plan(&[64, 32, 3, 3]).unwrap() {
        Fill::Normal { std, .. } => std,
        Fill::Uniform { half_width, .. } => half_width / 3f64.sqrt(),
        f => panic!("{f:?}"),
    };
    let fan_in = (32.0f64 * 9.0).sqrt();
    let fan_out = (64.0f64 * 9.0).sqrt();
    assert_eq!(
        std(Scheme::kaiming_normal_with(0.0, FanMode::FanIn, "leaky_relu").unwrap()),
        SQRT_2 / fan_in
    );
    assert_eq!(
        std(Scheme::kaiming_normal_with(0.0, FanMode::FanIn, "leaky_relu").unwrap()),
        std(Scheme::kaiming_normal())
    );
    let g = (2.0f64 / (1.0 + 0.2 * 0.2)).sqrt();
    assert!(
        (std(Scheme::kaiming_normal_with(0.2, FanMode::FanOut, "leaky_relu").unwrap()) - g / fan_out).abs()
            < 1e-16
    );
    assert!(
        (std(Scheme::kaiming_uniform_with(0.2, FanMode::FanIn, "leaky_relu").unwrap()) - g / fan_in).abs()
            < 1e-16
    );
    assert_eq!(
        std(Scheme::kaiming_normal_with(0.5, FanMode::FanIn, "tanh").unwrap()),
        5.0 / 3.0 / fan_in
    );
    assert!(Scheme::kaiming_normal_with(0.0, FanMode::FanIn, "elu").is_err());
}

#[test]
fn inverse_normal_cdf_inverts_phi() {
    use gpuprep::rng::{norm_ppf_lower_f32, norm_ppf_lower_f64};
    let mut worst64 = 0.0f64;
    let mut worst32 = 0.0f64;
    // p from 1e-20 to 1/2, logarithmically, and across the 0.075 and exp(-25) branch points
    let mut ps: Vec<f64> = (0..=2000)
        .map(|i| 10f64.powf(-20.0 + 20.0 * i as f64 / 2000.0) * 0.5)
        .collect();
    ps.extend([
        0.075,
        0.0749999,
        0.0750001,
        (-25.0f64).exp(),
        (-25.0f64).exp() * 1.0001,
        0.5,
    ]);
    for &p in &ps {
        let z = norm_ppf_lower_f64(p);
        assert!(z <= 0.0);
        // Phi(z) in the lower tail is exact to rounding with erfc
        let back = norm_cdf(z);
        worst64 = worst64.max((back - p).abs() / p);
        let p32 = p as f32;
        if f64::from(p32) >= f64::from(f32::MIN_POSITIVE) {
            let z32 = f64::from(norm_ppf_lower_f32(p32));
            let z64 = norm_ppf_lower_f64(f64::from(p32));
            worst32 = worst32.max((z32 - z64).abs() / (z64.abs().max(1e-3) * f64::from(f32::EPSILON)));
        }
    }
    eprintln!("Phi(ppf(p)) relative error {worst64:.2e}; f32 ppf {worst32:.1} eps of |z|");
    assert!(worst64 < 1e-13, "f64 inverse CDF: {worst64:e}");
    assert!(worst32 < 8.0, "f32 inverse CDF: {worst32} eps");
}

#[test]
fn trunc_normal_arguments_are_checked() {
    let plan = |mean, std, low, high| TruncNormalPlan::new(mean, std, low, high);
    for (m, s, a, b) in [
        (0.0, 0.0, -2.0, 2.0),
        (0.0, -1.0, -2.0, 2.0),
        (0.0, 1.0, 2.0, 2.0),
        (0.0, 1.0, 2.0, -2.0),
        (f64::NAN, 1.0, -2.0, 2.0),
        (0.0, 1.0, f64::NEG_INFINITY, 2.0),
        (0.0, 1.0, -2.0, 1e39),
        (0.0, 1.0, 12.0, 13.0), // probability 1.8e-33
        (0.0, 1e-50, -1.0, 1.0),
    ] {
        let e = plan(m, s, a, b).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{m} {s} {a} {b}: {e}");
    }
    let t = plan(0.0, 1.0, -2.0, 2.0).unwrap();
    assert!((t.mass - 0.954_499_736_103_641_6).abs() < 1e-15);
    assert!((t.cdf_low - 0.022_750_131_948_179_21).abs() < 1e-16 && t.cdf_low == t.sf_high);
    // the far tail keeps its digits: P(9 < Z < 10) = Q(9) - Q(10) = 1.128512e-19
    let t = plan(0.0, 1.0, 9.0, 10.0).unwrap();
    assert!(
        (t.mass / (1.128_588_405_953e-19 - 7.619_853_024_160e-24) - 1.0).abs() < 1e-9,
        "{}",
        t.mass
    );
}

/// The truncated normal's CDF at v, computed on the side of the plan's mass.
fn trunc_cdf(t: &TruncNormalPlan, v: f64) -> f64 {
    let (a, z) = (
        (t.low - t.mean) / t.std,
        ((v - t.mean) / t.std).clamp(-40.0, 40.0),
    );
    let f = if a >= 0.0 {
        (norm_cdf(-a) - norm_cdf(-z)) / t.mass
    } else {
        (norm_cdf(z) - t.cdf_low) / t.mass
    };
    f.clamp(0.0, 1.0)
}

const TRUNC_CASES: [(f64, f64, f64, f64); 5] = [
    (0.0, 1.0, -2.0, 2.0),    // PyTorch's default
    (0.0, 0.02, -0.04, 0.04), // the ViT convention: std 0.02, +-2 std
    (1.0, 0.5, 0.9, 3.0),     // asymmetric about the mean
    (0.0, 1.0, 3.0, 8.0),     // the upper tail
    (-1.0, 2.0, -30.0, -9.0), // the lower tail, 4 std out
];

/// The moments of `v` against the truncated normal's `t`.
fn assert_trunc_moments(v: &[f64], t: &TruncNormalPlan, what: &str) {
    let (mean, var) = t.moments();
    // a truncated normal is log-concave: kurtosis at most an exponential's 9
    assert_moments(v, mean, var, 9.0 * var * var, 5.0, what);
}

#[test]
fn trunc_normal_moments_bounds_and_ks() {
    let n = 1_000_000;
    let crit = 1.95 / (n as f64).sqrt(); // KS at alpha = 0.001
    for (i, (m, s, a, b)) in TRUNC_CASES.into_iter().enumerate() {
        let t = TruncNormalPlan::new(m, s, a, b).unwrap();
        let v = trunc_normal_values(Philox::new(SEED), 0, n, &t);
        assert!(v.iter().all(|&x| x >= a && x <= b), "case {i}: out of [{a}, {b}]");
        assert_trunc_moments(&v, &t, &format!("trunc_normal{:?}", (m, s, a, b)));
        let (_, var) = t.moments();
        let d = ks_statistic(v.clone(), |x| trunc_cdf(&t, x));
        eprintln!(
            "KS trunc_normal {:?}: D = {d:.6} (critical {crit:.6})",
            (m, s, a, b)
        );
        assert!(d < crit, "case {i}: KS D = {d}");
        // the check has teeth: the untruncated normal's moments are rejected
        let (m0, _) = moments(&v);
        if i == 2 {
            assert!((m0 - m).abs() > 100.0 * (var / n as f64).sqrt());
        }
    }
}

#[test]
fn gpu_trunc_normal_matches_the_f32_and_f64_twins() {
    let n = 100_003;
    for (i, (m, s, a, b)) in TRUNC_CASES.into_iter().enumerate() {
        let t = TruncNormalPlan::new(m, s, a, b).unwrap();
        let rng = Philox::with_stream(SEED, 900 + i as u64);
        for offset in [0u64, 3, (1 << 40) + 1] {
            let got = gpu_fill(&Fill::TruncNormal(t), rng, offset, 1, n, None);
            let want = trunc_normal_values(rng, offset, n, &t);
            assert_trunc_close(&got, &want, &t, &format!("trunc_normal {i} offset {offset}"));
            // the shader's f32 arithmetic, operation for operation: a few ulps
            let mut bits = vec![0u32; n];
            rng.fill_bits(offset, &mut bits);
            let w32: Vec<f64> = bits.iter().map(|&x| f64::from(trunc_normal_f32(x, &t))).collect();
            assert_close_f32(&got, &w32, m, 8.0, &format!("trunc_normal {i} vs f32 twin"));
            if offset == 0 {
                let v: Vec<f64> = got.iter().map(|&x| f64::from(x)).collect();
                assert_trunc_moments(&v, &t, &format!("GPU trunc_normal {i}"));
            }
        }
    }
}

fn torch_init() -> serde_json::Value {
    let p = format!("{}/tests/data/torch/init.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// calculate_gain of every name, and kaiming's / xavier's std and bound for
/// several shapes and arguments, against PyTorch's own helpers
/// (tests/data/torch_conventions.py).
#[test]
fn gains_and_stds_match_pytorch() {
    let t = torch_init();
    let mut worst = 0.0f64;
    for e in t["gains"].as_array().unwrap() {
        let name = e["nonlinearity"].as_str().unwrap();
        let got = calculate_gain(name, e["param"].as_f64()).unwrap();
        let want = e["gain"].as_f64().unwrap();
        assert_eq!(got, want, "calculate_gain({name}, {})", e["param"]);
    }
    for e in t["stds"].as_array().unwrap() {
        let scheme = e["scheme"].as_str().unwrap();
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let mode = |e: &serde_json::Value| match e["mode"].as_str().unwrap() {
            "fan_in" => FanMode::FanIn,
            _ => FanMode::FanOut,
        };
        let kaiming = |e: &serde_json::Value, uniform: bool| {
            let (a, nl) = (e["a"].as_f64().unwrap(), e["nonlinearity"].as_str().unwrap());
            if uniform {
                Scheme::kaiming_uniform_with(a, mode(e), nl).unwrap()
            } else {
                Scheme::kaiming_normal_with(a, mode(e), nl).unwrap()
            }
        };
        let gain = e["gain"].as_f64().unwrap_or(0.0);
        let (s, key) = match scheme {
            "kaiming_normal" => (kaiming(e, false), "std"),
            "kaiming_uniform" => (kaiming(e, true), "bound"),
            "xavier_normal" => (Scheme::XavierNormal { gain }, "std"),
            "xavier_uniform" => (Scheme::XavierUniform { gain }, "bound"),
            "kaiming_normal_sample" => {
                // PyTorch's own draws have the std of the formula (sampling error of 2e6 values)
                let (sample, want) = (e["sample_std"].as_f64().unwrap(), e["std"].as_f64().unwrap());
                assert!((sample / want - 1.0).abs() < 5.0 / (2.0f64 * 2e6).sqrt(), "{e}");
                let got = match kaiming(e, false).plan(&shape).unwrap() {
                    Fill::Normal { std, .. } => std,
                    f => panic!("{f:?}"),
                };
                assert!((got - want).abs() <= 2e-16 * want);
                continue;
            }
            _ => panic!("{scheme}"),
        };
        let got = match s.plan(&shape).unwrap() {
            Fill::Normal { std, .. } => std,
            Fill::Uniform { half_width, .. } => half_width,
            f => panic!("{f:?}"),
        };
        let want = e[key].as_f64().unwrap();
        let rel = (got - want).abs() / want;
        worst = worst.max(rel);
        assert!(rel <= 4e-16, "{scheme} {shape:?} {e}: {got} vs {want}");
    }
    println!("kaiming / xavier std and bound vs PyTorch: worst relative difference {worst:.1e}");
}

/// trunc_normal_'s sample moments (PyTorch, 10^6 values) against the analytic
/// moments our sampler is tested to: the two samplers draw one distribution.
#[test]
fn trunc_normal_moments_match_pytorch_samples() {
    let t = torch_init();
    for e in t["trunc_normal"].as_array().unwrap() {
        let f = |k: &str| e[k].as_f64().unwrap();
        let plan = TruncNormalPlan::new(f("mean"), f("std"), f("a"), f("b")).unwrap();
        let (mean, var) = plan.moments();
        let n = f("n");
        let (se_m, se_v) = ((var / n).sqrt(), (8.0 * var * var / n).sqrt());
        println!(
            "trunc_normal({}, {}, {}, {}): PyTorch's sample mean {:.2} se, var {:.2} se from the analytic moments",
            f("mean"),
            f("std"),
            f("a"),
            f("b"),
            (f("sample_mean") - mean) / se_m,
            (f("sample_var") - var) / se_v
        );
        assert!((f("sample_mean") - mean).abs() < 5.0 * se_m, "{e}");
        assert!((f("sample_var") - var).abs() < 5.0 * se_v, "{e}");
        assert!(f("min") >= f("a") && f("max") <= f("b"));
    }
}

#[test]
fn activation_statistics_of_more_layers_than_memory_holds_are_refused() {
    // Vec::with_capacity(layers) panicked with a capacity overflow; the GPU's
    // 5 * layers rows wrapped.
    let huge = 3_689_348_814_741_910_324usize;
    let s = Scheme::SmallRandom;
    let e = Experiment {
        scheme: &s,
        activation: Activation::Tanh,
        layers: huge,
        units: 8,
        batch: 8,
        seed: SEED,
    };
    let cpu = activation_statistics(&e);
    assert!(matches!(cpu, Err(gpuprep::Error::ExceedsLimit { .. })), "{cpu:?}");
    let g = gpu_init::lecture::activation_statistics(gpu(), &e);
    assert!(matches!(g, Err(gpuprep::Error::ExceedsLimit { .. })), "{g:?}");
}
