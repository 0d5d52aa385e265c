// Layer, instance, group and RMS normalization, forward and backward: one
// kernel family. CPU twin: src/cpu/norm.rs.
//
// An (N, C, S) tensor (S = product of the trailing dimensions, 1 for (N, D))
// is viewed as R = N * G rows of L = C * S / G contiguous elements, and each
// row is normalized over itself:
//   layer norm     G = 1  (L = C * S), gamma/beta elementwise over the sample (length C * S)
//   layer norm over trailing dimensions of L elements: G = C * S / L, gamma/beta
//                  elementwise over each row (length L)
//   instance norm  G = C  (L = S),     gamma/beta per channel
//   group norm     G = G  (L = C/G*S), gamma/beta per channel
//   RMS norm       as layer norm over trailing dimensions, without centring
//                  (center = 0): stats[r] = (0, 0, 1 / sqrt(mean(x^2) + eps),
//                  mean(x^2)), mean(x^2) = var + mean^2 (two non-negative
//                  terms: nothing cancels), and the backward's sum(g) term,
//                  the mean's gradient, is dropped
// The affine index of element i of row r is i (elementwise) or the channel
// (r % G) * (L / S) + i / S (per channel), which each thread
// tracks incrementally as it strides along the row (no division per element).
//
// A workgroup of WG threads holds WG / TL rows ("slots") of TL lanes each
// and strides over the rows. Per row: Welford per lane on values shifted by
// the row's first element, Chan merge across the lanes in workgroup memory,
// then the same workgroup applies the normalization (the second read of the
// row hits the cache): one pass over memory, no atomics.
//   row_forward   y = ((x - shift) - mean') * invstd * gamma + beta;
//                 stats[r] = (shift, mean - shift, invstd, biased var)
//   row_backward  per row: g = dy * gamma, xhat = ((x - shift) - mean') * invstd,
//                 dx = invstd * (g - sum(g)/L - xhat * sum(g * xhat)/L)
// dgamma/dbeta are column sums over rows of (dy * xhat, dy): the grad_partials
// and grad_finalize passes of shaders/norm_columns.wgsl, with the statistics
// group of element (n, col) = n * G + col / L.
//
// A row whose squared deviations overflow f32 is computed in units of 2^96
// (shaders/common/scaled.wgsl); NaN or inf in a row gives it NaN statistics.
//
// chan() and welford4() come from shaders/common/welford.wgsl, WG, the
// workgroup scratch arrays sh_n / sh_a / sh_b and the pair-sum tree
// sh_tree_sum2() from shaders/common/reduce.wgsl, and
// Wf, welford_run(), merge_wf(), the Welford tree sh_tree_wf(), decode() and
// stats_row() from shaders/common/scaled.wgsl, which
// src/shaders.rs prepends. Where the adapter has subgroups, short rows take
// shaders/norm_rows_subgroup.wgsl's entry points instead (appended to this file).

