//! Every WGSL source gpuprep ships, in one list. A unit test parses and
//! validates each with naga; the pipeline cache keys on [`Shader::name`].
//!
//! Code two kernel families share lives once in `shaders/common/` and is
//! prepended to each family's file at compile time (`concat!`), so the source
//! a pipeline sees is the prelude followed by the op's file.

/// One WGSL file from `shaders/`.
#[derive(Debug)]
pub struct Shader {
    /// The file's stem (`shaders/<name>.wgsl`), also the op's name.
    pub name: &'static str,
    /// The WGSL text (any shared prelude from `shaders/common/` included).
    pub source: &'static str,
}

/// Column statistics: Welford partials per row chunk, then a Chan merge.
pub static COLUMN_STATS: Shader = Shader {
    name: "column_stats",
    source: include_str!("../shaders/column_stats.wgsl"),
};

/// Centering and scaling by per-column statistics.
pub static STANDARDIZE: Shader = Shader {
    name: "standardize",
    source: include_str!("../shaders/standardize.wgsl"),
};

/// Weight initialization: Philox4x32-10 and the fills built on it.
pub static INIT: Shader = Shader {
    name: "init",
    source: include_str!("../shaders/init.wgsl"),
};

/// Batch norm: Welford partials + per-channel finalize (running statistics),
/// apply, and the closed-form backward (gradient partials, finalize, dx).
pub static BATCHNORM: Shader = Shader {
    name: "batchnorm",
    source: concat!(
        include_str!("../shaders/common/welford.wgsl"),
        include_str!("../shaders/batchnorm.wgsl")
    ),
};

/// Layer, instance and group norm: one row-normalization kernel family.
pub static NORM: Shader = Shader {
    name: "norm",
    source: concat!(
        include_str!("../shaders/common/welford.wgsl"),
        include_str!("../shaders/norm.wgsl")
    ),
};

/// Covariance: upper-triangle tiles of (X - mu)^T (X - mu) per row slice, then
/// a finalize pass that sums the slices, scales and mirrors.
pub static COVARIANCE: Shader = Shader {
    name: "covariance",
    source: include_str!("../shaders/covariance.wgsl"),
};

/// The general product ((x - center) @ w) * scale + bias (PCA transforms, x @ w).
pub static MATMUL: Shader = Shader {
    name: "matmul",
    source: include_str!("../shaders/matmul.wgsl"),
};

/// A bit-exact device copy of a matrix (also the bandwidth ceiling of the benchmarks).
pub static COPY: Shader = Shader {
    name: "copy",
    source: include_str!("../shaders/copy.wgsl"),
};

/// Every shader, for validation and for warming the pipeline cache.
pub static ALL: &[&Shader] = &[
    &COLUMN_STATS,
    &COPY,
    &STANDARDIZE,
    &INIT,
    &BATCHNORM,
    &NORM,
    &COVARIANCE,
    &MATMUL,
];
