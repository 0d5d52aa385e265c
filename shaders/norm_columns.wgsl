// Batch normalization, forward and backward, over an (N, C, S) tensor viewed as
// the row-major matrix (N rows, F = C * S columns): channel c owns the S
// consecutive columns c*S .. c*S+S-1 (S = 1 for (N, D) input). CPU twin:
// src/cpu/batchnorm.rs (and the generic src/cpu/norm.rs).
//
// A matrix larger than one binding is processed in pieces (row ranges bound
// one at a time): each partial pass writes its chunks from chunk_base on, the
// finalize passes merge the chunks of all pieces, and dx divides by the rows
// of all pieces (total_rows).
//
// Every pass over the data gives one thread one column and a strided set of
// rows, so a warp reads consecutive addresses and the column's channel is
// computed once per thread, not per element. A workgroup of WG threads is
// laid out as col_lanes (TC) columns x WG/TC row lanes (TC = WG for wide
// matrices, fewer for narrow ones), and covers one column tile x one chunk
// of rows; workgroups are numbered linearly over a 2D dispatch.
//
// Forward, training:
//   stats_partials  Welford per thread over its rows, on values shifted by the
//                   first element of the column (exact in f32 when the data sit
//                   on a large offset), Chan merge across row lanes ->
//                   one partial (count, shift, mean, M2) per (chunk, column).
//   stats_finalize  one workgroup per channel: Chan merge of its chunks x S
//                   columns (re-expressed against the channel's shift, the
//                   first element of its reduced set) -> stats[c] =
//                   (shift, mean - shift, invstd, biased var); updates the
//                   running statistics (no atomics: partials, then finalize).
//   apply           y = ((x - shift) - mean') * invstd * gamma + beta.
// Forward, eval: eval_prepare writes stats[c] = (running_mean, 0,
//   1/sqrt(running_var + eps), running_var), then apply.
// Backward (closed form):
//   grad_partials   per (chunk, column): sum(dy), sum(dy * xhat); the statistics
//                   group of element (r, col) is r * g_row_stride + col / g_div,
//                   so the same pass gives dgamma/dbeta for layer, instance and
//                   group norm (shaders/norm_rows.wgsl) as well.
//   grad_finalize   one workgroup per affine index: dbeta = sum(dy), dgamma = sum(dy * xhat)
//                   over its columns (a channel's S consecutive ones; layer norm over
//                   trailing dimensions of L elements: every L-th).
//   dx              dx = gamma * invstd * (dy - dbeta/M - xhat * dgamma/M), M = N * S.
//
// A group whose squared deviations overflow f32 is computed in units of 2^96
// (shaders/common/scaled.wgsl: the Wf states, decode() of a statistics row);
// NaN or inf in a channel gives it NaN statistics, as the twin.
//
// chan() and welford4() come from shaders/common/welford.wgsl, WG, the
// workgroup scratch arrays sh_n / sh_a / sh_b and the pair-sum tree
// sh_tree_sum2() from shaders/common/reduce.wgsl, and
// Wf, welford_run(), merge_wf(), the Welford tree sh_tree_wf(), decode() and
// stats_row() from shaders/common/scaled.wgsl, which
// src/shaders.rs prepends.

struct Params {
    rows: u32,          // rows of the piece this dispatch covers (N when unsplit)
    cols: u32,          // F = C * S
    chunk_rows: u32,    // rows per chunk
    chunks: u32,        // row chunks: of this piece (data passes), of all pieces (finalize passes)
    col_lanes: u32,     // TC: columns per workgroup (power of two dividing WG)
    col_tiles: u32,     // ceil(F / TC)
    channels: u32,      // C: channels merged by the finalize passes
    spatial: u32,       // S: consecutive columns per channel
    g_row_stride: u32,  // grad_partials: statistics group = row * g_row_stride + col / g_div
    g_div: u32,
    flags: u32,         // FLAG_* below
    aff_stride: u32,    // grad_finalize: affine index a sums columns a * aff_stride + j * pos_stride, j < spatial
    eps: f32,
    momentum: f32,      // weight of the new batch in the running averages
    chunk_base: u32,    // partial passes: this piece's first chunk
    row_base: u32,      // this piece's first row of the (N, F) view
    total_rows: u32,    // N: rows of all pieces
    pos_stride: u32,
}

const FLAG_UPDATE_RUNNING: u32 = 1u;   // stats_finalize updates running statistics
const FLAG_UNBIASED: u32 = 2u;         // running_var takes the unbiased batch variance
const FLAG_CUMULATIVE: u32 = 4u;       // momentum = 1 / batches seen (PyTorch's momentum=None)

