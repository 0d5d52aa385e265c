//! The host path's normalization layers timed on one shape (scripts/vs-torch.py
//! runs this against PyTorch's CPU kernels on the same data): batch norm and
//! layer norm, training forward and backward, on `N x D` f32 data
//! `offset + N(0, 1)` (Philox, seed 1), `dy` N(0, 1) (seed 2), gamma 1 and
//! beta 0, eps 1e-5.
//!
//! `cargo run --release --example norm_host -- [--n 262144] [--d 256]
//! [--offset 100] [--reps 7] [--ops bn_fwd,bn_bwd,ln_fwd,ln_bwd] [--x X.npy --dy DY.npy]`
//! (`--x` and `--dy`: 2-D f32 .npy files instead of the generated data)
//!
//! Prints one line per op: `op median_s min_s` (the median and minimum of
//! `reps` runs after one warm-up). Threads: rayon's (`RAYON_NUM_THREADS`).

use std::time::Instant;

use gpuprep::host::{self, BatchNorm};
use gpuprep::{NormKind, Philox, RunningStatsConfig};
use ndarray::{Array1, Array2};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn time(reps: usize, mut f: impl FnMut() -> gpuprep::Result<()>) -> gpuprep::Result<(f64, f64)> {
    f()?;
    let mut t = Vec::new();
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok((t[t.len() / 2], t[0]))
}

fn main() -> gpuprep::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--n", 262_144);
    let d: usize = arg(&args, "--d", 256);
    let offset: f32 = arg(&args, "--offset", 100.0);
    let reps: usize = arg(&args, "--reps", 7);
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
    let (_, ln_stats) = host::norm_forward(NormKind::Layer, x.view(), gamma.view(), beta.view(), 1e-5)?;
    for op in ops.split(',') {
        let (med, min) = match op {
            "bn_fwd" => time(reps, || bn.forward_train(x.view()).map(drop))?,
            "bn_bwd" => time(reps, || bn.backward(x.view(), dy.view(), &saved).map(drop))?,
            "ln_fwd" => time(reps, || {
                host::norm_forward(NormKind::Layer, x.view(), gamma.view(), beta.view(), 1e-5).map(drop)
            })?,
            "ln_bwd" => time(reps, || {
                host::norm_backward(
                    NormKind::Layer,
                    x.view(),
                    dy.view(),
                    gamma.view(),
                    ln_stats.mean.view(),
                    ln_stats.invstd.view(),
                )
                .map(drop)
            })?,
            other => {
                eprintln!("unknown op {other}: bn_fwd, bn_bwd, ln_fwd, ln_bwd");
                std::process::exit(2);
            }
        };
        println!("{op} {med:.5} {min:.5}");
    }
    Ok(())
}
