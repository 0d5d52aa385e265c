//! CPU twins: each computes the same function as the GPU op of the same name,
//! on ndarray, accumulating in f64. Tests hold the GPU to these.

pub mod batchnorm;
pub mod column_stats;
pub mod covariance;
pub mod init;
pub mod matmul;
pub mod norm;
pub mod pca;
pub mod standardize;

pub use column_stats::{column_stats, ColumnSummary};
pub use covariance::covariance;
pub use matmul::{matmul, Activation, MatmulOptions};
pub use pca::{NComponents, PcaModel, PcaOptions, Whitening};
pub use standardize::{standardize, StandardizeOptions};
