//! `gpuprep demo` (and `gpuprep` with no subcommand): the lecture, step by
//! step, on real data shipped in the binary: the digits (1797 images of 8 x 8)
//! and natural-image patches (32 x 32 x 3) cut from two photographs. Every
//! step runs on the GPU and on its f64 CPU twin; one table gives each step's
//! shape, CPU time, GPU time and the largest relative difference, and six PNG
//! figures show what the steps do (their paths are printed).
//!
//! Without an adapter the notice says so and everything runs on the CPU twins.

mod figures;
mod patches;
mod plot;

use std::path::PathBuf;
use std::time::Instant;

use gpuprep::cpu::init::lecture::{experiment_input, experiment_weight, train as toy_train};
use gpuprep::model::init::{experiment_input_rng, experiment_weight_rng};
use gpuprep::model::train::{train_test_split, EpochReport, MlpConfig, SgdOptions};
use gpuprep::ops::train::{Labeled, Mlp};
use gpuprep::{
    cpu, ops, Activation, BatchNorm, Gpu, GpuMatrix, NComponents, Pca, PcaModel, PcaOptions, Philox,
    RunningStatsConfig, Scheme, StandardizeOptions, Whitening,
};
use ndarray::{s, Array1, Array2, Axis};

use crate::common::{gpu_or_cpu, Device};
use crate::data;

type Result<T> = gpuprep::Result<T>;

/// Per (activation, init name): each layer's activations.
pub type Activations = Vec<(Activation, &'static str, Vec<Vec<f32>>)>;
/// Per run: (init name, batch norm, each epoch's report).
pub type Curves = Vec<(&'static str, bool, Vec<EpochReport>)>;
/// Per start: (name, the first layer's weight).
pub type FirstLayers = Vec<(String, Array2<f64>)>;
/// Per start of the lecture's toy network: (name, W1, W2) after training.
pub type Toy = Vec<(&'static str, Array2<f64>, Array2<f64>)>;

/// The main job (also what `gpuprep` alone runs): the lecture's steps on the
/// digits and on natural-image patches, GPU against the f64 CPU twin, as one
/// table and six PNG figures.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the figures go (created if missing).
    #[arg(long, default_value = "gpuprep-demo")]
    out: PathBuf,
    /// Small sizes (16 x 16 patches, fewer of them, 3 epochs): a check in seconds.
    #[arg(long)]
    quick: bool,
    /// Patch side in pixels (default 32: 3072 values per patch, the lecture's CIFAR shape).
    #[arg(long)]
    patch: Option<u32>,
    /// Pixels between patches (sets N; default 32: 520 patches).
    #[arg(long)]
    stride: Option<u32>,
    /// Training epochs of each MLP (default 5).
    #[arg(long)]
    epochs: Option<usize>,
    /// Where to compute (the CPU twins always run, for the comparison).
    #[arg(long, value_enum, default_value = "gpu")]
    device: Device,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            out: PathBuf::from("gpuprep-demo"),
            quick: false,
            patch: None,
            stride: None,
            epochs: None,
            device: Device::Gpu,
        }
    }
}

/// The sizes of one run.
struct Sizes {
    patch: u32,
    stride: u32,
    epochs: usize,
    /// Rows of patches ZCA-whitened (the product is N x D x D).
    zca_rows: usize,
    act_layers: usize,
    act_units: usize,
    act_batch: usize,
}

impl Sizes {
    fn from(a: &DemoArgs) -> Sizes {
        let quick = a.quick;
        Sizes {
            patch: a.patch.unwrap_or(if quick { 16 } else { 32 }).clamp(2, 256),
            stride: a.stride.unwrap_or(if quick { 40 } else { 32 }).max(1),
            epochs: a.epochs.unwrap_or(if quick { 3 } else { 5 }).max(1),
            zca_rows: if quick { 64 } else { 128 },
            act_layers: 10,
            act_units: if quick { 64 } else { 256 },
            act_batch: if quick { 128 } else { 500 },
        }
    }
}

/// One line of the table.
struct Row {
    step: String,
    shape: String,
    cpu_ms: Option<f64>,
    gpu_ms: Option<f64>,
    diff: Option<f64>,
}

struct Table(Vec<Row>);

impl Table {
    fn add(
        &mut self,
        step: &str,
        shape: String,
        cpu_ms: Option<f64>,
        gpu_ms: Option<f64>,
        diff: Option<f64>,
    ) {
        noteln!("  done: {step}");
        self.0.push(Row {
            step: step.to_string(),
            shape,
            cpu_ms,
            gpu_ms,
            diff,
        });
    }

    /// Adds one step's row: the twin timed, then (given `gpu`) the GPU
    /// step, which gives its milliseconds and its rel diff from the twin's
    /// result. Returns the twin's result.
    fn compare<G, T>(
        &mut self,
        step: &str,
        shape: String,
        gpu: Option<G>,
        twin: impl FnOnce() -> Result<T>,
        on_gpu: impl FnOnce(G, &T) -> Result<(f64, f64)>,
    ) -> Result<T> {
        let (want, cpu_ms) = cpu_timed(twin)?;
        let (gpu_ms, diff) = match gpu {
            Some(g) => {
                let (t, d) = on_gpu(g, &want)?;
                (Some(t), Some(d))
            }
            None => (None, None),
        };
        self.add(step, shape, Some(cpu_ms), gpu_ms, diff);
        Ok(want)
    }

