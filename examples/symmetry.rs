//! The lecture's symmetry example: why weights must not start equal.
//!
//! `cargo run --example symmetry`
//!
//! 1. The lecture's 2-layer sigmoid network and its illustrative update, from
//!    zero weights and from the constants 0.01 (W1) and 0.09 (W2).
//! 2. The same network trained by the true gradient of a squared loss: from a
//!    constant start every hidden unit stays identical for good; from small
//!    random numbers (drawn by the Philox stream, on the GPU when there is
//!    one, else by the CPU twin: the same numbers either way) the units
//!    differ and the network fits the data.

use gpuprep::cpu::init as twin;
use gpuprep::cpu::init::lecture::{hidden_unit_spread, lecture_step, toy_input, toy_target, train};
use gpuprep::model::init::Scheme;
use gpuprep::ops::init as gpu_init;
use gpuprep::rng::Philox;
use gpuprep::Gpu;
use ndarray::Array2;

fn small_random(gpu: Option<&Gpu>, rows: usize, cols: usize, stream: u64) -> gpuprep::Result<Array2<f64>> {
    let rng = Philox::with_stream(231, stream);
    Ok(match gpu {
        Some(g) => gpu_init::init(g, &[rows, cols], &Scheme::SmallRandom, rng)?
            .download(g)?
            .mapv(f64::from),
        None => twin::init(&[rows, cols], &Scheme::SmallRandom, rng)?
            .into_dimensionality()
            .expect("2-D"),
    })
}

fn main() -> gpuprep::Result<()> {
    let (x, t) = (toy_input(), toy_target());
    println!("input  = {x}\ntarget = {t}\n");
    println!("The lecture's update: diff = target - hidden @ W2; W2 -= hidden.T @ diff;");
    println!("                      W1 -= input.T @ (hidden * (1 - hidden))\n");
    for (name, c1, c2) in [("zeros", 0.0, 0.0), ("W1 = 0.01, W2 = 0.09", 0.01, 0.09)] {
        let (w1, w2) = lecture_step(
            &x,
            &t,
            &Array2::from_elem((3, 4), c1),
            &Array2::from_elem((4, 2), c2),
        )?;
        println!("from {name}:\nW1 =\n{w1:.4}\nW2 =\n{w2:.4}\n");
    }

    let gpu = Gpu::new()
        .map_err(|e| eprintln!("no GPU ({e}): the CPU twin draws the weights"))
        .ok();
    let lr = 0.5;
    let c1 = Array2::from_elem((3, 4), 0.01);
    let c2 = Array2::from_elem((4, 2), 0.09);
    let r1 = small_random(gpu.as_ref(), 3, 4, 0)?;
    let r2 = small_random(gpu.as_ref(), 4, 2, 1)?;
    println!("True gradient of 1/2 ||sigmoid(X W1) W2 - T||^2, learning rate {lr}:");
    println!(
        "{:>6} | {:>12} {:>12} | {:>12} {:>12}",
        "steps", "const loss", "const spread", "random loss", "rand spread"
    );
    for steps in [0usize, 1, 10, 100, 1000, 5000] {
        let (a1, a2, la) = train(&x, &t, c1.clone(), c2.clone(), lr, steps)?;
        let (b1, b2, lb) = train(&x, &t, r1.clone(), r2.clone(), lr, steps)?;
        println!(
            "{steps:>6} | {:>12.4e} {:>12.1e} | {:>12.4e} {:>12.4e}",
            la[steps],
            hidden_unit_spread(&a1, &a2)?,
            lb[steps],
            hidden_unit_spread(&b1, &b2)?
        );
    }
    println!("\n'spread': the largest difference between any hidden unit's weights and unit 0's.");
    println!("From a constant start it stays exactly 0: four hidden units that are one unit.");
    Ok(())
}
