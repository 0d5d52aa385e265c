//! `gpuprep bench --device cpu`: the CPU path alone (`gpuprep::host`, all
//! cores, f32 data with f64 accumulation), no adapter needed. One table, or
//! `--json` (per-op medians), of the rows `--ops` picks (all by default):
//!
//! | op | what |
//! | --- | --- |
//! | `column_stats` | `host::column_stats` of X |
//! | `standardize` | statistics, then `host::standardize` |
//! | `covariance` | `host::covariance` (the co-moments, lower triangle) |
//! | `pca_whiten` | `host::pca::transform` of X with a PCA-whitening model |
//! | `batchnorm_fwd`, `batchnorm_bwd` | `host::BatchNorm`, training forward and backward |
//! | `layernorm_fwd`, `layernorm_bwd` | `host::norm_forward` / `norm_backward`, layer norm over D |
//! | `groupnorm_fwd`, `groupnorm_bwd` | the same, group norm (8 groups; X as `(N, D)`, each column a channel) |
//! | `eigh` | the full eigendecomposition of X's `D x D` covariance |
//! | `pca_topk` | the top-k solver on that covariance (`--k`, default 32) |
//!
//! Wall clock, median of `--trials` runs (at most 9) after one warm-up. X is
//! `rows x cols` f32, `100 + U(-1, 1)`-like values (the GPU bench's data plus
//! 100: an offset, as DESIGN.md's accuracy bars assume).

use gpuprep::host::{self, BatchNorm};
use gpuprep::model::eigen::{top_eigenpairs, TopKOptions};
use gpuprep::{NormKind, PcaOptions, RunningStatsConfig, StandardizeOptions, Whitening};
use ndarray::{Array1, Array2};
use serde_json::json;

use crate::bench::time_wall;

/// Every row `--ops` may name, in table order.
pub const OPS: &[&str] = &[
    "column_stats",
    "standardize",
    "covariance",
    "pca_whiten",
    "batchnorm_fwd",
    "batchnorm_bwd",
    "layernorm_fwd",
    "layernorm_bwd",
    "groupnorm_fwd",
    "groupnorm_bwd",
    "eigh",
    "pca_topk",
];

fn data(n: usize, d: usize, offset: f32, seed: u32) -> Array2<f32> {
    let mut s = 0x2545F491u32 ^ seed;
    Array2::from_shape_simple_fn((n, d), || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        offset + (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    })
}

/// The rows `ops` names (comma-separated; `None`: all), checked.
pub fn pick(ops: Option<&str>) -> gpuprep::Result<Vec<&'static str>> {
    let Some(ops) = ops else {
        return Ok(OPS.to_vec());
    };
    ops.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            OPS.iter()
                .copied()
                .find(|k| *k == o)
                .ok_or_else(|| gpuprep::Error::InvalidArgument {
                    op: "bench",
                    reason: format!("--ops: unknown op {o:?}; the CPU rows are {}", OPS.join(", ")),
                })
        })
        .collect()
}

/// Times the picked rows at `n x d` and prints the table or the JSON.
pub fn run(n: usize, d: usize, k: usize, trials: usize, ops: &[&str], as_json: bool) -> gpuprep::Result<()> {
    if n == 0 || d == 0 {
        return Err(gpuprep::Error::InvalidArgument {
            op: "bench",
            reason: "--rows and --cols must be at least 1".into(),
        });
    }
    let inp = Inputs::new(n, d, k, trials, ops)?;
    let mut rows = Vec::new();
    for &op in ops {
        let (s, extra) = inp.time(op)?;
        rows.push((op, s, extra));
    }
    print(&rows, n, d, inp.trials, as_json);
    Ok(())
}

/// What the rows run on: X, dy and X's covariance (each only where a picked
/// row needs it), unit gamma, zero beta, and the timing settings.
struct Inputs {
    x: Array2<f32>,
    dy: Array2<f32>,
    cov: Array2<f64>,
    gamma: Array1<f64>,
    beta: Array1<f64>,
    /// Group norm's groups: 8, or 1 where D is not a multiple of 8.
    groups: usize,
    k: usize,
    trials: usize,
}

impl Inputs {
    fn new(n: usize, d: usize, k: usize, trials: usize, ops: &[&str]) -> gpuprep::Result<Inputs> {
        let trials = trials.clamp(1, 9);
        let x = data(n, d, 100.0, 0);
        let needs_dy = ops.iter().any(|o| o.ends_with("_bwd"));
        let dy = if needs_dy {
            data(n, d, 0.0, 1)
        } else {
            Array2::zeros((0, d))
        };
        let needs_cov = ops.iter().any(|o| matches!(*o, "eigh" | "pca_topk"));
        let cov = if needs_cov {
            host::covariance(x.view(), 0)?
        } else {
            Array2::zeros((0, 0))
        };
        let (gamma, beta) = (Array1::<f64>::ones(d), Array1::<f64>::zeros(d));
        let groups = if d.is_multiple_of(8) { 8 } else { 1 };
        Ok(Inputs {
            x,
            dy,
            cov,
            gamma,
            beta,
            groups,
            k,
            trials,
        })
    }

