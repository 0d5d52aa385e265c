//! `gpuprep normcheck`: a conformance tool. Runs one normalization forward and
//! backward (training mode) on the user's own tensors and writes every result
//! as .npy, so it can be compared with another framework's:
//! y, dx (shaped as x), dgamma, dbeta (shaped as gamma), mean, invstd
//! (batch: (C,); layer: (N,), or the leading dimensions before
//! `--normalized-shape`; instance: (N, C); group: (N, G)).
//! Batch norm also takes running statistics (`--running-mean`,
//! `--running-var`, `--momentum`, `--convention`) and writes them updated
//! (running_mean.npy, running_var.npy), or, with `--eval`, normalizes with
//! them and writes y alone.
//! `--forward` runs the forward pass alone (training-mode statistics) and
//! writes y, mean and invstd (and a batch norm's updated running statistics).
//! The GPU computes in f32, the CPU (the f64 twin) in f64; either way the
//! files keep x's dtype (f32 or f64), as `fit` and `transform` do. The files
//! of one run appear together or not at all (temporary files, then renames).

use std::path::{Path, PathBuf};

use gpuprep::cpu::norm::{norm_backward, norm_forward};
use gpuprep::model::norm::{check_eps, NormKind, NormPlan, NormShape, NormSummary, RunningStatsConfig};
use gpuprep::ops::{BatchNorm, Norm};
use gpuprep::{io, Error, GpuMatrix};
use ndarray::{Array1, Array2, ArrayD, IxDyn};

use crate::common::{gpu_or_cpu, Device};

const OP: &str = "normcheck";

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op: OP,
        reason: reason.into(),
    }
}

fn mismatch(expected: String, got: String) -> Error {
    Error::ShapeMismatch {
        op: OP,
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
    /// PyTorch's RMSNorm: no centring, no bias; writes y, dx, dweight and invstd.
    Rms,
}

/// How batch norm updates its running statistics.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Convention {
    /// PyTorch: unbiased running variance, running_var starts at 1.
    Pytorch,
    /// The lecture (cs231n): biased running variance, running_var starts at 0.
    Lecture,
}

/// Batch, layer, instance or group norm forward + backward (training mode) on
/// your own tensors: writes y, dx, dgamma, dbeta, mean and invstd as .npy
/// into DIR, to compare with another framework. Batch norm: also the updated
/// running statistics, or eval mode with `--eval`.
#[derive(clap::Args)]
pub struct NormcheckArgs {
    /// Which normalization.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Number of groups (group norm; must divide C).
    #[arg(long)]
    groups: Option<usize>,
    /// Layer or RMS norm over these trailing dimensions of x, as PyTorch's
    /// LayerNorm(normalized_shape) / RMSNorm(normalized_shape), e.g. H,W for
    /// (N, C, H, W); gamma and beta have this shape. Default: all of x.shape[1:].
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    normalized_shape: Option<Vec<usize>>,
    /// Input x: (N, D) or (N, C, H, W, ...), f32 or f64.
    #[arg(long)]
    x: PathBuf,
    /// Upstream gradient dy, shaped as x: required, but for --eval and --forward.
    #[arg(long, required_unless_present_any = ["eval", "forward"])]
    dy: Option<PathBuf>,
    /// The forward pass alone, in training mode: writes y, mean and invstd
    /// (and batch norm's updated running statistics); takes no --dy.
    #[arg(long, conflicts_with = "eval")]
    forward: bool,
    /// gamma (RMS norm: the weight): C values (layer and RMS norm: the
    /// normalized shape); default ones.
    #[arg(long)]
    gamma: Option<PathBuf>,
    /// beta: as gamma; default zeros (RMS norm has none).
    #[arg(long)]
    beta: Option<PathBuf>,
    /// Added to the variance (RMS norm: the mean square) before the square
    /// root, a positive normal f32. Default 1e-5; RMS norm's default is
    /// PyTorch's eps=None: the machine epsilon of x's dtype.
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// Batch norm: the running mean before this step, C values (default zeros).
    #[arg(long)]
    running_mean: Option<PathBuf>,
    /// Batch norm: the running variance before this step, C values (default
    /// ones for --convention pytorch, zeros for lecture).
    #[arg(long)]
    running_var: Option<PathBuf>,
    /// Batch norm: weight of this batch in the running averages,
    /// running = (1 - momentum) * running + momentum * batch (default 0.1).
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f64>,
    /// Batch norm: the running-statistics convention (default pytorch).
    #[arg(long, value_enum)]
    convention: Option<Convention>,
    /// Batch norm: eval mode, normalizing with the running statistics; writes y.npy alone.
    #[arg(long)]
    eval: bool,
    /// Where to compute: the GPU in f32, the CPU (the f64 twin) in f64; the
    /// files keep x's dtype either way.
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
}

