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
// Each workgroup computes a BM x BN block of out (BM = 8 * WY rows, BN = 8 * WX
// columns), KSTEP columns of x / rows of w at a time through workgroup memory,
// each thread an 8 x 8 register tile. Row blocks are walked with a grid stride,
// so N may exceed 65535 * BM.

struct Params {
    n: u32,        // rows of x and out
    k: u32,        // columns of x, rows of w
    m: u32,        // columns of w and out
    flags: u32,    // CENTER | SCALE | BIAS | ACT_TANH | ACT_RELU
    ldx: u32,      // TRANSPOSE_X: the stored x's row length (its columns)
    row_base: u32, // TRANSPOSE_X: the stored column of out's row 0
    _pad0: u32,
    _pad1: u32,
}

const CENTER: u32 = 1u;
const SCALE: u32 = 2u;
const BIAS: u32 = 4u;
const ACT_TANH: u32 = 16u;
const ACT_RELU: u32 = 32u;

// Threads along the output's columns (BN = 8 * WX) and rows (BM = 8 * WY).
override WX: u32 = 16u;
override WY: u32 = 16u;
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

// KSTEP rows x BM values of x transposed (row stride BM/4 + 1 vec4s, the pad
// keeps the transposing stores free of bank conflicts), and KSTEP rows x BN of w.
var<workgroup> a_tile: array<vec4<f32>, KSTEP * (2u * WY + 1u)>;
var<workgroup> b_tile: array<vec4<f32>, KSTEP * (2u * WX + select(0u, 1u, TRANSPOSE_W))>;

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

// NaN by its bits: drivers may assume float comparisons never see a NaN.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
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

// out[row, c .. c + 4] = v * scale + bias, within bounds.
fn store_out(row: u32, c: u32, v: vec4<f32>) {
    let m = params.m;
    if row >= params.n {
        return;
    }
    let base = row * m;
    for (var q = 0u; q < 4u; q++) {
        let col = c + q;
        if col < m {
            var o = v[q];
            if (params.flags & SCALE) != 0u {
                o *= scale[col];
            }
            if (params.flags & BIAS) != 0u {
                o += bias[col];
            }
            out[base + col] = activate(o);
        }
    }
}

