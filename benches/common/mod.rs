//! What the criterion benches share: the GPU clock, the group settings and
//! the data.
#![allow(dead_code)]

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use gpuprep::wgpu::CommandEncoder;
use gpuprep::{time_recorded, Gpu, GpuTimer};
use ndarray::Array2;

/// The GPU, or `None` with a note that `bench` runs on the CPU only.
pub fn gpu_or_note(bench: &str) -> Option<Gpu> {
    Gpu::new()
        .map_err(|e| eprintln!("{bench} bench: no GPU ({e}); CPU only"))
        .ok()
}

/// The benches' group: 10 samples of `secs` seconds after 1 s of warm-up.
pub fn group<'a>(c: &'a mut Criterion, name: &str, secs: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(secs))
        .warm_up_time(Duration::from_secs(1));
    group
}

/// A cheap deterministic fill (an LCG), so setup does not dominate: `offset`
/// plus values uniform in [0, 2), from the stream `seed` picks.
pub fn lcg(n: usize, d: usize, seed: u32, offset: f32) -> Array2<f32> {
    let mut s = 0x2545F491u32 ^ seed;
    Array2::from_shape_simple_fn((n, d), || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        offset + (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0
    })
}

/// Benches `id` on the GPU clock: the ops `record` records ([`time_gpu`]).
pub fn bench_gpu(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    gpu: &Gpu,
    mut record: impl FnMut(&mut CommandEncoder),
) {
    group.bench_function(id, |b| b.iter_custom(|iters| time_gpu(gpu, iters, &mut record)));
}

/// The GPU time of `iters` ops recorded by `record`, at most 16 per submit
/// (data resident on the device, no readback): GPU timestamps around each
/// batch where the device has them, else wall clock around submit and wait
/// ([`gpuprep::time_recorded`]). For `Bencher::iter_custom`.
pub fn time_gpu(gpu: &Gpu, iters: u64, mut record: impl FnMut(&mut CommandEncoder)) -> Duration {
    let timer = GpuTimer::new(gpu).expect("creating a GPU timer");
    let mut total = 0.0;
    let mut left = iters;
    while left > 0 {
        let k = left.min(16);
        let per_op = time_recorded(gpu, timer.as_ref(), k as usize, |enc| {
            record(enc);
            Ok(())
        })
        .expect("timed submit");
        total += per_op * k as f64;
        left -= k;
    }
    Duration::from_secs_f64(total)
}
