//! `gpuprep bench`: one table of CPU twin against GPU at one shape.
//!
//! GPU times cover `reps` copies of the op recorded in one encoder and one
//! submit, divided by `reps` (launch overhead amortized; data resident on the
//! device), median of `trials` such submits: measured with GPU timestamps
//! ([`gpuprep::GpuTimer`]) where the device has them, else wall clock around
//! the submit and wait. The device's
//! copy bandwidth (the "of copy" column's ceiling) is measured the same way
//! with `ops::copy`, a vec4 shader copy: one read and one write of every byte
//! through the same path as the ops (`copy_buffer_to_buffer` ran at under a
//! third of that on an H100's Vulkan driver).

use std::time::Instant;

use gpuprep::{cpu, ops, Gpu, GpuMatrix, GpuTimer, StandardizeOptions};
use ndarray::Array2;

pub struct BenchArgs {
    pub rows: usize,
    pub cols: usize,
    pub reps: usize,
    pub trials: usize,
    pub cpu: bool,
}

fn data(n: usize, d: usize) -> Array2<f32> {
    let mut s = 0x2545F491u32;
    Array2::from_shape_simple_fn((n, d), || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 0.5
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds per repetition of `record`, `reps` per submit.
fn time_gpu(
    gpu: &Gpu,
    timer: Option<&GpuTimer>,
    reps: usize,
    trials: usize,
    mut record: impl FnMut(&mut gpuprep::wgpu::CommandEncoder) -> gpuprep::Result<()>,
) -> gpuprep::Result<f64> {
    // Warm-up: pipelines built, memory touched.
    let mut enc = gpu.encoder("bench warm-up");
    record(&mut enc)?;
    gpu.submit("bench", enc)?;
    gpu.wait()?;
    let mut times = Vec::with_capacity(trials);
    for _ in 0..trials {
        let mut enc = gpu.encoder("bench");
        if let Some(timer) = timer {
            timer.start(&mut enc);
        }
        for _ in 0..reps {
            record(&mut enc)?;
        }
        if let Some(timer) = timer {
            timer.stop(&mut enc);
        }
        let t = Instant::now();
        gpu.submit("bench", enc)?;
        gpu.wait()?;
        let wall = t.elapsed().as_secs_f64();
        let secs = match timer {
            Some(timer) => timer.read_seconds(gpu)?,
            None => wall,
        };
        times.push(secs / reps as f64);
    }
    Ok(median(times))
}

fn time_cpu(trials: usize, mut f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<f64> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..trials.min(5) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

pub fn bench(a: BenchArgs) -> gpuprep::Result<()> {
    let gpu = Gpu::new()?;
    let timer = GpuTimer::new(&gpu)?;
    let clock = if timer.is_some() {
        "GPU timestamps"
    } else {
        "wall clock"
    };
    let info = gpu.adapter_info();
    let (n, d) = (a.rows, a.cols);
    let bytes = (n * d * 4) as f64;
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    println!(
        "shape: {n} x {d} f32 ({:.1} MiB); GPU: median of {} submits of {} reps, {clock}",
        bytes / 1048576.0,
        a.trials,
        a.reps
    );
    let x = data(n, d);
    let xg = GpuMatrix::upload(&gpu, x.view())?;
    let yg = GpuMatrix::uninit(&gpu, n, d)?;

    let copy_s = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        ops::encode_copy_into(&gpu, enc, &xg, &yg)
    })?;
    let copy_gbs = 2.0 * bytes / copy_s / 1e9;
    println!(
        "device copy (shader): {:.3} ms, {copy_gbs:.1} GB/s (read + write)",
        copy_s * 1e3
    );
    println!();
    println!(
        "{:<22} {:>12} {:>12} {:>10} {:>10} {:>9}",
        "op", "CPU ms", "GPU ms", "CPU/GPU", "GPU GB/s", "of copy"
    );

    let row = |name: &str, cpu_s: Option<f64>, gpu_s: f64, moved: f64| {
        let gbs = moved / gpu_s / 1e9;
        println!(
            "{name:<22} {:>12} {:>12.4} {:>10} {:>10} {:>8.0}%",
            cpu_s.map_or("-".into(), |c| format!("{:.3}", c * 1e3)),
            gpu_s * 1e3,
            cpu_s.map_or("-".into(), |c| format!("{:.1}x", c / gpu_s)),
            format!("{:.*}", if gbs < 10.0 { 2 } else { 0 }, gbs),
            100.0 * gbs / copy_gbs
        );
    };

    let mut checks = Vec::new();
    // column_stats: one read of X.
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        ops::encode_column_stats(&gpu, enc, &xg, 0).map(|_| ())
    })?;
    let c = if a.cpu {
        Some(time_cpu(a.trials, || cpu::column_stats(x.view(), 0).map(|_| ()))?)
    } else {
        None
    };
    row("column_stats", c, g, bytes);
    let want = cpu::column_stats(x.view(), 0)?;
    let got = ops::column_stats(&gpu, &xg, 0)?.download(&gpu)?;
    let rel = |a: &ndarray::Array1<f64>, b: &ndarray::Array1<f64>| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs() / q.abs().max(1e-30))
            .fold(0.0, f64::max)
    };
    checks.push(format!(
        "column_stats: max rel error vs f64 twin: mean {:.1e}, var {:.1e}",
        rel(&got.mean, &want.mean),
        rel(&got.var, &want.var)
    ));

    // standardize = stats + apply: X read twice, Y written once.
    let opts = StandardizeOptions::default();
    let g = time_gpu(&gpu, timer.as_ref(), a.reps, a.trials, |enc| {
        let st = ops::encode_column_stats(&gpu, enc, &xg, 0)?;
        ops::encode_standardize(&gpu, enc, &xg, &st, opts, &yg)
    })?;
    let c = if a.cpu {
        Some(time_cpu(a.trials, || {
            let st = cpu::column_stats(x.view(), 0)?;
            cpu::standardize(x.view(), &st, opts).map(|_| ())
        })?)
    } else {
        None
    };
    row("stats + standardize", c, g, 3.0 * bytes);
    let z = ops::standardize(&gpu, &xg, &ops::column_stats(&gpu, &xg, 0)?, opts)?.download(&gpu)?;
    let zc = cpu::standardize(x.view(), &want, opts)?;
    let err = z
        .iter()
        .zip(zc.iter())
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    checks.push(format!(
        "standardize: max abs error vs f64 twin {err:.1e} (output has unit variance)"
    ));
    println!();
    for c in checks {
        println!("{c}");
    }
    Ok(())
}