@compute @workgroup_size(WX, WY, 1)
fn matmul(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let bm = 8u * WY;
    let bn = 8u * WX;
    let a_stride = 2u * WY + 1u;
    // The pad vec4 keeps TRANSPOSE_W's transposing stores free of bank
    // conflicts; the K x M layout's row stores do not need it.
    let b_stride = 2u * WX + select(0u, 1u, TRANSPOSE_W);
    let threads = WX * WY;
    let col0 = wid.x * bn;
    let centred = (params.flags & CENTER) != 0u;
    let n_row_blocks = (params.n + bm - 1u) / bm;

    for (var rb = wid.y; rb < n_row_blocks; rb += nwg.y) {
        let row0 = rb * bm;
        // acc[2 * r + h]: local row r (0..3: 4 * lid.y + r, 4..7: BM/2 + 4 * lid.y + r - 4),
        // columns 4 * lid.x .. + 4 (h = 0) and BN/2 + 4 * lid.x .. + 4 (h = 1).
        var acc: array<vec4<f32>, 16>;
        for (var k0 = 0u; k0 < params.k; k0 += KSTEP) {
            if TRANSPOSE_X {
                for (var i = tid; i < bm * KSTEP; i += threads) {
                    let kk = i / bm;
                    let r = i % bm;
                    let row = row0 + r;
                    let kc = k0 + kk;
                    var v = 0.0;
                    if row < params.n && kc < params.k {
                        v = x[kc * params.ldx + params.row_base + row];
                        if centred {
                            v -= center[kc];
                        }
                    }
                    a_tile[kk * a_stride + r / 4u][r % 4u] = v;
                }
            } else if X_VEC4 {
                // Thread i: columns 4q .. 4q + 4 of the step, row r of the block.
                let q4 = KSTEP / 4u;
                for (var i = tid; i < bm * q4; i += threads) {
                    let r = i / q4;
                    let q = i % q4;
                    let row = row0 + r;
                    let kc = k0 + 4u * q;
                    var v = vec4<f32>(0.0);
                    if row < params.n && kc < params.k {
                        v = x4[(row * params.k + kc) / 4u];
                        if centred {
                            v -= vec4<f32>(center[kc], center[kc + 1u], center[kc + 2u], center[kc + 3u]);
                        }
                    }
                    let slot = (4u * q) * a_stride + r / 4u;
                    a_tile[slot][r % 4u] = v.x;
                    a_tile[slot + a_stride][r % 4u] = v.y;
                    a_tile[slot + 2u * a_stride][r % 4u] = v.z;
                    a_tile[slot + 3u * a_stride][r % 4u] = v.w;
                }
            } else {
                for (var i = tid; i < bm * KSTEP; i += threads) {
                    let r = i / KSTEP;
                    let kk = i % KSTEP;
                    let row = row0 + r;
                    let kc = k0 + kk;
                    var v = 0.0;
                    if row < params.n && kc < params.k {
                        v = x[row * params.k + kc];
                        if centred {
                            v -= center[kc];
                        }
                    }
                    a_tile[kk * a_stride + r / 4u][r % 4u] = v;
                }
            }
            if TRANSPOSE_W {
                // Row c of w (column c of the product), KSTEP consecutive values
                // per row: neighbouring threads read neighbouring addresses.
                for (var i = tid; i < bn * KSTEP; i += threads) {
                    let c = i / KSTEP;
                    let kk = i % KSTEP;
                    let col = col0 + c;
                    let kc = k0 + kk;
                    var v = 0.0;
                    if col < params.m && kc < params.k {
                        v = w[col * params.k + kc];
                    }
                    b_tile[kk * b_stride + c / 4u][c % 4u] = v;
                }
            } else {
                for (var i = tid; i < KSTEP * 2u * WX; i += threads) {
                    let kk = i / (2u * WX);
                    let c4 = i % (2u * WX);
                    b_tile[kk * b_stride + c4] = load_w(k0 + kk, col0 + 4u * c4);
                }
            }
            workgroupBarrier();
            for (var k = 0u; k < KSTEP; k++) {
                let a0 = a_tile[k * a_stride + lid.y];
                let a1 = a_tile[k * a_stride + WY + lid.y];
                let b0 = b_tile[k * b_stride + lid.x];
                let b1 = b_tile[k * b_stride + WX + lid.x];
                acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
                acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
                acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
                acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
                acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
                acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
                acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
                acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
                acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
                acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
                acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
                acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
                acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
                acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
                acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
                acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
            }
            workgroupBarrier();
        }

        let lo = row0 + 4u * lid.y;
        let hi = row0 + bm / 2u + 4u * lid.y;
        let c_left = col0 + 4u * lid.x;
        let c_right = col0 + bn / 2u + 4u * lid.x;
        store_out(lo, c_left, acc[0]);
        store_out(lo, c_right, acc[1]);
        store_out(lo + 1u, c_left, acc[2]);
        store_out(lo + 1u, c_right, acc[3]);
        store_out(lo + 2u, c_left, acc[4]);
        store_out(lo + 2u, c_right, acc[5]);
        store_out(lo + 3u, c_left, acc[6]);
        store_out(lo + 3u, c_right, acc[7]);
        store_out(hi, c_left, acc[8]);
        store_out(hi, c_right, acc[9]);
        store_out(hi + 1u, c_left, acc[10]);
        store_out(hi + 1u, c_right, acc[11]);
        store_out(hi + 2u, c_left, acc[12]);
        store_out(hi + 2u, c_right, acc[13]);
        store_out(hi + 3u, c_left, acc[14]);
        store_out(hi + 3u, c_right, acc[15]);
    }
}
