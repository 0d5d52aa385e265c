//! GPU launcher for `shaders/matmul.wgsl`; CPU twin: [`crate::cpu::matmul`](mod@crate::cpu::matmul).
//!
//! `out = act(((x - center) @ w) * scale + bias)`, each of `center`, `scale`,
//! `bias` optional, `w` either `K x M` or (with `transpose_w`) a linear layer's
//! `M x K` weight, `x` either `N x K` or (with `transpose_x`) stored `K x N`,
//! and `act` identity, tanh or relu: with no options it is plain
//! `x @ w`, every PCA transform is one such product, and a fully connected
//! layer `act(x @ w^T + b)` is another (the lecture's activation experiment,
//! [`crate::ops::init::lecture`]). A linear layer's backward pass is two more:
//! `dX = dY @ W` (plain) and `dW = dY^T @ X` (`transpose_x`).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::matrix::{bind_input, pieces, GpuMatrix, OutputPiece, Span};
pub use crate::model::matmul::Activation;
use crate::shaders::matmul as SH;

const OP: &str = "matmul";
const CENTER: u32 = 1;
const SCALE: u32 = 2;
const BIAS: u32 = 4;
const ACT_TANH: u32 = 16;
const ACT_RELU: u32 = 32;

pub(crate) use SH::Params;

/// The options of [`matmul`]; the default gives `x @ w`. Each optional vector
/// is read from row 0 of a matrix with that many columns: a `1 x len` matrix,
/// or for `center` the buffer of [`crate::ColumnStats`] (5 x D, row 0 is the mean).
#[derive(Debug, Clone, Copy, Default)]
pub struct MatmulOptions<'a> {
    /// Subtracted from each row of `x` as it is loaded (length K).
    pub center: Option<&'a GpuMatrix>,
    /// Multiplies column `j` of the product (length M).
    pub scale: Option<&'a GpuMatrix>,
    /// Added to column `j` after the scale (length M).
    pub bias: Option<&'a GpuMatrix>,
    /// `w` is `M x K` (row-major) and the product is `x @ w^T`.
    pub transpose_w: bool,
    /// `x` is stored `K x N` (row-major) and the product is `x^T @ w`: with
    /// `x = dY` and `w = X` it is a linear layer's weight gradient `dY^T X`.
    /// The stored `x` must then fit one binding (the output is still split).
    pub transpose_x: bool,
    /// Applied to each output last.
    pub activation: Activation,
    /// The kernel's thread layout; `None` picks by shape (for tuning and tests).
    pub tuning: Option<MatmulConfig>,
}

/// The kernel's work split. `Default` picks by the output's width.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatmulConfig {
    /// `(wx, wy)`: `wx` threads along the output's columns and `wy` along its
    /// rows, each computing 8 x 8 outputs (a `8 wy x 8 wx` block per
    /// workgroup); each a power of two with `wx * wy <= 256`.
    pub threads: Option<(u32, u32)>,
    /// Inner-dimension step through workgroup memory: 8, 16 or 32 (default 8).
    pub k_step: Option<u32>,
    /// One buffer of tiles (two barriers per step) even where two fit the
    /// device's workgroup memory (to measure what double-buffering gives).
    pub single_buffer: bool,
    /// Load each step's tiles straight into workgroup memory, never through
    /// registers ahead of the FMAs (the same measurement).
    pub no_prefetch: bool,
    /// `(rows, cols)` of each thread's register tile: 4 or 8 each (default
    /// 8 x 8). A smaller tile needs fewer registers per thread (for adapters
    /// with small register files) at the cost of more workgroup-memory reads
    /// per FMA; on lavapipe 8 x 8 measured fastest (4.3 GFLOP/s against 1.8
    /// for 4 x 4 at 8192 x 256 @ 256 x 256, 8 x 8 threads).
    pub tile: Option<(u32, u32)>,
    /// Split-K: the inner dimension cut into this many slices, each its own
    /// z-layer of workgroups writing a raw partial product to scratch, then
    /// a pass summing them in order. `None` splits where the grid needs it
    /// (see [`split_k`]); `Some(1)` never splits (to measure what it gives),
    /// except where the adapter ends long loops ([`Gpu::loop_limit`]: a
    /// CPU adapter), which always gets the slices that keep each
    /// invocation under its limit.
    pub split_k: Option<u32>,
}