    fn print(&self) {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        outln!(
            "\n{:<44} {:>16} {:>11} {:>11} {:>10}",
            "step",
            "shape",
            "CPU ms",
            "GPU ms",
            "rel diff"
        );
        outln!("{}", "-".repeat(96));
        for r in &self.0 {
            outln!(
                "{:<44} {:>16} {:>11} {:>11} {:>10}",
                r.step,
                r.shape,
                ms(r.cpu_ms),
                ms(r.gpu_ms),
                r.diff.map_or("-".to_string(), |d| format!("{d:.1e}"))
            );
        }
        outln!(
            "CPU: the f64 twin; GPU: f32 on the adapter, wall clock after a warm-up, until the \
             result is on the device (the\nfit rows include reading back the covariance). rel diff: \
             max |GPU - CPU| / max |CPU| over the output."
        );
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// max |a - b| / max |b|.
fn rel_diff<'a>(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = &'a f64> + Clone) -> f64 {
    let scale = b.clone().into_iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = a
        .into_iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f64::max);
    worst / scale.max(f64::MIN_POSITIVE)
}

fn f64s(m: &Array2<f32>) -> Array2<f64> {
    m.mapv(f64::from)
}

/// Times `f` on the GPU: once to warm up (pipelines), once measured, each
/// waited for.
fn gpu_timed<T>(g: &Gpu, mut f: impl FnMut() -> Result<T>) -> Result<(T, f64)> {
    let _ = f()?;
    g.wait()?;
    let t = Instant::now();
    let out = f()?;
    g.wait()?;
    Ok((out, ms_since(t)))
}

fn cpu_timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let out = f()?;
    Ok((out, ms_since(t)))
}

/// A model keeping the first `k` components of `full`, with `whitening`.
fn truncated(full: &PcaModel, k: usize, whitening: Whitening, eps: f64) -> PcaModel {
    let k = k.min(full.components.ncols());
    PcaModel {
        components: full.components.slice(s![.., ..k]).to_owned(),
        explained_variance: full.explained_variance.slice(s![..k]).to_owned(),
        explained_variance_ratio: full.explained_variance_ratio.slice(s![..k]).to_owned(),
        whitening,
        eps,
        ..full.clone()
    }
}

/// A PCA transform of `x` by `model`: on the GPU (with its time) or the twin.
fn transform(
    gpu: Option<&Gpu>,
    model: &PcaModel,
    x: &Array2<f32>,
    inverse: bool,
) -> Result<(Array2<f64>, Option<f64>)> {
    match gpu {
        Some(g) => {
            let pca = Pca::from_model(g, model.clone())?;
            let xg = GpuMatrix::upload(g, x.view())?;
            let run = |x: &GpuMatrix| {
                let y = pca.transform(g, x)?;
                if inverse {
                    pca.inverse_transform(g, &y)
                } else {
                    Ok(y)
                }
            };
            // Warm up (pipelines) on a few rows, then time the whole.
            run(&xg.row_range(0..xg.rows().min(8))?)?;
            g.wait()?;
            let t = Instant::now();
            let y = run(&xg)?;
            g.wait()?;
            let t = ms_since(t);
            Ok((f64s(&y.download(g)?), Some(t)))
        }
        None => {
            let y = cpu::pca::transform(model, x.view())?;
            let y = if inverse {
                cpu::pca::inverse_transform(model, y.view())?
            } else {
                y
            };
            Ok((y, None))
        }
    }
}

/// What the figures need, gathered as the steps run.
pub struct Results {
    pub cloud: [Array2<f64>; 5],
    pub digit_model: PcaModel,
    pub patch_model: PcaModel,
    pub patch: u32,
    pub shown_patches: Array2<f64>,
    pub reconstructions: Vec<(usize, Array2<f64>)>,
    pub zca: Array2<f64>,
    pub zca_components: usize,
    /// (activation, scheme name, per layer the activations).
    pub activations: Activations,
    /// The lecture's toy network after training: (name, W1, W2).
    pub toy: Toy,
    /// The digits MLP's first-layer units after training: (name, W1).
    pub first_layers: FirstLayers,
    /// Per run: (init name, batch norm, per epoch report).
    pub curves: Curves,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let wall = Instant::now();
    let sizes = Sizes::from(&args);
    let gpu = gpu_or_cpu(args.device);
    let g = gpu.as_ref();
    announce_device(g, args.device);
    std::fs::create_dir_all(&args.out).map_err(|source| gpuprep::Error::Io {
        path: args.out.clone(),
        source,
    })?;
    let mut table = Table(Vec::new());
    let (x, labels) = data::digits()?;
    let digit_model = digit_steps(g, &x, &labels, &mut table)?;

    // The 2-D cloud: two neighbouring pixels of the photographs.
    let photos = patches::photos()?;
    let pairs = patches::neighbour_pairs(&photos, 9);
    let cloud = cloud_steps(g, &pairs)?;
    let patch = patch_steps(g, &photos, &sizes, &mut table)?;

