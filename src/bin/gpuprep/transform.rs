//! `gpuprep transform`: apply a saved model (or its inverse) to a data set, streamed.

use std::path::PathBuf;

use gpuprep::io::{self, NonFinite};
use gpuprep::stream::Dataset;
use gpuprep::Pipeline;

use crate::common::{InputArgs, StreamArgs};
use crate::output;
use crate::steps::{self, DtypeArg};

/// Applies a model from `gpuprep fit` (or `preprocess --save-model`; a PCA model
/// from an earlier gpuprep works too) to a data set (.npy or CSV files, finite
/// values only, read in chunks), writing .npy chunk by chunk (atomically: all or
/// nothing). The output keeps the input's dtype unless --dtype says otherwise.
#[derive(clap::Args)]
pub struct TransformArgs {
    #[command(flatten)]
    input: InputArgs,
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
    let mut inputs = steps::paths(&a.input.inputs);
    inputs.push(&a.model);
    io::check_outputs("transform", &inputs, &[&a.output])?;
    let model = Pipeline::load(&a.model)?;
    let mut ds = a.input.open("transform", NonFinite::Reject)?;
    check_columns(&a, &model, &ds)?;
    let gpu = steps::device(a.stream.device);
    let dtype = a.dtype.map_or(ds.dtype(), DtypeArg::dtype);
    let mut out = io::OutputSet::new();
    let (rows, cols) = steps::transform_into(
        &mut out, &a.output, &model, &mut ds, a.inverse, dtype, &gpu, &a.stream,
    )?;
    out.commit()?;
    output::note(&format!(
        "wrote {} ({rows} x {cols}, {dtype:?})",
        a.output.display()
    ));
    Ok(())
}

/// The data's columns against the model's: their count, and their names
/// where both the data (a CSV header) and the model (fitted on named
/// columns) have them. Errors name the model and the data file.
fn check_columns(a: &TransformArgs, model: &Pipeline, ds: &Dataset) -> gpuprep::Result<()> {
    let data = ds
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (want, what) = if a.inverse {
        (model.output_dim(), "outputs (--inverse reads transformed data)")
    } else {
        (model.n_features(), "input columns")
    };
    if ds.cols() != want {
        return Err(gpuprep::Error::InvalidArgument {
            op: "transform",
            reason: format!(
                "the model {} has {want} {what}, and {data} has {} columns",
                a.model.display(),
                ds.cols()
            ),
        });
    }
    if a.inverse {
        return Ok(());
    }
    if let (Some(m), Some(d)) = (&model.state.feature_names, ds.feature_names()) {
        if m.as_slice() != d {
            let j = m.iter().zip(d).position(|(x, y)| x != y).unwrap_or(0);
            return Err(gpuprep::Error::InvalidArgument {
                op: "transform",
                reason: format!(
                    "the model {} was fitted on columns named {:?}, and {data}'s header names them {:?} \
                     (column {}: {:?} against {:?}); choose the model's columns with --usecols",
                    a.model.display(),
                    m,
                    d,
                    j + 1,
                    m[j],
                    d[j]
                ),
            });
        }
    }
    Ok(())
}