/// Workgroups below which a product's grid is too small to fill a large GPU
/// (an H100 has 132 SMs, each running several of these 128-256-thread
/// workgroups at once): split-K raises a grid towards it.
pub(crate) const SPLIT_TARGET_GROUPS: usize = 256;
/// The shortest slice of the inner dimension split-K makes: 32 steps of 8,
/// so each slice's FMAs (2 x 256 per output) outweigh its partial's write
/// and read (8 bytes per output).
pub const SPLIT_MIN_SLICE: usize = 256;
/// The most slices split-K makes (the second pass reads that many partials
/// per output).
pub(crate) const SPLIT_MAX_SLICES: usize = 256;
/// The most scratch split-K's partials take, in bytes (also bounded by the
/// device's binding size).
pub(crate) const SPLIT_MAX_SCRATCH: u64 = 64 << 20;

/// Split-K's choice for a product of `groups` workgroups over an inner
/// dimension of `k` and `outputs` elements (N x M): the slices, where the
/// grid has fewer than `SPLIT_TARGET_GROUPS` workgroups and `k` is at
/// least two [`SPLIT_MIN_SLICE`]s long; else 1 (no split). A weight
/// gradient `dY^T X` of a 256 x 256 layer over a batch of 65,536 has 8
/// output blocks of 64 x 128: 32 slices of 2048 rows make 256 workgroups;
/// a whitening product of 2^20 rows has 16,384 blocks and is never split.
pub fn split_k(groups: usize, k: usize, outputs: usize, scratch_limit: u64) -> u32 {
    if groups >= SPLIT_TARGET_GROUPS || k < 2 * SPLIT_MIN_SLICE || outputs == 0 {
        return 1;
    }
    let by_scratch = (scratch_limit.min(SPLIT_MAX_SCRATCH) / (4 * outputs as u64)) as usize;
    let slices = SPLIT_TARGET_GROUPS
        .div_ceil(groups)
        .min(k / SPLIT_MIN_SLICE)
        .min(SPLIT_MAX_SLICES)
        .min(by_scratch);
    slices.max(1) as u32
}

/// The loop iterations one invocation of the product kernel runs: per step
/// of `k_step` (the step loop, the FMA loops, the tile loads' loops: twice
/// each, fetch and put, with `prefetch`), and per row block (the first
/// step's loads, the stores' loops), for `steps` steps and `row_blocks` row
/// blocks per workgroup (the grid stride). An over-count: loops a compiler
/// unrolls are counted as if it did not.
fn kernel_iterations(
    steps: u64,
    row_blocks: u64,
    k_step: u32,
    (tm4, tn4): (u32, u32),
    prefetch: Prefetch,
) -> u64 {
    let fma = if tm4 == 2 && tn4 == 2 {
        k_step
    } else {
        k_step * (1 + tm4 + tm4 * tn4)
    };
    let loads = (prefetch.a_iters + prefetch.b_iters) * if prefetch.on { 2 } else { 1 };
    let per_step = (1 + fma + loads) as u64;
    let per_block = (loads + tm4 * (1 + 4 + 4 * tn4)) as u64;
    row_blocks * (steps * per_step + per_block + 1)
}

/// The fewest slices of `k` that keep each invocation within `limit` loop
/// iterations (see [`Gpu::loop_limit`]), half of it kept as margin; 1 where
/// there is no limit.
fn slices_for_loop_limit(
    limit: Option<u64>,
    k: usize,
    row_blocks: u64,
    k_step: u32,
    tile: (u32, u32),
    prefetch: Prefetch,
) -> u32 {
    let Some(limit) = limit else { return 1 };
    let budget = limit / 2;
    let steps = k.div_ceil(k_step as usize).max(1) as u64;
    if kernel_iterations(steps, row_blocks, k_step, tile, prefetch) <= budget {
        return 1;
    }
    let fixed = kernel_iterations(0, row_blocks, k_step, tile, prefetch);
    let per_step = kernel_iterations(1, row_blocks, k_step, tile, prefetch) - fixed;
    let max_steps = (budget.saturating_sub(fixed) / per_step).max(1);
    steps.div_ceil(max_steps).min(u32::MAX as u64) as u32
}

/// Each slice's length for `slices` slices of `k` (a multiple of `k_step`,
/// so no step straddles two slices), and the slices that length makes
/// (fewer than asked where `k` is short: every slice has at least one step).
fn slice_len(k: usize, slices: u32, k_step: u32) -> (u32, u32) {
    let step = k_step as usize;
    let len = k.div_ceil(slices.max(1) as usize).div_ceil(step).max(1) * step;
    (len as u32, k.div_ceil(len).max(1) as u32)
}

