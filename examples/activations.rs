//! The lecture's activation statistics: 10 layers of 500 units on 1000
//! unit-gaussian inputs, tanh and ReLU, for three initializations.
//!
//! `cargo run --release --example activations`
//!
//! The forward pass runs on the CPU twin (f64): the GPU matrix product is
//! owned by the PCA work and this example uses it once it lands. The weights
//! are the Philox stream's, so a GPU initialization gives the same numbers.

use gpuprep::cpu::init::lecture::{activation_statistics, Nonlinearity};
use gpuprep::cpu::init::Scheme;

fn main() -> gpuprep::Result<()> {
    let (layers, units, batch, seed) = (10, 500, 1000, 231);
    let schemes = [
        ("0.01 * randn", Scheme::SmallRandom),
        ("randn / sqrt(n)", Scheme::Calibrated),
        ("He: randn * sqrt(2/n)", Scheme::kaiming_normal()),
    ];
    for nl in [Nonlinearity::Tanh, Nonlinearity::Relu] {
        println!("\n{nl:?}: mean / std of each layer's activations");
        print!("{:>5}", "layer");
        for (name, _) in &schemes {
            print!(" | {name:^23}");
        }
        println!();
        let stats: Vec<_> = schemes
            .iter()
            .map(|(_, s)| activation_statistics(s, nl, layers, units, batch, seed))
            .collect::<gpuprep::Result<_>>()?;
        for l in 0..layers {
            print!("{:>5}", l + 1);
            for s in &stats {
                print!(" | {:>+11.3e} {:>11.3e}", s[l].mean, s[l].std);
            }
            println!();
        }
    }
    Ok(())
}
