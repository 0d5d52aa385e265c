//! Every WGSL source gpuprep ships, with its entry points and bindings named
//! once, beside the source: the launchers in [`crate::ops`] refer to these
//! names (never to a literal binding number), a unit test checks with naga that
//! each named binding exists with that number and access and that each Rust
//! `Params` mirror has its WGSL struct's size and field offsets, and the
//! pipeline cache keys on [`Shader::name`] and the entry point.
//!
//! Code two kernel families share lives once in `shaders/common/` and is
//! prepended to each family's file at compile time (`concat!`), so the source
//! a pipeline sees is the prelude followed by the op's file.

/// How a shader declares one binding of group 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// One binding of group 0, by the name the WGSL gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The WGSL variable's name.
    pub name: &'static str,
    /// Its `@binding` number.
    pub binding: u32,
    /// How it is declared.
    pub access: Access,
}

impl Slot {
    const fn new(name: &'static str, binding: u32, access: Access) -> Slot {
        Slot {
            name,
            binding,
            access,
        }
    }
}

/// One WGSL file from `shaders/`.
#[derive(Debug)]
// `entries` and `slots` are read by the naga tests below, which hold the
// launchers' names to the WGSL.
#[cfg_attr(not(test), allow(dead_code))]
pub struct Shader {
    /// The file's stem (`shaders/<name>.wgsl`), also the op's name.
    pub name: &'static str,
    /// The WGSL text (any shared prelude from `shaders/common/` included).
    pub source: &'static str,
    /// Its compute entry points.
    pub entries: &'static [&'static str],
    /// Its bindings (group 0).
    pub slots: &'static [Slot],
}

use Access::{Read, ReadWrite, Uniform};

/// `shaders/column_stats.wgsl`: Welford partials per row chunk, then a Chan merge.
pub mod column_stats {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/column_stats_params.rs"));
    /// Pass 1, one f32 column per thread.
    pub const PARTIAL: &str = "column_stats_partial";
    /// Pass 1, four columns per thread (D % 4 == 0).
    pub const PARTIAL_VEC4: &str = "column_stats_partial_vec4";
    /// Pass 2: merge each column's partials.
    pub const FINALIZE: &str = "column_stats_finalize";
    /// `Params`.
    pub const PARAMS: Slot = Slot::new("params", 0, Uniform);
    /// The rows of X this dispatch reads.
    pub const X: Slot = Slot::new("x", 1, Read);
    /// Partials of every chunk of every piece.
    pub const PARTIALS: Slot = Slot::new("partials", 2, ReadWrite);
    /// The 5 x D output.
    pub const OUT: Slot = Slot::new("out", 3, ReadWrite);
    /// X as vec4s.
    pub const X4: Slot = Slot::new("x4", 4, Read);
    /// The per-column shift (1 x D).
    pub const SHIFT: Slot = Slot::new("shift", 5, Read);
    /// Per-column counts of the non-NaN values (1 x D u32, when NaNs are ignored).
    pub const COUNTS: Slot = Slot::new("counts", 6, ReadWrite);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "column_stats",
        source: concat!(
            include_str!("../shaders/common/float.wgsl"),
            include_str!("../shaders/common/welford.wgsl"),
            include_str!("../shaders/column_stats.wgsl")
        ),
        entries: &[PARTIAL, PARTIAL_VEC4, FINALIZE],
        slots: &[PARAMS, X, PARTIALS, OUT, X4, SHIFT, COUNTS],
    };
}