impl MatmulConfig {
    fn threads(&self, m: usize, tile_cols: u32) -> (u32, u32) {
        if let Some(t) = self.threads {
            return t;
        }
        // The narrowest column block that covers M (up to 16 threads across),
        // so a thin output reads x once and wastes little; 128 threads for
        // the widest (16 x 8 beat 16 x 16 by 10% on an H100 at M = 256 with
        // 8 x 8 tiles), else up to 32 rows of threads (4 x 32 was the best
        // measured at M = 32).
        let wx = (m.div_ceil(tile_cols as usize).next_power_of_two() as u32).clamp(1, 16);
        let wy = if wx == 16 { 8 } else { (256 / wx).min(32) };
        (wx, wy)
    }
}

/// Whether the kernel's threads hold the next step's tile loads in registers
/// (`PREFETCH`), and how many loads each makes per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefetch {
    pub on: bool,
    pub a_iters: u32,
    pub b_iters: u32,
}

impl Prefetch {
    /// The shader's registers for one step's loads: 4 vec4s each for x's
    /// and w's tiles, a vec4 or a scalar per load.
    const SLOTS: u32 = 4;

    /// `bm x bn`: the workgroup's block of the output.
    fn new(wx: u32, wy: u32, (bm, bn): (u32, u32), k_step: u32, x_vec4: bool, transpose_w: bool) -> Prefetch {
        let threads = wx * wy;
        // Loads per step of all threads: a vec4 of 4 columns of x (of w's
        // K x M layout) each, else one value.
        let a_loads = if x_vec4 { bm / 4 * k_step } else { bm * k_step };
        let b_loads = if transpose_w { bn * k_step } else { bn / 4 * k_step };
        let a_iters = a_loads.div_ceil(threads);
        let b_iters = b_loads.div_ceil(threads);
        let fits = |iters: u32, vec4: bool| iters <= if vec4 { Self::SLOTS } else { 4 * Self::SLOTS };
        Prefetch {
            on: fits(a_iters, x_vec4) && fits(b_iters, !transpose_w),
            a_iters,
            b_iters,
        }
    }
}

/// `act(((x - center) @ w) * scale + bias)` as a new `N x M` matrix, submitted.
///
/// # Errors
/// As [`encode_matmul_into`], and [`GpuMatrix::uninit`]'s for the output.
/// # Example
/// ```no_run
/// # fn main() -> gpuprep::Result<()> {
/// use gpuprep::{ops, Gpu, GpuMatrix};
/// let gpu = Gpu::new()?;
/// let x = ndarray::Array2::<f32>::from_shape_fn((1000, 8), |(i, j)| ((i * 7 + j) % 13) as f32);
/// let xg = GpuMatrix::upload(&gpu, x.view())?;
/// let w = ndarray::Array2::<f32>::eye(8);
/// let wg = GpuMatrix::upload(&gpu, w.view())?;
/// let relu = ops::MatmulOptions {
///     activation: ops::Activation::Relu,
///     ..Default::default()
/// };
/// let y = ops::matmul(&gpu, &xg, &wg, &relu)?; // max(x @ w, 0)
/// assert_eq!(y.download(&gpu)?, x);
/// # Ok(()) }
/// ```
pub fn matmul(gpu: &Gpu, x: &GpuMatrix, w: &GpuMatrix, options: &MatmulOptions) -> Result<GpuMatrix> {
    let m = if options.transpose_w { w.rows() } else { w.cols() };
    let n = if options.transpose_x { x.cols() } else { x.rows() };
    GpuMatrix::recorded(gpu, OP, (n, m), |e, out| {
        encode_matmul_into(gpu, e, x, w, out, options)
    })
}

/// What one product launch is, decided from the shapes, the options and the
/// device's limits alone: the output's size, the kernel's constants (thread
/// layout, register tile, step, buffering, prefetch) and flags. Pure: it
/// validates everything a launch could refuse before any binding is made,
/// and is unit-tested without a device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Output rows `N`, the inner dimension `K`, output columns `M`.
    pub n: usize,
    pub k: usize,
    pub m: usize,
    /// The shader's `flags` (centre, scale, bias, activation).
    pub flags: u32,
    /// Threads along the output's columns and rows.
    pub threads: (u32, u32),
    /// The register tile in units of 4 (rows, cols).
    pub tile4: (u32, u32),
    /// The inner-dimension step.
    pub k_step: u32,
    /// The workgroup's block of the output (rows, columns).
    pub block: (usize, usize),
    /// Tile buffers in workgroup memory: 2 (double-buffered) or 1.
    pub buffers: u32,
    /// The tile loads, through registers ahead of the FMAs or not.
    pub prefetch: Prefetch,
    /// `x`'s rows are read as vec4s; `w`'s rows are.
    pub x_vec4: bool,
    pub w_vec4: bool,
    /// Split-K asked for by the tuning (`None`: by the grid).
    pub split_k: Option<u32>,
    /// The stored layouts.
    pub transpose_x: bool,
    pub transpose_w: bool,
}

