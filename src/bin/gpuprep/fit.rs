//! `gpuprep fit`: fit a preprocessing pipeline on one or more files (streamed)
//! and save the model.

use std::path::PathBuf;

use gpuprep::io;

use crate::common::{InputArgs, StreamArgs};
use crate::output;
use crate::steps::{self, StepArgs};

/// Fits standardize / PCA / whitening on a data set (several files are one data
/// set, their rows in order; read in chunks, never whole) and saves the model as
/// one .npz readable by numpy, with the accumulated state, so `gpuprep merge`
/// can combine models fitted on parts.
#[derive(clap::Args)]
pub struct FitArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The model file (.npz).
    #[arg(short, long, value_name = "MODEL.npz")]
    output: PathBuf,
    #[command(flatten)]
    steps: StepArgs,
    #[command(flatten)]
    stream: StreamArgs,
}

pub fn run(a: FitArgs) -> gpuprep::Result<()> {
    io::check_outputs("fit", &steps::paths(&a.input.inputs), &[&a.output])?;
    let (_, _, model) = steps::open_and_fit("fit", &a.input, &a.steps, &a.stream)?;
    let mut out = io::OutputSet::new();
    out.write_with(&a.output, |tmp| model.save(tmp))?;
    out.commit()?;
    output::note(&format!(
        "wrote {}: {}",
        a.output.display(),
        steps::describe(&model)
    ));
    Ok(())
}
