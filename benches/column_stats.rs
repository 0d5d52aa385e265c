//! column_stats, CPU twin against GPU at the same shapes.
//!
//! `gpu` times the kernel with X resident on the device, several per submit,
//! on GPU timestamps where the device has them (`common::time_gpu`);
//! `gpu_roundtrip` adds the upload of X and the readback of the statistics.
//! The GPU rows are skipped (with a note) when no adapter is present.

mod common;

use std::time::Duration;

use common::time_gpu;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpuprep::{cpu, ops, Gpu, GpuMatrix};
use ndarray::Array2;

fn data(n: usize, d: usize) -> Array2<f32> {
    // A cheap deterministic fill (an LCG), so setup does not dominate.
    let mut s = 0x2545F491u32;
    Array2::from_shape_simple_fn((n, d), || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 0.5
    })
}

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new()
        .map_err(|e| eprintln!("column_stats bench: no GPU ({e}); CPU only"))
        .ok();
    let mut group = c.benchmark_group("column_stats");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    // (131072, 256) is 128 MiB, lavapipe's largest storage binding;
    // (262144, 256) is the shape of the numpy figures in PERFORMANCE.md (CPU only here).
    for &(n, d) in &[(1024usize, 64usize), (131_072, 256), (262_144, 256)] {
        let x = data(n, d);
        let id = format!("{n}x{d}");
        group.throughput(Throughput::Bytes((n * d * 4) as u64));
        group.bench_with_input(BenchmarkId::new("cpu", &id), &x, |b, x| {
            b.iter(|| cpu::column_stats(x.view(), 0).unwrap())
        });
        let Some(g) = gpu.as_ref() else { continue };
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        let mut out = ops::ColumnStats::uninit(g, d).unwrap();
        let opts = ops::ColumnStatsOptions::default();
        group.bench_with_input(BenchmarkId::new("gpu", &id), &xg, |b, xg| {
            b.iter_custom(|iters| {
                time_gpu(g, iters, |enc| {
                    ops::encode_column_stats_into(g, enc, xg, &mut out, &opts).unwrap()
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("gpu_roundtrip", &id), &x, |b, x| {
            b.iter(|| {
                let xg = GpuMatrix::upload(g, x.view()).unwrap();
                ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0))
                    .unwrap()
                    .download(g)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
