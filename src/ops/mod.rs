//! GPU launchers: one module per kernel family in `shaders/`. Every op has
//! one recording form, `encode_<op>_into(gpu, encoder, inputs, outputs,
//! &options)`, which records into a caller's `wgpu::CommandEncoder` (a host
//! batches gpuprep's work with its own in one submit), and one convenience
//! form, `<op>(gpu, inputs, &options)`, which allocates the outputs, records
//! through [`Gpu::run`](crate::Gpu::run) and submits, waiting for nothing.
//!
//! Inputs and outputs are [`GpuMatrix`](crate::GpuMatrix) views of any size:
//! each launcher splits the rows into pieces that fit one storage binding and
//! one buffer, and reductions merge the pieces' partials exactly, so a split
//! is invisible to the caller.

pub mod batchnorm;
pub mod column_stats;
pub mod copy;
pub mod covariance;
pub mod init;
pub mod matmul;
pub mod norm;
pub mod pca;
pub mod standardize;
pub mod train;

pub use batchnorm::BatchNorm;
pub use column_stats::{
    column_stats, column_summary, encode_column_stats_into, ColumnStats, ColumnStatsOptions, Stat,
};
pub use copy::{copy, encode_copy_into};
pub use covariance::{
    covariance, encode_covariance_into, CovarianceConfig, CovarianceOptions, CovarianceStream,
};
pub use init::{encode_fill_into, encode_init_into, FillOptions};
pub use matmul::{encode_matmul_into, matmul, Activation, MatmulConfig, MatmulOptions};
pub use norm::{Norm, NormForward, NormGrads, NormKind, NormStats};
pub use pca::Pca;
pub use standardize::{encode_standardize_into, standardize};

/// Every launcher's `Params` mirror, for the naga layout test in `shaders.rs`.
#[cfg(test)]
pub(crate) fn params_layouts() -> Vec<crate::shaders::Layout> {
    vec![
        column_stats::Params::layout(),
        standardize::Params::layout(),
        copy::Params::layout(),
        init::Params::layout(),
        covariance::Params::layout(),
        matmul::Params::layout(),
        train::Params::layout(),
        norm::columns::Params::layout(),
        norm::rows::RowParams::layout(),
    ]
}
