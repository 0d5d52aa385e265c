//! `gpuprep preprocess`: standardize the columns of a matrix file, or project it
//! onto its principal components (reduce, whiten), optionally saving the PCA model.

use std::path::PathBuf;

use clap::ValueEnum;
use gpuprep::io::NonFinite;
use gpuprep::{cpu, io, ops, GpuMatrix, NComponents, Pca, PcaOptions, StandardizeOptions, Whitening};

use crate::common::{gpu_or_cpu, Device, InputFormat};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WhitenArg {
    /// Divide each component by sqrt(eigenvalue + eps).
    Pca,
    /// PCA whitening rotated back to the input axes (U diag(1/sqrt(S + eps)) U^T).
    Zca,
}

/// `--pca K|FRACTION|all`: an integer is a count of components, a number with a
/// decimal point in (0, 1] a fraction of explained variance.
fn parse_components(s: &str) -> Result<NComponents, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(NComponents::All);
    }
    if let Ok(k) = s.parse::<usize>() {
        return if k == 0 {
            Err("the number of components must be at least 1".into())
        } else {
            Ok(NComponents::Count(k))
        };
    }
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(NComponents::Fraction(f)),
        _ => Err(format!(
            "{s:?}: expected a count of components (e.g. 50), a fraction of variance in (0, 1] (e.g. 0.99), or all"
        )),
    }
}

/// Center and/or scale the columns of a matrix (.npy or CSV; finite values only),
/// or with --pca project it onto its principal components (reduce, whiten);
/// writes .npy (f32) atomically. With neither --center nor --scale nor --pca,
/// centers and scales.
#[derive(clap::Args)]
pub struct PreprocessArgs {
    /// Input .npy or .csv file.
    input: PathBuf,
    #[command(flatten)]
    format: InputFormat,
    /// Output .npy file.
    #[arg(short, long)]
    output: PathBuf,
    /// Subtract each column's mean.
    #[arg(long)]
    center: bool,
    /// Divide each column by its standard deviation (constant columns by 1).
    #[arg(long, conflicts_with = "pca")]
    scale: bool,
    /// PCA instead of standardization: keep K components (an integer), the
    /// fewest reaching a FRACTION of the variance (e.g. 0.99), or all.
    #[arg(long, value_name = "K|FRACTION", value_parser = parse_components)]
    pca: Option<NComponents>,
    /// Whiten after the PCA rotation.
    #[arg(long, value_enum, requires = "pca")]
    whiten: Option<WhitenArg>,
    /// Added to each eigenvalue before whitening's square root.
    #[arg(long, default_value_t = 1e-5, requires = "pca", allow_negative_numbers = true)]
    eps: f64,
    /// Delta degrees of freedom of the PCA covariance (0: the lecture's /N).
    #[arg(long, default_value_t = 0, requires = "pca")]
    ddof: usize,
    /// Save the fitted PCA model (.npz, readable by numpy) for `gpuprep transform`.
    #[arg(long, value_name = "M.npz", requires = "pca")]
    save_model: Option<PathBuf>,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "gpu")]
    device: Device,
}

/// Standardizes, or with `--pca` fits and applies a PCA; writes the output (and the model).
pub fn run(a: PreprocessArgs) -> gpuprep::Result<()> {
    let mut outputs = vec![a.output.as_path()];
    outputs.extend(a.save_model.as_deref());
    io::check_outputs("preprocess", &[&a.input], &outputs)?;
    match a.pca {
        Some(n_components) => {
            // PCA always centers: --center changes nothing.
            let options = PcaOptions {
                n_components,
                whitening: match a.whiten {
                    None => Whitening::None,
                    Some(WhitenArg::Pca) => Whitening::Pca,
                    Some(WhitenArg::Zca) => Whitening::Zca,
                },
                eps: a.eps,
                ddof: a.ddof,
            };
            pca(a, options)
        }
        None => standardize(a),
    }
}

fn standardize(a: PreprocessArgs) -> gpuprep::Result<()> {
    let opts = if !a.center && !a.scale {
        StandardizeOptions::default()
    } else {
        StandardizeOptions {
            center: a.center,
            scale: a.scale,
        }
    };
    let x = a.format.read("preprocess", &a.input, NonFinite::Reject)?;
    let y = match gpu_or_cpu(a.device) {
        Some(g) => {
            let xg = GpuMatrix::upload(&g, x.view())?;
            let st = ops::column_stats(&g, &xg, &ops::ColumnStatsOptions::ddof(0))?;
            g.run("standardize", |e| {
                ops::encode_standardize_into(&g, e, &xg, &st, &xg, &opts)
            })?;
            xg.download(&g)?
        }
        None => {
            let st = cpu::column_stats(x.view(), 0)?;
            cpu::standardize(x.view(), &st, opts)?.mapv(|v| v as f32)
        }
    };
    io::write_npy_matrix(&a.output, y.view())?;
    eprintln!("wrote {} ({} x {})", a.output.display(), y.nrows(), y.ncols());
    Ok(())
}

fn pca(a: PreprocessArgs, options: PcaOptions) -> gpuprep::Result<()> {
    let x = a.format.read("preprocess", &a.input, NonFinite::Reject)?;
    let (y, model) = match gpu_or_cpu(a.device) {
        Some(g) => {
            let xg = GpuMatrix::upload(&g, x.view())?;
            let pca = Pca::fit(&g, &xg, &options)?;
            let y = pca.transform(&g, &xg)?.download(&g)?;
            (y, pca.into_model())
        }
        None => {
            let model = cpu::pca::fit(x.view(), &options)?;
            (
                gpuprep::cpu::pca::transform(&model, x.view())?.mapv(|v| v as f32),
                model,
            )
        }
    };
    // Both outputs appear together or neither does.
    let mut out = io::OutputSet::new();
    out.write_npy(&a.output, &y)?;
    if let Some(path) = &a.save_model {
        out.write_with(path, |tmp| model.save(tmp))?;
    }
    out.commit()?;
    let kept: f64 = model.explained_variance_ratio.sum();
    eprintln!(
        "wrote {} ({} x {}): {} of {} components, {:.4} of the variance",
        a.output.display(),
        y.nrows(),
        y.ncols(),
        model.n_components(),
        model.n_features(),
        kept
    );
    if let Some(path) = &a.save_model {
        eprintln!("wrote {} (PCA model)", path.display());
    }
    Ok(())
}