/// `shaders/standardize.wgsl`: centering and scaling by per-column statistics.
pub mod standardize {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/standardize_params.rs"));
    /// `y = f(x)`, one element per thread.
    pub const APPLY: &str = "standardize";
    /// In place, one element per thread.
    pub const APPLY_INPLACE: &str = "standardize_inplace";
    /// `y = f(x)`, one vec4 per thread (D % 4 == 0).
    pub const APPLY_VEC4: &str = "standardize_vec4";
    /// In place, one vec4 per thread.
    pub const APPLY_INPLACE_VEC4: &str = "standardize_inplace_vec4";
    /// `Params`.
    pub const PARAMS: Slot = Slot::new("params", 0, Uniform);
    /// Input.
    pub const X: Slot = Slot::new("x", 1, Read);
    /// The 5 x D statistics.
    pub const STATS: Slot = Slot::new("stats", 2, Read);
    /// Output.
    pub const Y: Slot = Slot::new("y", 3, ReadWrite);
    /// Input and output (in place).
    pub const XY: Slot = Slot::new("xy", 4, ReadWrite);
    /// Input as vec4s.
    pub const X4: Slot = Slot::new("x4", 5, Read);
    /// Output as vec4s.
    pub const Y4: Slot = Slot::new("y4", 6, ReadWrite);
    /// Input and output as vec4s.
    pub const XY4: Slot = Slot::new("xy4", 7, ReadWrite);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "standardize",
        source: concat!(
            include_str!("../shaders/common/float.wgsl"),
            include_str!("../shaders/standardize.wgsl")
        ),
        entries: &[APPLY, APPLY_INPLACE, APPLY_VEC4, APPLY_INPLACE_VEC4],
        slots: &[PARAMS, X, STATS, Y, XY, X4, Y4, XY4],
    };
}

/// `shaders/copy.wgsl`: a bit-exact device copy (also the benchmarks' bandwidth ceiling).
pub mod copy {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/copy_params.rs"));
    /// One f32 per thread.
    pub const COPY: &str = "copy";
    /// One vec4 per thread.
    pub const COPY_VEC4: &str = "copy_vec4";
    /// `Params`.
    pub const PARAMS: Slot = Slot::new("params", 0, Uniform);
    /// Source.
    pub const X: Slot = Slot::new("x", 1, Read);
    /// Destination.
    pub const OUT: Slot = Slot::new("out", 2, ReadWrite);
    /// Source as vec4s.
    pub const X4: Slot = Slot::new("x4", 3, Read);
    /// Destination as vec4s.
    pub const OUT4: Slot = Slot::new("out4", 4, ReadWrite);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "copy",
        source: include_str!("../shaders/copy.wgsl"),
        entries: &[COPY, COPY_VEC4],
        slots: &[PARAMS, X, OUT, X4, OUT4],
    };
}

/// `shaders/init.wgsl`: Philox4x32-10 and the fills built on it.
pub mod init {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/init_params.rs"));
    /// The raw u32 stream.
    pub const RANDOM_BITS: &str = "random_bits";
    /// A constant.
    pub const FILL_CONSTANT: &str = "fill_constant";
    /// Uniforms.
    pub const FILL_UNIFORM: &str = "fill_uniform";
    /// Normals.
    pub const FILL_NORMAL: &str = "fill_normal";
    /// A sparse mask of normals.
    pub const FILL_SPARSE: &str = "fill_sparse";
    /// The truncated normal.
    pub const FILL_TRUNC_NORMAL: &str = "fill_trunc_normal";
    /// `Params`.
    pub const PARAMS: Slot = Slot::new("params", 0, Uniform);
    /// The output (as u32 words).
    pub const OUT: Slot = Slot::new("out", 1, ReadWrite);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "init",
        source: include_str!("../shaders/init.wgsl"),
        entries: &[
            RANDOM_BITS,
            FILL_CONSTANT,
            FILL_UNIFORM,
            FILL_NORMAL,
            FILL_SPARSE,
            FILL_TRUNC_NORMAL,
        ],
        slots: &[PARAMS, OUT],
    };
}

