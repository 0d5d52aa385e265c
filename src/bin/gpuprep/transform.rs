//! `gpuprep transform`: apply a saved model (or its inverse) to a data set, streamed.

use std::path::PathBuf;

use gpuprep::io::{self, NonFinite};
use gpuprep::stream::Dataset;
use gpuprep::Pipeline;

use crate::common::{InputFormat, StreamArgs};
use crate::steps::{self, DtypeArg};

/// Applies a model from `gpuprep fit` (or `preprocess --save-model`; a PCA model
/// from an earlier gpuprep works too) to a data set (.npy or CSV files, finite
/// values only, read in chunks), writing .npy chunk by chunk (atomically: all or
/// nothing). The output keeps the input's dtype unless --dtype says otherwise.
#[derive(clap::Args)]
pub struct TransformArgs {
    /// Input .npy or .csv files (one data set).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    format: InputFormat,
    /// Output .npy file.
    #[arg(short, long)]
    output: PathBuf,
    /// The model (.npz).
    #[arg(long, value_name = "M.npz")]
    model: PathBuf,
    /// Map transformed data back to the input space instead.
    #[arg(long)]
    inverse: bool,
    /// The output's element type (default: the input's).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
    #[command(flatten)]
    stream: StreamArgs,
}

pub fn run(a: TransformArgs) -> gpuprep::Result<()> {
    let mut inputs = steps::paths(&a.inputs);
    inputs.push(&a.model);
    io::check_outputs("transform", &inputs, &[&a.output])?;
    let model = Pipeline::load(&a.model)?;
    let read = a.format.options("transform", &a.inputs, NonFinite::Reject)?;
    let mut ds = Dataset::open(&a.inputs, &read)?;
    let gpu = steps::device(a.stream.device);
    let dtype = a.dtype.map_or(ds.dtype(), DtypeArg::dtype);
    let mut out = io::OutputSet::new();
    let (rows, cols) = steps::transform_into(
        &mut out, &a.output, &model, &mut ds, a.inverse, dtype, &gpu, &a.stream,
    )?;
    out.commit()?;
    eprintln!("wrote {} ({rows} x {cols}, {dtype:?})", a.output.display());
    Ok(())
}