/// How one row piece of the output is launched: its grid and its slices of
/// the inner dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PiecePlan {
    /// Workgroups along the output's columns and rows.
    pub groups: (u32, u32),
    /// Each slice's length of `K`, and the slices (1: no split).
    pub k_len: u32,
    pub slices: u32,
}

impl Plan {
    /// The plan of `x (N x K, or K x N stored transposed) @ w (K x M, or
    /// M x K)` with the options' vectors of `vec_lens` (centre, scale, bias:
    /// their matrices' column counts, if given), on a device with `limits`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for shapes that do not fit;
    /// [`Error::InvalidArgument`] for a tuning the kernel does not take;
    /// [`Error::ExceedsLimit`] where its tiles do not fit workgroup memory.
    pub fn new(
        x: (usize, usize),
        w: (usize, usize),
        vec_lens: [Option<(usize, usize)>; 3],
        options: &MatmulOptions,
        limits: &wgpu::Limits,
    ) -> Result<Plan> {
        let opts = options;
        let (n, k) = if opts.transpose_x { (x.1, x.0) } else { x };
        let (kw, m) = if opts.transpose_w { (w.1, w.0) } else { w };
        if kw != k {
            let what = if opts.transpose_w { "columns" } else { "rows" };
            let stored = if opts.transpose_x {
                "stored transposed, "
            } else {
                ""
            };
            return Err(Error::shape(
                OP,
                format!("w with {k} {what} (x is {stored}{n} x {k})"),
                format!("{} x {}", w.0, w.1),
            ));
        }
        let [c, sc, b] = vec_lens;
        let flags = check_len("center", c, k)? * CENTER
            + check_len("scale", sc, m)? * SCALE
            + check_len("bias", b, m)? * BIAS
            + match opts.activation {
                Activation::Identity => 0,
                Activation::Tanh => ACT_TANH,
                Activation::Relu => ACT_RELU,
            };
        let config = opts.tuning.unwrap_or_default();
        let Tuning {
            tile: (tile_rows, tile_cols),
            threads: (wx, wy),
            k_step,
        } = Tuning::check(&config, m, limits)?;
        // One buffer of a_tile + b_tile in the shader, in bytes: two where
        // they fit (double-buffered), else one.
        let (tm4, tn4) = (tile_rows / 4, tile_cols / 4);
        let b_pad = u32::from(opts.transpose_w);
        let shared = 16 * k_step as u64 * ((tm4 * wy + 1) + (tn4 * wx + b_pad)) as u64;
        let room = limits.max_compute_workgroup_storage_size as u64;
        Error::check_limit(OP, "workgroup storage in bytes", shared, room)?;
        let buffers = if 2 * shared <= room && !config.single_buffer {
            2
        } else {
            1
        };
        let (bm, bn) = (tile_rows * wy, tile_cols * wx);
        let x_vec4 = k.is_multiple_of(4) && !opts.transpose_x;
        let mut prefetch = Prefetch::new(wx, wy, (bm, bn), k_step, x_vec4, opts.transpose_w);
        prefetch.on &= !config.no_prefetch;
        Ok(Plan {
            n,
            k,
            m,
            flags,
            threads: (wx, wy),
            tile4: (tm4, tn4),
            k_step,
            block: (bm as usize, bn as usize),
            buffers,
            prefetch,
            x_vec4,
            w_vec4: m.is_multiple_of(4) && !opts.transpose_w,
            split_k: config.split_k,
            transpose_x: opts.transpose_x,
            transpose_w: opts.transpose_w,
        })
    }

    /// The kernel's parameters for the output rows `rows` launched as `pp`.
    pub fn params(&self, rows: &std::ops::Range<usize>, pp: &PiecePlan) -> Params {
        Params {
            n: rows.len() as u32,
            k: self.k as u32,
            m: self.m as u32,
            flags: self.flags,
            // Transposed, x is bound whole and each piece reads its columns `rows`.
            ldx: if self.transpose_x { self.n } else { self.k } as u32,
            row_base: if self.transpose_x { rows.start as u32 } else { 0 },
            k_len: pp.k_len,
            slices: pp.slices,
        }
    }

