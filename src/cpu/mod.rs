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

/// Rows of `x` a twin turns to f64, centres and multiplies per block.
pub(crate) const ROW_BLOCK: usize = 256;

/// Hands `f` the rows of `x` in blocks of at most [`ROW_BLOCK`]: for each, its
/// first row's index and a `K x rows` matrix whose column `r` is row
/// `start + r` of `x` in f64, less `center` where given (column-major, so
/// filling it reads `x` in order, and no `N x K` copy is made).
pub(crate) fn row_blocks<A: Copy + Into<f64>>(
    x: ndarray::ArrayView2<'_, A>,
    center: Option<ndarray::ArrayView1<'_, f64>>,
    mut f: impl FnMut(usize, faer::MatRef<'_, f64>),
) {
    let (n, k) = x.dim();
    let mut block = faer::Mat::<f64>::zeros(k, ROW_BLOCK.min(n));
    let mut start = 0;
    while start < n {
        let rows = ROW_BLOCK.min(n - start);
        for r in 0..rows {
            let col = block.col_as_slice_mut(r);
            let row = x.row(start + r);
            match center {
                Some(c) => {
                    for ((o, &v), &cv) in col.iter_mut().zip(row.iter()).zip(c.iter()) {
                        *o = v.into() - cv;
                    }
                }
                None => {
                    for (o, &v) in col.iter_mut().zip(row.iter()) {
                        *o = v.into();
                    }
                }
            }
        }
        f(start, block.as_ref().subcols(0, rows));
        start += rows;
    }
}

/// Checks that `bytes` bytes of host memory can be allocated now (the
/// system's available memory, a cgroup's limit, the allocator's answer), so
/// a caller sizing buffers from user input can refuse before it allocates.
///
/// # Errors
/// [`crate::Error::ExceedsLimit`] naming `op`.
pub fn check_host_bytes(op: &'static str, bytes: u128) -> crate::Result<()> {
    crate::alloc::check_bytes(op, bytes)
}