impl NormcheckArgs {
    /// The batch-only flags given, by name.
    fn batch_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.running_mean.is_some() {
            v.push("--running-mean");
        }
        if self.running_var.is_some() {
            v.push("--running-var");
        }
        if self.momentum.is_some() {
            v.push("--momentum");
        }
        if self.convention.is_some() {
            v.push("--convention");
        }
        if self.eval {
            v.push("--eval");
        }
        v
    }
}

fn norm_kind(args: &NormcheckArgs, dims: &[usize]) -> gpuprep::Result<NormKind> {
    if args.kind != Kind::Batch {
        if let Some(flag) = args.batch_flags().first() {
            return Err(invalid(format!("{flag} is only for --kind batch")));
        }
    }
    if !matches!(args.kind, Kind::Layer | Kind::Rms) && args.normalized_shape.is_some() {
        return Err(invalid("--normalized-shape is only for --kind layer and rms"));
    }
    if args.kind == Kind::Rms && args.beta.is_some() {
        return Err(invalid(
            "--beta: RMS norm has no bias (PyTorch's RMSNorm has a weight alone)",
        ));
    }
    match (args.kind, args.groups) {
        (Kind::Group, Some(groups)) => Ok(NormKind::Group { groups }),
        (Kind::Group, None) => Err(invalid("--kind group needs --groups G")),
        (_, Some(_)) => Err(invalid("--groups is only for --kind group")),
        (Kind::Batch, None) => Ok(NormKind::Batch),
        (Kind::Layer, None) => match &args.normalized_shape {
            Some(ns) => NormKind::layer(OP, dims, ns),
            None => Ok(NormKind::Layer),
        },
        (Kind::Instance, None) => Ok(NormKind::Instance),
        (Kind::Rms, None) => match &args.normalized_shape {
            Some(ns) => NormKind::rms(OP, dims, ns),
            // Over every dimension but the first (read_inputs checked the
            // shape first; a 0-D x has none, and gives an empty tail here).
            None => NormKind::rms(OP, dims, dims.get(1..).unwrap_or(&[])),
        },
    }
}

/// Reads an .npy array of any rank, f32 or f64, as f64: the header's shape
/// is checked against the file's size and the memory before it is read.
fn read_npy(path: &Path) -> gpuprep::Result<ArrayD<f64>> {
    gpuprep::npy::read_array(path).map(|(a, _)| a)
}

/// Refuses, for the GPU (which computes in f32), a finite value beyond f32's
/// range: it would become infinity, or NaN downstream.
fn check_f32(path: &Path, a: &ArrayD<f64>) -> gpuprep::Result<()> {
    use ndarray::Dimension;
    match a
        .indexed_iter()
        .find(|(_, v)| v.is_finite() && (**v as f32).is_infinite())
    {
        None => Ok(()),
        Some((at, v)) => Err(Error::Parse {
            path: path.to_path_buf(),
            line: None,
            reason: format!(
                "element {:?} = {v:e} is beyond the range of f32 (largest {:e}), in which the GPU computes; \
                 run with --device cpu (f64)",
                at.slice(),
                f32::MAX
            ),
        }),
    }
}