    /// The kernel's override constants.
    pub fn constants(&self) -> [(&'static str, f64); 13] {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        [
            ("WX", self.threads.0 as f64),
            ("WY", self.threads.1 as f64),
            ("TM4", self.tile4.0 as f64),
            ("TN4", self.tile4.1 as f64),
            ("KSTEP", self.k_step as f64),
            ("TRANSPOSE_W", flag(self.transpose_w)),
            ("TRANSPOSE_X", flag(self.transpose_x)),
            ("X_VEC4", flag(self.x_vec4)),
            ("W_VEC4", flag(self.w_vec4)),
            ("NBUF", self.buffers as f64),
            ("PREFETCH", flag(self.prefetch.on)),
            ("A_ITERS", self.prefetch.a_iters as f64),
            ("B_ITERS", self.prefetch.b_iters as f64),
        ]
    }

    /// The launch of a piece of `rows` output rows, on a device whose
    /// grids stop at `max_groups` per dimension, whose loops stop at
    /// `loop_limit` (a CPU adapter) and whose bindings hold `max_binding`
    /// bytes. Where the adapter ends long loops the piece gets at least the
    /// slices that keep every invocation under its limit, whatever the
    /// tuning asks: without them the sums would silently stop short.
    pub fn piece(
        &self,
        rows: usize,
        max_groups: u32,
        loop_limit: Option<u64>,
        max_binding: u64,
    ) -> PiecePlan {
        let (bm, bn) = self.block;
        let col_groups = self.m.div_ceil(bn);
        let row_groups = rows.div_ceil(bm).min(max_groups as usize);
        let row_blocks = rows.div_ceil(bm).div_ceil(row_groups.max(1)) as u64;
        let needed = slices_for_loop_limit(
            loop_limit,
            self.k,
            row_blocks,
            self.k_step,
            self.tile4,
            self.prefetch,
        );
        let asked = self
            .split_k
            .unwrap_or_else(|| split_k(col_groups * row_groups, self.k, rows * self.m, max_binding))
            .max(needed);
        let (k_len, slices) = match slice_len(self.k, asked, self.k_step) {
            (len, s) if s > 1 => (len, s),
            _ => (self.k as u32, 1),
        };
        PiecePlan {
            groups: (col_groups as u32, row_groups as u32),
            k_len,
            slices,
        }
    }
}

/// The kernel shape a tuning asks for, checked against the kernel and the device.
struct Tuning {
    /// The register tile (rows, columns).
    tile: (u32, u32),
    /// Threads along the output's columns and rows.
    threads: (u32, u32),
    k_step: u32,
}

impl Tuning {
    fn check(config: &MatmulConfig, m: usize, limits: &wgpu::Limits) -> Result<Tuning> {
        let (tile_rows, tile_cols) = config.tile.unwrap_or((8, 8));
        if ![4, 8].contains(&tile_rows) || ![4, 8].contains(&tile_cols) {
            return Err(Error::invalid(
                OP,
                format!("register tile {tile_rows} x {tile_cols}: each side must be 4 or 8"),
            ));
        }
        let (wx, wy) = config.threads(m, tile_cols);
        if !(wx.is_power_of_two()
            && wy.is_power_of_two()
            && wx * wy <= 256
            && wx <= limits.max_compute_workgroup_size_x
            && wy <= limits.max_compute_workgroup_size_y
            && wx * wy <= limits.max_compute_invocations_per_workgroup)
        {
            return Err(Error::invalid(
                OP,
                format!("thread layout {wx} x {wy}: each must be a power of two, at most 256 threads"),
            ));
        }
        if config.split_k == Some(0) {
            return Err(Error::invalid(OP, "split_k must be at least 1 slice"));
        }
        let k_step = config.k_step.unwrap_or(8);
        if ![8, 16, 32].contains(&k_step) {
            return Err(Error::invalid(
                OP,
                format!("k_step must be 8, 16 or 32, got {k_step}"),
            ));
        }
        Ok(Tuning {
            tile: (tile_rows, tile_cols),
            threads: (wx, wy),
            k_step,
        })
    }
}

fn check_len(what: &str, cols: Option<(usize, usize)>, len: usize) -> Result<u32> {
    match cols {
        Some((rows, c)) if c != len || rows == 0 => Err(Error::shape(
            OP,
            format!("{what}: a matrix with {len} columns (row 0 is used)"),
            format!("{rows} x {c}"),
        )),
        Some(_) => Ok(1),
        None => Ok(0),
    }
}