/// `shaders/norm_columns.wgsl`: the norm family's column passes (batch
/// statistics with the running update, apply, eval prepare, every kind's
/// dgamma/dbeta, batch norm's dx).
pub mod norm_columns {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/norm_columns_params.rs"));
    /// Welford partials per (chunk, column).
    pub const STATS_PARTIALS: &str = "stats_partials";
    /// Per channel: merge, statistics, running update.
    pub const STATS_FINALIZE: &str = "stats_finalize";
    /// Statistics from the running averages (eval mode).
    pub const EVAL_PREPARE: &str = "eval_prepare";
    /// `y = xhat * gamma + beta`.
    pub const APPLY: &str = "apply";
    /// sum(dy), sum(dy * xhat) per (chunk, column).
    pub const GRAD_PARTIALS: &str = "grad_partials";
    /// dgamma, dbeta per affine index.
    pub const GRAD_FINALIZE: &str = "grad_finalize";
    /// Batch norm's dx.
    pub const DX: &str = "dx";
    /// `Params`.
    pub const PARAMS: Slot = Slot::new("p", 0, Uniform);
    /// Input.
    pub const X: Slot = Slot::new("x", 1, Read);
    /// Upstream gradient.
    pub const DY: Slot = Slot::new("dy", 2, Read);
    /// Welford partials.
    pub const PARTIALS: Slot = Slot::new("partials", 3, ReadWrite);
    /// Per statistics group (shift, mean - shift, invstd, var).
    pub const STATS: Slot = Slot::new("stats", 4, ReadWrite);
    /// Per channel (running mean, running var, batches, unused).
    pub const RUNNING: Slot = Slot::new("running", 5, ReadWrite);
    /// gamma.
    pub const GAMMA: Slot = Slot::new("gamma", 6, Read);
    /// beta.
    pub const BETA: Slot = Slot::new("beta", 7, Read);
    /// y or dx.
    pub const OUT: Slot = Slot::new("out", 8, ReadWrite);
    /// Gradient partials.
    pub const GPARTIALS: Slot = Slot::new("gpartials", 9, ReadWrite);
    /// dgamma.
    pub const DGAMMA: Slot = Slot::new("dgamma", 10, ReadWrite);
    /// dbeta.
    pub const DBETA: Slot = Slot::new("dbeta", 11, ReadWrite);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "norm_columns",
        source: concat!(
            include_str!("../shaders/common/float.wgsl"),
            include_str!("../shaders/common/welford.wgsl"),
            include_str!("../shaders/common/reduce.wgsl"),
            include_str!("../shaders/common/scaled.wgsl"),
            include_str!("../shaders/norm_columns.wgsl")
        ),
        entries: &[
            STATS_PARTIALS,
            STATS_FINALIZE,
            EVAL_PREPARE,
            APPLY,
            GRAD_PARTIALS,
            GRAD_FINALIZE,
            DX,
        ],
        slots: &[
            PARAMS, X, DY, PARTIALS, STATS, RUNNING, GAMMA, BETA, OUT, GPARTIALS, DGAMMA, DBETA,
        ],
    };
}

/// `shaders/norm_rows.wgsl`: the row passes of layer, instance and group norm.
pub mod norm_rows {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/norm_rows_params.rs"));
    /// Statistics and apply, per row.
    pub const ROW_FORWARD: &str = "row_forward";
    /// dx, per row.
    pub const ROW_BACKWARD: &str = "row_backward";
    /// `RowParams`.
    pub const PARAMS: Slot = Slot::new("p", 0, Uniform);
    /// Input.
    pub const X: Slot = Slot::new("x", 1, Read);
    /// Upstream gradient.
    pub const DY: Slot = Slot::new("dy", 2, Read);
    /// Per row (shift, mean - shift, invstd, var).
    pub const STATS: Slot = Slot::new("stats", 4, ReadWrite);
    /// gamma.
    pub const GAMMA: Slot = Slot::new("gamma", 6, Read);
    /// beta.
    pub const BETA: Slot = Slot::new("beta", 7, Read);
    /// y or dx.
    pub const OUT: Slot = Slot::new("out", 8, ReadWrite);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "norm_rows",
        source: concat!(
            include_str!("../shaders/common/float.wgsl"),
            include_str!("../shaders/common/welford.wgsl"),
            include_str!("../shaders/common/reduce.wgsl"),
            include_str!("../shaders/common/scaled.wgsl"),
            include_str!("../shaders/norm_rows.wgsl")
        ),
        entries: &[ROW_FORWARD, ROW_BACKWARD],
        slots: &[PARAMS, X, DY, STATS, GAMMA, BETA, OUT],
    };
}