    // Weight initialization and the activation experiment.
    init_row(g, &mut table)?;
    let activations = activation_experiment(g, &sizes, &mut table)?;
    batchnorm_row(g, &mut table)?;
    let toy = toy_runs()?;
    let (curves, first_layers) = mlp_runs(g, &x, &labels, &sizes, &mut table)?;

    table.print();
    let results = Results {
        cloud,
        digit_model,
        patch_model: patch.model,
        patch: sizes.patch,
        shown_patches: f64s(&patch.shown),
        reconstructions: patch.reconstructions,
        zca: patch.zca,
        zca_components: patch.zca_components,
        activations,
        toy,
        first_layers,
        curves,
    };
    outln!("\nfigures:");
    for path in figures::all(&args.out, &results)? {
        outln!("  {}", path.display());
    }
    outln!("demo wall time {:.1} s", wall.elapsed().as_secs_f64());
    Ok(())
}

/// The first line: the adapter, or why every step runs on the twin.
fn announce_device(g: Option<&Gpu>, device: Device) {
    match g {
        Some(g) => {
            let i = g.adapter_info();
            outln!("adapter: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
        }
        None if device == Device::Cpu => {
            outln!("--device cpu: every step runs on the f64 CPU twin only (the GPU column stays empty)")
        }
        None => {
            outln!("no GPU adapter: every step runs on the f64 CPU twin only (the GPU column stays empty)")
        }
    }
}

/// The digits: column statistics, standardize and the PCA fit, GPU against
/// the twin, then the PCA steps as text; returns the twin's PCA model.
fn digit_steps(g: Option<&Gpu>, x: &Array2<f32>, labels: &Array1<u8>, table: &mut Table) -> Result<PcaModel> {
    outln!(
        "gpuprep demo: the digits data ({} images of 8x8 pixels, {} classes; UCI, CC BY 4.0)",
        x.nrows(),
        labels.iter().collect::<std::collections::BTreeSet<_>>().len()
    );
    let summary = table.compare(
        "column statistics (mean, var, min, max)",
        "1797 x 64".into(),
        g,
        || cpu::column_stats(x.view(), 0),
        |g, summary| {
            let xg = GpuMatrix::upload(g, x.view())?;
            let (st, t) = gpu_timed(g, || ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0)))?;
            let got = st.download(g)?;
            let d = rel_diff(
                got.mean.iter().chain(got.var.iter()).copied(),
                summary.mean.iter().chain(summary.var.iter()),
            );
            Ok((t, d))
        },
    )?;
    let constant = summary.std.iter().filter(|&&s| s == 0.0).count();
    outln!("{constant} pixels are constant (std 0): standardize scales them by 1, not inf");

    let opts = StandardizeOptions::default();
    table.compare(
        "standardize (x - mean) / std",
        "1797 x 64".into(),
        g,
        || cpu::standardize(x.view(), &summary, opts),
        |g, z_cpu| {
            let xg = GpuMatrix::upload(g, x.view())?;
            let st = ops::column_stats(g, &xg, &Default::default())?;
            let (z, t) = gpu_timed(g, || ops::standardize(g, &xg, &st, &opts))?;
            Ok((t, rel_diff(f64s(&z.download(g)?), z_cpu)))
        },
    )?;
    let digit_model = table.compare(
        "PCA fit: covariance, eigh (eigenvalues)",
        "1797 x 64".into(),
        g,
        || cpu::pca::fit(x.view(), &PcaOptions::default()),
        |g, model| {
            let xg = GpuMatrix::upload(g, x.view())?;
            let (pca, t) = gpu_timed(g, || Pca::fit(g, &xg, &PcaOptions::default()))?;
            Ok((
                t,
                rel_diff(pca.model().eigenvalues.iter().copied(), &model.eigenvalues),
            ))
        },
    )?;
    demo_pca_text(g, x, &digit_model, table)?;
    Ok(digit_model)
}

/// The patches, and the eight of them the figures show.
struct PatchData {
    x: Array2<f32>,
    shown: Vec<usize>,
    shown_x: Array2<f32>,
}

/// What the patch steps give the figures.
struct PatchSteps {
    model: PcaModel,
    shown: Array2<f32>,
    reconstructions: Vec<(usize, Array2<f64>)>,
    zca: Array2<f64>,
    zca_components: usize,
}

/// Natural-image patches: statistics, covariance and its eigendecomposition,
/// then reduction and reconstruction, and ZCA whitening.
fn patch_steps(
    g: Option<&Gpu>,
    photos: &[(&str, image::RgbImage)],
    sizes: &Sizes,
    table: &mut Table,
) -> Result<PatchSteps> {
    let xp = patches::patches(photos, sizes.patch, sizes.stride);
    let (n, d) = xp.dim();
    outln!(
        "image patches: {n} patches of {0}x{0}x3 = {d} values at stride {1} from data/china.jpg and \
         data/flower.jpg (CC BY 2.0)",
        sizes.patch,
        sizes.stride
    );
    let model = patch_model(g, &xp, table)?;
    let shown: Vec<usize> = (0..8)
        .map(|i| (i * n / 8 + n / 16).min(n.saturating_sub(1)))
        .collect();
    let shown_x = xp.select(Axis(0), &shown);
    let data = PatchData {
        x: xp,
        shown,
        shown_x,
    };
    let reconstructions = reconstruction_rows(g, &data, &model, table)?;
    let (zca, zca_components) = zca_row(g, &data, &model, sizes.zca_rows, table)?;
    Ok(PatchSteps {
        model,
        shown: data.shown_x,
        reconstructions,
        zca,
        zca_components,
    })
}

