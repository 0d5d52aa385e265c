//! The top-k eigensolver against the full eigendecomposition on a covariance
//! of low-rank data plus noise: time, products, cycles, and how far the
//! components and eigenvalues are from the full solver's (the crossover
//! that `Solver::Auto` uses is read from this).
//!
//! `cargo run --release --example eigen_topk -- [--d 2048] [--n 4096] [--rank 64]
//! [--noise 0.1] [--k 8,32,128,512] [--no-full] [--reps 3] [--extra P] [--blocks Q]
//! [--auto]` (`--auto`: give up where auto PCA does, at the full
//! eigendecomposition's work); each row also prints the work done, the full
//! solver's and the first cycle's estimates, and the work per nanosecond;
//! `-- --eigh-file C.npy [--reps R]` times only the full eigendecomposition of
//! the matrix in the file (for scripts/eigh-vs-numpy.py).
//!
//! The data: `x = z diag(s) m + noise e` with `z` (N x rank), `m` (rank x D)
//! and `e` standard normal, `s_j = exp(-j / 16)`; its covariance (f64, / N)
//! is what both solvers see.

mod common;

use std::time::Instant;

use common::{arg, median};

use gpuprep::model::eigen::{full_work, top_eigenpairs, topk_cycle_work, TopKOptions};
use gpuprep::model::pca::eigh_descending;
use gpuprep::{host, Philox};
use ndarray::Array2;

/// `--eigh-file C.npy [--reps R]`: only the full eigendecomposition of the
/// f64 matrix in the file, timed (the load left out); prints the seconds of
/// each rep on one line (scripts/eigh-vs-numpy.py reads it).
fn eigh_file(path: &str, reps: usize) -> gpuprep::Result<()> {
    let mut r = gpuprep::npy::NpyReader::open(std::path::Path::new(path))?;
    let mut c = Array2::<f64>::zeros((r.rows(), r.cols()));
    r.read_rows(0, c.view_mut())?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        eigh_descending(c.view())?;
        times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        times
            .iter()
            .map(|t| format!("{t:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

fn main() -> gpuprep::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--eigh-file") {
        let path = args.get(i + 1).map(String::as_str).unwrap_or("");
        return eigh_file(path, arg(&args, "--reps", 1));
    }
    let d: usize = arg(&args, "--d", 2048);
    let n: usize = arg(&args, "--n", 2 * d);
    let rank: usize = arg(&args, "--rank", 64);
    let noise: f64 = arg(&args, "--noise", 0.1);
    let reps: usize = arg(&args, "--reps", 3);
    let ks: Vec<usize> = arg(&args, "--k", "8,32,128,512".to_string())
        .split(',')
        .filter_map(|v| v.parse().ok())
        .filter(|&k| k >= 1 && k <= d)
        .collect();
    let full = !args.iter().any(|a| a == "--no-full");
    // `--auto`: give up where auto PCA would (the work limit of the full
    // eigendecomposition's cost).
    let auto = args.iter().any(|a| a == "--auto");
    let extra: Option<usize> = args
        .iter()
        .position(|a| a == "--extra")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let blocks: Option<usize> = args
        .iter()
        .position(|a| a == "--blocks")
        .and_then(|i| args.get(i + 1)?.parse().ok());

    let rng = Philox::new(7);
    let m = Array2::from_shape_fn((rank, d), |(i, j)| rng.normal((i * d + j) as u64));
    let rng_z = Philox::with_stream(7, 1);
    let z = Array2::from_shape_fn((n, rank), |(i, j)| {
        rng_z.normal((i * rank + j) as u64) * (-(j as f64) / 16.0).exp()
    });
    let rng_e = Philox::with_stream(7, 2);
    let mut x = z.dot(&m);
    for (i, v) in x.iter_mut().enumerate() {
        *v += noise * rng_e.normal(i as u64);
    }
    let t = Instant::now();
    let c = host::covariance(x.view(), 0)?;
    println!(
        "data {n} x {d} (rank {rank} + {noise} noise), covariance {:.2} s",
        t.elapsed().as_secs_f64()
    );
    drop(x);

    let reference = if full {
        let mut times = Vec::new();
        let mut out = None;
        for _ in 0..reps.min(2) {
            let t = Instant::now();
            out = Some(eigh_descending(c.view())?);
            times.push(t.elapsed().as_secs_f64());
        }
        let tf = median(times);
        println!("full eigh D = {d}: {tf:.3} s");
        out
    } else {
        None
    };
    println!("k\tseconds\tproducts\tcycles\tresidual\tmax |dU|\tmax |dS|/S1");
    for &k in &ks {
        let opts = TopKOptions {
            extra,
            blocks,
            max_work: auto.then(|| full_work(d)),
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut r = None;
        for _ in 0..reps {
            let t = Instant::now();
            match top_eigenpairs(c.view(), k, None, &opts) {
                Err(gpuprep::Error::NoConvergence { .. }) if opts.max_work.is_some() => {
                    println!(
                        "{k}\tgave up after {:.4} s (the work limit, as auto PCA's)",
                        t.elapsed().as_secs_f64()
                    );
                    break;
                }
                got => r = Some(got?),
            }
            times.push(t.elapsed().as_secs_f64());
        }
        let Some(r) = r else { continue };
        let median_t = median(times.clone());
        let (du, ds) = match &reference {
            Some((s, u)) => {
                let mut du = 0.0f64;
                let mut ds = 0.0f64;
                for j in 0..k {
                    ds = ds.max((r.values[j] - s[j]).abs() / s[0]);
                    let dot: f64 = (0..d).map(|i| r.vectors[[i, j]] * u[[i, j]]).sum();
                    let sign = if dot < 0.0 { -1.0 } else { 1.0 };
                    for i in 0..d {
                        du = du.max((r.vectors[[i, j]] - sign * u[[i, j]]).abs());
                    }
                }
                (du, ds)
            }
            None => (f64::NAN, f64::NAN),
        };
        println!(
            "{k}\t{:.4}\t{}\t{}\t{:.1e}\t{du:.1e}\t{ds:.1e}",
            median(times),
            r.products,
            r.cycles,
            r.residual / r.values[0].abs().max(f64::MIN_POSITIVE)
        );
        println!(
            "\twork {:.3e} (full eigh {:.3e}, first cycle estimated {:.3e}): {:.1} per ns",
            r.work,
            full_work(d),
            topk_cycle_work(d, k, &opts),
            r.work / median_t / 1e9
        );
    }
    Ok(())
}
