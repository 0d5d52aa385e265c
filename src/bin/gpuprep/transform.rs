//! `gpuprep transform`: apply a saved PCA model (or its inverse) to a matrix file.

use std::path::PathBuf;

use gpuprep::io::NonFinite;
use gpuprep::{io, GpuMatrix, Pca, PcaModel};

use crate::common::{gpu_or_cpu, Device, InputFormat};

/// Applies a saved PCA model (from `preprocess --pca ... --save-model`) to a
/// matrix (.npy or CSV; finite values only); writes .npy (f32) atomically.
#[derive(clap::Args)]
pub struct TransformArgs {
    /// Input .npy or .csv file.
    input: PathBuf,
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
    /// Where to compute.
    #[arg(long, value_enum, default_value = "gpu")]
    device: Device,
}

/// Loads the model and the input, transforms, writes the output.
pub fn run(a: TransformArgs) -> gpuprep::Result<()> {
    io::check_outputs("transform", &[&a.input, &a.model], &[&a.output])?;
    let model = PcaModel::load(&a.model)?;
    let x = a.format.read("transform", &a.input, NonFinite::Reject)?;
    let y = match gpu_or_cpu(a.device) {
        Some(g) => {
            let pca = Pca::from_model(&g, model)?;
            let xg = GpuMatrix::upload(&g, x.view())?;
            let yg = if a.inverse {
                pca.inverse_transform(&g, &xg)?
            } else {
                pca.transform(&g, &xg)?
            };
            yg.download(&g)?
        }
        None => {
            let y = if a.inverse {
                gpuprep::cpu::pca::inverse_transform(&model, x.view())?
            } else {
                gpuprep::cpu::pca::transform(&model, x.view())?
            };
            y.mapv(|v| v as f32)
        }
    };
    io::write_npy_matrix(&a.output, y.view())?;
    eprintln!("wrote {} ({} x {})", a.output.display(), y.nrows(), y.ncols());
    Ok(())
}
