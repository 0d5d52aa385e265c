//! column_stats, CPU twin against GPU at the same shapes.
//!
//! `gpu` times the kernel with X resident on the device, several per submit,
//! on GPU timestamps where the device has them (`common::time_gpu`);
//! `gpu_roundtrip` adds the upload of X and the readback of the statistics.
//! The GPU rows are skipped (with a note) when no adapter is present.

mod common;

use common::bench_gpu;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpuprep::{cpu, ops, GpuMatrix};

fn bench(c: &mut Criterion) {
    let gpu = common::gpu_or_note("column_stats");
    let mut group = common::group(c, "column_stats", 5);
    // (131072, 256) is 128 MiB, lavapipe's largest storage binding;
    // (262144, 256) is the shape of the numpy figures in PERFORMANCE.md (CPU only here).
    for &(n, d) in &[(1024usize, 64usize), (131_072, 256), (262_144, 256)] {
        let x = common::lcg(n, d, 0, -0.5);
        let id = format!("{n}x{d}");
        group.throughput(Throughput::Bytes((n * d * 4) as u64));
        group.bench_with_input(BenchmarkId::new("cpu", &id), &x, |b, x| {
            b.iter(|| cpu::column_stats(x.view(), 0).unwrap())
        });
        let Some(g) = gpu.as_ref() else { continue };
        let xg = GpuMatrix::upload(g, x.view()).unwrap();
        let mut out = ops::ColumnStats::uninit(g, d).unwrap();
        let opts = ops::ColumnStatsOptions::default();
        bench_gpu(&mut group, BenchmarkId::new("gpu", &id), g, |enc| {
            ops::encode_column_stats_into(g, enc, &xg, &mut out, &opts).unwrap()
        });
        group.bench_with_input(BenchmarkId::new("gpu_roundtrip", &id), &x, |b, x| {
            b.iter(|| {
                let xg = GpuMatrix::upload(g, x.view()).unwrap();
                let stats = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0)).unwrap();
                stats.download(g).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
