//! CPU twins: each computes the same function as the GPU op of the same name,
//! on ndarray, accumulating in f64. Tests hold the GPU to these. Nothing on the
//! GPU path runs from here: the options, models and plans both sides share
//! live in [`crate::model`].

pub mod batchnorm;
pub mod column_stats;
pub mod covariance;
pub mod init;
pub mod matmul;
pub mod norm;
pub mod pca;
pub mod standardize;
pub mod train;

pub use column_stats::{column_stats, column_stats_with};
pub use covariance::covariance;
pub use matmul::{matmul, MatmulOptions};
pub use standardize::standardize;

/// Checks that `bytes` bytes of host memory can be allocated now (the
/// system's available memory, a cgroup's limit, the allocator's answer), so
/// a caller sizing buffers from user input can refuse before it allocates.
///
/// # Errors
/// [`crate::Error::ExceedsLimit`] naming `op`.
pub fn check_host_bytes(op: &'static str, bytes: u128) -> crate::Result<()> {
    crate::alloc::check_bytes(op, bytes)
}
