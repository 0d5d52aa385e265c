//! Weight initialization, CPU twin against GPU at the same shapes.
//!
//! `gpu` times the fill with the output resident on the device, several per
//! submit, on GPU timestamps where the device has them (`common::time_gpu`);
//! `gpu_roundtrip` adds the readback. Throughput counts the
//! bytes written (4 per f32). The GPU rows are skipped (with a note) when no
//! adapter is present. Set `GPUPREP_BENCH_LARGE=1` to add 4096 x 4096 (the
//! PyTorch figures in PERFORMANCE.md), which is slow on the CPU twin.

mod common;

use common::bench_gpu;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpuprep::cpu::init as twin;
use gpuprep::model::init::Scheme;
use gpuprep::ops::init as gpu_init;
use gpuprep::rng::Philox;
use gpuprep::GpuMatrix;

fn bench(c: &mut Criterion) {
    let gpu = common::gpu_or_note("init");
    let mut group = common::group(c, "init", 5);
    let mut shapes = vec![(256usize, 256usize), (1024, 1024)];
    if std::env::var_os("GPUPREP_BENCH_LARGE").is_some() {
        shapes.push((4096, 4096));
    }
    let schemes = [
        ("kaiming_uniform", Scheme::kaiming_uniform()),
        ("kaiming_normal", Scheme::kaiming_normal()),
        (
            "sparse_0.9",
            Scheme::Sparse {
                sparsity: 0.9,
                std: 0.01,
            },
        ),
    ];
    let rng = Philox::new(42);
    for &(rows, cols) in &shapes {
        let id = format!("{rows}x{cols}");
        group.throughput(Throughput::Bytes((rows * cols * 4) as u64));
        for (name, scheme) in &schemes {
            group.bench_function(BenchmarkId::new(format!("cpu/{name}"), &id), |b| {
                b.iter(|| twin::init(&[rows, cols], scheme, rng).unwrap())
            });
            let Some(g) = gpu.as_ref() else { continue };
            let out = GpuMatrix::uninit(g, rows, cols).unwrap();
            // The fill's own time (several per submit, GPU timestamps where
            // the device has them); the round trip below adds the readback.
            let gpu_id = BenchmarkId::new(format!("gpu/{name}"), &id);
            bench_gpu(&mut group, gpu_id, g, |enc| {
                gpu_init::encode_init_into(g, enc, &[rows, cols], scheme, rng, &out).unwrap()
            });
            group.bench_function(BenchmarkId::new(format!("gpu_roundtrip/{name}"), &id), |b| {
                b.iter(|| {
                    gpu_init::init(g, &[rows, cols], scheme, rng)
                        .unwrap()
                        .download(g)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
