//! The full symmetric eigendecomposition's three phases, timed separately on
//! the f64 matrix in a `.npy` file: the reduction to tridiagonal form, the
//! tridiagonal matrix's eigendecomposition (divide and conquer) and the
//! back-transform of its eigenvectors, as faer chains them.
//!
//! `cargo run --release --example eigh_phases -- C.npy [--reps R]`
//! (scripts/eigh-phases.py compares LAPACK's pieces on the same matrix).

use std::time::Instant;

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::{evd, householder};
use faer::{Conj, Mat, Par};
use gpuprep::model::tridiag;
use ndarray::Array2;

/// This process's CPU seconds (all threads): on the shared machine the
/// wall time of a phase includes the time other processes had the cores.
fn cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// faer's phases: (tridiag, tridiagonal evd, back-transform) seconds.
fn faer_phases(a: &Mat<f64>, par: Par) -> [f64; 3] {
    let n = a.nrows();
    let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n);
    let scratch =
        evd::self_adjoint_evd_scratch::<f64>(n, evd::ComputeEigenvectors::Yes, par, Default::default());
    let mut mem = MemBuffer::new(scratch);
    let stack = MemStack::new(&mut mem);
    let mut trid = a.clone();
    let mut h = Mat::<f64>::zeros(bs, n - 1);
    let (c0, t0) = (cpu(), Instant::now());
    evd::tridiag::tridiag_in_place(trid.as_mut(), h.as_mut(), par, stack, Default::default());
    let (c1, t1) = (cpu(), Instant::now());
    eprintln!("CPU faer tridiag {:.3} s", c1 - c0);
    let diag: Vec<f64> = (0..n).map(|i| trid[(i, i)]).collect();
    let sub: Vec<f64> = (0..n)
        .map(|i| if i + 1 < n { trid[(i + 1, i)] } else { 0.0 })
        .collect();
    let (s, mut u) = tridiag::tridiagonal_evd(&diag, &sub, par).expect("tridiagonal evd");
    let t2 = Instant::now();
    householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        trid.as_ref().submatrix(1, 0, n - 1, n - 1),
        h.as_ref(),
        Conj::No,
        u.as_mut().subrows_mut(1, n - 1),
        par,
        stack,
    );
    finish("faer", a, &s, &u, [t0, t1, t2])
}

/// Ours (src/model/tridiag.rs): the same three phases.
fn our_phases(a: &Mat<f64>, nb: usize, par: Par) -> [f64; 3] {
    let (c0, t0) = (cpu(), Instant::now());
    let red = tridiag::tridiagonalize(a.as_ref(), nb, par);
    let (c1, t1) = (cpu(), Instant::now());
    eprintln!("CPU ours nb {nb} tridiag {:.3} s", c1 - c0);
    let (s, mut u) = tridiag::tridiagonal_evd(&red.diag, &red.sub, par).expect("tridiagonal evd");
    let t2 = Instant::now();
    tridiag::back_transform(&red, u.as_mut(), par);
    finish(&format!("ours (nb = {nb})"), a, &s, &u, [t0, t1, t2])
}

/// The three phases' seconds, the back-transform's ending now, with the
/// result's residual `||A U - U S|| / ||A||` on stderr.
fn finish(who: &str, a: &Mat<f64>, s: &[f64], u: &Mat<f64>, t: [Instant; 3]) -> [f64; 3] {
    let t3 = Instant::now();
    let au = a * u;
    let us = Mat::from_fn(u.nrows(), u.ncols(), |i, j| u[(i, j)] * s[j]);
    let r = (&au - &us).norm_l2() / a.norm_l2();
    eprintln!("{who} residual ||A U - U S|| / ||A|| = {r:.1e}");
    [
        (t[1] - t[0]).as_secs_f64(),
        (t[2] - t[1]).as_secs_f64(),
        (t3 - t[2]).as_secs_f64(),
    ]
}

fn main() -> gpuprep::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or_default();
    let reps: usize = arg(&args, "--reps", 1);
    let mut r = gpuprep::npy::NpyReader::open(std::path::Path::new(&path))?;
    let mut c = Array2::<f64>::zeros((r.rows(), r.cols()));
    r.read_rows(0, c.view_mut())?;
    let a = Mat::<f64>::from_fn(c.nrows(), c.ncols(), |i, j| c[[i, j]]);
    let par = if args.iter().any(|a| a == "--seq") {
        Par::Seq
    } else {
        gpuprep::model::eigen::eigh_parallelism(a.nrows())
    };
    let nbs: String = arg(&args, "--nb", "32".to_string());
    let only_ours = args.iter().any(|a| a == "--ours");
    for _ in 0..reps {
        for nb in nbs.split(',').filter_map(|v| v.parse().ok()) {
            let [t, e, b] = our_phases(&a, nb, par);
            println!("ours nb {nb} tridiag {t:.3} evd {e:.3} back {b:.3}");
        }
        if only_ours {
            continue;
        }
        let [t, e, b] = faer_phases(&a, par);
        let t0 = Instant::now();
        gpuprep::model::pca::eigh_descending(c.view())?;
        let whole = t0.elapsed().as_secs_f64();
        println!("faer tridiag {t:.3} evd {e:.3} back {b:.3} | eigh_descending {whole:.3}");
    }
    Ok(())
}
