// The general product with optional centring, per-column scale and bias and
// an activation:
//     out[i, j] = act(scale[j] * sum_k (x[i, k] - center[k]) * w[k, j] + bias[j])
// x is row-major N x K, out row-major N x M, w row-major K x M, or with
// TRANSPOSE_W (an override: a pipeline of its own) row-major M x K (a linear
// layer's (out, in) weight, x @ w^T).
// act: identity, tanh or relu (ACT_TANH / ACT_RELU).
// With TRANSPOSE_X (an override too) x is stored K x ldx, row-major, and the
// product reads its columns row_base .. row_base + N: out = x_stored^T @ w, the
// weight gradient dW = dY^T X of a linear layer without a transposed copy.
// CPU twin: src/cpu/matmul.rs. Launcher: src/ops/matmul.rs.
//
// With no flags it is plain x @ w (weight initialization uses it so); the PCA
// transforms are one such product each: decorrelate / reduce (centre), PCA
// whitening (centre + scale), ZCA whitening (centre, w = U diag(1/sqrt(S+eps)) U^T),
// inverse transform (bias = mean). The centring happens as x is loaded into
// workgroup memory, so X - mu is never materialized.
//
// Each workgroup computes a BM x BN block of out (BM = 4 * TM4 * WY rows,
// BN = 4 * TN4 * WX columns), KSTEP columns of x / rows of w at a time through
// workgroup memory, each thread a (4 TM4) x (4 TN4) register tile
// (shaders/common/tile.wgsl): 8 x 8 by
// default, smaller (a tuning option) for adapters with fewer registers per
// thread, at more workgroup-memory reads per FMA. The tiles are
// double-buffered where workgroup memory allows: the next step's loads are
// issued before the current step's FMAs (held in registers with PREFETCH) and
// land in the other buffer, one barrier per step. Row blocks are walked with
// a grid stride, so N may exceed 65535 * BM.
//
// Split-K (slices > 1, the launcher's choice where the output has too few
// blocks to fill the device and K is long: a weight gradient over a large
// batch): workgroup z of the grid sums only rows z k_len .. (z + 1) k_len of
// the inner dimension (k_len a multiple of KSTEP) and writes its raw partial
// product to slice z of out (slices x N x M, a scratch buffer); then
// matmul_split_sum adds the slices in order (deterministic) and applies the
// scale, bias and activation into the real output.

struct Params {
    n: u32,        // rows of x and out
    k: u32,        // columns of x, rows of w
    m: u32,        // columns of w and out
    flags: u32,    // CENTER | SCALE | BIAS | ACT_TANH | ACT_RELU
    ldx: u32,      // TRANSPOSE_X: the stored x's row length (its columns)
    row_base: u32, // TRANSPOSE_X: the stored column of out's row 0
    k_len: u32,    // the columns of x (rows of w) each z-slice of the grid sums: K unsplit
    slices: u32,   // the z-slices (split-K): 1, or > 1 and out holds their raw partials
}

const CENTER: u32 = 1u;
const SCALE: u32 = 2u;
const BIAS: u32 = 4u;
const ACT_TANH: u32 = 16u;
const ACT_RELU: u32 = 32u;