/// Refuses GPU results that are not finite where every input was: f32
/// overflowed on the way (never written as infinity).
fn check_results(res: &Results) -> gpuprep::Result<()> {
    let mut named: Vec<(&str, &[f64])> = vec![("y", res.y.as_slice())];
    if let Some((dx, dg, db, stats)) = &res.train {
        named.extend([
            ("dx", dx.as_slice()),
            ("dgamma", dg.as_slice()),
            ("dbeta", db.as_slice()),
        ]);
        if let (Some(m), Some(i)) = (stats.mean.as_slice(), stats.invstd.as_slice()) {
            named.extend([("mean", m), ("invstd", i)]);
        }
    }
    if let Some((rm, rv)) = &res.running {
        named.extend([("running_mean", rm.as_slice()), ("running_var", rv.as_slice())]);
    }
    for (name, v) in named {
        if let Some(k) = v.iter().position(|t| !t.is_finite()) {
            return Err(Error::Overflow {
                op: OP,
                location: format!("{name} element {k} (flat index)"),
                dtype: "f32",
                hint: "the GPU computes in f32: run with --device cpu (f64)",
            });
        }
    }
    Ok(())
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

/// An optional vector input of `len` values, or `default` everywhere.
fn vector_or(path: &Option<PathBuf>, len: usize, default: f64) -> gpuprep::Result<Array1<f64>> {
    match path {
        Some(p) => as_vector(p, read_npy(p)?, len),
        None => Ok(Array1::from_elem(len, default)),
    }
}

/// dx, dgamma and dbeta (empty in a forward-only run) and the statistics of
/// a training step.
type TrainResults = (Vec<f64>, Vec<f64>, Vec<f64>, NormSummary);

/// What one run computes, on either device, as f64 (GPU values are f32 exactly).
struct Results {
    y: Vec<f64>,
    /// dx, dgamma, dbeta and the statistics (training mode).
    train: Option<TrainResults>,
    /// The updated running mean and variance (batch norm, training).
    running: Option<(Vec<f64>, Vec<f64>)>,
}

/// Batch norm's running mean and variance, and its convention.
type BatchState = (Array1<f64>, Array1<f64>, RunningStatsConfig);

/// The inputs as the run needs them.
struct Inputs {
    kind: NormKind,
    plan: NormPlan,
    x: ArrayD<f64>,
    dy: Option<ArrayD<f64>>,
    gamma: Array1<f64>,
    beta: Array1<f64>,
    /// Batch norm: the layer's running statistics and convention.
    batch: Option<BatchState>,
    eval: bool,
    /// The forward pass alone (no dy, no gradients).
    forward: bool,
    eps: f64,
}

/// The refusal of a training run without dy.
const NEEDS_DY: &str = "training needs --dy (or --forward for the forward pass alone)";

impl Results {
    /// An eval-mode run: y alone.
    fn eval(y: Vec<f64>) -> Results {
        Results {
            y,
            train: None,
            running: None,
        }
    }

    /// A forward-only training run: y and the statistics, no gradients.
    fn forward(y: Vec<f64>, stats: NormSummary) -> Results {
        Results {
            y,
            train: Some((Vec::new(), Vec::new(), Vec::new(), stats)),
            running: None,
        }
    }
}

fn run_cpu(inp: &Inputs) -> gpuprep::Result<Results> {
    if let Some(batch) = &inp.batch {
        return run_cpu_batch(inp, batch);
    }
    let fw = norm_forward(inp.kind, inp.x.view(), inp.gamma.view(), inp.beta.view(), inp.eps)?;
    if inp.forward {
        return Ok(Results::forward(fw.y.iter().copied().collect(), fw.stats));
    }
    let dy = inp.dy.as_ref().ok_or_else(|| invalid(NEEDS_DY))?;
    let gr = norm_backward(
        inp.kind,
        inp.x.view(),
        dy.view(),
        inp.gamma.view(),
        fw.stats.mean.view(),
        fw.stats.invstd.view(),
    )?;
    Ok(Results {
        y: fw.y.iter().copied().collect(),
        train: Some((
            gr.dx.iter().copied().collect(),
            gr.dgamma.to_vec(),
            gr.dbeta.to_vec(),
            fw.stats,
        )),
        running: None,
    })
}

/// Batch norm on the twin, from the given running statistics.
fn run_cpu_batch(inp: &Inputs, (rm, rv, config): &BatchState) -> gpuprep::Result<Results> {
    let mut bn = gpuprep::cpu::batchnorm::BatchNorm::new(inp.plan.shape.c, *config);
    bn.gamma = inp.gamma.clone();
    bn.beta = inp.beta.clone();
    bn.running_mean = rm.clone();
    bn.running_var = rv.clone();
    bn.eps = inp.eps;
    if inp.eval {
        let y = bn.forward_eval(inp.x.view())?;
        return Ok(Results::eval(y.iter().copied().collect()));
    }
    let (y, saved) = bn.forward_train(inp.x.view())?;
    let (dx, dgamma, dbeta) = match &inp.dy {
        Some(dy) if !inp.forward => {
            let (dx, dg, db) = bn.backward(inp.x.view(), dy.view(), &saved)?;
            (dx.iter().copied().collect(), dg.to_vec(), db.to_vec())
        }
        Some(_) => return Err(invalid("--forward takes no --dy")),
        None if inp.forward => (Vec::new(), Vec::new(), Vec::new()),
        None => return Err(invalid(NEEDS_DY)),
    };
    let stats = NormSummary {
        mean: saved.mean,
        var: saved.var,
        invstd: saved.invstd,
    };
    Ok(Results {
        y: y.iter().copied().collect(),
        train: Some((dx, dgamma, dbeta, stats)),
        running: Some((bn.running_mean.to_vec(), bn.running_var.to_vec())),
    })
}

fn f32s(v: &Array1<f64>) -> Array1<f32> {
    v.mapv(|t| t as f32)
}

fn f64s(m: Array2<f32>) -> Vec<f64> {
    m.iter().map(|&v| f64::from(v)).collect()
}

fn run_gpu(g: &gpuprep::Gpu, inp: &Inputs) -> gpuprep::Result<Results> {
    let shape = inp.plan.shape;
    let to_matrix = |t: &ArrayD<f64>| {
        Array2::from_shape_vec((shape.n, shape.features()), t.iter().map(|&v| v as f32).collect())
            .map_err(|e| invalid(e.to_string()))
    };
    let xg = GpuMatrix::upload(g, to_matrix(&inp.x)?.view())?;
    let dyg = match &inp.dy {
        Some(dy) if !inp.eval && !inp.forward => Some(GpuMatrix::upload(g, to_matrix(dy)?.view())?),
        _ => None,
    };
    if let Some(batch) = &inp.batch {
        return run_gpu_batch(g, inp, batch, &xg, dyg.as_ref());
    }
    let row = |v: &Array1<f64>| f32s(v).insert_axis(ndarray::Axis(0));
    let gg = GpuMatrix::upload(g, row(&inp.gamma).view())?;
    let bg = GpuMatrix::upload(g, row(&inp.beta).view())?;
    let norm = Norm::new(inp.kind, shape.c).with_eps(inp.eps as f32);
    let fw = norm.forward(g, &xg, &gg, &bg)?;
    let Some(dyg) = dyg else {
        if inp.forward {
            return Ok(Results::forward(f64s(fw.y.download(g)?), fw.stats.download(g)?));
        }
        return Err(invalid(NEEDS_DY));
    };
    let gr = norm.backward(g, &xg, &dyg, &gg, &fw.stats)?;
    Ok(Results {
        y: f64s(fw.y.download(g)?),
        train: Some((
            f64s(gr.dx.download(g)?),
            f64s(gr.dgamma.download(g)?),
            f64s(gr.dbeta.download(g)?),
            fw.stats.download(g)?,
        )),
        running: None,
    })
}

/// Batch norm on the GPU, from the given running statistics (`dyg`: dy on
/// the device, for a training run's backward).
fn run_gpu_batch(
    g: &gpuprep::Gpu,
    inp: &Inputs,
    (rm, rv, config): &BatchState,
    xg: &GpuMatrix,
    dyg: Option<&GpuMatrix>,
) -> gpuprep::Result<Results> {
    let eps = inp.eps as f32;
    let mut bn = BatchNorm::with_affine(g, f32s(&inp.gamma).view(), f32s(&inp.beta).view(), *config, eps)?;
    bn.set_running(g, f32s(rm).view(), f32s(rv).view())?;
    if inp.eval {
        let y = bn.forward_eval(g, xg)?;
        return Ok(Results::eval(f64s(y.download(g)?)));
    }
    let y = bn.forward_train(g, xg)?;
    let (dx, dgamma, dbeta) = match dyg {
        Some(dyg) => {
            let gr = bn.backward(g, xg, dyg)?;
            (
                f64s(gr.dx.download(g)?),
                f64s(gr.dgamma.download(g)?),
                f64s(gr.dbeta.download(g)?),
            )
        }
        None if inp.forward => (Vec::new(), Vec::new(), Vec::new()),
        None => return Err(invalid(NEEDS_DY)),
    };
    let stats = bn.saved_stats().download(g)?;
    let back = |v: Array1<f32>| v.iter().map(|&t| f64::from(t)).collect::<Vec<f64>>();
    Ok(Results {
        y: f64s(y.download(g)?),
        train: Some((dx, dgamma, dbeta, stats)),
        running: Some((back(bn.running_mean(g)?), back(bn.running_var(g)?))),
    })
}

/// Reads the tensors, runs forward and backward, writes the results.
pub fn run(args: NormcheckArgs) -> gpuprep::Result<()> {
    let (x, dtype) = gpuprep::npy::read_array(&args.x)?;
    let inp = read_inputs(&args, x, dtype)?;
    let names = output_names(&args, &inp);
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io {
        path: args.out.clone(),
        source,
    })?;
    let outputs: Vec<PathBuf> = names.iter().map(|n| args.out.join(n)).collect();
    let mut inputs = vec![args.x.as_path()];
    inputs.extend(optional_inputs(&args).into_iter().flatten().map(PathBuf::as_path));
    io::check_outputs(
        OP,
        &inputs,
        &outputs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    )?;
    let gpu = gpu_or_cpu(args.device);
    let res = match &gpu {
        Some(g) => run_gpu_checked(g, &args, &inp)?,
        None => run_cpu(&inp)?,
    };
    let tensors = result_tensors(&args, &inp, res);
    let written = write_tensors(&args.out, dtype, tensors)?;
    note_run(&inp, dtype, gpu.as_ref());
    for p in written {
        outln!("{}", p.display());
    }
    Ok(())
}

