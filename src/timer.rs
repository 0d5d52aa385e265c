//! GPU timestamps around recorded work, for benchmarks: the device's own clock
//! between the start and the end of a stretch of an encoder, free of the
//! host's submit and wait latency.
//!
//! ```no_run
//! # fn main() -> gpuprep::Result<()> {
//! # let gpu = gpuprep::Gpu::new()?;
//! # let x = gpuprep::GpuMatrix::uninit(&gpu, 1024, 64)?;
//! let mut stats = gpuprep::ColumnStats::uninit(&gpu, 64)?;
//! if let Some(timer) = gpuprep::GpuTimer::new(&gpu)? {
//!     let mut encoder = gpu.encoder("timed");
//!     timer.start(&mut encoder);
//!     gpuprep::ops::encode_column_stats_into(&gpu, &mut encoder, &x, &mut stats, &Default::default())?;
//!     timer.stop(&mut encoder);
//!     gpu.submit("timed", encoder)?;
//!     println!("{:.3} ms", timer.read_seconds(&gpu)? * 1e3);
//! }
//! # Ok(())
//! # }
//! ```

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Two timestamps (start, stop) and the buffer they resolve into. Reusable:
/// each `start`/`stop` pair overwrites the previous one.
#[derive(Debug)]
pub struct GpuTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    period_ns: f64,
}

impl GpuTimer {
    /// A timer, or `None` when the device was created without
    /// `TIMESTAMP_QUERY` (then time with the wall clock around a wait).
    /// [`Error::DeviceLost`] once the device is lost.
    ///
    /// # Errors
    /// [`Error::DeviceLost`] for a lost device; [`Error::Gpu`] when the query set
    /// or its resolve buffer cannot be made.
    pub fn new(gpu: &Gpu) -> Result<Option<GpuTimer>> {
        gpu.check_alive()?;
        if !gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(None);
        }
        let device = gpu.device();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("gpuprep timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gpuprep timer resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op: "timer",
                message: e.to_string(),
            });
        }
        Ok(Some(GpuTimer {
            queries,
            resolved,
            period_ns: f64::from(gpu.queue().get_timestamp_period()),
        }))
    }

    /// Records the start timestamp: an empty compute pass whose beginning
    /// is stamped once the work recorded before it has finished.
    pub fn start(&self, encoder: &mut wgpu::CommandEncoder) {
        self.stamp(encoder, Some(0), None);
    }

    /// Records the stop timestamp and resolves both into the timer's buffer.
    pub fn stop(&self, encoder: &mut wgpu::CommandEncoder) {
        self.stamp(encoder, None, Some(1));
        encoder.resolve_query_set(&self.queries, 0..2, &self.resolved, 0);
    }

    fn stamp(&self, encoder: &mut wgpu::CommandEncoder, begin: Option<u32>, end: Option<u32>) {
        let _pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gpuprep timer"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: begin,
                end_of_pass_write_index: end,
            }),
        });
    }

    /// Seconds between the last submitted `start` and `stop` (waits for the
    /// submission and reads 16 bytes back).
    ///
    /// # Errors
    /// The readback's errors ([`Error::Timeout`], [`Error::DeviceLost`]);
    /// [`Error::InvalidArgument`] when the stop timestamp is before the start (no
    /// `stop` recorded after the `start`).
    pub fn read_seconds(&self, gpu: &Gpu) -> Result<f64> {
        let bytes = gpu.read_bytes(&self.resolved, 0, 16)?;
        let t: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        match t[..] {
            [t0, t1] if t1 >= t0 => Ok((t1 - t0) as f64 * self.period_ns * 1e-9),
            _ => Err(Error::invalid(
                "timer",
                format!("timestamps out of order ({t:?}): was stop recorded after start?"),
            )),
        }
    }
}

/// Records `reps` copies of the work `record` records into one encoder,
/// submits it, waits, and returns the seconds per copy: from `timer`'s
/// timestamps around the copies when given, else from the wall clock around
/// the submit and the wait. The benchmarks' one clock.
///
/// # Errors
/// `record`'s errors; as [`Gpu::submit`], [`Gpu::wait`] and
/// [`GpuTimer::read_seconds`].
pub fn time_recorded(
    gpu: &Gpu,
    timer: Option<&GpuTimer>,
    reps: usize,
    mut record: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<f64> {
    let reps = reps.max(1);
    let mut encoder = gpu.encoder("timed");
    if let Some(t) = timer {
        t.start(&mut encoder);
    }
    for _ in 0..reps {
        record(&mut encoder)?;
    }
    if let Some(t) = timer {
        t.stop(&mut encoder);
    }
    let start = Instant::now();
    gpu.submit("timed", encoder)?;
    gpu.wait()?;
    let wall = start.elapsed().as_secs_f64();
    let secs = match timer {
        Some(t) => t.read_seconds(gpu)?,
        None => wall,
    };
    Ok(secs / reps as f64)
}