/// `shaders/norm_rows_subgroup.wgsl`: the same row passes with one subgroup per
/// row (no workgroup barriers), for adapters with wgpu's `SUBGROUP` feature.
/// Built from the preludes, `shaders/norm_rows.wgsl` (whose bindings and helpers
/// it uses) and the file itself. (naga 30 takes subgroup operations without
/// WGSL's `enable subgroups;`, which it rejects as not yet supported; the
/// device's feature gates them, and the launcher uses this shader only on a
/// device that has it.)
pub mod norm_rows_subgroup {
    pub use super::norm_rows::{BETA, DY, GAMMA, OUT, PARAMS, STATS, X};
    use super::*;
    /// Statistics and apply, a row per subgroup.
    pub const ROW_FORWARD: &str = "row_forward_subgroup";
    /// dx, a row per subgroup.
    pub const ROW_BACKWARD: &str = "row_backward_subgroup";
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "norm_rows_subgroup",
        source: concat!(
            include_str!("../shaders/common/float.wgsl"),
            include_str!("../shaders/common/welford.wgsl"),
            include_str!("../shaders/common/reduce.wgsl"),
            include_str!("../shaders/common/scaled.wgsl"),
            include_str!("../shaders/norm_rows.wgsl"),
            include_str!("../shaders/norm_rows_subgroup.wgsl")
        ),
        entries: &[
            super::norm_rows::ROW_FORWARD,
            super::norm_rows::ROW_BACKWARD,
            ROW_FORWARD,
            ROW_BACKWARD,
        ],
        slots: &[PARAMS, X, DY, STATS, GAMMA, BETA, OUT],
    };
}

/// `shaders/covariance.wgsl`: upper-triangle tiles of (X - mu)^T (X - mu) per
/// row slice, then a finalize pass that sums the slices, scales and mirrors.
pub mod covariance {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/covariance_params.rs"));
    /// Pass 1: tiles per slice.
    pub const PARTIAL: &str = "covariance_partial";
    /// Pass 2: sum the slices, correct, scale, mirror.
    pub const FINALIZE: &str = "covariance_finalize";
    /// X.
    pub const X: Slot = Slot::new("x", 0, Read);
    /// The shift (row 0 of a matrix with D columns).
    pub const MEAN: Slot = Slot::new("mean", 1, Read);
    /// Tile partials per slice.
    pub const PARTIALS: Slot = Slot::new("partials", 2, ReadWrite);
    /// `Params`.
    pub const PARAMS: Slot = Slot::new("params", 3, Uniform);
    /// The D x D output.
    pub const COV: Slot = Slot::new("cov", 4, ReadWrite);
    /// Column sums per slice.
    pub const COLSUMS: Slot = Slot::new("colsums", 5, ReadWrite);
    /// X as vec4s.
    pub const X4: Slot = Slot::new("x4", 6, Read);
    /// Pass 0: each column's power-of-two scale from its extremes.
    pub const SCALES: &str = "covariance_scales";
    /// A column_stats buffer (rows 3 and 4: min and max).
    pub const RANGE: Slot = Slot::new("range", 7, Read);
    /// Each column's scale (written by pass 0, read by passes 1 and 2).
    pub const SCALES_OUT: Slot = Slot::new("scales", 8, ReadWrite);
    /// Each column's largest scaled |x - m| per slice.
    pub const COLMAX: Slot = Slot::new("colmax", 9, ReadWrite);
    /// The column means and ranges from the slices (after pass 1, for a
    /// one-pass fit).
    pub const MOMENTS: &str = "covariance_moments";
    /// Its 2 x D output.
    pub const MOMENTS_OUT: Slot = Slot::new("moments", 10, ReadWrite);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "covariance",
        source: concat!(
            include_str!("../shaders/common/float.wgsl"),
            include_str!("../shaders/common/tile.wgsl"),
            include_str!("../shaders/covariance.wgsl")
        ),
        entries: &[SCALES, PARTIAL, FINALIZE, MOMENTS],
        slots: &[
            X,
            MEAN,
            PARTIALS,
            PARAMS,
            COV,
            COLSUMS,
            X4,
            RANGE,
            SCALES_OUT,
            COLMAX,
            MOMENTS_OUT,
        ],
    };
}