/// The optional input files, in the order dy, gamma, beta, running mean,
/// running variance.
fn optional_inputs(args: &NormcheckArgs) -> [&Option<PathBuf>; 5] {
    [
        &args.dy,
        &args.gamma,
        &args.beta,
        &args.running_mean,
        &args.running_var,
    ]
}

/// The eps of the run: `--eps`, else PyTorch's default for the kind and x's
/// dtype (RMSNorm's eps=None: the machine epsilon of x's dtype), checked.
fn eps(args: &NormcheckArgs, dtype: gpuprep::npy::Dtype) -> gpuprep::Result<f64> {
    let eps = args.eps.unwrap_or(match (args.kind, dtype) {
        (Kind::Rms, gpuprep::npy::Dtype::F32) => f64::from(f32::EPSILON),
        (Kind::Rms, gpuprep::npy::Dtype::F64) => f64::EPSILON,
        _ => 1e-5,
    });
    check_eps(OP, eps)?;
    Ok(eps)
}

/// dy (shaped as x), where the run takes one.
fn read_dy(args: &NormcheckArgs, x: &ArrayD<f64>) -> gpuprep::Result<Option<ArrayD<f64>>> {
    if args.eval && args.dy.is_some() {
        return Err(invalid("--eval runs the forward pass alone: it takes no --dy"));
    }
    if args.forward && args.dy.is_some() {
        return Err(invalid("--forward runs the forward pass alone: it takes no --dy"));
    }
    let Some(p) = &args.dy else {
        return Ok(None);
    };
    let dy = read_npy(p)?;
    if dy.shape() != x.shape() {
        return Err(mismatch(
            format!("dy shaped as x, {:?}", x.shape()),
            format!("{:?}", dy.shape()),
        ));
    }
    Ok(Some(dy))
}