// Welford partial of one (chunk, column): count (with the SCALED bit of
// shaders/common/scaled.wgsl), the shift K subtracted from every value, mean of
// (x - K), and M2 = sum((x - K - mean)^2) (in units of 2^96 when SCALED).
struct Partial {
    count: u32,
    shift: f32,
    mean: f32,
    m2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<Partial>;
// per statistics group: (shift, mean - shift, invstd, biased var)
@group(0) @binding(4) var<storage, read_write> stats: array<vec4<f32>>;
// per channel: (running_mean, running_var, batches tracked, unused)
@group(0) @binding(5) var<storage, read_write> running: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> gamma: array<f32>;
@group(0) @binding(7) var<storage, read> beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;
// per (chunk, column): (sum dy, sum dy * xhat)
@group(0) @binding(9) var<storage, read_write> gpartials: array<vec2<f32>>;
@group(0) @binding(10) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(11) var<storage, read_write> dbeta: array<f32>;

// Linear workgroup id over a 2D dispatch (the host splits large counts across y).
fn linear_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// What a thread of a data pass covers: workgroup wg (below col_tiles *
// chunks) takes column tile wg % col_tiles of row chunk wg / col_tiles; its
// thread li takes column col of that tile and rows r0 + rl, r0 + rl + tr, ...
// below r1 (tr = WG / col_lanes threads per column).
struct ColTile {
    tr: u32,
    rl: u32,
    chunk: u32,
    col: u32,
    r0: u32,
    r1: u32,
}

fn col_tile(li: u32, wg: u32) -> ColTile {
    let tc = p.col_lanes;
    let chunk = wg / p.col_tiles;
    let r0 = chunk * p.chunk_rows;
    return ColTile(WG / tc, li / tc, chunk, (wg % p.col_tiles) * tc + li % tc, r0, min(r0 + p.chunk_rows, p.rows));
}

// The thread's state of its column in its tile (rows r0 + rl.. by tr below
// r1), in the units welford_run chose.
fn column_state(t: ColTile, shift: f32) -> Wf {
    return welford_run(t.col, t.r0 + t.rl, t.tr, t.r1, p.cols, shift);
}

@compute @workgroup_size(WG)
fn stats_partials(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let wg = linear_wg(wid, nwg);
    if (wg >= p.col_tiles * p.chunks) {
        return;
    }
    let t = col_tile(li, wg);
    var st = Wf(0u, 0.0, 0.0);
    var shift = 0.0;
    if (t.col < p.cols) {
        shift = x[t.col];
        st = column_state(t, shift);
    }
    sh_tree_wf(li, t.rl, WG / p.col_lanes, p.col_lanes, st);
    if (t.rl == 0u && t.col < p.cols) {
        partials[(p.chunk_base + t.chunk) * p.cols + t.col] = Partial(sh_n[li], shift, sh_a[li], sh_b[li]);
    }
}

@compute @workgroup_size(WG)
fn stats_finalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = linear_wg(wid, nwg);
    if (c >= p.channels) {
        return;
    }
    let sp = p.spatial;
    let first = c * sp;
    // the channel's shift: the first element of its reduced set, x[0, c, 0]
    let k = partials[first].shift;
    var acc = Wf(0u, 0.0, 0.0);
    let items = p.chunks * sp;
    for (var j = li; j < items; j = j + WG) {
        let q = partials[(j / sp) * p.cols + first + j % sp];
        // re-express the partial's mean against the channel's shift (in units
        // of 2^96 if the partial is, or if the difference of shifts overflows)
        var qf = q.count & SCALED;
        var qm = 0.0;
        var qm2 = q.m2;
        if (qf != 0u) {
            qm = (q.shift * DOWN - k * DOWN) + q.mean;
        } else {
            qm = (q.shift - k) + q.mean;
            if (!is_finite(qm)) {
                qm = (q.shift * DOWN - k * DOWN) + q.mean * DOWN;
                qm2 = down2(q.m2);
                qf = SCALED;
            }
        }
        acc = merge_wf(acc, Wf(q.count | qf, qm, qm2));
    }
    sh_tree_wf(li, li, WG, 1u, acc);
    if (li == 0u) {
        let st = Wf(sh_n[0], sh_a[0], sh_b[0]);
        let row = stats_row(st, k, p.eps);
        stats[c] = row;
        if ((p.flags & FLAG_UPDATE_RUNNING) != 0u) {
            let count = st.n & COUNT_MASK;
            let cnt = f32(count);
            // the data's units: 1, or 2^96 for a scaled group (whose variance
            // may then be +inf in f32, its mean never)
            let scaled = (st.n & SCALED) != 0u;
            let unit = select(1.0, UP, scaled);
            let old = running[c];
            let t = old.z + 1.0;
            var f = p.momentum;
            if ((p.flags & FLAG_CUMULATIVE) != 0u) {
                f = 1.0 / t;
            }
            var v = st.m2 / cnt;
            if ((p.flags & FLAG_UNBIASED) != 0u && count > 1u) {
                v = v * (cnt / (cnt - 1.0));
            }
            if (scaled) {
                v = up2(v);
            }
            let bm = (row.x + row.y) * unit;
            running[c] = vec4<f32>(old.x + f * (bm - old.x), old.y + f * (v - old.y), t, 0.0);
        }
    }
}