/// `shaders/matmul.wgsl`: the general product `act(((x - center) @ w) * scale + bias)`.
pub mod matmul {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/matmul_params.rs"));
    /// The product (split-K: each z-slice's raw partial product).
    pub const MATMUL: &str = "matmul";
    /// Split-K's second pass: sum the slices, then scale, bias, activation.
    pub const SPLIT_SUM: &str = "matmul_split_sum";
    /// x.
    pub const X: Slot = Slot::new("x", 0, Read);
    /// w.
    pub const W: Slot = Slot::new("w", 1, Read);
    /// center (length K).
    pub const CENTER: Slot = Slot::new("center", 2, Read);
    /// scale (length M).
    pub const SCALE: Slot = Slot::new("scale", 3, Read);
    /// bias (length M).
    pub const BIAS: Slot = Slot::new("bias", 4, Read);
    /// The output.
    pub const OUT: Slot = Slot::new("out", 5, ReadWrite);
    /// `Params`.
    pub const PARAMS: Slot = Slot::new("params", 6, Uniform);
    /// x as vec4s.
    pub const X4: Slot = Slot::new("x4", 7, Read);
    /// w as vec4s.
    pub const W4: Slot = Slot::new("w4", 8, Read);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "matmul",
        source: concat!(
            include_str!("../shaders/common/float.wgsl"),
            include_str!("../shaders/common/tile.wgsl"),
            include_str!("../shaders/matmul.wgsl")
        ),
        entries: &[MATMUL, SPLIT_SUM],
        slots: &[X, W, CENTER, SCALE, BIAS, OUT, PARAMS, X4, W4],
    };
}

/// `shaders/train.wgsl`: the training loop's small kernels (ReLU forward and
/// backward, softmax cross-entropy, SGD, row gather).
pub mod train {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/train_params.rs"));
    /// `out = max(x, 0)`.
    pub const RELU: &str = "relu";
    /// `out = dy * (y > 0)`.
    pub const RELU_BACKWARD: &str = "relu_backward";
    /// The SGD (momentum) update in place.
    pub const SGD: &str = "sgd";
    /// `out[r] = x[index[r]]`.
    pub const GATHER_ROWS: &str = "gather_rows";
    /// Softmax cross-entropy: its gradient and the loss / accuracy sums.
    pub const SOFTMAX_XENT: &str = "softmax_xent";
    /// `Params`.
    pub const PARAMS: Slot = Slot::new("p", 0, Uniform);
    /// Input (relu), source (gather_rows).
    pub const X: Slot = Slot::new("x", 1, Read);
    /// Upstream gradient (relu_backward).
    pub const DY: Slot = Slot::new("dy", 2, Read);
    /// ReLU's forward output (relu_backward).
    pub const Y: Slot = Slot::new("y", 3, Read);
    /// Output (relu, relu_backward, gather_rows).
    pub const OUT: Slot = Slot::new("out", 4, ReadWrite);
    /// Logits (N x C).
    pub const LOGITS: Slot = Slot::new("logits", 5, Read);
    /// Class indices as f32 (N).
    pub const LABELS: Slot = Slot::new("labels", 6, Read);
    /// The logits' gradient.
    pub const DLOGITS: Slot = Slot::new("dlogits", 7, ReadWrite);
    /// Loss / correct / row sums.
    pub const METRICS: Slot = Slot::new("metrics", 8, ReadWrite);
    /// The parameter's gradient (sgd).
    pub const GRAD: Slot = Slot::new("grad", 9, Read);
    /// The parameter, updated in place (sgd).
    pub const PARAM: Slot = Slot::new("param", 10, ReadWrite);
    /// The momentum buffer (sgd).
    pub const VELOCITY: Slot = Slot::new("velocity", 11, ReadWrite);
    /// Row numbers as f32 (gather_rows).
    pub const INDEX: Slot = Slot::new("index", 12, Read);
    /// The shader.
    pub static SHADER: Shader = Shader {
        name: "train",
        source: concat!(
            include_str!("../shaders/common/float.wgsl"),
            include_str!("../shaders/train.wgsl")
        ),
        entries: &[RELU, RELU_BACKWARD, SGD, GATHER_ROWS, SOFTMAX_XENT],
        slots: &[
            PARAMS, X, DY, Y, OUT, LOGITS, LABELS, DLOGITS, METRICS, GRAD, PARAM, VELOCITY, INDEX,
        ],
    };
}