/// Records [`matmul`] into a caller's encoder, writing the caller's `N x M`
/// output (which must not share a buffer with an input). `x` and `out` may be
/// of any size (they are split into binding-sized row ranges); `w` and the
/// vectors must each fit one binding.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a `w` whose inner dimension is not x's, a
/// `center` without K columns, a `scale` or `bias` without M columns (or
/// rows), or an `out` not `N x M`; [`Error::InvalidArgument`] for a tuning the
/// kernel does not take, an `out` sharing a buffer with an input, or a `w` (or
/// a transposed `x`) split over several buffers; [`Error::ExceedsLimit`] where
/// the tiles do not fit workgroup memory or `w` one binding; the context's
/// errors.
pub fn encode_matmul_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuMatrix,
    w: &GpuMatrix,
    out: &GpuMatrix,
    options: &MatmulOptions,
) -> Result<()> {
    x.check_device(gpu, OP)?;
    let vecs = [options.center, options.scale, options.bias];
    let lens = vecs.map(|v| v.map(GpuMatrix::shape));
    let limits = gpu.limits();
    let plan = Plan::new(x.shape(), w.shape(), lens, options, &limits)?;
    let inputs: Vec<&GpuMatrix> = [Some(x), Some(w)].into_iter().chain(vecs).flatten().collect();
    out.check_output(gpu, OP, (plan.n, plan.m), &inputs)?;
    if plan.n == 0 || plan.m == 0 {
        return Ok(());
    }
    let w_span = w.whole_span(gpu, OP)?;
    let w4 = gpu.vec4_span(&w_span)?;
    // Absent vectors bind a placeholder the kernel never reads (w's bytes).
    let [center, scale, bias] =
        [("center", vecs[0]), ("scale", vecs[1]), ("bias", vecs[2])].map(|(what, v)| match v {
            Some(v) => bind_input(gpu, encoder, OP, what, v, 0..1),
            None => Ok(w_span.clone()),
        });
    let (center, scale, bias) = (center?, scale?, bias?);
    // Transposed, x is bound whole and each piece of the output reads its
    // columns `rows` of it.
    let x_whole = if plan.transpose_x {
        Some(x.whole_span(gpu, OP)?)
    } else {
        None
    };
    let bound = Bound {
        w: w_span,
        w4,
        center,
        scale,
        bias,
    };
    let split: Vec<&GpuMatrix> = if plan.transpose_x { vec![out] } else { vec![x, out] };
    for rows in pieces(gpu, &split) {
        let xs = match &x_whole {
            Some(span) => span.clone(),
            None => bind_input(gpu, encoder, OP, "matmul x", x, rows.clone())?,
        };
        let piece = OutputPiece::new(gpu, encoder, OP, "matmul out", out, rows.clone(), false)?;
        encode_piece(gpu, encoder, &plan, &bound, &xs, &piece.span, rows)?;
        piece.finish(gpu, encoder, OP)?;
    }
    Ok(())
}

/// The bindings every piece of one product shares.
struct Bound {
    w: Span,
    w4: Span,
    center: Span,
    scale: Span,
    bias: Span,
}