@compute @workgroup_size(WG)
fn eval_prepare(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x + gid.y * nwg.x * WG;
    if (c >= p.channels) {
        return;
    }
    let r = running[c];
    // 1 / sqrt(var + eps) as the twin: NaN for a NaN running variance or one
    // below -eps (tested by the bits, which a driver may not fold away)
    let s = r.y + p.eps;
    var inv = 1.0 / sqrt(s);
    if (is_nan(s) || sign_bit(s)) {
        inv = quiet_nan(s);
    }
    stats[c] = vec4<f32>(r.x, 0.0, inv, r.y);
}

@compute @workgroup_size(WG)
fn apply(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let wg = linear_wg(wid, nwg);
    if (wg >= p.col_tiles * p.chunks) {
        return;
    }
    let t = col_tile(li, wg);
    let tr = t.tr;
    let col = t.col;
    if (col >= p.cols) {
        return;
    }
    let r1 = t.r1;
    let c = col / p.spatial;
    let st = decode(stats[c]);
    let sc = st.sc;
    let k = st.k;
    let ms = st.m;
    let a = st.ist * gamma[c];
    let b = beta[c];
    let f = p.cols;
    var r = t.r0 + t.rl;
    loop {
        if (r + 3u * tr >= r1) {
            break;
        }
        let i0 = r * f + col;
        let i1 = i0 + tr * f;
        let i2 = i1 + tr * f;
        let i3 = i2 + tr * f;
        let v0 = x[i0];
        let v1 = x[i1];
        let v2 = x[i2];
        let v3 = x[i3];
        out[i0] = ((v0 * sc - k) - ms) * a + b;
        out[i1] = ((v1 * sc - k) - ms) * a + b;
        out[i2] = ((v2 * sc - k) - ms) * a + b;
        out[i3] = ((v3 * sc - k) - ms) * a + b;
        r = r + 4u * tr;
    }
    loop {
        if (r >= r1) {
            break;
        }
        let i = r * f + col;
        out[i] = ((x[i] * sc - k) - ms) * a + b;
        r = r + tr;
    }
}

@compute @workgroup_size(WG)
fn grad_partials(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let wg = linear_wg(wid, nwg);
    if (wg >= p.col_tiles * p.chunks) {
        return;
    }
    let t = col_tile(li, wg);
    let tr = t.tr;
    let rl = t.rl;
    let col = t.col;
    let r1 = t.r1;

    var s_dy = 0.0;
    var s_dyx = 0.0;
    if (col < p.cols) {
        let f = p.cols;
        let g0 = col / p.g_div;
        let gs = p.g_row_stride;
        var r = t.r0 + rl;
        if (gs == 0u) {
            // batch norm: one statistics group per column
            let st = decode(stats[g0]);
            loop {
                if (r + 3u * tr >= r1) {
                    break;
                }
                let i0 = r * f + col;
                let i1 = i0 + tr * f;
                let i2 = i1 + tr * f;
                let i3 = i2 + tr * f;
                let e0 = dy[i0];
                let e1 = dy[i1];
                let e2 = dy[i2];
                let e3 = dy[i3];
                let h0 = xhat(x[i0], st);
                let h1 = xhat(x[i1], st);
                let h2 = xhat(x[i2], st);
                let h3 = xhat(x[i3], st);
                s_dy = s_dy + ((e0 + e1) + (e2 + e3));
                s_dyx = s_dyx + ((e0 * h0 + e1 * h1) + (e2 * h2 + e3 * h3));
                r = r + 4u * tr;
            }
            loop {
                if (r >= r1) {
                    break;
                }
                let i = r * f + col;
                let e = dy[i];
                s_dy = s_dy + e;
                s_dyx = s_dyx + e * xhat(x[i], st);
                r = r + tr;
            }
        } else {
            // layer / instance / group norm: the statistics group changes with the row
            loop {
                if (r >= r1) {
                    break;
                }
                let st = decode(stats[(p.row_base + r) * gs + g0]);
                let i = r * f + col;
                let e = dy[i];
                s_dy = s_dy + e;
                s_dyx = s_dyx + e * xhat(x[i], st);
                r = r + tr;
            }
        }
    }
    sh_tree_sum2(li, rl, WG / p.col_lanes, p.col_lanes, vec2<f32>(s_dy, s_dyx));
    if (rl == 0u && col < p.cols) {
        gpartials[(p.chunk_base + t.chunk) * p.cols + col] = vec2<f32>(sh_a[li], sh_b[li]);
    }
}

