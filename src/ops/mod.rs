//! GPU launchers: one module per shader in `shaders/`, each with a
//! convenience form that submits and an `encode_*` form that records into a
//! caller's `wgpu::CommandEncoder`.

pub mod batchnorm;
pub mod column_stats;
pub mod copy;
pub mod covariance;
pub mod init;
pub mod matmul;
pub mod norm;
pub mod pca;
pub mod standardize;

pub use batchnorm::BatchNorm;
pub use column_stats::{column_stats, encode_column_stats, encode_column_stats_into, ColumnStats, Stat};
pub use copy::{copy, encode_copy_into};
pub use covariance::{covariance, encode_covariance, encode_covariance_into, CovarianceConfig};
pub use matmul::{encode_matmul, encode_matmul_into, matmul, Activation, MatmulConfig, MatmulOptions};
pub use norm::{Norm, NormForward, NormGrads, NormKind, NormStats};
pub use pca::Pca;
pub use standardize::{encode_standardize, encode_standardize_inplace, standardize, standardize_inplace};