/// The patches' statistics and covariance, GPU against twin, and one
/// eigendecomposition (f64, on the CPU in both paths: the GPU's Pca reads its
/// covariance back for it) that the transforms share.
fn patch_model(g: Option<&Gpu>, xp: &Array2<f32>, table: &mut Table) -> Result<PcaModel> {
    let (n, d) = xp.dim();
    let shape = format!("{n} x {d}");
    let xpg = g.map(|g| GpuMatrix::upload(g, xp.view())).transpose()?;
    let on_gpu = g.zip(xpg.as_ref());
    let psum = table.compare(
        "column statistics of the patches",
        shape.clone(),
        on_gpu,
        || cpu::column_stats(xp.view(), 0),
        |(g, xg), psum| {
            let (st, t) = gpu_timed(g, || ops::column_stats(g, xg, &Default::default()))?;
            let got = st.download(g)?;
            Ok((t, rel_diff(got.var.iter().copied(), &psum.var)))
        },
    )?;
    let cov = table.compare(
        "covariance Xc^T Xc / N",
        shape,
        on_gpu,
        || cpu::covariance(xp.view(), 0),
        |(g, xg), cov| {
            let warm = xg.row_range(0..n.min(64))?;
            ops::covariance(g, &warm, &Default::default())?;
            g.wait()?;
            let t = Instant::now();
            let c = ops::covariance(g, xg, &Default::default())?;
            g.wait()?;
            let t = ms_since(t);
            Ok((t, rel_diff(f64s(&c.download(g)?), cov)))
        },
    )?;
    let (model, cpu_ms) =
        cpu_timed(|| PcaModel::from_covariance(psum.mean.clone(), cov.view(), n, &PcaOptions::default()))?;
    table.add(
        "eigh of the covariance (faer, f64, CPU)",
        format!("{d} x {d}"),
        Some(cpu_ms),
        None,
        None,
    );
    Ok(model)
}

/// The patches reduced to 8, 32 and 128 components and reconstructed (the
/// row: 32, against the twin); returns the shown patches' reconstructions.
fn reconstruction_rows(
    g: Option<&Gpu>,
    data: &PatchData,
    full: &PcaModel,
    table: &mut Table,
) -> Result<Vec<(usize, Array2<f64>)>> {
    let xp = &data.x;
    let mut reconstructions = Vec::new();
    for k in [8usize, 32, 128] {
        let model = truncated(full, k, Whitening::None, 0.0);
        let (y, gpu_ms) = transform(g, &model, xp, true)?;
        if k == 32 {
            let (want, cpu_ms) = cpu_timed(|| {
                let r = cpu::pca::transform(&model, xp.view())?;
                cpu::pca::inverse_transform(&model, r.view())
            })?;
            let diff = gpu_ms.map(|_| rel_diff(y.iter().copied(), &want));
            table.add(
                "reduce to 32 components and reconstruct",
                format!("{} x {}", xp.nrows(), xp.ncols()),
                Some(cpu_ms),
                gpu_ms,
                diff,
            );
        }
        reconstructions.push((k, y.select(Axis(0), &data.shown)));
    }
    Ok(reconstructions)
}

/// ZCA of the first `rows` patches on the components that hold 99% of the
/// variance: U_k diag(1/sqrt(S_k + eps)) U_k^T costs D^2 k to build instead of
/// D^3 (and drops the noise the rest would amplify). Returns the shown
/// patches whitened, and k.
fn zca_row(
    g: Option<&Gpu>,
    data: &PatchData,
    full: &PcaModel,
    rows: usize,
    table: &mut Table,
) -> Result<(Array2<f64>, usize)> {
    let zca_eps = 1e-3;
    let k99 = gpuprep::model::pca::select_components(full.eigenvalues.view(), NComponents::Fraction(0.99))?;
    let zca_model = truncated(full, k99, Whitening::Zca, zca_eps);
    let rows = rows.min(data.x.nrows());
    let xz = data.x.slice(s![..rows, ..]).to_owned();
    let (zca_cpu, cpu_ms) = cpu_timed(|| cpu::pca::transform(&zca_model, xz.view()))?;
    let (zca, gpu_ms) = transform(g, &zca_model, &xz, false)?;
    let diff = gpu_ms.map(|_| rel_diff(zca.iter().copied(), &zca_cpu));
    table.add(
        &format!("ZCA whitening ({k99} components, eps {zca_eps:.0e})"),
        format!("{rows} x {}", data.x.ncols()),
        Some(cpu_ms),
        gpu_ms,
        diff,
    );
    Ok((transform(g, &zca_model, &data.shown_x, false)?.0, k99))
}