// The index in gpartials of item j (chunk j / spatial, position j % spatial)
// of the channel whose first partial is at `first`.
fn grad_item(j: u32, first: u32) -> u32 {
    let sp = p.spatial;
    return (j / sp) * p.cols + first + (j % sp) * p.pos_stride;
}

@compute @workgroup_size(WG)
fn grad_finalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = linear_wg(wid, nwg);
    if (c >= p.channels) {
        return;
    }
    let sp = p.spatial;
    let first = c * p.aff_stride;
    var a = 0.0;
    var b = 0.0;
    let items = p.chunks * sp;
    // Four items per iteration: a thread's loop stays within lavapipe's
    // 65,535 iterations per invocation for every partials buffer a 128 MiB
    // binding holds (2^24 items: 16,384 iterations); the launcher refuses
    // more.
    var j = li;
    loop {
        if (j + 3u * WG >= items) {
            break;
        }
        let q0 = gpartials[grad_item(j, first)];
        let q1 = gpartials[grad_item(j + WG, first)];
        let q2 = gpartials[grad_item(j + 2u * WG, first)];
        let q3 = gpartials[grad_item(j + 3u * WG, first)];
        a = a + ((q0.x + q1.x) + (q2.x + q3.x));
        b = b + ((q0.y + q1.y) + (q2.y + q3.y));
        j = j + 4u * WG;
    }
    for (; j < items; j = j + WG) {
        let q = gpartials[grad_item(j, first)];
        a = a + q.x;
        b = b + q.y;
    }
    sh_tree_sum2(li, li, WG, 1u, vec2<f32>(a, b));
    if (li == 0u) {
        dbeta[c] = sh_a[0];
        dgamma[c] = sh_b[0];
    }
}

@compute @workgroup_size(WG)
fn dx(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let wg = linear_wg(wid, nwg);
    if (wg >= p.col_tiles * p.chunks) {
        return;
    }
    let t = col_tile(li, wg);
    let tr = t.tr;
    let col = t.col;
    if (col >= p.cols) {
        return;
    }
    let r1 = t.r1;
    let c = col / p.spatial;
    let st = decode(stats[c]);
    let inv_m = 1.0 / (f32(p.total_rows) * f32(p.spatial));
    let a = gamma[c] * st.invstd;
    let mdy = dbeta[c] * inv_m;
    let mdyx = dgamma[c] * inv_m;
    let f = p.cols;
    var r = t.r0 + t.rl;
    loop {
        if (r + 3u * tr >= r1) {
            break;
        }
        let i0 = r * f + col;
        let i1 = i0 + tr * f;
        let i2 = i1 + tr * f;
        let i3 = i2 + tr * f;
        let h0 = xhat(x[i0], st);
        let h1 = xhat(x[i1], st);
        let h2 = xhat(x[i2], st);
        let h3 = xhat(x[i3], st);
        let e0 = dy[i0];
        let e1 = dy[i1];
        let e2 = dy[i2];
        let e3 = dy[i3];
        out[i0] = a * ((e0 - mdy) - h0 * mdyx);
        out[i1] = a * ((e1 - mdy) - h1 * mdyx);
        out[i2] = a * ((e2 - mdy) - h2 * mdyx);
        out[i3] = a * ((e3 - mdy) - h3 * mdyx);
        r = r + 4u * tr;
    }
    loop {
        if (r >= r1) {
            break;
        }
        let i = r * f + col;
        let h = xhat(x[i], st);
        out[i] = a * ((dy[i] - mdy) - h * mdyx);
        r = r + tr;
    }
}
