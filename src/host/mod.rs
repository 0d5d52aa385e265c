//! The fast CPU path: the ops users run on the host (`--device cpu` and the
//! library's CPU entry points), one file per op, named as the GPU op.
//!
//! This is not the f64 reference in [`crate::cpu`] that the tests hold every
//! path to. Data stays in its own type (f32 or f64; an f64 input is computed
//! from f64, never rounded to f32 first), nothing makes a full-size f64 copy,
//! and the work is split over row blocks on all cores (rayon):
//!
//! | module | computes | how |
//! | --- | --- | --- |
//! | [`column_stats`](mod@column_stats) | [`ColumnMoments`] / [`ColumnSummary`](crate::ColumnSummary) | one read of X: two passes per cache-sized block (sum, then squared deviations, in f64), Chan's merge between blocks |
//! | [`standardize`](mod@standardize) | `(x - mean) / std` | one read and one write, in f64 per element, rounded once |
//! | [`covariance`](mod@covariance) | [`CoMoments`] / covariance | one read of X: blocks shifted by a mean, their lower-triangle products in the input's type (faer's, or for f32 from `D = 384` an AVX-512 kernel of our own), accumulated in f64 |
//! | [`matmul`](mod@matmul) | `act(((x - center) @ w) * scale + bias)` | centred row blocks through faer in the input's type, written into the output in place |
//! | [`batchnorm`](mod@batchnorm) | [`BatchNorm`]: training and eval forward, backward on `(N, C)` or `(N, C, H, W, ...)` | the statistics as [`column_stats()`], then one read and one write; backward: one read of `x` and `dy` for the two sums (f64, per block), one more for `dx` |
//! | [`norm`](mod@norm) | [`norm_forward`] / [`norm_backward`]: layer, instance, group (and batch) norm | each run of consecutive elements read twice in cache for its statistics, then once more; backward: two reads of `x` and `dy` per run, `dgamma` / `dbeta` per block of runs in f64 |
//! | [`pca`](mod@pca) | fit, transform, inverse transform | [`comoments`], the shared eigendecomposition, [`matmul()`] |
//!
//! Accuracy (the bars of DESIGN.md, checked in `tests/host.rs` against the
//! twins): on f32 data with a large offset (`1e4 + N(0, 1)`) means agree to
//! `1e-6` and variances and covariances to `1e-5` relative; on f64 data they
//! agree to rounding.
//!
//! The elementwise loops are written so the compiler vectorizes them, and are
//! compiled twice: for the baseline target and for AVX2 + FMA, chosen at run
//! time (the crate is built for plain x86-64). No result depends on which ran:
//! each loop keeps one accumulator per column, so no sum is reordered.

pub mod batchnorm;
pub mod column_stats;
pub mod covariance;
mod gram;
pub mod matmul;
pub mod norm;
pub mod pca;
pub mod sparse;
pub mod standardize;
pub(crate) mod symm;
pub mod weighted_moments;

pub use batchnorm::{BatchNorm, BatchNormGrads};
pub use column_stats::{column_moments, column_moments_skip_nan, column_stats};
pub use covariance::{comoments, covariance, CoMomentsStream};
pub use matmul::{matmul, matmul_into, MatmulOptions, MatmulPlan};
pub use norm::{norm_backward, norm_forward};
pub use sparse::{sparse_column_moments, sparse_comoments, sparse_gram_is_accurate};
pub use standardize::{standardize, standardize_inplace};
pub use weighted_moments::{column_moments_skip_nan_weighted, sparse_column_moments_skip_nan, Csr, CsrIndex};

pub use crate::model::moments::{CoMoments, ColumnMoments, NanMoments, WeightedMoments};

use ndarray::{Array, Array2, ArrayView2, Dimension};

mod sealed {
    use faer::linalg::matmul::triangular::{self, BlockStructure};
    use faer::{Accum, MatMut, MatRef, Par};

