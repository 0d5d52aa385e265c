//! GPU launchers: one module per shader in `shaders/`, each with a
//! convenience form that submits and an `encode_*` form that records into a
//! caller's `wgpu::CommandEncoder`.

pub mod batchnorm;
pub mod column_stats;
pub mod init;
pub mod norm;
pub mod standardize;

pub use batchnorm::BatchNorm;
pub use column_stats::{column_stats, encode_column_stats, encode_column_stats_into, ColumnStats, Stat};
pub use norm::{Norm, NormForward, NormGrads, NormKind, NormStats};
pub use standardize::{encode_standardize, encode_standardize_inplace, standardize, standardize_inplace};