/// Batch norm's running statistics (`c` channels) and convention, from the flags.
fn batch_state(args: &NormcheckArgs, c: usize) -> gpuprep::Result<BatchState> {
    let mut config = match args.convention.unwrap_or(Convention::Pytorch) {
        Convention::Pytorch => RunningStatsConfig::pytorch(),
        Convention::Lecture => RunningStatsConfig::lecture(),
    };
    if let Some(m) = args.momentum {
        if !(m.is_finite() && (0.0..=1.0).contains(&m)) {
            return Err(invalid(format!("--momentum must be in [0, 1], got {m}")));
        }
        config.momentum = Some(m);
    }
    let rm = vector_or(&args.running_mean, c, 0.0)?;
    let rv = vector_or(&args.running_var, c, config.initial_var)?;
    Ok((rm, rv, config))
}

/// Every input read and checked against x and the kind.
fn read_inputs(args: &NormcheckArgs, x: ArrayD<f64>, dtype: gpuprep::npy::Dtype) -> gpuprep::Result<Inputs> {
    let eps = eps(args, dtype)?;
    // The shape first: one error for an input of too few dimensions, whatever
    // the kind (RMS's default normalized_shape is every dimension after 0).
    let shape = NormShape::from_dims(OP, x.shape())?;
    let kind = norm_kind(args, x.shape())?;
    let dy = read_dy(args, &x)?;
    let plan = NormPlan::new(OP, kind, shape, !args.eval)?;
    let gamma = vector_or(&args.gamma, plan.affine_len, 1.0)?;
    let beta = vector_or(&args.beta, plan.affine_len, 0.0)?;
    let batch = if kind == NormKind::Batch {
        Some(batch_state(args, shape.c)?)
    } else {
        None
    };
    Ok(Inputs {
        kind,
        plan,
        x,
        dy,
        gamma,
        beta,
        batch,
        eval: args.eval,
        forward: args.forward,
        eps,
    })
}