    /// What the host path needs of an element type besides arithmetic: faer's
    /// products for it. Private, so [`super::HostFloat`] is sealed and faer
    /// stays out of the public API.
    pub trait Sealed:
        Copy
        + Send
        + Sync
        + PartialOrd
        + Default
        + std::fmt::Debug
        + std::ops::Sub<Output = Self>
        + std::ops::AddAssign
        + super::gram::OwnGram
        + 'static
    {
        /// `dst (+)= lhs @ rhs`.
        fn product(
            dst: MatMut<'_, Self>,
            beta: Accum,
            lhs: MatRef<'_, Self>,
            rhs: MatRef<'_, Self>,
            par: Par,
        );
        /// The lower triangle (diagonal included) of `gram (+)= B^T B` for
        /// the `k` rows `B` of `d` values in `rows` (row-major), `gram` being
        /// `d x d` column-major with leading dimension `ld` (faer's
        /// product). Entries above the diagonal are left alone.
        fn gram_lower(
            gram: &mut [Self],
            ld: usize,
            rows: &[Self],
            shape: (usize, usize),
            beta: Accum,
            par: Par,
        );
    }

    macro_rules! sealed {
        ($t:ty) => {
            impl Sealed for $t {
                fn product(
                    dst: MatMut<'_, $t>,
                    beta: Accum,
                    lhs: MatRef<'_, $t>,
                    rhs: MatRef<'_, $t>,
                    par: Par,
                ) {
                    faer::linalg::matmul::matmul(dst, beta, lhs, rhs, 1.0, par);
                }
                fn gram_lower(
                    gram: &mut [$t],
                    ld: usize,
                    rows: &[$t],
                    (k, d): (usize, usize),
                    beta: Accum,
                    par: Par,
                ) {
                    // Row-major k x d is column-major d x k: the columns are the rows.
                    let lhs = MatRef::from_column_major_slice(&rows[..k * d], d, k);
                    triangular::matmul(
                        MatMut::from_column_major_slice_with_stride_mut(gram, d, d, ld),
                        BlockStructure::TriangularLower,
                        beta,
                        lhs,
                        BlockStructure::Rectangular,
                        lhs.transpose(),
                        BlockStructure::Rectangular,
                        1.0,
                        par,
                    );
                }
            }
        };
    }
    sealed!(f32);
    sealed!(f64);
}

/// The element types of the host path: `f32` and `f64` (sealed). Results come
/// back in the input's type; an f64 input is computed in f64 throughout.
pub trait HostFloat: sealed::Sealed {
    /// The type's name ("f32", "f64").
    const NAME: &'static str;
    /// The largest finite value.
    const MAX: Self;
    /// Widens to f64 (exact).
    fn to_f64(self) -> f64;
    /// Rounds an f64 to this type (to nearest).
    fn from_f64(v: f64) -> Self;
}