/// Every shader, for validation and for warming the pipeline cache.
#[cfg(test)]
pub(crate) static ALL: &[&Shader] = &[
    &column_stats::SHADER,
    &copy::SHADER,
    &standardize::SHADER,
    &init::SHADER,
    &norm_columns::SHADER,
    &norm_rows::SHADER,
    &norm_rows_subgroup::SHADER,
    &covariance::SHADER,
    &matmul::SHADER,
    &train::SHADER,
];

/// The layout of a Rust mirror of a WGSL struct: its size and each named
/// field's byte offset (padding fields, named `_...`, are left out).
#[cfg(test)]
pub(crate) struct Layout {
    pub shader: &'static Shader,
    pub wgsl_struct: &'static str,
    pub size: usize,
    pub fields: Vec<(&'static str, usize)>,
}

/// Declares a kernel's uniform parameters: a `#[repr(C)]`, `Pod` struct
/// that mirrors the WGSL struct of the same name in `shader`, and (in tests)
/// its [`Layout`], which `params_mirror_their_wgsl_structs` checks against
/// the WGSL through naga. Fields named `_...` are padding. build.rs writes
/// one invocation per shader from the WGSL struct (`<stem>_params.rs` in
/// `OUT_DIR`, included by the shader's module here).
///
/// `kernel_params! { SHADER; pub(crate) struct Params { n: u32, ... } }`
macro_rules! kernel_params {
    (
        $shader:path;
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($(#[$fmeta])* pub(crate) $field: $ty),* }

        #[cfg(test)]
        impl $name {
            /// The struct's layout, to check against its WGSL mirror.
            pub(crate) fn layout() -> $crate::shaders::Layout {
                $crate::shaders::Layout {
                    shader: &$shader,
                    wgsl_struct: stringify!($name),
                    size: std::mem::size_of::<$name>(),
                    fields: [$((stringify!($field), std::mem::offset_of!($name, $field))),*]
                        .into_iter()
                        .filter(|(name, _)| !name.starts_with('_'))
                        .collect(),
                }
            }
        }
    };
}
pub(crate) use kernel_params;

#[cfg(test)]
mod tests {
    use super::*;

    fn module(s: &Shader) -> naga::Module {
        naga::front::wgsl::parse_str(s.source)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(s.source, s.name)))
    }

    /// Every named binding exists in its shader with that number and access,
    /// every binding of the shader is named, and every named entry point exists.
    #[test]
    fn named_slots_and_entries_match_the_wgsl() {
        for s in ALL {
            let m = module(s);
            let mut seen = Vec::new();
            for (_, var) in m.global_variables.iter() {
                let Some(binding) = &var.binding else { continue };
                let name = var.name.clone().unwrap_or_default();
                let access = match var.space {
                    naga::AddressSpace::Uniform => Access::Uniform,
                    naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => {
                        Access::ReadWrite
                    }
                    naga::AddressSpace::Storage { .. } => Access::Read,
                    other => panic!("{}: {name}: unexpected space {other:?}", s.name),
                };
                assert_eq!(binding.group, 0, "{}: {name}", s.name);
                let slot =
                    s.slots.iter().find(|slot| slot.name == name).unwrap_or_else(|| {
                        panic!("{}: binding {name} is not named in src/shaders.rs", s.name)
                    });
                assert_eq!(slot.binding, binding.binding, "{}: {name}", s.name);
                assert_eq!(slot.access, access, "{}: {name}", s.name);
                seen.push(name);
            }
            for slot in s.slots {
                assert!(
                    seen.iter().any(|n| n == slot.name),
                    "{}: no binding {}",
                    s.name,
                    slot.name
                );
            }
            let entries: Vec<&str> = m.entry_points.iter().map(|e| e.name.as_str()).collect();
            for e in s.entries {
                assert!(entries.contains(e), "{}: no entry point {e}", s.name);
            }
            for e in &entries {
                assert!(s.entries.contains(e), "{}: entry point {e} is not named", s.name);
            }
        }
    }

    /// Every shader translates to the languages of the other backends: SPIR-V
    /// (Vulkan), MSL (Metal) and HLSL (DX12), with its override constants
    /// at their defaults, so Metal and DX12 portability is checked on a
    /// machine that has neither. (wgpu runs the same naga translation when
    /// it creates a pipeline on those backends.)
    #[test]
    fn every_shader_translates_to_spirv_msl_and_hlsl() {
        use naga::back::{hlsl, msl, pipeline_constants, spv};
        use naga::valid::{Capabilities, ValidationFlags, Validator};
        for s in ALL {
            let m = module(s);
            let info = Validator::new(ValidationFlags::all(), Capabilities::all())
                .validate(&m)
                .unwrap_or_else(|e| panic!("{}: {}", s.name, e.emit_to_string_with_path(s.source, s.name)));
            let (m, info) = pipeline_constants::process_overrides(&m, &info, None, &Default::default())
                .unwrap_or_else(|e| panic!("{}: overrides: {e}", s.name));
            // Subgroup operations need SPIR-V 1.3, MSL 2.1 (simd-groups) and
            // shader model 6.0 (wave intrinsics).
            let spv_options = spv::Options {
                lang_version: (1, 3),
                ..Default::default()
            };
            let words = spv::write_vec(&m, &info, &spv_options, None)
                .unwrap_or_else(|e| panic!("{}: SPIR-V: {e}", s.name));
            assert!(!words.is_empty());
            let msl_options = msl::Options {
                lang_version: (2, 4),
                ..Default::default()
            };
            let (metal, _) = msl::write_string(&m, &info, &msl_options, &msl::PipelineOptions::default())
                .unwrap_or_else(|e| panic!("{}: MSL: {e}", s.name));
            assert!(metal.contains("kernel"), "{}: no kernel in the MSL", s.name);
            let hlsl_options = hlsl::Options {
                shader_model: hlsl::ShaderModel::V6_0,
                ..Default::default()
            };
            let mut text = String::new();
            hlsl::Writer::new(&mut text, &hlsl_options, &hlsl::PipelineOptions::default())
                .write(&m, &info, None)
                .unwrap_or_else(|e| panic!("{}: HLSL: {e}", s.name));
            assert!(
                text.contains("numthreads"),
                "{}: no compute entry in the HLSL",
                s.name
            );
        }
    }

    /// Every Rust `Params` mirror has its WGSL struct's size and field offsets.
    #[test]
    fn params_mirror_their_wgsl_structs() {
        for l in crate::ops::params_layouts() {
            let m = module(l.shader);
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(m.to_ctx()).unwrap();
            let (handle, ty) = m
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some(l.wgsl_struct))
                .unwrap_or_else(|| panic!("{}: no struct {}", l.shader.name, l.wgsl_struct));
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{} is not a struct", l.wgsl_struct)
            };
            assert_eq!(
                *span as usize, l.size,
                "{}::{}: size",
                l.shader.name, l.wgsl_struct
            );
            assert_eq!(layouter[handle].size as usize, l.size);
            for (name, offset) in &l.fields {
                let member = members
                    .iter()
                    .find(|mm| mm.name.as_deref() == Some(name))
                    .unwrap_or_else(|| panic!("{}::{}: no field {name}", l.shader.name, l.wgsl_struct));
                assert_eq!(
                    member.offset as usize, *offset,
                    "{}::{}.{name}",
                    l.shader.name, l.wgsl_struct
                );
            }
            let named = members
                .iter()
                .filter(|mm| !mm.name.as_deref().unwrap_or("_").starts_with('_'))
                .count();
            assert_eq!(
                named,
                l.fields.len(),
                "{}::{}: fields not mirrored",
                l.shader.name,
                l.wgsl_struct
            );
        }
    }

    #[test]
    fn every_file_in_shaders_is_listed() {
        let listed: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "wgsl") {
                let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
                assert!(
                    listed.contains(&stem.as_str()),
                    "shaders/{stem}.wgsl is not in ALL"
                );
            }
        }
    }

    #[test]
    fn every_shared_prelude_is_used() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/common");
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                ALL.iter().any(|s| s.source.contains(&text)),
                "{} is prepended to no shader in ALL",
                p.display()
            );
        }
    }
}