// Every override is declared before the first global variable: naga 30's
// override processing panics on one declared after a workgroup array whose
// size uses overrides.
// Threads along the output's columns (BN = 4 * TN4 * WX) and rows (BM = 4 * TM4 * WY).
override WX: u32 = 16u;
override WY: u32 = 16u;
// Each thread's register tile, in groups of 4 rows (TM4) and 4 columns (TN4):
// 1 or 2 each, so 4 x 4 to 8 x 8 outputs.
override TM4: u32 = 2u;
override TN4: u32 = 2u;
// Columns of x (rows of w) per step through workgroup memory: 8, 16 or 32.
override KSTEP: u32 = 8u;
// w is M x K: its tile is loaded like x's (rows of K contiguous values,
// transposed into workgroup memory through a padded stride).
override TRANSPOSE_W: bool = false;
// x is stored K x ldx (see Params): its tile is loaded k-major, as stored,
// neighbouring threads reading neighbouring columns of the stored x.
override TRANSPOSE_X: bool = false;
// K % 4 == 0: x's tile is loaded a vec4 of 4 consecutive columns at a time
// through x4. M % 4 == 0 (without TRANSPOSE_W): w's through w4.
override X_VEC4: bool = false;
override W_VEC4: bool = false;
// Buffers of the tiles: 2 (steps alternate between them), or 1 where two do
// not fit the device's workgroup memory (the launcher's choice).
override NBUF: u32 = 2u;
// PREFETCH: each thread loads its share of the next step's tiles into
// registers before the current step's arithmetic and stores it to workgroup
// memory after, so the loads' latency hides behind the FMAs. A_ITERS and
// B_ITERS are its loads per step (the launcher sets them; at most 4 of the
// vec4 paths' or 16 of the scalar paths', so the staging costs a thread at
// most 32 registers beside its 64 accumulators); without PREFETCH (a thread with
// more loads than registers to hold them) the next step's tiles are loaded
// straight into the other buffer before the current step's arithmetic (after
// it, behind a barrier, with one buffer).
override PREFETCH: bool = false;
override A_ITERS: u32 = 1u;
override B_ITERS: u32 = 1u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
// The optional vectors: the launcher binds a placeholder when a flag is off.
@group(0) @binding(2) var<storage, read> center: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
// x and w again, as vec4s (read only with X_VEC4 / W_VEC4; the launcher binds
// a placeholder to a buffer too small to be viewed so).
@group(0) @binding(7) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> w4: array<vec4<f32>>;

// NBUF buffers of: KSTEP rows x BM values of x transposed (row stride BM/4 + 1
// vec4s, the pad keeps the transposing stores free of bank conflicts), and
// KSTEP rows x BN of w.
var<workgroup> a_tile: array<vec4<f32>, NBUF * KSTEP * (TM4 * WY + 1u)>;
var<workgroup> b_tile: array<vec4<f32>, NBUF * KSTEP * (TN4 * WX + select(0u, 1u, TRANSPOSE_W))>;

// w[kr, c .. c + 4], zero past row k or column m.
fn load_w(kr: u32, c: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let m = params.m;
    if W_VEC4 {
        if kr < params.k && c < m { v = w4[(kr * m + c) / 4u]; }
        return v;
    }
    if kr < params.k {
        let base = kr * m;
        if c < m { v.x = w[base + c]; }
        if c + 1u < m { v.y = w[base + c + 1u]; }
        if c + 2u < m { v.z = w[base + c + 2u]; }
        if c + 3u < m { v.w = w[base + c + 3u]; }
    }
    return v;
}

