//! covariance and the fused PCA transforms, CPU twin against GPU, in GFLOP/s.
//!
//! Throughput is counted in floating-point operations as criterion "elements"
//! (so its `Melem/s` reads as MFLOP/s): `2 N D^2` for the covariance (the
//! general product's count, as cuBLAS's `x.T @ x` is quoted in PERFORMANCE.md,
//! although the kernel computes only the upper triangle) and `2 N D M` for a
//! transform to M columns. `gpu` times the kernels with X resident on the
//! device, several per submit, on GPU timestamps where the device has them
//! (`common::time_gpu`); `gpu_fit` is the whole PCA fit (mean, covariance,
//! one readback, eigh on the CPU). The GPU rows are skipped (with a note)
//! when no adapter is present.

mod common;

use common::bench_gpu;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpuprep::cpu::pca as cpu_pca;
use gpuprep::{cpu, ops, GpuMatrix, NComponents, Pca, PcaOptions, Whitening};
use ndarray::Array2;

/// The data, with an offset.
fn data(n: usize, d: usize) -> Array2<f32> {
    common::lcg(n, d, 0, 100.0)
}

fn bench(c: &mut Criterion) {
    let gpu = common::gpu_or_note("covariance");
    let mut group = common::group(c, "covariance", 5);
    for &(n, d) in &[(4096usize, 64usize), (16_384, 256), (65_536, 256)] {
        let x = data(n, d);
        let id = format!("{n}x{d}");
        group.throughput(Throughput::Elements((2 * n * d * d) as u64));
        group.bench_with_input(BenchmarkId::new("cpu", &id), &x, |b, x| {
            b.iter(|| cpu::covariance(x.view(), 0).unwrap())
        });
        let Some(g) = gpu.as_ref() else { continue };
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        let stats = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0)).unwrap();
        let out = GpuMatrix::uninit(g, d, d).unwrap();
        bench_gpu(&mut group, BenchmarkId::new("gpu", &id), g, |enc| {
            let opts = ops::CovarianceOptions::ddof(0);
            ops::encode_covariance_into(g, enc, &xg, &stats.buffer, &out, &opts).unwrap()
        });
    }
    group.finish();

    let mut group = common::group(c, "pca_transform", 5);
    let (n, d) = (16_384usize, 256usize);
    let x = data(n, d);
    let xg = gpu.as_ref().map(|g| GpuMatrix::upload(g, x.view()).unwrap());
    for (name, k, whitening) in [
        ("decorrelate", NComponents::All, Whitening::None),
        ("reduce_32", NComponents::Count(32), Whitening::None),
        ("pca_whiten", NComponents::All, Whitening::Pca),
        ("zca_whiten", NComponents::All, Whitening::Zca),
    ] {
        let opts = PcaOptions {
            n_components: k,
            whitening,
            ..Default::default()
        };
        let model = cpu::pca::fit(x.view(), &opts).unwrap();
        let id = format!("{name}/{n}x{d}");
        group.throughput(Throughput::Elements((2 * n * d * model.output_dim()) as u64));
        group.bench_with_input(BenchmarkId::new("cpu", &id), &x, |b, x| {
            b.iter(|| cpu_pca::transform(&model, x.view()).unwrap())
        });
        let (Some(g), Some(xg)) = (gpu.as_ref(), xg.as_ref()) else {
            continue;
        };
        let pca = Pca::from_model(g, model.clone()).unwrap();
        let out = GpuMatrix::uninit(g, n, pca.output_dim()).unwrap();
        bench_gpu(&mut group, BenchmarkId::new("gpu", &id), g, |enc| {
            pca.encode_transform_into(g, enc, xg, &out).unwrap()
        });
    }
    // The whole fit: mean + covariance on the GPU, readback, eigh.
    group.throughput(Throughput::Elements((2 * n * d * d) as u64));
    group.bench_with_input(BenchmarkId::new("cpu_fit", format!("{n}x{d}")), &x, |b, x| {
        b.iter(|| cpu::pca::fit(x.view(), &PcaOptions::default()).unwrap())
    });
    if let (Some(g), Some(xg)) = (gpu.as_ref(), xg.as_ref()) {
        group.bench_with_input(BenchmarkId::new("gpu_fit", format!("{n}x{d}")), xg, |b, xg| {
            b.iter(|| Pca::fit(g, xg, &PcaOptions::default()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
