//! `gpuprep normcheck`: a conformance tool. Runs one normalization forward and
//! backward (training mode) on the user's own tensors and writes every result
//! as .npy, so it can be compared with another framework's:
//! y, dx (shaped as x), dgamma, dbeta (shaped as gamma), mean, invstd
//! (batch: (C,); layer: (N,); instance: (N, C); group: (N, G)).
//! GPU results are f32, CPU (f64 twin) results f64. Every file is written
//! atomically (temporary file, then rename).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use gpuprep::cpu::norm::{norm_backward, norm_forward};
use gpuprep::model::norm::{NormKind, NormPlan, NormShape};
use gpuprep::ops::Norm;
use gpuprep::{io, Error, GpuMatrix};
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use ndarray_npy::{ReadNpyError, ReadNpyExt};

use crate::common::{gpu_or_cpu, Device};

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op: "normcheck",
        reason: reason.into(),
    }
}

fn mismatch(expected: String, got: String) -> Error {
    Error::ShapeMismatch {
        op: "normcheck",
        expected,
        got,
    }
}

/// Which normalization `normcheck` runs.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Batch,
    Layer,
    Instance,
    Group,
}

/// Batch, layer, instance or group norm forward + backward (training mode) on
/// your own tensors: writes y, dx, dgamma, dbeta, mean and invstd as .npy
/// into DIR, to compare with another framework.
#[derive(clap::Args)]
pub struct NormcheckArgs {
    /// Which normalization.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Number of groups (group norm; must divide C).
    #[arg(long)]
    groups: Option<usize>,
    /// Input x: (N, D) or (N, C, H, W, ...), f32 or f64.
    #[arg(long)]
    x: PathBuf,
    /// Upstream gradient dy, shaped as x.
    #[arg(long)]
    dy: PathBuf,
    /// gamma: C values (layer norm: x.shape[1:]); default ones.
    #[arg(long)]
    gamma: Option<PathBuf>,
    /// beta: as gamma; default zeros.
    #[arg(long)]
    beta: Option<PathBuf>,
    /// Added to the variance before the square root.
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    eps: f64,
    /// Where to compute (gpu: f32 results; cpu: the f64 twin).
    #[arg(long, value_enum, default_value = "gpu")]
    device: Device,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
}

fn norm_kind(kind: Kind, groups: Option<usize>) -> gpuprep::Result<NormKind> {
    match (kind, groups) {
        (Kind::Group, Some(groups)) => Ok(NormKind::Group { groups }),
        (Kind::Group, None) => Err(invalid("--kind group needs --groups G")),
        (_, Some(_)) => Err(invalid("--groups is only for --kind group")),
        (Kind::Batch, None) => Ok(NormKind::Batch),
        (Kind::Layer, None) => Ok(NormKind::Layer),
        (Kind::Instance, None) => Ok(NormKind::Instance),
    }
}

/// Reads an .npy array of any rank, f32 or f64, as f64.
fn read_npy(path: &Path) -> gpuprep::Result<ArrayD<f64>> {
    let open = || {
        File::open(path).map(BufReader::new).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let parse = |e: ReadNpyError| Error::Parse {
        path: path.to_path_buf(),
        line: None,
        reason: format!("not an f32 or f64 array: {e}"),
    };
    match ArrayD::<f32>::read_npy(open()?) {
        Ok(a) => Ok(a.mapv(f64::from)),
        Err(ReadNpyError::WrongDescriptor(_)) => ArrayD::<f64>::read_npy(open()?).map_err(parse),
        Err(e) => Err(parse(e)),
    }
}

/// The six outputs, in the order written.
const OUTPUTS: [&str; 6] = [
    "y.npy",
    "dx.npy",
    "dgamma.npy",
    "dbeta.npy",
    "mean.npy",
    "invstd.npy",
];

fn write_npy<T: ndarray_npy::WritableElement>(
    out: &mut io::OutputSet,
    dir: &Path,
    name: &str,
    a: &ArrayD<T>,
) -> gpuprep::Result<PathBuf> {
    let path = dir.join(name);
    out.write_npy(&path, a)?;
    Ok(path)
}

/// The shape of mean / invstd for `plan`, as the frameworks report them.
fn stats_dims(plan: &NormPlan) -> Vec<usize> {
    let NormShape { n, c, .. } = plan.shape;
    match plan.kind {
        NormKind::Batch => vec![c],
        NormKind::Layer => vec![n],
        NormKind::Instance => vec![n, c],
        NormKind::Group { groups } => vec![n, groups],
    }
}

fn reshape<T>(v: Vec<T>, dims: &[usize]) -> gpuprep::Result<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(dims), v).map_err(|e| invalid(e.to_string()))
}

fn as_vector(path: &Path, a: ArrayD<f64>, len: usize) -> gpuprep::Result<Array1<f64>> {
    if a.len() != len {
        return Err(mismatch(
            format!("{} with {len} elements", path.display()),
            format!("shape {:?}", a.shape()),
        ));
    }
    Ok(Array1::from_iter(a.iter().copied()))
}

