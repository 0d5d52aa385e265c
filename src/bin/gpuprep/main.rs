//! The `gpuprep` command line. With no subcommand it runs the demo on the
//! embedded digits data: column statistics, then the lecture's PCA and PCA /
//! ZCA whitening, GPU against the f64 CPU twin.

mod activations;
mod bench;
mod data;
mod init;
mod normcheck;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use gpuprep::cpu::pca as cpu_pca;
use gpuprep::{
    cpu, io, ops, ColumnSummary, Gpu, GpuMatrix, NComponents, Pca, PcaModel, PcaOptions, StandardizeOptions,
    Whitening,
};
use ndarray::Array2;

#[derive(Parser)]
#[command(
    name = "gpuprep",
    version,
    about = "Data preprocessing, weight init and normalization on any GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    Gpu,
    Cpu,
}

/// Which normalization `normcheck` runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Batch,
    Layer,
    Instance,
    Group,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WhitenArg {
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

#[derive(Subcommand)]
enum Command {
    /// The adapters found, the one chosen, its limits and features.
    Info,
    /// Per-column statistics of a 2-D .npy file (f32 or f64, C or Fortran order).
    Stats {
        /// Input .npy file.
        input: PathBuf,
        /// Delta degrees of freedom of the variance (0: numpy's default).
        #[arg(long, default_value_t = 0)]
        ddof: usize,
        /// Print JSON with count, ddof, mean, var, std, min, max.
        #[arg(long)]
        json: bool,
        /// Where to compute.
        #[arg(long, value_enum, default_value = "gpu")]
        device: Device,
    },
    /// Center and/or scale the columns of a .npy file, or with --pca project it onto its
    /// principal components (reduce, whiten); writes .npy (f32) atomically.
    /// With neither --center nor --scale nor --pca, centers and scales.
    Preprocess {
        /// Input .npy file.
        input: PathBuf,
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
        #[arg(long, default_value_t = 1e-5, requires = "pca")]
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
    },
    /// Applies a saved PCA model (from `preprocess --pca ... --save-model`) to a
    /// .npy file; writes .npy (f32) atomically.
    Transform {
        /// Input .npy file.
        input: PathBuf,
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
    },
    /// Initialize a weight tensor (torch.nn.init's schemes and the lecture's); writes f32 .npy atomically.
    Init(init::InitArgs),
    /// The lecture's activation statistics: a deep tanh / ReLU network on unit-gaussian
    /// input for 0.01 * randn, randn / sqrt(n) and He; the mean and std of each layer.
    Activations {
        /// Fully connected layers.
        #[arg(long, default_value_t = 10)]
        layers: usize,
        /// Units per layer (and input features).
        #[arg(long, default_value_t = 500)]
        units: usize,
        /// Input rows.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Philox seed of the weights and the input.
        #[arg(long, default_value_t = 231)]
        seed: u64,
        /// Where to run the network (the CPU twin always runs, for the comparison).
        #[arg(long, value_enum, default_value = "gpu")]
        device: Device,
    },
    /// Batch, layer, instance or group norm forward + backward (training mode) on
    /// your own tensors: writes y, dx, dgamma, dbeta, mean and invstd as .npy
    /// into DIR, to compare with another framework.
    Normcheck {
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
        #[arg(long, default_value_t = 1e-5)]
        eps: f64,
        /// Where to compute (gpu: f32 results; cpu: the f64 twin).
        #[arg(long, value_enum, default_value = "gpu")]
        device: Device,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// One table of CPU twin against GPU at one shape: statistics, standardize, covariance, the
    /// PCA-whitening product, batch and layer norm forward/backward, init (GB/s or GFLOP/s, and the
    /// fraction of the device's copy bandwidth).
    Bench {
        /// Rows N.
        #[arg(long, default_value_t = 65_536)]
        rows: usize,
        /// Columns D.
        #[arg(long, default_value_t = 256)]
        cols: usize,
        /// Ops recorded per submit.
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// Submits timed (median reported).
        #[arg(long, default_value_t = 7)]
        trials: usize,
        /// Skip the CPU twin (for shapes where it is slow).
        #[arg(long)]
        no_cpu: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => demo(),
        Some(Command::Info) => info(),
        Some(Command::Stats {
            input,
            ddof,
            json,
            device,
        }) => stats(input, ddof, json, device),
        Some(Command::Preprocess {
            input,
            output,
            center,
            scale,
            pca,
            whiten,
            eps,
            ddof,
            save_model,
            device,
        }) => match pca {
            Some(n_components) => {
                let _ = center; // PCA always centers.
                let options = PcaOptions {
                    n_components,
                    whitening: match whiten {
                        None => Whitening::None,
                        Some(WhitenArg::Pca) => Whitening::Pca,
                        Some(WhitenArg::Zca) => Whitening::Zca,
                    },
                    eps,
                    ddof,
                };
                preprocess_pca(input, output, options, save_model, device)
            }
            None => preprocess(input, output, center, scale, device),
        },
        Some(Command::Init(args)) => {
            let gpu = gpu_or_cpu(args.device());
            init::run(args, gpu)
        }
        Some(Command::Activations {
            layers,
            units,
            batch,
            seed,
            device,
        }) => activations::run(
            activations::ActivationsArgs {
                layers,
                units,
                batch,
                seed,
            },
            gpu_or_cpu(device),
        ),
        Some(Command::Normcheck {
            kind,
            groups,
            x,
            dy,
            gamma,
            beta,
            eps,
            device,
            out,
        }) => norm_kind(kind, groups).and_then(|kind| {
            normcheck::normcheck(normcheck::NormcheckArgs {
                kind,
                x,
                dy,
                gamma,
                beta,
                eps,
                device,
                out,
            })
        }),
        Some(Command::Transform {
            input,
            output,
            model,
            inverse,
            device,
        }) => transform(input, output, model, inverse, device),
        Some(Command::Bench {
            rows,
            cols,
            reps,
            trials,
            no_cpu,
        }) => bench::bench(bench::BenchArgs {
            rows,
            cols,
            reps: reps.max(1),
            trials: trials.max(1),
            cpu: !no_cpu,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpuprep: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn norm_kind(kind: Kind, groups: Option<usize>) -> gpuprep::Result<gpuprep::ops::NormKind> {
    use gpuprep::ops::NormKind;
    match (kind, groups) {
        (Kind::Group, Some(groups)) => Ok(NormKind::Group { groups }),
        (Kind::Group, None) => Err(gpuprep::Error::InvalidArgument {
            op: "normcheck",
            reason: "--kind group needs --groups G".into(),
        }),
        (_, Some(_)) => Err(gpuprep::Error::InvalidArgument {
            op: "normcheck",
            reason: "--groups is only for --kind group".into(),
        }),
        (Kind::Batch, None) => Ok(NormKind::Batch),
        (Kind::Layer, None) => Ok(NormKind::Layer),
        (Kind::Instance, None) => Ok(NormKind::Instance),
    }
}

/// The GPU when asked for and present; `None` (and a clear note on stderr)
/// when the CPU path must be used.
fn gpu_or_cpu(device: Device) -> Option<Gpu> {
    if device == Device::Cpu {
        return None;
    }
    match Gpu::new() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("gpuprep: {e}");
            eprintln!("gpuprep: running on the CPU instead");
            None
        }
    }
}

fn info() -> gpuprep::Result<()> {
    let all = gpuprep::gpu::enumerate_adapters();
    println!("adapters found: {}", all.len());
    for a in &all {
        println!(
            "  {} ({:?}, {:?}, driver {:?})",
            a.name, a.backend, a.device_type, a.driver_info
        );
    }
    let gpu = Gpu::new()?;
    let i = gpu.adapter_info();
    let l = gpu.limits();
    println!("chosen: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
    println!("  max_buffer_size                    {}", l.max_buffer_size);
    println!(
        "  min_storage_buffer_offset_align    {}",
        l.min_storage_buffer_offset_alignment
    );
    println!(
        "  max_storage_buffer_binding_size    {}",
        l.max_storage_buffer_binding_size
    );
    println!(
        "  max_compute_workgroup_storage_size {}",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_invocations_per_wg     {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups_per_dim     {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  subgroup size                      {}..{}",
        i.subgroup_min_size, i.subgroup_max_size
    );
    println!(
        "  features used: {:?}",
        gpu.features() & gpuprep::gpu::wanted_features()
    );
    Ok(())
}

fn compute_stats(x: &Array2<f32>, ddof: usize, gpu: Option<&Gpu>) -> gpuprep::Result<ColumnSummary> {
    match gpu {
        Some(g) => {
            let xg = GpuMatrix::upload(g, x.view())?;
            ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(ddof))?.download(g)
        }
        None => cpu::column_stats(x.view(), ddof),
    }
}

fn stats(input: PathBuf, ddof: usize, json: bool, device: Device) -> gpuprep::Result<()> {
    let x = io::read_npy_matrix(&input)?;
    let gpu = gpu_or_cpu(device);
    let s = compute_stats(&x, ddof, gpu.as_ref())?;
    if json {
        let v = serde_json::json!({
            "count": s.count,
            "ddof": s.ddof,
            "device": gpu.as_ref().map_or("cpu".to_string(), |g| g.adapter_name()),
            "mean": s.mean.to_vec(),
            "var": s.var.to_vec(),
            "std": s.std.to_vec(),
            "min": s.min.to_vec(),
            "max": s.max.to_vec(),
        });
        println!("{v}");
    } else {
        println!("{} rows x {} columns, ddof {}", s.count, s.mean.len(), s.ddof);
        println!(
            "{:>6} {:>14} {:>14} {:>14} {:>14} {:>14}",
            "column", "mean", "var", "std", "min", "max"
        );
        for c in 0..s.mean.len() {
            println!(
                "{c:>6} {:>14.6} {:>14.6} {:>14.6} {:>14.6} {:>14.6}",
                s.mean[c], s.var[c], s.std[c], s.min[c], s.max[c]
            );
        }
    }
    Ok(())
}

fn preprocess(
    input: PathBuf,
    output: PathBuf,
    center: bool,
    scale: bool,
    device: Device,
) -> gpuprep::Result<()> {
    let opts = if !center && !scale {
        StandardizeOptions::default()
    } else {
        StandardizeOptions { center, scale }
    };
    let x = io::read_npy_matrix(&input)?;
    let y = match gpu_or_cpu(device) {
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
    io::write_npy_matrix(&output, y.view())?;
    eprintln!("wrote {} ({} x {})", output.display(), y.nrows(), y.ncols());
    Ok(())
}

fn preprocess_pca(
    input: PathBuf,
    output: PathBuf,
    options: PcaOptions,
    save_model: Option<PathBuf>,
    device: Device,
) -> gpuprep::Result<()> {
    let x = io::read_npy_matrix(&input)?;
    let (y, model) = match gpu_or_cpu(device) {
        Some(g) => {
            let xg = GpuMatrix::upload(&g, x.view())?;
            let pca = Pca::fit(&g, &xg, &options)?;
            let y = pca.transform(&g, &xg)?.download(&g)?;
            (y, pca.into_model())
        }
        None => {
            let model = cpu::pca::fit(x.view(), &options)?;
            (cpu_pca::transform(&model, x.view())?.mapv(|v| v as f32), model)
        }
    };
    io::write_npy_matrix(&output, y.view())?;
    let kept: f64 = model.explained_variance_ratio.sum();
    eprintln!(
        "wrote {} ({} x {}): {} of {} components, {:.4} of the variance",
        output.display(),
        y.nrows(),
        y.ncols(),
        model.n_components(),
        model.n_features(),
        kept
    );
    if let Some(path) = save_model {
        model.save(&path)?;
        eprintln!("wrote {} (PCA model)", path.display());
    }
    Ok(())
}

fn transform(
    input: PathBuf,
    output: PathBuf,
    model: PathBuf,
    inverse: bool,
    device: Device,
) -> gpuprep::Result<()> {
    let model = PcaModel::load(&model)?;
    let x = io::read_npy_matrix(&input)?;
    let y = match gpu_or_cpu(device) {
        Some(g) => {
            let pca = Pca::from_model(&g, model)?;
            let xg = GpuMatrix::upload(&g, x.view())?;
            let yg = if inverse {
                pca.inverse_transform(&g, &xg)?
            } else {
                pca.transform(&g, &xg)?
            };
            yg.download(&g)?
        }
        None => {
            let y = if inverse {
                cpu_pca::inverse_transform(&model, x.view())?
            } else {
                cpu_pca::transform(&model, x.view())?
            };
            y.mapv(|v| v as f32)
        }
    };
    io::write_npy_matrix(&output, y.view())?;
    eprintln!("wrote {} ({} x {})", output.display(), y.nrows(), y.ncols());
    Ok(())
}

fn max_abs_diff(a: &ndarray::Array1<f64>, b: &ndarray::Array1<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn demo() -> gpuprep::Result<()> {
    let (x, labels) = data::digits()?;
    println!(
        "gpuprep demo: the digits data ({} images of 8x8 pixels, {} classes; UCI, CC BY 4.0)",
        x.nrows(),
        labels.iter().collect::<std::collections::BTreeSet<_>>().len()
    );
    let t = Instant::now();
    let cpu_s = cpu::column_stats(x.view(), 0)?;
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    let gpu = gpu_or_cpu(Device::Gpu);
    match &gpu {
        Some(g) => {
            let i = g.adapter_info();
            println!("adapter: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
            let xg = GpuMatrix::upload(g, x.view())?;
            let _warm = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0))?.download(g)?;
            let t = Instant::now();
            let gs = ops::column_stats(g, &xg, &ops::ColumnStatsOptions::ddof(0))?.download(g)?;
            let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
            println!("CPU (f64) {cpu_ms:.3} ms; GPU (f32, incl. readback) {gpu_ms:.3} ms");
            println!("largest |GPU - CPU| over the 64 columns:");
            println!(
                "  mean {:.3e}  var {:.3e}  std {:.3e}",
                max_abs_diff(&gs.mean, &cpu_s.mean),
                max_abs_diff(&gs.var, &cpu_s.var),
                max_abs_diff(&gs.std, &cpu_s.std)
            );
            println!(
                "  min  {:.3e}  max {:.3e}",
                max_abs_diff(&gs.min, &cpu_s.min),
                max_abs_diff(&gs.max, &cpu_s.max)
            );
        }
        None => println!("CPU (f64) {cpu_ms:.3} ms (no GPU: CPU only)"),
    }
    let grid = |title: &str, v: &ndarray::Array1<f64>| {
        println!("{title} (8 x 8, as the image):");
        for r in v.to_vec().chunks(8) {
            println!(
                "  {}",
                r.iter().map(|m| format!("{m:6.2}")).collect::<Vec<_>>().join("")
            );
        }
    };
    grid("per-pixel mean", &cpu_s.mean);
    grid("per-pixel std", &cpu_s.std);
    let constant = cpu_s.std.iter().filter(|&&s| s == 0.0).count();
    println!("{constant} pixels are constant (std 0): standardize scales them by 1, not inf");
    demo_pca(gpu.as_ref(), &x)
}

/// The lecture's PCA steps on the digits data: the spectrum of the covariance,
/// how many components keep 90 / 95 / 99 % of the variance, and PCA and ZCA
/// whitening checked by the covariance of the result (the identity on the
/// kept components), GPU against the f64 twin.
fn demo_pca(gpu: Option<&Gpu>, x: &Array2<f32>) -> gpuprep::Result<()> {
    println!("\nPCA (cov = Xc^T Xc / N, eigh, Xrot = Xc U, Xwhite = Xrot / sqrt(S + 1e-5)):");
    let full = cpu::pca::fit(x.view(), &PcaOptions::default())?;
    let ratios = &full.explained_variance_ratio;
    let top: Vec<String> = ratios.iter().take(8).map(|r| format!("{:.3}", r)).collect();
    println!(
        "  explained variance ratio of the first 8 components: {}",
        top.join(" ")
    );
    let mut line = String::from("  components needed:");
    for f in [0.90, 0.95, 0.99] {
        let k = gpuprep::model::pca::select_components(full.eigenvalues.view(), NComponents::Fraction(f))?;
        line += &format!("  {:.0}% -> {k}", f * 100.0);
    }
    println!("{line} (of {})", x.ncols());
    for (name, whitening) in [("PCA", Whitening::Pca), ("ZCA", Whitening::Zca)] {
        let opts = PcaOptions {
            n_components: NComponents::Fraction(0.99),
            whitening,
            ..Default::default()
        };
        let twin = cpu::pca::fit(x.view(), &opts)?;
        let y_twin = cpu_pca::transform(&twin, x.view())?;
        let (y, where_) = match gpu {
            Some(g) => {
                let xg = GpuMatrix::upload(g, x.view())?;
                let pca = Pca::fit(g, &xg, &opts)?;
                let y = pca.transform(g, &xg)?.download(g)?.mapv(f64::from);
                (y, "GPU")
            }
            None => (y_twin.clone(), "CPU twin"),
        };
        // Covariance of the whitened data: I on the kept components (ZCA
        // rotates back to pixel space, so its covariance is U_k U_k^T there).
        let check = cpu::pca::fit(y.view(), &PcaOptions::default())?;
        let k = twin.n_components();
        let eig = &check.eigenvalues;
        let worst = eig.iter().take(k).map(|v| (v - 1.0).abs()).fold(0.0, f64::max);
        let scale = y_twin.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = y
            .iter()
            .zip(y_twin.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "  {name} whitening ({where_}): {} x {}; the top {k} eigenvalues of its covariance are 1 within \
             {worst:.1e}; |GPU - twin| <= {:.1e} of the output's range",
            y.nrows(),
            y.ncols(),
            diff / scale.max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}