/// An array of two dimensions, as a `demo` error otherwise.
fn to_2d<A>(a: ndarray::ArrayD<A>) -> Result<Array2<A>> {
    a.into_dimensionality()
        .map_err(|e| gpuprep::Error::InvalidArgument {
            op: "demo",
            reason: e.to_string(),
        })
}

/// The symmetry experiment: the lecture's toy network (in f64) trained from
/// a constant start and from a random one; (name, W1, W2) each.
fn toy_runs() -> Result<Toy> {
    let (tx, tt) = (
        gpuprep::cpu::init::lecture::toy_input(),
        gpuprep::cpu::init::lecture::toy_target(),
    );
    let c1 = Array2::from_elem((3, 4), 0.01);
    let c2 = Array2::from_elem((4, 2), 0.09);
    let r1 = to_2d(cpu::init::init(
        &[3, 4],
        &Scheme::SmallRandom,
        Philox::with_stream(231, 0),
    )?)?;
    let r2 = to_2d(cpu::init::init(
        &[4, 2],
        &Scheme::SmallRandom,
        Philox::with_stream(231, 1),
    )?)?;
    let (a1, a2, _) = toy_train(&tx, &tt, c1, c2, 0.5, 1000)?;
    let (b1, b2, _) = toy_train(&tx, &tt, r1, r2, 0.5, 1000)?;
    Ok(vec![
        ("constant start (W1 = 0.01, W2 = 0.09)", a1, a2),
        ("0.01 * randn start", b1, b2),
    ])
}

/// The lecture's PCA steps on the digits as text: the spectrum, how many
/// components keep 90 / 95 / 99 % of the variance, and PCA and ZCA whitening
/// checked by the covariance of the result (the identity on the kept
/// components), with a table row for each whitening.
fn demo_pca_text(gpu: Option<&Gpu>, x: &Array2<f32>, full: &PcaModel, table: &mut Table) -> Result<()> {
    let top: Vec<String> = full
        .explained_variance_ratio
        .iter()
        .take(8)
        .map(|r| format!("{r:.3}"))
        .collect();
    outln!(
        "PCA of the digits: explained variance ratio of the first 8 components: {}",
        top.join(" ")
    );
    let mut line = String::from("  components needed:");
    for f in [0.90, 0.95, 0.99] {
        let k = gpuprep::model::pca::select_components(full.eigenvalues.view(), NComponents::Fraction(f))?;
        line += &format!("  {:.0}% -> {k}", f * 100.0);
    }
    outln!("{line} (of {})", x.ncols());
    for (name, whitening) in [("PCA", Whitening::Pca), ("ZCA", Whitening::Zca)] {
        let opts = PcaOptions {
            n_components: NComponents::Fraction(0.99),
            whitening,
            ..Default::default()
        };
        let twin = cpu::pca::fit(x.view(), &opts)?;
        let (y_twin, cpu_ms) = cpu_timed(|| cpu::pca::transform(&twin, x.view()))?;
        let (y, where_, gpu_ms) = match gpu {
            Some(g) => {
                let xg = GpuMatrix::upload(g, x.view())?;
                let pca = Pca::fit(g, &xg, &opts)?;
                let (y, t) = gpu_timed(g, || pca.transform(g, &xg))?;
                (f64s(&y.download(g)?), "GPU", Some(t))
            }
            None => (y_twin.clone(), "CPU twin", None),
        };
        let check = cpu::pca::fit(y.view(), &PcaOptions::default())?;
        let k = twin.n_components();
        let worst = check
            .eigenvalues
            .iter()
            .take(k)
            .map(|v| (v - 1.0).abs())
            .fold(0.0, f64::max);
        outln!(
            "  {name} whitening ({where_}): {} x {}; the top {k} eigenvalues of its covariance are 1 within {worst:.1e}",
            y.nrows(),
            y.ncols()
        );
        let diff = gpu_ms.map(|_| rel_diff(y.iter().copied(), &y_twin));
        table.add(
            &format!("{name} whitening, 99% of the variance"),
            format!("1797 x 64 -> {}", y.ncols()),
            Some(cpu_ms),
            gpu_ms,
            diff,
        );
    }
    Ok(())
}

