//! The `gpuprep` command line: the command enum and the dispatch. Each
//! subcommand lives in its own module, with its arguments struct and `run`.
//! With no subcommand it runs the demo on the embedded digits data: column
//! statistics, then the lecture's PCA and PCA / ZCA whitening, GPU against the
//! f64 CPU twin.

#[macro_use]
mod output;

mod activations;
mod bench;
mod bench_cpu;
mod common;
mod data;
mod demo;
mod fit;
mod info;
mod init;
mod merge;
mod normcheck;
mod preprocess;
mod stats;
mod steps;
mod transform;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gpuprep",
    version,
    about = "Data preprocessing, weight init and normalization on any GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands; each one's help text is its arguments struct's doc comment.
#[derive(Subcommand)]
enum Command {
    Demo(demo::DemoArgs),
    Info(info::InfoArgs),
    Stats(stats::StatsArgs),
    Preprocess(preprocess::PreprocessArgs),
    Fit(fit::FitArgs),
    Transform(transform::TransformArgs),
    Merge(merge::MergeArgs),
    Init(init::InitArgs),
    Activations(activations::ActivationsArgs),
    Normcheck(normcheck::NormcheckArgs),
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`gpuprep demo | head`)
    // would panic in println!; take the default action instead, as Unix tools do.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL before any other thread
    // exists; no handler code is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    output::init();
    let cli = Cli::parse();
    common::remove_temporaries_on_signals();
    let result = match cli.command {
        None => demo::run(demo::DemoArgs::default()),
        Some(Command::Demo(a)) => demo::run(a),
        Some(Command::Info(a)) => info::run(a),
        Some(Command::Stats(a)) => stats::run(a),
        Some(Command::Preprocess(a)) => preprocess::run(a),
        Some(Command::Fit(a)) => fit::run(a),
        Some(Command::Transform(a)) => transform::run(a),
        Some(Command::Merge(a)) => merge::run(a),
        Some(Command::Init(a)) => init::run(a),
        Some(Command::Activations(a)) => activations::run(a),
        Some(Command::Normcheck(a)) => normcheck::run(a),
        Some(Command::Bench(a)) => bench::run(a),
    };
    // Results that could not be written are a failure too.
    match result.and_then(|()| output::finish()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::note(&format!("gpuprep: error: {e}"));
            ExitCode::FAILURE
        }
    }
}