/// The files the run writes, in order.
fn output_names(args: &NormcheckArgs, inp: &Inputs) -> Vec<&'static str> {
    let rms = matches!(inp.kind, NormKind::Rms { .. });
    let mut names = vec!["y.npy"];
    if !args.eval {
        match (args.forward, rms) {
            (false, false) => names.extend(["dx.npy", "dgamma.npy", "dbeta.npy"]),
            (false, true) => names.extend(["dx.npy", "dweight.npy"]),
            (true, _) => {}
        }
        if !rms {
            names.push("mean.npy");
        }
        names.push("invstd.npy");
        if inp.batch.is_some() {
            names.extend(["running_mean.npy", "running_var.npy"]);
        }
    }
    names
}

/// Runs on the GPU after checking every input is within f32's range; where
/// every input was finite, refuses results that are not (the GPU never
/// quietly makes a value infinite).
fn run_gpu_checked(g: &gpuprep::Gpu, args: &NormcheckArgs, inp: &Inputs) -> gpuprep::Result<Results> {
    let mut finite = true;
    let mut tensors: Vec<(&Path, ArrayD<f64>)> = vec![(args.x.as_path(), inp.x.clone())];
    if let (Some(p), Some(dy)) = (&args.dy, &inp.dy) {
        tensors.push((p.as_path(), dy.clone()));
    }
    let mut vectors = vec![(&args.gamma, &inp.gamma), (&args.beta, &inp.beta)];
    if let Some((rm, rv, _)) = &inp.batch {
        vectors.extend([(&args.running_mean, rm), (&args.running_var, rv)]);
    }
    for (flag, v) in vectors {
        if let Some(p) = flag {
            tensors.push((p.as_path(), v.clone().into_dyn()));
        }
    }
    for (p, t) in &tensors {
        check_f32(p, t)?;
        finite &= t.iter().all(|v| v.is_finite());
    }
    drop(tensors);
    let res = run_gpu(g, inp)?;
    if finite {
        check_results(&res)?;
    }
    Ok(res)
}

