//! `gpuprep init`: one weight tensor, written as f32 .npy.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use gpuprep::cpu::init as twin;
use gpuprep::model::init::{calculate_gain, FanMode, Scheme, KAIMING_GAIN, SMALL_STD};
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
    TruncNormal,
    /// PyTorch's default bias of nn.Linear and nn.Conv*: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Bias,
}

impl SchemeName {
    /// The name as the command line spells it.
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// The options that apply to the scheme (besides --shape, --seed, --stream, --device, -o).
    fn options(self) -> &'static [&'static str] {
        const GAIN: &[&str] = &["--gain", "--nonlinearity", "--a"];
        match self {
            SchemeName::Zeros | SchemeName::SmallRandom | SchemeName::Calibrated => &[],
            SchemeName::Constant => &["--value"],
            SchemeName::Uniform => &["--low", "--high"],
            SchemeName::Normal => &["--mean", "--std"],
            SchemeName::TruncNormal => &["--mean", "--std", "--low", "--high"],
            SchemeName::XavierUniform | SchemeName::XavierNormal | SchemeName::Orthogonal => GAIN,
            SchemeName::KaimingUniform | SchemeName::KaimingNormal => {
                &["--gain", "--nonlinearity", "--a", "--mode"]
            }
            SchemeName::Sparse => &["--sparsity", "--connections", "--std"],
            SchemeName::Bias => &["--fan-in"],
        }
    }
}

/// A nonlinearity by torch.nn.init.calculate_gain's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum NonlinearityName {
    Linear,
    Conv1d,
    Conv2d,
    Conv3d,
    #[value(name = "conv_transpose1d")]
    ConvTranspose1d,
    #[value(name = "conv_transpose2d")]
    ConvTranspose2d,
    #[value(name = "conv_transpose3d")]
    ConvTranspose3d,
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu,
    Selu,
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
    /// Philox seed (the key): one seed, one tensor.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Philox subsequence: different streams of one seed are independent.
    #[arg(long, default_value_t = 0)]
    stream: u64,
    /// Gain (default: sqrt(2) for kaiming_*, 1 for xavier_* and orthogonal).
    #[arg(long, allow_negative_numbers = true, conflicts_with = "nonlinearity")]
    gain: Option<f64>,
    /// The gain of this nonlinearity, as torch.nn.init.calculate_gain (kaiming_*:
    /// PyTorch's nonlinearity argument, default leaky_relu; xavier_*, orthogonal:
    /// gain=calculate_gain(NAME)).
    #[arg(long, value_enum)]
    nonlinearity: Option<NonlinearityName>,
    /// leaky_relu's negative slope (kaiming's `a`, default 0; calculate_gain's
    /// param elsewhere, default 0.01).
    #[arg(long, allow_negative_numbers = true, conflicts_with = "gain")]
    a: Option<f64>,
    /// Which fan kaiming_* divides by (default fan_in).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// sparse, PyTorch's rule: ceil(F * rows) zeros in each column, the rest N(0, std^2).
    #[arg(long, conflicts_with = "connections")]
    sparsity: Option<f64>,
    /// sparse, the lecture's form: each neuron (row) keeps exactly this many inputs.
    #[arg(long)]
    connections: Option<usize>,
    /// constant: the value.
    #[arg(long, allow_negative_numbers = true)]
    value: Option<f64>,
    /// uniform: lower bound (default 0); trunc_normal: PyTorch's a (default -2).
    #[arg(long, allow_negative_numbers = true)]
    low: Option<f64>,
    /// uniform: upper bound (default 1); trunc_normal: PyTorch's b (default 2).
    #[arg(long, allow_negative_numbers = true)]
    high: Option<f64>,
    /// normal, trunc_normal: mean (default 0).
    #[arg(long, allow_negative_numbers = true)]
    mean: Option<f64>,
    /// normal, trunc_normal: standard deviation (default 1); sparse: of the kept weights (default 0.01).
    #[arg(long, allow_negative_numbers = true)]
    std: Option<f64>,
    /// bias: the fan_in of the layer the bias belongs to (its weight's in * prod(kernel)).
    #[arg(long)]
    fan_in: Option<usize>,
    /// Where to compute (orthogonal is computed on the CPU either way).
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    /// Output .npy file (f32, written atomically).
    #[arg(short, long)]
    output: PathBuf,
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument { op: "init", reason }
}

/// The gain of `--nonlinearity` / `--a`, or None when neither was given.
/// `slope_default` is leaky_relu's slope without `--a` (kaiming: 0; calculate_gain: 0.01).
fn nonlinearity_gain(
    a: &InitArgs,
    default: Option<NonlinearityName>,
    slope_default: f64,
) -> gpuprep::Result<Option<f64>> {
    let Some(name) = a
        .nonlinearity
        .or(default)
        .or(a.a.map(|_| NonlinearityName::LeakyRelu))
    else {
        return Ok(None);
    };
    let name = name
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    if a.a.is_some() && name != "leaky_relu" {
        return Err(invalid(format!(
            "--a is leaky_relu's negative slope; --nonlinearity {name} takes none"
        )));
    }
    Ok(Some(calculate_gain(&name, Some(a.a.unwrap_or(slope_default)))?))
}

