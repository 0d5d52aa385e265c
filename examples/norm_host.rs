//! The host path's normalization layers timed on one shape (scripts/vs-torch.py
//! runs this against PyTorch's CPU kernels on the same data): batch, layer,
//! instance, group (4 groups) and RMS norm, training forward and backward, on
//! `N x D` f32 data (instance and group norm see it as `(N, 16, D / 16)`)
//! `offset + N(0, 1)` (Philox, seed 1), `dy` N(0, 1) (seed 2), gamma 1 and
//! beta 0, eps 1e-5.
//!
//! `cargo run --release --example norm_host -- [--n 262144] [--d 256]
//! [--offset 100] [--reps 7] [--ops bn_fwd,bn_bwd,ln_fwd,ln_bwd,in_fwd,in_bwd,gn_fwd,gn_bwd,rms_fwd,rms_bwd]
//! [--x X.npy --dy DY.npy]`
//! (`--x` and `--dy`: 2-D f32 .npy files instead of the generated data)
//!
//! Prints one line per op: `op median_s min_s` (the median and minimum of
//! `reps` runs after one warm-up). Threads: rayon's (`RAYON_NUM_THREADS`).
//! With `--cpu` (Unix), the times are the process's CPU time (user + system,
//! all threads) instead of wall time: steadier than wall time on a machine
//! that other work keeps busy.

mod common;

use std::time::Instant;

use common::arg;

use gpuprep::host::{self, BatchNorm};
use gpuprep::{NormKind, Philox, RunningStatsConfig};
use ndarray::{Array1, Array2, ArrayView3};

/// The process's CPU time so far (user + system, all threads), in seconds.
#[cfg(unix)]
fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct, and
    // getrusage only writes the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

#[cfg(not(unix))]
fn cpu_seconds() -> f64 {
    eprintln!("--cpu needs a Unix system");
    std::process::exit(2);
}

fn time(reps: usize, cpu: bool, mut f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<(f64, f64)> {
    f()?;
    let mut t = Vec::new();
    for _ in 0..reps.max(1) {
        let (s, c) = (Instant::now(), if cpu { cpu_seconds() } else { 0.0 });
        f()?;
        t.push(if cpu {
            cpu_seconds() - c
        } else {
            s.elapsed().as_secs_f64()
        });
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok((t[t.len() / 2], t[0]))
}

fn unknown(op: &str) -> ! {
    eprintln!("unknown op {op}: bn_, ln_, in_, gn_ or rms_ and fwd or bwd");
    std::process::exit(2);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--n", 262_144);
    let d: usize = arg(&args, "--d", 256);
    let offset: f32 = arg(&args, "--offset", 100.0);
    let reps: usize = arg(&args, "--reps", 7);
    let cpu = args.iter().any(|a| a == "--cpu");
    let ops: String = arg(&args, "--ops", "bn_fwd,bn_bwd,ln_fwd,ln_bwd".to_string());
    let read = |name: &str| -> gpuprep::Result<Option<Array2<f32>>> {
        match args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)) {
            Some(p) => gpuprep::io::read_npy_matrix(std::path::Path::new(p)).map(Some),
            None => Ok(None),
        }
    };
    let x = match read("--x")? {
        Some(x) => x,
        None => {
            let rx = Philox::new(1);
            Array2::from_shape_fn((n, d), |(i, j)| offset + rx.normal_f32((i * d + j) as u64))
        }
    };
    let (n, d) = x.dim();
    let dy = match read("--dy")? {
        Some(dy) => dy,
        None => {
            let rd = Philox::new(2);
            Array2::from_shape_fn((n, d), |(i, j)| rd.normal_f32((i * d + j) as u64))
        }
    };
    let (gamma, beta) = (Array1::<f64>::ones(d), Array1::<f64>::zeros(d));
    let mut bn = BatchNorm::new(d, RunningStatsConfig::pytorch());
    let (_, saved) = bn.forward_train(x.view())?;
    // Instance and group norm over (N, 16, D / 16): 16 channels.
    let c = 16;
    let x3: ArrayView3<f32> = x.view().into_shape_with_order((n, c, d / c))?;
    let dy3: ArrayView3<f32> = dy.view().into_shape_with_order((n, c, d / c))?;
    let (gc, bc) = (Array1::<f64>::ones(c), Array1::<f64>::zeros(c));
    let runs = [
        ("ln", NormKind::Layer, false),
        ("in", NormKind::Instance, true),
        ("gn", NormKind::Group { groups: 4 }, true),
        ("rms", NormKind::Rms { len: d }, false),
    ];
    for op in ops.split(',') {
        let (med, min) = match op {
            "bn_fwd" => time(reps, cpu, || bn.forward_train(x.view()).map(drop))?,
            "bn_bwd" => time(reps, cpu, || bn.backward(x.view(), dy.view(), &saved).map(drop))?,
            _ => {
                let Some((name, dir)) = op.split_once('_') else {
                    unknown(op)
                };
                let Some(&(_, kind, channels)) = runs.iter().find(|r| r.0 == name) else {
                    unknown(op)
                };
                let (g, b) = if channels { (&gc, &bc) } else { (&gamma, &beta) };
                let (x3v, dy3v): (ArrayView3<f32>, ArrayView3<f32>) = if channels {
                    (x3, dy3)
                } else {
                    (
                        x.view().into_shape_with_order((n, 1, d))?,
                        dy.view().into_shape_with_order((n, 1, d))?,
                    )
                };
                let (_, st) = host::norm_forward(kind, x3v, g.view(), b.view(), 1e-5)?;
                match dir {
                    "fwd" => time(reps, cpu, || {
                        host::norm_forward(kind, x3v, g.view(), b.view(), 1e-5).map(drop)
                    })?,
                    "bwd" => time(reps, cpu, || {
                        host::norm_backward(kind, x3v, dy3v, g.view(), st.mean.view(), st.invstd.view())
                            .map(drop)
                    })?,
                    _ => unknown(op),
                }
            }
        };
        println!("{op} {med:.5} {min:.5}");
    }
    Ok(())
}