/// Reads the tensors, runs forward and backward, writes the six results.
pub fn run(args: NormcheckArgs) -> gpuprep::Result<()> {
    const OP: &str = "normcheck";
    let kind = norm_kind(args.kind, args.groups)?;
    let x = read_npy(&args.x)?;
    let dy = read_npy(&args.dy)?;
    if dy.shape() != x.shape() {
        return Err(mismatch(
            format!("dy shaped as x, {:?}", x.shape()),
            format!("{:?}", dy.shape()),
        ));
    }
    let shape = NormShape::from_dims(OP, x.shape())?;
    let plan = NormPlan::new(OP, kind, shape, true)?;
    let a = plan.affine_len;
    let affine_dims: Vec<usize> = match kind {
        NormKind::Layer => x.shape()[1..].to_vec(),
        _ => vec![shape.c],
    };
    let gamma = match &args.gamma {
        Some(p) => as_vector(p, read_npy(p)?, a)?,
        None => Array1::ones(a),
    };
    let beta = match &args.beta {
        Some(p) => as_vector(p, read_npy(p)?, a)?,
        None => Array1::zeros(a),
    };
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io {
        path: args.out.clone(),
        source,
    })?;
    let outputs: Vec<PathBuf> = OUTPUTS.iter().map(|n| args.out.join(n)).collect();
    let mut inputs = vec![args.x.as_path(), args.dy.as_path()];
    inputs.extend(args.gamma.as_deref());
    inputs.extend(args.beta.as_deref());
    io::check_outputs(
        OP,
        &inputs,
        &outputs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    )?;
    let sdims = stats_dims(&plan);
    let dir = &args.out;
    // The six files appear together or not at all.
    let mut out = io::OutputSet::new();
    let mut written = Vec::new();
    match gpu_or_cpu(args.device) {
        Some(g) => {
            let eps = args.eps as f32;
            let to_matrix = |t: &ArrayD<f64>| {
                Array2::from_shape_vec((shape.n, shape.features()), t.iter().map(|&v| v as f32).collect())
                    .map_err(|e| invalid(e.to_string()))
            };
            let row = |v: &Array1<f64>| v.mapv(|t| t as f32).insert_axis(ndarray::Axis(0));
            let xg = GpuMatrix::upload(&g, to_matrix(&x)?.view())?;
            let dyg = GpuMatrix::upload(&g, to_matrix(&dy)?.view())?;
            let gg = GpuMatrix::upload(&g, row(&gamma).view())?;
            let bg = GpuMatrix::upload(&g, row(&beta).view())?;
            let norm = Norm::new(kind, shape.c).with_eps(eps);
            let fw = norm.forward(&g, &xg, &gg, &bg)?;
            let gr = norm.backward(&g, &xg, &dyg, &gg, &fw.stats)?;
            let st = fw.stats.buffer.download(&g)?;
            let f32s = |m: Array2<f32>| m.iter().copied().collect::<Vec<f32>>();
            let mean: Vec<f32> = st.rows().into_iter().map(|r| r[0] + r[1]).collect();
            let invstd: Vec<f32> = st.column(2).to_vec();
            written.push(write_npy(
                &mut out,
                dir,
                "y.npy",
                &reshape(f32s(fw.y.download(&g)?), x.shape())?,
            )?);
            written.push(write_npy(
                &mut out,
                dir,
                "dx.npy",
                &reshape(f32s(gr.dx.download(&g)?), x.shape())?,
            )?);
            written.push(write_npy(
                &mut out,
                dir,
                "dgamma.npy",
                &reshape(f32s(gr.dgamma.download(&g)?), &affine_dims)?,
            )?);
            written.push(write_npy(
                &mut out,
                dir,
                "dbeta.npy",
                &reshape(f32s(gr.dbeta.download(&g)?), &affine_dims)?,
            )?);
            written.push(write_npy(&mut out, dir, "mean.npy", &reshape(mean, &sdims)?)?);
            written.push(write_npy(&mut out, dir, "invstd.npy", &reshape(invstd, &sdims)?)?);
            eprintln!("normcheck: {} norm on {} (f32)", kind.name(), g.adapter_name());
        }
        None => {
            let fw = norm_forward(kind, x.view(), gamma.view(), beta.view(), args.eps)?;
            let gr = norm_backward(
                kind,
                x.view(),
                dy.view(),
                gamma.view(),
                fw.stats.mean.view(),
                fw.stats.invstd.view(),
            )?;
            written.push(write_npy(&mut out, dir, "y.npy", &fw.y)?);
            written.push(write_npy(&mut out, dir, "dx.npy", &gr.dx)?);
            written.push(write_npy(
                &mut out,
                dir,
                "dgamma.npy",
                &reshape(gr.dgamma.to_vec(), &affine_dims)?,
            )?);
            written.push(write_npy(
                &mut out,
                dir,
                "dbeta.npy",
                &reshape(gr.dbeta.to_vec(), &affine_dims)?,
            )?);
            written.push(write_npy(
                &mut out,
                dir,
                "mean.npy",
                &reshape(fw.stats.mean.to_vec(), &sdims)?,
            )?);
            written.push(write_npy(
                &mut out,
                dir,
                "invstd.npy",
                &reshape(fw.stats.invstd.to_vec(), &sdims)?,
            )?);
            eprintln!("normcheck: {} norm on the CPU (f64 twin)", kind.name());
        }
    }
    out.commit()?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}