/// The lecture's sequence on a 2-D cloud: original, zero-centred,
/// normalized, decorrelated, whitened (GPU when there is one).
fn cloud_steps(gpu: Option<&Gpu>, pairs: &Array2<f32>) -> Result<[Array2<f64>; 5]> {
    let centre = StandardizeOptions {
        center: true,
        scale: false,
    };
    let decor = PcaOptions::default();
    let white = PcaOptions {
        whitening: Whitening::Pca,
        ..Default::default()
    };
    Ok(match gpu {
        Some(g) => {
            let xg = GpuMatrix::upload(g, pairs.view())?;
            let st = ops::column_stats(g, &xg, &Default::default())?;
            let c = ops::standardize(g, &xg, &st, &centre)?;
            let z = ops::standardize(g, &xg, &st, &StandardizeOptions::default())?;
            let r = Pca::fit(g, &xg, &decor)?.transform(g, &xg)?;
            let w = Pca::fit(g, &xg, &white)?.transform(g, &xg)?;
            [
                f64s(pairs),
                f64s(&c.download(g)?),
                f64s(&z.download(g)?),
                f64s(&r.download(g)?),
                f64s(&w.download(g)?),
            ]
        }
        None => {
            let s = cpu::column_stats(pairs.view(), 0)?;
            [
                f64s(pairs),
                cpu::standardize(pairs.view(), &s, centre)?,
                cpu::standardize(pairs.view(), &s, StandardizeOptions::default())?,
                cpu::pca::transform(&cpu::pca::fit(pairs.view(), &decor)?, pairs.view())?,
                cpu::pca::transform(&cpu::pca::fit(pairs.view(), &white)?, pairs.view())?,
            ]
        }
    })
}

fn init_row(gpu: Option<&Gpu>, table: &mut Table) -> Result<()> {
    let shape = [512usize, 512];
    let scheme = Scheme::kaiming_normal();
    table.compare(
        "He init (Philox, the same stream)",
        "512 x 512".into(),
        gpu,
        || cpu::init::init(&shape, &scheme, Philox::new(7)),
        |g, w_cpu| {
            let (w, t) = gpu_timed(g, || ops::init::init(g, &shape, &scheme, Philox::new(7)))?;
            Ok((t, rel_diff(f64s(&w.download(g)?), w_cpu.iter())))
        },
    )?;
    Ok(())
}

/// The seed of the activation experiment's input and weights.
const ACTIVATION_SEED: u64 = 231;

/// The lecture's deep network: each layer's activations for tanh and ReLU
/// under the three initializations (GPU: one fused product per layer).
/// The table row: tanh under randn / sqrt(n), against the twin.
fn activation_experiment(gpu: Option<&Gpu>, sizes: &Sizes, table: &mut Table) -> Result<Activations> {
    let (layers, units, batch) = (sizes.act_layers, sizes.act_units, sizes.act_batch);
    let schemes = [
        ("0.01 * randn", Scheme::SmallRandom),
        ("randn / sqrt(n)", Scheme::Calibrated),
        ("He: randn * sqrt(2/n)", Scheme::kaiming_normal()),
    ];
    let mut out = Vec::new();
    for act in [Activation::Tanh, Activation::Relu] {
        for (name, scheme) in &schemes {
            let row = act == Activation::Tanh && matches!(scheme, Scheme::Calibrated);
            let t = Instant::now();
            let twin = if gpu.is_none() || row {
                twin_activations(scheme, act, sizes)?
            } else {
                Vec::new()
            };
            let cpu_ms = ms_since(t);
            let (gpu_ms, diff, acts): (_, _, Vec<Vec<f32>>) = match gpu {
                Some(g) => {
                    let (hs, gpu_ms) = gpu_timed(g, || gpu_activations(g, scheme, act, sizes))?;
                    let hs: Vec<Array2<f32>> = hs.iter().map(|h| h.download(g)).collect::<Result<_>>()?;
                    let diff = row.then(|| {
                        hs.iter()
                            .zip(&twin)
                            .map(|(a, b)| rel_diff(f64s(a), b))
                            .fold(0.0, f64::max)
                    });
                    let acts = hs.into_iter().map(|h| h.into_raw_vec_and_offset().0).collect();
                    (Some(gpu_ms), diff, acts)
                }
                None => {
                    let acts = twin
                        .iter()
                        .map(|h| h.iter().map(|&v| v as f32).collect())
                        .collect();
                    (None, None, acts)
                }
            };
            if row {
                table.add(
                    &format!("{layers}-layer tanh network, randn / sqrt(n)"),
                    format!("{batch} x {units}"),
                    Some(cpu_ms),
                    gpu_ms,
                    diff,
                );
            }
            out.push((act, *name, acts));
        }
    }
    Ok(out)
}

/// Each layer's activations of the deep network on the twin (f64).
fn twin_activations(scheme: &Scheme, act: Activation, sizes: &Sizes) -> Result<Vec<Array2<f64>>> {
    let (units, seed) = (sizes.act_units, ACTIVATION_SEED);
    let opts = cpu::MatmulOptions {
        transpose_w: true,
        activation: act,
        ..Default::default()
    };
    let mut h = experiment_input(sizes.act_batch, units, seed)?;
    let mut out = Vec::new();
    for l in 0..sizes.act_layers {
        let w = experiment_weight(scheme, units, l, seed)?;
        h = cpu::matmul(h.view(), w.view(), &opts)?;
        out.push(h.clone());
    }
    Ok(out)
}