impl HostFloat for f32 {
    const NAME: &'static str = "f32";
    const MAX: Self = f32::MAX;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl HostFloat for f64 {
    const NAME: &'static str = "f64";
    const MAX: Self = f64::MAX;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Runs `f` compiled for AVX2 and FMA where the CPU has them, else as built.
/// `f` must be `#[inline(always)]`-friendly: a closure called once is inlined
/// into the AVX2 copy, so its loops are vectorized for 256-bit registers.
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked above), all that
            // `with_avx2` is compiled to assume.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Whether [`avx2_fn!`]'s AVX2 copy may run here.
#[inline(always)]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a function generic over the element type whose body is compiled
/// twice, for AVX2 and FMA and as built, and runs the first where the CPU
/// has them. Unlike [`dispatch`], whose closure the inliner leaves out of the
/// AVX2 copy once it holds loops (those then run in SSE2), the body here is
/// the AVX2 copy's own.
macro_rules! avx2_fn {
    (
        $(#[$meta:meta])*
        fn $name:ident<$t:ident: $bound:path>($($arg:ident: $ty:ty),* $(,)?) $body:block
    ) => {
        $crate::host::avx2_fn! {
            $(#[$meta])*
            fn $name<$t: $bound>($($arg: $ty),*) -> () $body
        }
    };
    (
        $(#[$meta:meta])*
        fn $name:ident<$t:ident: $bound:path>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        fn $name<$t: $bound>($($arg: $ty),*) -> $ret {
            #[allow(clippy::too_many_arguments)]
            #[inline(always)]
            fn body<$t: $bound>($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2,fma")]
            fn avx2<$t: $bound>($($arg: $ty),*) -> $ret {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::host::has_avx2() {
                // SAFETY: the CPU has AVX2 and FMA (checked above), all that
                // `avx2` is compiled to assume.
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(crate) use avx2_fn;

/// The rows of `x` as one contiguous row-major slice: `x`'s own memory where
/// it is in standard layout, else a copy in `scratch` (a block, never the
/// whole matrix: callers pass row blocks).
pub(crate) fn contiguous<'a, T: Copy>(x: &'a ArrayView2<'_, T>, scratch: &'a mut Vec<T>) -> &'a [T] {
    if let Some(s) = x.as_slice() {
        return s;
    }
    scratch.clear();
    scratch.extend(x.iter().copied());
    scratch
}

/// `a`'s elements, in order, in the shape `dim` (a result computed as a
/// matrix, given its input's shape).
pub(crate) fn reshaped<T, A: Dimension, D: Dimension>(
    op: &'static str,
    a: Array<T, A>,
    dim: D,
) -> crate::error::Result<Array<T, D>> {
    a.into_shape_with_order(dim)
        .map_err(|e| crate::error::Error::invalid(op, e.to_string()))
}

/// The index of the first NaN or infinity in `s`: one vectorized pass over
/// blocks of values, and a search only in the block that holds one (the
/// reader's refusal of non-finite data, the transforms' overflow check).
pub(crate) fn first_non_finite<T: HostFloat>(s: &[T]) -> Option<usize> {
    const BLOCK: usize = 1 << 12;
    let finite = |v: &T| v.to_f64().is_finite();
    dispatch(|| {
        s.chunks(BLOCK).enumerate().find_map(|(b, c)| {
            if c.iter().fold(true, |ok, v| ok & finite(v)) {
                None
            } else {
                c.iter().position(|v| !finite(v)).map(|k| b * BLOCK + k)
            }
        })
    })
}

/// Rows per block so a block holds about `elems` elements (at least 1 row).
pub(crate) fn rows_for(elems: usize, d: usize) -> usize {
    (elems / d.max(1)).max(1)
}

/// Outputs from this size on ask the kernel for transparent huge pages.
const HUGE_PAGE_OUTPUT_BYTES: usize = 4 << 20;

/// A new `n x m` output of zeros whose pages are not touched yet: the
/// allocation is zeroed by the system (`calloc`, so fresh pages cost nothing
/// until written), and on Linux a large one is advised into transparent huge
/// pages (`MADV_HUGEPAGE`, as numpy does for its arrays), so the kernels' first
/// writes fault in 2 MiB pages rather than 4 KiB ones: measured here, the
/// first touch of 256 MiB took 128 ms in small pages and 62 ms in huge ones.
pub(crate) fn new_output<T: HostFloat>(n: usize, m: usize) -> Array2<T> {
    let v = zeroed(n * m);
    // The length is n * m by construction.
    Array2::from_shape_vec((n, m), v).unwrap_or_else(|_| Array2::from_elem((n, m), T::default()))
}

/// `len` zeros whose pages are not touched yet, as [`new_output`]'s (the
/// host path's large scratch, such as the co-moments' `D x D` states). Write
/// before reading: a page read first maps the shared zero page, and its
/// first write then costs a copy and a TLB shootdown on every core (at `D =
/// 4096` such faults took a tenth of the co-moments).
pub(crate) fn zeroed<T: HostFloat>(len: usize) -> Vec<T> {
    // `vec![0; len]` of a float is an `alloc_zeroed` (no writes).
    let v = vec![T::default(); len];
    advise_huge_pages(&v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &[T]) {
    let bytes = std::mem::size_of_val(v);
    if bytes < HUGE_PAGE_OUTPUT_BYTES {
        return;
    }
    const PAGE: usize = 4096;
    let start = (v.as_ptr() as usize).next_multiple_of(PAGE);
    let end = (v.as_ptr() as usize + bytes) & !(PAGE - 1);
    if end > start {
        // SAFETY: [start, end) lies inside `v`'s live allocation, page
        // aligned; MADV_HUGEPAGE only changes how its pages are backed, never
        // their contents. A failure (THP off, old kernel) changes nothing.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_: &[T]) {}