// tanh accurate to a few ulps at every scale: the builtin is often computed as
// (e^2x - 1) / (e^2x + 1), which loses all relative accuracy near 0 (the
// lecture's small-random activations live there) and overflows to NaN for
// large |x| on some drivers. Below 0.25 its Taylor series to x^11 (the next
// term is under 1e-10 relative); above, (1 - e^-2|x|) / (1 + e^-2|x|) with
// the sign restored, which never overflows.
fn tanh_accurate(v: f32) -> f32 {
    let a = abs(v);
    if a < 0.25 {
        let z = v * v;
        let p = -1382.0 / 155925.0;
        let q = fma(z, p, 62.0 / 2835.0);
        let r = fma(z, q, -17.0 / 315.0);
        let s = fma(z, r, 2.0 / 15.0);
        let t = fma(z, s, -1.0 / 3.0);
        return fma(v * z, t, v);
    }
    let e = exp(-2.0 * min(a, 15.0));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

// A NaN passes through either activation (as in PyTorch), so a diverging
// network shows it.
fn activate(v: f32) -> f32 {
    if ((params.flags & (ACT_TANH | ACT_RELU)) != 0u) && is_nan(v) {
        return v;
    }
    if (params.flags & ACT_TANH) != 0u {
        return tanh_accurate(v);
    }
    if (params.flags & ACT_RELU) != 0u {
        return max(v, 0.0);
    }
    return v;
}

// One output's epilogue: act(v * scale[col] + bias[col]).
fn finish_out(col: u32, v: f32) -> f32 {
    var o = v;
    if (params.flags & SCALE) != 0u {
        o *= scale[col];
    }
    if (params.flags & BIAS) != 0u {
        o += bias[col];
    }
    return activate(o);
}

// out[row, c .. c + 4] = act(v * scale + bias), within bounds; split, the raw
// v into slice z's row instead.
fn store_out(row: u32, c: u32, v: vec4<f32>, z: u32) {
    let m = params.m;
    if row >= params.n {
        return;
    }
    let split = params.slices > 1u;
    let base = select(row * m, (z * params.n + row) * m, split);
    for (var q = 0u; q < 4u; q++) {
        let col = c + q;
        if col < m {
            if split {
                out[base + col] = v[q];
            } else {
                out[base + col] = finish_out(col, v[q]);
            }
        }
    }
}

// The block's rows and columns.
fn block_rows() -> u32 {
    return 4u * TM4 * WY;
}

fn block_cols() -> u32 {
    return 4u * TN4 * WX;
}

fn a_stride() -> u32 {
    return TM4 * WY + 1u;
}

// The pad vec4 keeps TRANSPOSE_W's transposing stores free of bank
// conflicts; the K x M layout's row stores do not need it.
fn b_stride() -> u32 {
    return TN4 * WX + select(0u, 1u, TRANSPOSE_W);
}

// Whether x's (w's) tile moves a vec4 per load.
fn a_vec4() -> bool {
    return X_VEC4 && !TRANSPOSE_X;
}

fn b_vec4() -> bool {
    return !TRANSPOSE_W;
}

// Loads per step of x's and w's tiles (all threads together).
fn a_count() -> u32 {
    return select(block_rows() * KSTEP, block_rows() / 4u * KSTEP, a_vec4());
}

fn b_count() -> u32 {
    return select(block_cols() * KSTEP, block_cols() / 4u * KSTEP, b_vec4());
}

// Load i (< a_count()) of x's tile for the step at k0: a vec4 of 4
// consecutive columns of one row (X_VEC4), else one value in .x; centred,
// and zero past the matrix.
fn fetch_a(i: u32, row0: u32, k0: u32) -> vec4<f32> {
    let bm = block_rows();
    let centred = (params.flags & CENTER) != 0u;
    var v = vec4<f32>(0.0);
    if TRANSPOSE_X {
        // k-major, as stored: neighbouring threads read neighbouring columns.
        let row = row0 + i % bm;
        let kc = k0 + i / bm;
        if row < params.n && kc < params.k {
            v.x = x[kc * params.ldx + params.row_base + row];
            if centred {
                v.x -= center[kc];
            }
        }
    } else if X_VEC4 {
        let q4 = KSTEP / 4u;
        let row = row0 + i / q4;
        let kc = k0 + 4u * (i % q4);
        if row < params.n && kc < params.k {
            v = x4[(row * params.k + kc) / 4u];
            if centred {
                v -= vec4<f32>(center[kc], center[kc + 1u], center[kc + 2u], center[kc + 3u]);
            }
        }
    } else {
        let row = row0 + i / KSTEP;
        let kc = k0 + i % KSTEP;
        if row < params.n && kc < params.k {
            v.x = x[row * params.k + kc];
            if centred {
                v.x -= center[kc];
            }
        }
    }
    return v;
}

// Stores load i of x's tile (from fetch_a) into buffer buf, transposed.
fn put_a(buf: u32, i: u32, v: vec4<f32>) {
    let bm = block_rows();
    let st = a_stride();
    let base = buf * KSTEP * st;
    if TRANSPOSE_X {
        let r = i % bm;
        a_tile[base + (i / bm) * st + r / 4u][r % 4u] = v.x;
    } else if X_VEC4 {
        let q4 = KSTEP / 4u;
        let r = i / q4;
        let slot = base + (4u * (i % q4)) * st + r / 4u;
        a_tile[slot][r % 4u] = v.x;
        a_tile[slot + st][r % 4u] = v.y;
        a_tile[slot + 2u * st][r % 4u] = v.z;
        a_tile[slot + 3u * st][r % 4u] = v.w;
    } else {
        let r = i / KSTEP;
        a_tile[base + (i % KSTEP) * st + r / 4u][r % 4u] = v.x;
    }
}

// Load i (< b_count()) of w's tile for the step at k0: a vec4 of 4
// consecutive columns of one row of w (K x M), or with TRANSPOSE_W one value
// in .x (row c of w, KSTEP consecutive values per row: neighbouring threads
// read neighbouring addresses).
fn fetch_b(i: u32, col0: u32, k0: u32) -> vec4<f32> {
    if TRANSPOSE_W {
        let col = col0 + i / KSTEP;
        let kc = k0 + i % KSTEP;
        var v = vec4<f32>(0.0);
        if col < params.m && kc < params.k {
            v.x = w[col * params.k + kc];
        }
        return v;
    }
    let c4 = i % (TN4 * WX);
    return load_w(k0 + i / (TN4 * WX), col0 + 4u * c4);
}

fn put_b(buf: u32, i: u32, v: vec4<f32>) {
    let st = b_stride();
    let base = buf * KSTEP * st;
    if TRANSPOSE_W {
        let c = i / KSTEP;
        b_tile[base + (i % KSTEP) * st + c / 4u][c % 4u] = v.x;
    } else {
        b_tile[base + (i / (TN4 * WX)) * st + i % (TN4 * WX)] = v;
    }
}

// The registers PREFETCH holds a step's loads in: iteration j in slot j
// (vec4 loads) or in component j % 4 of slot j / 4 (scalar loads).
struct Staged {
    a: array<vec4<f32>, 4>,
    b: array<vec4<f32>, 4>,
}

fn fetch_step(st: ptr<function, Staged>, tid: u32, row0: u32, col0: u32, k0: u32) {
    let threads = WX * WY;
    for (var j = 0u; j < A_ITERS; j++) {
        let i = tid + j * threads;
        var v = vec4<f32>(0.0);
        if i < a_count() {
            v = fetch_a(i, row0, k0);
        }
        if a_vec4() {
            (*st).a[j] = v;
        } else {
            (*st).a[j / 4u][j % 4u] = v.x;
        }
    }
    for (var j = 0u; j < B_ITERS; j++) {
        let i = tid + j * threads;
        var v = vec4<f32>(0.0);
        if i < b_count() {
            v = fetch_b(i, col0, k0);
        }
        if b_vec4() {
            (*st).b[j] = v;
        } else {
            (*st).b[j / 4u][j % 4u] = v.x;
        }
    }
}

fn put_step(st: ptr<function, Staged>, tid: u32, buf: u32) {
    let threads = WX * WY;
    for (var j = 0u; j < A_ITERS; j++) {
        let i = tid + j * threads;
        if i < a_count() {
            var v = (*st).a[j];
            if !a_vec4() {
                v = vec4<f32>((*st).a[j / 4u][j % 4u]);
            }
            put_a(buf, i, v);
        }
    }
    for (var j = 0u; j < B_ITERS; j++) {
        let i = tid + j * threads;
        if i < b_count() {
            var v = (*st).b[j];
            if !b_vec4() {
                v = vec4<f32>((*st).b[j / 4u][j % 4u]);
            }
            put_b(buf, i, v);
        }
    }
}

// The step at k0 straight into buffer buf (without PREFETCH).
fn load_step(tid: u32, row0: u32, col0: u32, k0: u32, buf: u32) {
    let threads = WX * WY;
    for (var i = tid; i < a_count(); i += threads) {
        put_a(buf, i, fetch_a(i, row0, k0));
    }
    for (var i = tid; i < b_count(); i += threads) {
        put_b(buf, i, fetch_b(i, col0, k0));
    }
}

@compute @workgroup_size(WX, WY, 1)
fn matmul(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let bm = block_rows();
    let bn = block_cols();
    let a_st = a_stride();
    let b_st = b_stride();
    let col0 = wid.x * bn;
    let n_row_blocks = (params.n + bm - 1u) / bm;
    // This slice of the inner dimension (all of it unsplit: k_len >= K).
    let kb = wid.z * params.k_len;
    let ke = min(kb + params.k_len, params.k);
    var staged: Staged;

    for (var rb = wid.y; rb < n_row_blocks; rb += nwg.y) {
        let row0 = rb * bm;
        // acc[(4 hr + r) TN4 + hc]: see the stores at the end (with the 8 x
        // 8 tile: acc[2 r' + hc] for local row r' = 4 hr + r).
        var acc: array<vec4<f32>, 16>;
        // Step s reads buffer s % 2 while the next step's tiles go into the
        // other; one barrier per step: the one that ends step s both publishes
        // step s + 1's tiles and retires step s's reads before step s + 2
        // overwrites its buffer. With one buffer a second barrier retires the
        // reads before the next step's tiles are stored.
        if PREFETCH {
            fetch_step(&staged, tid, row0, col0, kb);
            put_step(&staged, tid, 0u);
        } else {
            load_step(tid, row0, col0, kb, 0u);
        }
        workgroupBarrier();
        var buf = 0u;
        for (var k0 = kb; k0 < ke; k0 += KSTEP) {
            let next = k0 + KSTEP;
            let more = next < ke;
            let other = (buf + 1u) % NBUF;
            if more {
                if PREFETCH {
                    fetch_step(&staged, tid, row0, col0, next);
                } else if NBUF == 2u {
                    load_step(tid, row0, col0, next, other);
                }
            }
            let ab = buf * KSTEP * a_st;
            let bb = buf * KSTEP * b_st;
            if TM4 == 2u && TN4 == 2u {
                // The 8 x 8 tile at constant indices: four 4 x 4 quadrants.
                for (var k = 0u; k < KSTEP; k++) {
                    let a0 = a_tile[ab + k * a_st + lid.y];
                    let a1 = a_tile[ab + k * a_st + WY + lid.y];
                    let b0 = b_tile[bb + k * b_st + lid.x];
                    let b1 = b_tile[bb + k * b_st + WX + lid.x];
                    tile_fma_8x8(&acc, a0, a1, b0, b1);
                }
            } else {
                for (var k = 0u; k < KSTEP; k++) {
                    for (var hr = 0u; hr < TM4; hr++) {
                        let a = a_tile[ab + k * a_st + hr * WY + lid.y];
                        for (var hc = 0u; hc < TN4; hc++) {
                            let b = b_tile[bb + k * b_st + hc * WX + lid.x];
                            tile_fma4(&acc, 4u * hr * TN4 + hc, TN4, a, b);
                        }
                    }
                }
            }
            if NBUF == 1u {
                workgroupBarrier();
            }
            if more {
                if PREFETCH {
                    put_step(&staged, tid, other);
                } else if NBUF == 1u {
                    load_step(tid, row0, col0, next, other);
                }
            }
            workgroupBarrier();
            buf = other;
        }

        // acc[(4 hr + r) TN4 + hc]: row row0 + hr BM/TM4 + 4 lid.y + r, columns
        // col0 + hc BN/TN4 + 4 lid.x .. + 4.
        for (var hr = 0u; hr < TM4; hr++) {
            for (var r = 0u; r < 4u; r++) {
                let row = row0 + hr * (bm / TM4) + 4u * lid.y + r;
                for (var hc = 0u; hc < TN4; hc++) {
                    store_out(row, col0 + hc * (bn / TN4) + 4u * lid.x, acc[(4u * hr + r) * TN4 + hc], wid.z);
                }
            }
        }
    }
}

// Split-K's second pass: out[i] = act(scale * sum_z x[z N M + i] + bias),
// x being the first pass's slices x N x M partials, summed in slice order.
@compute @workgroup_size(256, 1, 1)
fn matmul_split_sum(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let total = params.n * params.m;
    for (var i = gid.x; i < total; i += nwg.x * 256u) {
        var s = 0.0;
        for (var z = 0u; z < params.slices; z++) {
            s += x[z * total + i];
        }
        out[i] = finish_out(i % params.m, s);
    }
}
