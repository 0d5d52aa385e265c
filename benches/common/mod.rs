//! What the criterion benches share: the GPU clock.

use std::time::Duration;

use gpuprep::wgpu::CommandEncoder;
use gpuprep::{time_recorded, Gpu, GpuTimer};

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