/// Each layer's activations of the deep network on the GPU: the input, every
/// weight and every product recorded in one encoder, one submit.
fn gpu_activations(g: &Gpu, scheme: &Scheme, act: Activation, sizes: &Sizes) -> Result<Vec<GpuMatrix>> {
    let (units, batch, seed) = (sizes.act_units, sizes.act_batch, ACTIVATION_SEED);
    let mut e = g.encoder("demo activations");
    let h0 = GpuMatrix::uninit(g, batch, units)?;
    ops::init::encode_fill_into(
        g,
        &mut e,
        &gpuprep::model::init::Fill::Normal { mean: 0.0, std: 1.0 },
        experiment_input_rng(seed),
        &h0,
        &Default::default(),
    )?;
    let o = ops::MatmulOptions {
        transpose_w: true,
        activation: act,
        ..Default::default()
    };
    let mut hs: Vec<GpuMatrix> = Vec::new();
    for l in 0..sizes.act_layers {
        let w = GpuMatrix::uninit(g, units, units)?;
        ops::init::encode_init_into(
            g,
            &mut e,
            &[units, units],
            scheme,
            experiment_weight_rng(seed, l),
            &w,
        )?;
        let next = GpuMatrix::uninit(g, batch, units)?;
        ops::encode_matmul_into(g, &mut e, hs.last().unwrap_or(&h0), &w, &next, &o)?;
        hs.push(next);
    }
    g.submit("demo activations", e)?;
    Ok(hs)
}

fn batchnorm_row(gpu: Option<&Gpu>, table: &mut Table) -> Result<()> {
    let (n, c) = (1024usize, 128usize);
    let x = cpu::init::init(&[n, c], &Scheme::Normal { mean: 3.0, std: 2.0 }, Philox::new(11))?;
    let dy = cpu::init::init(&[n, c], &Scheme::Normal { mean: 0.0, std: 1.0 }, Philox::new(12))?;
    let x2 = to_2d(x.mapv(|v| v as f32))?;
    let dy2 = to_2d(dy.mapv(|v| v as f32))?;
    table.compare(
        "batch norm forward + backward (dx)",
        format!("{n} x {c}"),
        gpu,
        || {
            let mut bn = gpuprep::cpu::batchnorm::BatchNorm::new(c, RunningStatsConfig::pytorch());
            let (_, saved) = bn.forward_train(x.view())?;
            bn.backward(x.view(), dy.view(), &saved)
        },
        |g, (dx_cpu, _, _)| {
            let (xg, dyg) = (
                GpuMatrix::upload(g, x2.view())?,
                GpuMatrix::upload(g, dy2.view())?,
            );
            let mut bn = BatchNorm::new(g, c, RunningStatsConfig::pytorch(), 1e-5)?;
            let (grads, t) = gpu_timed(g, || {
                bn.forward_train(g, &xg)?;
                bn.backward(g, &xg, &dyg)
            })?;
            Ok((t, rel_diff(f64s(&grads.dx.download(g)?), dx_cpu.iter())))
        },
    )?;
    Ok(())
}

/// The digits split 80/20 and standardized by the training rows' statistics,
/// on the host (f64) and, given a device, uploaded.
struct DigitSplit {
    xtr: Array2<f64>,
    ytr: Array1<f64>,
    xte: Array2<f64>,
    yte: Array1<f64>,
    /// (train, test) on the device.
    gpu: Option<(Labeled, Labeled)>,
}

impl DigitSplit {
    fn new(gpu: Option<&Gpu>, x: &Array2<f32>, labels: &Array1<u8>) -> Result<DigitSplit> {
        let (train_rows, test_rows) = train_test_split(x.nrows(), 0.2, 0);
        let stats = cpu::column_stats(x.select(Axis(0), &train_rows).view(), 0)?;
        let z = cpu::standardize(x.view(), &stats, StandardizeOptions::default())?;
        let pick = |rows: &[usize]| {
            (
                z.select(Axis(0), rows),
                rows.iter().map(|&r| u32::from(labels[r])).collect::<Vec<u32>>(),
            )
        };
        let (xtr, ytr) = pick(&train_rows);
        let (xte, yte) = pick(&test_rows);
        let gpu = match gpu {
            Some(g) => Some((
                Labeled::upload(g, xtr.mapv(|v| v as f32).view(), &ytr, 10)?,
                Labeled::upload(g, xte.mapv(|v| v as f32).view(), &yte, 10)?,
            )),
            None => None,
        };
        Ok(DigitSplit {
            ytr: ytr.iter().map(|&v| f64::from(v)).collect(),
            yte: yte.iter().map(|&v| f64::from(v)).collect(),
            xtr,
            xte,
            gpu,
        })
    }
}

/// The digits MLP (64-128-64-10, batch 128, SGD momentum 0.9) under `scheme`.
fn mlp_config(scheme: Scheme, batch_norm: bool) -> MlpConfig {
    MlpConfig {
        widths: vec![64, 128, 64, 10],
        batch_norm,
        scheme,
        seed: 1,
        batch: 128,
        sgd: SgdOptions {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
        },
        eps: 1e-5,
    }
}