struct RowParams {
    rows: u32,         // R = N * G
    len: u32,          // L: elements per row
    lanes: u32,        // TL: lanes per row (power of two dividing WG)
    groups: u32,       // G: rows per sample
    spatial: u32,      // S
    per_channel: u32,  // 1: gamma/beta per channel; 0: elementwise over the sample
    lane_q: u32,       // TL / S
    lane_r: u32,       // TL % S
    eps: f32,
    row_base: u32,     // this piece's first row (a matrix larger than one binding is split into pieces)
    center: u32,       // 1: subtract each row's mean (layer, instance, group); 0: RMS norm
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: RowParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
// per row: (shift, mean - shift, invstd, biased var)
@group(0) @binding(4) var<storage, read_write> stats: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> gamma: array<f32>;
@group(0) @binding(7) var<storage, read> beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

// Walks the affine index of a lane's elements i = lane, lane + TL, ... of one row.
struct Affine {
    idx: u32,  // current affine index
    s: u32,    // position within the channel (per-channel mode)
}

fn affine_start(r: u32, lane: u32) -> Affine {
    let g = r % p.groups;
    if (p.per_channel == 0u) {
        return Affine(lane, 0u);
    }
    let sp = p.spatial;
    return Affine(g * (p.len / sp) + lane / sp, lane % sp);
}

// The lanes that share a row: TL of a workgroup's slot (row_forward and
// row_backward), or a subgroup's active invocations (the _subgroup passes).
struct Lanes {
    tl: u32,    // lanes in the row
    lane: u32,  // this invocation's rank among them
    q: u32,     // tl / S
    r: u32,     // tl % S
}

// The step of the lanes along a row: tl elements, q whole channels and r
// positions.
fn affine_step(a: Affine, ln: Lanes) -> Affine {
    if (p.per_channel == 0u) {
        return Affine(a.idx + ln.tl, 0u);
    }
    var s = a.s + ln.r;
    var idx = a.idx + ln.q;
    if (s >= p.spatial) {
        s = s - p.spatial;
        idx = idx + 1u;
    }
    return Affine(idx, s);
}

// The lane's state of row r (first element at base, shift its first value),
// in the units welford_run chose.
fn row_state(base: u32, ln: Lanes, len: u32, shift: f32) -> Wf {
    return welford_run(base, ln.lane, ln.tl, len, 1u, shift);
}

// Row r's output from its statistics row: y = xhat * gamma + beta.
fn row_apply(r: u32, ln: Lanes, len: u32, row: vec4<f32>) {
    let d = decode(row);
    let base = r * len;
    var af = affine_start(r, ln.lane);
    for (var i = ln.lane; i < len; i = i + ln.tl) {
        out[base + i] = xhat(x[base + i], d) * gamma[af.idx] + beta[af.idx];
        af = affine_step(af, ln);
    }
}

// The lane's part of row r's (sum g, sum g * xhat), g = dy * gamma.
fn row_grad_sums(r: u32, ln: Lanes, len: u32, st: Decoded) -> vec2<f32> {
    let base = r * len;
    var s_g = 0.0;
    var s_gx = 0.0;
    var af = affine_start(r, ln.lane);
    for (var i = ln.lane; i < len; i = i + ln.tl) {
        let g = dy[base + i] * gamma[af.idx];
        s_g = s_g + g;
        s_gx = s_gx + g * xhat(x[base + i], st);
        af = affine_step(af, ln);
    }
    return vec2<f32>(s_g, s_gx);
}

// Row r's dx from the row's mean of g (0 for RMS norm) and of g * xhat.
fn row_dx(r: u32, ln: Lanes, len: u32, st: Decoded, mg: f32, mgx: f32) {
    let base = r * len;
    var af = affine_start(r, ln.lane);
    for (var i = ln.lane; i < len; i = i + ln.tl) {
        let g = dy[base + i] * gamma[af.idx];
        out[base + i] = st.invstd * ((g - mg) - xhat(x[base + i], st) * mgx);
        af = affine_step(af, ln);
    }
}

// RMS norm's statistics row (no centring) from a row's finished state
// (count, mean relative to the shift k, M2): (0, 0, invstd, mean(x^2)) with
// mean(x^2) = var + (k + mean)^2; in units of 2^96 (as stats_row's scaled
// form) where the state was scaled or mean(x^2) overflows f32.
fn rms_row(st: Wf, k: f32, eps: f32) -> vec4<f32> {
    let cnt = f32(st.n & COUNT_MASK);
    let v = st.m2 / cnt;
    if ((st.n & SCALED) == 0u) {
        let mu = k + st.mean;
        let ms = v + mu * mu;
        if (is_finite(ms) || is_nan(ms)) {
            return vec4<f32>(0.0, 0.0, 1.0 / sqrt(ms + eps), ms);
        }
        // (k + mean)^2 beyond f32: the same in units of 2^96
        let mu_s = mu * DOWN;
        return scaled_rms(down2(v) + mu_s * mu_s);
    }
    let mu_s = k * DOWN + st.mean;
    return scaled_rms(v + mu_s * mu_s);
}

// The statistics row of a mean square in units of 2^96 (eps vanishes there).
fn scaled_rms(ms: f32) -> vec4<f32> {
    var ist = 1.0 / sqrt(ms);
    if (is_nan(ms)) {
        ist = ms;
    }
    return vec4<f32>(0.0, 0.0, -ist, up2(ms));
}

// The statistics row of a finished state: centred (stats_row) or RMS.
fn finish_row(st: Wf, k: f32, eps: f32) -> vec4<f32> {
    if (p.center == 0u) {
        return rms_row(st, k, eps);
    }
    return stats_row(st, k, eps);
}

@compute @workgroup_size(WG)
fn row_forward(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ln = Lanes(p.lanes, li % p.lanes, p.lane_q, p.lane_r);
    let slots = WG / p.lanes;
    let slot = li / ln.tl;
    let base_li = slot * ln.tl;
    let nblocks = (p.rows + slots - 1u) / slots;
    let total_wg = nwg.x * nwg.y;
    let len = p.len;
    for (var blk = wid.x + wid.y * nwg.x; blk < nblocks; blk = blk + total_wg) {
        let r = blk * slots + slot;
        let valid = r < p.rows;
        var st = Wf(0u, 0.0, 0.0);
        var shift = 0.0;
        if (valid) {
            shift = x[r * len];
            st = row_state(r * len, ln, len, shift);
        }
        sh_tree_wf(li, ln.lane, p.lanes, 1u, st);
        let row = finish_row(Wf(sh_n[base_li], sh_a[base_li], sh_b[base_li]), shift, p.eps);
        workgroupBarrier();
        if (valid) {
            if (ln.lane == 0u) {
                stats[p.row_base + r] = row;
            }
            row_apply(r, ln, len, row);
        }
    }
}

@compute @workgroup_size(WG)
fn row_backward(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ln = Lanes(p.lanes, li % p.lanes, p.lane_q, p.lane_r);
    let slots = WG / p.lanes;
    let slot = li / ln.tl;
    let base_li = slot * ln.tl;
    let nblocks = (p.rows + slots - 1u) / slots;
    let total_wg = nwg.x * nwg.y;
    let len = p.len;
    for (var blk = wid.x + wid.y * nwg.x; blk < nblocks; blk = blk + total_wg) {
        let r = blk * slots + slot;
        let valid = r < p.rows;
        var st = Decoded(1.0, 0.0, 0.0, 0.0, 0.0);
        var sums = vec2<f32>(0.0, 0.0);
        if (valid) {
            st = decode(stats[p.row_base + r]);
            sums = row_grad_sums(r, ln, len, st);
        }
        sh_tree_sum2(li, ln.lane, p.lanes, 1u, sums);
        let inv_l = 1.0 / f32(len);
        // RMS norm: no mean, no gradient through one.
        let mg = sh_a[base_li] * inv_l * f32(p.center);
        let mgx = sh_b[base_li] * inv_l;
        workgroupBarrier();
        if (valid) {
            row_dx(r, ln, len, st, mg, mgx);
        }
    }
}
