//! Weight initialization, the CPU twin of `shaders/init.wgsl`, in `f64`: the
//! fills of [`crate::model::init::Fill`] from the Philox stream, element for
//! element as the kernel computes them.
//!
//! # Random numbers
//! Every random scheme reads the Philox stream of [`crate::rng`]: element `i`
//! of the row-major tensor uses element `i` of the stream (a uniform or a
//! normal), so the GPU kernel, which computes the same element from the same
//! counter, matches this twin whatever its dispatch shape.
//!
//! A kept sparse weight is `std * z` and `z` is exactly 0 with probability
//! about 2^-23, so the count of nonzero values equals the count of kept
//! positions except with that tiny probability per entry; the mask itself
//! ([`sparse_keeps`]) has exactly the stated count in every column (row).
//!
//! # Which positions a sparse mask keeps
//! Each line (a column for `sparse`, a row for `sparse_fixed`) of length `n`
//! gets a pseudo-random permutation `pi` of `0..n`: a 12-round balanced Feistel
//! network on `2h` bits (`4^h >= n`), walked in cycles until it lands in
//! `0..n`, with round keys from Philox block `(line, SPARSE_TAG, stream)`
//! (round `i` uses word `i % 4` plus `i * 0x9E3779B9`). The
//! entry at position `p` is kept when `pi(p) < keep`. Every entry decides for
//! itself in O(1) expected time, with no shared state, on the GPU as here.

use ndarray::{Array2, ArrayD, IxDyn};
use rayon::prelude::*;

use crate::model::init::{
    numel, orthogonal, Fill, Scheme, SparseAxis, SparsePlan, TruncNormalPlan, SPARSE_TAG,
};
use crate::rng::{centered_from_bits, trunc_normal_f64, Philox, PHILOX_M0, PHILOX_M1, PHILOX_W0};
use crate::{Error, Result};

pub mod lecture;

const OP: &str = "init";

fn invalid(reason: String) -> Error {
    Error::InvalidArgument { op: OP, reason }
}

/// Initialize a tensor of `shape` with `scheme` from the stream `rng`.
///
/// # Errors
/// As [`Scheme::plan`]; [`Error::ExceedsLimit`] when the tensor does not fit
/// in memory.
pub fn init(shape: &[usize], scheme: &Scheme, rng: Philox) -> Result<ArrayD<f64>> {
    let fill = scheme.plan(shape)?;
    fill_tensor(shape, &fill, rng)
}

/// Fill a whole tensor of `shape` (stream elements `0..numel`).
pub(crate) fn fill_tensor(shape: &[usize], fill: &Fill, rng: Philox) -> Result<ArrayD<f64>> {
    let n = numel(shape)?;
    // Refused here rather than aborted by the allocator (200000 x 200000 is
    // 320 GB of f64).
    crate::alloc::check::<f64>(OP, n)?;
    let data = if n == 0 {
        Vec::new()
    } else {
        match *fill {
            Fill::Constant { value } => vec![value; n],
            Fill::Uniform { center, half_width } => uniform_values(rng, 0, n, center, half_width),
            Fill::Normal { mean, std } => normal_values(rng, 0, n, mean, std),
            Fill::TruncNormal(plan) => trunc_normal_values(rng, 0, n, &plan),
            Fill::Sparse(plan) => {
                if plan.rows * plan.cols != n {
                    return Err(Error::ShapeMismatch {
                        op: OP,
                        expected: format!("{} x {}", plan.rows, plan.cols),
                        got: format!("{shape:?}"),
                    });
                }
                sparse_values(&plan, rng).into_raw_vec_and_offset().0
            }
            Fill::Orthogonal { rows, cols, gain } => {
                if rows * cols != n {
                    return Err(Error::ShapeMismatch {
                        op: OP,
                        expected: format!("{rows} x {cols}"),
                        got: format!("{shape:?}"),
                    });
                }
                orthogonal(rows, cols, gain, rng).into_raw_vec_and_offset().0
            }
        }
    };
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| invalid(e.to_string()))
}

/// Elements per parallel chunk of a fill (a multiple of 4: whole Philox blocks).
const FILL_CHUNK: usize = 1 << 14;

/// Fills `out` with `f(i, k)` for each stream element `i = offset + k`, in
/// parallel chunks; `f` gets each chunk's start and its slice. The values do
/// not depend on the chunking (the generator is counter-based).
fn fill_parallel(offset: u64, out: &mut [f64], f: impl Fn(u64, &mut [f64]) + Sync) {
    out.par_chunks_mut(FILL_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| f(offset.wrapping_add((c * FILL_CHUNK) as u64), chunk));
}

/// Stream elements `offset .. offset + n` as `center + half_width * s`.
pub fn uniform_values(rng: Philox, offset: u64, n: usize, center: f64, half_width: f64) -> Vec<f64> {
    word_values(rng, offset, n, |x| {
        center + half_width * f64::from(centered_from_bits(x))
    })
}

