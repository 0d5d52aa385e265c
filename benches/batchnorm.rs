//! Batch norm forward (training) and backward, and layer / instance / group
//! norm, CPU twin (f64) against GPU (f32) at the same shapes.
//!
//! Throughput counts the bytes each op must move at least: forward reads x
//! and writes y (8 bytes per element), backward reads x and dy and writes dx
//! (12 bytes per element). `gpu` times the kernels with the data resident on
//! the device, several ops recorded per submit, on GPU timestamps where the
//! device has them (`common::time_gpu`);
//! `gpu_roundtrip` adds the upload of x and the readback of y.
//!
//! `GPUPREP_BENCH_LARGE=1` adds the shapes of PERFORMANCE.md (GPU
//! only): batch norm on 2^20 x 256 (PyTorch on an H100: forward 1.258 ms,
//! backward 2.097 ms), layer norm on 2^20 x 256, and batch / group /
//! instance norm on (256, 64, 32, 32).

mod common;

use common::bench_gpu;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpuprep::cpu::norm::{norm_backward, norm_forward};
use gpuprep::model::norm::RunningStatsConfig;
use gpuprep::ops::{BatchNorm, Norm, NormKind};
use gpuprep::{Gpu, GpuMatrix};
use ndarray::{Array1, Array2, ArrayD, IxDyn};

fn data(n: usize, f: usize, seed: u32) -> Array2<f32> {
    common::lcg(n, f, seed, -0.5)
}

fn tensor(m: &Array2<f32>, dims: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(dims), m.iter().map(|&v| v as f64).collect()).unwrap()
}

fn large() -> bool {
    std::env::var("GPUPREP_BENCH_LARGE").is_ok_and(|v| v == "1")
}

fn bench_batchnorm(c: &mut Criterion) {
    let gpu = common::gpu_or_note("batchnorm");
    let mut group = common::group(c, "batchnorm", 4);
    // (N, C, S): 16 MiB each; the anchors' shapes with GPUPREP_BENCH_LARGE=1.
    let mut shapes = vec![(16_384usize, 256usize, 1usize, true), (64, 64, 256, true)];
    if large() {
        shapes.push((1 << 20, 256, 1, false));
        shapes.push((256, 64, 1024, false));
    }
    for (n, ch, s, with_cpu) in shapes {
        let f = ch * s;
        let id = if s == 1 {
            format!("{n}x{ch}")
        } else {
            format!("{n}x{ch}x{s}")
        };
        let dims: Vec<usize> = if s == 1 { vec![n, ch] } else { vec![n, ch, s] };
        let x = data(n, f, 1);
        let dy = data(n, f, 2);
        let len = (n * f) as u64;
        if with_cpu {
            let xt = tensor(&x, &dims);
            let dyt = tensor(&dy, &dims);
            let mut cpu = gpuprep::cpu::batchnorm::BatchNorm::new(ch, RunningStatsConfig::pytorch());
            group.throughput(Throughput::Bytes(8 * len));
            group.bench_function(BenchmarkId::new("forward/cpu", &id), |b| {
                b.iter(|| cpu.forward_train(xt.view()).unwrap())
            });
            let (_, saved) = cpu.forward_train(xt.view()).unwrap();
            group.throughput(Throughput::Bytes(12 * len));
            group.bench_function(BenchmarkId::new("backward/cpu", &id), |b| {
                b.iter(|| cpu.backward(xt.view(), dyt.view(), &saved).unwrap())
            });
        }
        let Some(g) = gpu.as_ref() else { continue };
        if len * 4 > g.max_binding_bytes() {
            eprintln!("batchnorm bench: {id} exceeds this adapter's binding limit; skipped");
            continue;
        }
        let mut bn = BatchNorm::new(g, ch, RunningStatsConfig::pytorch(), 1e-5).unwrap();
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        let dyg = GpuMatrix::upload(g, dy.view()).unwrap();
        let y = GpuMatrix::uninit(g, n, f).unwrap();
        group.throughput(Throughput::Bytes(8 * len));
        bench_gpu(&mut group, BenchmarkId::new("forward/gpu", &id), g, |enc| {
            bn.encode_forward_train_into(g, enc, &xg, &y).unwrap()
        });
        // backward differentiates the last forward_train (which a filter
        // may have skipped above).
        bn.forward_train(g, &xg).unwrap();
        let grads = bn.backward(g, &xg, &dyg).unwrap();
        group.throughput(Throughput::Bytes(12 * len));
        bench_gpu(&mut group, BenchmarkId::new("backward/gpu", &id), g, |enc| {
            bn.encode_backward_into(g, enc, &xg, &dyg, &grads).unwrap()
        });
        if with_cpu {
            group.throughput(Throughput::Bytes(8 * len));
            group.bench_function(BenchmarkId::new("forward/gpu_roundtrip", &id), |b| {
                b.iter(|| {
                    let xg = GpuMatrix::upload(g, x.view()).unwrap();
                    bn.forward_train(g, &xg).unwrap().download(g).unwrap()
                })
            });
        }
    }
    group.finish();
}

