//! What the criterion benches share: the GPU clock.

use std::time::{Duration, Instant};

use gpuprep::wgpu::CommandEncoder;
use gpuprep::{Gpu, GpuTimer};

/// The GPU time of `iters` ops recorded by `record`, at most 16 per submit
/// (data resident on the device, no readback): GPU timestamps around each
/// batch where the device has them, else wall clock around submit and wait.
/// For `Bencher::iter_custom`.
pub fn time_gpu(gpu: &Gpu, iters: u64, mut record: impl FnMut(&mut CommandEncoder)) -> Duration {
    let timer = GpuTimer::new(gpu).expect("creating a GPU timer");
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = left.min(16);
        let mut enc = gpu.encoder("bench");
        if let Some(t) = &timer {
            t.start(&mut enc);
        }
        for _ in 0..k {
            record(&mut enc);
        }
        if let Some(t) = &timer {
            t.stop(&mut enc);
        }
        let start = Instant::now();
        gpu.submit("bench", enc).expect("submit");
        gpu.wait().expect("wait");
        total += match &timer {
            Some(t) => Duration::from_secs_f64(t.read_seconds(gpu).expect("reading the GPU timer")),
            None => start.elapsed(),
        };
        left -= k;
    }
    total
}