/// Stream elements `offset .. offset + n` as `mean + std * z`: each Philox
/// block's four normals computed once (`Philox::normal_block`, the same
/// values as [`Philox::normal`] element by element).
pub fn normal_values(rng: Philox, offset: u64, n: usize, mean: f64, std: f64) -> Vec<f64> {
    let mut out = vec![0.0; n];
    fill_parallel(offset, &mut out, |start, chunk| {
        let mut i = start;
        let mut k = 0;
        while k < chunk.len() {
            let lane = (i % 4) as usize;
            let take = (4 - lane).min(chunk.len() - k);
            let z = rng.normal_block(i / 4);
            for j in 0..take {
                chunk[k + j] = mean + std * z[lane + j];
            }
            k += take;
            i = i.wrapping_add(take as u64);
        }
    });
    out
}

/// Stream elements `offset .. offset + n` as truncated normals
/// (`rng::trunc_normal_f64`: one word per element, as the uniforms).
pub fn trunc_normal_values(rng: Philox, offset: u64, n: usize, plan: &TruncNormalPlan) -> Vec<f64> {
    word_values(rng, offset, n, |x| trunc_normal_f64(x, plan))
}

/// Stream elements `offset .. offset + n`, each `f` of its own 32-bit word.
fn word_values(rng: Philox, offset: u64, n: usize, f: impl Fn(u32) -> f64 + Sync) -> Vec<f64> {
    let mut out = vec![0.0; n];
    fill_parallel(offset, &mut out, |start, chunk| {
        let mut bits = vec![0u32; chunk.len()];
        rng.fill_bits(start, &mut bits);
        for (o, &x) in chunk.iter_mut().zip(&bits) {
            *o = f(x);
        }
    });
    out
}

/// The shader's small integer hash (xorshift-multiply with Philox's
/// multipliers): the round function of the mask's Feistel network.
#[inline]
pub(crate) fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(PHILOX_M0);
    x ^= x >> 15;
    x = x.wrapping_mul(PHILOX_M1);
    x ^= x >> 16;
    x
}

/// The four Feistel round keys of sparse line `line`.
#[inline]
pub(crate) fn sparse_line_keys(rng: Philox, line: u32) -> [u32; 4] {
    crate::rng::philox4x32_10(
        [line, SPARSE_TAG, rng.stream as u32, (rng.stream >> 32) as u32],
        rng.key(),
    )
}

/// Half the Feistel width: the smallest `h >= 1` with `4^h >= n`.
#[inline]
pub(crate) fn feistel_half_bits(n: u32) -> u32 {
    let mut h = 1;
    while h < 16 && (1u64 << (2 * h)) < u64::from(n) {
        h += 1;
    }
    h
}

/// Rounds of the mask's Feistel network. Four rounds leave the chance that a
/// position is kept visibly uneven on short lines (20 standard deviations off
/// at n = 10 over 2e5 lines); eight were within 2.5 and twelve within 2.9 on
/// lines of 2 to 100 (the largest of n deviations, as expected by chance).
pub(crate) const FEISTEL_ROUNDS: u32 = 12;

/// A pseudo-random permutation of `0..n` (n >= 1), evaluated at `p < n`.
#[inline]
pub fn feistel_permute(p: u32, n: u32, keys: [u32; 4]) -> u32 {
    let h = feistel_half_bits(n);
    let mask = (1u32 << h) - 1;
    let mut x = p;
    loop {
        let mut l = x >> h;
        let mut r = x & mask;
        for round in 0..FEISTEL_ROUNDS {
            let k = keys[(round % 4) as usize].wrapping_add(round.wrapping_mul(PHILOX_W0));
            let t = l ^ (mix32(r ^ k) & mask);
            l = r;
            r = t;
        }
        x = (l << h) | r;
        if x < n {
            return x;
        }
    }
}

/// Whether entry `(row, col)` of a sparse fill is kept.
pub fn sparse_keeps(plan: &SparsePlan, rng: Philox, row: usize, col: usize) -> bool {
    let (line, pos) = match plan.axis {
        SparseAxis::Columns => (col, row),
        SparseAxis::Rows => (row, col),
    };
    let n = plan.line_len() as u32;
    feistel_permute(pos as u32, n, sparse_line_keys(rng, line as u32)) < plan.keep as u32
}

/// The sparse fill: kept entries `std * z` (z the normal stream at the
/// row-major index), the rest zero.
pub(crate) fn sparse_values(plan: &SparsePlan, rng: Philox) -> Array2<f64> {
    Array2::from_shape_fn((plan.rows, plan.cols), |(i, j)| {
        if sparse_keeps(plan, rng, i, j) {
            plan.std * rng.normal((i * plan.cols + j) as u64)
        } else {
            0.0
        }
    })
}