fn bench_norms(c: &mut Criterion) {
    let gpu = Gpu::new().ok();
    let mut group = common::group(c, "norm", 3);
    // (kind, N, C, S, CPU too)
    let mut cases = vec![
        (NormKind::Layer, 16_384usize, 256usize, 1usize, true),
        (NormKind::Group { groups: 8 }, 64, 64, 256, true),
        (NormKind::Instance, 64, 64, 256, true),
    ];
    if large() {
        cases.push((NormKind::Layer, 1 << 20, 256, 1, false));
        cases.push((NormKind::Group { groups: 8 }, 256, 64, 1024, false));
        cases.push((NormKind::Instance, 256, 64, 1024, false));
    }
    for (kind, n, ch, s, with_cpu) in cases {
        let f = ch * s;
        let id = format!("{}/{n}x{ch}x{s}", kind.name());
        let a = if kind == NormKind::Layer { f } else { ch };
        let x = data(n, f, 3);
        let dy = data(n, f, 4);
        let len = (n * f) as u64;
        if with_cpu {
            let dims = [n, ch, s];
            let xt = tensor(&x, &dims);
            let dyt = tensor(&dy, &dims);
            let gm = Array1::<f64>::ones(a);
            let bt = Array1::<f64>::zeros(a);
            group.throughput(Throughput::Bytes(8 * len));
            group.bench_function(BenchmarkId::new("forward/cpu", &id), |b| {
                b.iter(|| norm_forward(kind, xt.view(), gm.view(), bt.view(), 1e-5).unwrap())
            });
            let fw = norm_forward(kind, xt.view(), gm.view(), bt.view(), 1e-5).unwrap();
            group.throughput(Throughput::Bytes(12 * len));
            group.bench_function(BenchmarkId::new("backward/cpu", &id), |b| {
                b.iter(|| {
                    norm_backward(
                        kind,
                        xt.view(),
                        dyt.view(),
                        gm.view(),
                        fw.stats.mean.view(),
                        fw.stats.invstd.view(),
                    )
                    .unwrap()
                })
            });
        }
        let Some(g) = gpu.as_ref() else { continue };
        if len * 4 > g.max_binding_bytes() {
            continue;
        }
        let norm = Norm::new(kind, ch);
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        let dyg = GpuMatrix::upload(g, dy.view()).unwrap();
        let gm = GpuMatrix::filled(g, 1, a, 1.0).unwrap();
        let bt = GpuMatrix::filled(g, 1, a, 0.0).unwrap();
        let out = norm.alloc_forward(g, &xg).unwrap();
        let grads = norm.alloc_backward(g, &xg).unwrap();
        group.throughput(Throughput::Bytes(8 * len));
        bench_gpu(&mut group, BenchmarkId::new("forward/gpu", &id), g, |enc| {
            norm.encode_forward_into(g, enc, &xg, &gm, &bt, &out).unwrap()
        });
        group.throughput(Throughput::Bytes(12 * len));
        bench_gpu(&mut group, BenchmarkId::new("backward/gpu", &id), g, |enc| {
            norm.encode_backward_into(g, enc, &xg, &dyg, &gm, &out.stats, &grads)
                .unwrap()
        });
    }
    group.finish();
}

criterion_group!(benches, bench_batchnorm, bench_norms);
criterion_main!(benches);
