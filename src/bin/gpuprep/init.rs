//! `gpuprep init`: one weight tensor, written as f32 .npy.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use gpuprep::cpu::init as twin;
use gpuprep::model::init::{FanMode, Scheme, KAIMING_GAIN, SMALL_STD};
use gpuprep::rng::Philox;
use gpuprep::{io, ops, Error};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::WriteNpyExt;

use crate::common::{gpu_or_cpu, Device};

/// The scheme names: torch.nn.init's without the trailing underscore, plus
/// the lecture's small_random and calibrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SchemeName {
    Zeros,
    Constant,
    Uniform,
    Normal,
    XavierUniform,
    XavierNormal,
    KaimingUniform,
    KaimingNormal,
    Sparse,
    Orthogonal,
    SmallRandom,
    Calibrated,
}

/// Kaiming's fan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Divide by fan_in (forward variance).
    #[value(name = "fan_in")]
    FanIn,
    /// Divide by fan_out (backward variance).
    #[value(name = "fan_out")]
    FanOut,
}

/// Initialize a weight tensor (torch.nn.init's schemes and the lecture's); writes f32 .npy atomically.
#[derive(Args)]
pub struct InitArgs {
    /// The scheme.
    #[arg(long, value_enum)]
    scheme: SchemeName,
    /// Shape, PyTorch's layout: OUT,IN[,KH,KW] (a bias: one number).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    shape: Vec<usize>,
    /// Philox seed (the key).
    #[arg(long)]
    seed: u64,
    /// Philox subsequence: different streams of one seed are independent.
    #[arg(long, default_value_t = 0)]
    stream: u64,
    /// Gain (default: sqrt(2) for kaiming_*, 1 for xavier_* and orthogonal).
    #[arg(long, allow_negative_numbers = true)]
    gain: Option<f64>,
    /// Which fan kaiming_* divides by.
    #[arg(long, value_enum, default_value = "fan_in")]
    mode: Mode,
    /// sparse, PyTorch's rule: ceil(F * rows) zeros in each column, the rest N(0, std^2).
    #[arg(long, conflicts_with = "connections")]
    sparsity: Option<f64>,
    /// sparse, the lecture's form: each neuron (row) keeps exactly this many inputs.
    #[arg(long)]
    connections: Option<usize>,
    /// constant: the value.
    #[arg(long, allow_negative_numbers = true)]
    value: Option<f64>,
    /// uniform: lower bound (default 0).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    low: f64,
    /// uniform: upper bound (default 1).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    high: f64,
    /// normal: mean.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    mean: f64,
    /// normal: standard deviation (default 1); sparse: of the kept weights (default 0.01).
    #[arg(long, allow_negative_numbers = true)]
    std: Option<f64>,
    /// Where to compute (orthogonal is computed on the CPU either way).
    #[arg(long, value_enum, default_value = "gpu")]
    device: Device,
    /// Output .npy file (f32, written atomically).
    #[arg(short, long)]
    output: PathBuf,
}

fn scheme(a: &InitArgs) -> gpuprep::Result<Scheme> {
    let mode = match a.mode {
        Mode::FanIn => FanMode::FanIn,
        Mode::FanOut => FanMode::FanOut,
    };
    Ok(match a.scheme {
        SchemeName::Zeros => Scheme::Zeros,
        SchemeName::Constant => Scheme::Constant {
            value: a.value.ok_or_else(|| Error::InvalidArgument {
                op: "init",
                reason: "--scheme constant needs --value".into(),
            })?,
        },
        SchemeName::Uniform => Scheme::Uniform {
            low: a.low,
            high: a.high,
        },
        SchemeName::Normal => Scheme::Normal {
            mean: a.mean,
            std: a.std.unwrap_or(1.0),
        },
        SchemeName::XavierUniform => Scheme::XavierUniform {
            gain: a.gain.unwrap_or(1.0),
        },
        SchemeName::XavierNormal => Scheme::XavierNormal {
            gain: a.gain.unwrap_or(1.0),
        },
        SchemeName::KaimingUniform => Scheme::KaimingUniform {
            gain: a.gain.unwrap_or(KAIMING_GAIN),
            mode,
        },
        SchemeName::KaimingNormal => Scheme::KaimingNormal {
            gain: a.gain.unwrap_or(KAIMING_GAIN),
            mode,
        },
        SchemeName::Sparse => {
            let std = a.std.unwrap_or(SMALL_STD);
            match (a.sparsity, a.connections) {
                (_, Some(connections)) => Scheme::SparseFixed { connections, std },
                (Some(sparsity), None) => Scheme::Sparse { sparsity, std },
                (None, None) => {
                    return Err(Error::InvalidArgument {
                        op: "init",
                        reason:
                            "--scheme sparse needs --sparsity F (PyTorch) or --connections C (the lecture)"
                                .into(),
                    })
                }
            }
        }
        SchemeName::Orthogonal => Scheme::Orthogonal {
            gain: a.gain.unwrap_or(1.0),
        },
        SchemeName::SmallRandom => Scheme::SmallRandom,
        SchemeName::Calibrated => Scheme::Calibrated,
    })
}

/// Runs `gpuprep init` on the GPU, or on the CPU twin (`--device cpu`, or no adapter).
pub fn run(a: InitArgs) -> gpuprep::Result<()> {
    let scheme = scheme(&a)?;
    io::check_outputs("init", &[], &[&a.output])?;
    let gpu = gpu_or_cpu(a.device);
    let rng = Philox::with_stream(a.seed, a.stream);
    let shape = a.shape.clone();
    let (values, device): (Vec<f32>, String) = match &gpu {
        Some(g) => {
            let m = ops::init::init(g, &shape, &scheme, rng)?;
            (m.download(g)?.into_raw_vec_and_offset().0, g.adapter_name())
        }
        None => (
            twin::init(&shape, &scheme, rng)?
                .iter()
                .map(|&v| v as f32)
                .collect(),
            "cpu".into(),
        ),
    };
    let w = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| Error::InvalidArgument {
        op: "init",
        reason: e.to_string(),
    })?;
    io::write_atomic(&a.output, |f| {
        w.write_npy(f).map_err(|e| Error::Io {
            path: a.output.clone(),
            source: std::io::Error::other(e),
        })
    })?;
    let n = w.len().max(1) as f64;
    let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = w.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let nonzero = w.iter().filter(|&&v| v != 0.0).count();
    eprintln!(
        "wrote {} ({:?} f32, {:?}, seed {}, stream {}, on {device}): mean {mean:.4e}, std {:.4e}, {nonzero} nonzero",
        a.output.display(),
        shape,
        a.scheme,
        a.seed,
        a.stream,
        var.sqrt()
    );
    Ok(())
}