/// Refuses an option given that does not apply to the scheme, naming both.
fn check_options(a: &InitArgs) -> gpuprep::Result<()> {
    let given = [
        ("--gain", a.gain.is_some()),
        ("--nonlinearity", a.nonlinearity.is_some()),
        ("--a", a.a.is_some()),
        ("--mode", a.mode.is_some()),
        ("--sparsity", a.sparsity.is_some()),
        ("--connections", a.connections.is_some()),
        ("--value", a.value.is_some()),
        ("--low", a.low.is_some()),
        ("--high", a.high.is_some()),
        ("--mean", a.mean.is_some()),
        ("--std", a.std.is_some()),
        ("--fan-in", a.fan_in.is_some()),
    ];
    let takes = a.scheme.options();
    if let Some((flag, _)) = given.iter().find(|(f, on)| *on && !takes.contains(f)) {
        return Err(invalid(format!(
            "{flag} does not apply to --scheme {} ({})",
            a.scheme.name(),
            if takes.is_empty() {
                "it takes no options".to_string()
            } else {
                format!("it takes {}", takes.join(", "))
            }
        )));
    }
    Ok(())
}

fn scheme(a: &InitArgs) -> gpuprep::Result<Scheme> {
    check_options(a)?;
    let mode = match a.mode.unwrap_or(Mode::FanIn) {
        Mode::FanIn => FanMode::FanIn,
        Mode::FanOut => FanMode::FanOut,
    };
    let kaiming = matches!(a.scheme, SchemeName::KaimingNormal | SchemeName::KaimingUniform);
    // kaiming_*: PyTorch's nonlinearity='leaky_relu', a=0 (gain sqrt 2)
    let named = if kaiming {
        nonlinearity_gain(a, Some(NonlinearityName::LeakyRelu), 0.0)?
    } else {
        nonlinearity_gain(a, None, 0.01)?
    };
    let gain = |default: f64| a.gain.or(named).unwrap_or(default);
    let mean = a.mean.unwrap_or(0.0);
    Ok(match a.scheme {
        SchemeName::Zeros => Scheme::Zeros,
        SchemeName::Constant => Scheme::Constant {
            value: a.value.ok_or_else(|| Error::InvalidArgument {
                op: "init",
                reason: "--scheme constant needs --value".into(),
            })?,
        },
        SchemeName::Uniform => Scheme::Uniform {
            low: a.low.unwrap_or(0.0),
            high: a.high.unwrap_or(1.0),
        },
        SchemeName::TruncNormal => Scheme::TruncNormal {
            mean,
            std: a.std.unwrap_or(1.0),
            low: a.low.unwrap_or(-2.0),
            high: a.high.unwrap_or(2.0),
        },
        SchemeName::Normal => Scheme::Normal {
            mean,
            std: a.std.unwrap_or(1.0),
        },
        SchemeName::XavierUniform => Scheme::XavierUniform { gain: gain(1.0) },
        SchemeName::XavierNormal => Scheme::XavierNormal { gain: gain(1.0) },
        SchemeName::KaimingUniform => Scheme::KaimingUniform {
            gain: gain(KAIMING_GAIN),
            mode,
        },
        SchemeName::KaimingNormal => Scheme::KaimingNormal {
            gain: gain(KAIMING_GAIN),
            mode,
        },
        SchemeName::Sparse => sparse(a)?,
        SchemeName::Orthogonal => Scheme::Orthogonal { gain: gain(1.0) },
        SchemeName::SmallRandom => Scheme::SmallRandom,
        SchemeName::Calibrated => Scheme::Calibrated,
        SchemeName::Bias => bias(a)?,
    })
}

/// `--scheme sparse`: PyTorch's (`--sparsity`) or the lecture's (`--connections`).
fn sparse(a: &InitArgs) -> gpuprep::Result<Scheme> {
    let std = a.std.unwrap_or(SMALL_STD);
    match (a.sparsity, a.connections) {
        (_, Some(connections)) => Ok(Scheme::SparseFixed { connections, std }),
        (Some(sparsity), None) => Ok(Scheme::Sparse { sparsity, std }),
        (None, None) => Err(invalid(
            "--scheme sparse needs --sparsity F (PyTorch) or --connections C (the lecture)".into(),
        )),
    }
}

/// `--scheme bias`: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
fn bias(a: &InitArgs) -> gpuprep::Result<Scheme> {
    let fan_in = match a.fan_in {
        Some(f) if f > 0 => f,
        Some(_) => return Err(invalid("--fan-in must be at least 1".into())),
        None => {
            return Err(invalid(
                "--scheme bias needs --fan-in N: the in_features (times the kernel size) of the layer".into(),
            ))
        }
    };
    let bound = 1.0 / (fan_in as f64).sqrt();
    Ok(Scheme::Uniform {
        low: -bound,
        high: bound,
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
            let values = m.download(g)?.into_raw_vec_and_offset().0;
            gpuprep::model::init::check_drawn_f32("init", &values)?;
            (values, g.adapter_name())
        }
        None => (
            gpuprep::model::init::draw_to_f32("init", twin::init(&shape, &scheme, rng)?)?,
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
    crate::output::note(&format!(
        "wrote {} ({:?} f32, {}, seed {}, stream {}, on {device}): mean {mean:.4e}, std {:.4e}, {nonzero} nonzero",
        a.output.display(),
        shape,
        a.scheme.name(),
        a.seed,
        a.stream,
        var.sqrt()
    ));
    Ok(())
}