/// One output: file name, values, shape.
type Tensor = (&'static str, Vec<f64>, Vec<usize>);

/// gamma's shape: the normalized shape (layer and RMS norm), else (C,).
fn affine_dims(args: &NormcheckArgs, inp: &Inputs) -> Vec<usize> {
    match (inp.kind, &args.normalized_shape) {
        (NormKind::Layer, _) | (NormKind::Rms { .. }, None) => inp.x.shape()[1..].to_vec(),
        (NormKind::LayerTrailing { .. } | NormKind::Rms { .. }, Some(ns)) => ns.clone(),
        _ => vec![inp.plan.shape.c],
    }
}

/// The results as the files [`output_names`] lists, each with its shape.
fn result_tensors(args: &NormcheckArgs, inp: &Inputs, res: Results) -> Vec<Tensor> {
    let rms = matches!(inp.kind, NormKind::Rms { .. });
    let xdims = inp.x.shape().to_vec();
    let sdims = inp.plan.stats_dims(inp.x.shape());
    let affine = affine_dims(args, inp);
    let c = vec![inp.plan.shape.c];
    let mut tensors = vec![("y.npy", res.y, xdims.clone())];
    if let Some((dx, dgamma, dbeta, stats)) = res.train {
        match (inp.forward, rms) {
            (false, false) => tensors.extend([
                ("dx.npy", dx, xdims),
                ("dgamma.npy", dgamma, affine.clone()),
                ("dbeta.npy", dbeta, affine),
            ]),
            (false, true) => {
                tensors.extend([("dx.npy", dx, xdims), ("dweight.npy", dgamma, affine)]);
                let _ = dbeta;
            }
            (true, _) => {}
        }
        if !rms {
            tensors.push(("mean.npy", stats.mean.to_vec(), sdims.clone()));
        }
        tensors.push(("invstd.npy", stats.invstd.to_vec(), sdims));
    }
    if let Some((rm, rv)) = res.running {
        tensors.extend([("running_mean.npy", rm, c.clone()), ("running_var.npy", rv, c)]);
    }
    tensors
}

/// Writes the files into `dir` together or not at all, in x's dtype;
/// returns their paths.
fn write_tensors(
    dir: &Path,
    dtype: gpuprep::npy::Dtype,
    tensors: Vec<Tensor>,
) -> gpuprep::Result<Vec<PathBuf>> {
    let mut out = io::OutputSet::new();
    let mut written = Vec::new();
    for (name, v, dims) in tensors {
        let path = dir.join(name);
        match dtype {
            gpuprep::npy::Dtype::F32 => {
                out.write_npy(&path, &reshape(v.iter().map(|&t| t as f32).collect(), &dims)?)?
            }
            gpuprep::npy::Dtype::F64 => out.write_npy(&path, &reshape(v, &dims)?)?,
        }
        written.push(path);
    }
    out.commit()?;
    Ok(written)
}

/// The note on stderr: the kind, the mode, where it ran and the files' dtype.
fn note_run(inp: &Inputs, dtype: gpuprep::npy::Dtype, gpu: Option<&gpuprep::Gpu>) {
    let mode = match (inp.eval, inp.forward) {
        (true, _) => "eval",
        (false, true) => "training, forward only",
        (false, false) => "training",
    };
    let written_as = match dtype {
        gpuprep::npy::Dtype::F32 => "f32",
        gpuprep::npy::Dtype::F64 => "f64",
    };
    match gpu {
        Some(g) => noteln!(
            "normcheck: {} norm ({mode}) on {}, computed in f32, written as {written_as} (x's dtype)",
            inp.kind.name(),
            g.adapter_name()
        ),
        None => noteln!(
            "normcheck: {} norm ({mode}) on the CPU, computed in f64, written as {written_as} (x's dtype)",
            inp.kind.name()
        ),
    }
}
