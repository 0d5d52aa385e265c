//! `gpuprep preprocess`: fit a pipeline and apply it to the same data in one
//! command (two streamed passes), optionally saving the model.

use std::path::PathBuf;

use gpuprep::io;

use crate::common::{InputArgs, StreamArgs};
use crate::output;
use crate::steps::{self, DtypeArg, StepArgs};

/// Standardize (center and/or scale), then PCA (reduce), then whiten (PCA or ZCA)
/// a data set (.npy or CSV files, finite values only, read in chunks): any
/// combination of steps, fitted on the data and applied to it; writes .npy
/// (the input's dtype unless --dtype) and, with --save-model, the model, both
/// atomically and together. With no step flags: center and scale.
#[derive(clap::Args)]
pub struct PreprocessArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output .npy file.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    steps: StepArgs,
    /// Also save the fitted model (.npz, readable by numpy) for `gpuprep transform`.
    #[arg(long, value_name = "M.npz")]
    save_model: Option<PathBuf>,
    /// The output's element type (default: the input's).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
    #[command(flatten)]
    stream: StreamArgs,
}

pub fn run(a: PreprocessArgs) -> gpuprep::Result<()> {
    let mut outputs = vec![a.output.as_path()];
    outputs.extend(a.save_model.as_deref());
    io::check_outputs("preprocess", &steps::paths(&a.input.inputs), &outputs)?;
    let (mut ds, gpu, model) = steps::open_and_fit("preprocess", &a.input, &a.steps, &a.stream)?;
    let dtype = a.dtype.map_or(ds.dtype(), DtypeArg::dtype);
    // Both outputs appear together or neither does.
    let mut out = io::OutputSet::new();
    let (rows, cols) = steps::transform_into(
        &mut out, &a.output, &model, &mut ds, false, dtype, &gpu, &a.stream,
    )?;
    if let Some(path) = &a.save_model {
        out.write_with(path, |tmp| model.save(tmp))?;
    }
    out.commit()?;
    output::note(&format!(
        "wrote {} ({rows} x {cols}, {dtype:?}): {}",
        a.output.display(),
        steps::describe(&model)
    ));
    if let Some(path) = &a.save_model {
        output::note(&format!("wrote {} (model)", path.display()));
    }
    Ok(())
}