    /// The median seconds of row `op`, and its note.
    fn time(&self, op: &str) -> gpuprep::Result<(f64, String)> {
        let (x, d, trials) = (&self.x, self.x.ncols(), self.trials);
        let s = match op {
            "column_stats" => time_wall(trials, || host::column_stats(x.view(), 0).map(drop))?,
            "standardize" => time_wall(trials, || {
                let st = host::column_stats(x.view(), 0)?;
                host::standardize(x.view(), &st, StandardizeOptions::default()).map(drop)
            })?,
            "covariance" => time_wall(trials, || host::covariance(x.view(), 0).map(drop))?,
            "pca_whiten" => {
                let opts = PcaOptions {
                    whitening: Whitening::Pca,
                    ..Default::default()
                };
                let model = host::pca::fit(x.view(), &opts)?;
                time_wall(trials, || host::pca::transform(&model, x.view()).map(drop))?
            }
            "batchnorm_fwd" => {
                let mut bn = BatchNorm::new(d, RunningStatsConfig::pytorch());
                time_wall(trials, || bn.forward_train(x.view()).map(drop))?
            }
            "batchnorm_bwd" => {
                let mut bn = BatchNorm::new(d, RunningStatsConfig::pytorch());
                let (_, saved) = bn.forward_train(x.view())?;
                time_wall(trials, || bn.backward(x.view(), self.dy.view(), &saved).map(drop))?
            }
            "layernorm_fwd" | "groupnorm_fwd" | "layernorm_bwd" | "groupnorm_bwd" => {
                return self.time_norm(op)
            }
            "eigh" => {
                let c = self.cov.view();
                time_wall(trials.min(3), || {
                    gpuprep::model::pca::eigh_descending(c).map(drop)
                })?
            }
            "pca_topk" => return self.time_topk(),
            _ => unreachable!("pick() checked the names"),
        };
        Ok((s, String::new()))
    }

    /// A layer or group norm row, forward or backward.
    fn time_norm(&self, op: &str) -> gpuprep::Result<(f64, String)> {
        let (x, trials, groups) = (&self.x, self.trials, self.groups);
        let mut extra = String::new();
        let (kind, g, b) = if op.starts_with("layer") {
            (NormKind::Layer, self.gamma.view(), self.beta.view())
        } else {
            (NormKind::Group { groups }, self.gamma.view(), self.beta.view())
        };
        if groups != 8 && kind != NormKind::Layer {
            extra = format!("{groups} group (D not a multiple of 8)");
        }
        // Group norm on (N, C) takes a sample's channels in `groups` groups.
        let (_, stats) = host::norm_forward(kind, x.view(), g, b, 1e-5)?;
        let s = if op.ends_with("_fwd") {
            time_wall(trials, || {
                host::norm_forward(kind, x.view(), g, b, 1e-5).map(drop)
            })?
        } else {
            time_wall(trials, || {
                host::norm_backward(
                    kind,
                    x.view(),
                    self.dy.view(),
                    g,
                    stats.mean.view(),
                    stats.invstd.view(),
                )
                .map(drop)
            })?
        };
        Ok((s, extra))
    }

    /// The top-k solver on X's covariance, noting its products and cycles.
    fn time_topk(&self) -> gpuprep::Result<(f64, String)> {
        let c = self.cov.view();
        let kk = self.k.clamp(1, self.x.ncols());
        let r = top_eigenpairs(c, kk, None, &TopKOptions::default())?;
        let extra = format!("k = {kk}: {} products, {} cycles", r.products, r.cycles);
        let s = time_wall(self.trials, || {
            top_eigenpairs(c, kk, None, &TopKOptions::default()).map(drop)
        })?;
        Ok((s, extra))
    }
}

/// The rows (op, median seconds, note) as a table or one JSON object.
fn print(rows: &[(&str, f64, String)], n: usize, d: usize, trials: usize, as_json: bool) {
    let threads = rayon::current_num_threads();
    if as_json {
        let doc = json!({
            "device": "cpu",
            "threads": threads,
            "shape": [n, d],
            "trials": trials,
            "rows": rows.iter().map(|(op, s, extra)| json!({
                "op": op,
                "median_s": s,
                "note": extra,
            })).collect::<Vec<_>>(),
        });
        println!("{doc}");
    } else {
        println!("gpuprep bench --device cpu: {n} x {d} f32 (offset 100), {threads} threads, wall clock, median of {trials}");
        println!("{:<16} {:>12}  note", "op", "ms");
        for (op, s, extra) in rows {
            println!("{op:<16} {:>12.3}  {extra}", s * 1e3);
        }
    }
}