/// The MLP on the digits: one step GPU against twin, then the training
/// curves of three inits with and without batch norm, and a run from a
/// constant init for the symmetry figure.
fn mlp_runs(
    gpu: Option<&Gpu>,
    x: &Array2<f32>,
    labels: &Array1<u8>,
    sizes: &Sizes,
    table: &mut Table,
) -> Result<(Curves, FirstLayers)> {
    let split = DigitSplit::new(gpu, x, labels)?;
    mlp_epoch_row(gpu, &split, table)?;
    let schemes: [(&'static str, Scheme); 3] = [
        ("0.01 * randn", Scheme::SmallRandom),
        ("randn / sqrt(n)", Scheme::Calibrated),
        ("He", Scheme::kaiming_normal()),
    ];
    let mut curves = Vec::new();
    let mut first_layers = Vec::new();
    let t = Instant::now();
    let mut runs = 0;
    for batch_norm in [true, false] {
        for (name, scheme) in &schemes {
            let c = mlp_config(*scheme, batch_norm);
            let (reports, w1) = train_run(gpu, &split, &c, sizes.epochs)?;
            runs += 1;
            if !batch_norm && *name == "He" {
                first_layers.push(("He init".to_string(), w1));
            }
            curves.push((*name, batch_norm, reports));
        }
    }
    let c = mlp_config(Scheme::Constant { value: 0.05 }, false);
    let (reports, w1) = train_run(gpu, &split, &c, sizes.epochs)?;
    runs += 1;
    first_layers.insert(0, ("constant init (0.05)".to_string(), w1));
    let total = ms_since(t);
    table.add(
        &format!("MLP training, {runs} runs of {} epochs", sizes.epochs),
        "64-128-64-10".into(),
        gpu.is_none().then_some(total),
        gpu.is_some().then_some(total),
        None,
    );
    print_mlp_results(&curves, reports.last(), sizes.epochs);
    Ok((curves, first_layers))
}

/// One epoch, GPU against the twin from the same weights (the loss).
fn mlp_epoch_row(gpu: Option<&Gpu>, split: &DigitSplit, table: &mut Table) -> Result<()> {
    let c = mlp_config(Scheme::kaiming_normal(), true);
    let mut twin = gpuprep::cpu::train::Mlp::new(&c)?;
    let (want, cpu_ms) = cpu_timed(|| {
        twin.train_epoch(
            split.xtr.view(),
            split.ytr.view(),
            split.xte.view(),
            split.yte.view(),
        )
    })?;
    let (gpu_ms, diff) = match (gpu, &split.gpu) {
        (Some(g), Some((tr, te))) => {
            // Warm up the pipelines on a throw-away network.
            Mlp::new(g, &c)?.train_epoch(g, tr, te)?;
            let weights: Vec<Array2<f32>> = twin_weights(&gpuprep::cpu::train::Mlp::new(&c)?);
            let mut net = Mlp::with_weights(g, &c, &weights)?;
            g.wait()?;
            let t = Instant::now();
            let got = net.train_epoch(g, tr, te)?;
            let t = ms_since(t);
            (Some(t), Some((got.loss - want.loss).abs() / want.loss))
        }
        _ => (None, None),
    };
    table.add(
        "MLP epoch: 11 SGD steps + eval (the loss)",
        format!("{} x 64, batch 128", split.xtr.nrows()),
        Some(cpu_ms),
        gpu_ms,
        diff,
    );
    Ok(())
}

/// Each run's last epoch, and the constant start's (`constant`).
fn print_mlp_results(curves: &Curves, constant: Option<&EpochReport>, epochs: usize) {
    outln!("\nthe MLP (64-128-64-10, batch 128, SGD momentum 0.9) after {epochs} epochs:");
    for (name, bn, r) in curves {
        if let Some(r) = r.last() {
            outln!(
                "  {name:<16} {:<14} loss {:.4}  train accuracy {:.3}  test accuracy {:.3}",
                if *bn { "batch norm" } else { "no batch norm" },
                r.loss,
                r.train_accuracy,
                r.test_accuracy
            );
        }
    }
    if let Some(r) = constant {
        outln!(
            "  {:<16} {:<14} loss {:.4}  train accuracy {:.3}  test accuracy {:.3}  (every hidden unit the same)",
            "constant 0.05", "no batch norm", r.loss, r.train_accuracy, r.test_accuracy
        );
    }
}

fn twin_weights(net: &gpuprep::cpu::train::Mlp) -> Vec<Array2<f32>> {
    net.layers.iter().map(|l| l.w.mapv(|v| v as f32)).collect()
}

/// Trains `c` for `epochs` on the GPU (given one) or the twin; returns each
/// epoch's report and the first layer's weight.
fn train_run(
    gpu: Option<&Gpu>,
    split: &DigitSplit,
    c: &MlpConfig,
    epochs: usize,
) -> Result<(Vec<EpochReport>, Array2<f64>)> {
    let mut reports = Vec::new();
    match (gpu, &split.gpu) {
        (Some(g), Some((tr, te))) => {
            let mut net = Mlp::new(g, c)?;
            for _ in 0..epochs {
                reports.push(net.train_epoch(g, tr, te)?);
            }
            Ok((reports, f64s(&net.weight(g, 0)?)))
        }
        _ => {
            let mut net = gpuprep::cpu::train::Mlp::new(c)?;
            for _ in 0..epochs {
                reports.push(net.train_epoch(
                    split.xtr.view(),
                    split.ytr.view(),
                    split.xte.view(),
                    split.yte.view(),
                )?);
            }
            Ok((reports, net.layers[0].w.clone()))
        }
    }
}
