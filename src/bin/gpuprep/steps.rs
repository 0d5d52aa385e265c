//! The preprocessing steps a fit takes (`--center --scale --pca --whiten
//! --convention --eps`), shared by `fit` and `preprocess`, and the streamed fit
//! and transform they share with `transform`.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use gpuprep::io::NonFinite;
use gpuprep::npy::{Dtype, NpyWriter};
use gpuprep::pipeline::{self, Device as Where};
use gpuprep::stream::Dataset;
use gpuprep::{io, Convention, Gpu, NComponents, Pipeline, PipelineOptions, Solver, Whitening};

use crate::common::{Device, InputArgs, Progress, StreamArgs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WhitenArg {
    /// Divide each component by its standard deviation (sqrt(eigenvalue + eps)).
    Pca,
    /// PCA whitening rotated back to the input axes (U diag(1/sqrt(S + eps)) U^T).
    Zca,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConventionArg {
    /// cs231n's: covariance / N, eps 1e-5 under whitening's square root, a fraction keeps the fewest components reaching it.
    Lecture,
    /// scikit-learn's: explained variance / (N - 1), whitening by sqrt(explained variance) clipped at machine epsilon, a fraction strictly passed.
    Sklearn,
    /// PyTorch's (the lecture's formulas for these steps).
    Pytorch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SolverArg {
    /// The top-k solver when the components kept are well below the columns (from D = 256, where one of its cycles costs at most a quarter of the full solve: about k <= D/28), else full; the full one too where the top-k solver's residuals predict more work than the full solve's.
    Auto,
    /// The full eigendecomposition of the covariance (all D eigenpairs).
    Full,
    /// Only the leading eigenpairs (block Krylov on the covariance); an error where it does not converge.
    Topk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats.
    F32,
    /// 64-bit floats.
    F64,
}

impl DtypeArg {
    pub fn dtype(self) -> Dtype {
        match self {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F64 => Dtype::F64,
        }
    }
}

/// `--pca K|FRACTION|all`: an integer is a count of components, a number with a
/// decimal point in (0, 1] a fraction of explained variance.
pub fn parse_components(s: &str) -> Result<NComponents, String> {
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

/// The steps of a pipeline. With none of --center, --scale, --pca, --whiten:
/// center and scale.
#[derive(clap::Args, Debug)]
pub struct StepArgs {
    /// Subtract each column's mean.
    #[arg(long)]
    center: bool,
    /// Divide each column by its standard deviation (numerically constant columns by 1).
    #[arg(long)]
    scale: bool,
    /// Then PCA: keep K components (an integer), the fewest reaching a FRACTION of
    /// the variance (e.g. 0.99; scikit-learn's rule under --convention sklearn), or all.
    #[arg(long, value_name = "K|FRACTION|all", value_parser = parse_components, allow_negative_numbers = true)]
    pca: Option<NComponents>,
    /// Whiten after the PCA rotation (without --pca: all components).
    #[arg(long, value_enum)]
    whiten: Option<WhitenArg>,
    /// Whose conventions the fit follows.
    #[arg(long, value_enum, default_value = "lecture")]
    convention: ConventionArg,
    /// Added to each eigenvalue under whitening's square root (default: the convention's, 1e-5 for the lecture).
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// The PCA step's eigensolver.
    #[arg(long, value_enum, default_value = "auto")]
    solver: SolverArg,
}

impl StepArgs {
    /// The pipeline's options, refusing a flag that would change nothing:
    /// `--eps` without whitening (it is added under whitening's square root
    /// only).
    ///
    /// # Errors
    /// [`gpuprep::Error::InvalidArgument`] naming the flag.
    pub fn options(&self) -> gpuprep::Result<PipelineOptions> {
        let refuse = |reason: &str| gpuprep::Error::InvalidArgument {
            op: "fit",
            reason: reason.to_string(),
        };
        if self.eps.is_some() && self.whiten.is_none() {
            return Err(refuse(
                "--eps is added under whitening's square root and does nothing without --whiten pca|zca",
            ));
        }
        let nothing = !self.center && !self.scale && self.pca.is_none() && self.whiten.is_none();
        Ok(PipelineOptions {
            center: self.center || nothing,
            scale: self.scale || nothing,
            pca: self.pca,
            whitening: match self.whiten {
                None => Whitening::None,
                Some(WhitenArg::Pca) => Whitening::Pca,
                Some(WhitenArg::Zca) => Whitening::Zca,
            },
            convention: match self.convention {
                ConventionArg::Lecture => Convention::Lecture,
                ConventionArg::Sklearn => Convention::Sklearn,
                ConventionArg::Pytorch => Convention::Pytorch,
            },
            eps: self.eps,
            solver: match self.solver {
                SolverArg::Auto => Solver::Auto,
                SolverArg::Full => Solver::Full,
                SolverArg::Topk => Solver::TopK,
            },
        })
    }
}

/// The GPU when asked for and present (a notice on stderr otherwise).
pub fn device(d: Device) -> Option<Gpu> {
    crate::common::gpu_or_cpu(d)
}

pub fn where_(gpu: &Option<Gpu>) -> Where<'_> {
    match gpu {
        Some(g) => Where::Gpu(g),
        None => Where::Cpu,
    }
}

/// The files of a data set, for messages.
pub fn names(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `fit` and `preprocess` share: the options checked, the input
/// opened (non-finite values refused), the device chosen, and the pipeline
/// fitted, streamed, with the input's feature names (where it has them).
pub fn open_and_fit(
    op: &'static str,
    input: &InputArgs,
    steps: &StepArgs,
    stream: &StreamArgs,
) -> gpuprep::Result<(Dataset, Option<Gpu>, Pipeline)> {
    let options = steps.options()?;
    options.validate()?;
    let mut ds = input.open(op, NonFinite::Reject)?;
    let gpu = device(stream.device);
    let mut model = fit(&mut ds, &options, &gpu, stream)?;
    model.state.feature_names = ds.feature_names().map(<[String]>::to_vec);
    Ok((ds, gpu, model))
}

/// Fits `options` on the data set, streamed.
pub fn fit(
    ds: &mut Dataset,
    options: &PipelineOptions,
    gpu: &Option<Gpu>,
    s: &StreamArgs,
) -> gpuprep::Result<Pipeline> {
    if ds.rows() == 0 {
        return Err(gpuprep::Error::InvalidArgument {
            op: "fit",
            reason: format!("{} has 0 rows: there is nothing to fit", names(&ds.paths())),
        });
    }
    let mut bar = Progress::new("fit", ds.rows(), ds.cols() * ds.dtype().size(), s.quiet);
    let rows = s.chunk_rows(ds.cols(), ds.dtype().size());
    pipeline::fit_dataset(ds, options, where_(gpu), rows, &mut |done, total| {
        bar.update(done, total)
    })
}

/// Streams the data set through the model into the output set's `path`.
#[allow(clippy::too_many_arguments)]
pub fn transform_into(
    out: &mut io::OutputSet,
    path: &Path,
    model: &Pipeline,
    ds: &mut Dataset,
    inverse: bool,
    dtype: Dtype,
    gpu: &Option<Gpu>,
    s: &StreamArgs,
) -> gpuprep::Result<(usize, usize)> {
    let rows = ds.rows();
    let cols = if inverse {
        model.n_features()
    } else {
        model.output_dim()
    };
    let chunk = s.chunk_rows(ds.cols().max(cols), ds.dtype().size());
    let mut bar = Progress::new("transform", rows, ds.cols() * ds.dtype().size(), s.quiet);
    out.write(path, |w| {
        let mut npy = NpyWriter::new(w, path, dtype, rows, cols)?;
        pipeline::transform_dataset(
            model,
            ds,
            inverse,
            where_(gpu),
            chunk,
            &mut npy,
            path,
            &mut |d, t| bar.update(d, t),
        )?;
        npy.finish()?;
        Ok(())
    })?;
    Ok((rows, cols))
}

/// The steps of `options` as the command line spells them.
fn flags(o: &PipelineOptions) -> Vec<(&'static str, String)> {
    vec![
        ("--center", if o.center { "on" } else { "off" }.to_string()),
        ("--scale", if o.scale { "on" } else { "off" }.to_string()),
        (
            "--pca",
            match o.pca {
                None => "none".to_string(),
                Some(NComponents::All) => "all".to_string(),
                Some(NComponents::Count(k)) => k.to_string(),
                Some(NComponents::Fraction(f)) => f.to_string(),
            },
        ),
        (
            "--whiten",
            match o.whitening {
                Whitening::None => "none",
                Whitening::Pca => "pca",
                Whitening::Zca => "zca",
            }
            .to_string(),
        ),
        ("--convention", o.convention.name().to_string()),
        (
            "--eps",
            o.eps.map_or("the convention's".to_string(), |e| e.to_string()),
        ),
    ]
}

/// How two models' steps differ, flag by flag: "--pca 3 against 0.9, ...".
pub fn differences(a: &PipelineOptions, b: &PipelineOptions) -> String {
    flags(a)
        .into_iter()
        .zip(flags(b))
        .filter(|(x, y)| x.1 != y.1)
        .map(|((flag, x), (_, y))| format!("{flag} {x} against {y}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A one-line description of a fitted model.
pub fn describe(model: &Pipeline) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &model.standardizer {
        parts.push(match (s.with_mean, s.with_std) {
            (true, true) => "standardize".to_string(),
            (true, false) => "center".to_string(),
            _ => "scale".to_string(),
        });
    }
    if let Some(p) = &model.pca {
        let kept: f64 = p.explained_variance_ratio.sum();
        parts.push(format!(
            "PCA {} of {} components ({kept:.4} of the variance){}",
            p.n_components(),
            p.n_features(),
            match p.whitening {
                Whitening::None => "",
                Whitening::Pca => ", PCA-whitened",
                Whitening::Zca => ", ZCA-whitened",
            }
        ));
    }
    format!(
        "{} ({} convention, fitted on {} rows)",
        parts.join(", then "),
        model.options.convention.name(),
        model
            .state
            .count()
            .max(model.pca.as_ref().map_or(0, |p| p.n_samples as u64))
    )
}

pub fn paths(p: &[PathBuf]) -> Vec<&Path> {
    p.iter().map(PathBuf::as_path).collect()
}