/// Records the product of the output rows `rows` (bound as `out`) from `xs`:
/// one pass, or where the plan splits the inner dimension, the slices into
/// scratch and a second pass that sums them (then the scale and bias) into
/// `out`.
fn encode_piece(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    plan: &Plan,
    b: &Bound,
    xs: &Span,
    out: &Span,
    rows: std::ops::Range<usize>,
) -> Result<()> {
    let limits = gpu.limits();
    let np = rows.len();
    let pp = plan.piece(
        np,
        limits.max_compute_workgroups_per_dimension,
        gpu.loop_limit(),
        gpu.max_binding_bytes(),
    );
    let params = gpu.uniform("matmul params", &plan.params(&rows, &pp))?;
    let x4 = gpu.vec4_span(xs)?;
    let partials = match pp.slices {
        1 => None,
        s => Some(Span::whole(&gpu.scratch(
            "matmul split-K partials",
            s as u64 * (np * plan.m) as u64 * 4,
        )?)),
    };
    let product_out = partials.as_ref().unwrap_or(out);
    gpu.launch(
        encoder,
        &SH::SHADER,
        SH::MATMUL,
        &plan.constants(),
        &[
            (SH::X, xs),
            (SH::W, &b.w),
            (SH::CENTER, &b.center),
            (SH::SCALE, &b.scale),
            (SH::BIAS, &b.bias),
            (SH::OUT, product_out),
            (SH::PARAMS, &params),
            (SH::X4, &x4),
            (SH::W4, &b.w4),
        ],
        [pp.groups.0, pp.groups.1, pp.slices],
    )?;
    if let Some(partials) = &partials {
        let sum_groups = (np * plan.m)
            .div_ceil(256)
            .min(limits.max_compute_workgroups_per_dimension as usize);
        let slots = [
            (SH::X, partials),
            (SH::SCALE, &b.scale),
            (SH::BIAS, &b.bias),
            (SH::OUT, out),
            (SH::PARAMS, &params),
        ];
        gpu.launch(
            encoder,
            &SH::SHADER,
            SH::SPLIT_SUM,
            &[],
            &slots,
            [sum_groups as u32, 1, 1],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{kernel_iterations, slice_len, slices_for_loop_limit, Plan, Prefetch};
    use super::{Activation, MatmulConfig, MatmulOptions};
    use crate::error::Error;

    fn plan(x: (usize, usize), w: (usize, usize), options: &MatmulOptions) -> crate::Result<Plan> {
        Plan::new(x, w, [None; 3], options, &wgpu::Limits::default())
    }

    /// The plan, without a device: shapes, flags, the tuning's checks, the
    /// buffering the device's workgroup memory allows, and each piece's
    /// grid and slices.
    #[test]
    fn a_plan_checks_once_and_fixes_the_launch() {
        let o = MatmulOptions::default();
        let p = plan((100, 64), (64, 10), &o).unwrap();
        assert_eq!((p.n, p.k, p.m, p.flags), (100, 64, 10, 0));
        // Transposes read the stored shapes the other way round.
        let t = MatmulOptions {
            transpose_x: true,
            transpose_w: true,
            ..o
        };
        let p = plan((64, 100), (10, 64), &t).unwrap();
        assert_eq!((p.n, p.k, p.m), (100, 64, 10));
        assert!(!p.x_vec4 && !p.w_vec4);
        assert!(matches!(
            plan((100, 64), (63, 10), &o),
            Err(Error::ShapeMismatch { .. })
        ));
        // The vectors' lengths and the flags they set.
        let v = |c: usize| Some((1, c));
        let f = |lens, act| {
            Plan::new(
                (5, 4),
                (4, 3),
                lens,
                &MatmulOptions { activation: act, ..o },
                &wgpu::Limits::default(),
            )
        };
        assert_eq!(
            f([v(4), v(3), v(3)], Activation::Relu).unwrap().flags,
            1 + 2 + 4 + 32
        );
        assert_eq!(f([None, None, None], Activation::Tanh).unwrap().flags, 16);
        assert!(f([v(3), None, None], Activation::Identity).is_err());
        assert!(f([None, Some((0, 3)), None], Activation::Identity).is_err());
        // The tuning's checks.
        let tuned = |c: MatmulConfig| plan((100, 64), (64, 10), &MatmulOptions { tuning: Some(c), ..o });
        for bad in [
            MatmulConfig {
                tile: Some((2, 8)),
                ..Default::default()
            },
            MatmulConfig {
                threads: Some((3, 8)),
                ..Default::default()
            },
            MatmulConfig {
                threads: Some((32, 16)),
                ..Default::default()
            },
            MatmulConfig {
                k_step: Some(12),
                ..Default::default()
            },
            MatmulConfig {
                split_k: Some(0),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(tuned(bad), Err(Error::InvalidArgument { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            tuned(MatmulConfig {
                single_buffer: true,
                ..Default::default()
            })
            .unwrap()
            .buffers,
            1
        );
        assert!(
            !tuned(MatmulConfig {
                no_prefetch: true,
                ..Default::default()
            })
            .unwrap()
            .prefetch
            .on
        );
        // Workgroup memory: two tile buffers where they fit, one where only
        // one does, refused where not even that.
        let wide = MatmulOptions {
            tuning: Some(MatmulConfig {
                tile: Some((4, 4)),
                threads: Some((16, 16)),
                k_step: Some(32),
                ..Default::default()
            }),
            ..o
        };
        let small = wgpu::Limits {
            max_compute_workgroup_storage_size: 16384,
            ..Default::default()
        };
        let big = wgpu::Limits {
            max_compute_workgroup_storage_size: 65536,
            ..Default::default()
        };
        let p = |l: &wgpu::Limits| Plan::new((512, 256), (256, 256), [None; 3], &wide, l);
        assert!(matches!(p(&small), Err(Error::ExceedsLimit { .. })));
        assert_eq!(p(&big).unwrap().buffers, 2);
        let narrow = MatmulOptions {
            tuning: Some(MatmulConfig {
                threads: Some((8, 8)),
                k_step: Some(16),
                ..Default::default()
            }),
            ..o
        };
        let q = |l: &wgpu::Limits| Plan::new((512, 256), (256, 256), [None; 3], &narrow, l);
        assert_eq!(q(&small).unwrap().buffers, 1);
        assert_eq!(q(&big).unwrap().buffers, 2);
        // Pieces: a weight gradient's small grid is split over K; a wide
        // output is not; a CPU adapter's loop limit forces slices.
        let grad = plan(
            (65536, 256),
            (65536, 256),
            &MatmulOptions {
                transpose_x: true,
                ..o
            },
        )
        .unwrap();
        let pp = grad.piece(256, 65535, None, 128 << 20);
        assert!(
            pp.slices > 1 && pp.k_len as usize * pp.slices as usize >= 65536,
            "{pp:?}"
        );
        let whiten = plan((1 << 20, 256), (256, 32), &o).unwrap();
        assert_eq!(whiten.piece(1 << 20, 65535, None, 128 << 20).slices, 1);
        let long = plan(
            (64, 40_000),
            (40_000, 8),
            &MatmulOptions {
                tuning: Some(MatmulConfig {
                    split_k: Some(1),
                    ..Default::default()
                }),
                ..o
            },
        )
        .unwrap();
        assert_eq!(long.piece(64, 65535, None, 128 << 20).slices, 1);
        assert!(
            long.piece(64, 65535, Some(crate::gpu::SOFTWARE_LOOP_LIMIT), 128 << 20)
                .slices
                > 1
        );
        assert_eq!(long.constants().len(), 13);
    }

    #[test]
    fn slices_keep_each_invocation_under_the_loop_limit() {
        let limit = Some(crate::gpu::SOFTWARE_LOOP_LIMIT);
        // One thread, 32 straight loads per step: 41 iterations per step, so
        // about 790 steps fit half the limit.
        let p = Prefetch::new(1, 1, (8, 8), 8, true, false);
        assert!(!p.on);
        assert_eq!(
            kernel_iterations(1, 1, 8, (2, 2), p) - kernel_iterations(0, 1, 8, (2, 2), p),
            1 + 8 + 32
        );
        for k in [8, 1000, 6000, 40_000, 1 << 20] {
            let s = slices_for_loop_limit(limit, k, 1, 8, (2, 2), p);
            let (len, made) = slice_len(k, s, 8);
            assert!(made >= s.min(k.div_ceil(8) as u32) && len as usize * made as usize >= k);
            let it = kernel_iterations(len.div_ceil(8) as u64, 1, 8, (2, 2), p);
            assert!(
                it <= crate::gpu::SOFTWARE_LOOP_LIMIT / 2,
                "K {k}: {s} slices, {it} iterations"
            );
            if k <= 6000 {
                assert_eq!(s, 1, "K {k}");
            }
        }
        // No limit (a GPU): never split for it; the grid stride multiplies.
        assert_eq!(slices_for_loop_limit(None, 1 << 20, 1, 8, (2, 2), p), 1);
        assert!(
            slices_for_loop_limit(limit, 6000, 4, 8, (2, 2), p) > 1,
            "4 row blocks per workgroup run the K loop 4 times"
        );
    }

    #[test]
    fn prefetch_holds_at_most_the_shaders_registers() {
        // The default layout for a wide output: one vec4 of x and two of w
        // (or 8 scalars of a transposed w) per thread per step.
        let p = Prefetch::new(16, 8, (64, 128), 8, true, false);
        assert_eq!((p.on, p.a_iters, p.b_iters), (true, 1, 2));
        let p = Prefetch::new(16, 8, (64, 128), 8, false, true);
        assert_eq!((p.on, p.a_iters, p.b_iters), (true, 4, 8));
        // One column of threads loads 16 vec4s of x per step: too many.
        assert!(!Prefetch::new(1, 32, (256, 8), 8, true, false).on);
        // 16 x 4 / 32: 16 vec4s of w per thread.
        assert!(!Prefetch::new(16, 4, (32, 128), 32, true, false).on);
        assert!(Prefetch::new(16, 16, (128, 128), 16, true, false).on);
        // At the bound: 16 scalars of x (4 x 8 threads / 8), 4 vec4s.
        let p = Prefetch::new(4, 8, (64, 32), 8, false, false);
        assert_eq!((p.on, p.a_iters), (true, 16));
        assert!(!Prefetch::new(2, 8, (64, 16), 8, false, false).on);
        let p = Prefetch::new(4, 8, (64, 32), 8, true, false);
        assert_eq!((p.on, p.a_iters), (true, 4));
        assert!(!Prefetch::new(4, 8, (64, 32), 16, true, false).on);
        // 4 x 4 register tiles: 16 x 16 threads load a 64 x 8 tile of x as
        // 128 vec4s (one each for half the threads).
        let p = Prefetch::new(16, 16, (64, 64), 8, true, false);
        assert_eq!((p.on, p.a_iters, p.b_iters), (true, 1, 1));
    }
}
